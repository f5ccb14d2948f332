"""Topology maps: seconds per 224x224 image at three spatial layers, against the forward pass.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_topology_map.py [--images 8] [--analysed 100]
        [--sampling top_norm] [--max-points 10000]

The shapes sample's trained CNN runs on the shapes images upscaled to 224x224 (its
convolutions take any size; the maps stop the forward pass at pool3). An analysis
of pool1, pool2 and pool3 (112x112, 56x56 and 28x28 positions) is made from
``--analysed`` images with ``--sampling``; then ``topology_map`` maps ``--images``
other images at all three layers (every position placed in the Mapper graph and the
cluster flow). The baseline, measured in the same run and interleaved with the maps,
is the forward pass alone to pool3 on the same images (what any map must pay). The
receptive-field probe (once per model and image size, cached) is timed separately.
Prints CPU and wall seconds per image, their ratio to the baseline, and the 1-minute
load average before and after.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import OrderedDict

import numpy as np
from _cases import machine


def _upscaled(images: np.ndarray, size: int) -> np.ndarray:
    from scipy.ndimage import zoom

    factor = size / images.shape[1]
    return np.stack([zoom(im, factor, order=1)[:size, :size] for im in images]).astype(np.float32)


def _timed(work) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--analysed", type=int, default=100)
    parser.add_argument("--sampling", default="top_norm")
    parser.add_argument("--max-points", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from napari_topolens.activations.extract import extract_activations
    from napari_topolens.activations.hooks import capture_layers, check_layer_names
    from napari_topolens.maps import topology_map
    from napari_topolens.samples import load_sample
    from napari_topolens.topology.analysis import AnalysisConfig, analyze

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")
    sample = load_sample("shapes")
    layers = ["pool1", "pool2", "pool3"]
    # the convolutional part (to pool3): its fully connected head is built for 48x48
    children = list(sample.model.named_children())
    last = [name for name, _ in children].index("pool3")
    model = torch.nn.Sequential(OrderedDict(children[: last + 1])).eval()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(sample.images), args.analysed + args.images, replace=False)
    big = _upscaled(sample.images[pick], args.size)
    analysed, mapped = big[: args.analysed], big[args.analysed :]
    start = time.perf_counter()
    clouds = extract_activations(
        model, analysed, layers, sampling=args.sampling, max_points=args.max_points
    )
    config = AnalysisConfig(h1_max_points=300, phdim_max_points=1000)
    analysis = analyze(clouds, sample.labels[pick[: args.analysed]], config=config)
    print(
        f"analysis of {args.analysed} images ({args.sampling}, at most {args.max_points} "
        f"points per layer): {time.perf_counter() - start:.1f} s; points per layer "
        + ", ".join(f"{n} {len(analysis[n].cloud)}" for n in layers)
    )
    # the receptive-field probe of every position: once per model and image size
    probe_cpu, probe_wall = _timed(lambda: topology_map(analysis, mapped[:1], model, layer=layers))
    print(
        f"first map (receptive-field probe, cached after): {probe_wall:.1f} s wall, "
        f"{probe_cpu:.1f} s CPU"
    )

    modules = check_layer_names(model, layers)

    def forward() -> None:
        for image in mapped:
            batch = torch.from_numpy(image[None, None])
            capture_layers(model, batch, modules)

    def maps() -> None:
        topology_map(analysis, mapped, model, layer=layers, batch_size=1)

    load_before = os.getloadavg()[0]
    base_cpu, base_wall, map_cpu, map_wall = [], [], [], []
    for _ in range(args.repeats):  # interleaved: the load changes alike for both
        c, w = _timed(forward)
        base_cpu.append(c)
        base_wall.append(w)
        c, w = _timed(maps)
        map_cpu.append(c)
        map_wall.append(w)
    load_after = os.getloadavg()[0]
    n = len(mapped)
    bc, bw = np.median(base_cpu) / n, np.median(base_wall) / n
    mc, mw = np.median(map_cpu) / n, np.median(map_wall) / n
    print(
        f"{n} images of {args.size}x{args.size}, layers {', '.join(layers)}, median of {args.repeats}"
    )
    print(f"  forward pass alone (baseline): {bw:.3f} s wall, {bc:.3f} s CPU per image")
    print(f"  topology map:                  {mw:.3f} s wall, {mc:.3f} s CPU per image")
    print(f"  ratio map / forward: wall {mw / bw:.1f}x, CPU {mc / bc:.1f}x")
    print(f"  load average (1 min): {load_before:.1f} before, {load_after:.1f} after")


if __name__ == "__main__":
    main()
