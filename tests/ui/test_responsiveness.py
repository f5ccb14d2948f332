"""The viewer stays responsive while an analysis runs through the widget and is shown.

A 10 ms QTimer on the main thread records the gaps between its ticks: the
longest gap is the longest time the GUI could not react. Two spans are measured:
the worker computing (until the first view layer appears) and the whole run
including the layers appearing (until the worker finishes, which it does only
when the last view layer is in and linked). The figures are printed (run with
``-s``); the bounds asserted are generous because CI machines vary (a loaded
2-core machine); the target is under 100 ms while computing. Adding one napari
layer costs about 0.1-0.4 s of main-thread time, so the layers are added one per
event-loop turn and the timer must tick between them.
"""

from __future__ import annotations

import time

from conftest import TickRecorder

from napari_topolens.ui.analysis_widget import AnalysisWidget
from napari_topolens.ui.views import find_layers

#: Longest main-thread stall accepted while the worker computes (target: 100 ms).
STALL_BOUND_S = 0.5
#: Longest stall accepted over the whole run, the layers appearing included.
WHOLE_RUN_BOUND_S = 1.0


def test_viewer_stays_responsive_while_analysing_and_showing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-topolens", "shapes")
    widget = AnalysisWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Topology analysis")
    widget.model_source.value = "sample: shapes"
    widget.load_model()
    widget.sampling.value = "all_positions"
    widget.max_points.value = 2000

    inserted: list[float] = []
    viewer.layers.events.inserted.connect(lambda _event: inserted.append(time.perf_counter()))

    idle = TickRecorder()
    idle.start()
    qtbot.wait(500)
    idle.stop()

    recorder = TickRecorder()
    recorder.start()
    started = time.perf_counter()
    worker = widget.run()
    assert worker is not None, widget.status.value
    with qtbot.waitSignal(worker.finished, timeout=180_000):
        pass
    finished = time.perf_counter()
    recorder.stop()

    assert widget.analysis is not None, widget.status.value
    views = find_layers(viewer, view="mapper_nodes")
    assert len(views) == 1 and views[0] in widget.layers_added  # shown by the time the worker ends
    assert len(inserted) == len(widget.layers_added) >= 15
    first, last = inserted[0], inserted[-1]
    computing = first - started
    stall_computing = recorder.longest_gap(until=first)
    stall_whole = recorder.longest_gap(until=finished)
    stall_showing = recorder.longest_gap(since=first, until=finished)
    ticks_computing = recorder.count(started, first)
    ticks_showing = recorder.count(first, last)
    print(
        f"\nresponsiveness: analysis computed for {computing:.2f} s in the worker, "
        f"longest main-thread stall meanwhile {1000 * stall_computing:.0f} ms "
        f"({ticks_computing} ticks of 10 ms); {len(inserted)} layers added over "
        f"{last - first:.2f} s with {ticks_showing} ticks in between, longest stall while "
        f"showing {1000 * stall_showing:.0f} ms; longest stall over the whole run "
        f"{1000 * stall_whole:.0f} ms (idle timer's longest gap {1000 * idle.longest_gap():.0f} ms)"
    )
    # the timer kept ticking through the computation, not just before and after it
    assert ticks_computing >= max(3, 0.25 * computing / 0.010)
    # and between the layers: they were not all added in one main-thread call
    assert ticks_showing >= (len(inserted) - 1) // 2
    assert stall_computing < STALL_BOUND_S
    assert stall_whole < WHOLE_RUN_BOUND_S
