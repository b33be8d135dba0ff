"""Clients: the honest reference client, malicious wrappers and the collusion mechanism."""

from .collusion import Collusion
from .malicious import (
    ATTACKS,
    AlieClient,
    ConstantClient,
    GarbageClient,
    GaussianNoiseClient,
    IpmClient,
    LabelFlipClient,
    MaliciousClient,
    MinMaxClient,
    MinSumClient,
    SignFlipClient,
)

__all__ = [
    "ATTACKS", "AlieClient", "Collusion", "ConstantClient", "GarbageClient", "GaussianNoiseClient",
    "IpmClient", "LabelFlipClient", "MaliciousClient", "MinMaxClient", "MinSumClient", "SignFlipClient",
]
