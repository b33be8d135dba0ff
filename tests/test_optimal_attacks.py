"""Rule-aware ("optimal") ALIE and IPM: the line search, the scale found against a brute-force
reference computed independently, and the attacks as Flower clients; and Mimic."""

from __future__ import annotations

import numpy as np
import pytest

from flwr_byz.aggregation import RULES
from flwr_byz.attacks import alie_update, optimal_alie, optimal_ipm
from flwr_byz.attacks.optimal import line_search


def test_line_search_finds_the_peak_with_exactly_its_evaluations():
    calls = []

    def peak(s):
        calls.append(s)
        return -(s - 3.7) ** 2

    s, y = line_search(peak, start=0.0, delta=1.0, evals=30, ratio=0.8)
    # a coarse search by design (steps of delta * ratio^k around the best point): within 0.3
    assert len(calls) == 30 and abs(s - 3.7) < 0.3 and y == max(peak(c) for c in calls[:30])


def harm64(H, byz, rule, f):
    """The reference objective: |rule(H + f copies of byz) - mean(H)|, in float64."""
    X = np.vstack([H, np.tile(byz, (f, 1))]).astype(np.float64)
    out = RULES[rule](X, f=f) if rule != "mean" else RULES[rule](X)
    return float(np.linalg.norm(out - H.astype(np.float64).mean(axis=0)))


def alie64(H, z):
    H = H.astype(np.float64)
    return H.mean(axis=0) - z * H.std(axis=0)  # the paper's mu - z sigma (population sigma)


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "monna", "geometric_median"])
def test_optimal_alie_is_at_least_as_harmful_as_a_fine_grid_of_z(rule):
    rng = np.random.default_rng(1)
    H = (rng.standard_normal((15, 30)) + 0.5).astype(np.float32)  # omniscient: all honest updates
    f = 5
    update, z, harm = optimal_alie(H, rule=rule, f=f, evals=40)
    np.testing.assert_allclose(update, alie64(H, z), rtol=1e-5, atol=1e-5)  # still ALIE's form
    assert harm == pytest.approx(harm64(H, update, rule, f), rel=1e-4)
    grid = max(harm64(H, alie64(H, zz).astype(np.float32), rule, f) for zz in np.arange(0.0, 20.0, 0.25))
    assert harm >= 0.9 * grid
    # and at least as harmful as the paper's fixed z_max
    from flwr_byz.attacks import alie_z_max

    assert harm >= harm64(H, alie_update(H, z=alie_z_max(20, f)), rule, f) - 1e-6


@pytest.mark.parametrize("rule", ["median", "krum"])
def test_optimal_ipm_keeps_ipms_form(rule):
    rng = np.random.default_rng(2)
    H = (rng.standard_normal((12, 20)) + 1.0).astype(np.float32)
    update, eps, harm = optimal_ipm(H, rule=rule, f=4)
    np.testing.assert_allclose(update, -eps * H.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)
    assert harm >= harm64(H, -0.1 * H.mean(axis=0), rule, 4) - 1e-6  # beats IPM's default epsilon


def test_the_searches_take_the_rules_other_names():
    """A node names the rule in attack-params as a user writes it: the strategy class, another
    case, dashes; the search (and AGR-tailored's Krum / Multi-Krum criterion) is the same."""
    from flwr_byz.attacks import agr_tailored

    rng = np.random.default_rng(7)
    H = (0.3 + rng.standard_normal((14, 25))).astype(np.float32)
    for fn, name, other in ((optimal_alie, "fltrust", "FLTrust"), (optimal_ipm, "median", "Median"),
                            (agr_tailored, "multi_krum", "multi-krum"), (agr_tailored, "krum", "Krum")):
        a, b = fn(H, rule=name, f=5), fn(H, rule=other, f=5)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    with pytest.raises(ValueError, match="unknown rule 'nope'"):
        optimal_alie(H, rule="nope", f=5)


def test_non_omniscient_population_keeps_the_rounds_proportions():
    from flwr_byz.attacks.optimal import _population

    own = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(_population(own, n=10, f=3), own[[0, 1, 2, 0, 1, 2, 0]])
    assert _population(own, n=5, f=3) is own


@pytest.mark.parametrize("attack, rule", [("alie_optimal", "median"), ("agr_tailored", "trimmed_mean"),
                                          ("alie_optimal", "fltrust"), ("ipm_optimal", "fltrust"),
                                          ("agr_tailored", "fltrust")])
def test_the_client_needs_the_rule_and_reports_its_scale(attack, rule, tmp_path):
    from test_clients import StepClient, _global

    from flwr_byz.clients import Collusion, MaliciousClient

    coll = Collusion(range(3), StepClient, store_dir=tmp_path)
    with pytest.raises(ValueError, match="needs the server's rule"):
        MaliciousClient(StepClient(0), attack, collusion=coll, num_clients=9, num_malicious=3).fit(
            _global(), {"server-round": 1})
    replies = [MaliciousClient(StepClient(p), attack, collusion=coll, num_clients=9, num_malicious=3,
                               rule=rule).fit(_global(), {"server-round": 1}) for p in range(3)]
    assert all(r[2]["attack.malicious"] == 1 and "attack.scale" in r[2] and r[2]["attack.harm"] > 0 for r in replies)
    flat = [np.concatenate([a.ravel() for a in r[0]]) for r in replies]
    assert all(np.array_equal(flat[0], v) for v in flat[1:])  # the colluders agree


def fltrust64(X, g0):
    """FLTrust from its paper (Cao et al., NDSS 2021), in float64: trust TS_i = ReLU(cos(g_i, g0)),
    each update rescaled to |g0|, the trust-weighted mean; a zero update has no direction and no
    trust (what IPM sends at epsilon = 0)."""
    X, g0 = np.asarray(X, np.float64), np.asarray(g0, np.float64)
    X = X[np.linalg.norm(X, axis=1) > 0]
    norms = np.linalg.norm(X, axis=1)
    ts = np.maximum(X @ g0 / (norms * np.linalg.norm(g0)), 0.0)
    return (ts[:, None] * X * (np.linalg.norm(g0) / norms)[:, None]).sum(axis=0) / ts.sum()


@pytest.mark.parametrize("search", ["alie_optimal", "ipm_optimal", "agr_tailored"])
def test_rule_aware_attacks_against_fltrust_stand_in_g0(search):
    """FLTrust needs the server's root update g0, which the attacker does not see: its simulated
    round uses the mean of the honest updates it knows, or the g0 it is given (full knowledge)."""
    from flwr_byz.attacks import agr_tailored

    fn = {"alie_optimal": optimal_alie, "ipm_optimal": optimal_ipm, "agr_tailored": agr_tailored}[search]
    rng = np.random.default_rng(6)
    H = (0.5 + rng.standard_normal((14, 25))).astype(np.float32)
    f = 5
    mu = H.astype(np.float64).mean(axis=0)

    def harm(byz, g0):
        return float(np.linalg.norm(fltrust64(np.vstack([H, np.tile(byz, (f, 1))]), g0) - mu))

    update, scale, found = fn(H, rule="fltrust", f=f)
    assert np.isfinite(update).all() and found == pytest.approx(harm(update, mu), rel=1e-4)
    # FLTrust rescales every trusted update to |g0|: with g0 = the honest mean, trusting an
    # attacker pulls the output back towards it, and an update FLTrust ignores (no trust) does
    # as much harm as sitting the round out. The search never does less than that, and ALIE's
    # finds a trusted z that does more.
    absent = float(np.linalg.norm(fltrust64(H, mu) - mu))
    assert found >= absent - 1e-6 and found > harm(mu.astype(np.float32), mu) + 1e-3
    if search == "alie_optimal":
        assert found > absent + 1e-3
    g0 = (mu + 0.5 * rng.standard_normal(25)).astype(np.float32)  # a root update the attacker is given
    update, scale, found = fn(H, rule="fltrust", f=f, server_update=g0)
    assert found == pytest.approx(harm(update, g0), rel=1e-4)
    with pytest.raises(ValueError, match="server_update must be 25 finite values"):
        fn(H, rule="fltrust", f=f, server_update=np.ones(3))


@pytest.mark.timeout(300)
def test_optimal_attacks_complete_a_simulation_engine_round(tmp_path):
    """Colluding rule-aware (and Mimic) clients in Ray actors: every round completes (no deadlock) and
    the attackers learn the server's rule from the run."""
    from flwr_byz.simulations.config import RunConfig
    from flwr_byz.simulations.runner import run_cells

    cells = [RunConfig(strategy="krum", attack=a, num_clients=7, num_malicious=2, rounds=1)
             for a in ("alie_optimal", "ipm_optimal", "mimic")]
    rows = run_cells(cells, tmp_path, progress=False)
    finals = [r for r in rows if r.get("final")]
    assert len(finals) == 3 and all(not r.get("skipped") for r in rows if r["round"] > 0)


# --------------------------------------------------------------------------------------
# Mimic (Karimireddy, He & Jaggi, ICLR 2022)
# --------------------------------------------------------------------------------------


def test_mimic_copies_the_most_extreme_update_along_the_main_direction():
    from flwr_byz.attacks import mimic

    # spread mostly along x; the update at x = 5 is the farthest from the mean along it
    X = np.array([[0, 0], [1, 0.1], [-1, 0], [5, 0.2]], np.float32)
    update, i = mimic(X)
    assert i == 3 and np.array_equal(update, X[3])
    # against a float64 reference: the top right singular vector of the centred updates
    rng = np.random.default_rng(4)
    Y = (rng.standard_normal((9, 40)) * np.linspace(0.1, 3, 40)).astype(np.float32)
    C = Y.astype(np.float64) - Y.astype(np.float64).mean(axis=0)
    v = np.linalg.svd(C, full_matrices=False)[2][0]
    update, i = mimic(Y)
    assert i == int(np.argmax(np.abs(C @ v))) and np.array_equal(update, Y[i])
    # one known update: that one
    assert mimic(Y[:1])[1] == 0


def test_mimic_clients_send_one_of_their_honest_updates(tmp_path):
    from test_clients import StepClient, _flat, _global, _honest_update64

    from flwr_byz.clients import Collusion, MaliciousClient

    coll = Collusion(range(4), StepClient, store_dir=tmp_path)
    replies = [MaliciousClient(StepClient(p), "mimic", collusion=coll).fit(_global(), {"server-round": 1})
               for p in range(4)]
    sent = [_flat(r[0]) - _flat(_global()) for r in replies]
    assert all(np.array_equal(sent[0], s) for s in sent[1:])
    chosen = replies[0][2]["attack.mimicked"]
    np.testing.assert_allclose(sent[0], _honest_update64(chosen), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------
# AGR-tailored attacks (Shejwalkar & Houmansadr, NDSS 2021, Section IV-B)
# --------------------------------------------------------------------------------------


def _tailored_rows(H, gamma, f):
    """The simulated round of the reference: H plus f copies of mean(H) - gamma std(H)
    (ddof = 1, the 'std' direction), in float64."""
    H64 = H.astype(np.float64)
    byz = H64.mean(axis=0) - gamma * H64.std(axis=0, ddof=1)
    return np.vstack([H64, np.tile(byz, (f, 1))]), byz


@pytest.mark.parametrize("rule", ["krum", "multi_krum"])
def test_agr_tailored_finds_the_largest_gamma_the_rule_still_selects(rule):
    from flwr_byz.attacks import agr_tailored

    rng = np.random.default_rng(4)
    H = (0.3 + rng.standard_normal((14, 25))).astype(np.float32)
    f, n = 5, 19
    update, gamma, harm = agr_tailored(H, rule=rule, f=f)

    def selected(g):  # the reference: Krum's choice is malicious / Multi-Krum keeps all of them
        X, _ = _tailored_rows(H, g, f)
        _, rep = RULES[rule](X, f=f, return_report=True)
        chosen = set(rep.selected)
        mal = set(range(14, n))
        return bool(chosen & mal) if rule == "krum" else mal <= chosen

    grid = np.arange(0.0, 20.0, 0.01)
    feasible = [g for g in grid if selected(g)]
    assert feasible and gamma > 0
    assert abs(gamma - max(feasible)) <= 0.011  # the halving search lands on the edge of the feasible set
    np.testing.assert_allclose(update, _tailored_rows(H, gamma, f)[1], rtol=1e-5, atol=1e-5)
    X, _ = _tailored_rows(H, gamma, f)
    assert harm == pytest.approx(float(np.linalg.norm(RULES[rule](X, f=f) - H.astype(np.float64).mean(axis=0))),
                                 rel=1e-4)


def test_agr_tailored_against_the_median_moves_it_farther_than_the_agnostic_min_max():
    from flwr_byz.attacks import agr_tailored, min_max

    rng = np.random.default_rng(5)
    H = (0.3 + rng.standard_normal((14, 25))).astype(np.float32)
    f = 5
    _, gamma, harm = agr_tailored(H, rule="median", f=f)
    agnostic = harm64(H, min_max(H, direction="std"), "median", f)
    assert gamma > 0 and harm >= agnostic - 1e-9
    assert harm > harm64(H, H.astype(np.float64).mean(axis=0).astype(np.float32), "median", f)  # beats gamma = 0
    with pytest.raises(ValueError, match="direction"):
        agr_tailored(H, rule="median", f=f, direction="up")
