"""One declaration per rule (issue 17): the registry is the one source of every rule list.

A test-only rule registered here must appear in RULES, RobustAggregator, both Flower APIs,
DETOX's A1, the CLI's and the App's name resolution and the fuzz harness's strategy
builder, with no other edit; every built-in rule must have its independent checks.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from rule_inputs import round_inputs
from flwr_byz import strategies
from flwr_byz.aggregation import REGISTRY, RULES, ByzantineBoundError, RobustAggregator, minimum_clients
from flwr_byz.aggregation.registry import NO_TOLERANCE, check_bound, register_rule, resolve_rule
from flwr_byz.strategies import legacy
from flwr_byz.strategies.rule_classes import canonical_strategy, resolve_strategy

from fuzz_replies import task_identity
from test_rules_reference import BOUNDS

ROOT = Path(__file__).resolve().parent.parent


def _midrange(updates, *, f: int, scale: float = 1.0, return_report: bool = False):
    """Test-only rule: coordinate-wise mid-range of the values left after cutting f on each
    side, times ``scale``; n >= 2f + 1."""
    from flwr_byz.aggregation import AggregationReport, as_update_matrix

    X = as_update_matrix(updates)
    check_bound("example_midrange", X.shape[0], f)
    s = np.sort(X, axis=0)[f: X.shape[0] - f]
    agg = (scale * (s[0] + s[-1]) / 2).astype(X.dtype)
    return (agg, AggregationReport("example_midrange", X.shape[0], f)) if return_report else agg


@pytest.fixture
def example_rule():
    register_rule("example_midrange", bound=(2, 1), paper="a test", aliases=("midrange",),
                  coordinate_wise=True)(_midrange)
    yield REGISTRY["example_midrange"]
    REGISTRY.remove("example_midrange")


def test_a_rule_declared_once_appears_everywhere(example_rule):
    task_identity()
    X = np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 5.0], [100.0, -100.0], [3.0, 7.0]], dtype=np.float32)
    # hand-computed: cut 1 per side -> rows sorted per column [1, 2, 3] and [1, 3, 5] -> mid-ranges 2, 3
    np.testing.assert_allclose(RULES["example_midrange"](X, f=1), [2.0, 3.0])
    np.testing.assert_allclose(RobustAggregator("example_midrange", f=1, scale=2.0)(X)[0], [4.0, 6.0])
    assert minimum_clients("example_midrange", 2) == 5
    # both Flower APIs, with the rule's own parameter in a real signature
    for module, f_arg in ((strategies, "num_malicious_nodes"), (legacy, "num_malicious_clients")):
        cls = module.strategy_class("midrange")
        assert issubclass(cls, module.RobustFedAvg) and cls.__name__ == "ExampleMidrange"
        sig = inspect.signature(cls)
        assert sig.parameters["scale"].default == 1.0 and f_arg in sig.parameters
        s = cls(**{f_arg: 1}, scale=2.0)
        assert s.robust.aggregator.rule == "example_midrange" and s.robust.aggregator.params == {"scale": 2.0}
        assert resolve_strategy("Example-Midrange", module) is cls
    # the CLI's and the App's names, and DETOX's A1
    assert canonical_strategy("midrange") == "example_midrange"
    assert canonical_strategy("detox-ExampleMidrange") == "detox-example_midrange"
    from flwr_byz.app.settings import build_strategy, run_settings

    app_strategy = build_strategy(run_settings({"strategy": "example-midrange", "f": 1}))
    assert app_strategy.robust.aggregator.rule == "example_midrange"
    detox = strategies.Detox(group_size=3, num_malicious_nodes=2, a1="midrange")
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14]]
    G = np.repeat(X, 3, axis=0)
    agg, report = detox.robust.aggregator(G, groups=groups)
    np.testing.assert_allclose(agg, [2.0, 3.0])  # groups agree: A1 = the rule on X, f1 = 2 // 2 = 1
    # and a round of the real Message-API aggregation
    from fuzz_replies import Spec, aggregate, make_strategy

    import fuzz_replies
    saved, fuzz_replies.GLOBAL_NAMES = fuzz_replies.GLOBAL_NAMES, ["w"]
    try:
        specs = [Spec(node=i + 1, arrays=[row], names=["w"]) for i, row in enumerate(X)]
        out = aggregate(make_strategy("message", "example_midrange", 1), "message", [np.zeros(2, np.float32)], specs)
    finally:
        fuzz_replies.GLOBAL_NAMES = saved
    np.testing.assert_allclose(out[0], [2.0, 3.0])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_check_bound_and_minimum_clients_are_one_source(name):
    spec = REGISTRY[name]
    for f in range(4):
        need = spec.minimum_clients(f)
        assert minimum_clients(name, f) == need == RobustAggregator(name, f=f).minimum_clients()
        if need >= NO_TOLERANCE:
            with pytest.raises(ByzantineBoundError):
                RULES[name](np.ones((50, 3), np.float32), f=f, **round_inputs(name, np.ones((50, 3))))
            continue
        X = np.random.default_rng(f).normal(size=(need, 3)).astype(np.float32)
        assert np.isfinite(RULES[name](X, f=f, **round_inputs(name, X))).all()  # exactly at the bound: works
        if need > 1:
            with pytest.raises(ByzantineBoundError, match=re.escape(f"n >= {spec.formula()} = {need}")):
                RULES[name](X[:-1], f=f, **round_inputs(name, X))


BUILT_IN = sorted(REGISTRY)


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_rule_has_its_independent_checks(name):
    spec = REGISTRY[name]
    # an f bound written from the paper in the reference tests (mean: f must be 0)
    if name != "mean":
        assert name in BOUNDS, f"{name}: add its paper's bound to tests/test_rules_reference.py BOUNDS"
        assert all(BOUNDS[name](f) == spec.minimum_clients(f) for f in range(6))
    # a float64 reference test
    reference = "".join(p.read_text() for p in sorted((ROOT / "tests").glob("test_rules_reference*.py")))
    assert re.search(rf"\b{spec.fn.__name__}\(", reference), f"{name}: no reference test calls it"
    # a class in both APIs
    assert issubclass(strategies.strategy_class(name), strategies.RobustFedAvg)
    assert issubclass(legacy.strategy_class(name), legacy.RobustFedAvg)
    # a benchmark row (mean is the anchor of the others)
    bench = (ROOT / "benchmarks" / "aggregation.py").read_text()
    assert f'"{name}"' in bench or f'"{spec.fn.__name__}"' in bench, f"{name}: no benchmark row"


@pytest.mark.parametrize("name", BUILT_IN)
def test_docs_name_every_rule_with_its_bound(name):
    spec = REGISTRY[name]
    table = (ROOT / "docs" / "strategies.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("|") and f"`{spec.fn.__name__}`" in line
            or line.startswith("|") and f"`{name}`" in line]
    assert rows, f"docs/strategies.md has no row for {name}"
    if name != "mean":
        assert any(f"n >= {spec.formula()}" in r for r in rows), f"docs/strategies.md: {name}'s bound"
    assert f"`{name}`" in (ROOT / "README.md").read_text(), f"README's strategy list lacks {name}"


def test_resolve_rule_accepts_every_documented_name():
    for name, rule in [("FedAvg", "mean"), ("fedavg", "mean"), ("FedMedian", "median"), ("multi-krum", "multi_krum"),
                       ("MultiKrum", "multi_krum"), ("FedTrimmedAvg", "trimmed_mean"), ("RFA", "geometric_median"),
                       ("cclip", "centered_clipping"), ("SignSGDMajority", "signsgd_majority"), ("BULYAN", "bulyan")]:
        assert resolve_rule(name).name == rule
    with pytest.raises(ValueError, match="unknown rule 'krumm'"):
        resolve_rule("krumm")


# --- the attack catalogue --------------------------------------------------------------------

from flwr_byz.attacks import ATTACK_SPECS  # noqa: E402


@pytest.mark.parametrize("name", sorted(ATTACK_SPECS))
def test_every_attack_is_declared_documented_and_tested(name):
    spec = ATTACK_SPECS[name]
    assert spec.kind in ("model", "data", "backdoor", "weight", "malformed") and spec.paper and spec.knowledge
    # the lists that used to be typed by hand are the catalogue's
    from flwr_byz.clients.malicious import ATTACKS, COLLUDING
    from flwr_byz.simulations.runner import BACKDOORS

    assert (name in BACKDOORS) == (spec.kind == "backdoor")
    assert (name in ATTACKS) == (spec.kind != "backdoor")
    assert (name in COLLUDING) == (spec.colluding and spec.kind != "backdoor")
    # documented: a docs/attacks.md row naming its function, the README's and the App's lists
    rows = [line for line in (ROOT / "docs" / "attacks.md").read_text().splitlines()
            if line.startswith("|") and f"`{spec.fn.__name__}(" in line]
    assert rows, f"docs/attacks.md has no row for {name} ({spec.fn.__name__})"
    assert f"`{name}`" in (ROOT / "README.md").read_text()
    assert f"`{name}`" in (ROOT / "docs" / "deployment.md").read_text()
    # tested against an expectation of its own: some test calls the function
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert re.search(rf"\b{spec.fn.__name__}\(", tests), f"no test calls {spec.fn.__name__}"


def test_the_cli_refuses_an_unknown_attack_before_running(capsys):
    from flwr_byz.simulations.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--attacks", "alie,teleport", "--no-progress"])
    assert exc.value.code == 2 and "unknown attack 'teleport'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--strategies", "krumm", "--no-progress"])
    assert "unknown strategy 'krumm'" in capsys.readouterr().err


def test_the_docs_rule_table_is_the_generated_one():
    from flwr_byz.aggregation.registry import rule_table

    text = (ROOT / "docs" / "strategies.md").read_text()
    block = text.split("<!-- rule-table:start -->\n")[1].split("<!-- rule-table:end -->")[0]
    assert block == rule_table(), "docs/strategies.md's rule table is stale: paste `flwr-byz rules` there"
    assert all(REGISTRY[name].cost for name in REGISTRY), "every rule declares its cost"


def test_cli_rules_prints_the_table(capsys):
    from flwr_byz.aggregation.registry import rule_table
    from flwr_byz.simulations.cli import main

    assert main(["rules"]) == 0
    assert capsys.readouterr().out == rule_table()


def test_attack_params_must_be_read_by_some_attack_of_the_run():
    from flwr_byz.app.settings import check_attack_settings, run_settings
    from flwr_byz.attacks.catalogue import accepted_params, check_attack_params

    assert accepted_params("alie") == {"z", "weight_factor", "weight_value", "num_clients", "num_malicious"}
    assert {"rule", "rule_params", "evals"} <= accepted_params("alie_optimal")
    assert {"inner", "scale", "epsilon", "z"} <= accepted_params("weight_inflation")  # its inner attack's too
    assert {"source", "target", "angle", "tail", "norm_bound", "fraction"} <= accepted_params("edge_case")
    check_attack_params(["alie", "ipm"], {"z": 1.5, "epsilon": 0.5})  # one set of parameters for a grid
    check_attack_params(["none"], {"anything": 1})  # no attack: nothing reads them, nothing runs
    with pytest.raises(ValueError, match="'zz' is read by none of the attacks"):
        check_attack_params(["alie"], {"zz": 1})
    with pytest.raises(ValueError, match="unknown attack 'teleport'"):
        check_attack_params(["teleport"], {"z": 1})
    # the Flower App's run config, before anything is loaded
    check_attack_settings(run_settings({"attack": "sign_flip", "attack-params": '{"scale": 2}'}))
    with pytest.raises(ValueError, match="'scael' is read by none"):
        check_attack_settings(run_settings({"attack": "sign_flip", "attack-params": '{"scael": 2}'}))
    from flwr_byz.app.client_app import node_attack

    assert node_attack({"attack": "alie", "attack-z": 1.5})[1]["z"] == 1.5
    with pytest.raises(ValueError, match="the node config's attack parameters: 'zz'"):
        node_attack({"attack": "alie", "attack-zz": 1.5})
