"""The flwr-byz Flower App: ``flwr run .`` on a local simulation or a deployment.

- :mod:`flwr_byz.app.server_app` (``app``): the Message-API ServerApp (robust strategy by
  name, server-side evaluation, results.jsonl per round).
- :mod:`flwr_byz.app.client_app` (``app``): the Message-API ClientApp; a SuperNode's role
  (partition, attack, rendezvous) comes from its node config.
- :mod:`flwr_byz.app.settings`: run-config defaults and the strategy factory.

docs/deployment.md describes the production set-up (TLS, SuperNode authentication), the
run-config and node-config keys, GPUs and Ray clusters.
"""
