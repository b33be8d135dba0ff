"""The strategy options that travel as plain data (the Flower App's ``strategy-params``, the
CLI's ``--strategy-params``, a results cell's ``strategy_params``), split from the rule's
own parameters in one place."""

from __future__ import annotations

from ..aggregation import ParameterSmoothing, PreAggregator


def split_strategy_params(params: dict) -> tuple[dict, dict]:
    """``(rule_params, options)`` from a strategy-params mapping.

    ``options`` holds the strategy's keyword arguments built from the plain-data keys:
    ``"pre": [{"kind": "bucketing", "s": 2}, ...]`` -> ``pre_aggregators``;
    ``"crfl": {"clip_norm": rho, "noise_std": sigma, "seed": s}`` -> ``parameter_smoothing``
    (:class:`~flwr_byz.aggregation.ParameterSmoothing`); ``"weighting"`` and
    ``"weight_cap"`` as they are. Everything else is the rule's (or the class's) own.
    ``ValueError`` names a malformed entry.
    """
    params = dict(params or {})
    options: dict = {}
    pre = params.pop("pre", [])
    if not isinstance(pre, list) or not all(isinstance(p, dict) and "kind" in p for p in pre):
        raise ValueError(f'"pre" must be a list of objects with a "kind", got {pre!r}')
    if pre:
        options["pre_aggregators"] = [PreAggregator(p["kind"], **{k: v for k, v in p.items() if k != "kind"})
                                      for p in pre]
    crfl = params.pop("crfl", None)
    if crfl is not None:
        if not isinstance(crfl, dict) or set(crfl) - {"clip_norm", "noise_std", "seed"}:
            raise ValueError(f'"crfl" must be an object with "clip_norm", "noise_std" and optionally "seed", '
                             f"got {crfl!r}")
        options["parameter_smoothing"] = ParameterSmoothing(**crfl)
    for key in ("weighting", "weight_cap"):
        if key in params:
            options[key] = params.pop(key)
    return params, options
