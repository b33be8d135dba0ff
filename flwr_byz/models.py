"""Models of the papers' experiments, by name.

- ``mlp``: the ALIE paper's MNIST model, a fully connected network with one hidden layer of
  100 ReLU units (Baruch et al. 2019, Section 5).
- ``cnn``: a small CIFAR-style CNN (two 5x5 conv + max-pool blocks, two dense layers), the
  kind of model the ALIE paper uses for CIFAR-10.
- ``resnet18``, ``vgg13_bn``: torchvision's architectures, trained from scratch.
- ``wideresnet``: WRN-16-4 (Zagoruyko & Komodakis 2016).
"""

from __future__ import annotations

import math

import torch
from torch import nn

MODELS = ("mlp", "cnn", "resnet18", "vgg13_bn", "wideresnet")


class MLP(nn.Module):
    def __init__(self, input_shape, num_classes: int, hidden: int = 100):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    def __init__(self, input_shape, num_classes: int):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 512), nn.ReLU(),
                                  nn.Linear(512, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class _WideBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = torch.relu(self.bn1(x))
        y = self.conv2(torch.relu(self.bn2(self.conv1(o))))
        return y + (x if self.short is None else self.short(o))


class WideResNet(nn.Module):
    def __init__(self, input_shape, num_classes: int, depth: int = 16, width: int = 4):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        layers = [nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False)]
        for i, stride in enumerate((1, 2, 2)):
            for j in range(n):
                layers.append(_WideBlock(widths[i] if j == 0 else widths[i + 1], widths[i + 1], stride if j == 0 else 1))
        layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body, self.fc = nn.Sequential(*layers), nn.Linear(widths[3], num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def make_model(name: str, input_shape, num_classes: int, seed: int | None = 0) -> nn.Module:
    """A freshly initialised model (seeded, so every client and the server agree).

    The model is built on the CPU, so only the CPU generator is seeded (the same values as
    ``torch.manual_seed``): on a CUDA build ``torch.manual_seed`` also queues a CUDA seeding
    with a stack trace, which cost more than building the model, and every simulated client
    builds one per round."""
    if seed is not None:
        torch.random.default_generator.manual_seed(int(seed))
    return _build(name, tuple(input_shape), num_classes)


def _build(name: str, input_shape: tuple, num_classes: int) -> nn.Module:
    if name == "mlp":
        return MLP(input_shape, num_classes)
    if name == "cnn":
        return CNN(input_shape, num_classes)
    if name in ("resnet18", "vgg13_bn"):
        import torchvision

        if input_shape[0] != 3:
            raise ValueError(f"{name} expects 3-channel images, got input shape {tuple(input_shape)}")
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if name == "wideresnet":
        return WideResNet(input_shape, num_classes)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def get_weights(model: nn.Module) -> list:
    """The model's state as a list of NumPy arrays (Flower's NDArrays), in state_dict order."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights) -> None:
    keys = list(model.state_dict().keys())
    model.load_state_dict({k: torch.as_tensor(w) for k, w in zip(keys, weights)}, strict=True)
