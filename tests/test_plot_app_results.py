"""`flwr-byz plot` on a results folder written in the Flower App's format: rows made by
:func:`flwr_byz.app.server_app.round_row` from history entries shaped like those
``RobustRound`` writes, appended with :class:`flwr_byz.simulations.runner.ResultsWriter`."""

from __future__ import annotations

import json

import pytest

from flwr_byz.app.server_app import round_row
from flwr_byz.app.settings import run_settings
from flwr_byz.simulations.plots import plot_results
from flwr_byz.simulations.runner import ResultsWriter

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NODES = ["1011", "2022", "3033", "4044", "5055"]  # node ids of a deployment, partition ids 0..4
RUN_ID = 7


def _entry(server_round: int, *, reputation: bool, forecast: bool) -> dict:
    """A round's history entry as RobustRound writes it (Multi-Krum, f = 1, five replies;
    partition 0's node is the reference attacker, which reports ``attack.malicious``)."""
    clients = {nid: {"partition-id": pid} for pid, nid in enumerate(NODES)}
    clients[NODES[0]]["attack.malicious"] = 1
    if forecast:
        clients[NODES[0]]["attack.forecast-z1.0"] = 0.2 + 0.1 * server_round
        clients[NODES[0]]["attack.forecast-z1.5"] = 0.4 + 0.1 * server_round
    entry = {
        "round": server_round, "rule": "multi_krum", "replies": len(NODES), "kept": list(NODES),
        "dropped": {}, "selected": NODES[1:], "skipped": None, "clients": clients,
        "details": {"m": 4}, "weighting": "uniform", "aggregation_time_s": 0.01,
    }
    if reputation:
        entry["reputation"] = {nid: (0.5 - 0.1 * server_round if nid == NODES[0] else 0.5 + 0.1 * server_round)
                               for nid in NODES}
        entry["excluded"] = []
    return entry


def _write_app_results(folder, *, reputation: bool = False, forecast: bool = False, rounds: int = 3) -> dict:
    settings = run_settings({"num-rounds": rounds, "strategy": "multi-krum", "f": 1, "attack": "alie",
                             "num-malicious": 1, "attack-params": '{"z": 1.0}',
                             "strategy-params": json.dumps({"reputation": {}} if reputation else {})})
    writer = ResultsWriter(folder)
    for server_round in range(rounds + 1):
        # round 0 is the initial model's evaluation: the ServerApp passes an empty entry
        entry = {} if server_round == 0 else _entry(server_round, reputation=reputation, forecast=forecast)
        row = round_row(settings, RUN_ID, server_round, 0.1 + 0.2 * server_round, 2.0 - 0.4 * server_round,
                        entry, 1.5)
        writer.append(row)
    return settings


def _assert_pngs(files, folder, names):
    assert sorted(p.name for p in files) == sorted(names)
    for p in files:
        assert p.parent == folder
        assert p.is_file() and p.stat().st_size > 0, p
        assert p.read_bytes()[:8] == PNG_SIGNATURE, p


@pytest.mark.parametrize("reputation,forecast,names", [
    (False, False, ["accuracy.png"]),
    (True, True, ["accuracy.png", "reputation.png", "forecast.png"]),
])
def test_plot_results_on_flower_app_rows(tmp_path, reputation, forecast, names):
    _write_app_results(tmp_path, reputation=reputation, forecast=forecast)
    rows = ResultsWriter(tmp_path).rows()
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert {r["cell"] for r in rows} == {f"run-{RUN_ID}"} and rows[-1]["final"]
    assert rows[1]["malicious_partitions"] == [0] and rows[1]["selected_partitions"] == [1, 2, 3, 4]
    files = plot_results(tmp_path)
    _assert_pngs(files, tmp_path, names)
    # results.jsonl itself, or another output folder, are accepted too
    other = tmp_path / "plots"
    _assert_pngs(plot_results(tmp_path / "results.jsonl", other), other, names)


def test_cli_plot_on_flower_app_rows(tmp_path, capsys):
    from flwr_byz.simulations.cli import main

    _write_app_results(tmp_path, reputation=True, forecast=True)
    assert main(["plot", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(p.rsplit("/", 1)[-1] for p in printed) == ["accuracy.png", "forecast.png", "reputation.png"]
    _assert_pngs([tmp_path / n for n in ("accuracy.png", "reputation.png", "forecast.png")], tmp_path,
                 ["accuracy.png", "reputation.png", "forecast.png"])
    out = tmp_path / "elsewhere"
    assert main(["plot", str(tmp_path / "results.jsonl"), "--out", str(out), "--forecast-rounds", "2"]) == 0
    _assert_pngs(sorted(out.glob("*.png")), out, ["accuracy.png", "reputation.png", "forecast.png"])


def test_plot_results_refuses_an_empty_app_folder(tmp_path):
    ResultsWriter(tmp_path)  # creates the folder, writes no row
    with pytest.raises(ValueError, match="no results"):
        plot_results(tmp_path)


def test_an_app_run_is_one_curve_whatever_each_round_received(tmp_path):
    """Round 0 of an App run has no replies and a late node makes a round smaller: the run
    is still one line, at its largest n (a regression: round 0 used to be its own 'n=0'
    curve); and nodes that report themselves malicious count when the run config says 0."""
    from flwr_byz.simulations.plots import accuracy_curves
    from flwr_byz.simulations.runner import attack_label

    settings = run_settings({"num-rounds": 3, "strategy": "multi-krum", "f": 1, "attack": "alie", "num-malicious": 0})
    writer = ResultsWriter(tmp_path)
    for server_round in range(4):
        entry = {} if server_round == 0 else _entry(server_round, reputation=False, forecast=False)
        if server_round == 2:
            entry["replies"] = 4  # one node was late
        writer.append(round_row(settings, RUN_ID, server_round, 0.5, 1.0, entry, 1.0))
    rows = ResultsWriter(tmp_path).rows()
    assert [r["cfg_num_malicious"] for r in rows] == [0, 1, 1, 1]  # partition 0 reported attack.malicious
    curves = accuracy_curves(rows, attack_label(rows[0]))
    assert list(curves) == [("multi-krum", 5, 1)]
    assert sorted(curves[("multi-krum", 5, 1)]) == [0, 1, 2, 3]
