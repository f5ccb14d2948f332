"""H0 + H1 at 1k, 2k and 5k points x 64: the project against giotto-tda and gudhi.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_h1_route.py \\
        [--sizes 1000,2000,5000] [--peer-python /work/bench-venv/bin/python]

Every case runs in its own interpreter on the same Gaussian cloud (seed 0):

* ``topolens auto``: ``compute_persistence(x)`` with the defaults (H0 exact on all
  points; H1 by measured cost: the whole cloud up to 1,000 points, above that
  landmarks; the filtration cut just above the pilot's largest death);
* ``topolens full``: ``compute_persistence(x, subsample="full")``, H1 of the whole
  cloud, the filtration uncut (as the peers compute it);
* ``giotto-tda``: ``VietorisRipsPersistence(homology_dimensions=[0, 1])`` and
  ``gudhi``: ``RipsPersistence(homology_dimensions=[0, 1])``, both on the whole
  cloud, in the peer environment.

Printed per case: wall seconds, CPU seconds (all threads of the case's process: far
less sensitive than wall time to other jobs on a shared machine), peak RSS, the ratio to the faster peer, the number of
H1 bars and the bottleneck distance of its H1 diagram to the whole cloud's (the
``full`` route's, which the peers reproduce), and the route ``auto`` chose with its
recorded pilot closeness.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from _cases import machine, peer_versions, project_python, run_case

AUTO = """
from napari_topolens.topology.persistence import compute_persistence
compute_persistence(x[:30], max_dim=1)  # lazy imports, outside the timing (as the peers')
t, c = time.perf_counter(), time.process_time()
r = compute_persistence(x, max_dim=1)
seconds, cpu = time.perf_counter() - t, time.process_time() - c
result = r.diagrams[1]
import json as _j
open(out + ".route.json", "w").write(_j.dumps({k: (v if not isinstance(v, float) or np.isfinite(v) else str(v)) for k, v in r.h1_route.items()}))
"""
FULL = """
from napari_topolens.topology.persistence import compute_persistence
compute_persistence(x[:30], max_dim=1)  # lazy imports, outside the timing (as the peers')
t, c = time.perf_counter(), time.process_time()
r = compute_persistence(x, max_dim=1, subsample="full")
seconds, cpu = time.perf_counter() - t, time.process_time() - c
result = r.diagrams[1]
"""
GIOTTO = """
from gtda.homology import VietorisRipsPersistence
t, c = time.perf_counter(), time.process_time()
d = VietorisRipsPersistence(homology_dimensions=[0, 1], n_jobs=1).fit_transform(x[None])[0]
seconds, cpu = time.perf_counter() - t, time.process_time() - c
result = d[(d[:, 2] == 1) & (d[:, 1] > d[:, 0]), :2]
"""
GUDHI = """
from gudhi.sklearn.rips_persistence import RipsPersistence
t, c = time.perf_counter(), time.process_time()
d = RipsPersistence(homology_dimensions=[0, 1], n_jobs=1).fit_transform([x])[0]
seconds, cpu = time.perf_counter() - t, time.process_time() - c
h1 = np.asarray(d[1]).reshape(-1, 2)
result = h1[h1[:, 1] > h1[:, 0]]
"""


def _bottleneck(a: np.ndarray, b: np.ndarray) -> float:
    import gudhi

    return float(gudhi.bottleneck_distance(a.reshape(-1, 2), b.reshape(-1, 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,5000")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--peer-python", default="/work/bench-venv/bin/python")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    peer = args.peer_python if Path(args.peer_python).exists() else None

    print(f"machine: {machine()}")
    print(f"peers: {peer_versions(peer) if peer else 'no peer environment, peers skipped'}")
    print(
        f"{'n':>6s} {'route':>14s} {'seconds':>9s} {'CPU s':>8s} {'peak MB':>8s} "
        f"{'/ faster peer':>13s} {'CPU / peer':>10s} "
        f"{'H1 bars':>8s} {'bottleneck to full':>18s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            cloud = Path(tmp) / f"cloud{n}.npy"
            np.save(cloud, np.random.default_rng(0).normal(size=(n, args.dim)))
            routes = [
                ("topolens auto", project_python(), AUTO),
                ("topolens full", project_python(), FULL),
            ]
            if peer:
                routes += [("giotto-tda", peer, GIOTTO), ("gudhi", peer, GUDHI)]
            cases = {}
            for name, python, body in routes:
                out = Path(tmp) / f"{name.replace(' ', '_')}{n}.npy"
                case = run_case(python, body, cloud, out, args.timeout)
                if "error" not in case:
                    case["h1"] = np.load(out).reshape(-1, 2)
                    route_file = Path(str(out) + ".route.json")
                    if route_file.exists():
                        case["route"] = json.loads(route_file.read_text())
                cases[name] = case
            peer_times = [
                cases[p]["seconds"]
                for p in ("giotto-tda", "gudhi")
                if "seconds" in cases.get(p, {})
            ]
            fastest = min(peer_times) if peer_times else float("nan")
            peer_cpu = [
                cases[p]["cpu"] for p in ("giotto-tda", "gudhi") if cases.get(p, {}).get("cpu")
            ]
            fastest_cpu = min(peer_cpu) if peer_cpu else float("nan")
            full = cases["topolens full"].get("h1")
            for name, case in cases.items():
                if "error" in case:
                    print(f"{n:6d} {name:>14s}  {case['error']}")
                    continue
                distance = _bottleneck(case["h1"], full) if full is not None else float("nan")
                cpu = case.get("cpu") or float("nan")
                print(
                    f"{n:6d} {name:>14s} {case['seconds']:9.2f} {cpu:8.2f} {case['peak_mb']:8.0f} "
                    f"{case['seconds'] / fastest:12.2f}x {cpu / fastest_cpu:9.2f}x "
                    f"{len(case['h1']):8d} {distance:18.4f}",
                    flush=True,
                )
            route = cases["topolens auto"].get("route")
            if route:
                keys = ("route", "points", "cut", "cut_held")
                extra = ("pilot_bottleneck_random", "pilot_bottleneck_maxmin")
                shown = {k: route[k] for k in keys + extra if k in route}
                print(f"{n:6d} {'auto chose':>14s}  {shown}")
            print(f"{n:6d} {'load average':>14s}  {os.getloadavg()[0]:.1f} after this size")


if __name__ == "__main__":
    main()
