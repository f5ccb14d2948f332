"""Run one benchmark case in a fresh interpreter: its time, peak RSS and output.

Each case is a small program run with ``python -c`` in a subprocess, so the peak
resident memory (``ru_maxrss``) is that case's alone, and peers (giotto-tda,
ripser.py) can run in their own environment (``--peer-python``), never in the
project's. The cloud is passed as a ``.npy`` file; a case writes its sorted
result values next to it for the caller to compare.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = """
import json, resource, sys, time
import numpy as np
x = np.load(sys.argv[1])
out = sys.argv[2]
"""
_EPILOGUE = """
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
np.save(out, np.asarray(result, dtype=np.float64))
print(json.dumps({"seconds": seconds, "peak_mb": peak, "cpu": globals().get("cpu")}))
"""


def run_case(
    python: str, body: str, cloud: Path, out: Path, timeout: float, threads: int | None = None
) -> dict:
    """Run ``body`` (sets ``seconds``, ``result`` and optionally ``cpu``) on ``cloud``;
    a dict with ``seconds``, ``peak_mb``, ``cpu`` (None when not set) or ``error``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    try:
        done = subprocess.run(
            [python, "-c", _PRELUDE + body + _EPILOGUE, str(cloud), str(out)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:120]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    cores = os.cpu_count()
    try:
        pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        memory = "? GiB"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.machine()} {platform.processor() or ''} {cores} cores, {memory}, "
        f"python {platform.python_version()}, load average {load:.1f} at start"
    )


def peer_versions(python: str) -> str:
    code = (
        "import importlib.metadata as m\n"
        "for p in ('giotto-tda', 'giotto-ph', 'ripser', 'gudhi', 'numpy'):\n"
        "    try: print(p, m.version(p))\n"
        "    except Exception: print(p, 'not installed')\n"
    )
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"peer environment {python} unusable: {exc}"
    return ", ".join(done.stdout.split("\n")).strip(", ")


def project_python() -> str:
    return sys.executable
