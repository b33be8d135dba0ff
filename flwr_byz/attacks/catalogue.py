"""One declaration per attack: the specs that the clients, the mods, the CLI and the App read.

Each attack function is declared with :func:`register_attack` next to its definition; its
spec says what the attacker must know, whether the corrupted clients must pool their
honest updates (collusion), its parameters and its paper. The lists that used to be typed
by hand (the attacks a ``MaliciousClient`` mounts, the colluding ones, the backdoors, the
names the CLI accepts) are read from here. No Flower import.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

KINDS = ("model", "data", "backdoor", "weight", "malformed")


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the catalogue.

    Attributes:
        name: the name clients, mods, the CLI (``--attacks``) and the App (``attack``) use.
        fn: the function of :mod:`flwr_byz.attacks` that computes it.
        kind: ``"model"`` (the update vector), ``"data"`` (poisoned training data),
            ``"backdoor"``, ``"weight"`` (the reported number of examples) or
            ``"malformed"`` (replies the server must refuse).
        knowledge: what the attacker uses: ``"own updates"``, ``"own data"``, ``"none"``, ...
        colluding: whether the corrupted clients pool their honest updates each round.
        paper: where it comes from.
        params: the parameters a client or the CLI may set, with their defaults.
    """

    name: str
    fn: Callable
    kind: str
    knowledge: str
    paper: str
    colluding: bool = False
    params: dict = field(default_factory=dict)


ATTACK_SPECS: dict[str, AttackSpec] = {}


def register_attack(name: str, *, kind: str, knowledge: str, paper: str, colluding: bool = False,
                    params: dict | None = None):
    """Decorator declaring an attack. ``params`` default to the function's keyword
    parameters with defaults."""
    if kind not in KINDS:
        raise ValueError(f"attack kind must be one of {KINDS}, got {kind!r}")

    def deco(fn: Callable) -> Callable:
        own = params
        if own is None:
            own = {p.name: p.default for p in inspect.signature(fn).parameters.values()
                   if p.default is not p.empty}
        ATTACK_SPECS[name] = AttackSpec(name, fn, kind, knowledge, paper, colluding, dict(own))
        return fn

    return deco


def attack_names(*kinds: str) -> tuple[str, ...]:
    """Names of the attacks of these kinds (every attack when none is given)."""
    return tuple(n for n, s in ATTACK_SPECS.items() if not kinds or s.kind in kinds)


def colluding_attacks() -> tuple[str, ...]:
    return tuple(n for n, s in ATTACK_SPECS.items() if s.colluding)


def check_attack(name: str) -> AttackSpec | None:
    """The spec of ``name`` (None for ``"none"``); ``ValueError`` listing every name."""
    if name == "none":
        return None
    if name not in ATTACK_SPECS:
        raise ValueError(f"unknown attack {name!r}; choose from {('none',) + attack_names()}")
    return ATTACK_SPECS[name]


# Parameters every attack's client takes besides its own: weight inflation on top of any
# attack, and n and m (ALIE's z_max, the rule-aware searches, model replacement's gamma).
COMMON_PARAMS = frozenset({"weight_factor", "weight_value", "num_clients", "num_malicious"})


def accepted_params(name: str) -> frozenset[str]:
    """The attack-params keys attack ``name`` reads: its spec's parameters, the common ones,
    ``rule_params`` for a rule-aware attack, and for ``weight_inflation`` its ``inner``
    attack's (any non-backdoor attack's) parameters. ``ValueError`` for an unknown name."""
    spec = check_attack(name)
    if spec is None:
        return frozenset()
    keys = set(spec.params) | COMMON_PARAMS
    if "rule" in spec.params:
        keys.add("rule_params")
    if name == "weight_inflation":
        keys.add("inner")
        for other in attack_names("model", "data", "malformed"):
            keys |= set(ATTACK_SPECS[other].params)
            keys |= {"rule_params"} if "rule" in ATTACK_SPECS[other].params else set()
    return frozenset(keys)


def check_attack_params(attacks, params: dict, what: str = "attack-params") -> None:
    """``ValueError`` when a key of ``params`` is read by none of ``attacks`` (one set of
    parameters serves every attack of a grid): a misspelt key would otherwise be ignored
    and the run measure the attack at its defaults."""
    real = [a for a in attacks if a != "none"]
    if not real or not params:
        return
    accepted = set().union(*(accepted_params(a) for a in real))
    unknown = sorted(set(params) - accepted)
    if unknown:
        own = "; ".join(f"{a}: {', '.join(f'{k}={v!r}' for k, v in ATTACK_SPECS[a].params.items()) or 'none'}"
                        for a in real)
        raise ValueError(f"{what}: {', '.join(map(repr, unknown))} is read by none of the attacks {real} "
                         f"(their own parameters: {own}; any attack also takes {', '.join(sorted(COMMON_PARAMS))})")
