"""Peak memory of activation extraction on big images, per sampling mode.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_memory.py [--modes pooled,top_norm] [--cases 1x2048,3x1024]

Each case (one 2048x2048 image; three 1024x1024 images) goes through a two-conv
net (both conv layers extracted) in each sampling mode, in a fresh subprocess
whose peak resident memory (``ru_maxrss``) is reported with the wall time, the
receptive-field route and its probe passes. The baseline, measured in the same run
and also in a fresh subprocess, is one plain forward pass of the same images
through the same net under ``torch.no_grad()`` (the least any activation tool
must hold); each case is quoted as a ratio to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("pooled", "random_position", "top_norm", "all_positions")

_CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
from torch import nn

n, size, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
    nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
).eval()
images = np.random.default_rng(0).random((n, size, size), dtype=np.float32)
start = time.perf_counter()
info = {}
if mode == "baseline":
    with torch.no_grad():
        model(torch.from_numpy(images[:, None]))
else:
    from napari_topolens import extract_activations
    clouds = extract_activations(model, images, ["0", "2"], sampling=mode, seed=0)
    info = {
        name: [len(c), c.meta["receptive_field_method"], c.meta["receptive_field_probe_passes"]]
        for name, c in clouds.items()
    }
seconds = time.perf_counter() - start
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": seconds, "layers": info}))
"""


def _run(n: int, size: int, mode: str) -> dict:
    env = dict(
        os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n), str(size), mode],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if done.returncode != 0:
        return {
            "error": done.stderr.strip().splitlines()[-1],
            "wall": time.perf_counter() - started,
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cases", default="1x2048,3x1024")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for case in args.cases.split(","):
        n, size = (int(v) for v in case.split("x"))
        base = _run(n, size, "baseline")
        print(
            f"\n{n} x {size}x{size} image(s); baseline (one plain forward): "
            f"{base['peak_mib']:.0f} MiB peak, {base['seconds']:.2f} s"
        )
        print(f"{'sampling':<16} {'peak MiB':>9} {'x base':>7} {'seconds':>8}  receptive fields")
        for mode in modes:
            result = _run(n, size, mode)
            if "error" in result:
                print(f"{mode:<16} refused: {result['error']}")
                continue
            fields = "; ".join(
                f"{name}: {points} pts, {method}, {passes} passes"
                for name, (points, method, passes) in result["layers"].items()
            )
            print(
                f"{mode:<16} {result['peak_mib']:9.0f} {result['peak_mib'] / base['peak_mib']:7.2f} "
                f"{result['seconds']:8.1f}  {fields}",
                flush=True,
            )


if __name__ == "__main__":
    main()
