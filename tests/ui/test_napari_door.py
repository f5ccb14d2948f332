"""The user's journey through napari's own door: menus, samples, the reader and the writer.

Every widget here is docked by napari (``add_plugin_dock_widget``), so it gets napari's
proxy of the viewer, as it does from ``Plugins ▸ TopoLens``; the console's
``add_model`` gets the viewer itself. Nothing constructs a widget class.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    dock_analysis,
    dock_explorer,
    open_sample,
    open_saved,
    save_selected,
    wait_for,
)

import napari_topolens as tl
from napari_topolens.ui.analysis_widget import ADDED_PREFIX
from napari_topolens.ui.state import state_for
from napari_topolens.ui.variants import variant_views_for
from napari_topolens.ui.views import canvas_for, find_layers
from napari_topolens.ui.widget_parts import MARKED_IMAGES

#: The few digits analysed (a fast run).
CHOSEN = np.arange(5, 1797, 29)[:60]
TIMEOUT_MS = 120_000


def _mark(viewer, images):
    marks = np.zeros(images.data.shape, dtype=np.uint8)
    marks[CHOSEN, 2:5, 2:5] = 1
    return viewer.add_labels(marks, name="marks")


def _set_up_run(widget, marks, variants=()):
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None, widget.status.value
    widget.module_tree.set_checked(["pool2", "fc1"])
    widget.which.value = MARKED_IMAGES
    widget.marker_layer.value = marks
    for text in variants:
        assert widget.variant_form.add(text=text) == text


def _run(qtbot, widget):
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker, timeout=TIMEOUT_MS)
    assert widget.analysis is not None, widget.status.value
    return widget.analysis


def _wait_switch(qtbot, explorer):
    qtbot.waitUntil(
        lambda: explorer.pending_show is None or explorer.pending_show.done, timeout=TIMEOUT_MS
    )


def _shown_layer(viewer, key):
    """The network layer the visible views of ``key`` draw (one, or the set when mixed)."""
    found = {
        layer.metadata["topolens"].get("layer")
        for layer in find_layers(viewer, key)
        if layer.visible and layer.metadata["topolens"].get("view") not in ("images", "overlay")
    } - {None, ""}
    return found.pop() if len(found) == 1 else found


def _small_net():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10)
    )


@pytest.mark.slow
def test_sample_analysis_explorer_variants_save_reopen_and_add_model(
    make_napari_viewer, qtbot, tmp_path
):
    viewer = make_napari_viewer()
    images = open_sample(viewer, "digits")
    widget = dock_analysis(viewer)
    marks = _mark(viewer, images)
    _set_up_run(widget, marks)
    first = _run(qtbot, widget)
    state = state_for(viewer)  # the console's view of the viewer's state (the viewer itself)
    (first_key,) = state.keys
    assert state.get(first_key).analysis is first

    # the explorer from the Plugins menu sees the analysis the docked widget made
    explorer = dock_explorer(viewer)
    assert explorer.analysis_key.value == first_key, explorer.status.value
    assert explorer.layer.value == "fc1"
    assert {name for name in explorer.layer.choices if name} == {"pool2", "fc1"}
    explorer.layer.value = "pool2"
    _wait_switch(qtbot, explorer)
    assert _shown_layer(viewer, first_key) == "pool2"

    # a second run on the same images, with two cheap variants, replaces the first
    _set_up_run(widget, marks, variants=("gaussian:0.05", "prune:0.3"))
    second = _run(qtbot, widget)
    assert first_key not in state or state.get(first_key).analysis is not first
    bases = [entry for entry in state if entry.variant_of is None]
    assert [entry.analysis for entry in bases] == [second]
    base_key = bases[0].key
    assert len(state) == 2  # the base and the variant beside it, no third slot
    qtbot.waitUntil(lambda: explorer.analysis_key.value == base_key, timeout=TIMEOUT_MS)

    # what is on screen when saving: layer, view, colouring, threshold, compared variant
    explorer.analysis_key.value = base_key
    explorer.layer.value = "pool2"
    _wait_switch(qtbot, explorer)
    explorer.color_by.value = "purity"
    explorer.edge_threshold.value = 0.25
    canvas = canvas_for(viewer)
    canvas.show_panel("diagram")
    variants = variant_views_for(viewer)
    canvas.compare.setCurrentIndex(canvas.compare.findData("prune:0.3"))  # "Compare with"
    qtbot.waitUntil(
        lambda: (
            variants.bases[base_key].compared == "prune:0.3"
            and (variants.pending is None or variants.pending.done)
        ),
        timeout=TIMEOUT_MS,
    )
    entry = state.get(base_key)
    assert (entry.network_layer, entry.color_by, entry.edge_threshold) == ("pool2", "purity", 0.25)

    # napari's writer, the README's way: the analysis's overlay selected, Save Selected Layers
    (overlay,) = find_layers(viewer, base_key, "overlay")
    viewer.layers.selection.clear()
    viewer.layers.selection.add(overlay)
    target = tmp_path / "digits.topolens"
    assert save_selected(viewer, target) == [str(target)]

    # reopened in a new viewer: the same layer, view, colouring, threshold and variant
    other = make_napari_viewer()
    tl.add_model(other, _small_net(), name="early")  # before the widget exists
    open_saved(other, target)
    other_state = state_for(other)
    qtbot.waitUntil(
        lambda: any(e.variant_of is None and e.network_layer for e in other_state),
        timeout=TIMEOUT_MS,
    )
    other_variants = variant_views_for(other)
    qtbot.waitUntil(
        lambda: (
            any(bv.compared is not None for bv in other_variants.bases.values())
            and (other_variants.pending is None or other_variants.pending.done)
        ),
        timeout=TIMEOUT_MS,
    )
    (reopened,) = [e for e in other_state if e.variant_of is None]
    assert reopened.network_layer == "pool2"
    assert reopened.color_by == "purity"
    assert reopened.edge_threshold == 0.25
    assert other_state.panel == "diagram"
    assert other_variants.bases[reopened.key].compared == "prune:0.3"
    assert _shown_layer(other, reopened.key) == "pool2"

    # the explorer docked in the new viewer sees the reopened analysis and switches it
    other_explorer = dock_explorer(other)
    assert other_explorer.analysis_key.value == reopened.key
    assert other_explorer.layer.value == "pool2"
    assert other_explorer.color_by.value == "purity"
    other_explorer.layer.value = "fc1"
    _wait_switch(qtbot, other_explorer)
    assert _shown_layer(other, reopened.key) == "fc1"

    # add_model with the viewer itself (the console's): before the widget, it is chosen
    other_widget = dock_analysis(other)
    assert other_widget.model_source.value == ADDED_PREFIX + "early"
    # ... and after: the docked widget's list updates at once, in both viewers
    tl.add_model(other, _small_net(), name="late")
    assert ADDED_PREFIX + "late" in other_widget.model_source.choices
    assert other_widget.model_source.value == ADDED_PREFIX + "late"
    tl.add_model(viewer, _small_net(), name="console net")
    assert widget.model_source.value == ADDED_PREFIX + "console net"
    assert ADDED_PREFIX + "console net" not in other_widget.model_source.choices


def _canvas_layers_of(viewer, key):
    return [layer for layer in canvas_for(viewer).model.layers if layer in find_layers(viewer, key)]


@pytest.mark.slow
def test_a_rerun_replaces_and_an_analysis_comes_off_the_canvas_with_its_images_kept(
    door_digits, qtbot
):
    viewer, widget, images = door_digits
    marks = _mark(viewer, images)
    _set_up_run(widget, marks)
    widget.module_tree.set_checked(["fc1"])
    first = _run(qtbot, widget)
    state = state_for(viewer)
    explorer = dock_explorer(viewer)
    (key,) = state.keys
    legend = canvas_for(viewer).legend.text()

    second = _run(qtbot, widget)  # the same form again: a new run on the same image layer
    assert [entry.analysis for entry in state] == [second]  # one slot, not two
    assert state.get(state.keys[0]).slot == 0
    keys = {layer.metadata["topolens"]["key"] for layer in find_layers(viewer)}
    assert keys == {state.keys[0]}  # nothing of the first run is left, in either viewer
    assert all(
        layer.metadata["topolens"]["analysis"] is not first
        for layer in viewer.layers
        if "analysis" in layer.metadata.get("topolens", {})
    )
    assert canvas_for(viewer).legend.text() == legend  # the legend names what is shown, once
    qtbot.waitUntil(lambda: explorer.analysis_key.value == state.keys[0], timeout=TIMEOUT_MS)
    assert explorer.analysis is second

    # the explorer's Remove analysis: views, overlay and gallery go; the images stay
    key = state.keys[0]
    explorer.remove_button.clicked.emit()
    assert len(state) == 0 and not find_layers(viewer, key)
    assert images in viewer.layers and marks in viewer.layers
    assert not canvas_for(viewer).model.layers
    assert explorer.analysis_key.value is None
    assert not explorer.remove_button.enabled  # nothing left to remove
    assert "0" not in canvas_for(viewer).legend.text().split("rings")[0]  # no class key left

    # napari's own way: deleting the analysis's overlay layer takes it off the canvas too
    third = _run(qtbot, widget)
    (key,) = state.keys
    assert state.get(key).analysis is third
    (overlay,) = find_layers(viewer, key, "overlay")
    viewer.layers.remove(overlay)
    assert len(state) == 0 and not find_layers(viewer, key)
    assert not canvas_for(viewer).model.layers
    assert images in viewer.layers


@pytest.mark.slow
def test_the_legend_names_the_classes_of_every_analysis_shown(make_napari_viewer):
    from conftest import digits_analysis

    from napari_topolens.ui.views import remove_analysis, show_analysis

    _, digits = digits_analysis(40, layers=("fc1",))
    _, renamed = digits_analysis(40, layers=("fc1",))
    renamed.class_names = [f"<i>d{name}</i>" for name in renamed.class_names]
    viewer = make_napari_viewer()
    show_analysis(viewer, digits, key="plain")
    canvas = canvas_for(viewer)
    assert "plain" not in canvas.legend.text() and "&nbsp;9" in canvas.legend.text()
    show_analysis(viewer, renamed, key="renamed")
    text = canvas.legend.text()
    assert "<b>plain</b>" in text and "<b>renamed</b>" in text
    assert "&lt;i&gt;d9&lt;/i&gt;" in text and "<i>" not in text  # names are text, not markup
    remove_analysis(viewer, "plain")
    text = canvas.legend.text()
    assert "&nbsp;9 " not in text and "&lt;i&gt;d9&lt;/i&gt;" in text and "<b>" not in text


def test_the_view_record_is_checked_value_by_value(tmp_path):
    import json

    from conftest import digits_analysis

    from napari_topolens.ui import io

    _, analysis = digits_analysis(40, layers=("pool1", "fc1"))
    folder = analysis.save(tmp_path / "a.topolens")
    defaults = io._view_settings(folder, analysis)  # no record: the defaults
    assert defaults == {
        "layer_name": None,
        "panel": None,
        "color_by": "dominant_class",
        "edge_threshold": 0.0,
    }
    good = {"layer": "pool1", "panel": "diagram", "color_by": "purity", "edge_threshold": 0.4}
    (folder / io.VIEW_FILE).write_text(json.dumps(good))
    assert io._view_settings(folder, analysis) == {
        "layer_name": "pool1",
        "panel": "diagram",
        "color_by": "purity",
        "edge_threshold": 0.4,
    }
    for bad in (
        {"layer": "fc9", "panel": "drift", "color_by": "correct", "edge_threshold": 7},
        {"layer": ["pool1"], "panel": 3, "color_by": {"a": 1}, "edge_threshold": True},
        {"layer": None, "panel": "../etc", "color_by": "", "edge_threshold": "0.4"},
        {"compare": "gaussian:0.1", "edge_threshold": -0.1},
    ):
        (folder / io.VIEW_FILE).write_text(json.dumps(bad))
        assert io._view_settings(folder, analysis) == defaults, bad
    # NaN is not JSON, but Python's reader takes it: still the default
    (folder / io.VIEW_FILE).write_text('{"edge_threshold": NaN}')
    assert io._view_settings(folder, analysis) == defaults


def test_a_viewer_and_its_napari_proxies_are_one_viewer_and_distinct_viewers_two():
    import gc

    from napari.components import ViewerModel
    from napari.utils._proxies import PublicOnlyProxy  # what napari gives a docked widget

    from napari_topolens.ui.viewer_key import PerViewer, same_viewer, viewer_ref

    a, b = ViewerModel(), ViewerModel()
    assert a == b  # evented models compare equal by their fields: never a dict key
    registry = PerViewer()
    registry.set(PublicOnlyProxy(a), "a")
    assert registry.get(a) == "a" and registry.get(PublicOnlyProxy(a)) == "a"
    assert registry.get(b) is None
    assert same_viewer(PublicOnlyProxy(a), a) and not same_viewer(a, b)
    proxy = PublicOnlyProxy(b)
    ref = viewer_ref(proxy)
    del proxy
    gc.collect()
    assert same_viewer(ref(), b)  # a weakref to the proxy would have died with it
    registry.set(b, "b")
    assert registry.get(PublicOnlyProxy(b)) == "b"
    del a
    gc.collect()
    assert registry.values() == ["b"]  # gone with its viewer
    b_ref = viewer_ref(b)
    del b, ref
    gc.collect()
    assert b_ref() is None and registry.values() == []


def test_a_run_shows_its_views_when_qt_has_one_worker_thread(door_digits, qtbot):
    """Qt sizes its thread pool by the cores it may use (one on a one-core machine); the
    run's worker waits in that pool for its show, whose work needs a pool thread too."""
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    before = pool.maxThreadCount()
    pool.setMaxThreadCount(1)  # a one-core machine, whatever this one has
    try:
        viewer, widget, images = door_digits
        _set_up_run(widget, _mark(viewer, images))
        widget.module_tree.set_checked(["fc1"])
        worker = widget.run()
        assert worker is not None, widget.status.value
        wait_for(qtbot, worker, timeout=60_000)  # deadlocked before: the show never started
        assert widget.analysis is not None, widget.status.value
        assert state_for(viewer).keys and find_layers(viewer, state_for(viewer).keys[0], "overlay")
    finally:
        pool.waitForDone(30_000)
        pool.setMaxThreadCount(before)
