"""The views are real napari layers whose features carry the analysis's ids."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import digits_analysis

from napari_topolens.errors import LayerError, TopoLensError
from napari_topolens.ui.views import (
    MAX_BARS,
    analysis_layer_data,
    find_layers,
    highlight_class,
    mapper_layout,
    recolor_nodes,
    set_edge_threshold,
    show_analysis,
)


@pytest.fixture(scope="module")
def digits():
    return digits_analysis(120)


def by_view(tuples):
    out = {}
    for data, kwargs, kind in tuples:
        out.setdefault(kwargs["metadata"]["topolens"]["view"], []).append((data, kwargs, kind))
    return out


def test_layer_data_features_carry_the_analysis_ids(digits):
    _, analysis = digits
    views = by_view(analysis_layer_data(analysis, "fc1", key="k"))
    result = analysis["fc1"]
    for name, items in views.items():
        assert len(items) == 1, name
        meta = items[0][1]["metadata"]["topolens"]
        assert meta["key"] == "k" and meta["analysis"] is analysis
    graph = result.mapper
    ((nodes, kw, kind),) = views["mapper_nodes"]
    assert kind == "points" and len(nodes) == graph.n_nodes == len(kw["features"])
    assert kw["features"]["node"].tolist() == list(range(graph.n_nodes))
    assert kw["features"]["node_id"].tolist() == list(graph.node_ids)
    assert np.array_equal(kw["features"]["size"], graph.size)
    assert np.all((nodes >= 0) & (nodes <= 1))
    ((edges, kw, kind),) = views["mapper_edges"]
    assert kind == "shapes" and len(edges) == len(graph.edges) == len(kw["features"])
    assert np.array_equal(kw["features"][["source", "target"]].to_numpy(), graph.edges)
    assert np.allclose(kw["features"]["jaccard"], graph.edge_weight)
    # persistence: one diagram point per bar of every dimension
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
    # cluster flow: one band per flow row, one block per (stage, cluster)
    flow = result.flow
    ((_bands, kw, _),) = views["flow"]
    assert np.array_equal(
        kw["features"][["stage", "cluster", "next_cluster", "count"]].to_numpy(), flow.flows
    )
    ((_blocks, kw, _),) = views["flow_clusters"]
    expected = {
        (s, int(c)) for s in range(len(flow.memberships)) for c in np.unique(flow.memberships[s])
    }
    assert set(map(tuple, kw["features"][["stage", "cluster"]].to_numpy().tolist())) == expected
    for s, c, count in kw["features"][["stage", "cluster", "count"]].to_numpy():
        assert count == np.sum(flow.memberships[s] == c)
    # blob graph and dendrogram
    ((_pts, kw, _),) = views["blob_points"]
    assert kw["features"]["point"].tolist() == list(range(len(result.cloud)))
    assert np.array_equal(kw["features"]["cluster"], result.blobs.cluster)
    ((hulls, kw, _),) = views["blob_hulls"]
    assert np.array_equal(kw["features"]["cluster"], result.blobs.hull_clusters) and len(
        hulls
    ) == len(result.blobs.hulls)
    ((_tree, kw, _),) = views["dendrogram_tree"]
    assert kw["features"]["merge"].tolist() == list(range(len(result.dendrogram.linkage)))
    ((heat, kw, _),) = views["dendrogram_heatmap"]
    assert np.array_equal(heat, result.dendrogram.distances)
    ((matrix, kw, _),) = views["layer_distances"]
    assert np.allclose(matrix, analysis.layer_distances[analysis.config.layer_distance])
    ((matrix, kw, _),) = views["cka"]
    assert np.allclose(matrix, analysis.layer_distances["cka"])


def test_mapper_layout_is_seeded_and_separates_nodes(digits):
    _, analysis = digits
    graph = analysis["fc1"].mapper
    a, b = mapper_layout(graph, seed=0), mapper_layout(graph, seed=0)
    assert np.array_equal(a, b)
    assert np.all((a > 0) & (a < 1))
    gaps = np.linalg.norm(a[:, None] - a[None], axis=-1) + np.eye(len(a))
    assert gaps.min() > 0.01


def world_box(layer):
    lo, hi = layer.extent.world[:, -2:]
    return lo, hi


def test_show_analysis_places_views_beside_the_images(make_napari_viewer, digits):
    images, analysis = digits
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="digits")
    added = show_analysis(viewer, analysis, image_layer=image_layer)
    views = [layer.metadata["topolens"]["view"] for layer in added]
    for needed in (
        "overlay",
        "gallery",
        "mapper_nodes",
        "mapper_edges",
        "diagram",
        "barcode",
        "layer_distances",
        "cka",
        "flow",
        "flow_clusters",
        "blob_points",
        "blob_hulls",
        "dendrogram_heatmap",
        "dendrogram_tree",
        "titles",
        "axes",
        "matrix_labels",
    ):
        assert views.count(needed) == 1, needed
    assert all(layer in viewer.layers for layer in added)
    assert viewer.layers.selection.active is image_layer
    _, image_hi = world_box(image_layer)
    boxes = {}
    for layer in added:
        view = layer.metadata["topolens"]["view"]
        if view in ("overlay", "gallery", "titles", "axes", "matrix_labels"):
            continue
        lo, hi = world_box(layer)
        assert lo[1] > image_hi[1], view  # right of the images
        boxes[view] = (lo, hi)
    cells = {  # views that share a cell
        "mapper": ("mapper_nodes", "mapper_edges"),
        "diagram": ("diagram",),
        "barcode": ("barcode",),
        "flow": ("flow", "flow_clusters"),
        "blobs": ("blob_points", "blob_hulls"),
        "dendrogram": ("dendrogram_heatmap", "dendrogram_tree"),
        "d": ("layer_distances",),
        "c": ("cka",),
    }
    merged = {}
    for cell, members in cells.items():
        lo = np.min([boxes[m][0] for m in members], axis=0)
        hi = np.max([boxes[m][1] for m in members], axis=0)
        merged[cell] = (lo, hi)
    names = list(merged)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (alo, ahi), (blo, bhi) = merged[a], merged[b]
            overlap = np.all(np.minimum(ahi, bhi) > np.maximum(alo, blo))
            assert not overlap, (a, b)
    gallery = find_layers(viewer, view="gallery")[0]
    assert world_box(gallery)[0][0] > image_hi[0]  # below the images
    # showing another network layer replaces the per-layer views, keeps the rest
    show_analysis(viewer, analysis, "pool1", image_layer=image_layer)
    assert len(find_layers(viewer, view="mapper_nodes")) == 1
    assert len(find_layers(viewer, view="cka")) == 1
    nodes = find_layers(viewer, view="mapper_nodes")[0]
    assert nodes.metadata["topolens"]["layer"] == "pool1"
    assert len(nodes.features) == analysis["pool1"].mapper.n_nodes
    with pytest.raises(LayerError):
        show_analysis(viewer, analysis, "conv9", image_layer=image_layer)


def test_explorer_controls_recolor_threshold_and_fade(make_napari_viewer, digits):
    _images, analysis = digits
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis)  # no image layer: the images view is created
    (images_layer,) = find_layers(viewer, view="images")
    key = images_layer.metadata["topolens"]["key"]
    nodes = find_layers(viewer, key, "mapper_nodes")[0]
    edges = find_layers(viewer, key, "mapper_edges")[0]
    graph = analysis["fc1"].mapper
    by_class = np.array(nodes.face_color)
    recolor_nodes(viewer, key, "purity")
    by_purity = np.array(nodes.face_color)
    assert not np.allclose(by_class, by_purity)
    order = np.argsort(graph.purity)
    assert np.allclose(by_purity[order[0]], by_purity[np.argmin(graph.purity)])
    with pytest.raises(TopoLensError):
        recolor_nodes(viewer, key, "colour of the sky")
    threshold = float(np.median(graph.edge_weight))
    set_edge_threshold(viewer, key, threshold)
    assert len(edges.data) == len(edges.features) == int(np.sum(graph.edge_weight >= threshold))
    assert np.all(edges.features["jaccard"] >= threshold)
    set_edge_threshold(viewer, key, 0.0)
    assert len(edges.data) == len(graph.edges)
    recolor_nodes(viewer, key, "dominant_class")
    cls = nodes.features["dominant_class"].iloc[0]
    highlight_class(viewer, key, cls)
    alpha = np.array(nodes.face_color)[:, 3]
    same = nodes.features["dominant_class"].to_numpy() == cls
    assert np.all(alpha[same] == 1.0) and np.all(alpha[~same] < 0.5)
    highlight_class(viewer, key, None)
    assert np.all(np.array(nodes.face_color)[:, 3] == 1.0)


def test_switching_the_layer_updates_the_views_in_place(make_napari_viewer, digits, qtbot):
    from napari_topolens.ui.links import links_for
    from napari_topolens.ui.views import show_analysis_incrementally

    images, analysis = digits
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="digits")
    done = []
    show = show_analysis_incrementally(
        viewer, analysis, image_layer=image_layer, on_done=done.append
    )
    assert not done and not show.done  # nothing added yet: one layer per event-loop turn
    qtbot.waitUntil(lambda: bool(done), timeout=60_000)
    first = list(viewer.layers)
    assert done[0] and all(layer in first for layer in done[0]) and len(first) == len(done[0]) + 1
    key = done[0][0].metadata["topolens"]["key"]

    again = show_analysis(viewer, analysis, "pool1", image_layer=image_layer)
    assert list(viewer.layers) == first  # the same layer objects, in the same order
    nodes = find_layers(viewer, key, "mapper_nodes")[0]
    assert nodes in again and nodes.metadata["topolens"]["layer"] == "pool1"
    graph = analysis["pool1"].mapper
    assert len(nodes.data) == len(nodes.features) == graph.n_nodes
    edges = find_layers(viewer, key, "mapper_edges")[0]
    assert len(edges.data) == len(edges.features) == len(graph.edges)
    tree = find_layers(viewer, key, "dendrogram_tree")[0]
    assert len(tree.data) == len(analysis["pool1"].dendrogram.linkage)
    heat = find_layers(viewer, key, "dendrogram_heatmap")[0]
    assert heat.data.shape == analysis["pool1"].dendrogram.distances.shape
    # the links follow the new layer: selecting a node shows its pool1 members
    members = links_for(viewer).select_nodes(key, [0])
    np.testing.assert_array_equal(members, np.unique(graph.node_members(0)))
    edge_color = np.array(edges.edge_color)
    np.testing.assert_allclose(edges.metadata["topolens"]["base_edge_color"], edge_color)


def test_a_cancelled_incremental_show_removes_its_layers(make_napari_viewer, digits, qtbot):
    from napari_topolens.ui.views import show_analysis_incrementally

    images, analysis = digits
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="digits")
    show = show_analysis_incrementally(viewer, analysis, image_layer=image_layer)
    qtbot.waitUntil(lambda: len(viewer.layers) >= 4, timeout=60_000)
    show.cancel()
    assert list(viewer.layers) == [image_layer] and show.done
    qtbot.wait(50)
    assert list(viewer.layers) == [image_layer]
