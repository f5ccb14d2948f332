"""Time the whole ``napari-topolens report`` on the digits sample, against a baseline checkout.

Run from the repository root::

    git worktree add ../baseline <commit>          # the code to compare with
    PYTHONPATH=src python benchmarks/bench_report.py --baseline ../baseline [--repeats 3]

Each run is the command as a user runs it, a fresh interpreter with its imports,
``python -m napari_topolens.cli report --sample digits --out ... --quiet``; this
checkout and the baseline take turns (ABBA order), so both see the same machine
load. Per run it prints the wall seconds, the CPU seconds (user + system of the
process and its threads), the peak resident memory and the 1-minute load average
before and after, and for this checkout the stage times the command prints (wall
and CPU per stage; the analysis steps summed over the layers). It ends with the
medians and the ratios this / baseline. ``--one-blas-thread`` adds the baseline
under ``OPENBLAS_NUM_THREADS=1`` (the workaround the layout's BLAS limit replaces).

Without ``--baseline`` only this checkout is timed; the ratio is then to its own
activation extraction (the work any activation tool must do), as before.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_NUMBERS = re.compile(r"^\s*(\d+\.\d+)(?:\s+(\d+\.\d+))?\s*$")


@dataclass
class Run:
    """One run of the command."""

    variant: str
    wall: float
    cpu: float
    peak_mib: float
    load_before: float
    load_after: float
    stages: dict[str, tuple[float, float | None]] = field(default_factory=dict)


def _run(variant: str, checkout: Path, out: Path, extra: list[str], env_extra: dict) -> Run:
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"), **env_extra)
    command = [sys.executable, "-m", "napari_topolens.cli", "report", "--sample", "digits"]
    command += ["--out", str(out), "--quiet", *extra]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            command, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=err
        )
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{variant}: the report failed:\n{stderr}")
    stages: dict[str, tuple[float, float | None]] = {}
    for line in stderr.splitlines():  # "name (34 characters) wall [CPU]", see cli.stage_lines
        match = _NUMBERS.match(line[34:])
        if match and line[:34].strip():
            cpu = match[2]
            stages[line[:34].rstrip()] = (float(match[1]), float(cpu) if cpu else None)
    return Run(
        variant=variant,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_mib=usage.ru_maxrss / 1024,  # kilobytes on Linux
        load_before=load_before,
        load_after=os.getloadavg()[0],
        stages=stages,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout to compare with")
    parser.add_argument("--one-blas-thread", action="store_true")
    parser.add_argument("--max-images", type=int, default=None)
    args = parser.parse_args()

    variants: list[tuple[str, Path, dict]] = [("this", ROOT, {})]
    if args.baseline is not None:
        baseline = args.baseline.resolve()
        if not (baseline / "src" / "napari_topolens").is_dir():
            raise SystemExit(f"{baseline} is not a napari-topolens checkout")
        variants.insert(0, ("baseline", baseline, {}))
        if args.one_blas_thread:
            variants.append(("baseline 1 BLAS", baseline, {"OPENBLAS_NUM_THREADS": "1"}))
    extra = ["--max-images", str(args.max_images)] if args.max_images else []
    runs: list[Run] = []
    print(
        f"napari-topolens report --sample digits{' ' + ' '.join(extra) if extra else ''}: "
        f"{os.cpu_count()} CPU cores, Python {sys.version.split()[0]}, "
        f"{args.repeats} repeats, variants in ABBA order"
    )
    print(f"{'run':>4s} {'variant':16s} {'wall s':>7s} {'CPU s':>7s} {'peak MiB':>9s} load 1-min")
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = variants if repeat % 2 == 0 else variants[::-1]
            for name, checkout, env_extra in order:
                run = _run(name, checkout, Path(tmp) / f"{len(runs)}", extra, env_extra)
                runs.append(run)
                print(
                    f"{repeat + 1:4d} {name:16s} {run.wall:7.2f} {run.cpu:7.2f} "
                    f"{run.peak_mib:9.0f} {run.load_before:.2f} -> {run.load_after:.2f}",
                    flush=True,
                )

    def median(variant: str, key: str) -> float:
        return statistics.median(getattr(r, key) for r in runs if r.variant == variant)

    print("\nmedians")
    print(f"  {'variant':16s} {'wall s':>7s} {'CPU s':>7s} {'peak MiB':>9s} {'load':>5s}")
    for name, _checkout, _env in variants:
        loads = [(r.load_before + r.load_after) / 2 for r in runs if r.variant == name]
        print(
            f"  {name:16s} {median(name, 'wall'):7.2f} {median(name, 'cpu'):7.2f} "
            f"{median(name, 'peak_mib'):9.0f} {statistics.median(loads):5.2f}"
        )
    ours = [r for r in runs if r.variant == "this"]
    names = list(dict.fromkeys(name for r in ours for name in r.stages))
    if names:
        print("\nstage times of this checkout (median of the runs; as the command prints them)")
        print(f"  {'stage':34s} {'wall s':>7s} {'CPU s':>7s}")
        for name in names:
            walls = [r.stages[name][0] for r in ours if name in r.stages]
            cpus = [
                c for r in ours if name in r.stages for c in [r.stages[name][1]] if c is not None
            ]
            cpu_text = f"{statistics.median(cpus):7.2f}" if cpus else ""
            print(f"  {name:34s} {statistics.median(walls):7.2f} {cpu_text:>7s}".rstrip())
        command_start = median("this", "wall") - statistics.median(
            r.stages["total"][0] for r in ours if "total" in r.stages
        )
        print(f"  {'(interpreter start + imports)':34s} {command_start:7.2f}")
    print()
    for name, _checkout, _env in variants:
        if name == "this":
            continue
        print(
            f"ratio this / {name}: wall {median('this', 'wall') / median(name, 'wall'):.2f}, "
            f"CPU {median('this', 'cpu') / median(name, 'cpu'):.2f}, "
            f"peak memory {median('this', 'peak_mib') / median(name, 'peak_mib'):.2f}"
        )
    extraction = [r.stages["activation extraction"][0] for r in ours if r.stages]
    if extraction:
        ratio = median("this", "wall") / statistics.median(extraction)
        print(f"ratio whole command / its activation extraction: {ratio:.1f}x")


if __name__ == "__main__":
    main()
