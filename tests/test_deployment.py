"""The Flower App in a real deployment on 127.0.0.1: TLS, SuperNode authentication, ALIE
colluding across processes, a refused unregistered SuperNode, and a SuperNode killed
mid-round.

One SuperLink (TLS, ``--enable-supernode-auth``) and six SuperNodes (keys registered with
``flwr supernode register``; partitions 0 and 1 run ALIE and meet at a rendezvous process)
are started once for the module, on free ports chosen here. Runs go through the real CLI,
``flwr run <project> <connection>``, with ``FLWR_HOME`` in a temporary directory (the
user's ~/.flwr is never read or written). Every process started here is stopped by PID
(its descendants too, collected from /proc before stopping it); the module ends by
checking that none survives.

Timing on a 2-core machine: ~10 s to build the credentials and start everything, each run
~20-30 s per round (Flower 1.41 starts one ``flwr-clientapp`` process per message, each
importing torch); the fault test waits up to a minute for Flower's heartbeat check to declare the killed
node unavailable.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to find process trees"),
]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONNECTION = "byz-test"
NUM_NODES = 6
ALIE = (0, 1)  # partitions running ALIE, colluding through the rendezvous
VICTIM = 5  # honest partition killed by the fault test


# ----------------------------------------------------------------------------------------------
# Processes: started in their own session, stopped by PID together with their descendants
# ----------------------------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def descendants(pid: int) -> list[int]:
    """PIDs below ``pid`` (children, grandchildren, ...), read from /proc."""
    children, out, todo = _children_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Processes:
    """The processes a test starts; ``stop_all`` ends each of them, and its descendants, by PID."""

    def __init__(self, workdir: Path, env: dict):
        self.workdir, self.env = workdir, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.seen: set[int] = set()

    def start(self, name: str, args: list[str], cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=cwd or self.workdir,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def kill_tree(self, name: str, sig: int = signal.SIGKILL) -> list[int]:
        """Signal ``name`` and everything below it (collected first), by PID; reap it."""
        proc = self.procs[name]
        tree = [proc.pid, *descendants(proc.pid)]
        self.seen.update(tree)
        for pid in tree:
            _signal(pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _signal(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        return tree

    def stop_all(self) -> None:
        trees = {}
        for name, proc in self.procs.items():
            trees[name] = [proc.pid, *descendants(proc.pid)]
            self.seen.update(trees[name])
        for tree in trees.values():
            for pid in tree:
                _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(p) for t in trees.values() for p in t):
            for proc in self.procs.values():
                proc.poll()  # reap our direct children
            time.sleep(0.2)
        for tree in trees.values():
            for pid in tree:
                if alive(pid):
                    _signal(pid, signal.SIGKILL)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def survivors(self) -> list[int]:
        # Orphaned grandchildren (e.g. a SuperExec whose parent died) can outlive the sweep
        # above for a moment: they exit when they notice their parent is gone.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = [p for p in self.seen if alive(p)]
            if not left:
                return []
            for pid in left:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.5)
        return [p for p in self.seen if alive(p)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ----------------------------------------------------------------------------------------------
# The federation
# ----------------------------------------------------------------------------------------------

class Federation:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.home = tmp / "flwr-home"
        self.certs = tmp / "certs"
        self.port = free_port()
        self.rendezvous_port = free_port()
        self.authkey = tmp / "rendezvous.key"
        env = dict(os.environ)
        env.update({
            "FLWR_HOME": str(self.home),  # never the user's ~/.flwr
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # flower-superexec, flwr-clientapp, ...
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "OMP_NUM_THREADS": "1",  # several torch processes on few cores
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("RAY_ADDRESS", None)
        self.env = env
        self.procs = Processes(tmp, env)

    # -- CLI ---------------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, cwd=self.tmp, capture_output=True,
                              text=True, timeout=timeout)

    def flwr_json(self, *args: str) -> dict:
        res = self.flwr(*args, "--format", "json")
        assert res.returncode == 0, f"flwr {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return json.loads(res.stdout[res.stdout.index("{"):])

    def run(self, results_dir: Path, **config) -> str:
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in {**config, "results-dir": str(results_dir)}.items())
        out = self.flwr_json("run", str(ROOT), CONNECTION, "--run-config", overrides)
        assert out["success"], out
        return out["run-id"]

    def run_status(self, run_id: str) -> str:
        runs = self.flwr_json("ls", CONNECTION, "--run-id", run_id)["runs"]
        return runs[0]["status"]

    def wait_finished(self, run_id: str, results: Path, timeout: float) -> str:
        """Wait for the run's final row (a cheap file read), asking `flwr ls` for the status
        every 20 s meanwhile (a failed run writes no final row) and every 2 s after it."""
        state = {"asked": time.monotonic()}

        def finished():
            final = any(r.get("final") and r["run_id"] == run_id for r in read_rows(results / "results.jsonl"))
            if final or time.monotonic() - state["asked"] > 20:
                state["asked"] = time.monotonic()
                status = self.run_status(run_id)
                return status.startswith("finished") and status
            return False

        return wait_for(finished, timeout, f"run {run_id} to finish", interval=2)

    # -- processes -----------------------------------------------------------------------------
    def supernode(self, name: str, key: Path, node_config: str) -> subprocess.Popen:
        return self.procs.start(name, [
            str(BIN / "flower-supernode"), "--root-certificates", str(self.certs / "ca.crt"),
            "--superlink", f"127.0.0.1:{self.port}", "--auth-supernode-private-key", str(key),
            "--port", str(free_port()), "--node-config", node_config,
        ])

    def start(self) -> None:
        self.home.mkdir(parents=True)
        subprocess.run(["bash", str(ROOT / "scripts" / "make_test_certs.sh"), str(self.certs), str(NUM_NODES + 1)],
                       check=True, capture_output=True, env={**self.env, "KEY_BITS": "2048", "PYTHON": sys.executable})
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.certs / "ca.crt"}"\n')
        self.authkey.write_text(os.urandom(16).hex())
        self.procs.start("superlink", [
            str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(self.certs / "ca.crt"),
            "--ssl-certfile", str(self.certs / "server.pem"), "--ssl-keyfile", str(self.certs / "server.key"),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(self.port),
        ])
        self.procs.start("rendezvous", [sys.executable, "-m", "flwr_byz.clients.rendezvous", "--host", "127.0.0.1",
                                        "--port", str(self.rendezvous_port), "--authkey-file", str(self.authkey)],
                         cwd=ROOT)
        tls = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))

        def healthy():
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/health", context=tls, timeout=2) as r:
                    return r.status == 200
            except OSError:
                assert self.procs.procs["superlink"].poll() is None, self.procs.log("superlink")
                return False

        wait_for(healthy, 60, "the SuperLink (TLS)")
        # Register the six SuperNodes' public keys (node_7 stays unregistered).
        regs = [subprocess.Popen([str(BIN / "flwr"), "supernode", "register",
                                  str(self.certs / "supernode_keys" / f"node_{i + 1}.pub"), CONNECTION,
                                  "--format", "json"], env=self.env, cwd=self.tmp, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for i in range(NUM_NODES)]
        for reg in regs:
            out, err = reg.communicate(timeout=120)
            assert reg.returncode == 0 and '"success": true' in out, f"register failed:\n{out}\n{err}"
        for pid in range(NUM_NODES):
            config = f"partition-id={pid} num-partitions={NUM_NODES}"
            if pid in ALIE:
                config += (f' attack="alie" num-malicious={len(ALIE)} num-clients={NUM_NODES}'
                           f' rendezvous="127.0.0.1:{self.rendezvous_port}"'
                           f' rendezvous-authkey-file="{self.authkey}" rendezvous-timeout=60')
            self.supernode(f"supernode-{pid}", self.certs / "supernode_keys" / f"node_{pid + 1}", config)

        def online():
            for pid in range(NUM_NODES):
                name = f"supernode-{pid}"
                assert self.procs.procs[name].poll() is None, f"{name} exited:\n{self.procs.log(name)}"
            return all("SuperNode ID:" in self.procs.log(f"supernode-{p}") for p in range(NUM_NODES))

        wait_for(online, 120, "the SuperNodes to connect")
        nodes = self.flwr_json("supernode", "ls", CONNECTION)["nodes"]
        assert sum(n["status"] == "online" for n in nodes) == NUM_NODES, nodes


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    fed = Federation(tmp_path_factory.mktemp("deployment"))
    try:
        fed.start()
        yield fed
    finally:
        fed.procs.stop_all()
        left = fed.procs.survivors()
        assert not left, f"processes still running after the test: {left}"


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------

def test_multikrum_with_alie_over_tls_and_node_auth(federation):
    """Two rounds of Multi-Krum (f=1) on 6 authenticated SuperNodes, 2 of them ALIE
    colluding across processes; the run completes and its rows are written."""
    results = federation.tmp / "results-main"
    run_id = federation.run(results, **{"num-rounds": 2, "strategy": "MultiKrum", "f": 1, "min-nodes": NUM_NODES,
                                        "round-timeout": 300.0})
    status = federation.wait_finished(run_id, results, timeout=300)
    assert status == "finished:completed", federation.procs.log("superlink")[-5000:]

    rows = [r for r in read_rows(results / "results.jsonl") if r["run_id"] == run_id]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[-1]["final"] is True
    for row in rows[1:]:
        assert row["replies"] == NUM_NODES and row["kept"] == NUM_NODES and row["skipped"] is None
        assert row["partitions"] == list(range(NUM_NODES))
        assert row["malicious_partitions"] == list(ALIE)
        assert len(row["selected_partitions"]) == NUM_NODES - 1  # Multi-Krum keeps n - f
        # Both ALIE nodes heard each other through the rendezvous.
        for pid in ALIE:
            facts = row["attack_facts"][str(pid)]
            assert facts["attack.colluders-heard"] == len(ALIE) and facts["attack.rendezvous-complete"] == 1
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_unregistered_supernode_is_refused(federation):
    """A SuperNode whose public key was never registered cannot join."""
    proc = federation.supernode("rogue", federation.certs / "supernode_keys" / f"node_{NUM_NODES + 1}",
                                f"partition-id=0 num-partitions={NUM_NODES}")
    try:
        rc = proc.wait(timeout=120)
    finally:
        federation.procs.kill_tree("rogue", signal.SIGTERM)
    assert rc != 0
    assert "Failed to activate SuperNode" in federation.procs.log("rogue")
    assert "No SuperNode found with the given public key" in federation.procs.log("superlink")
    nodes = federation.flwr_json("supernode", "ls", CONNECTION)["nodes"]
    assert len(nodes) == NUM_NODES  # registered nodes only


def test_supernode_killed_mid_round(federation):
    """A SuperNode killed (SIGKILL) just after receiving its round-1 train message: round 1
    completes without it (Flower's heartbeat check turns its missing reply into a "Node
    Unavailable" error reply, which the strategy drops; ``round-timeout`` is the safety
    net), Multi-Krum still holds with the 5 remaining nodes, round 2 runs on them, and the
    rows written before the kill are intact."""
    results = federation.tmp / "results-fault"
    victim = f"supernode-{VICTIM}"
    seen = federation.procs.log(victim).count("Receiving: train message")
    run_id = federation.run(results, **{"num-rounds": 2, "strategy": "multi-krum", "f": 1, "min-nodes": NUM_NODES - 1,
                                        "round-timeout": 300.0})
    wait_for(lambda: federation.procs.log(victim).count("Receiving: train message") > seen, 120,
             "the victim to receive its round-1 train message")
    before = (results / "results.jsonl").read_text()
    assert [r["round"] for r in read_rows(results / "results.jsonl")] == [0]
    federation.procs.kill_tree(victim, signal.SIGKILL)

    status = federation.wait_finished(run_id, results, timeout=400)
    assert status == "finished:completed", federation.procs.log("superlink")[-5000:]
    after = (results / "results.jsonl").read_text()
    assert after.startswith(before)  # nothing already written is lost
    rows = read_rows(results / "results.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2] and rows[-1]["final"] is True
    round1, round2 = rows[1], rows[2]
    assert any("Node Unavailable" in why for why in round1["dropped_reasons"].values()), round1["dropped_reasons"]
    for row in (round1, round2):
        assert row["skipped"] is None, row["skipped"]
        assert row["kept"] == NUM_NODES - 1 and row["partitions"] == [p for p in range(NUM_NODES) if p != VICTIM]
    assert round2["replies"] == NUM_NODES - 1  # the dead node is no longer sampled
    assert round2["accuracy"] > rows[0]["accuracy"]


@pytest.mark.slow
def test_local_simulation_with_flwr_run(tmp_path):
    """`flwr run <project>` on Flower's default `local` connection (the Simulation Runtime,
    Ray): 5 virtual SuperNodes, partition 0 running ALIE from the run config, 2 rounds."""
    home, port, results = tmp_path / "flwr-home", free_port(), tmp_path / "results"
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "FLWR_DISABLE_UPDATE_CHECK": "1", "OMP_NUM_THREADS": "1",
        # flwr starts the local SuperLink itself; these choose its ports and keep it from
        # running `uv sync` for the app (the environment is already installed).
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port), "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    })
    env.pop("RAY_ADDRESS", None)

    def flwr(*args):
        res = subprocess.run([str(BIN / "flwr"), *args, "--format", "json"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout[res.stdout.index("{"):])

    seen: set[int] = set()
    try:
        overrides = (f'num-rounds=2 strategy="median" f=1 min-nodes=5 attack="alie" num-malicious=1 '
                     f'results-dir="{results}"')
        run_id = flwr("run", str(ROOT), "--federation-config", "num-supernodes=5 client-resources-num-cpus=1",
                      "--run-config", overrides)["run-id"]
        status = wait_for(lambda: (s := flwr("ls", "--run-id", run_id)["runs"][0]["status"]).startswith("finished")
                          and s, 300, "the simulation to finish", interval=5)
        assert status == "finished:completed", (home / "local-superlink" / "superlink.log").read_text()[-5000:]
        rows = read_rows(results / "results.jsonl")
        assert [r["round"] for r in rows] == [0, 1, 2] and rows[-1]["final"]
        assert all(r["kept"] == 5 and r["malicious_partitions"] == [0] for r in rows[1:])
    finally:
        # The CLI started a detached `flower-superlink --simulation`; find it by its log path (unique to this test).
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if "flower-superlink" in cmdline and str(home) in cmdline:
                    tree = [int(entry), *descendants(int(entry))]
                    seen.update(tree)
                    for pid in tree:
                        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(alive(p) for p in seen):
            time.sleep(0.5)
        for pid in seen:
            if alive(pid):
                _signal(pid, signal.SIGKILL)
    assert seen, "the local SuperLink was not found"
