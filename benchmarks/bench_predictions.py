"""What recording the model's predictions costs the analysis widget's worker.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_predictions.py [--repeats 3]

The widget always runs ``predict_proba`` on the analysed images (in chunks of 512,
each a chance to cancel) so that ``Analysis.predictions`` can colour views by
predicted class and by correct / incorrect, and so that a user's images without
labels get the model's predictions as labels. The baseline, measured in the same
run, is what the worker does anyway before it: pulling the activations of the
sample's default layers with the default ``top_norm`` sampling. The cost is
printed as a ratio to it, for both samples (all their images).

Reading a label CSV is timed too, for a file of one label per image for 100,000
images (a stack far larger than the samples), against ``numpy.loadtxt`` of the same
file as the baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_topolens import extract_activations, load_sample, predict_proba  # noqa: E402
from napari_topolens.label_sources import read_labels_csv  # noqa: E402

CHUNK = 512  # as in the widget's worker


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def chunked_predictions(model, images: np.ndarray) -> np.ndarray:
    chunks = [predict_proba(model, images[s : s + CHUNK]) for s in range(0, len(images), CHUNK)]
    return np.argmax(np.concatenate(chunks), axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name in ("digits", "shapes"):
        sample = load_sample(name)
        images = sample.images
        layers = list(sample.default_layers)
        extract = best_of(
            args.repeats,
            lambda: extract_activations(sample.model, images, layers, sampling="top_norm"),
        )
        predict = best_of(args.repeats, lambda: chunked_predictions(sample.model, images))
        accuracy = float(np.mean(chunked_predictions(sample.model, images) == sample.labels))
        print(
            f"{name}: {len(images)} images, layers {','.join(layers)}: extraction (top_norm) "
            f"{extract:.3f} s, predictions {predict:.3f} s, ratio {predict / extract:.2f} "
            f"(agreement with the true labels {accuracy:.3f})"
        )
    n = 100_000
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        np.savetxt(path, rng.integers(0, 10, n), fmt="%d", header="label", comments="")
        ours = best_of(args.repeats, lambda: read_labels_csv(path, n))
        numpy = best_of(args.repeats, lambda: np.loadtxt(path, skiprows=1, dtype=np.int64))
        size = path.stat().st_size / 2**20
    print(
        f"label CSV, {n} rows ({size:.2f} MiB): read_labels_csv {ours:.3f} s, "
        f"numpy.loadtxt {numpy:.3f} s, ratio {ours / numpy:.2f}"
    )
    print(f"(best of {args.repeats}; timings on a shared machine are noisy)")


if __name__ == "__main__":
    main()
