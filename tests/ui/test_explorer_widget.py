"""The explorer widget drives the shown layers: layer, colours, edges, class search."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from conftest import TickRecorder, dock_explorer

from napari_topolens.ui import show as show_module
from napari_topolens.ui import view_data as vd
from napari_topolens.ui.explorer_widget import resolve_class
from napari_topolens.ui.links import links_for
from napari_topolens.ui.state import state_for
from napari_topolens.ui.view_data import LAYER_VIEWS
from napari_topolens.ui.views import canvas_for, find_layers, show_analysis

#: Longest wait for a layer switch to put its layers in.
SWITCH_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def digits_analysis():
    from napari_topolens.activations.extract import extract_activations
    from napari_topolens.samples import load_sample
    from napari_topolens.topology.analysis import analyze

    sample = load_sample("digits")
    index = np.arange(0, 1797, 10)[:160]
    clouds = extract_activations(sample.model, sample.images[index], ["pool2", "fc1"])
    for cloud in clouds.values():
        cloud.image_index = index[cloud.image_index]
    analysis = analyze(
        clouds, sample.labels, class_names=sample.class_names, provenance={"sample": "digits"}
    )
    return sample, analysis


@pytest.fixture
def explorer(make_napari_viewer, digits_analysis):
    sample, analysis = digits_analysis
    viewer = make_napari_viewer()
    images = viewer.add_image(sample.images, name="digits images")
    show_analysis(viewer, analysis, image_layer=images)
    widget = dock_explorer(viewer)
    return viewer, widget, analysis


def nodes_layer(viewer, key):
    (layer,) = find_layers(viewer, key, "mapper_nodes")
    return layer


def edges_layer(viewer, key):
    (layer,) = find_layers(viewer, key, "mapper_edges")
    return layer


def switch_to(qtbot, widget, name):
    """Choose network layer ``name`` in the widget and wait until its views are in."""
    widget.layer.value = name
    show = widget.pending_show
    assert show is not None
    qtbot.waitUntil(lambda: show.done, timeout=SWITCH_TIMEOUT_MS)
    assert show.error is None, show.error
    return show


def view_state(viewer, key):
    """Per-layer view -> (layer object, its network layer, data, features), one layer per view."""
    state = {}
    for layer in find_layers(viewer, key):
        meta = layer.metadata["topolens"]
        if meta["view"] in LAYER_VIEWS:
            assert meta["view"] not in state, f"view {meta['view']} shown twice"
            data = layer.data if isinstance(layer.data, list) else [np.asarray(layer.data)]
            state[meta["view"]] = (
                layer,
                meta.get("layer"),
                [np.array(d) for d in data],
                getattr(layer, "features", pd.DataFrame()).drop(
                    columns=["selected", "highlighted"], errors="ignore"
                ),
            )
    return state


def assert_same_views(before, after):
    """The same layer objects show the same data and features."""
    assert set(before) == set(after)
    for view, (layer, network_layer, data, features) in before.items():
        layer_after, network_after, data_after, features_after = after[view]
        assert layer_after is layer, view
        assert network_after == network_layer, view
        assert len(data_after) == len(data), view
        for a, b in zip(data, data_after):
            np.testing.assert_allclose(a, b, err_msg=view)
        pd.testing.assert_frame_equal(
            features.reset_index(drop=True), features_after.reset_index(drop=True), obj=view
        )


def test_explorer_follows_the_analysis_and_drives_its_layers(explorer):
    viewer, widget, analysis = explorer
    key = widget.analysis_key.value
    assert key is not None and widget.analysis is analysis
    assert list(widget.layer.choices) == [None, "pool2", "fc1"] or list(widget.layer.choices) == [
        "pool2",
        "fc1",
    ]
    assert widget.layer.value == "fc1"  # show_analysis's default: the last layer
    graph = analysis["fc1"].mapper
    assert f"fc1: {len(graph.node_ids)} nodes" in widget.summary.value
    assert "purity" in widget.summary.value and "PH dim" in widget.summary.value

    # colour by
    nodes = nodes_layer(viewer, key)
    before = np.array(nodes.face_color)

    widget.color_by.value = "purity"
    nodes = nodes_layer(viewer, key)
    expected = vd.node_colors(analysis, "fc1", "purity")[0][nodes.features["node"].to_numpy()]
    np.testing.assert_allclose(nodes.face_color, expected, atol=1e-6)
    assert not np.allclose(nodes.face_color, before)

    weights = np.asarray(graph.edge_weight)
    assert len(edges_layer(viewer, key).data) == len(weights)
    threshold = float(np.round(np.median(weights), 2))
    widget.edge_threshold.value = threshold
    edges = edges_layer(viewer, key)
    assert len(edges.data) == int((weights >= threshold).sum()) < len(weights)
    assert (edges.features["jaccard"] >= threshold).all()
    assert (
        f"{int((weights >= threshold).sum())} of {len(weights)} edges shown" in widget.summary.value
    )
    widget.edge_threshold.value = 0.0
    assert len(edges_layer(viewer, key).data) == len(weights)

    # class search
    nodes = nodes_layer(viewer, key)
    dominant = nodes.features["dominant_class"].astype(str).to_numpy()
    target = str(dominant[np.argmax(nodes.features["size"].to_numpy())])

    widget.class_search.value = target
    alpha = np.array(nodes.face_color)[:, 3]
    assert np.all(alpha[dominant == target] == 1.0) and np.all(alpha[dominant != target] < 0.5)
    assert (dominant != target).any()
    assert (
        f"Class {target!r}: {(dominant == target).sum()} of {len(dominant)} nodes kept"
        in widget.status.value
    )

    widget.color_by.value = "mean_lens"  # recolouring keeps the search applied
    alpha = np.array(nodes_layer(viewer, key).face_color)[:, 3]
    assert np.all(alpha[dominant != target] < 0.5)

    widget.class_search.value = "no such class"
    assert "no class matches" in widget.status.value
    assert np.all(np.array(nodes_layer(viewer, key).face_color)[:, 3] == 1.0)
    widget.class_search.value = ""
    assert np.all(np.array(nodes_layer(viewer, key).face_color)[:, 3] == 1.0)


def test_switching_the_network_layer_keeps_the_settings(explorer, qtbot):
    viewer, widget, analysis = explorer
    key = widget.analysis_key.value
    widget.color_by.value = "community"
    widget.edge_threshold.value = 0.2
    widget.class_search.value = "7"
    switch_to(qtbot, widget, "pool2")

    nodes = nodes_layer(viewer, key)
    assert nodes.metadata["topolens"]["layer"] == "pool2"
    graph = analysis["pool2"].mapper
    assert len(nodes.features) == len(graph.node_ids)
    assert state_for(viewer).get(key).color_by == "community"
    weights = np.asarray(graph.edge_weight)
    assert len(edges_layer(viewer, key).data) == int((weights >= 0.2).sum())
    dominant = nodes.features["dominant_class"].astype(str).to_numpy()
    alpha = np.array(nodes.face_color)[:, 3]
    assert np.all(alpha[dominant != "7"] < 0.5) and np.all(alpha[dominant == "7"] == 1.0)
    assert widget.summary.value.startswith("pool2:")

    # a second analysis of the same sample gets its own key and becomes the chosen one
    first = key
    from napari_topolens.topology.analysis import Analysis

    other = Analysis(
        analysis.layer_results[:1],
        {k: v[:1, :1] for k, v in analysis.layer_distances.items()},
        analysis.config,
        {"sample": "digits"},
        analysis.labels,
        analysis.class_names,
    )
    show_analysis(viewer, other, image_layer=viewer.layers["digits images"])
    keys = [k for k in widget.analysis_key.choices if k is not None]
    assert len(keys) == 2 and widget.analysis_key.value != first
    assert widget.analysis is other and widget.layer.value == "pool2"
    widget.analysis_key.value = first
    assert widget.analysis is analysis and widget.layer.value == "pool2"
    assert widget.color_by.value == "community" and widget.edge_threshold.value == pytest.approx(
        0.2
    )
    assert widget.class_search.value == "7"  # the controls show that analysis's state


def test_switching_keeps_the_viewer_responsive(explorer, qtbot, monkeypatch):
    """The event loop turns between the layers of an explorer switch (a 0 ms timer ticks in
    between); the synchronous show's figures are printed beside it."""
    viewer, widget, analysis = explorer
    key = widget.analysis_key.value
    images = viewer.layers["digits images"]
    for name in ("pool2", "fc1"):  # both Mapper layouts computed and cached: time the switch only
        show_analysis(viewer, analysis, name, image_layer=images)

    baseline = TickRecorder()
    baseline.start()
    qtbot.wait(50)
    started = time.perf_counter()
    show_analysis(viewer, analysis, "pool2", image_layer=images)
    sync_seconds = time.perf_counter() - started
    qtbot.wait(50)
    baseline.stop()
    sync_stall = baseline.longest_gap()
    show_analysis(viewer, analysis, "fc1", image_layer=images)  # back to what the widget shows
    qtbot.wait(50)
    assert (
        widget.layer.value == "fc1"
        and nodes_layer(viewer, key).metadata["topolens"]["layer"] == "fc1"
    )

    # a 0 ms timer: it ticks once per turn of the event loop, however fast the machine;
    # the show's steps note the turn they run in
    recorder = TickRecorder(interval_ms=0)
    turns_of_steps: list[int] = []
    step = show_module.IncrementalShow._step

    def noted(show_self):
        turns_of_steps.append(len(recorder.ticks))
        return step(show_self)

    monkeypatch.setattr(show_module.IncrementalShow, "_step", noted)
    recorder.start()
    qtbot.wait(50)
    started = time.perf_counter()
    show = switch_to(qtbot, widget, "pool2")
    finished = time.perf_counter()
    qtbot.wait(50)
    recorder.stop()
    stall = recorder.longest_gap()
    ticks = recorder.count(started, finished)
    print(
        f"\nexplorer switch fc1 -> pool2: synchronous show_analysis {1000 * sync_seconds:.0f} ms, "
        f"longest stall {1000 * sync_stall:.0f} ms; incremental {1000 * (finished - started):.0f} ms "
        f"over {len(show.layers)} layers in {ticks} event-loop turns, longest stall {1000 * stall:.0f} ms"
    )
    assert nodes_layer(viewer, key).metadata["topolens"]["layer"] == "pool2"
    assert widget.summary.value.startswith("pool2:")
    # the event loop ran between the show's steps: several turns, not one (not a timed
    # check: how long each took is the benchmark's, ``benchmarks/bench_responsiveness.py``)
    assert len(set(turns_of_steps)) >= 2, turns_of_steps
    assert ticks >= len(set(turns_of_steps))


def test_rapid_switches_end_on_the_last_choice(explorer, qtbot):
    viewer, widget, _analysis = explorer
    key = widget.analysis_key.value
    canvas = canvas_for(viewer)
    # built, then parked by a switch; the flow view stays picked, so a switch updates the
    # frame (four layers), the Mapper graph (two) and the flow (its layers) in that order
    for panel in ("diagram", "barcode", "mapper", "flow"):
        canvas.show_panel(panel)
    widget.class_search.value = "3"
    shown_fc1 = view_state(viewer, key)
    assert {meta for _, meta, _, _ in shown_fc1.values()} == {"fc1"}
    switch_to(qtbot, widget, "pool2")
    shown_pool2 = view_state(viewer, key)
    others = [layer for layer in viewer.layers if layer not in find_layers(viewer, key)]

    widget.layer.value = "fc1"  # the first switch: cut short half-way...
    first = widget.pending_show
    # (the frame's four layers go first: its axes, text, values and colour key; then the
    # Mapper's two, then the flow's)
    qtbot.waitUntil(lambda: len(first.layers) >= 5, timeout=SWITCH_TIMEOUT_MS)
    assert not first.done
    half_way = {meta for _, meta, _, _ in view_state(viewer, key).values()}
    assert half_way == {"fc1", "pool2"}  # some views show fc1 already, some still pool2
    widget.layer.value = "pool2"  # ...by the second, back to what the nodes still show
    second = widget.pending_show
    assert second is not first and first.cancelled
    qtbot.waitUntil(lambda: second.done, timeout=SWITCH_TIMEOUT_MS)
    assert second.error is None

    assert_same_views(shown_pool2, view_state(viewer, key))  # same layers, pool2 everywhere
    assert [layer for layer in viewer.layers if layer not in find_layers(viewer, key)] == others
    assert links_for(viewer).shown_layer(key) == "pool2"
    assert widget.layer.value == "pool2" and widget.summary.value.startswith("pool2:")
    dominant = nodes_layer(viewer, key).features["dominant_class"].astype(str).to_numpy()
    alpha = np.array(nodes_layer(viewer, key).face_color)[:, 3]
    assert np.all(alpha[dominant != "3"] < 0.5) and np.all(alpha[dominant == "3"] == 1.0)

    widget.layer.value = "fc1"  # and two quick switches the other way end on fc1
    widget.layer.value = "pool2"
    widget.layer.value = "fc1"
    qtbot.waitUntil(lambda: widget.pending_show.done, timeout=SWITCH_TIMEOUT_MS)
    assert_same_views(shown_fc1, view_state(viewer, key))
    assert links_for(viewer).shown_layer(key) == "fc1" and widget.summary.value.startswith("fc1:")


def test_a_cancelled_switch_leaves_no_view_missing_or_doubled(explorer, qtbot):
    """A view whose layer kind changes is removed and re-added; a cancel keeps the new one."""
    viewer, widget, analysis = explorer
    key = widget.analysis_key.value
    old_edges = edges_layer(viewer, key)
    meta = dict(old_edges.metadata["topolens"])
    # the edges view as a Points layer: the switch must replace it by a Shapes layer
    canvas = canvas_for(viewer)
    canvas.model.layers.remove(old_edges)
    stand_in = canvas.model.add_points(
        np.zeros((1, 2)), name=old_edges.name, metadata={"topolens": meta}
    )
    state_for(viewer).get(key).layers["mapper_edges"] = stand_in
    drawn = len(view_state(viewer, key))
    widget.layer.value = "pool2"
    first = widget.pending_show
    qtbot.waitUntil(
        lambda: any(layer.metadata["topolens"]["view"] == "mapper_edges" for layer in first.layers),
        timeout=SWITCH_TIMEOUT_MS,
    )
    first.cancel()
    (edges,) = find_layers(viewer, key, "mapper_edges")  # the new Shapes layer, not removed
    assert edges._type_string == "shapes" and edges.metadata["topolens"]["layer"] == "pool2"
    assert len(view_state(viewer, key)) == drawn  # the views drawn so far, none missing

    widget.layer.value = "fc1"
    qtbot.waitUntil(lambda: widget.pending_show.done, timeout=SWITCH_TIMEOUT_MS)
    state = view_state(viewer, key)
    assert {network_layer for _, network_layer, _, _ in state.values()} == {"fc1"}
    assert state["mapper_edges"][0] is edges
    assert len(edges.data) == len(analysis["fc1"].mapper.edges)
    assert len(nodes_layer(viewer, key).features) == len(analysis["fc1"].mapper.node_ids)


def test_resolve_class():
    names = ["disk", "ring", "two disks", "cross"]
    assert resolve_class("", names) is None
    assert resolve_class("Ring", names) == "ring"
    assert resolve_class("cr", names) == "cross"
    assert resolve_class("two", names) == "two disks"
    with pytest.raises(ValueError, match="several classes"):
        resolve_class("d", ["disk", "dot"])
    with pytest.raises(ValueError, match="no class matches"):
        resolve_class("square", names)
    with pytest.raises(ValueError, match="no class labels"):
        resolve_class("x", None)
