"""The views are napari layers in a topology canvas of their own, keyed by the analysis's ids."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import digits_analysis

from napari_topolens.errors import LayerError, TopoLensError
from napari_topolens.layout import mapper_layout
from napari_topolens.ui import view_data as vd
from napari_topolens.ui.links import links_for
from napari_topolens.ui.state import state_for
from napari_topolens.ui.views import (
    MAX_BARS,
    canvas_for,
    find_layers,
    highlight_class,
    recolor_nodes,
    set_edge_threshold,
    show_analysis,
    show_analysis_incrementally,
)


@pytest.fixture(scope="module")
def digits():
    return digits_analysis(120)


def every_group(analysis, layer="fc1", key="k", panel="mapper"):
    layout = analysis[layer].mapper_layout
    out = {}
    for group in (
        "frame",
        "matrices",
        "mapper",
        "diagram",
        "barcode",
        "flow",
        "blobs",
        "dendrogram",
    ):
        for data, kwargs, kind in vd.group_layer_data(
            group, analysis, layer, key, 0, layout, panel
        ):
            out.setdefault(kwargs["metadata"]["topolens"]["view"], []).append((data, kwargs, kind))
    return out


def show_every_panel(viewer):
    canvas = canvas_for(viewer)
    for panel in vd.PANELS:
        canvas.show_panel(panel)
    canvas.show_panel("mapper")
    return canvas


def test_layer_data_features_carry_the_analysis_ids(digits):
    _, analysis = digits
    views = every_group(analysis)
    result = analysis["fc1"]
    for name, items in views.items():
        assert len(items) == 1, name
        meta = items[0][1]["metadata"]["topolens"]
        assert meta["key"] == "k" and "analysis" not in meta  # state lives in ui.state
    graph = result.mapper
    ((nodes, kw, kind),) = views["mapper_nodes"]
    assert kind == "points" and len(nodes) == graph.n_nodes == len(kw["features"])
    assert kw["features"]["node"].tolist() == list(range(graph.n_nodes))
    assert kw["features"]["node_id"].tolist() == list(graph.node_ids)
    assert np.array_equal(kw["features"]["size"], graph.size)
    assert np.array_equal(nodes, result.mapper_layout)  # the layout saved with the analysis
    ((edges, kw, kind),) = views["mapper_edges"]
    assert kind == "shapes" and len(edges) == len(graph.edges) == len(kw["features"])
    assert np.array_equal(kw["features"][["source", "target"]].to_numpy(), graph.edges)
    assert np.allclose(kw["features"]["jaccard"], graph.edge_weight)
    pers = result.persistence
    ((points, kw, _),) = views["diagram"]
    table = kw["features"]
    assert len(points) == len(table) == sum(len(d) for d in pers.diagrams)
    for dim, diagram in enumerate(pers.diagrams):
        rows = table[table["dim"] == dim]
        assert rows["bar"].tolist() == list(range(len(diagram)))
        assert np.allclose(rows[["birth", "death"]].to_numpy(), diagram)
    ((bars, kw, _),) = views["barcode"]
    table = kw["features"]
    assert len(bars) == len(table)
    for dim, diagram in enumerate(pers.diagrams):
        rows = table[table["dim"] == dim]
        assert len(rows) == min(MAX_BARS, len(diagram))
        length = diagram[:, 1] - diagram[:, 0]
        shown = length[rows["bar"].to_numpy()]
        assert shown.min() >= np.sort(length)[::-1][len(rows) - 1]  # the most persistent
    flow = result.flow
    ((_bands, kw, _),) = views["flow"]
    assert np.array_equal(
        kw["features"][["stage", "cluster", "next_cluster", "count"]].to_numpy(), flow.flows
    )
    ((_blocks, kw, _),) = views["flow_clusters"]
    for s, c, count in kw["features"][["stage", "cluster", "count"]].to_numpy():
        assert count == np.sum(flow.memberships[s] == c)
    ((_pts, kw, _),) = views["blob_points"]
    assert kw["features"]["point"].tolist() == list(range(len(result.cloud)))
    ((_tree, kw, _),) = views["dendrogram_tree"]
    assert kw["features"]["merge"].tolist() == list(range(len(result.dendrogram.linkage)))
    ((heat, kw, _),) = views["dendrogram_heatmap"]
    assert np.array_equal(heat, result.dendrogram.distances)
    ((matrix, kw, _),) = views["layer_distances"]
    assert np.allclose(matrix, analysis.layer_distances[analysis.config.layer_distance])
    ((matrix, kw, _),) = views["cka"]
    assert np.allclose(matrix, analysis.layer_distances["cka"])


def test_mapper_layout_is_seeded_saved_and_separates_nodes(digits):
    _, analysis = digits
    graph = analysis["fc1"].mapper
    a, b = mapper_layout(graph, seed=0), mapper_layout(graph, seed=0)
    assert np.array_equal(a, b) and np.array_equal(a, analysis["fc1"].mapper_layout)
    assert np.all((a > 0) & (a < 1))
    gaps = np.linalg.norm(a[:, None] - a[None], axis=-1) + np.eye(len(a))
    assert gaps.min() > 0.01


def test_report_and_napari_draw_the_same_mapper_coordinates(make_napari_viewer, digits):
    from napari_topolens.report.figures import report_mapper_positions

    _, analysis = digits
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis, "pool1")
    (nodes,) = find_layers(viewer, view="mapper_nodes")
    report_xy = report_mapper_positions(analysis["pool1"], seed=0)
    napari_rc = np.asarray(nodes.data)
    # the report draws (x, y) = (col, 1 - row) of the very positions napari draws
    np.testing.assert_array_equal(report_xy[:, 0], napari_rc[:, 1])
    np.testing.assert_array_equal(report_xy[:, 1], 1.0 - napari_rc[:, 0])


def test_views_live_in_their_own_canvas_with_their_own_camera(make_napari_viewer, digits):
    images, analysis = digits
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="digits")
    show_analysis(viewer, analysis, image_layer=image_layer)
    canvas = canvas_for(viewer)
    # the image viewer holds the inputs, the overlay and the gallery, nothing more
    image_side = {layer.metadata.get("topolens", {}).get("view") for layer in viewer.layers}
    assert image_side == {None, "overlay", "gallery", "gallery_text"}
    assert len(viewer.layers) == 4
    assert viewer.layers.selection.active is image_layer
    views = {layer.metadata["topolens"]["view"] for layer in canvas.model.layers}
    assert {"mapper_nodes", "mapper_edges", "panel_text", "panel_axes"} <= views
    before = (canvas.model.scene.camera.center, canvas.model.scene.camera.zoom)
    viewer.scene.camera.zoom *= 8
    viewer.scene.camera.center = (0, 10, 10)
    viewer.canvas.grid.enabled = True
    viewer.dims.ndisplay = 3
    after = (canvas.model.scene.camera.center, canvas.model.scene.camera.zoom)
    assert after == before  # zoom, grid and 3D of the image viewer never touch the views
    assert canvas.model.dims.ndisplay == 2 and not canvas.model.canvas.grid.enabled
    viewer.dims.ndisplay = 2
    viewer.canvas.grid.enabled = False


def test_one_panel_at_a_time_framed_with_titles_and_ticks(make_napari_viewer, digits):
    _, analysis = digits
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis)
    canvas = show_every_panel(viewer)
    entry = state_for(viewer).get(state_for(viewer).keys[0])
    for panel in vd.PANELS:
        canvas.show_panel(panel)
        visible = {
            view
            for view, layer in entry.layers.items()
            if layer in canvas.model.layers and layer.visible and view not in vd.PANEL_LAYERS
        }
        expected = set(vd.PANEL_VIEWS[panel]) - {"color_key"}
        assert visible == expected, panel
        text = entry.layers["panel_text"].features["text"].tolist()
        assert any(vd.PANEL_TITLES[panel] in t for t in text), panel
        frame = entry.layers["panel_axes"].features["what"].tolist()
        if panel in ("diagram", "barcode"):
            assert frame.count("tick") >= 3, panel  # ticks on the value axes
            numbers = [t for t in text if t.replace(".", "").isdigit()]
            assert len(numbers) >= 3, panel
        if panel in ("layer_distances", "cka"):
            matrix = np.asarray(
                analysis.layer_distances["cka" if panel == "cka" else "sliced_wasserstein"]
            )
            values = entry.layers["panel_values"].features["text"].tolist()
            assert len(values) == matrix.size
            for shown, value in zip(values, matrix.ravel()):
                significant = shown.split("e")[0].lstrip("-").replace(".", "").lstrip("0")
                assert len(significant) <= 3, shown
                assert float(shown) == pytest.approx(value, rel=5e-3, abs=1e-9)
    for panel in ("dendrogram", "cka", "layer_distances"):  # each heatmap: a titled key
        canvas.show_panel(panel)
        title = vd.panel_key(analysis, entry.network_layer, panel)[0]
        assert entry.layers["color_key"].visible
        assert title in entry.layers["panel_text"].features["text"].tolist()


def test_hover_readout_gives_full_matrix_values_and_node_details(make_napari_viewer, digits):
    _, analysis = digits
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis)
    canvas = show_every_panel(viewer)
    entry = state_for(viewer).get(state_for(viewer).keys[0])
    canvas.show_panel("layer_distances")
    matrix_layer = entry.layers["layer_distances"]
    full = np.asarray(analysis.layer_distances["sliced_wasserstein"], dtype=np.float64)
    position = matrix_layer.data_to_world((0, 1))
    text = canvas.hover_at(tuple(position))
    assert repr(float(full[0, 1])) in text and analysis.layers[0] in text
    canvas.show_panel("mapper")
    nodes = entry.layers["mapper_nodes"]
    node = int(np.argmax(nodes.features["size"]))
    where = nodes.data_to_world(nodes.data[node])
    text = canvas.hover_at(tuple(where))
    assert f"node {node} " in text and "purity" in text
    viewer.layers.selection.active = viewer.layers[0]  # whichever layer is active
    assert canvas.hover_at(tuple(where)) == text


def test_view_layers_are_locked_against_edits(make_napari_viewer, digits):
    _, analysis = digits
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis)
    canvas = show_every_panel(viewer)
    # no active layer: napari's key bindings (Delete, the mode keys) have nothing to act on
    assert canvas.model.layers.selection.active is None
    for layer in canvas.model.layers:
        assert not layer.editable, layer.name
        if layer._type_string in ("points", "shapes"):
            layer.mode = "select"
            assert layer.mode == "pan_zoom", layer.name  # held in pan/zoom: no drag, no draw
        layer.refresh()  # napari re-slicing does not unlock it
        assert not layer.editable, layer.name


def test_explorer_functions_recolor_threshold_and_fade(make_napari_viewer, digits):
    _images, analysis = digits
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis)  # no image layer: the images layer is created
    (images_layer,) = find_layers(viewer, view="images")
    key = images_layer.metadata["topolens"]["key"]
    entry = state_for(viewer).get(key)
    nodes = entry.layers["mapper_nodes"]
    edges = entry.layers["mapper_edges"]
    graph = analysis["fc1"].mapper
    by_class = np.array(nodes.face_color)
    recolor_nodes(viewer, key, "purity")
    assert entry.color_by == "purity"
    by_purity = np.array(nodes.face_color)
    assert not np.allclose(by_class, by_purity)
    cmap = vd.colormap_for("purity")
    lowest, highest = int(np.argmin(graph.purity)), int(np.argmax(graph.purity))
    np.testing.assert_allclose(by_purity[lowest], cmap.map([graph.purity[lowest]])[0], atol=1e-6)
    np.testing.assert_allclose(by_purity[highest], cmap.map([graph.purity[highest]])[0], atol=1e-6)
    key_layer = entry.layers["color_key"]
    assert key_layer.visible  # a key for purity, titled
    assert "purity" in entry.layers["panel_text"].features["text"].tolist()
    assert key_layer.contrast_limits == [0.0, 1.0]
    recolor_nodes(viewer, key, "mean_lens")
    lens = np.asarray(graph.mean_lens)
    assert key_layer.contrast_limits == pytest.approx([lens.min(), lens.max()])
    with pytest.raises(TopoLensError):
        recolor_nodes(viewer, key, "colour of the sky")
    with pytest.raises(TopoLensError, match="predictions"):
        recolor_nodes(viewer, key, "predicted_class")
    threshold = float(np.median(graph.edge_weight))
    set_edge_threshold(viewer, key, threshold)
    assert len(edges.data) == len(edges.features) == int(np.sum(graph.edge_weight >= threshold))
    set_edge_threshold(viewer, key, 0.0)
    assert len(edges.data) == len(graph.edges)
    recolor_nodes(viewer, key, "dominant_class")
    assert not key_layer.visible  # classes: the legend says them
    cls = nodes.features["dominant_class"].iloc[0]
    highlight_class(viewer, key, cls)
    alpha = np.array(nodes.face_color)[:, 3]
    same = nodes.features["dominant_class"].to_numpy() == cls
    assert np.all(alpha[same] == 1.0) and np.all(alpha[~same] < 0.5)
    highlight_class(viewer, key, None)
    assert np.all(np.array(nodes.face_color)[:, 3] == 1.0)


def test_colour_by_predicted_class_and_correct_share(make_napari_viewer, digits):
    import copy

    _, analysis = digits
    analysis = copy.copy(analysis)
    n_images = int(max(r.cloud.image_index.max() for r in analysis)) + 1
    truth = np.asarray(analysis.labels)
    predictions = truth.copy()
    predictions[::3] = (predictions[::3] + 1) % 10  # a model wrong on every third image
    predictions[1] = -1  # unknown
    analysis.predictions = predictions[:n_images]
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis, "fc1", color_by="correct")
    entry = state_for(viewer).get(state_for(viewer).keys[0])
    nodes = entry.layers["mapper_nodes"]
    result = analysis["fc1"]
    share = nodes.features["correct_share"].to_numpy()
    for node in range(result.mapper.n_nodes):
        images = result.cloud.image_index[result.mapper.node_members(node)]
        known = predictions[images] >= 0
        expected = np.mean(predictions[images][known] == truth[images][known])
        assert share[node] == pytest.approx(expected)
    cmap = vd.colormap_for("correct")
    np.testing.assert_allclose(np.array(nodes.face_color), cmap.map(share), atol=1e-6)
    recolor_nodes(viewer, key := entry.key, "predicted_class")
    colours = np.array(nodes.face_color)
    for node, name in enumerate(nodes.features["predicted_class"]):
        code = analysis.class_names.index(name)
        np.testing.assert_allclose(colours[node], vd.categorical_colors([code])[0])
    assert "predicted" in canvas_for(viewer).hover_at(tuple(nodes.data_to_world(nodes.data[0])))
    del key


@pytest.mark.slow
def test_switching_the_layer_updates_the_views_in_place(make_napari_viewer, digits, qtbot):
    images, analysis = digits
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="digits")
    done = []
    show = show_analysis_incrementally(
        viewer, analysis, image_layer=image_layer, on_done=done.append
    )
    assert not done and not show.done  # nothing added yet: one layer per event-loop turn
    qtbot.waitUntil(lambda: bool(done), timeout=60_000)
    canvas = show_every_panel(viewer)
    first = list(canvas.model.layers)
    image_side = list(viewer.layers)
    key = state_for(viewer).keys[0]
    again = show_analysis(viewer, analysis, "pool1", image_layer=image_layer)
    assert list(canvas.model.layers) == first  # the same layer objects, in the same order
    assert list(viewer.layers) == image_side
    entry = state_for(viewer).get(key)
    nodes = entry.layers["mapper_nodes"]
    assert nodes in again and entry.network_layer == "pool1"
    graph = analysis["pool1"].mapper
    assert len(nodes.data) == len(nodes.features) == graph.n_nodes
    edges = entry.layers["mapper_edges"]
    assert len(edges.data) == len(edges.features) == len(graph.edges)
    assert "dendrogram_tree" not in entry.layers  # hidden: parked until picked (ui.show)
    canvas.show_panel("dendrogram")
    tree = entry.layers["dendrogram_tree"]
    assert len(tree.data) == len(analysis["pool1"].dendrogram.linkage)
    canvas.show_panel("mapper")
    members = links_for(viewer).select_nodes(key, [0])
    np.testing.assert_array_equal(members, np.unique(graph.node_members(0)))
    with pytest.raises(LayerError):
        show_analysis(viewer, analysis, "conv9", image_layer=image_layer)


def test_a_cancelled_incremental_show_removes_its_layers(make_napari_viewer, digits, qtbot):
    images, analysis = digits
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="digits")
    show = show_analysis_incrementally(viewer, analysis, image_layer=image_layer)
    qtbot.waitUntil(lambda: len(viewer.layers) >= 3, timeout=60_000)
    show.cancel()
    assert list(viewer.layers) == [image_layer] and show.done
    assert len(canvas_for(viewer).model.layers) == 0 and len(state_for(viewer)) == 0
    qtbot.wait(50)
    assert list(viewer.layers) == [image_layer]


def test_a_second_analysis_sits_beside_the_first_with_the_same_layout(make_napari_viewer, digits):
    import copy

    _, analysis = digits
    variant = copy.copy(analysis)  # e.g. a perturbed variant of the same images
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis)
    show_analysis(viewer, variant)
    state = state_for(viewer)
    first, second = (state.get(k) for k in state.keys)
    assert (first.slot, second.slot) == (0, 1)
    a, b = first.layers["mapper_nodes"], second.layers["mapper_nodes"]
    _lo_a, hi_a = a.extent.world[:, -2:]
    lo_b, _ = b.extent.world[:, -2:]
    assert lo_b[1] > hi_a[1]  # to the right, not overlapping
    np.testing.assert_array_equal(a.data, b.data)  # the same layout


def test_a_pick_shows_the_colour_keys_of_every_analysis_in_one_napari_batch(
    make_napari_viewer, digits, monkeypatch
):
    # each visibility change outside a batch is a pass of napari's over every canvas
    # layer: a pick's frame turn shows (or hides) both analyses' colour keys together
    from napari_topolens.ui import collector

    _, analysis = digits
    _, other = digits_analysis(80)
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis, key="a")
    show_analysis(viewer, other, key="b")
    canvas = show_every_panel(viewer)
    keys = [state_for(viewer).get(key).layers["color_key"] for key in ("a", "b")]
    assert not any(layer.visible for layer in keys)  # the Mapper graph's classes: no strip
    monkeypatch.setattr(collector, "collections_are_cheap", lambda: True)
    layers = canvas.model.layers
    batch = [False]
    layers.events.begin_batch.connect(lambda _e: batch.__setitem__(0, True))
    layers.events.end_batch.connect(lambda _e: batch.__setitem__(0, False))
    changes: list[tuple[bool, bool]] = []
    for layer in keys:
        layer.events.visible.connect(
            lambda _e, layer=layer: changes.append((bool(layer.visible), batch[0]))
        )
    canvas.show_panel("cka")
    assert all(layer.visible for layer in keys)  # a heatmap: its strip
    assert changes == [(True, True), (True, True)]
