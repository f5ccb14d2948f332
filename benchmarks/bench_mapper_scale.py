"""Mapper at 20k, 50k and 100k activation-like points x 32: time and peak RSS.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_mapper_scale.py [--sizes 20000,50000,100000]

The cloud is ReLU-like (ten non-negative clusters, seed 0). Each case runs in its
own interpreter:

* ``topolens``: ``mapper_graph(x, labels)`` with the defaults (l2norm lens,
  10 cubes, 50 % overlap, eps from the knee), DBSCAN in bounded memory; its time
  includes the knee eps, the edges and the Louvain communities;
* ``balls only``: the same ``mapper_graph`` with every interval clustered by the
  project's earlier DBSCAN route (scikit-learn's eps-balls a chunk of rows at a
  time, ``_dbscan_balls``) instead of the blocked pair test it now takes in more
  than 15 dimensions or for big balls, up to ``--previous-max`` points; its nodes
  must equal the project's;
* ``kmapper+DBSCAN``: the route before both: eps from the same knee, then kmapper's
  own ``map`` with scikit-learn's ``DBSCAN`` (no communities), up to
  ``--baseline-max`` points; its nodes must equal the project's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _cases import machine, project_python, run_case

TOPOLENS = """
from napari_topolens.topology.mapper import mapper_graph
labels = np.load(sys.argv[1].replace(".npy", "_labels.npy"))
mapper_graph(x[:60], labels[:60])  # lazy imports, outside the timing
t = time.perf_counter()
g = mapper_graph(x, labels)
seconds = time.perf_counter() - t
open(out + ".json", "w").write(json.dumps({"eps": g.params["eps"], "nodes": {i: g.node_members(k).tolist() for k, i in enumerate(g.node_ids)}}))
result = [g.n_nodes, len(g.edges)]
"""
BALLS_ONLY = (
    """
import napari_topolens.topology.mapper as mapper_module
mapper_module.dbscan_labels = lambda x, eps, min_samples, *, budget=mapper_module.NEIGHBOR_BUDGET: (
    mapper_module._dbscan_balls(np.asarray(x, dtype=np.float64), eps, min_samples, budget)
)
"""
    + TOPOLENS
)
KMAPPER = """
import kmapper
from sklearn.cluster import DBSCAN
from napari_topolens.topology.mapper import knee_eps
knee_eps(x[:60])  # lazy imports, outside the timing
lens = np.linalg.norm(x, axis=1)[:, None]
t = time.perf_counter()
eps = knee_eps(x, 5)  # the project's eps before, timed as part of the route
graph = kmapper.KeplerMapper(verbose=0).map(lens, x, cover=kmapper.Cover(n_cubes=10, perc_overlap=0.5), clusterer=DBSCAN(eps=eps, min_samples=5))
seconds = time.perf_counter() - t
open(out + ".json", "w").write(json.dumps({"nodes": {k: sorted(set(v)) for k, v in graph["nodes"].items()}}))
result = [len(graph["nodes"]), sum(len(v) for v in graph["links"].values())]
"""


def _cloud(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = np.abs(rng.normal(size=(10, dim))) * 2
    labels = rng.integers(0, 10, n)
    return np.maximum(centres[labels] + rng.normal(size=(n, dim)) * 0.7, 0), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,50000,100000")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument(
        "--cloud",
        help="an (N, d) .npy cloud to use instead of the synthetic one (e.g. a layer of "
        "a saved analysis); each size takes its first n rows, without labels",
    )
    parser.add_argument("--baseline-max", type=int, default=20000)
    parser.add_argument("--previous-max", type=int, default=50000)
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"{'n':>7s} {'route':>15s} {'seconds':>9s} {'peak MB':>8s} {'nodes':>6s}  same nodes")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            if args.cloud:
                x = np.load(args.cloud, allow_pickle=False)[:n].astype(np.float64)
                labels = np.full(len(x), -1)
                n = len(x)
            else:
                x, labels = _cloud(n, args.dim)
            cloud = Path(tmp) / f"cloud{n}.npy"
            np.save(cloud, x)
            np.save(Path(tmp) / f"cloud{n}_labels.npy", labels)
            ours_out = Path(tmp) / f"topolens{n}.npy"
            ours = run_case(project_python(), TOPOLENS, cloud, ours_out, args.timeout)
            if "error" in ours:
                print(f"{n:7d} {'topolens':>15s}  {ours['error']}")
                continue
            mine = json.loads(Path(str(ours_out) + ".json").read_text())
            nodes = int(np.load(ours_out)[0])
            print(
                f"{n:7d} {'topolens':>15s} {ours['seconds']:9.1f} {ours['peak_mb']:8.0f} "
                f"{nodes:6d}  reference",
                flush=True,
            )
            if n <= args.previous_max:
                prev_out = Path(tmp) / f"balls{n}.npy"
                prev = run_case(project_python(), BALLS_ONLY, cloud, prev_out, args.timeout)
                if "error" in prev:
                    print(f"{n:7d} {'balls only':>15s}  {prev['error']}")
                else:
                    theirs = json.loads(Path(str(prev_out) + ".json").read_text())["nodes"]
                    print(
                        f"{n:7d} {'balls only':>15s} {prev['seconds']:9.1f} "
                        f"{prev['peak_mb']:8.0f} {len(theirs):6d}  "
                        f"{'yes' if theirs == mine['nodes'] else 'NO'}  "
                        f"({prev['seconds'] / ours['seconds']:.2f}x the time, "
                        f"{prev['peak_mb'] / ours['peak_mb']:.2f}x the memory)",
                        flush=True,
                    )
            if n > args.baseline_max:
                continue
            ref_out = Path(tmp) / f"kmapper{n}.npy"
            ref = run_case(project_python(), KMAPPER, cloud, ref_out, args.timeout)
            if "error" in ref:
                print(f"{n:7d} {'kmapper+DBSCAN':>15s}  {ref['error']}")
                continue
            theirs = json.loads(Path(str(ref_out) + ".json").read_text())["nodes"]
            same = theirs == mine["nodes"]
            print(
                f"{n:7d} {'kmapper+DBSCAN':>15s} {ref['seconds']:9.1f} {ref['peak_mb']:8.0f} "
                f"{len(theirs):6d}  {'yes' if same else 'NO'}  "
                f"({ref['seconds'] / ours['seconds']:.2f}x the time, "
                f"{ref['peak_mb'] / ours['peak_mb']:.2f}x the memory)",
                flush=True,
            )


if __name__ == "__main__":
    main()
