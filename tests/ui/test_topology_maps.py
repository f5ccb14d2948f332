"""Every pixel answers: the topology map overlay, pixel -> node, node -> regions, pixel drift.

Through napari's door: the shapes sample opened from the menu, the analysis and map
widgets docked by napari, clicks through napari's mouse callbacks.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dock, dock_analysis, open_sample, wait_for
from test_links import click

import napari_topolens as tl
from napari_topolens import load_sample
from napari_topolens.maps import map_drift, topology_map
from napari_topolens.topology.analysis import AnalysisConfig
from napari_topolens.ui import view_data as vd
from napari_topolens.ui.links import links_for
from napari_topolens.ui.state import state_for
from napari_topolens.ui.topology_maps import maps_for
from napari_topolens.ui.variants import variant_views_for
from napari_topolens.ui.views import show_analysis, show_variants
from napari_topolens.ui.widget_parts import MARKED_IMAGES

#: Images analysed (a fast run): every 30th of the 1200 shapes.
CHOSEN = np.arange(0, 1200, 60)
TIMEOUT_MS = 120_000


def _analyse_shapes_pool2(viewer, qtbot, variants=()):
    images = open_sample(viewer, "shapes")
    widget = dock_analysis(viewer)
    marks = np.zeros(images.data.shape, dtype=np.uint8)
    marks[CHOSEN, :3, :3] = 1
    marker = viewer.add_labels(marks, name="marks")
    widget.model_source.value = "sample: shapes"
    assert widget.load_model() is not None, widget.status.value
    widget.module_tree.set_checked(["pool2"])
    widget.which.value = MARKED_IMAGES
    widget.marker_layer.value = marker
    widget.sampling.value = "all_positions"
    for text in variants:
        assert widget.variant_form.add(text=text) == text
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker, timeout=TIMEOUT_MS)
    assert widget.analysis is not None, widget.status.value
    viewer.layers.selection.active = images  # pan/zoom: clicks are pixel links
    (key,) = [e.key for e in state_for(viewer) if e.variant_of is None]
    return images, key


def _wait_map(qtbot, maps):
    qtbot.waitUntil(lambda: not maps.busy, timeout=TIMEOUT_MS)


@pytest.fixture
def shapes_map(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    images, key = _analyse_shapes_pool2(viewer, qtbot)
    image = int(CHOSEN[1])
    viewer.dims.set_point(0, image)
    widget = dock(viewer, "Topology map")
    maps = maps_for(viewer)
    _wait_map(qtbot, maps)
    return viewer, images, key, image, widget, maps


@pytest.mark.slow
def test_object_and_background_clicks_select_different_nodes(shapes_map, qtbot):
    viewer, images, key, image, widget, maps = shapes_map
    assert key in maps.shown and widget.analysis_key.value == key
    overlay = maps.map_layers[key]
    assert overlay in viewer.layers
    picture = np.asarray(images.data[image])
    one = maps.cached(key, image)
    pixel_nodes = one.pixel_map(0)
    # on the shape: a bright pixel whose position is in a node (DBSCAN leaves some out)
    on_shape = np.argwhere((picture > 0.5 * picture.max()) & (pixel_nodes >= 0))
    assert len(on_shape), "no pixel of the shape lies in a node"
    obj = tuple(on_shape[len(on_shape) // 2])
    background = (0, 0)  # a corner: background in every shapes image
    assert picture[background] < picture[obj] and pixel_nodes[background] >= 0
    # the overlay is this image's map: label = node of the pixel's position + 1
    np.testing.assert_array_equal(overlay.data, one.pixel_map(0) + 1)
    links = links_for(viewer)
    answers = {}
    for name, (row, col) in (("object", obj), ("background", background)):
        click(viewer, images.data_to_world((image, int(row), int(col))))
        _wait_map(qtbot, maps)
        answers[name] = maps.last_answer
        assert answers[name]["pixel"] == (int(row), int(col))
        assert answers[name]["nodes"], answers[name]  # in a node: it is selected
        nodes_layer = state_for(viewer).get(key).layers["mapper_nodes"]
        chosen = nodes_layer.features["node"].to_numpy()[sorted(nodes_layer.selected_data)]
        assert set(chosen.tolist()) == set(answers[name]["nodes"])
        assert links.current_image(images) == image  # the click does not leave its image
        assert maps.message.startswith(f"pixel ({row}, {col}) of image {image}: node")
    assert set(answers["object"]["nodes"]) != set(answers["background"]["nodes"])
    # moving the slider maps the new image in a worker; back to a mapped one: at once
    other = image + 1
    viewer.dims.set_point(0, other)
    assert maps.busy  # a worker maps it; the main thread went on
    _wait_map(qtbot, maps)
    one = maps.cached(key, other)
    assert one is not None
    np.testing.assert_array_equal(maps.map_layers[key].data, one.pixel_map(0) + 1)
    viewer.dims.set_point(0, image)  # cached: at once
    assert not maps.busy
    np.testing.assert_array_equal(
        maps.map_layers[key].data, maps.cached(key, image).pixel_map(0) + 1
    )


# ---- an analysis made in Python (fast): regions, drift, a model out of reach -----------------
@pytest.fixture(scope="module")
def varied_shapes():
    """Shapes at pool2 (600 of the positions of 16 images, H0 only) with one perturbed variant; its
    provenance names the shipped sample model, as the widget's does."""
    sample = load_sample("shapes")
    index = sample.test_index[:16]
    base = tl.run_variants(
        sample.model,
        sample.images[index],
        ["pool2"],
        ["gaussian:0.3"],
        labels=sample.labels[index],
        class_names=sample.class_names,
        sampling="all_positions",
        max_points=600,
        config=AnalysisConfig(max_dim=0, distance_dim=0),
        provenance={"sample": "shapes", "model": "sample:shapes"},
    )
    return sample, base


@pytest.fixture
def shown_varied(make_napari_viewer, qtbot, varied_shapes):
    sample, base = varied_shapes
    viewer = make_napari_viewer()
    images = viewer.add_image(np.asarray(base.images), name="shapes")
    show_analysis(viewer, base, "pool2", image_layer=images)
    show_variants(viewer, base)
    key = state_for(viewer).key_of(base)
    maps = maps_for(viewer)
    maps.show_map(key)
    _wait_map(qtbot, maps)
    return viewer, images, key, maps, sample, base


def test_a_selected_node_shows_its_regions_on_the_image(shown_varied, qtbot):
    viewer, images, key, maps, _sample, _base = shown_varied
    image = links_for(viewer).current_image(images)
    one = maps.cached(key, image)
    node = int(np.bincount(one.node[0][one.node[0] >= 0]).argmax())  # the image's main node
    links_for(viewer).select_nodes(key, [node], jump=False)
    regions = maps.region_layers[key]
    assert regions.visible
    expected = (np.isin(one.node[0], [node]) | np.isin(one.node_last[0], [node])).reshape(-1)[
        one.pixels
    ]
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(regions.data.astype(bool), expected)
    # the gallery's tiles (the node's member images) get their maps too, over each tile
    tiles = state_for(viewer).get(key).selection.tiles
    assert len(tiles) >= 2
    _wait_map(qtbot, maps)
    gallery_maps = maps.gallery_layers[key]
    gallery = state_for(viewer).get(key).layers["gallery"]
    assert gallery_maps.visible and gallery_maps.data.shape == gallery.data.shape[:2]
    np.testing.assert_allclose(gallery_maps.scale, gallery.scale)
    h, w = images.data.shape[1:]
    for k in (0, len(tiles) - 1):
        (y, x), _ = vd.tile_box(k, (h, w))
        b = vd.TILE_BORDER
        tile_map = maps.cached(key, tiles[k]).pixel_map(0) + 1
        np.testing.assert_array_equal(
            gallery_maps.data[y + b : y + b + h, x + b : x + b + w], tile_map
        )
    links_for(viewer).clear_selection(key)
    assert not regions.visible and not gallery_maps.visible


def test_pixel_drift_marks_the_positions_whose_node_changed(shown_varied, qtbot):
    viewer, images, key, maps, sample, base = shown_varied
    image = 3
    drift = maps.show_drift(key, "gaussian:0.3", image)
    variant_layer = variant_views_for(viewer).bases[key].image_layers["gaussian:0.3"]
    # independently: both images placed in the base's graph, node sets compared
    base_map = topology_map(base, np.asarray(images.data[image : image + 1]), sample.model)
    moved_map = topology_map(base, np.asarray(variant_layer.data[image : image + 1]), sample.model)
    changed = (base_map["pool2"].node != moved_map["pool2"].node) | (
        base_map["pool2"].node_last != moved_map["pool2"].node_last
    )
    assert changed.any()
    np.testing.assert_array_equal(drift.changed, changed)
    base_labels, variant_labels, changed_layer, _title = maps.drift_layers[key]
    np.testing.assert_array_equal(base_labels.data, base_map["pool2"].pixel_map(0) + 1)
    np.testing.assert_array_equal(variant_labels.data, moved_map["pool2"].pixel_map(0) + 1)
    np.testing.assert_array_equal(changed_layer.data.astype(bool), drift.changed_pixels(0))
    assert f"{100 * changed.mean():.0f}% of the positions changed node" in maps.message
    shares = maps.drift_shares(key, "gaussian:0.3", [image, image + 1])
    assert shares["pool2"][0] == pytest.approx(changed.mean())
    assert shares["pool2"][1] == pytest.approx(
        map_drift(
            topology_map(base, np.asarray(images.data[image + 1 : image + 2]), sample.model)[
                "pool2"
            ],
            topology_map(base, np.asarray(variant_layer.data[image + 1 : image + 2]), sample.model)[
                "pool2"
            ],
        ).mean_share
    )


def test_ranking_by_changed_pixels_sums_the_layers_and_names_the_largest():
    from napari_topolens.ui.topology_maps import pixel_drift_ranking

    images = np.array([3, 5, 8, 9])
    shares = {"pool1": np.array([0.1, 0.0, 0.5, 0.2]), "pool2": np.array([0.3, 0.0, 0.0, 0.4])}
    # totals 0.4, 0, 0.5, 0.6: image 5 never changed; ties would go to the lower image
    assert pixel_drift_ranking(images, shares) == [
        ("pool2", 9, 0.4),
        ("pool1", 8, 0.5),
        ("pool2", 3, 0.3),
    ]
    assert pixel_drift_ranking(images[:0], {"pool1": np.zeros(0)}) == []


def test_the_most_moved_list_ranks_by_changed_pixels(shown_varied, qtbot):
    """The map widget's "Rank images by changed pixels" (docked by napari): every analysed
    image mapped, base and perturbed, in a worker; the canvas's most-moved list then lists
    the images by their share of positions in another node, checked independently."""
    viewer, images, key, maps, sample, base = shown_varied
    views = variant_views_for(viewer)
    views.show(base, "gaussian:0.3")  # the variant compared: its most-moved list shown
    canvas = views.canvas
    assert not canvas.moved_label.text().startswith("Most changed pixels")  # groups' ranking
    widget = dock(viewer, "Topology map")
    widget.analysis_key.value = key
    widget.variant.value = "gaussian:0.3"
    worker = widget.rank_by_pixels()
    assert worker is not None
    qtbot.waitUntil(lambda: (key, "gaussian:0.3") in views.pixel_ranked, timeout=TIMEOUT_MS)
    variant_layer = views.bases[key].image_layers["gaussian:0.3"]
    analysed = np.unique(base["pool2"].cloud.image_index)
    expected = map_drift(
        topology_map(base, np.asarray(images.data[analysed]), sample.model)["pool2"],
        topology_map(base, np.asarray(variant_layer.data[analysed]), sample.model)["pool2"],
    ).share
    order = [int(analysed[i]) for i in np.argsort(-expected, kind="stable") if expected[i] > 0]
    ranking = views.pixel_ranked[(key, "gaussian:0.3")]
    assert [image for _layer, image, _share in ranking] == order
    np.testing.assert_allclose(
        [share for _layer, _image, share in ranking], np.sort(expected[expected > 0])[::-1]
    )
    assert canvas.moved_label.text().startswith("Most changed pixels under gaussian:0.3")
    listed = [canvas.moved_list.item(i).data(256) for i in range(canvas.moved_list.count())]
    assert [image for _layer, image, _score in listed] == order[: len(listed)]
    assert "changed pixels under gaussian:0.3" in maps.message


def test_without_the_model_the_status_says_so_once_and_clicks_still_ring(
    make_napari_viewer, varied_shapes
):
    from dataclasses import replace

    _sample, base = varied_shapes
    orphan = replace(base, provenance={"sample": "shapes"}, variants=[])  # no model named
    viewer = make_napari_viewer()
    images = viewer.add_image(np.asarray(orphan.images), name="shapes")
    show_analysis(viewer, orphan, "pool2", image_layer=images)
    key = state_for(viewer).key_of(orphan)
    maps = maps_for(viewer)
    assert maps.show_map(key) is None and key not in maps.map_layers
    assert "model it was made with is not in reach" in maps.message
    maps.message = ""
    cloud = orphan["pool2"].cloud
    image, (y0, x0, _, _) = int(cloud.image_index[0]), cloud.receptive_field[0]
    viewer.dims.set_point(0, image)
    click(viewer, images.data_to_world((image, int(y0), int(x0))))
    assert len(links_for(viewer).last_highlight["points"])  # the analysed points still answer
    assert maps.message == "" and not maps.busy  # said once, nothing started


def test_a_ranking_whose_model_raises_a_runtime_error_says_so_and_ends(
    shown_varied, qtbot, monkeypatch
):
    # torch raises RuntimeError (a model that does not take these images); napari's
    # generator worker takes one for its own stop: the ranking must still end, and say why
    from napari_topolens.ui import topology_maps

    viewer, _images, key, maps, _sample, base = shown_varied
    variant_views_for(viewer).show(base, "gaussian:0.3")

    def raises(*_args, **_kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x10 and 12x3)")

    monkeypatch.setattr(topology_maps, "topology_map", raises)
    widget = dock(viewer, "Topology map")
    widget.analysis_key.value = key
    widget.variant.value = "gaussian:0.3"
    worker = widget.rank_by_pixels()
    assert worker is not None
    qtbot.waitUntil(lambda: "No ranking by changed pixels" in maps.message, timeout=TIMEOUT_MS)
    assert "mat1 and mat2 shapes cannot be multiplied" in maps.message
    assert "WorkFailed" not in maps.message
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT_MS)


def test_closing_the_window_drops_the_maps_and_its_widgets_follow_nothing(
    shown_varied, qtbot, monkeypatch
):
    """The viewer, its layers and their analyses outlive its closed window, whose widgets
    (the views canvas, the map widget) are gone: the map computing then is dropped and
    those queued are not computed; a ranking by changed pixels stops (napari's window
    quits its workers) and ranks nothing; a later ``viewer.close()`` removes the analyses
    without touching the deleted widgets (it raised in psygnal's emit loop)."""
    import threading

    from napari_topolens.ui import topology_maps

    viewer, _images, key, maps, _sample, base = shown_varied
    views = variant_views_for(viewer)
    views.show(base, "gaussian:0.3")
    dock(viewer, "Topology map")
    real_map, mapped, permits = topology_maps.topology_map, [], threading.Semaphore(0)

    def held_map(*args, **kwargs):
        if isinstance(kwargs.get("layer"), list):  # the ranking's (a map's asks for one layer)
            mapped.append(args[1].shape[0])
            assert permits.acquire(timeout=60)  # each of its maps waits for the test
        return real_map(*args, **kwargs)

    monkeypatch.setattr(topology_maps, "topology_map", held_map)
    worker = maps.rank_by_pixel_drift(key, "gaussian:0.3")
    qtbot.waitUntil(lambda: len(mapped) == 1, timeout=TIMEOUT_MS)
    analysed = np.unique(base["pool2"].cloud.image_index)
    assert len(analysed) > 3  # (a ranking with images left to map when the window closes)
    real_work, computed, gate = topology_maps._map_work, [], threading.Event()

    def held_work(*args):
        computed.append(args[4])
        gate.wait(timeout=60)
        return real_work(*args)

    monkeypatch.setattr(topology_maps, "_map_work", held_work)
    assert not maps.busy  # (nothing queued before: the newest request is computed first)
    first, second = (int(image) for image in analysed[1:3])
    assert maps.request(key, first)  # computing (held)
    assert maps.request(key, second)  # waiting for it
    qtbot.waitUntil(lambda: computed == [first], timeout=TIMEOUT_MS)
    # napari's public close: the window goes at once (its close button lets Qt delete it
    # a turn later); the layers and their analyses stay
    viewer.window.close()
    assert key in state_for(viewer) and maps.closed()
    gate.set()
    for _ in range(2000):  # one map at a time, the main thread between them
        if not worker.is_running:
            break
        permits.release()
        qtbot.wait(20)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not maps.busy, timeout=TIMEOUT_MS)
    assert len(mapped) < 2 * len(analysed), len(mapped)  # stopped before its last image
    assert (key, "gaussian:0.3") not in views.pixel_ranked
    assert computed == [first], computed  # the one waiting was dropped
    assert not maps.request(key, second)  # and no more are taken
    viewer.close()  # the analyses removed: the closed canvas and map widget follow nothing
    assert len(state_for(viewer)) == 0
