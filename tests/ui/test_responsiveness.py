"""The viewer stays responsive while an analysis runs through the widget.

A 10 ms QTimer on the main thread records the gaps between its ticks: while the
worker computes, the longest gap is the longest time the GUI could not react.
The layers are built on the main thread once the result is back; that time is
measured separately (it is one step, not a stall during the computation).
The figures are printed (run with ``-s``); the bound asserted is generous
because CI machines vary; the target is under 100 ms.
"""

from __future__ import annotations

import time

import numpy as np

from napari_topolens.ui import views
from napari_topolens.ui.analysis_widget import AnalysisWidget

#: Longest main-thread stall accepted while the worker runs (target: 100 ms).
STALL_BOUND_S = 0.5


class TickRecorder:
    """Times of the ticks of a 10 ms QTimer."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks.append(time.perf_counter())
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def longest_gap(self, until: float = np.inf) -> float:
        ticks = np.array([t for t in self.ticks if t <= until])
        return float(np.diff(ticks).max()) if len(ticks) > 1 else float("nan")


def test_viewer_stays_responsive_while_analysing(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-topolens", "shapes")
    widget = AnalysisWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Topology analysis")
    widget.model_source.value = "sample: shapes"
    widget.load_model()
    widget.sampling.value = "all_positions"
    widget.max_points.value = 2000

    shown: dict[str, float] = {}
    real_show = views.show_analysis

    def timed_show(*args, **kwargs):
        shown["start"] = time.perf_counter()
        try:
            return real_show(*args, **kwargs)
        finally:
            shown["end"] = time.perf_counter()

    monkeypatch.setattr(views, "show_analysis", timed_show)

    idle = TickRecorder()
    idle.start()
    qtbot.wait(500)
    idle.stop()

    recorder = TickRecorder()
    recorder.start()
    started = time.perf_counter()
    worker = widget.run()
    assert worker is not None, widget.status.value
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    recorder.stop()

    assert widget.analysis is not None, widget.status.value
    assert "start" in shown, "the analysis was not shown through views.show_analysis"
    computing = shown["start"] - started
    stall = recorder.longest_gap(until=shown["start"])
    ticks_while_computing = sum(1 for t in recorder.ticks if started <= t <= shown["start"])
    print(
        f"\nresponsiveness: analysis computed for {computing:.2f} s in the worker; "
        f"longest main-thread stall meanwhile {1000 * stall:.0f} ms "
        f"({ticks_while_computing} timer ticks of 10 ms); idle timer's longest gap "
        f"{1000 * idle.longest_gap():.0f} ms; building the layers on the main thread "
        f"afterwards took {1000 * (shown['end'] - shown['start']):.0f} ms"
    )
    # the timer kept ticking through the computation, not just before and after it
    assert ticks_while_computing >= max(3, 0.25 * computing / 0.010)
    assert stall < STALL_BOUND_S
