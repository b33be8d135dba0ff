"""flwr-byz: Byzantine-robust aggregation, DETOX and malicious clients for Flower."""

__version__ = "0.1.0"
