"""Regressions from review 4: empty views, several analyses in one viewer, camera, titles."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import digits_analysis

from napari_topolens import load_sample
from napari_topolens.ui.links import links_for
from napari_topolens.ui.views import (
    Geometry,
    find_layers,
    show_analysis,
    show_analysis_incrementally,
    titles_layer_data,
    update_layer,
    view_layer_data,
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
    (titles,) = find_layers(viewer, key, "titles")
    return titles.features["text"].tolist()


def test_an_empty_mapper_graph_shows_as_empty_layers(make_napari_viewer, one_image):
    images, analysis = one_image
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="one")
    show_analysis(viewer, analysis, "pool2", image_layer=image_layer)
    (key,) = links_for(viewer).keys
    (nodes,) = find_layers(viewer, key, "mapper_nodes")
    (edges,) = find_layers(viewer, key, "mapper_edges")
    assert len(nodes.data) == 0 and len(nodes.features) == 0
    assert len(edges.data) == 0 and len(edges.features) == 0
    assert "Mapper graph: no nodes" in _title_texts(viewer, key)
    (diagram,) = find_layers(viewer, key, "diagram")
    assert (diagram.features["dim"] == 1).sum() == 0
    # switching to the non-empty layer and back updates the same layers in place
    show_analysis(viewer, analysis, "pool1")
    assert len(nodes.data) == analysis["pool1"].mapper.n_nodes > 0
    show_analysis(viewer, analysis, "pool2")
    assert len(nodes.data) == 0 and nodes in viewer.layers
    assert "Mapper graph: no nodes" in _title_texts(viewer, key)
    # a pixel click finds no nodes and does not fail
    found = links_for(viewer).pixel_clicked(key, 0, 3, 3)
    assert len(found["mapper_nodes"]) == 0


def test_update_layer_takes_an_empty_graph(make_napari_viewer, one_image):
    _, analysis = one_image
    viewer = make_napari_viewer()
    geometry = Geometry(8.0, 8.0, (-0.5, -0.5))
    full = {
        kw["metadata"]["topolens"]["view"]: (d, kw, k)
        for d, kw, k in view_layer_data(analysis, "pool1", "k", geometry)
    }
    empty = {
        kw["metadata"]["topolens"]["view"]: (d, kw, k)
        for d, kw, k in view_layer_data(analysis, "pool2", "k", geometry)
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


def _frames(viewer, key):
    """World boxes of the grid cells and gallery of one analysis (from its axes layer)."""
    (axes,) = find_layers(viewer, key, "axes")
    out = []
    for shape, what in zip(axes.data, axes.features["what"]):
        if str(what).startswith("frame:"):
            lo, hi = shape[:, -2:].min(axis=0), shape[:, -2:].max(axis=0)
            out.append((lo[0], lo[1], hi[0], hi[1]))
    return out


def test_two_analyses_get_their_own_bands(make_napari_viewer, digits, one_image):
    images, analysis = digits
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="digits")
    show_analysis(viewer, analysis, "fc1", image_layer=image_layer)
    # a second analysis of the same image layer, and a third with a stack made here
    show_analysis(viewer, one_image[1], "pool1", image_layer=image_layer)
    show_analysis(viewer, _copy(one_image[1]), "pool1")
    keys = links_for(viewer).keys
    assert len(keys) == 3
    boxes = {key: _frames(viewer, key) for key in keys}
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            for box_a in boxes[a]:
                for box_b in boxes[b]:
                    assert not _overlap(box_a, box_b), (a, b, box_a, box_b)
            # no drawn layer of one analysis overlaps one of another's
            for la in find_layers(viewer, a):
                for lb in find_layers(viewer, b):
                    if {la.metadata["topolens"]["view"], lb.metadata["topolens"]["view"]} & {
                        "images",
                        "overlay",
                    }:
                        continue
                    assert not _overlap(_extent_rc(la), _extent_rc(lb)), (la.name, lb.name)
    # each overlay lies on its own image layer
    for key in keys:
        (overlay,) = find_layers(viewer, key, "overlay")
        own = links_for(viewer).image_layer_of(key)
        np.testing.assert_allclose(_extent_rc(overlay), _extent_rc(own))
    # the third analysis's stack (made here) sits in its own band, below the others
    (made,) = find_layers(viewer, keys[2], "images")
    assert _extent_rc(made)[0] > max(box[2] for key in keys[:2] for box in boxes[key])
    # selecting a node of the second analysis fills its own gallery, in its band
    links = links_for(viewer)
    links.select_nodes(keys[1], [0])
    (gallery,) = find_layers(viewer, keys[1], "gallery")
    frame = _frames(viewer, keys[1])[-1]  # the gallery's frame comes after the grid's
    g = _extent_rc(gallery)
    assert frame[0] - 1e-6 <= g[0] and g[2] <= frame[2] + 1e-6


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


def _visible_rect(viewer):
    """World (row0, col0, row1, col1) the canvas shows."""
    canvas = viewer.window._qt_viewer.canvas
    h, w = canvas.size  # napari's canvas size is (height, width)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    zoom = camera.zoom
    cy, cx = camera.center[-2:]
    return cy - h / 2 / zoom, cx - w / 2 / zoom, cy + h / 2 / zoom, cx + w / 2 / zoom


def test_the_views_are_on_screen_after_a_show_and_after_reading(
    make_napari_viewer, digits, tmp_path, qtbot
):
    images, analysis = digits
    viewer = make_napari_viewer(show=True)
    image_layer = viewer.add_image(images, name="digits")  # napari zooms onto the 8x8 digit
    show_analysis(viewer, analysis, "fc1", image_layer=image_layer)
    (key,) = links_for(viewer).keys
    seen = _visible_rect(viewer)
    for layer in find_layers(viewer, key, "mapper_nodes") + find_layers(viewer, key, "cka"):
        r0, c0, r1, c1 = _extent_rc(layer)
        assert seen[0] <= r0 and seen[1] <= c0 and r1 <= seen[2] and c1 <= seen[3], (
            layer.name,
            seen,
        )
    analysis.save(tmp_path / "saved.topolens")
    fresh = make_napari_viewer(show=True)
    fresh.add_image(images[:1], name="first")
    fresh.open(str(tmp_path / "saved.topolens"), plugin="napari-topolens")
    qtbot.waitUntil(lambda: bool(find_layers(fresh, None, "mapper_nodes")), timeout=10000)
    (nodes,) = find_layers(fresh, None, "mapper_nodes")
    qtbot.wait(50)
    seen = _visible_rect(fresh)
    r0, c0, r1, c1 = _extent_rc(nodes)
    assert seen[0] <= r0 and seen[1] <= c0 and r1 <= seen[2] and c1 <= seen[3], seen


def test_the_flow_subtitle_names_the_best_stage(make_napari_viewer, digits):
    _, analysis = digits
    geometry = Geometry(8.0, 8.0, (-0.5, -0.5))
    ((_, kwargs, _),) = titles_layer_data(analysis, "fc1", "k", geometry)
    texts = kwargs["features"]["text"].tolist()
    flow = analysis["fc1"].flow
    n = int(np.sum(np.unique(flow.memberships[flow.best_stage]) >= 0))
    expected = f"best: t = {flow.thresholds[flow.best_stage]:.3g}, {n} clusters"
    assert expected in texts
    assert "best: best" not in texts


def test_the_analysis_widget_refuses_images_with_two_stack_axes(make_napari_viewer):
    from napari.utils.notifications import notification_manager

    from napari_topolens.ui.analysis_widget import AnalysisWidget

    viewer = make_napari_viewer()
    sample = load_sample("digits")
    layer = viewer.add_image(sample.images[:12].reshape(3, 4, 8, 8), name="tzyx")
    widget = AnalysisWidget(viewer)
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


def test_matrix_labels_are_short_enough_for_the_whole_grid_zoom(digits):
    from napari_topolens.ui.views import matrix_layer_data

    _, analysis = digits
    geometry = Geometry(8.0, 8.0, (-0.5, -0.5))
    *_, (_, kwargs, _) = matrix_layer_data(analysis, "k", geometry)
    table = kwargs["features"]
    n = len(analysis.layers)
    columns = table[table["role"] == "column"]["text"].tolist()
    rows = table[table["role"] == "row"]["text"].tolist()
    assert columns == [str(i + 1) for i in range(n)] * 2  # numbered, for both matrices
    assert rows == [f"{i + 1} {name}" for i, name in enumerate(analysis.layers)] * 2  # short names
    values = table[table["role"] == "value"]["text"]
    # CKA (0..1) always fits; distances only when no value needs three digits side by side
    assert len(values) in (n * n, 2 * n * n) and values.str.len().max() <= 3
    assert values.map(lambda v: sum(c.isdigit() for c in v)).max() <= 2
    # the stage names sit under the flow, in two alternating rows
    ((pos, kw, _),) = titles_layer_data(analysis, "fc1", "k", geometry)
    stage = kw["features"]["text"].isin(["class", "fine", "best", "mid", "coarse"]).to_numpy()
    assert stage.sum() == len(analysis["fc1"].flow.stage_names)
    rows_of_names = pos[stage, 0]
    assert len(np.unique(rows_of_names)) == 2 and np.all(rows_of_names[::2] == rows_of_names[0])


def test_analysis_keys_name_the_sample_else_the_image_layer(make_napari_viewer):
    from types import SimpleNamespace

    links = links_for(make_napari_viewer())
    assert (
        links.key_for(SimpleNamespace(provenance={"sample": "digits", "image_layer": "x"}))
        == "digits"
    )
    assert links.key_for(SimpleNamespace(provenance={"image_layer": "my scans"})) == "my scans"
    assert links.key_for(SimpleNamespace(provenance={})) == "analysis"
