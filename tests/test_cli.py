"""The command line as a user meets it: names and numbers checked before any work, one-line
errors with exit code 2, help that lists the names and defaults, and a run whose rounds
were all skipped exiting non-zero (run as subprocesses, the way a shell runs them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "flwr_byz.simulations.cli"]


def run_cli(*args, timeout=120):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--strategies", "krumm"], "unknown strategy 'krumm'; choose from"),
    (["--strategies", "detox-bulyann"], "unknown strategy 'detox-bulyann'"),
    (["--attacks", "alie,teleport"], "unknown attack 'teleport'; choose from"),
    (["--attack-params", "{z:1}"], "--attack-params must be a JSON object"),
    (["--attack-params", "[1, 2]"], "--attack-params must be a JSON object"),
    (["--num-malicious", "25", "--num-clients", "20"], "--num-malicious must be between 0 and --num-clients (20)"),
    (["--attacks", "alie,ipm", "--attack-params", '{"zz": 1.5}'],
     "--attack-params: 'zz' is read by none of the attacks ['alie', 'ipm'] (their own parameters: alie: z=None; "
     "ipm: epsilon=0.1"),
    (["--attacks", "backdoor", "--attack-params", '{"fractoin": 0.3}'], "'fractoin' is read by none of the attacks"),
    (["--dataset", "mnist"], "--dataset mnist needs --data-root"),
    (["--dataset", "cifar11"], "unknown dataset 'cifar11'"),
    (["--model", "resnet19"], "unknown model 'resnet19'"),
    (["--strategies", "bulyan", "--num-clients", "6", "--num-malicious", "2"],
     "bulyan needs n >= 4f + 3 = 11 clients to tolerate f=m=2, but --num-clients is 6"),
    (["--strategies", "detox-multi_krum", "--num-clients", "9", "--num-malicious", "2"],
     "detox-multi_krum: 9 clients make 3 groups of 3, but multi_krum needs 5 group winners"),
])
def test_user_mistakes_are_one_line_errors_before_any_work(args, message):
    out = run_cli("simulate", *args, "--no-progress")
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""  # nothing ran


def test_help_lists_the_names_and_defaults():
    out = run_cli("simulate", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for name in ("geometric_median", "signsgd_majority", "detox-<rule>", "weight_inflation", "alie_backdoor",
                 "fashion-mnist", "wideresnet", "uniform,capped,raw"):
        assert name in text, name
    assert "(default: 0.1)" in text and "(default: digits)" in text


def test_a_run_whose_rounds_were_all_skipped_exits_non_zero(tmp_path):
    # median, n = 6, f = m = 2: 5 usable replies needed; the 2 garbage replies leave 4.
    out = run_cli("simulate", "--engine", "inprocess", "--strategies", "median", "--attacks", "garbage",
                  "--num-clients", "6", "--num-malicious", "2", "--rounds", "2", "--local-epochs", "1",
                  "--no-progress", "--out", str(tmp_path), timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "every round of median / garbage" in out.stderr
    header, row = (tmp_path / "summary.csv").read_text().splitlines()[:2]
    assert row.split(",")[header.split(",").index("skipped_rounds")] == "2"
    assert "skipped" in out.stdout  # the table's column


def test_progress_names_each_finished_cell(tmp_path):
    out = run_cli("simulate", "--engine", "inprocess", "--strategies", "median,krum", "--attacks", "none",
                  "--num-clients", "7", "--num-malicious", "1", "--rounds", "1", "--local-epochs", "1",
                  "--out", str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[1/2] median / none n=7 m=0: accuracy" in out.stderr
    assert "[2/2] krum / none n=7 m=0: accuracy" in out.stderr


@pytest.mark.parametrize("engine, sig", [("inprocess", "SIGTERM"), ("simulation", "SIGINT")])
def test_a_signal_stops_the_run_cleanly(tmp_path, engine, sig):
    """Ctrl-C / SIGTERM: the run stops after the round being evaluated (every row whole) and
    exits 130. (A rerun skips finished cells and starts an interrupted one again from round 0:
    test_simulations.py's resume tests.)"""
    import json
    import signal
    import time

    args = ["simulate", "--engine", engine, "--strategies", "median", "--attacks", "none", "--num-clients", "5",
            "--num-malicious", "1", "--rounds", "300", "--local-epochs", "1", "--no-progress", "--out", str(tmp_path)]
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = tmp_path / "results.jsonl"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 3):
            time.sleep(0.5)
        assert results.exists(), "the run never wrote a row"
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; every finished round is in" in err
    rows = [json.loads(line) for line in results.read_text().splitlines()]  # every line whole
    assert 3 <= len(rows) < 301 and not any(r["final"] for r in rows)


def test_debug_keeps_the_traceback():
    out = run_cli("simulate", "--strategies", "krumm", "--debug")
    assert out.returncode == 1 and "Traceback" in out.stderr and "unknown strategy 'krumm'" in out.stderr
