"""CRFL's parameter clipping and perturbation (Xie, Chen, Chen & Li, ICML 2021), the
strategy options that carry it, and their plain-data form."""

from __future__ import annotations

import numpy as np
import pytest

from flwr_byz.aggregation import ParameterSmoothing, PreAggregator, RobustAggregator
from flwr_byz.strategies.options import split_strategy_params


def test_clip_to_rho_hand():
    # floating parameters (3, 0) and 4: norm 5; rho = 2.5 halves them; the int64 counter and
    # the bool mask are left alone
    arrays = [np.array([3.0, 0.0], np.float32), np.array(4.0), np.array(7, np.int64), np.array([True, False])]
    out, report = ParameterSmoothing(clip_norm=2.5).apply(arrays)
    np.testing.assert_allclose(out[0], [1.5, 0.0])
    assert isinstance(out[1], np.ndarray) and out[1].shape == () and out[1] == 2.0
    assert out[2] == 7 and out[2].dtype == np.int64 and out[3].tolist() == [True, False]
    assert [a.dtype for a in out] == [a.dtype for a in arrays]
    assert report == {"model_norm": 5.0, "clip_scale": 0.5}
    # inside the ball: unchanged
    out, report = ParameterSmoothing(clip_norm=10.0).apply(arrays)
    np.testing.assert_array_equal(out[0], arrays[0]) and report["clip_scale"] == 1.0


def test_noise_has_the_papers_law_and_follows_the_seed():
    w = [np.zeros(200_000, np.float64)]
    step = ParameterSmoothing(noise_std=0.01, seed=5)
    a, _ = step.apply(w, server_round=3)
    b, _ = step.apply(w, server_round=3)
    c, _ = step.apply(w, server_round=4)
    np.testing.assert_array_equal(a[0], b[0])  # (seed, round) fixes the draw
    assert not np.array_equal(a[0], c[0])  # a fresh draw every round
    assert abs(a[0].mean()) < 1e-4 and a[0].std() == pytest.approx(0.01, rel=0.01)


def test_complex_parameters_count_as_two_real_ones():
    out, report = ParameterSmoothing(clip_norm=1.0).apply([np.array([3 + 4j], np.complex64)])
    assert report["model_norm"] == pytest.approx(5.0)
    np.testing.assert_allclose(out[0], [0.6 + 0.8j], rtol=1e-6)


@pytest.mark.parametrize("bad", [dict(clip_norm=0.0), dict(clip_norm=float("nan")), dict(noise_std=-1.0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        ParameterSmoothing(**bad)


@pytest.mark.parametrize("api", ["message", "legacy"])
def test_every_new_global_model_is_clipped_in_both_apis(api):
    from fuzz_replies import Spec, aggregate_one, task_identity

    task_identity()
    kwargs = dict(parameter_smoothing=ParameterSmoothing(clip_norm=1.0))
    if api == "message":
        from flwr_byz.strategies import FedMedian

        s = FedMedian(num_malicious_nodes=1, **kwargs)
    else:
        from flwr_byz.strategies.legacy import FedMedian

        s = FedMedian(num_malicious_clients=1, **kwargs)
    specs = [Spec(node=1 + i, arrays=[np.array([v, 0.0], np.float32)], names=["w"]) for i, v in enumerate([3, 4, 5])]
    out = aggregate_one(s, api, specs)
    np.testing.assert_allclose(out[0], [1.0, 0.0])  # the median 4, clipped to norm 1
    assert s.robust.history[-1]["details"]["clip_scale"] == pytest.approx(0.25)


def test_plain_data_options_split_from_the_rule_params():
    rule, options = split_strategy_params({"sub_dim": 5, "pre": [{"kind": "bucketing", "s": 3}],
                                           "crfl": {"clip_norm": 2.0, "noise_std": 0.1, "seed": 1},
                                           "weighting": "capped", "weight_cap": 3})
    assert rule == {"sub_dim": 5}
    assert [(p.kind, p.options) for p in options["pre_aggregators"]] == [("bucketing", {"s": 3})]
    assert options["parameter_smoothing"] == ParameterSmoothing(clip_norm=2.0, noise_std=0.1, seed=1)
    assert options["weighting"] == "capped" and options["weight_cap"] == 3
    for bad in ({"pre": "clip"}, {"pre": [{"s": 2}]}, {"crfl": {"rho": 1}}, {"pre": [{"kind": "nope"}]}):
        with pytest.raises(ValueError):
            split_strategy_params(bad)


def test_the_app_builds_crfl_and_pre_aggregators_from_its_run_config():
    from flwr_byz.app.settings import build_strategy, run_settings

    settings = run_settings({"strategy": "dnc", "f": 1, "seed": 4,
                             "strategy-params": '{"sub_dim": 50, "pre": [{"kind": "arc"}], "crfl": {"clip_norm": 3.0}}'})
    s = build_strategy(settings)
    assert s.robust.aggregator.params == {"sub_dim": 50, "num_iters": 5, "filter_frac": 1.0, "seed": 4} and [p.kind for p in s.robust.aggregator.pre] == ["arc"]
    assert s.robust.parameter_smoothing == ParameterSmoothing(clip_norm=3.0)


def test_a_rule_refuses_parameters_it_does_not_have():
    with pytest.raises(ValueError, match=r"dnc: unknown parameter\(s\) \['subdim'\].*sub_dim=10000"):
        RobustAggregator("dnc", f=1, subdim=3)
    assert RobustAggregator("dnc", f=1, sub_dim=3, pre=[PreAggregator("clip")]).params == {"sub_dim": 3}
