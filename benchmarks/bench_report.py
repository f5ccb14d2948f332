"""Time the whole ``napari-topolens report`` on the digits sample, and its phases.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_report.py [--repeats 1] [--max-images N]

Prints the wall time of the command as a user runs it (a fresh interpreter, imports
included), then, in this process, the time of each phase: model loading, activation
extraction, each analysis step summed over the layers, rendering the page and
saving. The baseline, measured in the same run, is activation extraction alone (the
work any activation tool must do): the report's cost is quoted as a ratio to it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _command_seconds(out: Path, extra: list[str]) -> float:
    env = dict(
        os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_topolens.cli",
            "report",
            "--sample",
            "digits",
            "--out",
            str(out),
            "--quiet",
            *extra,
        ],
        check=True,
        env=env,
        cwd=ROOT,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-images", type=int, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))

    import numpy as np

    from napari_topolens.activations.extract import extract_activations
    from napari_topolens.report.html import render_report
    from napari_topolens.samples import load_sample
    from napari_topolens.topology.analysis import AnalysisConfig, analyze

    extra = ["--max-images", str(args.max_images)] if args.max_images else []
    with tempfile.TemporaryDirectory() as tmp:
        command = [_command_seconds(Path(tmp) / f"run{i}", extra) for i in range(args.repeats)]

        phases: dict[str, list[float]] = {}
        steps: dict[str, float] = {}
        for i in range(args.repeats):
            t0 = time.perf_counter()
            sample = load_sample("digits")
            images, labels = sample.images, sample.labels
            if args.max_images:
                index = np.sort(
                    np.random.default_rng(0).choice(len(images), args.max_images, replace=False)
                )
                images, labels = images[index], labels[index]
            t1 = time.perf_counter()
            clouds = extract_activations(sample.model, images, sample.default_layers)
            t2 = time.perf_counter()
            analysis = analyze(
                clouds,
                labels,
                config=AnalysisConfig(),
                class_names=sample.class_names,
                provenance={"sample": "digits"},
            )
            t3 = time.perf_counter()
            render_report(analysis, images=images)
            t4 = time.perf_counter()
            analysis.save(Path(tmp) / f"saved{i}")
            t5 = time.perf_counter()
            for name, value in (
                ("load sample + model", t1 - t0),
                ("extraction (baseline)", t2 - t1),
                ("analysis", t3 - t2),
                ("render page", t4 - t3),
                ("save analysis", t5 - t4),
            ):
                phases.setdefault(name, []).append(value)
            for layer in analysis.layer_results:
                for step, seconds in layer.seconds.items():
                    steps[step] = steps.get(step, 0.0) + seconds / args.repeats

    n_images = args.max_images or len(sample.images)
    print(
        f"napari-topolens report --sample digits: {n_images} images, layers {', '.join(sample.default_layers)}, "
        f"{os.cpu_count()} CPU cores"
    )
    print(
        f"  whole command (fresh interpreter): {statistics.median(command):7.2f} s  "
        f"(runs: {', '.join(f'{c:.2f}' for c in command)}; target < 120 s)"
    )
    print("  phases in-process (median):")
    for name, values in phases.items():
        print(f"    {name:24s} {statistics.median(values):7.2f} s")
    print("  analysis steps, summed over layers (mean):")
    for name, value in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"    {name:24s} {value:7.2f} s")
    baseline = statistics.median(phases["extraction (baseline)"])
    in_process = sum(statistics.median(v) for k, v in phases.items() if k != "load sample + model")
    print(
        f"  ratio: in-process report / extraction alone = {in_process / baseline:6.1f}x "
        f"({in_process:.2f} s / {baseline:.2f} s)"
    )
    print(
        f"  ratio: whole command / extraction alone     = {statistics.median(command) / baseline:6.1f}x"
    )


if __name__ == "__main__":
    main()
