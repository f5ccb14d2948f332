"""The viewer stays responsive while views appear or change; reopening and switching are fast.

A 10 ms QTimer on the main thread records the gaps between its ticks: the
longest gap is the longest time the GUI could not react. The targets (issue 7):
no main-thread stall over 250 ms while views appear or change, a saved analysis
reopened to its views within 3 s, an explorer layer switch within 1 s. The
figures are printed (run with ``-s``). They are asserted against the targets
scaled by how busy the machine is (the 1-minute load average per CPU, at least
1): on a quiet machine the targets themselves, on a shared 2-core machine
running four other jobs proportionally more, so the test measures the plugin,
not its neighbours.
"""

from __future__ import annotations

import os
import time

import numpy as np
from conftest import TickRecorder, digits_analysis, dock_analysis, dock_explorer

from napari_topolens.ui.state import state_for
from napari_topolens.ui.views import canvas_for, find_layers

STALL_TARGET_S = 0.25
#: Longest stall accepted while the worker computes (the worker's own bound, issue 6).
COMPUTING_STALL_S = 0.5
#: Reopening: napari calls a reader synchronously on the main thread, so reading the
#: saved arrays (``load_analysis``, checksums included) is one stall before the first
#: layer; the views after it come one per event-loop turn. Bounded apart, and reported.
READER_STALL_S = 0.5
REOPEN_TARGET_S = 3.0
SWITCH_TARGET_S = 1.0


def busy_factor() -> float:
    """How many times busier than one job per CPU the machine is now (at least 1)."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - no load average on this platform
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def test_viewer_stays_responsive_while_analysing_and_showing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-topolens", "shapes")
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: shapes"
    widget.load_model()
    widget.sampling.value = "all_positions"
    widget.max_points.value = 2000

    inserted: list[float] = []
    viewer.layers.events.inserted.connect(lambda _event: inserted.append(time.perf_counter()))
    canvas = canvas_for(viewer)
    canvas.model.layers.events.inserted.connect(lambda _event: inserted.append(time.perf_counter()))

    recorder = TickRecorder()
    recorder.start()
    started = time.perf_counter()
    worker = widget.run()
    assert worker is not None, widget.status.value
    with qtbot.waitSignal(worker.finished, timeout=300_000):
        pass
    finished = time.perf_counter()
    recorder.stop()

    assert widget.analysis is not None, widget.status.value
    views = find_layers(viewer, view="mapper_nodes")
    assert len(views) == 1 and views[0] in widget.layers_added  # shown when the worker ends
    inserted.sort()
    first, last = inserted[0], inserted[-1]
    computing = first - started
    stall_computing = recorder.longest_gap(until=first)
    stall_showing = recorder.longest_gap(since=first, until=finished)
    ticks_computing = recorder.count(started, first)
    ticks_showing = recorder.count(first, last)
    busy = busy_factor()
    print(
        f"\nresponsiveness: computed {computing:.2f} s in the worker, longest stall meanwhile "
        f"{1000 * stall_computing:.0f} ms ({ticks_computing} ticks); {len(inserted)} layers "
        f"added over {last - first:.2f} s with {ticks_showing} ticks between, longest stall "
        f"while the views appeared {1000 * stall_showing:.0f} ms (target "
        f"{1000 * STALL_TARGET_S:.0f} ms x busy factor {busy:.1f})"
    )
    assert (
        len(inserted) <= 12
    )  # fewer layers: 3 in the image viewer, the visible view's in the canvas
    assert ticks_computing >= max(3, 0.25 * computing / 0.010 / busy)
    assert ticks_showing >= (len(inserted) - 1) // 2  # not all added in one main-thread call
    assert stall_computing < COMPUTING_STALL_S * busy
    assert stall_showing < STALL_TARGET_S * busy


def test_reopening_a_saved_analysis_and_switching_layers_are_fast(
    make_napari_viewer, qtbot, tmp_path
):
    from napari_topolens.layout import mapper as layout_module
    from napari_topolens.topology import analysis as analysis_module

    _images, analysis = digits_analysis(200, layers=("pool1", "pool2", "fc1"), with_images=True)
    analysis.save(tmp_path / "run.topolens")

    def refuse(*_args, **_kwargs):
        raise AssertionError("reopening must not recompute the analysis or its layouts")

    viewer = make_napari_viewer()
    explorer = dock_explorer(viewer)
    state = state_for(viewer)
    shown: list[float] = []
    state.shown.connect(lambda _key: shown.append(time.perf_counter()))
    recorder = TickRecorder()
    recorder.start()
    qtbot.wait(50)
    original = analysis_module.iter_analyze, layout_module.mapper_layout
    analysis_module.iter_analyze, layout_module.mapper_layout = refuse, refuse
    try:
        started = time.perf_counter()
        viewer.open(str(tmp_path / "run.topolens"), plugin="napari-topolens")
        qtbot.waitUntil(lambda: bool(shown), timeout=60_000)
    finally:
        analysis_module.iter_analyze, layout_module.mapper_layout = original
    reopen = shown[0] - started
    stall_reopen = recorder.longest_gap(since=started, until=shown[0])
    (key,) = state.keys
    assert state.get(key).network_layer == "fc1"

    # an explorer layer switch, updated in place one layer per event-loop turn
    qtbot.waitUntil(lambda: explorer.layer.value == "fc1", timeout=10_000)
    started = time.perf_counter()
    explorer.layer.value = "pool1"
    show = explorer.pending_show
    qtbot.waitUntil(lambda: show.done, timeout=60_000)
    switch = time.perf_counter() - started
    stall_switch = recorder.longest_gap(since=started, until=time.perf_counter())
    # and a view picked in the canvas (its layers made on first pick, then reused)
    canvas = canvas_for(viewer)
    started = time.perf_counter()
    canvas.show_panel("barcode")
    qtbot.wait(1)
    pick = time.perf_counter() - started
    recorder.stop()
    busy = busy_factor()
    print(
        f"\nreopen to views {reopen:.2f} s (target {REOPEN_TARGET_S:.0f} s), longest stall "
        f"{1000 * stall_reopen:.0f} ms; explorer switch fc1 -> pool1 {1000 * switch:.0f} ms "
        f"(target {1000 * SWITCH_TARGET_S:.0f} ms) over {len(show.layers)} layers, longest "
        f"stall {1000 * stall_switch:.0f} ms (target {1000 * STALL_TARGET_S:.0f} ms); first "
        f"pick of the barcode view {1000 * pick:.0f} ms; busy factor {busy:.1f}"
    )
    assert state.get(key).network_layer == "pool1"
    assert np.array_equal(
        state.get(key).layers["mapper_nodes"].data, analysis["pool1"].mapper_layout
    )
    assert reopen < REOPEN_TARGET_S * busy
    assert switch < SWITCH_TARGET_S * busy
    assert stall_reopen < READER_STALL_S * busy
    assert stall_switch < STALL_TARGET_S * busy
