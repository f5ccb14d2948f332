"""Exact H0 at 10k, 50k and 100k points x 64: time and peak RSS, against peers.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_h0_scale.py \\
        [--sizes 10000,50000,100000] [--peer-python /work/bench-venv/bin/python] [--device cuda]

Every case runs in its own interpreter on the same Gaussian cloud (seed 0), so the
peak RSS is that case's alone:

* ``topolens``: ``MetricSpace(x).single_linkage()`` (the Borůvka tree above 2,048
  points, then the scipy linkage matrix ``Z``);
* ``topolens@DEVICE`` with ``--device cuda`` (or ``mps``): the same with the
  screening blocks in torch on that device (its ratio below 1 is the speed-up);
* ``scipy``: ``linkage(pdist(x), "single")`` (the route before), where its
  condensed matrix fits (``--scipy-max``);
* ``giotto-tda`` (``VietorisRipsPersistence(homology_dimensions=[0])``) and
  ``ripser.py`` (``ripser(x, maxdim=0)``) in the peer environment (never the
  project's), where their N x N matrix fits (``--peer-max``).

Each peer's finite H0 deaths are checked against the project's (sorted, to 1e-9
relative; giotto-tda and ripser.py work in float32), and every ratio is the
peer's time over the project's, from the same run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _cases import machine, peer_versions, project_python, run_case

TOPOLENS = """
from napari_topolens.topology.metrics import MetricSpace
MetricSpace(x[:2100]).single_linkage()  # lazy imports, outside the timing (as the peers')
t = time.perf_counter()
z = MetricSpace(x).single_linkage()
seconds = time.perf_counter() - t
result = np.sort(z[:, 2])
"""
SCIPY = """
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import pdist
t = time.perf_counter()
z = linkage(pdist(x), "single")
seconds = time.perf_counter() - t
result = np.sort(z[:, 2])
"""
GIOTTO = """
from gtda.homology import VietorisRipsPersistence
t = time.perf_counter()
d = VietorisRipsPersistence(homology_dimensions=[0], n_jobs=1).fit_transform(x[None])[0]
seconds = time.perf_counter() - t
result = np.sort(d[d[:, 2] == 0, 1])
"""
ON_DEVICE = """
import torch
from napari_topolens.topology.metrics import MetricSpace
MetricSpace(x[:2100]).single_linkage(method="boruvka", device=DEVICE)  # warm-up: kernels, copies
t = time.perf_counter()
z = MetricSpace(x).single_linkage(device=DEVICE)
if DEVICE.startswith("cuda"):
    torch.cuda.synchronize()
seconds = time.perf_counter() - t
result = np.sort(z[:, 2])
"""
RIPSER = """
from ripser import ripser
t = time.perf_counter()
d = ripser(x, maxdim=0)["dgms"][0]
seconds = time.perf_counter() - t
result = np.sort(d[np.isfinite(d[:, 1]), 1])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--peer-python", default="/work/bench-venv/bin/python")
    parser.add_argument("--scipy-max", type=int, default=20000, help="largest n for scipy")
    parser.add_argument("--peer-max", type=int, default=20000, help="largest n for the peers")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--device",
        help="also run the project's route with its distance blocks on this torch device "
        "(e.g. cuda, mps): the GPU speed-up is the CPU route's time over it",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    peer = args.peer_python if Path(args.peer_python).exists() else None

    print(f"machine: {machine()}")
    print(f"peers: {peer_versions(peer) if peer else 'no peer environment, peers skipped'}")
    print(
        f"{'n':>7s} {'route':>11s} {'seconds':>9s} {'peak MB':>8s} {'x topolens':>10s}  H0 agrees"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            cloud = Path(tmp) / f"cloud{n}.npy"
            np.save(cloud, np.random.default_rng(0).normal(size=(n, args.dim)))
            routes = [("topolens", project_python(), TOPOLENS)]
            if args.device:
                body = f"DEVICE = {args.device!r}\n" + ON_DEVICE
                routes.append((f"topolens@{args.device}", project_python(), body))
            if n <= args.scipy_max:
                routes.append(("scipy", project_python(), SCIPY))
            if peer and n <= args.peer_max:
                routes += [("giotto-tda", peer, GIOTTO), ("ripser.py", peer, RIPSER)]
            base = None
            ours = None
            for name, python, body in routes:
                out = Path(tmp) / f"{name}{n}.npy"
                case = run_case(python, body, cloud, out, args.timeout)
                if "error" in case:
                    print(f"{n:7d} {name:>11s}  {case['error']}")
                    continue
                deaths = np.load(out)
                if base is None:
                    base, ours = case["seconds"], deaths
                    agree = "reference"
                else:
                    rtol = 1e-12 if name == "scipy" else 1e-5
                    same = deaths.shape == ours.shape and np.allclose(deaths, ours, rtol=rtol)
                    agree = "yes" if same else "NO"
                print(
                    f"{n:7d} {name:>11s} {case['seconds']:9.2f} {case['peak_mb']:8.0f} "
                    f"{case['seconds'] / base:9.2f}x  {agree}",
                    flush=True,
                )
            skipped = []
            if n > args.scipy_max:
                skipped.append(f"scipy (condensed matrix {n * (n - 1) / 2 * 8 / 1e9:.0f} GB)")
            if peer and n > args.peer_max:
                skipped.append(f"giotto-tda, ripser.py (N x N matrix {n * n * 8 / 1e9:.0f} GB)")
            if skipped:
                print(f"{n:7d} {'skipped':>11s}  {'; '.join(skipped)}")


if __name__ == "__main__":
    main()
