"""Receptive fields of a top_norm extraction on big images: probing vs closed form.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_receptive_field.py [--images 2] [--size 2048] [--repeats 1]

The same extraction (``sampling="top_norm"``, both conv layers of the two-conv net of
``bench_memory.py``) runs with the fields probed (the route before the closed form,
forced with ``receptive_field.probing_only()``) and composed from the architecture,
interleaved in one process, the field cache cleared before every run. Prints CPU and
wall seconds of each run, the 1-minute load average before and after, the ratio, and
checks that both routes give the same positions and boxes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import torch
    from torch import nn

    from napari_topolens import extract_activations
    from napari_topolens.activations import receptive_field

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
    ).eval()
    images = np.random.default_rng(0).random((args.images, args.size, args.size), np.float32)
    print(
        f"{args.images} x {args.size}^2 images, top_norm, layers '0' and '2'; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    def one(route: str) -> tuple[float, float, dict]:
        receptive_field._CACHE.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        if route == "probed":
            with receptive_field.probing_only():
                clouds = extract_activations(model, images, ["0", "2"], sampling="top_norm")
        else:
            clouds = extract_activations(model, images, ["0", "2"], sampling="top_norm")
        return time.perf_counter() - wall, time.process_time() - cpu, clouds

    rows = []
    results = {}
    for repeat in range(args.repeats):
        for route in ("probed", "closed form"):
            load = os.getloadavg()[0]
            wall, cpu, clouds = one(route)
            meta = clouds["2"].meta
            rows.append(
                (
                    repeat,
                    route,
                    cpu,
                    wall,
                    load,
                    os.getloadavg()[0],
                    meta["receptive_field_method"],
                    meta["receptive_field_probe_passes"],
                )
            )
            results[route] = clouds
            print(
                f"  repeat {repeat} {route:<12} CPU {cpu:7.2f} s  wall {wall:7.2f} s  "
                f"load {load:.2f} -> {os.getloadavg()[0]:.2f}  "
                f"{meta['receptive_field_method']}, {meta['receptive_field_probe_passes']} passes",
                flush=True,
            )
    for name in ("0", "2"):
        a, b = results["probed"][name], results["closed form"][name]
        assert np.array_equal(a.position, b.position), name
        assert np.array_equal(a.receptive_field, b.receptive_field), name
        assert np.array_equal(a.points, b.points), name
    print("same positions, boxes and points on both routes")
    print()
    print("| route | CPU s | wall s | load (1 min) before → after | receptive fields |")
    print("|---|---:|---:|---|---|")
    for _repeat, route, cpu, wall, before, after, method, passes in rows:
        print(f"| {route} | {cpu:.2f} | {wall:.2f} | {before:.2f} → {after:.2f} | {method}, "
              f"{passes} passes |")  # fmt: skip
    probe = [r for r in rows if r[1] == "probed"]
    closed = [r for r in rows if r[1] == "closed form"]
    cpu_ratio = np.median([r[2] for r in probe]) / np.median([r[2] for r in closed])
    wall_ratio = np.median([r[3] for r in probe]) / np.median([r[3] for r in closed])
    print(f"\nprobed / closed form: CPU x{cpu_ratio:.1f}, wall x{wall_ratio:.1f} (medians)")


if __name__ == "__main__":
    main()
