"""The Simulation-Engine watchdog: when a run is killed outright, what it started is stopped
(Ray 2.55's agents otherwise outlive it), and nothing else is touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from flwr_byz.simulations.reaper import start_reaper

# A "run" that starts a grandchild which, like Ray's agents, would outlive it.
RUN = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("started", flush=True)
time.sleep(300)
"""


def _wait_gone(procs, timeout):
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


@pytest.mark.timeout(60)
def test_a_killed_run_takes_its_descendants_with_it_and_nothing_else():
    run = subprocess.Popen([sys.executable, "-c", RUN], stdout=subprocess.PIPE, text=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        assert run.stdout.readline().strip() == "started"
        grandchild = psutil.Process(run.pid).children()[0]
        reaper = start_reaper(run.pid)
        assert start_reaper(run.pid) is reaper  # one watchdog per run
        time.sleep(1.5)  # it has noted the grandchild
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        assert not _wait_gone([grandchild], 15), "the killed run's grandchild outlived it"
        assert reaper.wait(timeout=15) == 0
        assert bystander.poll() is None  # not a descendant of the run: untouched
    finally:
        for p in (run, bystander):
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.timeout(240)
def test_a_killed_simulation_engine_run_leaves_no_ray_process(tmp_path):
    """flwr-byz simulate on the Simulation Engine, killed with SIGKILL mid-run: every process
    it had started (Ray's head, agents and actors) is gone soon after."""
    cmd = [sys.executable, "-m", "flwr_byz.simulations.cli", "simulate", "--strategies", "median", "--num-clients",
           "3", "--num-malicious", "0", "--rounds", "2000", "--out", str(tmp_path), "--no-progress"]
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc, deadline, seen = psutil.Process(run.pid), time.time() + 180, {}
        while time.time() < deadline:  # until the client actors run
            for child in proc.children(recursive=True):
                seen.setdefault(child.pid, child)
            if any("ClientAppActor" in " ".join(_cmdline(p)) for p in seen.values() if p.is_running()):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the Simulation Engine did not start its actors")
        time.sleep(2)
        for child in proc.children(recursive=True):
            seen.setdefault(child.pid, child)
        seen = {pid: p for pid, p in seen.items() if "reaper" not in " ".join(_cmdline(p))}
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        alive = _wait_gone([p for p in seen.values() if p.is_running()], 60)
        assert not alive, [" ".join(_cmdline(p))[:80] for p in alive]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def _cmdline(p):
    try:
        return p.cmdline()
    except psutil.Error:
        return []
