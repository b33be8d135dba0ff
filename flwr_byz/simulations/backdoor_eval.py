"""Server-side measurement of a backdoor: main-task accuracy and attack success rate.

    metrics = evaluate_backdoor(model, dataset, PixelTrigger(2, (0, 0), 1.75, target=0))
    metrics["accuracy"], metrics["asr"]

* ``accuracy``: the model's accuracy on the clean test set.
* ``asr`` (attack success rate), for a :class:`~flwr_byz.attacks.backdoor.PixelTrigger`: the
  share of test inputs whose true label is not the target that, once stamped, are
  classified as the target; for a :class:`~flwr_byz.attacks.backdoor.SampleBackdoor`: the
  share of the chosen *training* samples (indices into ``dataset.x_train``) whose true label
  is not the target that are classified as the target; for an
  :class:`~flwr_byz.attacks.backdoor.EdgeCaseBackdoor`: the share of its held-out tail inputs
  classified as the target.

Usable as a Flower ``evaluate_fn`` body (``set_weights(model, ndarrays)`` first).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..attacks.backdoor import EdgeCaseBackdoor, PixelTrigger, SampleBackdoor, attack_success_rate
from ..clients.honest import evaluate_model, pick_device

__all__ = ["backdoor_inputs", "evaluate_backdoor", "predict"]


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, *, batch_size: int = 512, device: torch.device | None = None) -> np.ndarray:
    """Predicted labels (N,) of ``model`` on ``x``, in eval mode."""
    device = device or pick_device()
    model.to(device).eval()
    out = [model(torch.as_tensor(x[a : a + batch_size]).to(device)).argmax(1).cpu().numpy()
           for a in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def backdoor_inputs(dataset, backdoor) -> tuple[np.ndarray, np.ndarray]:
    """(inputs carrying the backdoor, their true labels) that the ASR is measured on."""
    if isinstance(backdoor, PixelTrigger):
        return backdoor.stamp(dataset.x_test), np.asarray(dataset.y_test)
    if isinstance(backdoor, SampleBackdoor):
        return backdoor.select(dataset.x_train, dataset.y_train)
    if isinstance(backdoor, EdgeCaseBackdoor):
        return backdoor.select()
    raise TypeError("backdoor must be a PixelTrigger, a SampleBackdoor or an EdgeCaseBackdoor, "
                    f"got {type(backdoor).__name__}")


def evaluate_backdoor(model: nn.Module, dataset, trigger, *, batch_size: int = 512,
                      device: torch.device | None = None) -> dict:
    """``{"accuracy", "loss", "asr", "asr_count"}`` of ``model`` on ``dataset`` (a
    :class:`~flwr_byz.simulations.datasets.Dataset`) under ``trigger``.

    ``asr_count`` is the number of inputs the ASR is computed over (those whose true label
    is not the target); ``asr`` is NaN when it is 0.
    """
    device = device or pick_device()
    loss, acc = evaluate_model(model, dataset.x_test, dataset.y_test, batch_size=batch_size, device=device)
    x_bd, y_true = backdoor_inputs(dataset, trigger)
    asr = attack_success_rate(lambda xs: predict(model, xs, batch_size=batch_size, device=device), y_true,
                              trigger.target, inputs=x_bd)
    return {"accuracy": float(acc), "loss": float(loss), "asr": float(asr),
            "asr_count": int(np.sum(np.asarray(y_true) != trigger.target))}
