"""The strategy options that travel as plain data (the Flower App's ``strategy-params``, the
CLI's ``--strategy-params``, a results cell's ``strategy_params``), split from the rule's
own parameters in one place."""

from __future__ import annotations

from ..aggregation import ParameterSmoothing, PreAggregator, Reputation


def split_strategy_params(params: dict) -> tuple[dict, dict]:
    """``(rule_params, options)`` from a strategy-params mapping.

    ``options`` holds the strategy's keyword arguments built from the plain-data keys:
    ``"pre": [{"kind": "bucketing", "s": 2}, ...]`` -> ``pre_aggregators``;
    ``"crfl": {"clip_norm": rho, "noise_std": sigma, "seed": s}`` -> ``parameter_smoothing``
    (:class:`~flwr_byz.aggregation.ParameterSmoothing`); ``"weighting"`` and
    ``"weight_cap"`` as they are; ``"reputation": {"decay": 0.9, "threshold": 0.3, "mode":
    "exclude"}`` -> ``reputation`` (:class:`~flwr_byz.aggregation.Reputation`);
    ``"root_size"`` (FLTrust's root dataset, in examples) as it is, for the caller that
    builds the server update (:func:`server_update_for`). Everything else is the rule's
    (or the class's) own. ``ValueError`` names a malformed entry.
    """
    params = dict(params or {})
    options: dict = {}
    pre = params.pop("pre", [])
    if not isinstance(pre, list) or not all(isinstance(p, dict) and "kind" in p for p in pre):
        raise ValueError(f'"pre" must be a list of objects with a "kind", got {pre!r}')
    if pre:
        options["pre_aggregators"] = [PreAggregator(p["kind"], **{k: v for k, v in p.items() if k != "kind"})
                                      for p in pre]
    # the options given as objects: key -> (the strategy argument, the class, its fields)
    for key, (argument, cls, fields) in {
        "crfl": ("parameter_smoothing", ParameterSmoothing, ("clip_norm", "noise_std", "seed")),
        "reputation": ("reputation", Reputation, ("decay", "threshold", "mode")),
    }.items():
        value = params.pop(key, None)
        if value is None:
            continue
        if not isinstance(value, dict) or set(value) - set(fields):
            raise ValueError(f'"{key}" must be an object with some of {", ".join(map(repr, fields))}, got {value!r}')
        options[argument] = cls(**value)
    for key in ("weighting", "weight_cap", "root_size"):
        if key in params:
            options[key] = params.pop(key)
    return params, options


def server_update_for(rule: str, options: dict, *, dataset: str, data_root, model: str, seed: int,
                      training: dict) -> None:
    """Replace ``options["root_size"]`` (default 100, the paper's) by the
    ``server_update_fn`` a rule that needs the server's own update (FLTrust) takes: a
    :class:`~flwr_byz.clients.root.RootUpdate` on that many training examples of ``dataset``
    with the clients' ``training`` settings, loaded at its first call. ``ValueError`` when
    ``root_size`` is given for a rule that does not use it. In place."""
    from ..aggregation import REGISTRY

    spec = REGISTRY.get(rule)
    size = options.pop("root_size", None)
    if spec is None or "server_update" not in spec.round_inputs:
        if size is not None:
            raise ValueError(f'"root_size" is the root dataset of FLTrust; {rule} does not use one')
        return
    from ..clients.root import RootUpdate

    options["server_update_fn"] = RootUpdate.from_dataset(dataset, data_root, model, 100 if size is None else size,
                                                          seed=seed, **training)
