"""One declaration per rule: the specs that every other layer reads.

A rule is declared once, next to its function, with :func:`register_rule`::

    @register_rule("krum", cost="O(n^2 d)", bound=(2, 3), paper="Blanchard et al., NeurIPS 2017",
                   flower="Krum", strategy="Krum")
    def krum(updates, *, f, return_report=False): ...

and from that one declaration come: :data:`~flwr_byz.aggregation.RULES`, the rule's f check
(:func:`check_bound`, which the rule calls on itself) and ``minimum_clients`` (one source,
so they cannot disagree), ``RobustAggregator`` and DETOX's A1, the strategy classes of both
Flower APIs (:mod:`flwr_byz.strategies`), the names the CLI and the Flower App accept
(:func:`resolve_rule`), and the rule table of docs/strategies.md (checked by a test).
No Flower import here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ._validate import check_f
from .backend import host_inputs, is_tensor, via_host

# The per-round inputs a strategy passes to a rule that takes them (by keyword), besides the
# updates: centered clipping's centre, ClippedClustering's norm history, FoolsGold's
# per-client history, FLTrust's server update, FLAME's global model.
ROUND_INPUTS = ("center", "history", "client_history", "server_update", "global_model")
# Keyword arguments of a rule that are not its own parameters: the data, f, weights, and
# the per-round inputs.
_NOT_PARAMS = {"updates", "f", "weights", "return_report", "groups", *ROUND_INPUTS}
NO_TOLERANCE = 2**62  # "no n is enough": the minimum n of a rule that tolerates no f > 0


@dataclass(frozen=True)
class RuleSpec:
    """Everything the library needs to know about one aggregation rule.

    Attributes:
        name: the rule's name (``"krum"``), a key of ``RULES``.
        fn: the rule, ``fn(X, *, f, [weights], **params, return_report=False)``.
        bound: n >= a f + b as ``(a, b)``, or a callable ``f -> minimum n``.
        paper: the paper it follows (shown in docstrings and docs).
        aliases: other accepted names (case, ``-`` and ``_`` are ignored anyway).
        flower: the Flower strategy with the same rule, if any.
        strategy: the strategy class name in both APIs (default: CamelCase of ``name``).
        bound_text: how the bound is written in errors and docs (default ``"af + b"``).
        coordinate_wise, translation_equivariant, stateful, needs_global: property flags
            for the tests and docs (``stateful``: the strategy passes the previous round's
            aggregate as ``center``).
        cost: time in n (updates), d (coordinates) and f, for the docs' rule table.
        tensor_native: the rule runs on a torch tensor's device (:mod:`.backend`); the
            others, given a tensor, compute on a NumPy copy and return a tensor.
    """

    name: str
    fn: Callable
    bound: tuple[int, int] | Callable[[int], int]
    paper: str
    aliases: tuple[str, ...] = ()
    flower: str | None = None
    strategy: str | None = None
    bound_text: str | None = None
    coordinate_wise: bool = False
    translation_equivariant: bool = True
    stateful: bool = False
    needs_global: bool = False
    cost: str = ""
    params: dict = field(default_factory=dict)
    tensor_native: bool = False

    @property
    def weighted(self) -> bool:
        """Whether the rule takes per-client weights."""
        return "weights" in inspect.signature(self.fn).parameters

    @property
    def keeps_norm_history(self) -> bool:
        """Whether the rule takes ``history``, the norms of every earlier update, which the
        strategy keeps for it (ClippedClustering)."""
        return "history" in inspect.signature(self.fn).parameters

    @property
    def round_inputs(self) -> tuple[str, ...]:
        """The per-round inputs (:data:`ROUND_INPUTS`) the rule takes; those without a
        default are required (FLTrust's ``server_update``)."""
        params = inspect.signature(self.fn).parameters
        return tuple(k for k in ROUND_INPUTS if k in params)

    @property
    def required_inputs(self) -> tuple[str, ...]:
        """The per-round inputs the rule cannot run without."""
        params = inspect.signature(self.fn).parameters
        return tuple(k for k in self.round_inputs if params[k].default is inspect.Parameter.empty)

    @property
    def state(self) -> str:
        """What the strategy keeps across rounds for this rule (docs' rule table)."""
        if self.stateful:
            return "the previous aggregate"
        if self.keeps_norm_history:
            return "the norms of all earlier updates"
        if "client_history" in self.round_inputs:
            return "each client's sum of its updates (d floats per client)"
        return "none"

    @property
    def knowledge(self) -> str:
        """What the server must have besides the replies (docs' rule table)."""
        if "server_update" in self.round_inputs:
            return "a root dataset (its own update each round)"
        if "global_model" in self.round_inputs:
            return "the global model"
        return "the replies"

    @property
    def class_name(self) -> str:
        return self.strategy or "".join(part.capitalize() for part in self.name.split("_"))

    def minimum_clients(self, f: int) -> int:
        """Smallest n for which the rule tolerates ``f`` Byzantine clients."""
        if callable(self.bound):
            return int(self.bound(int(f)))
        a, b = self.bound
        return a * int(f) + b

    def formula(self) -> str:
        if self.bound_text:
            return self.bound_text
        if callable(self.bound):
            return "its bound"
        a, b = self.bound
        return f"{'' if a == 1 else a}f + {b}"


class _Registry(Mapping):
    """name -> spec, in the order of declaration (a live view: rules registered later,
    e.g. by a user or a test, appear everywhere at once)."""

    def __init__(self):
        self._specs: dict[str, RuleSpec] = {}

    def __getitem__(self, name: str) -> RuleSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def add(self, spec: RuleSpec) -> None:
        self._specs[spec.name] = spec

    def remove(self, name: str) -> None:
        self._specs.pop(name, None)


class _Functions(Mapping):
    """``RULES``: name -> rule function, a live view of the registry."""

    def __getitem__(self, name: str) -> Callable:
        return REGISTRY[name].fn

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)

    def __repr__(self) -> str:
        return f"RULES({sorted(REGISTRY)})"


REGISTRY = _Registry()
RULES: Mapping[str, Callable] = _Functions()


def _tensors_via_host(fn: Callable) -> Callable:
    """``fn``, taking a torch tensor too: on a NumPy copy, its aggregate returned as a tensor."""

    @functools.wraps(fn)
    def rule(updates, **kwargs):
        if is_tensor(updates):
            return via_host(fn, updates, kwargs)
        return fn(updates, **host_inputs(kwargs))  # NumPy updates: tensor inputs to the host too

    return rule


def register_rule(name: str, *, bound, paper: str, cost: str = "", **flags):
    """Decorator declaring a rule (see :class:`RuleSpec` for the fields). The rule's own
    parameters and their defaults are read from its signature. The function it returns
    (and registers) takes a torch tensor too: a rule declared ``tensor_native=True`` gets
    it as is, any other a NumPy copy, its aggregate coming back as a tensor on the input's
    device (:func:`~flwr_byz.aggregation.backend.via_host`)."""

    def deco(fn: Callable) -> Callable:
        params = {p.name: p.default for p in inspect.signature(fn).parameters.values()
                  if p.kind is p.KEYWORD_ONLY and p.name not in _NOT_PARAMS}
        rule = fn if flags.get("tensor_native") else _tensors_via_host(fn)
        REGISTRY.add(RuleSpec(name=name, fn=rule, bound=bound, paper=paper, cost=cost, params=params, **flags))
        return rule

    return deco


def normalised(name: str) -> str:
    """A name as the resolvers compare it: lower case, without ``-`` and ``_``."""
    return str(name).lower().replace("-", "").replace("_", "")


def resolve_rule(name: str) -> RuleSpec:
    """The spec named by ``name``: its rule name, its strategy class name, its Flower
    counterpart or an alias; case, ``-`` and ``_`` do not matter. ``ValueError`` lists the
    names when none matches."""
    key = normalised(name)
    for spec in REGISTRY.values():
        names = (spec.name, spec.class_name, *spec.aliases) + ((spec.flower,) if spec.flower else ())
        if key in {normalised(n) for n in names}:
            return spec
    raise ValueError(f"unknown rule {name!r}; choose from {sorted(REGISTRY)}")


def check_bound(rule: str, n: int, f) -> None:
    """The rule's f check from its spec: ``ValueError`` unless f is a non-negative
    integer, ``ByzantineBoundError`` unless n >= the spec's minimum for f."""
    spec = REGISTRY[rule]
    check_f(rule, n, f, minimum=spec.minimum_clients, formula=spec.formula())


def minimum_clients(rule: str, f: int) -> int:
    """Smallest n for which ``rule`` tolerates ``f`` Byzantine clients (from its spec)."""
    return REGISTRY[rule].minimum_clients(f)


def rule_table() -> str:
    """The markdown table of every registered rule (docs/strategies.md holds it verbatim,
    ``flwr-byz rules`` prints it): name, paper, f bound, weights, server knowledge, state,
    cost, and where it computes on a torch tensor (its device, or a host copy)."""
    lines = ["| rule | paper | needs | reported weights | server knowledge | state across rounds | time | on a tensor |",
             "|---|---|---|---|---|---|---|---|"]
    for spec in sorted(REGISTRY.values(), key=lambda s: s.name):
        needs = "f = 0" if spec.name == "mean" else f"n >= {spec.formula()}"
        weights = "used (per the weight policy)" if spec.weighted else "ignored"
        lines.append(f"| `{spec.name}` | {spec.paper} | {needs} | {weights} | {spec.knowledge} | {spec.state} "
                     f"| {spec.cost} | {'its device' if spec.tensor_native else 'host copy'} |")
    return "\n".join(lines) + "\n"
