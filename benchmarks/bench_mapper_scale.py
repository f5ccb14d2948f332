"""Mapper at 20k, 100k and 1M points x 256 (float32, ReLU-like): CPU and wall
seconds and peak RSS, today's route against main's and the peers.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_mapper_scale.py [--sizes 20000,100000,1000000]
        [--peer-python /work/benchenv-mapper/bin/python] [--baseline-src /path/to/main/src]

The cloud (:func:`relu_cloud`, seed 0) is ``relu(z @ W + b + 0.05 noise)`` in float32:
``z`` a 6-d latent point (16 Gaussian clusters, centres N(0, 9), spread N(0, 1)),
``W`` (6 x 256) N(0, 1/6), ``b`` N(-0.5, 0.25); 42 % of the entries are positive,
norms 2-63. ``--cloud`` takes an (N, d) ``.npy`` (e.g. a saved layer) instead, each
size its first n rows. Each case runs in its own interpreter, one after the other:

* ``topolens``: ``mapper_graph(x)`` with the defaults (l2norm lens, 10 cubes, 50 %
  overlap, ``min_samples`` 5, eps from the knee: above 20,000 points the knee of a
  seeded sample of 4,096 exact k-distances), timed with the knee, edges and
  communities;
* ``main``: the same call with ``--baseline-src`` (main's code: the knee from an
  exact 5-NN of every point, every cube's pairs tested in blocks), up to
  ``--baseline-max`` points; its nodes must equal the project's where eps does
  (at most 20,000 points);
* peers, in their own environment (``--peer-python``), given topolens's eps and
  ``min_samples`` 5, up to ``--peer-max`` points: kmapper's ``map`` with
  scikit-learn's ``DBSCAN`` (kmapper's cover, so its nodes must equal the
  project's), tda-mapper's ``MapperAlgorithm`` with ``CubicalCover(10, 0.5)`` and
  giotto-tda's ``make_mapper_pipeline`` with ``CubicalCover(n_intervals=10,
  overlap_frac=0.5)`` (their covers differ from kmapper's: nodes counted only).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from _cases import machine, peer_versions, project_python, run_case

_TIMED = """
import os
{setup}
t, c0 = time.perf_counter(), time.process_time()
{run}
seconds, cpu = time.perf_counter() - t, time.process_time() - c0
open(out + ".json", "w").write(json.dumps({{"eps": eps, "nodes": nodes, "load": os.getloadavg()[0]}}))
result = [len(nodes)]
"""
TOPOLENS = _TIMED.format(
    setup="""
{path}
from napari_topolens.topology.mapper import mapper_graph
mapper_graph(x[:60])  # lazy imports, outside the timing
""",
    run="""
g = mapper_graph(x)
eps = g.params["eps"]
nodes = {i: g.node_members(k).tolist() for k, i in enumerate(g.node_ids)}
""",
)
KMAPPER = _TIMED.format(
    setup="""
import kmapper
from sklearn.cluster import DBSCAN
eps = float(open(sys.argv[1] + ".eps").read())
""",
    run="""
lens = np.linalg.norm(x.astype(np.float64), axis=1)[:, None]
graph = kmapper.KeplerMapper(verbose=0).map(lens, x, cover=kmapper.Cover(n_cubes=10, perc_overlap=0.5), clusterer=DBSCAN(eps=eps, min_samples=5))
nodes = {k: sorted(set(v)) for k, v in graph["nodes"].items()}
""",
)
TDAMAPPER = _TIMED.format(
    setup="""
from sklearn.cluster import DBSCAN
from tdamapper.learn import MapperAlgorithm
from tdamapper.cover import CubicalCover
eps = float(open(sys.argv[1] + ".eps").read())
""",
    run="""
lens = np.linalg.norm(x.astype(np.float64), axis=1)[:, None]
graph = MapperAlgorithm(cover=CubicalCover(n_intervals=10, overlap_frac=0.5), clustering=DBSCAN(eps=eps, min_samples=5), verbose=False).fit_transform(x, lens)
nodes = {str(k): [] for k in graph.nodes}
""",
)
GIOTTO = _TIMED.format(
    setup="""
from sklearn.cluster import DBSCAN
from gtda.mapper import CubicalCover, make_mapper_pipeline
from sklearn.preprocessing import FunctionTransformer
eps = float(open(sys.argv[1] + ".eps").read())
""",
    run="""
pipe = make_mapper_pipeline(filter_func=FunctionTransformer(lambda v: np.linalg.norm(v.astype(np.float64), axis=1)[:, None]), cover=CubicalCover(n_intervals=10, overlap_frac=0.5), clusterer=DBSCAN(eps=eps, min_samples=5), n_jobs=1)
graph = pipe.fit_transform(x)
nodes = {str(k): [] for k in range(graph.vcount())}
""",
)


def relu_cloud(n: int, dim: int = 256, seed: int = 0) -> np.ndarray:
    """The ReLU-like float32 cloud of the module docstring, made 65,536 rows at a time."""
    latent, clusters = 6, 16
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent)) * 3.0
    w = (rng.normal(size=(latent, dim)) / np.sqrt(latent)).astype(np.float32)
    b = rng.normal(size=dim).astype(np.float32) * 0.5 - 0.5
    which = rng.integers(0, clusters, n)
    x = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 65536):
        part = which[s : s + 65536]
        z = (centres[part] + rng.normal(size=(len(part), latent))).astype(np.float32)
        h = z @ w + b
        h += rng.normal(size=h.shape).astype(np.float32) * 0.05
        np.maximum(h, 0, out=h)
        x[s : s + 65536] = h
    return x


def _row(n: int, name: str, case: dict, nodes: int, same: str, ours: dict | None) -> str:
    ratio = ""
    if ours is not None:
        ratio = (
            f"  ({case['seconds'] / ours['seconds']:.2f}x the wall, "
            f"{case['cpu'] / ours['cpu']:.2f}x the CPU, "
            f"{case['peak_mb'] / ours['peak_mb']:.2f}x the memory)"
        )
    return (
        f"{n:8d} {name:>14s} {case['cpu']:8.1f} {case['seconds']:8.1f} {case['peak_mb']:8.0f} "
        f"{case['load']:5.1f} {nodes:6d}  {same}{ratio}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,100000,1000000")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--cloud", help="an (N, d) .npy cloud instead of the synthetic one")
    parser.add_argument("--baseline-src", help="main's src/ (e.g. a `git worktree` of main)")
    parser.add_argument("--baseline-max", type=int, default=100000)
    parser.add_argument("--peer-python", default="/work/benchenv-mapper/bin/python")
    parser.add_argument("--peer-max", type=int, default=100000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    peer = args.peer_python if Path(args.peer_python).exists() else None
    print(f"machine: {machine()}")
    if peer:
        print(f"peers: {peer_versions(peer)}")
    print(
        f"{'n':>8s} {'route':>14s} {'CPU s':>8s} {'wall s':>8s} {'peak MB':>8s} "
        f"{'load':>5s} {'nodes':>6s}  same nodes"
    )
    ours_body = TOPOLENS.replace("{path}", "")
    main_body = TOPOLENS.replace("{path}", f"sys.path.insert(0, {args.baseline_src!r})")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            if args.cloud:
                x = np.load(args.cloud, allow_pickle=False)[:n]
                n = len(x)
            else:
                x = relu_cloud(n, args.dim)
            cloud = Path(tmp) / f"cloud{n}.npy"
            np.save(cloud, x)
            del x
            out = Path(tmp) / f"topolens{n}.npy"
            ours = run_case(project_python(), ours_body, cloud, out, args.timeout)
            if "error" in ours:
                print(f"{n:8d} {'topolens':>14s}  {ours['error']}", flush=True)
                continue
            mine = json.loads(Path(str(out) + ".json").read_text())
            ours["load"] = mine["load"]
            Path(str(cloud) + ".eps").write_text(repr(mine["eps"]))
            print(_row(n, "topolens", ours, len(mine["nodes"]), "reference", None), flush=True)
            cases = []
            if args.baseline_src and n <= args.baseline_max:
                cases.append(("main", project_python(), main_body, True))
            if peer and n <= args.peer_max:
                cases += [
                    ("kmapper+DBSCAN", peer, KMAPPER, True),
                    ("tda-mapper", peer, TDAMAPPER, False),
                    ("giotto-tda", peer, GIOTTO, False),
                ]
            for name, python, body, compare in cases:
                their_out = Path(tmp) / f"{name}{n}.npy"
                case = run_case(python, body, cloud, their_out, args.timeout)
                if "error" in case:
                    print(f"{n:8d} {name:>14s}  {case['error']}", flush=True)
                    continue
                theirs = json.loads(Path(str(their_out) + ".json").read_text())
                case["load"] = theirs["load"]
                same = "-"
                if compare:
                    same = "yes" if theirs["nodes"] == mine["nodes"] else "NO"
                    if theirs["eps"] != mine["eps"]:
                        same += f" (eps {theirs['eps']:.6g})"
                print(_row(n, name, case, len(theirs["nodes"]), same, ours), flush=True)
            os.remove(cloud)


if __name__ == "__main__":
    main()
