"""Regressions: empty views, several analyses in one viewer, camera, titles."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import digits_analysis, dock_analysis

from napari_topolens import load_sample
from napari_topolens.ui import view_data as vd
from napari_topolens.ui.layer_update import update_layer
from napari_topolens.ui.links import links_for
from napari_topolens.ui.state import state_for
from napari_topolens.ui.views import (
    canvas_for,
    find_layers,
    show_analysis,
    show_analysis_incrementally,
)


@pytest.fixture(scope="module")
def one_image():
    """One digit at all positions: pool2 has 4 points, so an empty Mapper graph and no H1."""
    images, analysis = digits_analysis(1, layers=("pool1", "pool2"), sampling="all_positions")
    assert analysis["pool2"].mapper.n_nodes == 0  # the case under test
    return images, analysis


@pytest.fixture(scope="module")
def digits():
    return digits_analysis(60)


def _title_texts(viewer, key):
    (titles,) = find_layers(viewer, key, "panel_text")
    return " | ".join(titles.features["text"].tolist())


def _every_panel(viewer):
    canvas = canvas_for(viewer)
    for panel in vd.PANELS:
        canvas.show_panel(panel)
    canvas.show_panel("mapper")
    return canvas


def test_an_empty_mapper_graph_shows_as_empty_layers(make_napari_viewer, one_image):
    images, analysis = one_image
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="one")
    show_analysis(viewer, analysis, "pool2", image_layer=image_layer)
    (key,) = links_for(viewer).keys
    canvas = _every_panel(viewer)
    (nodes,) = find_layers(viewer, key, "mapper_nodes")
    (edges,) = find_layers(viewer, key, "mapper_edges")
    assert len(nodes.data) == 0 and len(nodes.features) == 0
    assert len(edges.data) == 0 and len(edges.features) == 0
    assert "no nodes" in _title_texts(viewer, key)
    (diagram,) = find_layers(viewer, key, "diagram")
    assert (diagram.features["dim"] == 1).sum() == 0
    # switching to the non-empty layer and back updates the same layers in place
    show_analysis(viewer, analysis, "pool1")
    assert len(nodes.data) == analysis["pool1"].mapper.n_nodes > 0
    show_analysis(viewer, analysis, "pool2")
    assert len(nodes.data) == 0 and nodes in canvas.model.layers
    assert "no nodes" in _title_texts(viewer, key)
    # a pixel click finds no nodes and does not fail
    found = links_for(viewer).pixel_clicked(key, 0, 3, 3)
    assert len(found["mapper_nodes"]) == 0


def test_update_layer_takes_an_empty_graph(make_napari_viewer, one_image):
    _, analysis = one_image
    viewer = make_napari_viewer()
    layout1, layout2 = analysis["pool1"].mapper_layout, analysis["pool2"].mapper_layout
    full = {
        kw["metadata"]["topolens"]["view"]: (d, kw, k)
        for d, kw, k in vd.group_layer_data("mapper", analysis, "pool1", "k", 0, layout1, "mapper")
    }
    empty = {
        kw["metadata"]["topolens"]["view"]: (d, kw, k)
        for d, kw, k in vd.group_layer_data("mapper", analysis, "pool2", "k", 0, layout2, "mapper")
    }
    for view in ("mapper_nodes", "mapper_edges"):
        data, kwargs, kind = full[view]
        layer = viewer._add_layer_from_data(data, kwargs, kind)[0]
        assert update_layer(layer, empty[view])
        assert len(layer.data) == 0 and len(layer.features) == 0


def test_an_empty_graph_shows_incrementally(make_napari_viewer, one_image, qtbot):
    images, analysis = one_image
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="one")
    errors = []
    show = show_analysis_incrementally(
        viewer, analysis, "pool2", image_layer=image_layer, on_error=errors.append
    )
    qtbot.waitUntil(lambda: show.done, timeout=20000)
    assert errors == [] and show.error is None
    assert len(find_layers(viewer, None, "mapper_nodes")[0].data) == 0


def _extent_rc(layer):
    """World (row0, col0, row1, col1) of a layer's last two axes."""
    (r0, c0), (r1, c1) = np.asarray(layer.extent.world)[:, -2:]
    return r0, c0, r1, c1


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.slow
def test_two_analyses_get_their_own_slots_and_galleries(make_napari_viewer, digits, one_image):
    images, analysis = digits
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="digits")
    show_analysis(viewer, analysis, "fc1", image_layer=image_layer)
    # a second analysis of the same image layer, and a third with a stack made here
    show_analysis(viewer, one_image[1], "pool1", image_layer=image_layer)
    show_analysis(viewer, _copy(one_image[1]), "pool1")
    keys = links_for(viewer).keys
    assert len(keys) == 3
    _every_panel(viewer)
    state = state_for(viewer)
    # in the canvas, each analysis draws in its own slot: nothing of one overlaps another
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            for la in state.get(a).layers.values():
                for lb in state.get(b).layers.values():
                    if {"images", "overlay", "gallery", "gallery_text"} & {
                        la.metadata["topolens"]["view"],
                        lb.metadata["topolens"]["view"],
                    }:
                        continue
                    assert not _overlap(_extent_rc(la), _extent_rc(lb)), (la.name, lb.name)
    # in the image viewer: each overlay on its own image layer, galleries apart
    for key in keys:
        (overlay,) = find_layers(viewer, key, "overlay")
        own = links_for(viewer).image_layer_of(key)
        np.testing.assert_allclose(_extent_rc(overlay), _extent_rc(own))
    galleries = [_extent_rc(find_layers(viewer, key, "gallery")[0]) for key in keys]
    made = _extent_rc(find_layers(viewer, keys[2], "images")[0])
    assert not _overlap(made, _extent_rc(image_layer))  # the stack made here sits apart
    links = links_for(viewer)
    for key in keys:
        links.select_nodes(key, [0])
    galleries = [_extent_rc(find_layers(viewer, key, "gallery")[0]) for key in keys]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not _overlap(galleries[i], galleries[j]), (i, j)


def _copy(analysis):
    """The same analysis as a different object (a second key in the viewer)."""
    import copy

    return copy.copy(analysis)


def test_a_pixel_click_goes_to_the_topmost_or_active_analysed_image(make_napari_viewer, digits):
    images, analysis = digits
    viewer = make_napari_viewer()
    lower = viewer.add_image(images, name="lower")
    show_analysis(viewer, analysis, "fc1", image_layer=lower)
    upper = viewer.add_image(images, name="upper")
    other = _copy(analysis)
    show_analysis(viewer, other, "fc1", image_layer=upper)
    links = links_for(viewer)
    key_lower, key_upper = links.keys
    result = analysis["fc1"]
    image = int(result.cloud.image_index[result.mapper.members[0]])  # in Mapper node 0
    position = upper.data_to_world((image, 3, 3))
    viewer.layers.selection.active = None
    result = links.click_at(position)
    assert result["key"] == key_upper and result["keys"] == [key_upper]
    # the active analysed image layer wins over the topmost one
    viewer.layers.selection.active = lower
    result = links.click_at(position)
    assert result["key"] == key_lower
    # two analyses of one image layer: both are ringed
    third = _copy(analysis)
    show_analysis(viewer, third, "fc1", image_layer=upper)
    viewer.layers.selection.active = upper
    result = links.click_at(position)
    assert set(result["keys"]) == {key_upper, links.keys[-1]}
    for key in result["keys"]:
        (nodes,) = find_layers(viewer, key, "mapper_nodes")
        assert nodes.features["highlighted"].any()


def _visible_rect(canvas):
    """World (row0, col0, row1, col1) the topology canvas shows."""
    h, w = canvas.qt_viewer.canvas.size  # napari's canvas size is (height, width)
    camera = canvas.model.scene.camera
    zoom = camera.zoom
    cy, cx = camera.center[-2:]
    return cy - h / 2 / zoom, cx - w / 2 / zoom, cy + h / 2 / zoom, cx + w / 2 / zoom


@pytest.mark.slow
def test_the_views_are_framed_after_a_show_and_after_reading(
    make_napari_viewer, digits, tmp_path, qtbot
):
    images, analysis = digits
    viewer = make_napari_viewer(show=True)
    image_layer = viewer.add_image(images, name="digits")
    show_analysis(viewer, analysis, "fc1", image_layer=image_layer)
    qtbot.wait(50)
    canvas = canvas_for(viewer)
    canvas.fit()
    (key,) = links_for(viewer).keys
    for panel in ("mapper", "cka"):
        canvas.show_panel(panel)
        seen = _visible_rect(canvas)
        for view in vd.PANEL_VIEWS[panel]:
            layer = state_for(viewer).get(key).layers[view]
            if not layer.visible:
                continue
            r0, c0, r1, c1 = _extent_rc(layer)
            assert seen[0] <= r0 and seen[1] <= c0 and r1 <= seen[2] and c1 <= seen[3], (
                layer.name,
                seen,
            )
    analysis.save(tmp_path / "saved.topolens")
    fresh = make_napari_viewer(show=True)
    fresh.add_image(images[:1], name="first")
    fresh.open(str(tmp_path / "saved.topolens"), plugin="napari-topolens")
    qtbot.waitUntil(lambda: bool(find_layers(fresh, None, "mapper_nodes")), timeout=30000)
    qtbot.waitUntil(
        lambda: (
            bool(state_for(fresh).keys)
            and bool(state_for(fresh).get(state_for(fresh).keys[0]).network_layer)
        ),
        timeout=30000,
    )
    (nodes,) = find_layers(fresh, None, "mapper_nodes")
    qtbot.wait(50)
    fresh_canvas = canvas_for(fresh)
    fresh_canvas.show_panel("mapper")
    seen = _visible_rect(fresh_canvas)
    r0, c0, r1, c1 = _extent_rc(nodes)
    assert seen[0] <= r0 and seen[1] <= c0 and r1 <= seen[2] and c1 <= seen[3], seen


def test_the_flow_subtitle_names_the_best_stage(digits):
    _, analysis = digits
    items = vd.panel_text_data(analysis, "fc1", "k", 0, "flow")
    texts = items[0][1]["features"]["text"].tolist()
    flow = analysis["fc1"].flow
    n = int(np.sum(np.unique(flow.memberships[flow.best_stage]) >= 0))
    expected = f"best stage: cut {flow.thresholds[flow.best_stage]:.3g}, {n} clusters"
    assert expected in texts
    stage = [t for t in texts if t in ("class", "fine", "best", "mid", "coarse")]
    assert len(stage) == len(flow.stage_names)


def test_the_analysis_widget_refuses_images_with_two_stack_axes(make_napari_viewer):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    sample = load_sample("digits")
    layer = viewer.add_image(sample.images[:12].reshape(3, 4, 8, 8), name="tzyx")
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None
    widget.image_layer.value = layer
    before_layers = [l.name for l in viewer.layers]
    before = len(notification_manager.records)
    assert widget.run() is None
    assert (
        widget.status.value.startswith("Error:")
        and "2 axes before the images" in widget.status.value
    )
    (note,) = notification_manager.records[before:]
    assert str(note.message) in widget.status.value
    assert [l.name for l in viewer.layers] == before_layers


def test_matrix_labels_name_the_rows_and_number_the_columns(digits):
    _, analysis = digits
    text_item, values_item = vd.panel_text_data(analysis, "fc1", "k", 0, "cka")
    texts = text_item[1]["features"]["text"].tolist()
    n = len(analysis.layers)
    for i, name in enumerate(analysis.layers):
        assert f"{i + 1} {name}" in texts  # short names are kept whole
        assert str(i + 1) in texts
    values = values_item[1]["features"]["text"]
    assert len(values) == n * n and values.str.len().max() <= 5


def test_analysis_keys_name_the_sample_else_the_image_layer(make_napari_viewer):
    from types import SimpleNamespace

    state = state_for(make_napari_viewer())
    assert (
        state.new_key(SimpleNamespace(provenance={"sample": "digits", "image_layer": "x"}))
        == "digits"
    )
    assert state.new_key(SimpleNamespace(provenance={"image_layer": "my scans"})) == "my scans"
    assert state.new_key(SimpleNamespace(provenance={})) == "analysis"


def test_the_blob_graph_axis_names_sit_in_its_margins(digits):
    """Inside the frame, clear of the points, in the smallest slot a laptop gives a base
    beside its variant (about 180 px), at the size the canvas would draw them."""
    _, analysis = digits
    (text_item, _) = vd.panel_text_data(analysis, "fc1", "k", 0, "blobs")
    texts = text_item[1]["features"]["text"].tolist()
    pos = np.asarray(text_item[0], dtype=np.float64).reshape(-1, 2)
    slot_px = 180.0
    longest = max(len(t) for t in texts)
    size = np.clip(slot_px / (vd.TEXT_PX_PER_CHAR_POINT * longest), vd.MIN_PANEL_TEXT_SIZE, 10)
    for name in ("PC1 →", "PC2 ↑"):
        row, col = pos[texts.index(name)]
        half = vd.TEXT_PX_PER_CHAR_POINT * size * len(name) / 2 / slot_px
        assert half <= col <= 1 - half, (name, col, half)
        assert 0 < row < 1 and not (0.07 < row < 0.93), (name, row)  # a margin, not the points
