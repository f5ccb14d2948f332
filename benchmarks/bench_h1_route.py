"""H0 + H1 at 1k, 2k and 4k points x 64: the project's exact H1 against gudhi, giotto-ph
and ripser.py, measured in the same run.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_h1_route.py \\
        [--sizes 1000,2000,4000] [--ours-only 20000] [--peer-python /work/benchenv-h1/bin/python]

Every case runs in its own interpreter on the same Gaussian cloud (seed 0); the
peers run in their own environment (``--peer-python``: a venv with giotto-ph,
ripser and gudhi, never the project's):

* ``topolens exact``: ``compute_persistence(x, subsample="full")``: H0 exact, H1 of
  the whole cloud on a cut proven not to change it (``topology.rips_h1``), plus a
  cycle per H1 bar (work the peers do not do);
* ``topolens auto``: ``compute_persistence(x)`` with the defaults (above 1,000
  points H1 on landmarks: an approximation);
* ``gudhi``: ``RipsPersistence(homology_dimensions=[0, 1])`` (gudhi's Ripser fork,
  cut at the enclosing radius);
* ``giotto-ph``: ``ripser_parallel(x, maxdim=1)`` with 1 and with 2 threads
  (``n_threads``), and with ``collapse_edges=True`` and 2 threads up to
  ``--collapse-max`` points (on these clouds the collapse costs 100x the reduction);
* ``ripser.py``: ``ripser(x, maxdim=1)``.

Printed per case: wall seconds and CPU seconds of the timed call (``process_time``
of the case's process: all its threads), peak RSS of the case's process, the ratio
to gudhi's (CPU and wall), the number of H1 bars and the bottleneck distance of the
H1 diagram to gudhi's (exact mode: 0 is printed as 0), and whether the bars are
identical to gudhi's. The 1-minute load average is printed after each case (the
machine is shared: the CPU ratio is the fairer one).
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
EXACT = AUTO.replace(
    "compute_persistence(x, max_dim=1)", 'compute_persistence(x, max_dim=1, subsample="full")'
)
GUDHI = """
from gudhi.sklearn.rips_persistence import RipsPersistence
RipsPersistence(homology_dimensions=[0, 1], n_jobs=1).fit_transform([x[:30]])
t, c = time.perf_counter(), time.process_time()
d = RipsPersistence(homology_dimensions=[0, 1], n_jobs=1).fit_transform([x])[0]
seconds, cpu = time.perf_counter() - t, time.process_time() - c
h1 = np.asarray(d[1]).reshape(-1, 2)
result = h1[h1[:, 1] > h1[:, 0]]
"""
GIOTTO_PH = """
from gph import ripser_parallel
ripser_parallel(x[:30], maxdim=1)
t, c = time.perf_counter(), time.process_time()
d = ripser_parallel(x, maxdim=1, collapse_edges=COLLAPSE, n_threads=THREADS)["dgms"][1]
seconds, cpu = time.perf_counter() - t, time.process_time() - c
result = d[d[:, 1] > d[:, 0]]
"""
RIPSER_PY = """
from ripser import ripser
ripser(x[:30], maxdim=1)
t, c = time.perf_counter(), time.process_time()
d = ripser(x, maxdim=1)["dgms"][1]
seconds, cpu = time.perf_counter() - t, time.process_time() - c
result = d[d[:, 1] > d[:, 0]]
"""


def _bottleneck(a: np.ndarray, b: np.ndarray) -> float:
    import gudhi

    distance = float(gudhi.bottleneck_distance(a.reshape(-1, 2), b.reshape(-1, 2)))
    return 0.0 if distance < 1e-300 else distance  # gudhi reports 0 as ~1e-308


def _sorted(diagram: np.ndarray) -> np.ndarray:
    diagram = diagram.reshape(-1, 2)
    return diagram[np.lexsort((diagram[:, 1], diagram[:, 0]))]


def _routes(peer: str | None, ours_only: bool, collapse: bool) -> list[tuple[str, str, str]]:
    routes = [("topolens exact", project_python(), EXACT)]
    if ours_only:
        return routes
    routes.append(("topolens auto", project_python(), AUTO))
    if peer:
        routes.append(("gudhi", peer, GUDHI))
        cases = [(1, False), (2, False)] + ([(2, True)] if collapse else [])
        for threads, collapse_edges in cases:
            name = f"giotto-ph {threads}t" + (" collapse" if collapse_edges else "")
            body = GIOTTO_PH.replace("THREADS", str(threads))
            routes.append((name, peer, body.replace("COLLAPSE", str(collapse_edges))))
        routes.append(("ripser.py", peer, RIPSER_PY))
    return routes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,4000")
    parser.add_argument("--ours-only", default="", help="sizes run for topolens exact alone")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--peer-python", default="/work/benchenv-h1/bin/python")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument(
        "--collapse-max",
        type=int,
        default=1000,
        help="largest n with giotto-ph's collapse_edges=True (76 CPU s at 1k x 64, "
        "100x its uncollapsed time: larger ones would take hours)",
    )
    args = parser.parse_args()
    sizes = [(int(s), False) for s in args.sizes.split(",") if s]
    sizes += [(int(s), True) for s in args.ours_only.split(",") if s]
    peer = args.peer_python if Path(args.peer_python).exists() else None

    print(f"machine: {machine()}")
    print(f"peers: {peer_versions(peer) if peer else 'no peer environment, peers skipped'}")
    print(
        f"{'n':>6s} {'route':>20s} {'wall s':>8s} {'CPU s':>8s} {'peak MB':>8s} "
        f"{'CPU/gudhi':>9s} {'wall/gudhi':>10s} {'H1 bars':>8s} {'bottleneck':>10s} "
        f"{'= gudhi':>7s} {'load':>5s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n, ours_only in sizes:
            cloud = Path(tmp) / f"cloud{n}.npy"
            np.save(cloud, np.random.default_rng(0).normal(size=(n, args.dim)))
            reference: dict | None = None
            cases = {}
            # gudhi first: the others are compared with its diagram as they finish
            routes = sorted(
                _routes(peer, ours_only, n <= args.collapse_max), key=lambda r: r[0] != "gudhi"
            )
            for name, python, body in routes:
                out = Path(tmp) / f"{name.replace(' ', '_')}{n}.npy"
                case = run_case(python, body, cloud, out, args.timeout)
                load = os.getloadavg()[0]
                if "error" in case:
                    print(f"{n:6d} {name:>20s}  {case['error']}  load {load:.1f}", flush=True)
                    continue
                case["h1"] = _sorted(np.load(out))
                if name == "gudhi":
                    reference = case
                route_file = Path(str(out) + ".route.json")
                route = json.loads(route_file.read_text()) if route_file.exists() else None
                cases[name] = case
                ref_h1 = reference["h1"] if reference else None
                distance = _bottleneck(case["h1"], ref_h1) if ref_h1 is not None else float("nan")
                same = (
                    "-"
                    if ref_h1 is None
                    else ("yes" if np.array_equal(case["h1"], ref_h1) else "no")
                )
                cpu = case.get("cpu") or float("nan")
                ref_cpu = reference["cpu"] if reference else float("nan")
                ref_wall = reference["seconds"] if reference else float("nan")
                print(
                    f"{n:6d} {name:>20s} {case['seconds']:8.2f} {cpu:8.2f} {case['peak_mb']:8.0f} "
                    f"{cpu / ref_cpu:8.2f}x {case['seconds'] / ref_wall:9.2f}x "
                    f"{len(case['h1']):8d} {distance:10.3g} {same:>7s} {load:5.1f}",
                    flush=True,
                )
                if route:
                    keys = (
                        "route",
                        "points",
                        "cut",
                        "birth_bound",
                        "enclosing_radius",
                        "cut_tries",
                    )
                    shown = {k: route[k] for k in keys if k in route}
                    print(f"{n:6d} {'':>20s}  {shown}", flush=True)


if __name__ == "__main__":
    main()
