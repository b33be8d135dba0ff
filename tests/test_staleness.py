"""Staleness check of docs/RESULTS.md: rerun short, fixed-seed cells of the recorded
experiments and compare with the numbers the generated tables hold. Slow (minutes), not run
in CI:

    .venv/bin/python -m pytest -m slow tests/test_staleness.py

A cell here is rerun exactly as its table's command ran it (same configuration and seeds),
in the in-process engine, and its last-20 accuracy, averaged over the table's seeds, must
match the table within TOLERANCE (0.005: the tables print three decimals; a core change
that moves a run further than that makes its table stale). The MNIST cell needs the MNIST
files (``FLWR_BYZ_DATA`` or ``../shared/data``) and is skipped without them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from flwr_byz.simulations.config import RunConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

@pytest.fixture(autouse=True)
def one_thread():
    """The tables were made with ``OMP_NUM_THREADS=1`` (their commands in docs/RESULTS.md);
    under ALIE a run is chaotic, and another BLAS / torch thread count sums in another
    order and takes another path after some rounds, so the check runs as they ran."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FLWR_BYZ_DATA", ROOT.parent / "shared" / "data"))
TOLERANCE = 0.005


def recorded_row(block: str, row: str) -> list[str]:
    """The cells of the row starting ``| row |`` (a by-cell table's first cells joined by
    ``" | "`` work too) in the generated table between ``<!-- block:start -->`` and
    ``<!-- block:end -->``."""
    text = (ROOT / "docs" / "RESULTS.md").read_text()
    table = text.split(f"<!-- {block}:start -->")[1].split(f"<!-- {block}:end -->")[0]
    line = next(line for line in table.splitlines() if line.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def recorded(block: str, row: str, column: int | str) -> float:
    """The mean in ``column`` of :func:`recorded_row`: its position (0 = the row's first
    cell) or its header (the matrices, whose columns are the attacks run so far)."""
    if isinstance(column, str):
        column = recorded_row(block, "defense").index(column)
    return float(re.match(r"[0-9.]+", recorded_row(block, row)[column]).group())


def rerun(tmp_path, cells: list[RunConfig]) -> float:
    """Mean last-20 accuracy of ``cells`` (one per seed), run in-process."""
    from flwr_byz.simulations.runner import run_cells, summarize

    rows = run_cells(cells, tmp_path, progress=False, engine="inprocess")
    return float(np.mean([s["tail_accuracy"] for s in summarize(rows, cells)]))


DIGITS = dict(num_clients=20, num_malicious=5, f=5, rounds=30, local_steps=1, server_momentum=0.9)


def test_rule_aware_ipm_against_the_trimmed_mean(tmp_path):
    cells = [RunConfig(strategy="trimmed_mean", attack="ipm_optimal", seed=s, **DIGITS) for s in (0, 1, 2)]
    # the table's columns: defense, alie, alie_optimal, ipm, ipm_optimal
    assert rerun(tmp_path, cells) == pytest.approx(recorded("optimal-table", "trimmed_mean", 4), abs=TOLERANCE)


def test_mimic_against_the_median_on_the_dirichlet_split(tmp_path):
    cells = [RunConfig(strategy="median", attack="mimic", seed=s, partitioning="dirichlet", alpha=0.3, **DIGITS)
             for s in (0, 1, 2)]
    # the by-cell table: defense, attack, n, m, split, seeds, last-20 ...; the row is found by
    # its first cells
    assert rerun(tmp_path, cells) == pytest.approx(recorded("mimic-table", "median | mimic | 20 | 5 | dirichlet", 6),
                                                   abs=TOLERANCE)


def test_the_matrix_on_digits_krum_under_rule_aware_ipm(tmp_path):
    from flwr_byz.simulations.reproduce import experiment

    cell = next(c for c in experiment("matrix") if (c.strategy, c.attack) == ("krum", "ipm_optimal"))
    assert rerun(tmp_path, [cell]) == pytest.approx(recorded("matrix-digits-table", "krum", "ipm_optimal"),
                                                    abs=TOLERANCE)


def test_the_trimmed_mean_under_alie_on_digits_over_the_tables_seeds(tmp_path):
    cells = [RunConfig(strategy="trimmed_mean", attack="alie", num_clients=20, num_malicious=5, f=5, rounds=300,
                       local_steps=1, batch_size=16, lr=0.1, server_momentum=0.9, seed=s) for s in (0, 1, 2)]
    # the table's columns: defense, none, alie, alie(z=1.5), sign_flip
    assert rerun(tmp_path, cells) == pytest.approx(recorded("alie-digits-table", "trimmed_mean", 2), abs=TOLERANCE)


def test_plain_multi_krum_under_alie_in_the_detox_digits_table(tmp_path):
    from flwr_byz.simulations.reproduce import experiment

    base = next(c for c in experiment("detox") if c.strategy == "multi_krum" and c.attack_params.get("z") == 1.5)
    cells = [RunConfig.from_dict({**base.to_dict(), "seed": s}) for s in (0, 1, 2)]
    # the DETOX digits table's columns: defense, none, alie(z=z_max), alie(z=1.5), constant
    assert rerun(tmp_path, cells) == pytest.approx(recorded("detox-digits-table", "multi_krum", 3), abs=TOLERANCE)


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs the MNIST files")
def test_caf_under_sign_flipping_on_mnist(tmp_path):
    cell = RunConfig(strategy="caf", attack="sign_flip", dataset="mnist", data_root=str(DATA), num_clients=51,
                     num_malicious=12, f=12, rounds=300, local_steps=1, batch_size=83, lr=0.1,
                     server_momentum=0.9, seed=0)
    # the catalogue table's columns: defense, none, alie, sign_flip
    assert rerun(tmp_path, [cell]) == pytest.approx(recorded("catalogue-table", "caf", 3), abs=TOLERANCE)


MNIST_ALIE = dict(dataset="mnist", num_clients=51, num_malicious=12, f=12, rounds=300, local_steps=1, batch_size=83,
                  lr=0.1, server_momentum=0.9)


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs the MNIST files")
def test_flame_under_alie_on_mnist(tmp_path):
    cell = RunConfig(strategy="flame", attack="alie", data_root=str(DATA), seed=0, **MNIST_ALIE)
    # the memory table's columns: defense, none, alie, alie_backdoor, backdoor, ipm, model_replacement, sign_flip
    assert rerun(tmp_path, [cell]) == pytest.approx(recorded("memory-table", "flame", 2), abs=TOLERANCE)


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs the MNIST files")
def test_krum_under_alie_on_mnist_over_the_tables_seeds(tmp_path):
    cells = [RunConfig(strategy="krum", attack="alie", data_root=str(DATA), seed=s, **MNIST_ALIE) for s in (0, 1, 2)]
    # the ALIE table's columns: defense, none, alie, sign_flip
    assert rerun(tmp_path, cells) == pytest.approx(recorded("alie-table", "krum", 2), abs=TOLERANCE)


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs the MNIST files")
def test_the_trimmed_mean_under_alie_on_mnist_over_the_tables_seeds(tmp_path):
    cells = [RunConfig(strategy="trimmed_mean", attack="alie", data_root=str(DATA), seed=s, **MNIST_ALIE)
             for s in (0, 1, 2)]
    # the table's columns: defense, none, alie, sign_flip
    assert rerun(tmp_path, cells) == pytest.approx(recorded("alie-table", "trimmed_mean", 2), abs=TOLERANCE)


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs the MNIST files")
def test_meamed_under_alie_on_mnist_over_the_catalogue_tables_seeds(tmp_path):
    # the catalogue's only chaotic check (the CAF cell above is sign flipping)
    cells = [RunConfig(strategy="meamed", attack="alie", data_root=str(DATA), seed=s, **MNIST_ALIE) for s in (0, 1, 2)]
    # the catalogue table's columns: defense, none, alie, sign_flip
    assert rerun(tmp_path, cells) == pytest.approx(recorded("catalogue-table", "meamed", 2), abs=TOLERANCE)


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs the MNIST files")
def test_krum_under_alie_at_batch_128_on_mnist_over_the_tables_seeds(tmp_path):
    cells = [RunConfig(strategy="krum", attack="alie", data_root=str(DATA), seed=s, **{**MNIST_ALIE, "batch_size": 128})
             for s in (0, 1, 2)]
    # the batch-128 table's columns: defense, none, alie, sign_flip
    assert rerun(tmp_path, cells) == pytest.approx(recorded("alie-b128-table", "krum", 2), abs=TOLERANCE)


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs the MNIST files")
def test_the_alie_forecast_on_mnist_at_round_25_over_the_tables_seeds(tmp_path):
    from flwr_byz.simulations.runner import run_cells

    cells = [RunConfig(strategy="mean", attack="alie", data_root=str(DATA), seed=s, **{**MNIST_ALIE, "rounds": 50})
             for s in (0, 1, 2)]
    rows = run_cells(cells, tmp_path, progress=False, engine="inprocess")
    at = [r for r in rows if r["round"] == 25 and r.get("forecast_z1") is not None]
    assert len(at) == 3
    # the forecast table's rows: round, z = 0.5, z = 1, z = 2
    assert np.mean([r["forecast_z1"] for r in at]) == pytest.approx(recorded("forecast-table", "25", 2),
                                                                      abs=TOLERANCE)


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs the MNIST files")
def test_plain_multi_krum_under_alie_in_the_detox_mnist_table(tmp_path):
    from flwr_byz.simulations.reproduce import experiment

    base = next(c for c in experiment("detox", data_root=str(DATA))
                if c.strategy == "multi_krum" and c.attack_params.get("z") == 1.5)
    cells = [RunConfig.from_dict({**base.to_dict(), "seed": s}) for s in (0, 1, 2)]
    # the DETOX MNIST table's columns: defense, none, alie(z=z_max), alie(z=1.5), constant
    assert rerun(tmp_path, cells) == pytest.approx(recorded("detox-mnist-table", "multi_krum", 3), abs=TOLERANCE)


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs the MNIST files")
def test_krum_at_n_21_in_the_alie_sensitivity_table(tmp_path):
    from flwr_byz.simulations.reproduce import experiment

    base = next(c for c in experiment("alie-sensitivity", data_root=str(DATA))
                if c.strategy == "krum" and c.num_clients == 21)
    row = f"krum | alie(z={base.attack_params['z']}) | 21 | 4"
    # the by-cell table: defense, attack, n, m, seeds, last-20 accuracy, final accuracy
    seeds = [int(s) for s in recorded_row("alie-sensitivity-mnist-table", row)[4].split(",")]
    cells = [RunConfig.from_dict({**base.to_dict(), "seed": s}) for s in seeds]
    assert rerun(tmp_path, cells) == pytest.approx(recorded("alie-sensitivity-mnist-table", row, 5), abs=TOLERANCE)


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs the MNIST files")
def test_the_matrix_on_mnist_clustering_under_fangs_krum_attack(tmp_path):
    from flwr_byz.simulations.reproduce import experiment

    cell = next(c for c in experiment("matrix", data_root=str(DATA))
                if (c.strategy, c.attack) == ("clustering", "fang_krum"))
    assert rerun(tmp_path, [cell]) == pytest.approx(recorded("matrix-mnist-table", "clustering", "fang_krum"),
                                                    abs=TOLERANCE)
