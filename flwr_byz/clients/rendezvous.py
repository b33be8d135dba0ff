"""Cross-process collusion for deployments: a rendezvous where corrupted SuperNodes meet.

In Flower's Simulation Engine the attacker's clients share one machine and one data
store, so :class:`~flwr_byz.clients.collusion.Collusion` lets the first corrupted client
of a round compute every controlled partition's honest update. In a deployment the
corrupted SuperNodes are separate processes (often separate machines), each holding only
its own data: they must *exchange* their honest updates. This module is that side
channel, run by the attacker, invisible to the SuperLink and to the honest nodes:

    python -m flwr_byz.clients.rendezvous --host 127.0.0.1 --port 7070 --authkey-file key

Each corrupted SuperNode (node config ``attack="alie" rendezvous="127.0.0.1:7070"
rendezvous-authkey-file="key" num-malicious=2``) posts its own honest update of the
round under a key made of the run, the round and a fingerprint of the global weights
(:func:`~flwr_byz.clients.collusion.weights_fingerprint`), then waits until
``num-malicious`` members have posted under that key, or until its timeout. It gets
back the (k, d) matrix of the k updates posted so far (its own included) and computes
the attack from it. On a timeout (a colluder crashed, was not sampled this round, or is
slow) it logs a WARNING naming how many of the expected colluders it heard from, and
attacks with what it has; if the rendezvous cannot be reached at all it attacks with its
own update alone (for ALIE: sigma = 0, the honest update is sent). It never blocks a
round forever.

Threat model:

- The attacker controls m SuperNodes: their processes, keys (a registered node key, so
  node authentication does not stop it) and local data. It does not see the honest
  nodes' data or updates, nor the SuperLink's internals; it sees the global model it is
  sent, like any node.
- The rendezvous is the attacker's own infrastructure: the SuperLink never sees it, and
  nothing in Flower can prevent it (colluding parties can always talk out of band).
  A robust aggregation rule must therefore assume full collusion among the f nodes it
  tolerates; this module makes that assumption concrete for experiments.
- Transport: :mod:`multiprocessing.connection` with an ``authkey`` (HMAC
  challenge-response), so only processes holding the shared secret can post or read.
  Messages are pickled: only authenticated peers are ever unpickled, and the peers are
  the attacker's own processes. The channel is *not* encrypted: bind it to 127.0.0.1
  (all colluders on one host) or carry it through an SSH tunnel or VPN across hosts.
- Honest operators running this code never start a rendezvous; an honest SuperNode
  has no ``attack`` in its node config and never connects to one.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections import OrderedDict
from multiprocessing import AuthenticationError
import math
import socket
import struct
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from pathlib import Path

import numpy as np

from ..updates import ModelLayout
from .collusion import weights_fingerprint

LOG = logging.getLogger("flwr_byz.clients.rendezvous")
AUTHKEY_ENV = "FLWR_BYZ_RENDEZVOUS_AUTHKEY"
DEFAULT_TIMEOUT = 60.0
MAX_WAIT = 3600.0
IO_DEADLINE = 30.0  # seconds a peer may take to complete the handshake or send its request


def read_authkey(path: str | os.PathLike | None = None) -> bytes:
    """The shared secret: the file's bytes (surrounding whitespace stripped), else the
    ``FLWR_BYZ_RENDEZVOUS_AUTHKEY`` environment variable."""
    if path:
        key = Path(path).expanduser().read_bytes().strip()
    else:
        key = os.environ.get(AUTHKEY_ENV, "").encode()
    if not key:
        raise ValueError(f"no rendezvous authkey: give a key file or set {AUTHKEY_ENV}")
    return key


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``."""
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"rendezvous address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _receive_deadline(conn: Connection, seconds: float) -> None:
    """Make every blocking receive on ``conn`` fail after ``seconds`` (SO_RCVTIMEO on its
    socket; the descriptor stays blocking, so a reply that takes long to send is unaffected)."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(seconds), 0))
    finally:
        sock.close()


class RendezvousServer:
    """Collects the posted updates per key and answers each poster when its key is full.

    Args:
        host, port: where to listen (port 0: any free port; see :attr:`address`).
        authkey: the shared secret of the colluders.
        max_keys: how many keys (rounds) are kept; older ones are forgotten.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, authkey: bytes, max_keys: int = 64):
        # No authkey on the Listener itself: its accept() would run the handshake in the
        # serving loop, where one idle peer stalls every colluder. Each connection is
        # authenticated in its own thread, under a receive deadline (:meth:`_handle`).
        self._authkey = authkey
        self._listener = Listener((host, int(port)))
        self._cond = threading.Condition()
        self._table: "OrderedDict[str, dict[int, np.ndarray]]" = OrderedDict()
        self._max_keys = int(max_keys)
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.address

    def start(self) -> "RendezvousServer":
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="rendezvous", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except OSError:  # closed, or a peer failed the authkey challenge
                if self._closed:
                    return
                LOG.warning("rendezvous: refused a connection (bad authkey or broken handshake)")
                continue
            except Exception as err:  # noqa: BLE001 - never die on one bad peer
                LOG.warning("rendezvous: refused a connection (%s)", err)
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        try:
            self._listener.close()
        except OSError:
            pass

    def _handle(self, conn: Connection) -> None:
        try:
            _receive_deadline(conn, IO_DEADLINE)  # an idle or stopped peer cannot hold this thread
            deliver_challenge(conn, self._authkey)
            answer_challenge(conn, self._authkey)
            request = conn.recv()
            op = request.get("op")
            if op == "ping":
                conn.send({"ok": True})
            elif op == "post":
                conn.send(self._post(request))
            else:
                conn.send({"ok": False, "error": f"unknown op {op!r}"})
        except (EOFError, OSError, AuthenticationError):
            pass
        except Exception as err:  # noqa: BLE001
            try:
                conn.send({"ok": False, "error": f"{type(err).__name__}: {err}"})
            except OSError:
                pass
        finally:
            conn.close()

    def _post(self, req: dict) -> dict:
        key, member = str(req["key"]), int(req["member"])
        expected = max(1, int(req.get("expected", 1)))
        update = np.asarray(req["update"], dtype=np.float32).reshape(-1)
        timeout = float(req.get("timeout", DEFAULT_TIMEOUT))
        if not math.isfinite(timeout):  # NaN never compares: it would wait forever
            timeout = DEFAULT_TIMEOUT
        deadline = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT)
        with self._cond:
            entries = self._table.setdefault(key, {})
            self._table.move_to_end(key)
            while len(self._table) > self._max_keys:
                self._table.popitem(last=False)
            other = next(iter(entries.values()), None)
            if other is not None and other.shape != update.shape:
                return {"ok": False, "error": f"update has {update.size} values, others have {other.size}"}
            entries[member] = update
            self._cond.notify_all()
            if len(entries) == expected:
                LOG.info("rendezvous: key %s complete (%d members)", key[:12], expected)
            while len(entries) < expected and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    LOG.warning("rendezvous: member %s timed out on key %s with %d of %d members", member,
                                key[:12], len(entries), expected)
                    break
                self._cond.wait(left)
            members = sorted(entries)
            return {"ok": True, "members": members, "complete": len(members) >= expected,
                    "updates": np.stack([entries[m] for m in members])}


def ping(address: str | tuple[str, int], authkey: bytes, timeout: float = 5.0) -> bool:
    """True when a rendezvous answers at ``address`` with this authkey."""
    addr = parse_address(address) if isinstance(address, str) else address
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(addr, authkey=authkey) as conn:
                conn.send({"op": "ping"})
                return bool(conn.recv().get("ok"))
        except AuthenticationError:
            return False
        except (OSError, EOFError):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def post_and_wait(address: str | tuple[str, int], authkey: bytes, key: str, member: int, update: np.ndarray,
                  expected: int, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Post ``update`` as ``member`` under ``key``; wait for ``expected`` members or ``timeout``.

    Returns the server's answer: ``members`` (sorted ids), ``updates`` ((k, d) float32,
    rows in the order of ``members``) and ``complete`` (all expected members posted).
    Raises ``OSError`` / ``EOFError`` if the rendezvous cannot be reached,
    ``multiprocessing.AuthenticationError`` on a wrong authkey, ``RuntimeError`` if it
    refuses the post.
    """
    addr = parse_address(address) if isinstance(address, str) else address
    timeout = float(timeout) if math.isfinite(float(timeout)) else DEFAULT_TIMEOUT
    with Client(addr, authkey=authkey) as conn:
        conn.send({"op": "post", "key": key, "member": int(member), "expected": int(expected),
                   "update": np.ascontiguousarray(update, dtype=np.float32).reshape(-1), "timeout": float(timeout)})
        # The server answers at the latest when the timeout expires; the margin covers transfer.
        if not conn.poll(float(timeout) + 30.0):
            raise TimeoutError("the rendezvous did not answer")
        answer = conn.recv()
    if not answer.get("ok"):
        raise RuntimeError(f"rendezvous refused the update: {answer.get('error')}")
    return answer


class RendezvousCollusion:
    """A :class:`~flwr_byz.clients.collusion.Collusion` for separate processes.

    Same interface (``honest_updates(parameters, config) -> (k, d)``), so it plugs into
    :class:`~flwr_byz.clients.malicious.MaliciousClient` unchanged. This node's own
    honest update comes from ``own_client.fit`` (wrap the honest client in
    :class:`CachedFit` so the training runs once per round).

    Args:
        own_client: this node's honest client.
        member: this node's id among the colluders (its partition id).
        expected: the number of colluders (m), including this one.
        address: the rendezvous, ``"host:port"``.
        authkey: the shared secret.
        timeout: seconds to wait for the other colluders before attacking with what arrived.
        label: separates runs and attacks using the same weights (e.g. run id and attack).
    """

    def __init__(self, own_client, member: int, expected: int, address: str, authkey: bytes, *,
                 timeout: float = DEFAULT_TIMEOUT, label: str = ""):
        self.own_client, self.member, self.expected = own_client, int(member), max(1, int(expected))
        self.address, self.authkey, self.timeout, self.label = address, authkey, float(timeout), label
        self.last: dict = {}

    def honest_updates(self, parameters, config) -> np.ndarray:
        parameters = list(parameters)
        layout = ModelLayout.of(parameters)
        config = {k: v for k, v in dict(config).items() if not str(k).startswith("detox-")}
        weights, _, _ = self.own_client.fit([np.copy(p) for p in parameters], dict(config))
        own = layout.flatten(weights) - layout.flatten(parameters)
        key = weights_fingerprint(parameters, f"{config.get('server-round', 0)}|{self.label}")
        t0 = time.perf_counter()
        try:
            answer = post_and_wait(self.address, self.authkey, key, self.member, own, self.expected, self.timeout)
        except (OSError, EOFError, RuntimeError, AuthenticationError) as err:
            LOG.warning("rendezvous %s unreachable or refused (%s: %s): attacking with this node's own update "
                        "only", self.address, type(err).__name__, err)
            self.last = {"members": [self.member], "complete": self.expected == 1, "error": str(err)}
            return own[None, :].astype(np.float32)
        self.last = {"members": answer["members"], "complete": answer["complete"],
                     "wait_s": time.perf_counter() - t0}
        if not answer["complete"]:
            LOG.warning("rendezvous: heard from %d of %d colluders within %.0f s (members %s); attacking with "
                        "what arrived", len(answer["members"]), self.expected, self.timeout, answer["members"])
        return np.asarray(answer["updates"], dtype=np.float32)


class CachedFit:
    """A client whose ``fit`` result is reused for repeated calls on the same weights and
    round (the malicious wrapper and the rendezvous both need this node's honest update)."""

    def __init__(self, client):
        self.client = client
        self._key, self._value = None, None

    def __getattr__(self, name):
        return getattr(self.client, name)

    def fit(self, parameters, config):
        key = weights_fingerprint(parameters, repr(sorted(dict(config).items())))
        if key != self._key:
            self._value = self.client.fit(parameters, config)
            self._key = key
        weights, n, metrics = self._value
        return [np.copy(w) for w in weights], n, dict(metrics)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flwr_byz.clients.rendezvous",
                                     description="The colluding SuperNodes' rendezvous (attacker side).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed on start)")
    parser.add_argument("--authkey-file", help=f"file holding the shared secret (else ${AUTHKEY_ENV})")
    parser.add_argument("--max-keys", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = RendezvousServer(args.host, args.port, authkey=read_authkey(args.authkey_file), max_keys=args.max_keys)
    host, port = server.address
    print(f"rendezvous listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
