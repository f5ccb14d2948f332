"""The views' work runs off the main thread; stale results are dropped; cancel and close are safe.

What these tests check is where work runs and what a user ends up seeing, never
how long it takes (``benchmarks/bench_responsiveness.py`` measures that).

The analysis is shown with ``show_analysis`` / ``show_analysis_incrementally`` and
the explorer is built from its class with the real viewer: what is tested is the
show's worker, not how a docked widget finds its viewer (the journey tests dock
them through napari's menus).
"""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
from conftest import digits_analysis, spy_on_threads

from napari_topolens.ui import collector
from napari_topolens.ui import io as io_module
from napari_topolens.ui import show as show_module
from napari_topolens.ui import view_data as vd
from napari_topolens.ui.explorer_widget import ExplorerWidget
from napari_topolens.ui.state import state_for
from napari_topolens.ui.views import (
    canvas_for,
    find_layers,
    remove_analysis,
    show_analysis,
    show_analysis_incrementally,
)


@pytest.fixture(scope="module")
def digits():
    return digits_analysis(60, layers=("pool1", "pool2", "fc1"), with_images=True)


class Gate:
    """Holds the patched builders in their worker thread while closed (a result in flight)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()

    def close(self) -> None:
        self.open.clear()

    def release(self) -> None:
        self.open.set()

    def pass_through(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            assert self.open.wait(60), "the test never released the gate"


def _hold_reads(monkeypatch) -> Gate:
    """A closed gate that holds the reader's ``load_analysis`` in its worker until released."""
    gate = Gate()
    gate.close()
    load = io_module.load_analysis

    def held_load(path):
        gate.pass_through()
        return load(path)

    monkeypatch.setattr(io_module, "load_analysis", held_load)
    return gate


def _record_threads(monkeypatch, gate: Gate | None = None) -> list[bool]:
    """Patch the pure builders and the layer maker to record whether they ran on the main
    thread (True) or not; a closed ``gate`` holds them in their worker."""
    calls: list[bool] = []
    group_layer_data, create_layer = vd.group_layer_data, show_module.create_layer
    gate = gate or Gate()

    def builder(*args, **kwargs):
        calls.append(threading.current_thread() is threading.main_thread())
        gate.pass_through()
        return group_layer_data(*args, **kwargs)

    def maker(item):
        calls.append(threading.current_thread() is threading.main_thread())
        gate.pass_through()
        return create_layer(item)

    monkeypatch.setattr(vd, "group_layer_data", builder)
    monkeypatch.setattr(show_module, "create_layer", maker)
    return calls


def _canvas_layer_names(viewer) -> set[str]:
    return {
        layer.metadata["topolens"].get("layer", "")
        for layer in canvas_for(viewer).model.layers
        if layer.metadata["topolens"]["view"] not in vd.PANEL_LAYERS
        and vd.group_of_view(layer.metadata["topolens"]["view"]) != "matrices"
    }


@pytest.mark.slow
def test_a_show_makes_its_layer_data_and_layers_in_a_worker_thread(
    make_napari_viewer, qtbot, digits, monkeypatch
):
    _images, analysis = digits
    viewer = make_napari_viewer()
    calls = _record_threads(monkeypatch)
    monkeypatch.setattr(collector, "RESUME_AFTER_MS", 50)
    show = show_analysis_incrementally(viewer, analysis, "fc1")
    # no full garbage collection (a stall of 0.2-0.45 s) while it adds layers
    assert gc.get_threshold()[2] == collector.OUT_OF_REACH and collector.is_paused()
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    assert show.error is None and not show.cancelled
    # allowed again once idle
    qtbot.waitUntil(lambda: gc.get_threshold()[2] != collector.OUT_OF_REACH, timeout=30_000)
    assert len(find_layers(viewer, view="mapper_nodes")) == 1
    assert calls and not any(calls)  # every builder call and every layer made off the main thread
    # the image side too: images, overlay and gallery were made off the main thread
    assert find_layers(viewer, view="images") and find_layers(viewer, view="gallery")

    # and scripts still get everything at once, made inline
    calls.clear()
    other = make_napari_viewer()
    show_analysis(other, analysis, "pool1")
    assert len(find_layers(other, view="mapper_nodes")) == 1 and calls and all(calls)


def test_switching_twice_fast_drops_the_stale_switch(
    make_napari_viewer, qtbot, digits, monkeypatch
):
    _images, analysis = digits
    viewer = make_napari_viewer()
    explorer = ExplorerWidget(viewer)
    viewer.window.add_dock_widget(explorer, name="Topology explorer")
    show = show_analysis_incrementally(viewer, analysis, "fc1")
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    qtbot.waitUntil(lambda: explorer.layer.value == "fc1", timeout=10_000)
    (key,) = state_for(viewer).keys
    gate = Gate()
    _record_threads(monkeypatch, gate)

    gate.close()
    explorer.layer.value = "pool1"
    first = explorer.pending_show
    qtbot.waitUntil(lambda: first.worker is not None, timeout=10_000)
    stale = first.worker  # its layer data are being made in a worker now
    explorer.layer.value = "pool2"  # before they come back
    second = explorer.pending_show
    assert second is not first and first.cancelled
    with qtbot.waitSignal(stale.finished, timeout=60_000):
        gate.release()
    qtbot.waitUntil(lambda: second.done, timeout=120_000)
    qtbot.wait(50)
    entry = state_for(viewer).get(key)
    assert entry.network_layer == "pool2" and explorer.layer.value == "pool2"
    assert first.layers == []  # the stale result put nothing in
    assert np.array_equal(entry.layers["mapper_nodes"].data, analysis["pool2"].mapper_layout)
    assert _canvas_layer_names(viewer) == {"pool2"}  # no view of pool1 anywhere


def test_a_picked_view_is_made_in_a_worker_and_the_newest_pick_wins(
    make_napari_viewer, qtbot, digits, monkeypatch
):
    _images, analysis = digits
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis, "fc1")
    (key,) = state_for(viewer).keys
    entry = state_for(viewer).get(key)
    canvas = canvas_for(viewer)
    gate = Gate()
    calls = _record_threads(monkeypatch, gate)

    gate.close()
    canvas.picker.setCurrentIndex(canvas.picker.findData("flow"))  # as the user picks it
    flow = canvas.panel_builder.pending[key]
    qtbot.waitUntil(lambda: flow.worker is not None, timeout=10_000)
    stale = flow.worker
    canvas.picker.setCurrentIndex(canvas.picker.findData("dendrogram"))  # changed their mind
    dendrogram = canvas.panel_builder.pending[key]
    assert flow.cancelled and dendrogram is not flow
    with qtbot.waitSignal(stale.finished, timeout=60_000):
        gate.release()
    qtbot.waitUntil(lambda: dendrogram.done, timeout=120_000)
    qtbot.wait(50)
    assert calls and not any(calls)
    assert "dendrogram_heatmap" in entry.layers and entry.layers["dendrogram_heatmap"].visible
    assert "flow" not in entry.layers and "flow_clusters" not in entry.layers  # dropped
    assert state_for(viewer).panel == "dendrogram"

    # picked again, it is made then
    canvas.picker.setCurrentIndex(canvas.picker.findData("flow"))
    again = canvas.panel_builder.pending[key]
    qtbot.waitUntil(lambda: again.done, timeout=120_000)
    assert "flow" in entry.layers and entry.layers["flow"].visible
    assert not entry.layers["dendrogram_heatmap"].visible


@pytest.mark.slow
def test_cancel_or_close_while_a_worker_is_in_flight_leaves_nothing_behind(
    make_napari_viewer, qtbot, digits, monkeypatch
):
    _images, analysis = digits
    viewer = make_napari_viewer()
    gate = Gate()
    _record_threads(monkeypatch, gate)
    n_before = len(viewer.layers)
    gate.close()
    show = show_analysis_incrementally(viewer, analysis, "fc1")
    qtbot.waitUntil(lambda: show.worker is not None, timeout=10_000)
    worker = show.worker
    show.cancel()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        gate.release()
    qtbot.wait(50)
    assert len(viewer.layers) == n_before and not find_layers(viewer)
    assert state_for(viewer).keys == []

    # shown again, then its image layer removed while a picked view is being made
    show = show_analysis_incrementally(viewer, analysis, "fc1")
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    (key,) = state_for(viewer).keys
    canvas = canvas_for(viewer)
    gate.close()
    canvas.picker.setCurrentIndex(canvas.picker.findData("barcode"))
    pick = canvas.panel_builder.pending[key]
    qtbot.waitUntil(lambda: pick.worker is not None, timeout=10_000)
    worker = pick.worker
    remove_analysis(viewer, key)  # e.g. the user removes the analysis from the canvas
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        gate.release()
    qtbot.wait(50)
    assert pick.cancelled and state_for(viewer).keys == []
    assert list(canvas.model.layers) == []
    assert not [
        layer for layer in find_layers(viewer) if layer.metadata["topolens"]["view"] != "images"
    ]
    # and the viewer still works: the analysis shows again (in the view picked last)
    show_analysis(viewer, analysis, "pool1")
    assert len(find_layers(viewer, view="barcode")) == 1 and not pick.layers


def test_the_reader_returns_at_once_and_fills_in_from_a_worker(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    threads = spy_on_threads(monkeypatch, io_module, "load_analysis")
    viewer = make_napari_viewer()
    assert viewer.open(str(folder), plugin="napari-topolens") == []  # nothing yet
    assert not find_layers(viewer)
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery")) == 1, timeout=120_000)
    assert threads == [False]  # read in a worker
    (images,) = find_layers(viewer, view="images")
    assert images.metadata["topolens"]["analysis"].layers == analysis.layers
    assert np.array_equal(images.data, analysis.images)

    # a damaged file: one message, nothing added
    from napari.utils.notifications import notification_manager

    messages: list[str] = []
    notification_manager.notification_ready.connect(lambda n: messages.append(str(n.message)))
    arrays = folder / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:100])
    other = make_napari_viewer()
    assert other.open(str(folder), plugin="napari-topolens") == []
    qtbot.waitUntil(lambda: bool(messages), timeout=60_000)
    assert "could not open 'run.topolens'" in messages[0] and "truncated" in messages[0]
    assert not find_layers(other)
    # nor a canvas: only a file read makes one
    from napari_topolens.ui.canvas import existing_canvas

    qtbot.wait(300)
    assert existing_canvas(other) is None


def test_the_file_is_read_once_the_canvas_and_its_first_text_are_drawn(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # the reader's worker and the main thread share one GIL: a canvas made while the
    # file was read froze the viewer twice as long as on its own (benchmarks/README.md,
    # the eighth session's figures); so the worker reads once the canvas is docked and
    # its first text drawn, and the glyphs drawn after that overlap the read
    from napari_topolens.ui.canvas import existing_canvas
    from napari_topolens.ui.glyphs import warmer_of

    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    viewer = make_napari_viewer(show=True)
    at_read: list[tuple[bool, int]] = []
    load = io_module.load_analysis

    def spied(path):
        canvas = existing_canvas(viewer)
        warmer = warmer_of(canvas.model) if canvas is not None else None
        at_read.append((canvas is not None and canvas.docked, len(warmer.drawn) if warmer else 0))
        return load(path)

    monkeypatch.setattr(io_module, "load_analysis", spied)
    assert viewer.open(str(folder), plugin="napari-topolens") == []
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery")) == 1, timeout=120_000)
    assert len(at_read) == 1
    docked, drawn = at_read[0]
    assert docked and drawn >= 1


def test_the_read_waits_for_the_canvas_no_longer_than_its_hold(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # a canvas that never comes (closed meanwhile, a main thread that never turns) holds
    # the read up for READ_HOLD_S at most
    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    monkeypatch.setattr(io_module, "READ_HOLD_S", 0.3)
    monkeypatch.setattr(io_module, "make_canvas_in_turns", lambda *args, **kwargs: None)
    read: list[bool] = []
    load = io_module._load_for_show

    def spied(*args):
        result = load(*args)
        read.append(True)
        return result

    monkeypatch.setattr(io_module, "_load_for_show", spied)
    viewer = make_napari_viewer()
    assert viewer.open(str(folder), plugin="napari-topolens") == []
    qtbot.waitUntil(lambda: bool(read), timeout=60_000)


def test_the_canvas_made_while_a_file_is_read_goes_if_it_cannot_be_read(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # the reader makes the canvas before its worker reads; a file that turns out
    # unreadable takes it away again: the viewer is left as it was
    from napari.utils.notifications import notification_manager

    from napari_topolens.errors import AnalysisFileError
    from napari_topolens.ui.canvas import existing_canvas

    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    viewer = make_napari_viewer()
    seen: list[object] = []

    def load_that_fails(path):
        deadline = time.monotonic() + 60
        while existing_canvas(viewer) is None and time.monotonic() < deadline:
            time.sleep(0.01)  # until the canvas is made, as when reading takes a while
        seen.append(existing_canvas(viewer))
        raise AnalysisFileError("damaged on purpose")

    monkeypatch.setattr(io_module, "load_analysis", load_that_fails)
    messages: list[str] = []
    notification_manager.notification_ready.connect(lambda n: messages.append(str(n.message)))
    assert viewer.open(str(folder), plugin="napari-topolens") == []
    qtbot.waitUntil(lambda: bool(messages), timeout=60_000)
    assert "damaged on purpose" in messages[0]
    assert seen and seen[0] is not None  # it was made before the file was read
    assert existing_canvas(viewer) is None
    assert "Topology views" not in viewer.window.dock_widgets
    assert not find_layers(viewer)


@pytest.mark.parametrize("closed", ["before_its_canvas", "canvas_made", "canvas_docked"])
def test_a_viewer_closed_while_its_file_is_read_is_left_alone(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch, closed
):
    # a user closes the window while the file is read: the viewer object lives on until
    # collected, its window does not; nothing is made or docked in it afterwards (a
    # dock on the closed window raised in a Qt timer: napari's error dialog)
    from napari_topolens.ui.canvas import existing_canvas

    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    # the read is let go at once, not after its hold, whenever the window closes
    monkeypatch.setattr(io_module, "READ_HOLD_S", 120.0)
    gate = _hold_reads(monkeypatch)
    viewer = make_napari_viewer(show=True)
    assert viewer.open(str(folder), plugin="napari-topolens") == []
    (worker,) = io_module._READS
    if closed != "before_its_canvas":
        qtbot.waitUntil(lambda: existing_canvas(viewer) is not None, timeout=30_000)
    if closed == "canvas_docked":
        qtbot.waitUntil(lambda: existing_canvas(viewer).docked, timeout=30_000)
    made = existing_canvas(viewer)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        viewer.close()
        gate.release()
    qtbot.wait(300)  # what the reader would do next, after the read
    assert not find_layers(viewer) and not len(viewer.layers)
    canvas = existing_canvas(viewer)
    assert canvas is None or not canvas.is_open()
    assert made is None or not made.is_open()


def test_the_reader_makes_the_images_layer_in_its_worker_and_the_canvas_after_open_returns(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # napari's open runs the event loop after the reader returns (its progress bar): the
    # canvas, a second napari QtViewer, is made in a turn of its own after that; the
    # images layer (a napari layer object, not in any viewer yet) is made in the worker
    from napari_topolens.ui.canvas import existing_canvas

    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    gate = _hold_reads(monkeypatch)  # read while the test looks at the viewer
    made_on_main = spy_on_threads(monkeypatch, io_module, "create_layer")
    viewer = make_napari_viewer(show=True)  # (open's progress bar runs the event loop then)
    try:
        assert viewer.open(str(folder), plugin="napari-topolens") == []
        assert existing_canvas(viewer) is None  # not inside napari's open
        qtbot.waitUntil(lambda: existing_canvas(viewer) is not None, timeout=60_000)
    finally:
        gate.release()
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery")) == 1, timeout=120_000)
    assert made_on_main == [False]
    (images,) = find_layers(viewer, view="images")
    assert images.metadata["topolens"]["key"] == "run" and images.name.endswith("run")


def test_a_reopened_analysis_shows_its_views_before_its_images_overlay_and_gallery(
    make_napari_viewer, qtbot, digits, tmp_path
):
    # a reopen waits for the canvas's view: its layers come first, shown with the network
    # layer set, and the image viewer's side (the images layer itself, which the reader's
    # worker made, the overlay, the gallery) only after them
    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    viewer = make_napari_viewer()
    seen: list[tuple[str, bool, bool]] = []

    def inserted(event):
        meta = event.value.metadata.get("topolens") or {}
        if meta.get("view"):
            nodes = find_layers(viewer, view="mapper_nodes")
            state = state_for(viewer)
            named = "run" in state and bool(state.get("run").network_layer)
            seen.append((meta["view"], bool(nodes) and bool(nodes[0].visible), named))

    viewer.layers.events.inserted.connect(inserted)
    viewer.open(str(folder), plugin="napari-topolens")
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery")) == 1, timeout=120_000)
    assert [view for view, _, _ in seen][:3] == ["images", "overlay", "gallery"]
    assert all(shown and named for _, shown, named in seen), seen


def test_the_reader_makes_the_first_views_in_its_worker_and_the_show_uses_them(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # the views a reopen draws first (the frame's and the Mapper view's layers) are made
    # in the reader's worker right after the file is read: the show adds those, and does
    # not make them again
    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    made: list[object] = []
    on_main: list[bool] = []
    prepare = io_module.prepare_views_ahead

    def spied(*args):
        on_main.append(threading.current_thread() is threading.main_thread())
        ahead = prepare(*args)
        made.append(ahead)
        return ahead

    monkeypatch.setattr(io_module, "prepare_views_ahead", spied)
    groups_made: list[list[str]] = []
    prepare_groups = show_module._prepare_groups

    def counted(groups, *args):
        groups_made.append(list(groups))
        return prepare_groups(groups, *args)

    monkeypatch.setattr(show_module, "_prepare_groups", counted)
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-topolens")
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery")) == 1, timeout=120_000)
    assert on_main == [False] and made[0] is not None
    ahead_layers = [layer for _item, layer in made[0].prepared]
    entry = state_for(viewer).get("run")
    assert entry.layers["mapper_nodes"] in ahead_layers
    assert entry.layers["panel_axes"] in ahead_layers
    assert groups_made[0] == ["frame", "mapper"] and ["frame", "mapper"] not in groups_made[1:]


def test_a_reopen_whose_views_fail_still_adds_its_images(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # the images layer comes after the views now: a show that fails before it gets there
    # still leaves the images in the viewer (and its error reaches napari's handler)
    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")

    def broken(*_args):
        raise RuntimeError("views broken on purpose")

    monkeypatch.setattr(show_module, "_prepare_groups", broken)
    viewer = make_napari_viewer()
    with qtbot.capture_exceptions() as exceptions:
        viewer.open(str(folder), plugin="napari-topolens")
        qtbot.waitUntil(lambda: len(find_layers(viewer, view="images")) == 1, timeout=120_000)
    assert any("broken on purpose" in str(exc[1]) for exc in exceptions)
    assert not find_layers(viewer, view="mapper_nodes")


def test_a_reopen_cancelled_before_its_images_are_in_still_adds_them_unshown(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # the images layer comes after the views: an analysis taken off the canvas before
    # that (the explorer's Remove) leaves its images in the viewer, and they do not
    # bring its views back
    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    show_read = show_module.show_read
    cancelled: list[object] = []

    def removed_at_once(viewer, layer, *args, **kwargs):
        show = show_read(viewer, layer, *args, **kwargs)
        show.cancel()
        cancelled.append(show)
        return show

    monkeypatch.setattr(io_module, "show_read", removed_at_once)
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-topolens")
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="images")) == 1, timeout=120_000)
    qtbot.wait(300)  # (a show it started would be under way by now)
    assert len(cancelled) == 1 and cancelled[0].cancelled
    assert len(state_for(viewer)) == 0
    assert not find_layers(viewer, view="mapper_nodes")
    assert not any(not show.done for show in show_module.IncrementalShow.running())


def test_a_key_taken_while_the_file_is_read_gives_the_layer_its_own_key(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # the worker names the images layer by the key the analysis will most likely get; the
    # same file opened twice, the first shown while the second is read: the second gets
    # another key, and its images layer is named by it
    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    gates = [Gate(), Gate()]
    for gate in gates:
        gate.close()
    load = io_module.load_analysis
    reads = iter(gates)

    def held_load(path):
        next(reads).pass_through()
        return load(path)

    monkeypatch.setattr(io_module, "load_analysis", held_load)
    viewer = make_napari_viewer()
    try:
        for _ in gates:
            viewer.open(str(folder), plugin="napari-topolens")
        gates[0].release()
        qtbot.waitUntil(lambda: len(state_for(viewer)) == 1, timeout=120_000)
        gates[1].release()  # "run" is taken now
        qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery")) == 2, timeout=120_000)
    finally:
        for gate in gates:
            gate.release()
    layers = find_layers(viewer, view="images")
    keys = sorted(layer.metadata["topolens"]["key"] for layer in layers)
    assert keys == ["run", "run 2"]
    for layer in layers:
        key = layer.metadata["topolens"]["key"]
        assert layer.name.endswith(key) and state_for(viewer).get(key).image_layer is layer


def test_an_empty_viewer_draws_its_gallery_titles_characters_ahead_once_the_views_are_shown(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # the gallery's title is the first text such a viewer draws (about 10 ms a character
    # the first time): loaded a few per turn in its text overlay, which is put back as it
    # was; started once the reopened analysis's views are drawn, not while the file is
    # read (each of its turns repaints the viewer, inside napari's open too)
    from napari_topolens.ui.glyphs import warmer_of
    from napari_topolens.ui.image_layers import gallery_title

    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    started: list[bool] = []  # whether the views were shown when it started
    warm = io_module.warm_glyphs

    def spied(model, *args, **kwargs):
        nodes = find_layers(viewer, view="mapper_nodes")
        started.append(bool(nodes) and bool(nodes[0].visible))
        return warm(model, *args, **kwargs)

    monkeypatch.setattr(io_module, "warm_glyphs", spied)
    gate = _hold_reads(monkeypatch)
    viewer = make_napari_viewer()
    overlay = viewer.canvas.overlays["text"]
    try:
        viewer.open(str(folder), plugin="napari-topolens")
        qtbot.wait(450)
        assert warmer_of(viewer) is None and not started  # not while the file is read
    finally:
        gate.release()
    qtbot.waitUntil(lambda: warmer_of(viewer) is not None, timeout=120_000)
    warmer = warmer_of(viewer)
    assert started == [True]
    qtbot.waitUntil(lambda: warmer.done, timeout=60_000)
    title = list(dict.fromkeys(gallery_title("run")))
    assert warmer.drawn and warmer.drawn == title[: len(warmer.drawn)]
    assert not overlay.visible and overlay.text == "" and overlay.color is None
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery_text")) == 1, timeout=120_000)


class TurnCounter:
    """Counts the event loop's turns: a 1 ms timer's ticks (two records with the same
    count were made in one turn)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.turns = 0
        self.timer = QTimer()
        self.timer.setInterval(1)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        self.turns += 1


def test_a_reopen_into_an_empty_viewer_makes_its_sliders_a_turn_before_its_images_layer(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # adding the images layer to an empty viewer is one long stretch of napari's work (its
    # sliders made and shown, its layer controls shown as the active layer's): the sliders
    # come a turn before (napari's dims given the layer's axes and middle step), the layer
    # comes in unselected and is the active layer once the show ends; the gallery title's
    # glyphs start after it, in a turn of their own
    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    viewer = make_napari_viewer()
    counter = TurnCounter()
    ndim_at: list[int] = []
    viewer.dims.events.ndim.connect(lambda _e: ndim_at.append(counter.turns))
    inserted_at: list[tuple[int, int, tuple[int, ...]]] = []

    def inserted(event):
        if (event.value.metadata.get("topolens") or {}).get("view") == "images":
            inserted_at.append((counter.turns, viewer.dims.ndim, tuple(viewer.dims.current_step)))

    viewer.layers.events.inserted.connect(inserted)
    actives: list[tuple[int, object]] = []
    viewer.layers.selection.events.active.connect(
        lambda event: actives.append((counter.turns, event.value))
    )
    warm_at: list[int] = []
    warm = io_module.warm_glyphs

    def spied(*args, **kwargs):
        warm_at.append(counter.turns)
        return warm(*args, **kwargs)

    monkeypatch.setattr(io_module, "warm_glyphs", spied)
    viewer.open(str(folder), plugin="napari-topolens")
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery")) == 1, timeout=120_000)
    (images,) = find_layers(viewer, view="images")
    qtbot.waitUntil(lambda: viewer.layers.selection.active is images, timeout=120_000)
    counter.timer.stop()
    ((turn, ndim, step),) = inserted_at
    assert ndim_at and ndim_at[0] < turn and ndim == images.ndim == 3
    assert step == tuple(viewer.dims.current_step)  # the middle image, as napari sets it
    assert not [active for at, active in actives if at == turn]  # not made active there
    assert actives[-1][1] is images
    assert warm_at and warm_at[0] > turn


def test_a_reopens_gallery_text_comes_after_its_titles_glyphs_are_drawn(
    make_napari_viewer, qtbot, digits, tmp_path
):
    # the gallery title's characters, drawn ahead a few per turn in an empty viewer, are
    # all drawn before the show adds the gallery's text (else the turn that adds it drew
    # the rest: about 10 ms each)
    from napari_topolens.ui.glyphs import warmer_of
    from napari_topolens.ui.image_layers import gallery_title

    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    viewer = make_napari_viewer()
    seen: list[tuple[bool, list[str]] | None] = []

    def inserted(event):
        if (event.value.metadata.get("topolens") or {}).get("view") == "gallery_text":
            warmer = warmer_of(viewer)
            seen.append(None if warmer is None else (warmer.done, list(warmer.drawn)))

    viewer.layers.events.inserted.connect(inserted)
    viewer.open(str(folder), plugin="napari-topolens")
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery_text")) == 1, timeout=120_000)
    assert seen and seen[0] is not None
    done, drawn = seen[0]
    assert done and drawn == list(dict.fromkeys(gallery_title("run")))


def test_a_reopens_views_wait_for_the_canvass_first_text(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # a canvas's first text (its glyph warmer's first character) builds the text's shaders
    # and loads the glyphs its layout measures with: the reopened views come after that
    # text was drawn (the warmer's next step), not in the same turn, even when the file
    # was read before it (here the warmer is slowed down)
    from napari_topolens.ui import glyphs
    from napari_topolens.ui.glyphs import warmer_of

    monkeypatch.setattr(glyphs, "WAIT_MS", 1500)
    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    drawn_at_put: list[int] = []
    put = show_module._put

    def spied(canvas, *args, **kwargs):
        warmer = warmer_of(canvas.model)
        drawn_at_put.append(-1 if warmer is None else len(warmer.drawn))
        return put(canvas, *args, **kwargs)

    monkeypatch.setattr(show_module, "_put", spied)
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-topolens")
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery")) == 1, timeout=120_000)
    assert drawn_at_put and drawn_at_put[0] > 1


def test_the_reader_makes_and_docks_no_canvas_inside_napari_open(
    make_napari_viewer, qtbot, digits, tmp_path, monkeypatch
):
    # napari's open runs the event loop after the reader returns (its progress bar's
    # processEvents): the canvas (a second napari QtViewer) made or docked then would
    # lengthen open's own turn; both wait for open to return instead
    from napari_topolens.ui.canvas import existing_canvas

    _images, analysis = digits
    folder = analysis.save(tmp_path / "run.topolens")
    reader_inside: list[bool] = []
    made_inside: list[bool] = []
    docked_inside: list[bool] = []
    read, make_in_turns = io_module._read_in_worker, io_module.make_canvas_in_turns

    def spied_read(*args):
        reader_inside.append(io_module.inside_napari_open())
        return read(*args)

    def spied_make(viewer, then, defer=None, gone=None):
        made_inside.append(io_module.inside_napari_open())

        def docked(canvas):
            docked_inside.append(io_module.inside_napari_open())
            then(canvas)

        return make_in_turns(viewer, docked, defer, gone)

    monkeypatch.setattr(io_module, "_read_in_worker", spied_read)
    monkeypatch.setattr(io_module, "make_canvas_in_turns", spied_make)
    viewer = make_napari_viewer(show=True)  # (open's progress bar runs the event loop then)
    viewer.open(str(folder), plugin="napari-topolens")
    assert reader_inside == [True]  # the reader runs inside open
    assert existing_canvas(viewer) is None and made_inside == []
    qtbot.waitUntil(lambda: len(find_layers(viewer, view="gallery")) == 1, timeout=120_000)
    assert made_inside and not any(made_inside)
    assert docked_inside and not any(docked_inside)


@pytest.mark.slow
def test_a_switch_parks_the_hidden_views_until_they_are_picked(make_napari_viewer, digits):
    _images, analysis = digits
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis, "fc1")
    (key,) = state_for(viewer).keys
    entry = state_for(viewer).get(key)
    canvas = canvas_for(viewer)
    canvas.show_panel("flow")
    canvas.show_panel("diagram")
    canvas.show_panel("mapper")
    old_flow = entry.layers["flow"]
    old_diagram = entry.layers["diagram"]

    show_analysis(viewer, analysis, "pool1")  # a switch with flow and diagram hidden
    assert "flow" not in entry.layers and "diagram" not in entry.layers  # nothing reads them
    parked = canvas.panel_builder.parked[key]
    assert parked["flow"] is old_flow and not old_flow.visible
    assert entry.layers["mapper_nodes"].metadata["topolens"]["layer"] == "pool1"

    canvas.show_panel("diagram")  # updated in place when picked (a Points layer)
    assert entry.layers["diagram"] is old_diagram and old_diagram.visible
    assert old_diagram.metadata["topolens"]["layer"] == "pool1"
    canvas.show_panel("flow")  # Shapes: made anew, the parked one removed
    assert entry.layers["flow"] is not old_flow and entry.layers["flow"].visible
    assert entry.layers["flow"].metadata["topolens"]["layer"] == "pool1"
    assert old_flow not in canvas.model.layers and not canvas.panel_builder.parked[key]

    show_analysis(viewer, analysis, "pool2")
    assert list(canvas.panel_builder.parked[key]) == ["diagram"]  # hidden: parked again
    remove_analysis(viewer, key)
    assert list(canvas.model.layers) == []  # parked layers go with their analysis


def test_idle_after_a_show_the_other_panels_are_made_ahead_hidden_and_a_pick_only_shows_them(
    make_napari_viewer, qtbot, digits, monkeypatch
):
    _images, analysis = digits
    viewer = make_napari_viewer()
    calls = _record_threads(monkeypatch)
    show = show_analysis_incrementally(viewer, analysis, "fc1")
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    (key,) = state_for(viewer).keys
    entry = state_for(viewer).get(key)
    canvas = canvas_for(viewer)
    builder = canvas.panel_builder
    qtbot.waitUntil(lambda: not builder.making_ahead(), timeout=240_000)
    assert calls and not any(calls)  # made in workers, like a pick
    for panel in vd.PANELS:
        for view in vd.PANEL_VIEWS[panel]:
            layer = entry.layers[view]
            assert layer in canvas.model.layers, view
            assert layer.visible == (panel == "mapper"), view  # hidden again after its first draw
            assert layer.opacity > 0, view  # drawn transparent once, its opacity given back
    # so were the characters of every panel's text (napari rasterises each on first use),
    # in the matrix-values layer, given back empty (the Mapper graph has no values)
    assert canvas.unseen_glyphs() == ""
    wanted = {
        char
        for panel in vd.PANELS
        for item in vd.panel_text_data(analysis, "fc1", key, entry.slot, panel)
        for text in item[1]["features"]["text"]
        for char in str(text)
    }
    assert wanted and wanted - {"\n"} <= canvas.characters_drawn()
    assert len(entry.layers["panel_values"].data) == 0

    # a pick now starts no worker: its views are shown at once, the frame a turn later
    made = list(canvas.model.layers)
    canvas.picker.setCurrentIndex(canvas.picker.findData("dendrogram"))
    assert key not in builder.pending and entry.layers["dendrogram_tree"].visible
    assert not entry.layers["mapper_nodes"].visible and canvas.busy()
    qtbot.waitUntil(lambda: not canvas.busy(), timeout=10_000)
    text = entry.layers["panel_text"].features["text"].tolist()
    assert any(vd.PANEL_TITLES["dendrogram"] in t for t in text)
    assert list(canvas.model.layers) == made  # nothing added nor removed


def test_a_pick_drops_a_panel_still_waiting_to_be_made_ahead(
    make_napari_viewer, qtbot, digits, monkeypatch
):
    _images, analysis = digits
    viewer = make_napari_viewer()
    show = show_analysis_incrementally(viewer, analysis, "fc1")
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    gate = Gate()  # closed before the idle wait ends: the panel made ahead waits on it
    _record_threads(monkeypatch, gate)
    gate.close()
    (key,) = state_for(viewer).keys
    builder = canvas_for(viewer).panel_builder
    qtbot.waitUntil(
        lambda: builder.prebuilding is not None and builder.prebuilding.worker is not None,
        timeout=30_000,
    )
    ahead = builder.prebuilding
    stale = ahead.worker
    canvas = canvas_for(viewer)
    canvas.picker.setCurrentIndex(canvas.picker.findData("blobs"))  # the user's pick first
    assert ahead.cancelled and key in builder.pending
    with qtbot.waitSignal(stale.finished, timeout=60_000):
        gate.release()
    pick = builder.pending[key]
    qtbot.waitUntil(lambda: pick.done, timeout=120_000)
    entry = state_for(viewer).get(key)
    assert entry.layers["blob_points"].visible
    assert ahead.layers == []  # the dropped result put nothing in


@pytest.mark.slow
def test_views_queued_to_be_made_ahead_are_dropped_when_the_viewer_closes(
    make_napari_viewer, qtbot, digits
):
    # the viewer is closed inside the test (napari's fixture allows it): its canvas's
    # widgets go with its window while the viewer object lives on; the queued
    # made-ahead step must not touch them (a RuntimeError in a Qt timer aborts napari)
    from napari_topolens.ui.canvas import close_canvases

    _images, analysis = digits
    viewer = make_napari_viewer()
    show = show_analysis_incrementally(viewer, analysis, "fc1")
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    canvas = canvas_for(viewer)
    builder = canvas.panel_builder
    builder.prebuild_soon()
    viewer.close()
    qtbot.wait(3 * show_module.PREBUILD_IDLE_MS + 200)  # the queued step runs, and returns
    assert not canvas.is_open()
    assert builder.prebuilding is None
    close_canvases()


def test_views_drawn_ahead_hide_the_last_and_show_the_next_in_one_napari_batch(
    make_napari_viewer, digits, monkeypatch
):
    # each visibility change outside a batch is a pass of napari's over every canvas layer;
    # drawing views ahead hides the one drawn last and shows the next in the same turn
    _images, analysis = digits
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis, "fc1")
    canvas = canvas_for(viewer)
    (key,) = state_for(viewer).keys
    entry = state_for(viewer).get(key)
    for panel in ("diagram", "barcode", "flow", "mapper"):
        canvas.show_panel(panel)  # made at once; all but the Mapper graph's hidden again
    ahead = [entry.layers[view] for view in ("diagram", "barcode", "flow", "flow_clusters")]
    opacities = [layer.opacity for layer in ahead]
    monkeypatch.setattr(collector, "collections_are_cheap", lambda: True)
    layers = canvas.model.layers
    batch = [False]
    layers.events.begin_batch.connect(lambda _e: batch.__setitem__(0, True))
    layers.events.end_batch.connect(lambda _e: batch.__setitem__(0, False))
    changes: list[tuple[int, bool, bool]] = []
    for i, layer in enumerate(ahead):
        layer.events.visible.connect(
            lambda _e, i=i, layer=layer: changes.append((i, bool(layer.visible), batch[0]))
        )
    paints = sum(1 for step in show_module._draw_once_hidden(canvas, ahead) if step is not None)
    assert paints == len(ahead)
    # the first shown alone, the last hidden at the end; between, each hide and show together
    assert changes[0] == (0, True, False) and changes[-1] == (len(ahead) - 1, False, False)
    assert changes[1:-1] == [
        change for i in range(1, len(ahead)) for change in ((i - 1, False, True), (i, True, True))
    ]
    assert not any(layer.visible for layer in ahead)
    assert [layer.opacity for layer in ahead] == opacities
    assert entry.layers["mapper_nodes"].visible
