"""Pixel-level drift on the shapes sample: share of positions that change node, object vs background.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_pixel_drift.py [--images 60]

Two analyses of pool1-pool3 are made from every 4th shapes image (300 images): the
default ``top_norm`` sampling (one position per image) and ``all_positions`` (3,000
random positions per layer). ``--images`` held-out test images are mapped
(``topology_map``), then perturbed (gaussian sigma 0.05 and 0.2, FGSM eps 0.03, seed
1) and mapped again in the same analysis's graph; ``map_drift`` gives the changed
positions. Prints, per analysis, perturbation and layer, the mean share of changed
positions, and the share of changed pixels on the object (above the midpoint of
each image's range) and on the background. Not a timing: no baseline.
"""

from __future__ import annotations

import argparse

import numpy as np
from _cases import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    args = parser.parse_args()

    from napari_topolens.activations.extract import extract_activations
    from napari_topolens.maps import map_drift, topology_map
    from napari_topolens.robustness.perturbations import perturb
    from napari_topolens.samples import load_sample
    from napari_topolens.topology.analysis import analyze

    print(f"machine: {machine()}")
    sample = load_sample("shapes")
    layers = ["pool1", "pool2", "pool3"]
    index = np.arange(0, len(sample.images), 4)
    test = sample.test_index[: args.images]
    images = sample.images[test]
    low = images.min(axis=(1, 2), keepdims=True)
    high = images.max(axis=(1, 2), keepdims=True)
    inside = images > (low + high) / 2
    perturbations = [("gaussian", 0.05), ("gaussian", 0.2), ("fgsm", 0.03)]
    variants = {}
    for kind, strength in perturbations:
        extra = {"model": sample.model, "labels": sample.labels[test]} if kind == "fgsm" else {}
        variants[kind, strength] = perturb(images, kind, strength, seed=1, **extra)
    print("analysis | perturbation | layer | changed positions | object pixels | background pixels")
    for sampling, cap in (("top_norm", None), ("all_positions", 3000)):
        clouds = extract_activations(
            sample.model, sample.images[index], layers, sampling=sampling, max_points=cap
        )
        analysis = analyze(clouds, sample.labels[index])
        base = topology_map(analysis, images, sample.model, layer=layers)
        for (kind, strength), perturbed in variants.items():
            moved = topology_map(analysis, perturbed, sample.model, layer=layers)
            for layer in layers:
                drift = map_drift(base[layer], moved[layer])
                changed = np.stack([drift.changed_pixels(i) for i in range(len(images))])
                print(
                    f"{sampling} | {kind} {strength:g} | {layer} | {drift.mean_share:.3f} | "
                    f"{changed[inside].mean():.3f} | {changed[~inside].mean():.3f}"
                )


if __name__ == "__main__":
    main()
