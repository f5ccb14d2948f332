"""Time the topology canvas: reopening a saved analysis to its views, a layer switch, a view pick.

Run from the repository root (needs a display, e.g. ``xvfb-run``)::

    PYTHONPATH=src python benchmarks/bench_views.py [--images 200]

Prints, for an analysis of the digits sample (pool1, pool2, fc1): the time from
``viewer.open`` of the saved folder to its views shown (targets: 3 s), an
explorer-style network-layer switch (target: 1 s) and the first pick of a view,
each with the longest main-thread stall (target: 250 ms). The baseline, measured
in the same run, is adding one empty Points layer to a napari canvas (the unit
cost every shown layer pays); the figures are quoted as multiples of it too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args(argv)

    import napari
    from conftest import TickRecorder, digits_analysis
    from qtpy.QtWidgets import QApplication

    from napari_topolens.ui.state import state_for
    from napari_topolens.ui.views import canvas_for, show_analysis_incrementally

    def wait(condition, timeout=120.0):
        start = time.perf_counter()
        while not condition():
            QApplication.processEvents()
            if time.perf_counter() - start > timeout:
                raise TimeoutError
        return time.perf_counter()

    _, analysis = digits_analysis(args.images, layers=("pool1", "pool2", "fc1"), with_images=True)
    with tempfile.TemporaryDirectory() as tmp:
        analysis.save(Path(tmp) / "run.topolens")
        viewer = napari.Viewer(show=True)
        viewer.window.resize(1280, 800)
        canvas_for(viewer)
        wait(lambda: True)
        started = time.perf_counter()
        canvas_for(viewer).model.add_points(np.zeros((0, 2)), name="baseline")
        baseline = time.perf_counter() - started
        canvas_for(viewer).model.layers.clear()

        state = state_for(viewer)
        shown: list[float] = []
        state.shown.connect(lambda _key: shown.append(time.perf_counter()))
        recorder = TickRecorder()
        recorder.start()
        started = time.perf_counter()
        viewer.open(str(Path(tmp) / "run.topolens"), plugin="napari-topolens")
        end = wait(lambda: bool(shown))
        reopen, reopen_stall = end - started, recorder.longest_gap(since=started, until=end)

        key = state.keys[0]
        started = time.perf_counter()
        show = show_analysis_incrementally(viewer, state.get(key).analysis, "pool1")
        end = wait(lambda: show.done)
        switch, switch_stall = end - started, recorder.longest_gap(since=started, until=end)

        started = time.perf_counter()
        canvas_for(viewer).show_panel("flow")
        end = wait(lambda: True)
        pick = end - started
        recorder.stop()
        viewer.close()
    print(f"baseline: one empty Points layer added to the canvas {1000 * baseline:.0f} ms")
    for name, seconds, stall, target in (
        ("reopen to views", reopen, reopen_stall, 3.0),
        ("network-layer switch", switch, switch_stall, 1.0),
        ("first pick of the flow view", pick, pick, 1.0),
    ):
        print(
            f"{name}: {seconds:.2f} s (target {target:.0f} s; {seconds / baseline:.1f}x baseline), "
            f"longest stall {1000 * stall:.0f} ms (target 250 ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
