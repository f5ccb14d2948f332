"""The whole per-layer analysis on one large cloud: time per step and peak RSS.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_analysis_scale.py [--points 100000] [--dim 64]

One ReLU-like layer cloud (ten non-negative clusters, ten positions per image,
seed 0) goes through ``analyze`` with the default configuration (``max_points``
100,000: nothing is dropped at the default size). Prints the seconds of each step,
the H1 route taken and the peak resident memory of this process; the default cap
is sized so that this stays under 2 GB at 100,000 x 64.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from _cases import machine

from napari_topolens.activations.pointcloud import PointCloud
from napari_topolens.topology.analysis import AnalysisConfig, analyze


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    n, d = args.points, args.dim
    rng = np.random.default_rng(0)
    image_labels = rng.integers(0, 10, n // 10)
    centres = np.abs(rng.normal(size=(10, d))) * 2
    image_index = np.arange(n) // 10
    points = np.maximum(centres[image_labels[image_index]] + rng.normal(size=(n, d)) * 0.7, 0)
    cloud = PointCloud(
        layer="conv",
        points=points.astype(np.float32),
        image_index=image_index,
        position=np.stack([np.arange(n) % 10, np.zeros(n, int)], 1),
        receptive_field=np.tile([0, 0, 4, 4], (n, 1)),
        sampling="all_positions",
        grid_shape=(10, 1),
        image_shape=(4, 4),
    )
    print(f"machine: {machine()}")
    config = AnalysisConfig()
    start = time.perf_counter()
    result = analyze({"conv": cloud}, image_labels, config=config)["conv"]
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} points x {d}: {total:.0f} s in all, peak RSS {peak:.0f} MB")
    for step, seconds in result.seconds.items():
        print(f"  {step:18s} {seconds:8.1f} s")
    route = result.persistence.h1_route
    print(
        f"  H1 route: {route.get('route')} on {route.get('points')} points, cut {route.get('cut')}"
    )
    print(f"  Mapper: {result.mapper.n_nodes} nodes; dendrogram: {result.dendrogram.note}")
    print(f"  PH dimension: {result.phdim.note}")


if __name__ == "__main__":
    main()
