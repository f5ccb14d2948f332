"""Links both ways: selections light up pixels, pixel clicks light up the topology."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from napari.utils._proxies import ReadOnlyWrapper
from napari.utils.interactions import (
    mouse_move_callbacks,
    mouse_press_callbacks,
    mouse_release_callbacks,
)

from napari_topolens import extract_activations, load_sample
from napari_topolens.topology.analysis import analyze
from napari_topolens.ui import view_data as vd
from napari_topolens.ui.links import links_for
from napari_topolens.ui.state import state_for
from napari_topolens.ui.view_data import member_images
from napari_topolens.ui.views import canvas_for, find_layers, set_edge_threshold, show_analysis


@pytest.fixture(scope="module")
def shapes():
    """pool2 with several positions per image (partial receptive fields), and fc1."""
    sample = load_sample("shapes")
    index = sample.test_index[:40]
    clouds = extract_activations(
        sample.model,
        sample.images[index],
        ["pool2", "fc1"],
        sampling="all_positions",
        max_points=200,
        seed=0,
    )
    analysis = analyze(
        clouds,
        sample.labels[index],
        class_names=sample.class_names,
        provenance={"sample": "shapes"},
    )
    return sample.images[index], analysis


@pytest.fixture
def shown(make_napari_viewer, shapes):
    images, analysis = shapes
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="shapes")
    show_analysis(viewer, analysis, "pool2", image_layer=image_layer)
    canvas = canvas_for(viewer)
    for panel in vd.PANELS:  # every view drawn (a panel's layers are made when first picked)
        canvas.show_panel(panel)
    canvas.show_panel("mapper")
    links = links_for(viewer)
    (key,) = links.keys
    return viewer, image_layer, analysis, links, key


def field_mask(cloud, members, n_images):
    """Union of the members' receptive fields, built independently of the code under test."""
    h, w = cloud.image_shape
    mask = np.zeros((n_images, h, w), bool)
    for p in members:
        y0, x0, y1, x1 = cloud.receptive_field[p]
        if (y0, x0, y1, x1) == (0, 0, h, w):
            continue  # a whole-image field says nothing per pixel: not tinted
        mask[cloud.image_index[p], y0:y1, x0:x1] = True
    return mask


def test_whole_image_fields_leave_the_overlay_untinted():
    from types import SimpleNamespace

    from napari_topolens.ui.view_data import overlay_for_members

    cloud = SimpleNamespace(
        image_shape=(4, 4),
        image_index=np.array([0, 0, 1]),
        receptive_field=np.array([[0, 0, 4, 4], [1, 1, 3, 3], [0, 0, 4, 4]]),
    )
    heat = overlay_for_members(cloud, np.arange(3), 2, skip_whole=True)
    assert heat[0].sum() == 4 and heat[0, 1:3, 1:3].all()  # only the partial field
    assert not heat[1].any()  # image 1 has only a whole-image field
    assert overlay_for_members(cloud, np.arange(3), 2)[1].all()  # counted without skip_whole


def check_pixels(viewer, links, key, analysis, image_layer, expected_members):
    cloud = analysis["pool2"].cloud
    assert np.array_equal(links.last_members, np.unique(expected_members))
    overlay = find_layers(viewer, key, "overlay")[0].data
    mask = field_mask(cloud, expected_members, len(image_layer.data))
    # heat lies only inside members' fields, and every member's field is covered
    assert np.array_equal(overlay > 0, mask)
    rf = cloud.receptive_field[expected_members]
    whole = (rf[:, 2] - rf[:, 0] == cloud.image_shape[0]) & (
        rf[:, 3] - rf[:, 1] == cloud.image_shape[1]
    )
    assert not np.all(whole)  # pool2 at all positions: partial fields, a real spatial check
    member_fields = mask[sorted(set(cloud.image_index[expected_members].tolist()))]
    assert member_fields.sum() < member_fields.size
    images = set(cloud.image_index[expected_members].tolist())
    assert links.current_image(image_layer) in images
    gallery = find_layers(viewer, key, "gallery")[0]
    selection = state_for(viewer).get(key).selection
    tiles = selection.tiles
    assert tiles == member_images(cloud, expected_members)[:16].tolist()
    assert set(tiles) <= images and gallery.data.ndim == 3 and gallery.data.shape[-1] == 3
    # the gallery's title says what is selected; every tile is labelled with its class
    text = find_layers(viewer, key, "gallery_text")[0].features["text"].tolist()
    assert text[0] == selection.title and f"{len(np.unique(expected_members))} member" in text[0]
    labels = analysis.labels if analysis.labels is not None else None
    for tile, label in zip(tiles, text[1:]):
        assert label.startswith(f"#{tile} ")
        if labels is not None:  # the class, cut with … when it is too long for the tile
            assert f"#{tile} {analysis.class_names[int(labels[tile])]}".startswith(
                label.rstrip("…")
            )
    # captions zoom with their tiles and are sized so that neighbours never touch
    from napari_topolens.ui import view_data as vd

    text_layer = find_layers(viewer, key, "gallery_text")[0]
    assert text_layer.text.scaling
    assert all(len(label) <= vd.CAPTION_CHARS for label in text[1:])
    centres = np.asarray(text_layer.data[1:])
    same_row = np.isclose(centres[1:, 0], centres[:-1, 0])
    assert same_row.any()
    pitch = float(np.min(np.diff(centres[:, 1])[same_row]))
    # about 0.72 x size per character (measured), the ellipsis as three
    assert 0.72 * text_layer.text.size * (vd.CAPTION_CHARS + 2) < pitch


def test_node_selection_event_shows_member_fields(shown):
    viewer, image_layer, analysis, links, key = shown
    graph = analysis["pool2"].mapper
    nodes = find_layers(viewer, key, "mapper_nodes")[0]
    spread = [
        len(np.unique(analysis["pool2"].cloud.image_index[graph.node_members(n)]))
        for n in range(graph.n_nodes)
    ]
    node = int(np.argmax(spread))
    viewer.dims.set_point(0, 0)
    row = int(np.flatnonzero(nodes.features["node"].to_numpy() == node)[0])
    nodes.selected_data = {row}  # what napari's select mode does
    check_pixels(viewer, links, key, analysis, image_layer, graph.node_members(node))
    assert nodes.features["selected"].to_numpy()[row]
    title = state_for(viewer).get(key).selection.title
    assert f"node {node}" in title and "purity" in title and "dominant" in title
    # the selection ring is white, apart from every class colour and the pixel-hit magenta
    border = np.array(nodes.border_color)
    np.testing.assert_allclose(border[row], vd.SELECTED_RGBA)
    assert not np.any(np.all(np.isclose(vd.PALETTE, vd.SELECTED_RGBA[:3], atol=0.15), axis=1))
    assert not np.any(np.all(np.isclose(vd.PALETTE, vd.HIT_RGBA[:3], atol=0.15), axis=1))
    # the programmatic API takes the same path
    other = (node + 1) % graph.n_nodes
    links.select_nodes(key, [node, other])
    assert set(nodes.selected_data) == {
        row,
        int(np.flatnonzero(nodes.features["node"] == other)[0]),
    }
    both = np.union1d(graph.node_members(node), graph.node_members(other))
    check_pixels(viewer, links, key, analysis, image_layer, both)
    nodes.selected_data = set()
    assert len(links.last_members) == 0
    assert not np.any(find_layers(viewer, key, "overlay")[0].data)


def test_bars_clusters_branches_edges_and_hulls_link_to_members(shown):
    viewer, image_layer, analysis, links, key = shown
    result = analysis["pool2"]
    pers, flow, dendro, graph = result.persistence, result.flow, result.dendrogram, result.mapper
    # a diagram point (H0): the dying component
    bar = int(np.argmax(np.diff(pers.h0_member_offsets)[:-1]))
    expected = pers.h0_members[pers.h0_member_offsets[bar] : pers.h0_member_offsets[bar + 1]]
    links.select_bars(key, 0, [bar])
    check_pixels(viewer, links, key, analysis, image_layer, expected)
    # a barcode line (H1) selected as napari does it: a representative cycle
    barcode = find_layers(viewer, key, "barcode")[0]
    h1_rows = np.flatnonzero(barcode.features["dim"].to_numpy() == 1)
    assert len(h1_rows), "the shapes sample's pool2 has H1 bars; this test needs one"
    row = int(h1_rows[0])
    b = int(barcode.features["bar"].iloc[row])
    barcode.selected_data = {row}
    check_pixels(
        viewer,
        links,
        key,
        analysis,
        image_layer,
        pers.h1_members[pers.h1_member_offsets[b] : pers.h1_member_offsets[b + 1]],
    )
    # a cluster of the best stage, through the flow-clusters Shapes selection
    clusters = find_layers(viewer, key, "flow_clusters")[0]
    table = clusters.features
    row = int(np.flatnonzero((table["stage"] == flow.best_stage) & (table["cluster"] >= 0))[0])
    clusters.selected_data = {row}
    c = int(table["cluster"].iloc[row])
    check_pixels(
        viewer,
        links,
        key,
        analysis,
        image_layer,
        np.flatnonzero(flow.memberships[flow.best_stage] == c),
    )
    assert np.array_equal(links.select_clusters(key, flow.best_stage, [c]), links.last_members)
    # a hull: the same cluster at the best stage
    hulls = find_layers(viewer, key, "blob_hulls")[0]
    hull_row = int(
        np.flatnonzero(hulls.features["cluster"].to_numpy() == result.blobs.hull_clusters[0])[0]
    )
    hulls.selected_data = {hull_row}
    check_pixels(
        viewer,
        links,
        key,
        analysis,
        image_layer,
        np.flatnonzero(result.blobs.cluster == result.blobs.hull_clusters[0]),
    )
    # a dendrogram branch
    merge = len(dendro.linkage) - 2
    links.select_merge(key, merge)
    check_pixels(viewer, links, key, analysis, image_layer, dendro.branch_members(merge))
    tree = find_layers(viewer, key, "dendrogram_tree")[0]
    assert set(tree.selected_data) == {int(np.flatnonzero(tree.features["merge"] == merge)[0])}
    # an edge after thresholding: rows changed, the ids still say which nodes
    assert len(graph.edges) >= 1, "the shapes sample's pool2 graph has edges; this test needs one"
    threshold = float(np.sort(graph.edge_weight)[len(graph.edges) // 2])
    set_edge_threshold(viewer, key, threshold)
    edges = find_layers(viewer, key, "mapper_edges")[0]
    edges.selected_data = {0}
    a, b = int(edges.features["source"].iloc[0]), int(edges.features["target"].iloc[0])
    assert graph.edge_weight[int(edges.features["edge"].iloc[0])] >= threshold
    check_pixels(
        viewer,
        links,
        key,
        analysis,
        image_layer,
        np.intersect1d(graph.node_members(a), graph.node_members(b)),
    )


@dataclass
class FakeMouse:
    """A vispy-like mouse event, as napari's own binding tests make them."""

    type: str
    position: tuple
    is_dragging: bool = False
    modifiers: list = field(default_factory=list)
    button: int = 1
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    view_direction: list | None = None
    up_direction: list | None = None
    dims_displayed: list = field(default_factory=lambda: [1, 2])


def click(viewer, world, drag_to=None):
    event = ReadOnlyWrapper(FakeMouse("mouse_press", tuple(world)), exceptions=("handled",))
    mouse_press_callbacks(viewer, event)
    if drag_to is not None:
        mouse_move_callbacks(
            viewer,
            ReadOnlyWrapper(
                FakeMouse("mouse_move", tuple(drag_to), is_dragging=True), exceptions=("handled",)
            ),
        )
    mouse_release_callbacks(
        viewer,
        ReadOnlyWrapper(
            FakeMouse("mouse_release", tuple(drag_to or world)), exceptions=("handled",)
        ),
    )


@pytest.mark.slow
def test_pixel_click_highlights_exactly_the_covering_nodes(shown):
    viewer, image_layer, analysis, links, key = shown
    result = analysis["pool2"]
    cloud, graph = result.cloud, result.mapper
    # the pixel covered by the most points of one image (several: a real union)
    h, w = cloud.image_shape
    count = np.zeros((int(cloud.image_index.max()) + 1, h, w), int)
    for q in range(len(cloud)):
        y0, x0, y1, x1 = cloud.receptive_field[q]
        count[cloud.image_index[q], y0:y1, x0:x1] += 1
    image, row, col = (int(v) for v in np.unravel_index(np.argmax(count), count.shape))
    assert count[image, row, col] >= 2
    p = int(cloud.points_covering(image, row, col)[0])
    viewer.dims.set_point(0, image)
    click(viewer, image_layer.data_to_world((image, row, col)))
    found = links.last_highlight
    covering = [
        q
        for q in range(len(cloud))
        if cloud.image_index[q] == image
        and cloud.receptive_field[q][0] <= row < cloud.receptive_field[q][2]
        and cloud.receptive_field[q][1] <= col < cloud.receptive_field[q][3]
    ]
    assert p in covering and np.array_equal(found["points"], covering)
    expected_nodes = [
        n for n in range(graph.n_nodes) if np.intersect1d(graph.node_members(n), covering).size
    ]
    assert found["mapper_nodes"].tolist() == expected_nodes
    nodes = find_layers(viewer, key, "mapper_nodes")[0]
    lit = nodes.features.loc[nodes.features["highlighted"], "node"].tolist()
    assert sorted(lit) == expected_nodes
    border = np.array(nodes.border_color)
    np.testing.assert_allclose(
        border[nodes.features["highlighted"].to_numpy()], np.tile(vd.HIT_RGBA, (len(lit), 1))
    )
    # the gallery shows the clicked image, titled with the pixel
    entry = state_for(viewer).get(key)
    text = find_layers(viewer, key, "gallery_text")[0].features["text"].tolist()
    assert f"pixel ({row}, {col}) of image {image}" in text[0]
    assert text[1].startswith(f"#{image} ")
    assert entry.hits["mapper_nodes"].tolist() == expected_nodes
    # flow clusters and dendrogram branches holding a covering point
    memberships = result.flow.memberships
    expected_clusters = {
        (s, int(memberships[s, q])) for s in range(len(memberships)) for q in covering
    }
    assert set(map(tuple, found["flow_clusters"].tolist())) == expected_clusters
    expected_merges = [
        m
        for m in range(len(result.dendrogram.linkage))
        if np.intersect1d(result.dendrogram.branch_members(m), covering).size
    ]
    assert found["dendrogram_tree"].tolist() == expected_merges
    # many more pixels, straight through pixel_clicked, against brute force
    rng = np.random.default_rng(0)
    shared = np.argwhere(count >= 2)  # pixels where a union of fields matters
    for image_q, row_q, col_q in shared[
        rng.choice(len(shared), size=min(40, len(shared)), replace=False)
    ]:
        cover = np.flatnonzero(
            (cloud.image_index == image_q)
            & (cloud.receptive_field[:, 0] <= row_q)
            & (row_q < cloud.receptive_field[:, 2])
            & (cloud.receptive_field[:, 1] <= col_q)
            & (col_q < cloud.receptive_field[:, 3])
        )
        got = links.pixel_clicked(key, int(image_q), int(row_q), int(col_q))
        want = [
            n for n in range(graph.n_nodes) if np.intersect1d(graph.node_members(n), cover).size
        ]
        assert got["mapper_nodes"].tolist() == want
        assert np.array_equal(got["blob_points"], cover)
    # a drag (pan) is not a click: nothing changes
    before = links.last_highlight
    click(
        viewer,
        image_layer.data_to_world((image, 1, 1)),
        drag_to=image_layer.data_to_world((image, 20, 20)),
    )
    assert links.last_highlight is before


def test_click_on_a_node_in_the_canvas_selects_it_and_empty_space_or_escape_clears(shown):
    viewer, image_layer, analysis, links, key = shown
    graph = analysis["pool2"].mapper
    canvas = canvas_for(viewer)
    nodes = find_layers(viewer, key, "mapper_nodes")[0]
    row = int(np.argmax(nodes.features["size"].to_numpy()))
    world = nodes.data_to_world(nodes.data[row])
    viewer.layers.selection.active = image_layer  # whichever layer is active in the image viewer
    click(canvas.model, world)
    assert set(nodes.selected_data) == {row}
    node = int(nodes.features["node"].iloc[row])
    assert np.array_equal(links.last_members, graph.node_members(node))
    overlay = find_layers(viewer, key, "overlay")[0]
    assert overlay.data.any()
    # a click on empty canvas clears the selection, the rings, the overlay and the gallery
    click(canvas.model, (-500.0, -500.0))
    assert len(nodes.selected_data) == 0 and not nodes.features["selected"].any()
    assert not overlay.data.any() and len(links.last_members) == 0
    assert len(state_for(viewer).get(key).selection.tiles) == 0
    # Escape does the same, after a pixel click too
    links.select_nodes(key, [node])
    cloud = analysis["pool2"].cloud
    p = int(graph.node_members(node)[0])
    y0, x0, _, _ = cloud.receptive_field[p]
    links.pixel_clicked(key, int(cloud.image_index[p]), int(y0), int(x0))
    assert nodes.features["highlighted"].any() and nodes.features["selected"].any()
    (escape,) = [f for k, f in canvas.model.keymap.items() if str(k) == "Escape"]
    escape(canvas.model)
    assert not nodes.features["highlighted"].any() and not nodes.features["selected"].any()
    assert not overlay.data.any()


@pytest.mark.slow
def test_painting_a_labels_layer_does_not_fire_the_pixel_link(shown):
    viewer, image_layer, analysis, links, _key = shown
    labels = viewer.add_labels(np.zeros(image_layer.data.shape, dtype=np.uint8), name="marks")
    labels.mode = "paint"
    viewer.layers.selection.active = labels
    before = links.last_highlight
    cloud = analysis["pool2"].cloud
    image, (y0, x0, _, _) = int(cloud.image_index[0]), cloud.receptive_field[0]
    viewer.dims.set_point(0, image)
    click(viewer, image_layer.data_to_world((image, int(y0), int(x0))))
    assert links.last_highlight is before  # painting is not a pixel click
    labels.mode = "pan_zoom"
    click(viewer, image_layer.data_to_world((image, int(y0), int(x0))))
    assert links.last_highlight is not before and len(links.last_highlight["points"])


def test_clearing_a_cleared_selection_leaves_the_layers_alone_and_a_new_one_clears(shown):
    # a layer switch clears the selection of every view: what is clear already is not
    # drawn again (a Shapes layer's new edge widths triangulate every edge), and what was
    # drawn since, by a selection, a pixel click or tiles put in the gallery, is cleared
    viewer, image_layer, analysis, links, key = shown
    graph = analysis["pool2"].mapper
    nodes = find_layers(viewer, key, "mapper_nodes")[0]
    edges = find_layers(viewer, key, "mapper_edges")[0]
    gallery = find_layers(viewer, key, "gallery")[0]
    overlay = find_layers(viewer, key, "overlay")[0]
    links.clear_selection(key)
    empty, border = gallery.data, np.array(nodes.border_color)
    edge_colors, edge_widths = np.array(edges.edge_color), np.array(edges.edge_width)
    links.clear_selection(key)
    assert gallery.data is empty and overlay.data is not None
    row = int(np.argmax(nodes.features["size"].to_numpy()))
    node = int(nodes.features["node"].iloc[row])
    for change in ("select", "pixel", "tiles", "edge"):
        if change == "select":
            links.select_nodes(key, [node])
            assert not np.array_equal(nodes.border_color, border)
        elif change == "pixel":
            cloud = analysis["pool2"].cloud
            p = int(graph.node_members(node)[0])
            y0, x0, _, _ = cloud.receptive_field[p]
            links.pixel_clicked(key, int(cloud.image_index[p]), int(y0), int(x0))
            assert nodes.features["highlighted"].any()
        elif change == "tiles":
            h, w = (int(v) for v in analysis["pool2"].cloud.image_shape)
            links.show_tiles(
                key, [image_layer.data[0]], np.ones((1, h, w), np.float32), np.zeros(1), ["a"], "t"
            )
            assert gallery.data is not empty
        else:
            edges.selected_data = {0}
            assert not np.array_equal(edges.edge_color, edge_colors)
        links.clear_selection(key)
        assert np.array_equal(nodes.border_color, border), change
        assert np.array_equal(edges.edge_color, edge_colors), change
        assert np.array_equal(edges.edge_width, edge_widths), change
        assert not nodes.features["selected"].any() and not nodes.features["highlighted"].any()
        assert not overlay.data.any(), change
        assert np.array_equal(gallery.data, empty), change
        assert len(edges.selected_data) == 0 and len(nodes.selected_data) == 0
