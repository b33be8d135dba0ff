"""Results over seeds and the generated tables (issue: results that stay true)."""

from __future__ import annotations

import pytest

from flwr_byz.simulations.config import RunConfig
from flwr_byz.simulations.report import markdown_table, over_seeds


def run(strategy, attack, seed, tail, final=None, asr=None):
    return {"strategy": strategy, "attack": attack, "num_clients": 9, "num_malicious": 2, "dataset": "digits",
            "rounds": 30, "seed": seed, "tail_accuracy": tail, "final_accuracy": final if final is not None else tail,
            "best_accuracy": max(tail, final or 0), "final_asr": asr, "skipped_rounds": 0,
            "code_version": "abc", "command": "flwr-byz sweep ..."}


def test_over_seeds_gives_mean_min_max_per_cell():
    rows = over_seeds([run("krum", "alie", 0, 0.5), run("krum", "alie", 1, 0.7), run("krum", "alie", 2, 0.9),
                       run("median", "alie", 0, 0.8), run("krum", "none", 0, 0.95)])
    krum = next(r for r in rows if r["strategy"] == "krum" and r["attack"] == "alie")
    assert krum["seeds"] == [0, 1, 2] and krum["runs"] == 3
    assert krum["tail_accuracy_mean"] == pytest.approx(0.7)
    assert (krum["tail_accuracy_min"], krum["tail_accuracy_max"]) == (0.5, 0.9)
    assert krum["final_asr_mean"] is None
    assert len(rows) == 3


def test_markdown_table_pivots_defense_by_attack():
    rows = over_seeds([run("krum", "alie", 0, 0.5), run("krum", "alie", 1, 0.7), run("median", "alie", 0, 0.8),
                       run("krum", "none", 0, 0.95), run("median", "none", 0, 0.96)])
    table = markdown_table(rows)
    assert table.splitlines()[0] == "| defense | none | alie |"
    assert "| krum | 0.950 | 0.600 [0.500, 0.700] |" in table
    assert "| median | 0.960 | 0.800 |" in table
    flat = markdown_table(rows, pivot=False)
    assert "| krum | alie | 9 | 2 | 0,1 | 0.600 [0.500, 0.700] | 0.600 [0.500, 0.700] |" in flat


def test_a_pivot_table_reads_back_cell_for_cell():
    from flwr_byz.simulations.report import cell_numbers, read_pivot_table

    rows = over_seeds([run("krum", "alie", 0, 0.5), run("krum", "alie", 1, 0.7), run("median", "backdoor", 0, 0.8,
                       asr=0.25), run("krum", "none", 0, 0.95)])
    cells = read_pivot_table("<!-- a comment -->\nsome prose\n\n" + markdown_table(rows) + "\nafter")
    assert cells == {("krum", "none"): "0.950", ("krum", "alie"): "0.600 [0.500, 0.700]",
                     ("median", "backdoor"): "0.800 (ASR 0.250)"}  # median x none, krum x backdoor: "-"
    assert [cell_numbers(cells[k]) for k in sorted(cells)] == [(0.6, None), (0.95, None), (0.8, 0.25)]
    assert cell_numbers("0.077 (rounds skipped)") == (0.077, None)
    for bad in ("-", "e", "alie"):
        with pytest.raises(ValueError, match="not a table cell with a number"):
            cell_numbers(bad)
    with pytest.raises(ValueError, match="no defense x attack table"):
        read_pivot_table("| a | b |")
    with pytest.raises(ValueError, match="a by-cell table"):  # what `report --by-cell` writes
        read_pivot_table(markdown_table(rows, pivot=False))
    with pytest.raises(ValueError, match="no separator line"):
        read_pivot_table("| defense | none |\n| krum | 0.9 |")


def test_markdown_table_shows_the_metric_asked_for():
    rows = over_seeds([run("krum", "alie", 0, 0.5, final=0.4), run("krum", "alie", 1, 0.7, final=0.8)])
    assert "| krum | 0.600 [0.400, 0.800] |" in markdown_table(rows, metric="final_accuracy")
    assert "| krum | 0.650 [0.500, 0.800] |" in markdown_table(rows, metric="best_accuracy")
    with pytest.raises(ValueError, match="unknown metric"):
        markdown_table(rows, metric="accuracy")


def test_backdoor_cells_show_the_asr():
    rows = over_seeds([run("median", "backdoor", 0, 0.9, asr=0.2), run("median", "backdoor", 1, 0.8, asr=0.4)])
    assert "0.850 [0.800, 0.900] (ASR 0.300 [0.200, 0.400])" in markdown_table(rows)


def test_cli_seeds_run_every_cell_once_per_seed():
    import argparse

    from flwr_byz.simulations.cli import _base, _grid, build_parser

    args = build_parser().parse_args(["sweep", "--strategies", "median", "--attacks", "none,alie",
                                      "--num-clients", "9", "--num-malicious", "2", "--seeds", "3,4,5"])
    assert isinstance(args, argparse.Namespace)
    cells = _grid(args.strategies, args.attacks, args.num_clients, args.num_malicious, _base(args))
    assert sorted(c.seed for c in cells) == [3, 3, 4, 4, 5, 5]
    assert len({c.cell_id() for c in cells}) == 6  # a seed is part of a cell's identity (resumable)


@pytest.mark.timeout(300)
def test_a_seed_gives_the_same_numbers_run_after_run(tmp_path):
    """In-process engine: client sampling, partitioning, training order, the attacks' noise
    and the randomised rules' draws all follow the seed, so two runs agree to the bit."""
    from flwr_byz.simulations.runner import run_cells

    cells = [RunConfig(strategy=s, attack="gaussian", num_clients=9, num_malicious=2, rounds=2, seed=5,
                       attack_params={"seed": 1}) for s in ("dnc", "signguard")]
    a = run_cells(cells, tmp_path / "a", progress=False, engine="inprocess")
    b = run_cells(cells, tmp_path / "b", progress=False, engine="inprocess")
    key = lambda r: (r["cell"], r["round"])  # noqa: E731
    assert [(key(r), r["accuracy"], r["loss"]) for r in sorted(a, key=key)] == \
        [(key(r), r["accuracy"], r["loss"]) for r in sorted(b, key=key)]


def test_report_command_on_a_results_folder(tmp_path, capsys):
    from flwr_byz.simulations.cli import main
    from flwr_byz.simulations.runner import run_cells

    cells = [RunConfig(strategy="median", attack=a, num_clients=5, num_malicious=1 if a != "none" else 0, f=1,
                       rounds=1, seed=s) for a in ("none", "sign_flip") for s in (0, 1)]
    run_cells(cells, tmp_path, progress=False, engine="inprocess")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "table.md")]) == 0
    out = capsys.readouterr().out
    assert "seeds 0,1" in out and "| defense | none | sign_flip |" in out
    assert (tmp_path / "table.md").read_text() == out
    import torch

    assert f"threads (torch/BLAS) {torch.get_num_threads()}/" in out  # the runs' thread counts, named
    import numpy

    # and the environment they ran in: torch's build (its local version tag) and NumPy
    assert f"environment torch {torch.__version__}, numpy {numpy.__version__}" in out
    # the header names the command that regenerates the table, flags included
    assert main(["report", str(tmp_path), "--by-cell"]) == 0
    out = capsys.readouterr().out
    assert f"`flwr-byz report {tmp_path} --by-cell`" in out and "| defense | attack | n | m |" in out


def test_report_pools_several_folders_and_names_them(tmp_path, capsys):
    from flwr_byz.simulations.cli import main
    from flwr_byz.simulations.runner import run_cells

    for name, s in (("a", "median"), ("b", "krum")):
        run_cells([RunConfig(strategy=s, attack="none", num_clients=5, rounds=1)], tmp_path / name,
                  progress=False, engine="inprocess")
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert f"report {tmp_path / 'a'} {tmp_path / 'b'}`" in out
    assert "| krum |" in out and "| median |" in out
    with pytest.raises(SystemExit) as stop:  # a one-line usage error, not a traceback
        main(["report", str(tmp_path / "missing")])
    assert stop.value.code == 2 and "no such results folder" in capsys.readouterr().err


def test_cells_that_differ_beyond_the_seed_are_not_pooled():
    a = {**run("median", "mimic", 0, 0.9), "setting": "iid-config", "partitioning": "iid"}
    b = {**run("median", "mimic", 0, 0.8), "setting": "dirichlet-config", "partitioning": "dirichlet"}
    c = {**run("median", "mimic", 1, 0.7), "setting": "dirichlet-config", "partitioning": "dirichlet"}
    rows = over_seeds([a, b, c])
    assert sorted((r["partitioning"], r["runs"]) for r in rows) == [("dirichlet", 2), ("iid", 1)]
    table = markdown_table(rows)  # two cells share (defense, attack): one row each, split shown
    assert "| median | mimic | 9 | 2 | dirichlet | 0,1 | 0.750 [0.700, 0.800] |" in table
    assert "| median | mimic | 9 | 2 | iid | 0 | 0.900 |" in table


def test_defense_label_names_the_options_that_change_the_defense():
    from flwr_byz.simulations.runner import defense_label

    assert defense_label({"cfg_strategy": "multi_krum", "cfg_strategy_params": {"reputation": {"decay": 0.9}}}) \
        == "multi_krum + reputation"
    assert defense_label({"cfg_strategy": "median", "cfg_strategy_params": {
        "pre": [{"kind": "bucketing", "s": 2}], "crfl": {"clip_norm": 1.0}}}) == "median + bucketing + crfl"
    assert defense_label({"cfg_strategy": "median", "cfg_strategy_params": '{"m": 3}'}) == "median"  # App rows: JSON text
    assert defense_label({"cfg_strategy": "krum"}) == "krum"


def test_the_matrix_experiment_and_its_heatmap(tmp_path):
    """`flwr-byz reproduce matrix`: every rule the setting admits x every attack of the
    catalogue (and none); the rules the setting cannot run are left out and named; the
    heatmap is drawn from any results folder with two defenses and two attacks or more."""
    from flwr_byz.aggregation import REGISTRY
    from flwr_byz.attacks import ATTACK_SPECS
    from flwr_byz.simulations.plots import plot_matrix
    from flwr_byz.simulations.reproduce import experiment, matrix_rules
    from flwr_byz.simulations.runner import ResultsWriter, run_cells

    rules, left_out = matrix_rules(51, 12)
    assert set(left_out) == {"mda", "smea"}  # C(51, 12) subsets; Bulyan fits exactly (4 * 12 + 3 = 51)
    rules, left_out = matrix_rules(20, 5)
    assert set(left_out) == {"bulyan"} and set(rules) == set(REGISTRY) - {"bulyan"}
    cells = experiment("matrix", rounds=2)
    assert {c.dataset for c in cells} == {"digits"} and {c.rounds for c in cells} == {2}
    assert {(c.strategy, c.attack) for c in cells} == {(r, a) for r in rules for a in ("none", *ATTACK_SPECS)}
    assert all(c.num_malicious == (0 if c.attack == "none" else 5) for c in cells)
    small = [c for c in cells if c.strategy in ("median", "krum") and c.attack in ("none", "sign_flip", "backdoor")]
    run_cells([c.__class__(**{**c.to_dict(), "rounds": 1}) for c in small], tmp_path, progress=False,
              engine="inprocess")
    path = plot_matrix(ResultsWriter(tmp_path).rows(), tmp_path / "matrix.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = [r for r in ResultsWriter(tmp_path).rows() if r["cfg_strategy"] == "median"]
    assert plot_matrix(one, tmp_path / "none.png") is None  # one defense: no matrix


def test_backdoor_lifespan_by_hand():
    from flwr_byz.simulations.report import spread
    from flwr_byz.simulations.runner import backdoor_lifespan

    asr = {0: 0.0, 1: 0.2, 2: 0.7, 3: 0.9, 4: 0.8, 5: 0.5, 6: 0.4, 7: 0.9}
    rows = [{"round": k, "asr": v} for k, v in asr.items()]
    # after round 3: 0.8 and 0.5 are >= 0.5, round 6 breaks it (round 7's 0.9 comes too late)
    assert backdoor_lifespan(rows, 3) == {"attack_end_asr": 0.9, "asr_lifespan": 2, "asr_lifespan_censored": False}
    # after round 6 the backdoor is alive until the end: the run was too short to see it die
    assert backdoor_lifespan(rows, 6)["asr_lifespan"] == 1 and backdoor_lifespan(rows[:7], 4)["asr_lifespan"] == 1
    assert backdoor_lifespan(rows, 7) == {"attack_end_asr": 0.9, "asr_lifespan": 0, "asr_lifespan_censored": True}
    assert backdoor_lifespan(rows, None) == {} and backdoor_lifespan(rows[:3], 5) == {}
    row = {"runs": 3, "asr_lifespan_mean": 2.0, "asr_lifespan_min": 1, "asr_lifespan_max": 3, "lifespan_censored": True}
    assert spread(row, "asr_lifespan") == "2.0 [1.0, 3.0] (alive at the end)"


def test_forecast_table_over_seeds(tmp_path):
    import json

    from flwr_byz.simulations.report import forecast_table
    from flwr_byz.simulations.runner import run_cells

    cells = [RunConfig(strategy="mean", attack="alie", num_clients=6, num_malicious=3, rounds=2, seed=s) for s in (0, 1)]
    run_cells(cells, tmp_path, progress=False, engine="inprocess")
    text = forecast_table(tmp_path, (1, 2))
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    z1 = sorted(r["forecast_z1"] for r in rows if r["round"] == 1)
    assert len(z1) == 2 and "| round | z = 0.5 | z = 1 | z = 2 |" in text and "seeds 0,1" in text
    line = next(l for l in text.splitlines() if l.startswith("| 1 |"))
    assert line.split(" | ")[2] == f"{sum(z1) / 2:.3f} [{z1[0]:.3f}, {z1[1]:.3f}]"  # z = 1 column, by hand
    with pytest.raises(ValueError, match="no forecast"):
        run_cells([RunConfig(strategy="mean", num_clients=4, rounds=1)], tmp_path / "clean", progress=False,
                  engine="inprocess")
        forecast_table(tmp_path / "clean")
