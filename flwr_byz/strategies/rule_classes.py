"""Strategy classes made from the rule specs (:mod:`flwr_byz.aggregation.registry`).

For a plain rule, the class of each Flower API is fully determined by its spec: the rule's
name, its parameters with their defaults, its f bound and its paper. :func:`rule_class`
builds it as a real subclass of that API's ``RobustFedAvg``, with a real signature (what
``help()`` and IDEs show: Flower's arguments pass through ``*args`` / ``**kwargs``) and a
docstring written from the spec. Only strategies whose behaviour differs are written by
hand (``RobustFedAvg``, ``MultiKrum``'s m, ``FedTrimmedAvg``'s beta, DETOX, legacy
``Krum``'s ``num_clients_to_keep``).
"""

from __future__ import annotations

import inspect

from ..aggregation.registry import REGISTRY, RuleSpec, normalised, resolve_rule

_P = inspect.Parameter


def _docstring(spec: RuleSpec, api: str, f_arg: str) -> str:
    flower = f" Same arguments as Flower's ``{spec.flower}``, plus the rule's own." if spec.flower else ""
    params = ", ".join(f"``{k}={v!r}``" for k, v in spec.params.items()) or "none"
    needs = ""
    if "server_update" in spec.required_inputs:
        needs = ("\n    Requires ``server_update_fn=fn(arrays) -> arrays``: the global model trained on the server's "
                 "root dataset each round (:class:`flwr_byz.clients.root.RootUpdate`).\n")
    elif "client_history" in spec.round_inputs:
        needs = "\n    Keeps each client's sum of updates across rounds (per node id; ``save_state`` / ``load_state``).\n"
    elif "global_model" in spec.round_inputs:
        needs = "\n    Compares the clients' models (the round's global model plus each update).\n"
    return (
        f"``{spec.name}`` for Flower's {api}: {spec.paper}; needs n >= {spec.formula()} replies for f = "
        f"``{f_arg}``.{flower}\n\n"
        f"    The rule's parameters (:func:`flwr_byz.aggregation.{spec.fn.__name__}`): {params}. Every other "
        f"argument is the API's ``RobustFedAvg``'s (``pre_aggregators``, ``weighting``, "
        f"``server_learning_rate``, ...) or Flower's ``FedAvg``'s.\n{needs}"
    )


# Flower's own arguments of its Bulyan that flwr-byz's Bulyan does not need: accepted at the
# value that means flwr-byz's behaviour, refused with a message otherwise.
def _is_flower_krum(rule) -> bool:
    from flwr.server.strategy.aggregate import aggregate_krum

    return rule is None or rule is aggregate_krum


FLOWER_ONLY = {
    "selection_rule": (lambda v: v is None,
                       "flwr-byz's Bulyan selects by Krum re-applied to the shrinking set, as the paper defines "
                       "it; a custom selection_rule is not supported (use RobustFedAvg with a registered rule)"),
    "first_aggregation_rule": (_is_flower_krum,
                               "flwr-byz's Bulyan runs Krum as its base rule, as the paper does; only Flower's "
                               "aggregate_krum (the default) is accepted"),
    "to_keep": (lambda v: v == 0, "flwr-byz's Bulyan keeps theta = n - 2f as the paper does; only to_keep=0 "
                                  "(Flower's default, plain Krum as the base rule) is accepted"),
}


def take_flower_arguments(flower_name: str | None, api: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Flower's calling convention for a Flower counterpart: positional arguments bound in
    the counterpart's order (``Krum(1.0, 1.0, 2, 2, 2, 1)`` means ``num_malicious_nodes=1``,
    not FedAvg's ``weighted_by_key=1``), and Flower-only arguments checked (:data:`FLOWER_ONLY`).
    Returns the remaining ``(args, kwargs)``."""
    for name, (ok, why) in FLOWER_ONLY.items():
        if flower_name == "Bulyan" and name in kwargs and not ok(kwargs.pop(name)):
            raise ValueError(why)
    if not args or not flower_name or api != "Message API":
        return args, kwargs
    import flwr.serverapp.strategy as flower_strategies

    counterpart = getattr(flower_strategies, flower_name, None)
    if counterpart is None:
        return args, kwargs
    bound = inspect.signature(counterpart).bind_partial(*args).arguments
    clash = sorted(set(bound) & set(kwargs))
    if clash:
        raise TypeError(f"{flower_name}: got multiple values for {clash}")
    return (), {**bound, **kwargs}


def rule_class(base: type, spec: RuleSpec, *, f_arg: str, api: str, positional: bool) -> type:
    """A subclass of ``base`` (an API's ``RobustFedAvg``) running ``spec``'s rule.

    Args:
        base: the API's ``RobustFedAvg``.
        spec: the rule.
        f_arg: the API's name for f (``num_malicious_nodes`` / ``num_malicious_clients``).
        api: the API's name, for the docstring.
        positional: whether Flower's base class takes positional arguments.
    """
    own = dict(spec.params)

    def __init__(self, *args, **kwargs):
        args, kwargs = take_flower_arguments(spec.flower, api, args, kwargs)
        rule_params = {k: kwargs.pop(k, default) for k, default in own.items()}
        base.__init__(self, *args, rule=spec.name, rule_params=rule_params, **{f_arg: kwargs.pop(f_arg, 0)},
                      **kwargs)

    params = [_P("self", _P.POSITIONAL_OR_KEYWORD)]
    if positional:
        params.append(_P("args", _P.VAR_POSITIONAL))
    params.append(_P(f_arg, _P.KEYWORD_ONLY, default=0))
    params += [_P(k, _P.KEYWORD_ONLY, default=v) for k, v in own.items()]
    params += [_P("pre_aggregators", _P.KEYWORD_ONLY, default=()), _P("kwargs", _P.VAR_KEYWORD)]
    __init__.__signature__ = inspect.Signature(params)
    __init__.__doc__ = _docstring(spec, api, f_arg)
    return type(spec.class_name, (base,), {
        "__init__": __init__, "__doc__": _docstring(spec, api, f_arg), "__module__": base.__module__,
        "__qualname__": spec.class_name, "_history_center": spec.stateful, "rule_spec": spec,
    })


class StrategyCatalogue:
    """The strategy class of every registered rule in one API: the module's own class when
    one is defined (generated or hand-written), else one made on first use from the spec
    (a rule registered by a user or a test appears without any other edit)."""

    def __init__(self, module_globals: dict, base: type, *, f_arg: str, api: str, positional: bool):
        self._globals, self._base = module_globals, base
        self._options = dict(f_arg=f_arg, api=api, positional=positional)
        self._made: dict[str, type] = {}

    def make(self, name: str) -> type:
        """The generated class of rule ``name`` (for the module's own definitions)."""
        return rule_class(self._base, REGISTRY[name], **self._options)

    def __call__(self, name: str) -> type:
        """The class for a rule or strategy name (aliases, Flower's names, any case)."""
        spec = resolve_rule(name)
        cls = self._globals.get(spec.class_name)
        if isinstance(cls, type) and issubclass(cls, self._base):
            return cls
        if spec.name not in self._made or self._made[spec.name].rule_spec is not spec:
            self._made[spec.name] = self.make(spec.name)
        return self._made[spec.name]


def strategy_names() -> list[str]:
    """Every rule name and ``detox`` (aliases, class names and Flower's names are accepted too)."""
    return sorted(REGISTRY) + ["detox"]


def canonical_strategy(name: str) -> str:
    """The rule name (or ``detox-<rule>``) that a strategy name means, for the command line
    and results: ``"FedMedian"`` -> ``"median"``, ``"detox-multi-krum"`` -> ``"detox-multi_krum"``.
    ``ValueError`` lists the valid names."""
    text = str(name)
    detox = normalised(text).startswith("detox")
    inner = text[len("detox"):].lstrip("-_") if detox else text
    try:
        rule = resolve_rule(inner).name
    except ValueError:
        raise ValueError(f"unknown strategy {name!r}; choose from {strategy_names()} "
                         f"(or detox-<rule>)") from None
    return f"detox-{rule}" if detox else rule


def resolve_strategy(name: str, module):
    """The strategy class that ``name`` means in ``module`` (:mod:`flwr_byz.strategies` or
    its ``legacy``): ``Detox``, or the class of the rule that
    :func:`flwr_byz.aggregation.resolve_rule` finds. The App resolves names here and the CLI
    through :func:`canonical_strategy`; ``ValueError`` lists the valid names."""
    if normalised(name) == "detox":
        return module.Detox
    try:
        return module.strategy_class(name)
    except ValueError:
        raise ValueError(f"unknown strategy {name!r}; choose from {strategy_names()}") from None
