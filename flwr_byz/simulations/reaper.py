"""A watchdog that stops what a Simulation-Engine run started when the run itself dies.

Ray's head processes share the fate of the process that called ``ray.init`` when it exits
or is stopped, but two of them do not when it is killed outright (``kill -9``, the OOM
killer): Ray 2.55's ``DashboardAgent`` and ``RuntimeEnvAgent`` see their raylet die, log
that they exit, and stay (they were seen alive minutes later). ``flwr-byz`` therefore starts
this watchdog, in its own session, beside every Simulation-Engine run:

    python -m flwr_byz.simulations.reaper <pid>

While ``pid`` lives, it notes every descendant of it (each as a psutil process, i.e. a pid
*and* its start time, so a reused pid is never taken for one of them). Once ``pid`` is gone
it terminates the noted descendants that still run, waits ``grace`` seconds, kills what is
left, and exits. It touches nothing but the run's own descendants: no process is chosen by
its name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

__all__ = ["reap_after", "start_reaper"]


def reap_after(pid: int, *, interval: float = 0.5, grace: float = 3.0) -> list[int]:
    """Watch ``pid``; when it is gone, stop the descendants noted while it ran. Returns the
    pids that were still running then (terminated, or killed after ``grace`` seconds)."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    me = os.getpid()
    seen: dict[int, psutil.Process] = {}
    while True:
        try:
            if not parent.is_running() or parent.status() == psutil.STATUS_ZOMBIE:
                break
            for child in parent.children(recursive=True):
                if child.pid != me:
                    seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    left = [p for p in seen.values() if p.is_running()]  # is_running compares the start time too
    for p in left:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(left, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in left]


_STARTED: dict[int, subprocess.Popen] = {}


def start_reaper(pid: int | None = None) -> subprocess.Popen:
    """Start the watchdog for ``pid`` (default: this process), once per pid, in a session of
    its own, so that a signal to the run's process group (Ctrl-C) leaves it to clean up after
    the run."""
    pid = int(pid or os.getpid())
    running = _STARTED.get(pid)
    if running is None or running.poll() is not None:
        _STARTED[pid] = subprocess.Popen([sys.executable, "-m", "flwr_byz.simulations.reaper", str(pid)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
    return _STARTED[pid]


if __name__ == "__main__":
    reap_after(int(sys.argv[1]))
