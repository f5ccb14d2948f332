"""CPU vs GPU, side by side: the exact H0 tree and activation extraction, in < 5 minutes.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_gpu.py [--budget 270] [--h0-sizes 2000,10000,30000,60000,100000]

Unattended: every case runs in its own interpreter (so peak memory is that case's)
with a hard time budget for the whole script (``--budget`` seconds, default 270): a
case is started only when its time, estimated from the previous size, fits in what
is left, and is killed at the budget. Cases:

* **H0**: ``compute_persistence(x, max_dim=0, device=...)`` on a Gaussian cloud
  (seed 0, 64 dimensions) — the exact route (Borůvka tree, ``topology/mst.py``);
  ``cpu`` is ``device=None`` (numpy, what a user gets by default), ``cuda`` puts the
  distance blocks on the GPU. The diagrams must be equal (``rtol=1e-12``).
* **extract**: ``extract_activations(..., device=...)`` — the shapes sample model on
  256 images of 48 x 48 (pooled, every conv stage), and a two-conv net on 2 images of
  2048 x 2048 (top_norm). The points must agree to ``rtol=1e-4, atol=1e-5`` (TF32 is
  switched off in the child so that float32 is float32 on both), positions and
  receptive fields exactly.

Without CUDA one line says so and the CPU half runs alone (the GPU columns are
``–``). Prints: case, CPU s, GPU s, CPU/GPU ratio, peak host RSS and peak GPU
memory, whether the results agree, and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
kind, size, device, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
device = None if device == "none" else device
if device is not None and device.startswith("cuda"):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.cuda.reset_peak_memory_stats()
if kind == "h0":
    from napari_topolens.topology.persistence import compute_persistence
    x = np.random.default_rng(0).standard_normal((size, 64))
    compute_persistence(x[:300], max_dim=0, device=device)  # imports and warm-up
    start = time.perf_counter()
    result = compute_persistence(x, max_dim=0, device=device)
    seconds = time.perf_counter() - start
    np.save(out, result.diagrams[0])
else:
    from torch import nn
    from napari_topolens import extract_activations, sample_models
    torch.manual_seed(0)
    if kind == "extract-shapes":
        model = sample_models.shapes_cnn()
        images = np.random.default_rng(0).random((size, 48, 48), dtype=np.float32)
        layers, sampling = ["relu1", "relu2", "relu3"], "pooled"
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        ).eval()
        images = np.random.default_rng(0).random((2, size, size), dtype=np.float32)
        layers, sampling = ["0", "2"], "top_norm"
    extract_activations(model, images[:1, :64, :64], layers, sampling=sampling, device=device)
    start = time.perf_counter()
    clouds = extract_activations(model, images, layers, sampling=sampling, device=device)
    seconds = time.perf_counter() - start
    np.savez(out, **{
        f"{name}.{field}": getattr(clouds[name], field)
        for name in layers
        for field in ("points", "image_index", "receptive_field")
    })
gpu = torch.cuda.max_memory_allocated() / 2**20 if device and device.startswith("cuda") else None
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rss_mb": rss, "gpu_mb": gpu}))
"""


def run(kind: str, size: int, device: str, out: Path, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, kind, str(size), device, str(out)],
            capture_output=True,
            text=True,
            timeout=max(1.0, timeout),
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped at the budget ({timeout:.0f} s left)"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:160]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def agree(kind: str, cpu: Path, gpu: Path) -> str:
    if kind == "h0":
        a, b = np.load(cpu), np.load(gpu)
        same = a.shape == b.shape and np.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)
        return "yes" if same else "NO: H0 diagrams differ"
    a, b = np.load(cpu), np.load(gpu)
    worst = 0.0
    for key in a.files:
        if key.endswith(".points"):
            if not np.allclose(a[key], b[key], rtol=1e-4, atol=1e-5):
                return f"NO: {key} differ (max {np.abs(a[key] - b[key]).max():.2g})"
            worst = max(worst, float(np.abs(a[key] - b[key]).max(initial=0.0)))
        elif not np.array_equal(a[key], b[key]):
            return f"NO: {key} differ"
    return f"yes (max abs diff {worst:.1g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for everything")
    parser.add_argument("--h0-sizes", default="2000,10000,30000,60000,100000")
    parser.add_argument(
        "--device",
        default="cuda",
        help="the second column's device (default cuda; 'cpu' exercises the comparison here)",
    )
    args = parser.parse_args()
    started = time.perf_counter()

    import torch

    cuda = torch.cuda.is_available() or args.device != "cuda"
    if args.device != "cuda":
        print(f"second column: device={args.device!r} (not a GPU: checks the script itself)")
    elif cuda:
        print(f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.version.cuda}")
    else:
        print(
            f"CUDA is not available (torch {torch.__version__}): running the CPU half only; "
            "the GPU columns stay empty"
        )
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}, "
          f"budget {args.budget:.0f} s", flush=True)  # fmt: skip
    # the fixed-size extraction cases first, then H0 by growing size while the budget lasts
    cases = [("extract-shapes", 256), ("extract-2conv", 2048)]
    cases += [("h0", int(s)) for s in args.h0_sizes.split(",")]
    devices = {"h0": ("none", args.device)}
    rows = []
    last: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind, size in cases:
            left = args.budget - (time.perf_counter() - started)
            if kind in last:  # estimate from the previous size: H0 grows about as N²
                n0, s0 = last[kind]
                estimate = s0 * (size / n0) ** 2 * (2 if cuda else 1) + 10
                if estimate > left:
                    rows.append(
                        (kind, size, None, None, f"skipped: ~{estimate:.0f} s > {left:.0f} s left")
                    )
                    continue
            results = {}
            for side, device in zip(("first", "second"), devices.get(kind, ("cpu", args.device))):
                if side == "second" and not cuda:
                    continue
                left = args.budget - (time.perf_counter() - started)
                out = Path(folder) / f"{kind}-{size}-{side}{'.npy' if kind == 'h0' else '.npz'}"
                results[side] = (run(kind, size, device, out, left), out)
            cpu, cpu_out = results["first"]
            gpu, gpu_out = results.get("second", ({}, None))
            if "seconds" in cpu:
                last[kind] = (size, cpu["seconds"])
            note = cpu.get("error") or gpu.get("error") or ""
            if not note and gpu_out is not None:
                note = agree(kind, cpu_out, gpu_out)
            rows.append((kind, size, cpu, gpu if cuda else None, note))
            print(f"  {kind} {size}: cpu {cpu.get('seconds', '-')}, gpu {gpu.get('seconds', '-')}"
                  f" {note}", flush=True)  # fmt: skip

    def cell(value: float | None, form: str) -> str:
        return "–" if value is None else format(value, form)

    print()
    print("| case | size | CPU s | GPU s | CPU / GPU | CPU peak RSS MiB | GPU peak RSS MiB "
          "| GPU peak alloc MiB | agree |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for kind, size, cpu, gpu, note in rows:
        cpu, gpu = cpu or {}, gpu or {}
        c, g = cpu.get("seconds"), gpu.get("seconds")
        ratio = c / g if c and g else None
        label = {"h0": "H0 (N x 64)", "extract-shapes": "extract shapes_cnn 48² pooled (images)",
                 "extract-2conv": "extract 2 x N² top_norm"}[kind]  # fmt: skip
        print(
            f"| {label} | {size:,} | {cell(c, '.2f')} | {cell(g, '.2f')} | {cell(ratio, '.1f')} "
            f"| {cell(cpu.get('rss_mb'), '.0f')} | {cell(gpu.get('rss_mb'), '.0f')} "
            f"| {cell(gpu.get('gpu_mb'), '.0f')} | {note or '–'} |"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
