"""flwr-byz simulations."""
