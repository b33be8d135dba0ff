"""Where a result came from: the code version, the library versions, the engine, the thread
counts, the command.

Written into the first row (round 0) of every run in ``results.jsonl`` and into its
``summary.csv`` row, so that a table can always be traced to the code that made it.
"""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path


@lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe --always --dirty --tags`` of the checkout holding this package, or the
    installed package's version (``flwr-byz 0.1.0``) when it is not in a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--tags"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"flwr-byz {metadata.version('flwr-byz')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def threads() -> str:
    """``"<torch>/<BLAS>"``: torch's intra-op threads and the most threads of a loaded BLAS
    (threadpoolctl), in this process. Under an attack like ALIE a run is chaotic and another
    thread count sums in another order, so two runs of one seed agree only at equal counts.
    In the Simulation Engine this is the server's process; Ray gives each client actor
    ``OMP_NUM_THREADS`` = its CPUs unless the variable is set."""
    import torch

    blas = None
    try:
        from threadpoolctl import threadpool_info

        counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
        blas = max(counts) if counts else None
    except ImportError:
        pass
    return f"{torch.get_num_threads()}/{blas if blas is not None else '?'}"


def cpu() -> str:
    """The CPU in one line: its model name (``/proc/cpuinfo``; ``platform.processor()``
    elsewhere) and the widest vector instruction set torch's CPU kernels use, e.g.
    ``"Intel(R) Xeon(R) Processor (AVX512)"``."""
    import torch

    name = ""
    try:
        with open("/proc/cpuinfo") as fh:
            names = (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
            name = next((n for n in names if n), "")
    except OSError:
        pass
    return f"{name or platform.processor() or 'unknown'} ({torch.backends.cpu.get_cpu_capability()})"


def environment() -> str:
    """The numerical environment in one line: torch's full version (its local tag names the
    build: ``+cpu``, ``+cu130``), NumPy's, the BLAS libraries loaded in this process
    (threadpoolctl) and (since 2026-12-02) the CPU (:func:`cpu`), e.g. ``"torch 2.14.1+cu130,
    numpy 2.4.6, openblas 0.3.31, cpu Intel(R) Xeon(R) Processor (AVX512)"``. A chaotic run (ALIE) repeats
    only in the same environment: reinstalling the same versions from other builds, or the
    same install on another CPU, is enough to send it elsewhere."""
    import numpy
    import torch

    parts = [f"torch {torch.__version__}", f"numpy {numpy.__version__}"]
    try:
        from threadpoolctl import threadpool_info

        parts += sorted({f"{p.get('internal_api')} {p.get('version')}" for p in threadpool_info()
                         if p.get("user_api") == "blas"})
    except ImportError:
        pass
    return ", ".join(parts + [f"cpu {cpu()}"])


def provenance(engine: str) -> dict:
    """The provenance record of a run made now with ``engine``."""
    return {
        "code_version": code_version(), "flwr": _version("flwr"), "torch": _version("torch"),
        "numpy": _version("numpy"), "python": platform.python_version(), "engine": engine,
        "threads": threads(), "environment": environment(),
        "command": shlex.join(sys.argv), "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
