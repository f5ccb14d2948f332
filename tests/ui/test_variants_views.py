"""Variants in the views: side by side with the base, linked, drift plot, most-moved images."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from conftest import dock_analysis, dock_explorer, wait_for

import napari_topolens as tl
from napari_topolens import load_sample
from napari_topolens.layout.drift import drift_geometry, drift_table, variant_layout
from napari_topolens.robustness.comparison import receptive_field_heat
from napari_topolens.topology import analysis as analysis_module
from napari_topolens.ui import collector
from napari_topolens.ui import view_data as vd
from napari_topolens.ui.io import VIEW_FILE, write_analysis
from napari_topolens.ui.links import links_for
from napari_topolens.ui.state import state_for
from napari_topolens.ui.variants import variant_views_for
from napari_topolens.ui.views import (
    canvas_for,
    find_layers,
    remove_analysis,
    show_analysis,
    show_variants,
    show_variants_incrementally,
)

NAMES = ["gaussian:0.1", "gaussian:0.3", "prune:0.5"]


@pytest.fixture(scope="module")
def varied():
    """A digits base (150 images, pool1 + fc1) with two perturbations and a pruned model."""
    sample = load_sample("digits")
    index = sample.test_index[:150]
    base = tl.run_variants(
        sample.model,
        sample.images[index],
        ["pool1", "fc1"],
        NAMES,
        labels=sample.labels[index],
        class_names=sample.class_names,
        sampling="top_norm",
        provenance={"sample": "digits"},
    )
    return base


def shown_with_variants(make_napari_viewer, base, layer="pool1", **kw):
    viewer = make_napari_viewer(**kw)
    image_layer = viewer.add_image(np.asarray(base.images), name="digits", contrast_limits=(0, 16))
    show_analysis(viewer, base, layer, image_layer=image_layer)
    show_variants(viewer, base)
    state = state_for(viewer)
    key = state.key_of(base)
    return viewer, image_layer, state, key


def world_of(layer, image, row, col):
    """World position of a pixel of a stack layer (napari centres pixel k at t + k * s)."""
    t, s = np.asarray(layer.translate), np.asarray(layer.scale)
    return tuple(t + np.array([image, row, col]) * s)


def extent_rc(layer):
    (r0, c0), (r1, c1) = np.asarray(layer.extent.world)[:, -2:]
    return r0, c0, r1, c1


def overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_variant_image_layers_beside_the_base_and_the_variant_in_the_next_slot(
    make_napari_viewer, varied
):
    base = varied
    viewer, image_layer, state, key = shown_with_variants(make_napari_viewer, base)
    made = find_layers(viewer, key, "variant_images")
    assert sorted(layer.name for layer in made) == [
        f"{key} · gaussian:0.1",
        f"{key} · gaussian:0.3",
    ]
    for layer in made:  # one per perturbation, none for the pruned model
        variant = next(v for v in base.variants if v.name == layer.metadata["topolens"]["variant"])
        assert np.array_equal(layer.data, variant.analysis.images)
        assert np.allclose(layer.scale, image_layer.scale)
        assert tuple(layer.contrast_limits) == tuple(image_layer.contrast_limits) == (0, 16)
        assert layer.colormap.name == image_layer.colormap.name
        r0, c0, r1, _ = extent_rc(layer)
        b0, _, b1, d1 = extent_rc(image_layer)
        assert (r0, r1) == (b0, b1) and c0 > d1  # to the right, same rows
    (names,) = find_layers(viewer, key, "variant_labels")  # which image is which
    assert names.features["text"].tolist() == ["base", "gaussian:0.1", "gaussian:0.3"]
    # the first variant sits in the next slot, drawn in the base's layout
    base_entry = state.get(key)
    entry = state.get(f"{key} · gaussian:0.1")
    assert entry.variant_of == key and entry.slot == base_entry.slot + 1
    assert entry.image_layer.metadata["topolens"]["variant"] == "gaussian:0.1"
    assert entry.network_layer == "pool1"
    layout, paired = variant_layout(
        base["pool1"], base_entry.layout("pool1"), base.variants[0].analysis["pool1"]
    )
    assert (paired >= 0).sum() > 0
    nodes_b = base_entry.layers["mapper_nodes"]
    nodes_v = entry.layers["mapper_nodes"]
    assert np.allclose(nodes_v.data, layout)
    for v, b in enumerate(paired):
        if b >= 0:  # a paired node is drawn where its base node is (up to the slot offset)
            assert np.allclose(nodes_v.data[v], nodes_b.data[b])
            world_v = np.asarray(nodes_v.data_to_world(nodes_v.data[v]))
            world_b = np.asarray(nodes_b.data_to_world(nodes_b.data[b]))
            offset = np.subtract(vd.slot_origin(entry.slot), vd.slot_origin(base_entry.slot))
            assert np.allclose(world_v - world_b, offset)
    # no gallery overlaps an image layer
    galleries = find_layers(viewer, view="gallery")
    assert len(galleries) == 2
    for gallery in galleries:
        for layer in [image_layer, *made]:
            assert not overlap(extent_rc(gallery), extent_rc(layer)), (gallery.name, layer.name)
    assert not overlap(extent_rc(galleries[0]), extent_rc(galleries[1]))
    # the canvas offers the comparison
    canvas = canvas_for(viewer)
    assert not canvas.compare.isHidden()
    assert [canvas.compare.itemText(i) for i in range(canvas.compare.count())] == NAMES
    assert canvas.compare.currentText() == "gaussian:0.1"
    assert canvas.picker.findData("drift") >= 0
    # side by side in a laptop-sized dock (about 1.6 screen pixels per world unit), each
    # title stays over its own slot: napari text keeps its screen size, so it shrinks
    canvas.model.scene.camera.zoom = 1.6
    canvas.fit_text()
    for shown in (base_entry, entry):
        text = shown.layers["panel_text"]
        size = float(text.text.size)
        longest = max(len(t) for t in text.features["text"])
        assert vd.MIN_PANEL_TEXT_SIZE <= size < vd.PANEL_TEXT_SIZE
        assert longest * size * vd.TEXT_PX_PER_CHAR_POINT <= vd.SIDE * 1.6 + 1e-6
        # and the frame's lines a pixel wide at least: thinner, software OpenGL left
        # some of its edges out (those falling between pixel centres)
        frame = shown.layers["panel_axes"]
        assert float(frame.edge_width) * vd.SIDE * 1.6 >= vd.MIN_FRAME_PX - 1e-9
    canvas.model.scene.camera.zoom = 40.0  # room enough: full size again
    canvas.fit_text()
    assert float(entry.layers["panel_text"].text.size) == vd.PANEL_TEXT_SIZE
    assert float(entry.layers["panel_axes"].edge_width) == vd.FRAME_WIDTH


@pytest.mark.slow
def test_compare_combo_switches_the_variant_and_keeps_the_image_layers(
    make_napari_viewer, varied, qtbot
):
    base = varied
    viewer, image_layer, state, key = shown_with_variants(make_napari_viewer, base)
    canvas = canvas_for(viewer)
    canvas.compare.setCurrentIndex(2)  # prune:0.5: the base's images through a pruned model
    qtbot.waitUntil(
        lambda: (
            f"{key} · prune:0.5" in state
            and bool(state.get(f"{key} · prune:0.5").network_layer)
            and variant_views_for(viewer).pending.done
        ),
        timeout=30_000,
    )
    assert f"{key} · gaussian:0.1" not in state
    entry = state.get(f"{key} · prune:0.5")
    assert entry.image_layer is image_layer and entry.slot == 1
    assert len(find_layers(viewer, key, "variant_images")) == 2  # they stay
    assert not find_layers(viewer, f"{key} · gaussian:0.1")  # its views went
    # showing another by name works too, at once
    show_variants(viewer, base, "gaussian:0.3")
    assert f"{key} · gaussian:0.3" in state and f"{key} · prune:0.5" not in state
    assert canvas.compare.currentText() == "gaussian:0.3"
    with pytest.raises(tl.TopoLensError, match="no variant"):
        show_variants(viewer, base, "blur:9")


@pytest.mark.slow
def test_the_variant_follows_the_explorer(make_napari_viewer, varied, qtbot):

    base = varied
    viewer, _image_layer, state, key = shown_with_variants(make_napari_viewer, base)
    explorer = dock_explorer(viewer)
    assert [k for k in explorer.analysis_key.choices if k] == [
        key
    ]  # the variant follows, not listed
    variant_key = f"{key} · gaussian:0.1"
    explorer.layer.value = "fc1"
    qtbot.waitUntil(
        lambda: (
            state.get(key).network_layer == "fc1"
            and variant_key in state
            and state.get(variant_key).network_layer == "fc1"
            and variant_views_for(viewer).pending is not None
            and variant_views_for(viewer).pending.done
        ),
        timeout=30_000,
    )
    entry = state.get(variant_key)
    nodes = entry.layers["mapper_nodes"]
    assert nodes.metadata["topolens"]["layer"] == "fc1"
    assert len(nodes.data) == base.variants[0].analysis["fc1"].mapper.n_nodes
    explorer.color_by.value = "purity"
    assert entry.color_by == "purity"
    explorer.edge_threshold.value = 0.3
    assert entry.edge_threshold == pytest.approx(0.3)
    edges = entry.layers["mapper_edges"]
    assert (edges.features["jaccard"] >= 0.3).all()
    explorer.class_search.value = "3"
    assert entry.faded_class == "3"
    alpha = np.array(nodes.face_color)[:, 3]
    kept = nodes.features["dominant_class"].astype(str).to_numpy() == "3"
    assert np.all(alpha[kept] == 1.0) and np.all(alpha[~kept] < 0.5)


def covering_nodes(result, image, row, col):
    """Brute force: nodes holding a point of ``image`` whose receptive field covers the pixel."""
    cloud = result.cloud
    points = [
        p
        for p in range(len(cloud))
        if cloud.image_index[p] == image
        and cloud.receptive_field[p][0] <= row < cloud.receptive_field[p][2]
        and cloud.receptive_field[p][1] <= col < cloud.receptive_field[p][3]
    ]
    graph = result.mapper
    return sorted(n for n in range(graph.n_nodes) if set(graph.node_members(n)) & set(points))


def nodes_holding_images(result, images):
    """Brute force: nodes holding a point of any of ``images``."""
    graph, index = result.mapper, result.cloud.image_index
    return sorted(
        n for n in range(graph.n_nodes) if set(index[graph.node_members(n)].tolist()) & set(images)
    )


def ringed(links, layer, which):
    masks = links.ring_masks(layer)
    return sorted(layer.features["node"].to_numpy()[masks[which]].tolist())


@pytest.mark.slow
def test_a_pixel_click_on_a_variant_image_rings_its_nodes(make_napari_viewer, varied):
    base = varied
    viewer, _image_layer, state, key = shown_with_variants(make_napari_viewer, base)
    links = links_for(viewer)
    variants = variant_views_for(viewer)
    variant_key = f"{key} · gaussian:0.1"
    variant_layer = state.get(variant_key).image_layer
    result = base.variants[0].analysis["pool1"]
    cloud = result.cloud
    image = int(cloud.image_index[0])
    row, col = (int(v) for v in cloud.receptive_field[0][:2])
    clicked = links.click_at(world_of(variant_layer, image, row, col))
    assert clicked["key"] == variant_key
    expected = covering_nodes(result, image, row, col)
    assert expected and sorted(clicked["found"]["mapper_nodes"].tolist()) == expected
    assert ringed(links, state.get(variant_key).layers["mapper_nodes"], 1) == expected
    # the same pixel of the same image rings in the base too (the variants' part of the click)
    linked = variants.click_at(world_of(variant_layer, image, row, col))
    assert linked["key"] == key
    assert sorted(linked["found"]["mapper_nodes"].tolist()) == covering_nodes(
        base["pool1"], image, row, col
    )
    # a click on another variant's image compares that one, and rings its nodes
    other_layer = next(
        layer
        for layer in find_layers(viewer, key, "variant_images")
        if layer.metadata["topolens"]["variant"] == "gaussian:0.3"
    )
    switched = variants.click_at(world_of(other_layer, image, row, col))
    assert switched["switched"] == "gaussian:0.3"
    other_key = f"{key} · gaussian:0.3"
    assert other_key in state and variant_key not in state
    expected = covering_nodes(base.variants[1].analysis["pool1"], image, row, col)
    assert ringed(links, state.get(other_key).layers["mapper_nodes"], 1) == expected
    # outside every image: nothing
    assert variants.click_at((0.0, -500.0, -500.0)) is None


def test_a_selection_rings_the_same_images_in_the_other(make_napari_viewer, varied):
    base = varied
    viewer, _image_layer, state, key = shown_with_variants(make_napari_viewer, base)
    links = links_for(viewer)
    variant_key = f"{key} · gaussian:0.1"
    variant = base.variants[0].analysis["pool1"]
    graph = base["pool1"].mapper
    node = int(np.argmax(graph.size))
    links.select_nodes(key, [node])
    images = set(base["pool1"].cloud.image_index[graph.node_members(node)].tolist())
    expected = nodes_holding_images(variant, images)
    assert expected
    variant_nodes = state.get(variant_key).layers["mapper_nodes"]
    assert ringed(links, variant_nodes, 0) == expected
    # the base keeps its own selection and ring
    assert ringed(links, state.get(key).layers["mapper_nodes"], 0) == [node]
    # and the other way round
    vnode = int(np.argmax(variant.mapper.size))
    links.select_nodes(variant_key, [vnode])
    images = set(variant.cloud.image_index[variant.mapper.node_members(vnode)].tolist())
    assert ringed(links, state.get(key).layers["mapper_nodes"], 0) == nodes_holding_images(
        base["pool1"], images
    )
    assert ringed(links, variant_nodes, 0) == [vnode]
    # a newly compared variant gets the base's selected images ringed at once
    links.select_nodes(key, [node])
    show_variants(viewer, base, "prune:0.5")
    images = set(base["pool1"].cloud.image_index[graph.node_members(node)].tolist())
    pruned = state.get(f"{key} · prune:0.5").layers["mapper_nodes"]
    assert ringed(links, pruned, 0) == nodes_holding_images(
        base.variants[2].analysis["pool1"], images
    )
    # Escape clears everything
    links.clear_selection()
    assert not links.ring_masks(pruned)[0].any()


def test_drift_layer_data_are_the_comparison_numbers(varied):
    base = varied
    table = drift_table(base)
    assert len(table) == len(NAMES) * 2
    for row in table.itertuples():
        drift = base.variants[row.variant_index].comparison[row.layer]
        assert row.variant == NAMES[row.variant_index]
        assert row.layer_index == base.layers.index(row.layer)
        assert row.distance == drift.distance("sliced_wasserstein", 1)
        assert row.relative == drift.distance("sliced_wasserstein", 1, relative=True)
        assert row.bottleneck == drift.distance("bottleneck", 1)
        assert row.moved == drift.moved_fraction
        assert row.accuracy_variant == base.variants[row.variant_index].comparison.accuracy_variant
    geometry = drift_geometry(table, len(base.layers))
    assert geometry.distance_top >= table["relative"].max()
    items = vd.drift_layer_data(base, "pool1", "k", 0)
    (lines, _, _), (points, point_kw, _) = items
    features = point_kw["features"]
    assert len(points) == 2 * len(table) and len(lines) == 2 * len(NAMES)
    for (row, col), feature in zip(points, features.itertuples()):
        value = feature.relative if feature.plot == "distance" else feature.moved
        assert row == pytest.approx(geometry.row_of(feature.plot, value))
        assert col == pytest.approx(geometry.layer_cols[feature.layer_index])
    colors = np.asarray(point_kw["face_color"])
    by_variant = {int(v): tuple(c) for v, c in zip(features["variant_index"], colors)}
    assert len(set(by_variant.values())) == len(NAMES)  # one colour per variant
    assert vd.drift_layer_data(base.variants[0].analysis, "pool1", "k", 1) == []


@pytest.mark.slow
def test_drift_view_hover_and_click_show_that_variant_at_that_layer(make_napari_viewer, varied):
    base = varied
    viewer, _image_layer, state, key = shown_with_variants(make_napari_viewer, base)
    canvas = canvas_for(viewer)
    links = links_for(viewer)
    canvas.show_panel("drift")
    points = state.get(key).layers["drift_points"]
    assert points.visible
    text = " | ".join(state.get(key).layers["panel_text"].features["text"])
    assert all(name in text for name in NAMES) and "moved" in text
    features = points.features
    row = int(
        np.flatnonzero(
            (features["variant"] == "gaussian:0.3")
            & (features["layer"] == "fc1")
            & (features["plot"] == "moved")
        )[0]
    )
    where = tuple(points.data_to_world(points.data[row]))
    hover = canvas.hover_at(where)
    drift = base.variants[1].comparison["fc1"]
    assert "gaussian:0.3 at fc1" in hover and f"{100 * drift.moved_fraction:.1f} %" in hover
    picked = links.pick_at(where)
    assert picked["view"] == "drift_points"
    assert state.get(key).network_layer == "fc1"
    entry = state.get(f"{key} · gaussian:0.3")
    assert entry.network_layer == "fc1" and f"{key} · gaussian:0.1" not in state
    assert state.panel == "mapper" and canvas.compare.currentText() == "gaussian:0.3"


@pytest.mark.slow
def test_a_most_moved_image_one_click_away(make_napari_viewer, varied):
    base = varied
    viewer, image_layer, state, key = shown_with_variants(make_napari_viewer, base)
    canvas = canvas_for(viewer)
    links = links_for(viewer)
    variant = base.variants[0]
    moved = variant.comparison.most_moved(8)
    assert canvas.moved_list.count() == len(moved) and not canvas.moved_list.isHidden()
    layer, image, _score = moved[0]
    assert canvas.moved_list.item(0).text().startswith(f"#{image} ")
    assert f"· {layer} ·" in canvas.moved_list.item(0).text()
    canvas.moved_list.itemClicked.emit(canvas.moved_list.item(0))
    assert state.get(key).network_layer == layer
    variant_key = f"{key} · {variant.name}"
    assert state.get(variant_key).network_layer == layer
    assert links.current_image(image_layer) == image
    # the base's gallery: the original beside its variant, the heat of the moved activation
    gallery = find_layers(viewer, key, "gallery")[0]
    text = find_layers(viewer, key, "gallery_text")[0].features["text"].tolist()
    assert f"#{image}" in text[0] and f"at {layer}" in text[0] and "moved" in text[0]
    assert text[1:] == ["base", variant.name]
    h, w = base.images.shape[1:]
    heats = [
        receptive_field_heat(base[layer].cloud, image),
        receptive_field_heat(variant.analysis[layer].cloud, image),
    ]
    expected = vd.gallery_mosaic(
        [base.images[image], variant.analysis.images[image]],
        np.stack(heats),
        np.arange(2),
        tile_classes=np.array([base.labels[image]] * 2),
    )
    assert np.allclose(gallery.data, expected)
    # its nodes are selected in both
    for k, result in ((key, base[layer]), (variant_key, variant.analysis[layer])):
        nodes = state.get(k).layers["mapper_nodes"]
        assert ringed(links, nodes, 0) == nodes_holding_images(result, {image})
    del h, w


@pytest.mark.slow
def test_reopen_shows_the_variants_without_recomputing(
    make_napari_viewer, varied, tmp_path, monkeypatch, qtbot
):
    base = varied
    viewer, _image_layer, _state, key = shown_with_variants(make_napari_viewer, base)
    show_variants(viewer, base, "gaussian:0.3")
    target = tmp_path / "varied.topolens"
    write_analysis(str(target), [find_layers(viewer, key, "overlay")[0].as_layer_data_tuple()])
    assert '"compare": "gaussian:0.3"' in (target / VIEW_FILE).read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("reading a saved analysis must not recompute it")

    import napari_topolens.pipeline.run as run_module
    from napari_topolens.robustness import comparison as comparison_module

    monkeypatch.setattr(analysis_module, "iter_analyze", refuse)
    monkeypatch.setattr(run_module, "iter_analyze", refuse)
    monkeypatch.setattr(analysis_module, "analyze", refuse)
    monkeypatch.setattr(comparison_module, "compare", refuse)
    monkeypatch.setattr(run_module, "compare", refuse)
    other = make_napari_viewer()
    other_state = state_for(other)
    other.open(str(target), plugin="napari-topolens")
    qtbot.waitUntil(
        lambda: (
            any(e.variant_of is not None and bool(e.network_layer) for e in other_state)
            and variant_views_for(other).pending.done
        ),
        timeout=60_000,
    )
    (reopened_key,) = [e.key for e in other_state if e.variant_of is None]
    variant_entry = next(e for e in other_state if e.variant_of is not None)
    assert variant_entry.key == f"{reopened_key} · gaussian:0.3"
    assert len(find_layers(other, reopened_key, "variant_images")) == 2
    reopened = other_state.get(reopened_key).analysis
    assert [v.name for v in reopened.variants] == NAMES
    assert not canvas_for(other).compare.isHidden()


@pytest.mark.slow
def test_removing_the_base_removes_its_variants(make_napari_viewer, varied):
    base = varied
    viewer, _image_layer, state, key = shown_with_variants(make_napari_viewer, base)
    variant_key = f"{key} · gaussian:0.1"
    assert variant_key in state
    show_analysis(viewer, base, "fc1")  # a switch made at once is followed at once
    assert state.get(variant_key).network_layer == "fc1"
    nodes = state.get(variant_key).layers["mapper_nodes"]
    assert len(nodes.data) == base.variants[0].analysis["fc1"].mapper.n_nodes
    remove_analysis(viewer, key)
    assert variant_key not in state and key not in state
    assert not find_layers(viewer, key, "variant_images")
    assert not find_layers(viewer, key, "variant_labels")
    assert not find_layers(viewer, variant_key)
    canvas = canvas_for(viewer)
    assert canvas.compare.isHidden() and canvas.moved_list.isHidden()
    assert canvas.picker.findData("drift") < 0


def test_bad_calls_say_what_is_wrong(make_napari_viewer, varied):
    base = varied
    viewer = make_napari_viewer()
    with pytest.raises(tl.TopoLensError, match="show the base analysis first"):
        show_variants(viewer, base)
    show_analysis(viewer, base.variants[0].analysis, "pool1")
    with pytest.raises(tl.TopoLensError, match="no variants"):
        show_variants_incrementally(viewer, base.variants[0].analysis)


def test_variant_layout_of_an_unchanged_graph_is_the_base_layout(varied):
    base = varied
    result = base["pool1"]
    layout = np.asarray(result.mapper_layout)
    same, paired = variant_layout(result, layout, result)
    assert np.array_equal(paired, np.arange(result.mapper.n_nodes))
    assert np.allclose(same, layout)
    # a pruned model's graph: every node is placed, paired ones exactly on their partner
    other = base.variants[2].analysis["pool1"]
    placed, paired = variant_layout(result, layout, other)
    assert placed.shape == (other.mapper.n_nodes, 2) and np.isfinite(placed).all()
    assert np.allclose(placed[paired >= 0], layout[paired[paired >= 0]])
    assert len(set(paired[paired >= 0].tolist())) == int((paired >= 0).sum())  # one-to-one


def test_the_analysis_widgets_variants_show_beside_its_base(make_napari_viewer, qtbot):
    """The widget's run shows its stack-indexed variants beside the base, linked."""
    from napari_topolens.ui.widget_parts import MARKED_IMAGES

    viewer = make_napari_viewer()
    (images,) = viewer.open_sample("napari-topolens", "digits")
    chosen = np.arange(2, 1797, 15)[:100]
    marks = np.zeros(images.data.shape, dtype=np.uint8)
    marks[chosen, 3:5, 3:5] = 1
    viewer.add_labels(marks, name="marks")
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None
    widget.module_tree.set_checked(["pool2", "fc1"])
    widget.which.value = MARKED_IMAGES
    widget.marker_layer.value = viewer.layers["marks"]
    for text in ("gaussian:0.3", "prune:0.5"):
        widget.variant_form.add(text=text)
    worker = widget.run()
    assert worker is not None, widget.status.value
    # no full garbage collection (0.2-0.45 s, holding the GIL) until the views are in
    assert gc.get_threshold()[2] == collector.OUT_OF_REACH
    wait_for(qtbot, worker, timeout=240_000)
    base = widget.analysis
    assert base is not None and len(base.variants) == 2, widget.status.value
    # the widget showed them itself, after the base: "finished" means shown
    state = state_for(viewer)
    assert set(widget.layers_added) >= set(
        find_layers(viewer, state.key_of(base), "variant_images")
    )
    key = state.key_of(base)
    (made,) = find_layers(viewer, key, "variant_images")
    assert made.data.shape == images.data.shape  # the stack, frame = image number
    variant_key = f"{key} · gaussian:0.3"
    assert state.get(variant_key).image_layer is made
    result = base.variants[0].analysis[state.get(variant_key).network_layer]
    image = int(result.cloud.image_index[0])
    assert image in set(chosen.tolist())
    row, col = (int(v) for v in result.cloud.receptive_field[0][:2])
    clicked = links_for(viewer).click_at(world_of(made, image, row, col))
    assert clicked["key"] == variant_key
    assert sorted(clicked["found"]["mapper_nodes"].tolist()) == covering_nodes(
        result, image, row, col
    )


def test_the_variants_image_layers_and_their_names_are_made_in_a_worker(
    make_napari_viewer, varied, qtbot, monkeypatch
):
    from conftest import spy_on_threads

    from napari_topolens.ui import variants as variants_module

    on_main = spy_on_threads(monkeypatch, variants_module, "create_layer")
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(
        np.asarray(varied.images), name="digits", contrast_limits=(0, 16)
    )
    show_analysis(viewer, varied, "pool1", image_layer=image_layer)
    show = show_variants_incrementally(viewer, varied)
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    assert show.error is None and not show.cancelled
    key = state_for(viewer).key_of(varied)
    assert len(find_layers(viewer, key, "variant_images")) == 2  # (the pruned model has none)
    assert len(find_layers(viewer, key, "variant_labels")) == 1
    assert on_main == [False, False, False]  # each made off the main thread
