"""Every pixel answers: the topology map overlay, pixel -> node, node -> regions, pixel drift.

Through napari's door: the shapes sample opened from the menu, the analysis and map
widgets docked by napari, clicks through napari's mouse callbacks.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dock, dock_analysis, open_sample, wait_for
from test_links import click

from napari_topolens.ui.links import links_for
from napari_topolens.ui.state import state_for
from napari_topolens.ui.topology_maps import maps_for
from napari_topolens.ui.widget_parts import MARKED_IMAGES

#: Images analysed (a fast run): every 30th of the 1200 shapes.
CHOSEN = np.arange(0, 1200, 30)
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
    image = int(CHOSEN[3])
    viewer.dims.set_point(0, image)
    widget = dock(viewer, "Topology map")
    maps = maps_for(viewer)
    _wait_map(qtbot, maps)
    return viewer, images, key, image, widget, maps


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


def test_a_selected_node_shows_its_regions_on_the_image(shapes_map, qtbot):
    viewer, images, key, image, _widget, maps = shapes_map
    one = maps.cached(key, image)
    node = int(np.bincount(one.node[0][one.node[0] >= 0]).argmax())  # the image's main node
    links_for(viewer).select_nodes(key, [node])
    links_for(viewer).show_image(images, image)
    _wait_map(qtbot, maps)
    regions = maps.region_layers[key]
    assert regions.visible
    expected = (np.isin(one.node[0], [node]) | np.isin(one.node_last[0], [node])).reshape(-1)[
        one.pixels
    ]
    assert expected.any()
    np.testing.assert_array_equal(regions.data.astype(bool), expected)


def test_moving_the_slider_maps_the_new_image_off_the_main_thread(shapes_map, qtbot):
    viewer, images, key, image, _widget, maps = shapes_map
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
