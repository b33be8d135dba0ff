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
