"""Hostile replies for the trust-boundary tests: what a Byzantine client can send, in both
Flower APIs, and the strategies' real ``aggregate_train`` / ``aggregate_fit`` driven with it.

A reply is described by a :class:`Spec` (its node id, arrays, names, reported weight, or
an error / a malformed record) and turned into a Message-API ``Message`` or a legacy
``(ClientProxy, FitRes)`` pair. ``expect`` says whether the server must drop it (True),
must keep it (False) or may do either (None: e.g. a positional reorder of two arrays of
one shape, which the legacy API cannot see).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

GLOBAL_NAMES = ["conv.weight", "conv.bias64", "bn.num_batches_tracked", "empty", "scale", "spectrum", "mask",
                "seen"]


def global_arrays() -> list[np.ndarray]:
    """A model with every kind of array that trips a naive server: float32, float64, a 0-d
    int64 counter (BatchNorm's num_batches_tracked), a size-0 array, a 0-d float32, a
    complex64 array, a bool mask and a uint64 near its maximum."""
    return [
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
        np.array([0.5, -0.25, 1.0], dtype=np.float64),
        np.array(7, dtype=np.int64),
        np.zeros((0, 4), dtype=np.float32),
        np.array(2.0, dtype=np.float32),
        np.array([1 + 1j, -0.5j], dtype=np.complex64),
        np.array([True, False, True]),
        np.array([2**64 - 5], dtype=np.uint64),
    ]


def honest_arrays(rng: np.random.Generator, g: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for a in g:
        if a.dtype.kind in "iu":
            out.append(np.asarray(a + a.dtype.type(1), dtype=a.dtype))
        elif a.dtype.kind == "b":
            out.append(a.copy())
        else:
            out.append(np.asarray(a + rng.normal(0.0, 0.01, a.shape) + 0.1, dtype=a.dtype))
    return out


@dataclass
class Spec:
    """One reply. ``arrays``/``names`` None with ``error`` set: an error reply."""

    node: int
    arrays: list | None
    names: list | None
    weight: object = 10
    kind: str = "honest"
    expect_drop: bool | None = False
    error: str | None = None
    no_metrics: bool = False
    raw_tensors: list | None = None  # legacy: undecodable bytes
    extra_record: bool = False
    honest: bool = False
    extra: dict = field(default_factory=dict)


# Weights: (value, valid in both APIs?) -- the Message API's MetricRecord refuses bool/str/None itself.
VALID_WEIGHTS = [0, 1, 10, 1e12, 10**30, 2.5]
INVALID_WEIGHTS_BOTH = [float("inf"), float("nan"), -5, -1e-9, [1.0, 2.0], 10**400]
INVALID_WEIGHTS_LEGACY = [True, "100", None, np.array([3.0])]

ARRAY_KINDS = [
    "outlier", "huge", "reordered", "renamed", "missing", "extra", "wrong_shape", "scalar_for_0d",
    "0d_for_scalar", "int_dtype", "bool_dtype", "float16", "float64_for_32", "complex", "nan", "inf",
    "empty_reply", "undecodable", "error", "no_metrics", "two_records", "counter_float",
]
# Kinds the server must keep (valid replies with hostile values); "reordered" is valid by name.
KEPT = {"outlier", "huge"}


def hostile(kind: str, node: int, g: list[np.ndarray], rng: np.random.Generator, api: str,
            weight=10) -> Spec:
    """A hostile reply of ``kind`` from ``node`` (weights are drawn separately)."""
    names = list(GLOBAL_NAMES)
    arrays = honest_arrays(rng, g)
    expect = True
    spec = dict(node=node, kind=kind, weight=weight)
    if kind == "outlier":
        arrays = [np.asarray(a - 100, dtype=a.dtype) if a.dtype.kind == "f" else a for a in arrays]
        expect = False
    elif kind == "huge":
        arrays = [np.full(a.shape, 1e30 if a.dtype == np.float32 else 1e300, dtype=a.dtype)
                  if a.dtype.kind == "f" else a for a in arrays]
        expect = False
    elif kind == "reordered":
        order = list(range(len(arrays)))[::-1]
        arrays, names = [arrays[i] for i in order], [names[i] for i in order]
        expect = False if api == "message" else True  # by position, the shapes differ
    elif kind == "renamed":
        names[0] = "conv.weight.evil"
        expect = True if api == "message" else False  # the legacy API has no names
    elif kind == "missing":
        arrays, names = arrays[:-1], names[:-1]
    elif kind == "extra":
        arrays, names = arrays + [np.zeros(3, np.float32)], names + ["extra"]
    elif kind == "wrong_shape":
        arrays[0] = arrays[0].reshape(3, 2)
    elif kind == "scalar_for_0d":
        arrays[4] = arrays[4].reshape(1)
    elif kind == "0d_for_scalar":
        arrays[1] = arrays[1][:1].reshape(())
    elif kind == "int_dtype":
        arrays[0] = arrays[0].astype(np.int32)
    elif kind == "bool_dtype":
        arrays[1] = arrays[1] > 0
    elif kind == "float16":
        arrays[0] = arrays[0].astype(np.float16)
    elif kind == "float64_for_32":
        arrays[0] = arrays[0].astype(np.float64)
    elif kind == "complex":
        arrays[1] = arrays[1].astype(np.complex128)
    elif kind == "nan":
        arrays[0] = arrays[0].copy()
        arrays[0][0, 0] = np.nan
    elif kind == "inf":
        arrays[1] = arrays[1].copy()
        arrays[1][-1] = -np.inf
    elif kind == "empty_reply":
        arrays, names = [], []
    elif kind == "counter_float":
        arrays[2] = np.array(8.0)
    elif kind == "undecodable":
        return Spec(**spec, arrays=None, names=None, raw_tensors=[b"\x93NUMPY garbage"], expect_drop=True)
    elif kind == "error":
        return Spec(**spec, arrays=None, names=None, error="client crashed", expect_drop=True)
    elif kind == "no_metrics":
        if api == "legacy":  # FitRes always has num_examples: a reply without metrics is fine there
            return Spec(**{**spec, "kind": "honest_no_metrics"}, arrays=arrays, names=names, expect_drop=False)
        return Spec(**spec, arrays=arrays, names=names, no_metrics=True, expect_drop=True)
    elif kind == "two_records":
        if api == "legacy":
            return Spec(**{**spec, "kind": "honest_two"}, arrays=arrays, names=names, expect_drop=False)
        return Spec(**spec, arrays=arrays, names=names, extra_record=True, expect_drop=True)
    else:
        raise ValueError(kind)
    return Spec(**spec, arrays=arrays, names=names, expect_drop=expect)


def weight_is_valid(w) -> bool:
    from flwr_byz.updates import read_weight

    try:
        read_weight(w)
    except ValueError:
        return False
    return True


# --- Flower objects ------------------------------------------------------------------------------

def task_identity():
    """Messages built outside a Flower run need the run id Flower would set."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = 1, 1, 1


def to_message(spec: Spec):
    from flwr.app import Array, ArrayRecord, Error, Message, Metadata, MetricRecord, RecordDict

    md = Metadata(run_id=1, message_id=f"reply-{spec.node}-{id(spec)}", src_node_id=spec.node, dst_node_id=0,
                  reply_to_message_id="", group_id="", created_at=time.time(), ttl=100.0, message_type="train")
    if spec.error is not None:
        return Message(error=Error(code=1, reason=spec.error), metadata=md)
    if spec.raw_tensors is not None:
        record = ArrayRecord({"conv.weight": Array("float32", (2, 3), "numpy.ndarray", spec.raw_tensors[0])})
    else:
        record = ArrayRecord({str(n): Array(np.asarray(a)) for n, a in zip(spec.names, spec.arrays)})
    content = {"arrays": record}
    if spec.extra_record:
        content["more"] = ArrayRecord({"x": Array(np.zeros(1))})
    if not spec.no_metrics:
        content["metrics"] = MetricRecord({"num-examples": spec.weight, "partition-id": spec.node})
    return Message(content=RecordDict(content), metadata=md)


class Proxy:
    """The one attribute of a legacy ClientProxy that a strategy reads."""

    def __init__(self, cid):
        self.cid = cid


def to_fitres(spec: Spec):
    from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters

    if spec.error is not None:
        return Proxy(str(spec.node)), FitRes(Status(Code.FIT_NOT_IMPLEMENTED, spec.error),
                                             Parameters([], ""), 0, {})
    if spec.raw_tensors is not None:
        params = Parameters(spec.raw_tensors, "numpy.ndarray")
    else:
        params = ndarrays_to_parameters([np.asarray(a) for a in spec.arrays])
    return Proxy(str(spec.node)), FitRes(Status(Code.OK, ""), params, spec.weight, {"partition-id": spec.node})


def server_update_fn(arrays):
    """FLTrust's server update in the harness: an honest-looking trained model (fixed draw)."""
    return honest_arrays(np.random.default_rng(7), [np.asarray(a) for a in arrays])


def make_strategy(api: str, rule: str, f: int, *, pre=(), detox: bool = False, **kwargs):
    from flwr_byz.aggregation import REGISTRY

    spec = REGISTRY.get(rule)
    if spec is not None and "server_update" in spec.required_inputs:
        kwargs.setdefault("server_update_fn", server_update_fn)
    if spec is not None and "seed" in spec.params and not detox:  # a randomised rule: the same draw every time
        kwargs["rule_params"] = {"seed": 0, **kwargs.get("rule_params", {})}
    if api == "message":
        from flwr_byz import strategies as S

        if detox:
            return S.Detox(group_size=3, num_malicious_nodes=f, a1=rule, pre_aggregators=pre, **kwargs)
        return S.RobustFedAvg(rule=rule, num_malicious_nodes=f, pre_aggregators=pre, **kwargs)
    from flwr_byz.strategies import legacy as L

    if detox:
        return L.Detox(group_size=3, num_malicious_clients=f, a1=rule, pre_aggregators=pre, **kwargs)
    return L.RobustFedAvg(rule=rule, num_malicious_clients=f, pre_aggregators=pre, **kwargs)


def aggregate(strategy, api: str, g: list[np.ndarray], specs: list[Spec], server_round: int = 1, groups=None):
    """Run the strategy's real aggregation on ``specs``; returns the new arrays or None."""
    from flwr.app import Array, ArrayRecord
    from flwr.common import parameters_to_ndarrays

    strategy._groups = groups
    if api == "message":
        strategy._current = ArrayRecord({n: Array(a) for n, a in zip(GLOBAL_NAMES, g)})
        strategy._sent = []
        out, _ = strategy.aggregate_train(server_round, [to_message(s) for s in specs])
        return None if out is None else [out[n].numpy() for n in GLOBAL_NAMES]
    strategy._current = [np.copy(a) for a in g]
    results, failures = [], []
    for s in specs:
        (failures if s.error is not None else results).append(to_fitres(s))
    out, _ = strategy.aggregate_fit(server_round, results, failures)
    return None if out is None else parameters_to_ndarrays(out)


def aggregate_one(strategy, api: str, specs: list[Spec], g=None, server_round: int = 1):
    """:func:`aggregate` for a one-array model named 'w' (the global model: ``g``, or zeros
    shaped like the first reply)."""
    global GLOBAL_NAMES
    g = [np.zeros(specs[0].arrays[0].shape, specs[0].arrays[0].dtype)] if g is None else g
    saved, GLOBAL_NAMES = GLOBAL_NAMES, ["w"]
    try:
        return aggregate(strategy, api, g, specs, server_round=server_round)
    finally:
        GLOBAL_NAMES = saved


def one_array_round(strategy, api: str, values: np.ndarray, server_round: int, g=None):
    """One round of ``strategy`` with one-array replies: row i of ``values`` is node i + 1's
    update on the global model ``g`` (default zeros), reported with 10 + i examples."""
    g = [np.zeros(values.shape[1], np.float32)] if g is None else g
    specs = [Spec(node=1 + i, arrays=[(g[0] + v).astype(np.float32)], names=["w"], weight=10 + i)
             for i, v in enumerate(values)]
    return aggregate_one(strategy, api, specs, g=g, server_round=server_round)


def strategy_of(api: str, name: str, f: int, **kwargs):
    """The class of rule ``name`` in ``api`` ("message" or "legacy"), with f under that
    API's name and ``kwargs``."""
    if api == "message":
        from flwr_byz import strategies as S

        return S.strategy_class(name)(num_malicious_nodes=f, **kwargs)
    from flwr_byz.strategies import legacy as L

    return L.strategy_class(name)(num_malicious_clients=f, **kwargs)


class LogCapture(logging.Handler):
    """Collects the messages of Flower's logger (flwr-byz logs through it)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("flwr").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("flwr").removeHandler(self)
