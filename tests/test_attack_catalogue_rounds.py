"""Every attack of the catalogue, as the clients mount it, through a real round of a robust
strategy (in-process engine, embedded digits): the round completes, the corrupted clients
say they are malicious, the global model stays finite; a new attack joins by being
registered. The backdoors are also measured (ASR in the rows)."""

from __future__ import annotations

import math

import pytest

from flwr_byz.attacks import ATTACK_SPECS


@pytest.mark.parametrize("attack", sorted(ATTACK_SPECS))
def test_every_attack_completes_a_round_of_a_robust_strategy(attack, tmp_path):
    from flwr_byz.simulations.config import RunConfig
    from flwr_byz.simulations.runner import run_cells

    strategy = "krum" if attack in ("fang_krum",) else "median"
    cell = RunConfig(strategy=strategy, attack=attack, num_clients=9, num_malicious=2, rounds=2, local_steps=1,
                     seed=1)
    rows = run_cells([cell], tmp_path, progress=False, engine="inprocess")
    rounds = [r for r in rows if r["round"] > 0]
    assert len(rounds) == 2 and all(math.isfinite(r["accuracy"]) for r in rows)
    # garbage replies are dropped by the trust boundary; every other attack is aggregated
    expected_kept = 7 if ATTACK_SPECS[attack].kind == "malformed" else 9
    assert all(r["kept"] == expected_kept and not r["skipped"] for r in rounds), rounds
    if ATTACK_SPECS[attack].kind == "backdoor":
        assert all(0.0 <= r["asr"] <= 1.0 for r in rounds)
