"""The colluders' rendezvous (flwr_byz.clients.rendezvous) across real processes.

Three colluder processes post their updates to one rendezvous server process and each
gets back the same 3-row matrix; with a colluder missing, the others return after the
timeout with what arrived (and say so); a wrong authkey is refused; an unreachable
rendezvous falls back to the node's own update. Every process started is stopped by PID.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flwr_byz.clients.collusion import weights_fingerprint
from flwr_byz.clients.malicious import MaliciousClient
from flwr_byz.clients.rendezvous import (
    CachedFit,
    RendezvousCollusion,
    RendezvousServer,
    ping,
    post_and_wait,
)

ROOT = Path(__file__).resolve().parents[1]
KEY = b"test-authkey-0123456789"
pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    """`python -m flwr_byz.clients.rendezvous` in its own process; stopped by PID."""
    keyfile = tmp_path_factory.mktemp("rendezvous") / "key"
    keyfile.write_bytes(KEY + b"\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flwr_byz.clients.rendezvous", "--port", str(port),
                             "--authkey-file", str(keyfile)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert ping(f"127.0.0.1:{port}", KEY, timeout=30), "rendezvous did not start"
        yield f"127.0.0.1:{port}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.poll() is not None


def _colluder(address, key, member, expected, timeout, queue, barrier):
    update = np.full(5, float(member), dtype=np.float32)
    barrier.wait(30)  # post together, so a short timeout measures the missing colluder only
    t0 = time.monotonic()
    answer = post_and_wait(address, KEY, key, member, update, expected=expected, timeout=timeout)
    queue.put((member, answer["members"], answer["complete"], answer["updates"].tolist(), time.monotonic() - t0))


def _run_colluders(address, key, members, expected, timeout):
    ctx = mp.get_context("fork")
    queue, barrier = ctx.Queue(), ctx.Barrier(len(members))
    procs = [ctx.Process(target=_colluder, args=(address, key, m, expected, timeout, queue, barrier)) for m in members]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=timeout + 60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join()
    assert all(p.exitcode == 0 for p in procs)
    return sorted(results)


def test_three_processes_meet(server_process):
    results = _run_colluders(server_process, "round-1|all", [0, 1, 2], expected=3, timeout=30)
    for member, members, complete, updates, waited in results:
        assert members == [0, 1, 2] and complete
        assert updates == [[0.0] * 5, [1.0] * 5, [2.0] * 5]
        assert waited < 30


def test_missing_colluder_times_out_with_what_arrived(server_process):
    t0 = time.monotonic()
    results = _run_colluders(server_process, "round-1|missing", [0, 1], expected=3, timeout=3.0)
    assert time.monotonic() - t0 < 60
    for member, members, complete, updates, waited in results:
        assert members == [0, 1] and not complete
        assert updates == [[0.0] * 5, [1.0] * 5]
        assert 2.5 <= waited < 30


def test_wrong_authkey_is_refused(server_process):
    assert ping(server_process, KEY)
    assert not ping(server_process, b"not-the-key", timeout=2)
    with pytest.raises(mp.AuthenticationError):
        post_and_wait(server_process, b"not-the-key", "k", 0, np.zeros(3), expected=1, timeout=1)
    assert ping(server_process, KEY)  # still serving


class _Honest:
    """A NumPyClient-like honest client: its update is +member on every weight."""

    def __init__(self, member):
        self.member, self.calls = member, 0

    def fit(self, parameters, config):
        self.calls += 1
        return [p + self.member for p in parameters], 10, {"partition-id": self.member}


def test_rendezvous_collusion_feeds_alie(tmp_path, caplog):
    """In-thread server, two colluders in this process: the ALIE replies are identical and
    each honest client trains once per round (CachedFit)."""
    server = RendezvousServer(authkey=KEY).start()
    address = "%s:%d" % server.address
    params = [np.zeros((2, 2), np.float32), np.zeros(3, np.float32)]
    config = {"server-round": 1}
    try:
        import threading

        out, honest = {}, {}

        def node(member):
            honest[member] = _Honest(member)
            own = CachedFit(honest[member])
            collusion = RendezvousCollusion(own, member, 2, address, KEY, timeout=20, label="run|alie")
            out[member] = MaliciousClient(own, "alie", collusion=collusion, z=1.0).fit(params, config)

        threads = [threading.Thread(target=node, args=(m,)) for m in (1, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        w1, w3 = out[1][0], out[3][0]
        for a, b in zip(w1, w3):
            np.testing.assert_array_equal(a, b)
        # mu - z * sigma over updates {+1, +3}: mean 2, std 1 -> 1 everywhere
        np.testing.assert_allclose(np.concatenate([w.ravel() for w in w1]), 1.0, rtol=1e-6)
        assert honest[1].calls == 1 and honest[3].calls == 1
    finally:
        server.close()

    # Unreachable rendezvous: warning, then the node's own update only (sigma = 0).
    lonely = RendezvousCollusion(CachedFit(_Honest(2)), 2, 2, f"127.0.0.1:{free_port()}", KEY, timeout=1)
    with caplog.at_level("WARNING", logger="flwr_byz.clients.rendezvous"):
        X = lonely.honest_updates(params, config)
    assert X.shape == (1, 7) and np.allclose(X, 2.0)
    assert "unreachable" in caplog.text


def test_key_separates_rounds_and_weights():
    a = [np.zeros(3, np.float32)]
    assert weights_fingerprint(a, "1|run|alie") != weights_fingerprint(a, "2|run|alie")
    assert weights_fingerprint(a, "1|x") != weights_fingerprint([np.ones(3, np.float32)], "1|x")


def test_an_idle_connection_does_not_stall_the_colluders(server_process):
    """A peer that connects and never speaks (or a stopped colluder) used to block the
    server's handshake loop for everyone; each connection is now handled on its own."""
    host, port = server_process.split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(3)]
    try:
        t0 = time.monotonic()
        results = _run_colluders(server_process, "round-1|idle-peers", [0, 1], expected=2, timeout=20)
        assert time.monotonic() - t0 < 15
        assert all(complete for _, _, complete, _, _ in results)
    finally:
        for s in idle:
            s.close()


def test_a_nan_timeout_is_answered(monkeypatch):
    from multiprocessing.connection import Client

    from flwr_byz.clients import rendezvous

    monkeypatch.setattr(rendezvous, "DEFAULT_TIMEOUT", 1.0)  # what a NaN timeout falls back to
    server = RendezvousServer(authkey=KEY).start()
    try:
        # a hostile peer's raw request: a NaN timeout used to make its handler wait forever
        with Client(server.address, authkey=KEY) as conn:
            conn.send({"op": "post", "key": "k-nan", "member": 0, "expected": 2,
                       "update": np.zeros(3, np.float32), "timeout": float("nan")})
            assert conn.poll(20.0), "a NaN timeout held the handler"
            answer = conn.recv()
        assert answer["ok"] and answer["members"] == [0] and not answer["complete"]
    finally:
        server.close()
