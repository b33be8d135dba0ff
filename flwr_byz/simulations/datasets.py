"""Datasets through their real loaders, and how they are split among clients.

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images), shipped with
  scikit-learn: the embedded default, no download.
- ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``: torchvision datasets under a local
  root, downloaded by torchvision when ``download=True`` and the machine has internet. A root
  holding only the original ``.gz`` files (such as a read-only shared folder) is extracted
  once into a writable cache, because torchvision reads the extracted files.
- ``hf:<dataset>``: any Hugging Face image-classification dataset through flwr-datasets'
  ``FederatedDataset`` (``hf:ylecun/mnist``, ``hf:uoft-cs/cifar10``, or ``hf:<folder>`` for
  a local folder of ``train``/``test`` data files that ``datasets.load_dataset`` reads). The
  image column (an ``Image`` feature, or one named image/img/pixel_values) and the label
  column (a ``ClassLabel``, or one named label/labels/fine_label) are found by their features;
  without a test split, 20% of the training split (seeded) becomes the test set.

Images come back as float32 arrays of shape (N, C, H, W), normalised per dataset, with
int64 labels. Partitioning (IID or Dirichlet(alpha) over labels) lives in
:mod:`flwr_byz.simulations.partitioning`.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TORCHVISION = {
    "mnist": ("MNIST", (0.1307,), (0.3081,)),
    "fashion-mnist": ("FashionMNIST", (0.2860,), (0.3530,)),
    "cifar10": ("CIFAR10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("CIFAR100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
DATASETS = ("digits", *TORCHVISION, "hf:<name>")
DEFAULT_CACHE = Path(os.environ.get("FLWR_BYZ_CACHE", Path.home() / ".cache" / "flwr-byz"))


@dataclass
class Dataset:
    """Train and test arrays of one dataset."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_digits_dataset(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's digits, pixel values scaled to [0, 1] then standardised, (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    x = (x - 0.3) / 0.4
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10)


def _writable_root(root: Path, folder: str) -> Path:
    """A root where torchvision finds extracted files: ``root`` itself, or a cache copy."""
    raw = root / folder / "raw"
    gz = sorted(raw.glob("*.gz")) if raw.is_dir() else []
    if not gz or all((raw / p.stem).exists() for p in gz):
        return root
    cache_raw = DEFAULT_CACHE / "data" / folder / "raw"
    cache_raw.mkdir(parents=True, exist_ok=True)
    for p in gz:
        target = cache_raw / p.stem
        if not target.exists():
            tmp = target.with_suffix(".part")
            with gzip.open(p, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(target)
    return DEFAULT_CACHE / "data"


def load_torchvision_dataset(name: str, root: str | os.PathLike, download: bool = False) -> Dataset:
    """MNIST, Fashion-MNIST, CIFAR-10 or CIFAR-100 through torchvision, as normalised arrays."""
    import torchvision

    folder, mean, std = TORCHVISION[name]
    root = Path(root).expanduser()
    if folder in ("MNIST", "FashionMNIST") and not download:
        root = _writable_root(root, folder)
    cls = getattr(torchvision.datasets, folder)
    parts = []
    for train in (True, False):
        ds = cls(str(root), train=train, download=download)
        data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
        x = data.astype(np.float32) / 255.0
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        x = (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
        y = np.asarray(ds.targets, dtype=np.int64)
        parts.append((np.ascontiguousarray(x, dtype=np.float32), y))
    (x_tr, y_tr), (x_te, y_te) = parts
    return Dataset(name, x_tr, y_tr, x_te, y_te, 100 if name == "cifar100" else 10)


def _hf_columns(features) -> tuple[str, str]:
    import datasets

    image = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    image = image or next((c for c in ("image", "img", "pixel_values") if c in features), None)
    label = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    label = label or next((c for c in ("label", "labels", "fine_label") if c in features), None)
    if image is None or label is None:
        raise ValueError(f"cannot tell the image and label columns among {list(features)}")
    return image, label


def load_hf_dataset(name: str, seed: int = 0) -> Dataset:
    """A Hugging Face image-classification dataset through flwr-datasets, as normalised
    (N, C, H, W) float32 arrays (per-channel mean and std of the training split)."""
    import datasets
    from flwr_datasets import FederatedDataset

    fds = FederatedDataset(dataset=name, partitioners={"train": 1}, shuffle=False)
    train = fds.load_split("train")
    try:
        test = fds.load_split("test")
    except ValueError:  # no test split
        parts = train.train_test_split(test_size=0.2, seed=seed)
        train, test = parts["train"], parts["test"]
    image, label = _hf_columns(train.features)
    arrays = []
    for split in (train, test):
        x = np.asarray(split.with_format("numpy")[image])
        x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        arrays.append((x, np.asarray(split[label], dtype=np.int64)))
    (x_tr, y_tr), (x_te, y_te) = arrays
    mean = x_tr.mean(axis=(0, 2, 3), keepdims=True)
    std = x_tr.std(axis=(0, 2, 3), keepdims=True) + 1e-8
    feature = train.features[label]
    num_classes = feature.num_classes if isinstance(feature, datasets.ClassLabel) else int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(name, np.ascontiguousarray((x_tr - mean) / std), y_tr, np.ascontiguousarray((x_te - mean) / std),
                   y_te, num_classes)


def load_dataset(name: str = "digits", root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load a dataset by name (see :data:`DATASETS`)."""
    if name == "digits":
        return load_digits_dataset()
    if name.startswith("hf:"):
        return load_hf_dataset(name.removeprefix("hf:"))
    if name in TORCHVISION:
        if root is None:
            root = DEFAULT_CACHE / "data"
        return load_torchvision_dataset(name, root, download=download)
    raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
