"""CRFL's training-time parameter clipping and perturbation of the global model.

Xie, Chen, Chen & Li, "CRFL: Certifiably Robust Federated Learning against Backdoor
Attacks", ICML 2021: after each aggregation the server clips the global model's parameters
to norm rho and adds isotropic Gaussian noise,

    w <- w / max(1, |w| / rho) + N(0, sigma^2 I),

which bounds how far any round's (backdoored) updates can carry the model and is what the
paper's certificate (parameter smoothing at test time: majority vote of models sampled
around w) builds on; the certification itself is not part of this module. It composes with
any rule (norm bounding of the updates, Sun et al. 2019, is ``PreAggregator("clip",
threshold=M)``). Only floating arrays (complex ones as real and imaginary parts) are
clipped and perturbed, together as one vector; integer counters and masks are left as they
are. No Flower import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ParameterSmoothing:
    """CRFL's clip-and-perturb step for the global model.

    Attributes:
        clip_norm: rho, the largest L2 norm of the floating parameters (over all of them);
            ``None`` does not clip.
        noise_std: sigma, the standard deviation of the Gaussian noise added to every
            floating parameter (0: none). CRFL's experiments use 0.01 and a rho chosen per
            dataset and round.
        seed: the noise is drawn from ``(seed, round)`` (``None``: fresh randomness).
    """

    clip_norm: float | None = None
    noise_std: float = 0.0

    seed: int | None = None

    def __post_init__(self):
        if self.clip_norm is not None and not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"ParameterSmoothing: clip_norm must be a finite number > 0 or None, got {self.clip_norm!r}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"ParameterSmoothing: noise_std must be a finite number >= 0, got {self.noise_std!r}")

    def apply(self, arrays: list[np.ndarray], server_round: int = 0) -> tuple[list[np.ndarray], dict]:
        """The clipped and perturbed arrays (new arrays, same dtypes and shapes) and the
        step's report: the norm before clipping and the scale applied."""
        out = [np.asarray(a) for a in arrays]
        floating = [i for i, a in enumerate(out) if a.dtype.kind in "fc"]
        norm = math.sqrt(math.fsum(float(np.vdot(r, r)) for r in (_real(out[i]).astype(np.float64) for i in floating)))
        scale = 1.0 if self.clip_norm is None or norm <= self.clip_norm else self.clip_norm / norm
        rng = np.random.default_rng(None if self.seed is None else (int(self.seed), int(server_round)))
        for i in floating:
            a, real = out[i], _real(out[i])
            new = real.astype(np.float64) * scale
            if self.noise_std:
                new = new + rng.normal(0.0, self.noise_std, real.shape)
            new = np.asarray(new, dtype=real.dtype)  # 0-d stays an array (not a NumPy scalar)
            out[i] = new.view(a.dtype).reshape(a.shape) if a.dtype.kind == "c" else new.reshape(a.shape)
        return out, {"model_norm": norm, "clip_scale": scale}


def _real(a: np.ndarray) -> np.ndarray:
    """A complex array as its real and imaginary parts (a real view); others as they are."""
    return a.view(a.real.dtype) if a.dtype.kind == "c" else a
