"""Peak memory of extraction from a ``.zarr`` store, read lazily vs loaded whole, as N grows.

Run from the repository root (after ``bench_scale.py`` has written the store)::

    PYTHONPATH=src python benchmarks/bench_lazy_memory.py --store WORKDIR/shapes.zarr

For each N it runs, in a fresh interpreter, ``extract_activations`` of the shapes
model's four default layers (``top_norm``: one point per image and layer) on the
first N images of the store, (a) through the lazy source (batch by batch) and (b)
after loading the N images into one float32 array first (what extraction did before
lazy inputs: ``as_image_batch`` copied the whole selection). It prints the peak RSS
of each and the growth from the smallest N: the lazy peak should grow only by the
clouds (N x channels per layer), the eager one by the images as well.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, numpy as np
from napari_topolens import extract_activations, load_sample
from napari_topolens.activations.image_source import open_image_source
store, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sample = load_sample("shapes")
source = open_image_source(store, max_images=n)
images = source.to_stack() if mode == "eager" else source
clouds = extract_activations(sample.model, images, sample.default_layers, sampling="top_norm")
print(sum(c.points.nbytes for c in clouds.values()))
"""


def run(store: Path, n: int, mode: str) -> tuple[float, float, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store), str(n), mode],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    cloud_bytes = int(process.stdout.read().strip() or 0)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {n} {mode}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, cloud_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--sizes", default="2500,10000,20000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        for mode in ("lazy", "eager"):
            seconds, rss, cloud_bytes = run(Path(args.store), n, mode)
            rows.append((n, mode, seconds, rss, cloud_bytes))
            print(f"  done {n} {mode}: {seconds:.1f} s, {rss:.0f} MiB", file=sys.stderr)
    print(
        f"extraction (shapes model, 4 layers, top_norm) from {args.store}; {os.cpu_count()} CPU cores"
    )
    print(
        f"  {'N':>7s} {'mode':>6s} {'time [s]':>9s} {'peak RSS [MiB]':>15s} {'clouds [MiB]':>13s}"
    )
    for n, mode, seconds, rss, cloud_bytes in rows:
        print(f"  {n:7d} {mode:>6s} {seconds:9.1f} {rss:15.0f} {cloud_bytes / 2**20:13.1f}")
    for mode in ("lazy", "eager"):
        first = next(r for r in rows if r[1] == mode and r[0] == sizes[0])
        last = next(r for r in rows if r[1] == mode and r[0] == sizes[-1])
        images_mib = (last[0] - first[0]) * 48 * 48 * 4 / 2**20
        print(
            f"  {mode}: peak RSS grows {last[3] - first[3]:.0f} MiB from N={first[0]} to "
            f"N={last[0]} (the images of the extra {last[0] - first[0]} would be "
            f"{images_mib:.0f} MiB as float32; the clouds grow "
            f"{(last[4] - first[4]) / 2**20:.0f} MiB)"
        )


if __name__ == "__main__":
    main()
