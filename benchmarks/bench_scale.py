"""The whole ``report`` on 20,000 shapes-sized images read lazily from a ``.zarr`` store.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_scale.py [--n-images 20000] [--max-points 100000]
        [--workdir DIR] [--skip-cluster]

It draws ``--n-images`` 48x48 shapes with the generator of the shipped sample
(``sample_data/make_samples.py``), writes them to ``WORKDIR/shapes.zarr`` batch by
batch, and runs ``napari-topolens report`` with the shapes sample model on them,
``--sampling all_positions --max-points 100000``, each run in a fresh interpreter:

* ``plain``: in-process, no cache (the baseline of every ratio);
* ``cache cold``: in-process, an empty ``--cache`` (extraction + writing the cache);
* ``cache warm``: the same cache and other topology parameters (``--lens pca1``);
* ``cluster``: ``--scheduler`` on a ``LocalCluster`` with 2 worker processes on
  loopback (extraction batches and per-layer topology as Dask tasks), no cache.

For each it prints the wall time, the peak RSS of the command (and of each Dask
worker), and the time per stage: extraction (loading the model, reading the images,
fingerprinting, the forward passes, the cache), each analysis step summed over the
layers, and the rest (interpreter start, report page, saving).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_store(path: Path, n_images: int, chunk: int = 1000) -> float:
    """Draw the shapes and write them (float32 in [0, 1]) and their labels to ``path``."""
    import numpy as np
    import zarr

    sys.path.insert(0, str(ROOT / "sample_data"))
    from make_samples import generate_shapes

    if (path / "zarr.json").exists():
        group = zarr.open_group(str(path), mode="r")
        if group["images"].shape[0] == n_images:
            return 0.0
    start = time.perf_counter()
    group = zarr.open_group(str(path), mode="w")
    images = group.create_array(
        "images", shape=(n_images, 48, 48), dtype="float32", chunks=(512, 48, 48)
    )
    labels = group.create_array("labels", shape=(n_images,), dtype="int64", chunks=(n_images,))
    # generate_shapes draws images one after another from one generator: draw in
    # chunks with distinct seeds so memory stays bounded
    all_labels = np.empty(n_images, dtype=np.int64)
    for first in range(0, n_images, chunk):
        count = min(chunk, n_images - first)
        pixels, codes, _ = generate_shapes(count, seed=10_000 + first)
        images[first : first + count] = pixels.astype(np.float32) / np.float32(255)
        all_labels[first : first + count] = codes
    labels[...] = all_labels
    return time.perf_counter() - start


def run_report(args: list[str]) -> tuple[float, float]:
    """Run the command in a fresh interpreter; wall seconds and its peak RSS in MiB."""
    env = dict(
        os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "napari_topolens.cli", "report", *args], env=env, cwd=ROOT
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"report failed with exit code {process.returncode}: {args}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def stages(out: Path, wall: float) -> dict[str, float]:
    from napari_topolens.topology.store import load_analysis

    analysis = load_analysis(out / "analysis")
    seconds = analysis.provenance["seconds"]
    result = {
        "loading (model, image store)": float(seconds.get("loading", 0.0)),
        "extraction": float(seconds["extraction"]),
    }
    steps: dict[str, float] = {}
    for layer in analysis.layer_results:
        for step, value in layer.seconds.items():
            steps[step] = steps.get(step, 0.0) + value
    result.update({f"  {k}": v for k, v in sorted(steps.items(), key=lambda kv: -kv[1])})
    result["analysis (all, incl. cross-layer)"] = float(seconds["analysis"])
    result["rest (start, page, save)"] = wall - sum(
        float(seconds[k]) for k in ("loading", "extraction", "analysis") if k in seconds
    )
    clouds = {layer.name: layer.cloud for layer in analysis.layer_results}
    result["_points"] = {  # type: ignore[assignment]
        name: (len(c), c.meta.get("subset_note", "")) for name, c in clouds.items()
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=20_000)
    parser.add_argument("--max-points", type=int, default=100_000)
    parser.add_argument("--layers", default="pool1,pool2,pool3,fc1")
    parser.add_argument("--workdir", help="keep the store and outputs here (default: a temp dir)")
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument(
        "--analysis-max-points",
        type=int,
        help="the report's --analysis-max-points (default: the report's own, 100,000)",
    )
    parser.add_argument(
        "--runs",
        default="plain,cache cold,cache warm,cluster",
        help="which runs, comma-separated (cache warm needs cache cold before it)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "shapes.zarr"
    drawn = make_store(store, args.n_images)
    common = [
        "--model",
        "napari_topolens.sample_models:shapes_cnn",
        "--weights",
        str(ROOT / "sample_data" / "shapes_cnn.pt"),
        "--images",
        str(store),
        "--layers",
        args.layers,
        "--sampling",
        "all_positions",
        "--max-points",
        str(args.max_points),
        "--quiet",
    ]
    if args.analysis_max_points is not None:
        common += ["--analysis-max-points", str(args.analysis_max_points)]
    wanted = [name.strip() for name in args.runs.split(",")]
    cache = workdir / "cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    runs: dict[str, tuple[list[str], dict]] = {
        "plain": ([], {}),
        "cache cold": (["--cache", str(cache)], {}),
        "cache warm": (["--cache", str(cache), "--lens", "pca1"], {}),
    }
    results: dict[str, dict] = {}
    for name, (extra, _) in runs.items():
        if name not in wanted:
            continue
        out = workdir / name.replace(" ", "_")
        wall, rss = run_report([*common, *extra, "--out", str(out)])
        results[name] = {"wall": wall, "rss": rss, "stages": stages(out, wall)}
        print(f"  done: {name} {wall:.1f} s, {rss:.0f} MiB", file=sys.stderr)

    if not args.skip_cluster and "cluster" in wanted:
        from distributed import Client, LocalCluster

        with LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster:
            out = workdir / "cluster"
            wall, rss = run_report(
                [*common, "--scheduler", cluster.scheduler_address, "--out", str(out)]
            )
            with Client(cluster.scheduler_address) as client:
                workers = client.run(
                    lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                )
        results["cluster"] = {
            "wall": wall,
            "rss": rss,
            "workers": sorted(workers.values()),
            "stages": stages(out, wall),
        }

    import platform

    print(
        f"report on {args.n_images} shapes-sized images (48x48, lazy .zarr store), layers "
        f"{args.layers}, all_positions capped at {args.max_points} points per layer, "
        f"analysis cap {args.analysis_max_points or 'default'}; "
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    if drawn:
        print(f"  drawing and writing the images: {drawn:.1f} s (not part of any run)")
    first = next(iter(results))
    points = results[first]["stages"].pop("_points")
    for result in results.values():
        result["stages"].pop("_points", None)
    print("  points analysed per layer: " + "; ".join(f"{k}: {n}" for k, (n, _) in points.items()))
    note = next((n for _, n in points.values() if n), "")
    if note:
        print(f"  (analysis cap: {note})")
    names = list(results)
    print(f"  {'':36s}" + "".join(f"{n:>13s}" for n in names))
    print(
        f"  {'wall (fresh interpreter) [s]':36s}"
        + "".join(f"{results[n]['wall']:13.1f}" for n in names)
    )
    print(
        f"  {'peak RSS of the command [MiB]':36s}"
        + "".join(f"{results[n]['rss']:13.0f}" for n in names)
    )
    if "cluster" in results:
        print(
            f"  {'peak RSS of each Dask worker [MiB]':36s}"
            + "".join(f"{'':13s}" for _ in names[:-1])
            + f"{' / '.join(f'{w:.0f}' for w in results['cluster']['workers']):>13s}"
        )
    for stage in results[first]["stages"]:
        row = "".join(f"{results[n]['stages'].get(stage, float('nan')):13.1f}" for n in names)
        print(f"  {stage + ' [s]':36s}{row}")
    base = results[first]
    print(f"  ratios against {first!r} (same run):")
    for name in names[1:]:
        print(
            f"    {name:12s} extraction {results[name]['stages']['extraction'] / base['stages']['extraction']:6.2f}x"
            f"   wall {results[name]['wall'] / base['wall']:6.2f}x"
            f"   peak RSS {results[name]['rss'] / base['rss']:6.2f}x"
        )


if __name__ == "__main__":
    main()
