"""Clients: the honest reference client, malicious wrappers and the collusion mechanism."""

from .backdoor import AlieBackdoorClient, BackdoorClient, ModelReplacementClient, NeurotoxinClient
from .collusion import Collusion
from .detox import DetoxClient
from .mods import alie_mod, attack_mod, constant_mod, detox_mod, garbage_mod, sign_flip_mod, weight_inflation_mod
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
    WeightInflationClient,
)

__all__ = [
    "AlieBackdoorClient", "BackdoorClient", "ModelReplacementClient", "NeurotoxinClient",
    "ATTACKS", "AlieClient", "Collusion", "ConstantClient", "DetoxClient", "GarbageClient", "GaussianNoiseClient",
    "IpmClient", "LabelFlipClient", "MaliciousClient", "MinMaxClient", "MinSumClient", "SignFlipClient",
    "WeightInflationClient", "alie_mod", "attack_mod", "constant_mod", "detox_mod", "garbage_mod", "sign_flip_mod",
    "weight_inflation_mod",
]
