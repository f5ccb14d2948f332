"""Cost of a variant run against the base run, on a sample.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_variants.py [--sample shapes] [--subset test]
        [--sampling top_norm] [--repeats 1]

The baseline, measured in the same process and run (after a warm-up run that pays
the library imports), is the base run: extraction and analysis of the original images. Then each variant of
``gaussian:0.1, blur:1, fgsm:0.03, prune:0.5, int8`` is run as ``run_variants`` runs it
with the base reused (perturb or compress, extract, analyse, compare), and its cost
is printed as a ratio to the base run. Also printed: what a perturbed variant saves
by sharing the model (the receptive-field probing, cached per model and image size)
and what a compressed model, a new module, has to probe again. Wall and CPU times
are both given, because a shared machine makes wall times noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["gaussian:0.1", "blur:1", "fgsm:0.03", "prune:0.5", "int8"]


class Clock:
    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default="shapes", choices=("digits", "shapes"))
    parser.add_argument("--subset", default="test", choices=("test", "all"))
    parser.add_argument("--sampling", default="top_norm")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))

    import numpy as np

    import napari_topolens as tl
    from napari_topolens.activations import receptive_field
    from napari_topolens.pipeline.variants import run_variants

    sample = tl.load_sample(args.sample)
    index = sample.test_index if args.subset == "test" else np.arange(len(sample.images))
    images, labels = sample.images[index], sample.labels[index]
    layers = sample.default_layers
    print(
        f"{args.sample}: {len(images)} images {images.shape[1:]}, layers {', '.join(layers)}, "
        f"sampling {args.sampling}, {args.repeats} repeat(s)"
    )

    # warm-up: library imports and first-call costs would otherwise land on the base run
    warm = tl.extract_activations(sample.model, images[:80], layers, sampling=args.sampling)
    warm_base = tl.analyze(warm, labels[:80], images=images[:80])
    run_variants(sample.model, images[:80], layers, ["blur:1"], labels=labels[:80], base=warm_base)

    base_wall, base_cpu, base_extract = [], [], []
    rows: dict[str, list[tuple[float, float, dict[str, float]]]] = {v: [] for v in VARIANTS}
    probe_cold = probe_warm = 0.0
    for _ in range(args.repeats):
        receptive_field._CACHE.clear()  # every repeat probes afresh
        with Clock() as probe:
            clouds = tl.extract_activations(
                sample.model, images[:1], layers, sampling=args.sampling
            )
        probe_cold = probe.wall
        with Clock() as probe:
            tl.extract_activations(sample.model, images[:1], layers, sampling=args.sampling)
        probe_warm = probe.wall
        with Clock() as base_clock:
            with Clock() as extract_clock:
                clouds = tl.extract_activations(
                    sample.model, images, layers, sampling=args.sampling
                )
                probabilities = tl.predict_proba(sample.model, images)
            base_extract.append(extract_clock.wall)
            base = tl.analyze(
                clouds,
                labels,
                class_names=sample.class_names,
                probabilities=probabilities,
                images=images,
            )
        base_wall.append(base_clock.wall)
        base_cpu.append(base_clock.cpu)
        for spec in VARIANTS:
            with Clock() as clock:
                result = run_variants(
                    sample.model,
                    images,
                    layers,
                    [spec],
                    labels=labels,
                    class_names=sample.class_names,
                    sampling=args.sampling,
                    base=base,
                )
            rows[spec].append((clock.wall, clock.cpu, result.variants[0].seconds))

    wall, cpu = statistics.median(base_wall), statistics.median(base_cpu)
    extract = statistics.median(base_extract)
    print(
        f"\nbase run (extract + analyse): {wall:7.2f} s wall ({extract:.2f} s extraction), "
        f"{cpu:7.2f} s CPU   = 1.00"
    )
    print(
        f"receptive-field probing + 1-image pass: {probe_cold:.3f} s cold, {probe_warm:.3f} s "
        "cached (perturbed variants share the cache; a compressed copy probes again)"
    )
    print(
        f"\n{'variant':<14}{'wall s':>9}{'CPU s':>9}{'ratio':>8}   "
        "perturb/compress  extract  analyse  compare"
    )
    for spec, runs in rows.items():
        v_wall = statistics.median(r[0] for r in runs)
        v_cpu = statistics.median(r[1] for r in runs)
        parts = runs[len(runs) // 2][2]
        print(
            f"{spec:<14}{v_wall:9.2f}{v_cpu:9.2f}{v_cpu / cpu:8.2f}   "
            f"{parts.get('variant', 0):16.2f}{parts.get('extraction', 0):9.2f}"
            f"{parts.get('analysis', 0):9.2f}{parts.get('comparison', 0):9.2f}"
        )
    print("\nratio: CPU seconds of the variant run (base reused) / CPU seconds of the base run")


if __name__ == "__main__":
    main()
