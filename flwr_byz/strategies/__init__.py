"""Flower strategies of flwr-byz.

``flwr_byz.strategies`` holds the Message-API strategies (``flwr.serverapp.strategy``, what
``flwr new`` generates); ``flwr_byz.strategies.legacy`` the same rules for the legacy
``flwr.server.strategy`` API. Class names follow Flower's own (Krum, MultiKrum, Bulyan,
FedMedian, FedTrimmedAvg); docs/strategies.md maps every class to its Flower counterpart.
``strategy_class(name)`` returns the class of any registered rule (by rule name, class
name, Flower's name or an alias), in either module.
"""

from .message_api import (
    CAF,
    Bulyan,
    CenteredClipping,
    ClippedClustering,
    Clustering,
    Detox,
    DnC,
    FedMedian,
    FedTrimmedAvg,
    FLAME,
    FLTrust,
    FoolsGold,
    GeometricMedian,
    Krum,
    MDA,
    Meamed,
    MoNNA,
    MultiKrum,
    RobustFedAvg,
    SignGuard,
    SignSGDMajority,
    SMEA,
    TrimmedMean,
    strategy_class,
)

__all__ = [
    "Bulyan", "CAF", "CenteredClipping", "ClippedClustering", "Clustering", "Detox", "DnC", "FedMedian",
    "FedTrimmedAvg", "FLAME", "FLTrust", "FoolsGold", "GeometricMedian", "Krum", "MDA", "Meamed", "MoNNA", "MultiKrum", "RobustFedAvg", "SMEA",
    "SignGuard", "SignSGDMajority", "TrimmedMean", "strategy_class",
]
