"""Save an analysis from its layers, read it back as the same layers, linked again."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from conftest import digits_analysis

from napari_topolens.topology import analysis as analysis_module
from napari_topolens.ui import view_data as vd
from napari_topolens.ui.io import (
    VIEW_FILE,
    AnalysisSaveError,
    get_reader,
    read_analysis,
    write_analysis,
)
from napari_topolens.ui.links import links_for
from napari_topolens.ui.show import IncrementalShow
from napari_topolens.ui.views import canvas_for, find_layers, recolor_nodes, show_analysis

COMPARED = (
    "mapper_nodes",
    "mapper_edges",
    "diagram",
    "barcode",
    "flow",
    "flow_clusters",
    "blob_points",
    "blob_hulls",
    "dendrogram_tree",
)


@pytest.fixture(scope="module")
def digits():
    return digits_analysis(100, with_images=True)


def show_every_panel(viewer):
    canvas = canvas_for(viewer)
    for panel in vd.PANELS:
        canvas.show_panel(panel)
    canvas.show_panel("mapper")


def features_of(viewer):
    show_every_panel(viewer)
    out = {}
    for layer in find_layers(viewer):
        view = layer.metadata["topolens"]["view"]
        if view in COMPARED:
            out[view] = (
                layer.features.drop(columns=["highlighted"], errors="ignore").reset_index(
                    drop=True
                ),
                layer.metadata["topolens"]["layer"],
            )
    return out


@pytest.mark.slow
def test_write_then_read_gives_the_same_linked_layers(
    make_napari_viewer, digits, tmp_path, monkeypatch, qtbot
):
    images, analysis = digits
    viewer = make_napari_viewer()
    show_analysis(viewer, analysis, "pool1")
    (key,) = links_for(viewer).keys
    recolor_nodes(viewer, key, "purity")
    before = features_of(viewer)
    nodes = find_layers(viewer, key, "mapper_nodes")[0]
    colors_before = np.array(nodes.face_color)
    # the writer gets what napari gives a writer: the selected layers' data tuples (the
    # layers of the image viewer; the view layers live in the topology canvas)
    selected = [
        find_layers(viewer, key, "images")[0].as_layer_data_tuple(),
        find_layers(viewer, key, "overlay")[0].as_layer_data_tuple(),
    ]
    target = tmp_path / "run.topolens"
    assert write_analysis(str(target), selected) == [str(target)]
    assert json.loads((target / VIEW_FILE).read_text())["layer"] == "pool1"
    assert get_reader(str(target)) is read_analysis
    assert get_reader(str(tmp_path)) is None and get_reader(str(tmp_path / "nothing.npy")) is None

    def refuse(*args, **kwargs):
        raise AssertionError("reading a saved analysis must not recompute it")

    monkeypatch.setattr(analysis_module, "iter_analyze", refuse)
    monkeypatch.setattr(analysis_module, "analyze", refuse)
    from napari_topolens.layout import mapper as layout_module

    monkeypatch.setattr(layout_module, "mapper_layout", refuse)  # the layouts are saved too
    other = make_napari_viewer()
    links = links_for(other)
    other.open(str(target), plugin="napari-topolens")  # what File > Open does
    qtbot.waitUntil(
        lambda: len(links.keys) == 1 and bool(links.state.get(links.keys[0]).network_layer),
        timeout=60_000,
    )
    # (its views first, then the images, overlay and gallery: all in when its show ends)
    qtbot.waitUntil(
        lambda: (
            len(find_layers(other, view="gallery")) == 1
            and not [s for s in IncrementalShow.running() if s.kind == "show"]
        ),
        timeout=60_000,
    )
    qtbot.wait(100)
    after = features_of(other)
    assert set(after) == set(before)
    for view, (table, layer) in before.items():
        pd.testing.assert_frame_equal(after[view][0], table, check_dtype=False)
        assert after[view][1] == layer == "pool1"
    reopened_images = find_layers(other, view="images")[0]
    assert np.array_equal(reopened_images.data, images)  # the saved analysis is self-contained
    reopened_nodes = find_layers(other, view="mapper_nodes")[0]
    assert np.allclose(np.array(reopened_nodes.face_color), colors_before)  # colouring kept
    assert np.allclose(reopened_nodes.data, nodes.data)  # same seeded layout
    # links work again: a node selection lights its members' fields
    (key2,) = links.keys
    loaded = links.analysis(key2)
    graph = loaded["pool1"].mapper
    row = int(np.argmax(reopened_nodes.features["size"].to_numpy()))
    reopened_nodes.selected_data = {row}
    members = graph.node_members(int(reopened_nodes.features["node"].iloc[row]))
    assert np.array_equal(links.last_members, members)
    overlay = find_layers(other, key2, "overlay")[0].data
    cloud = loaded["pool1"].cloud
    mask = np.zeros(overlay.shape, bool)
    for p in members:
        y0, x0, y1, x1 = cloud.receptive_field[p]
        mask[cloud.image_index[p], y0:y1, x0:x1] = True
    assert np.array_equal(overlay > 0, mask)
    # and a pixel click lights the nodes holding it
    p = int(members[0])
    image, (y0, x0, _, _) = int(cloud.image_index[p]), cloud.receptive_field[p]
    found = links.pixel_clicked(key2, image, int(y0), int(x0))
    assert int(reopened_nodes.features["node"].iloc[row]) in found["mapper_nodes"]


def test_writer_refuses_layers_without_an_analysis(tmp_path, digits):
    _, analysis = digits
    with pytest.raises(AnalysisSaveError, match="TopoLens analysis"):
        write_analysis(str(tmp_path / "x"), [(np.zeros((3, 3)), {"metadata": {}}, "image")])

    def meta(a):
        return {
            "metadata": {"topolens": {"view": "overlay", "key": "k", "layer": "", "analysis": a}}
        }

    with pytest.raises(AnalysisSaveError, match="different analyses"):
        write_analysis(
            str(tmp_path / "y"),
            [(None, meta(analysis), "points"), (None, meta(copy.copy(analysis)), "points")],
        )


def test_writer_errors_reach_the_user_through_napari(make_napari_viewer, tmp_path, digits):
    """npe2 swallows a writer's ValueError (napari then says "no writer found"); ours is not one."""
    _, analysis = digits
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 4)), name="plain")
    with pytest.raises(AnalysisSaveError, match="none of the layers to save belongs"):
        viewer.layers.save(str(tmp_path / "plain.topolens"), plugin="napari-topolens")
    assert not (tmp_path / "plain.topolens").exists()
    # a folder of the user's that is not an analysis is refused, and left as it was
    foreign = tmp_path / "mine.topolens"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    show_analysis(viewer, analysis, "pool1")
    overlay = find_layers(viewer, None, "overlay")[0]  # the analysis's layer in the image viewer
    viewer.layers.selection = {overlay}
    with pytest.raises(AnalysisSaveError, match="other content"):
        viewer.layers.save(str(foreign), selected=True, plugin="napari-topolens")
    assert (foreign / "notes.txt").read_text() == "keep me"
    # and a good save through napari works
    saved = viewer.layers.save(
        str(tmp_path / "good.topolens"), selected=True, plugin="napari-topolens"
    )
    assert saved and get_reader(saved[0]) is read_analysis


def test_the_reader_claims_only_saved_analysis_folders(tmp_path, digits):
    from npe2 import PluginManager
    from PIL import Image

    png = tmp_path / "picture.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    assert get_reader(str(png)) is None
    assert get_reader(str(tmp_path)) is None  # a folder that is not an analysis
    assert get_reader([str(png), str(png)]) is None

    def ours(path):
        return [
            r.command
            for r in PluginManager.instance().iter_compatible_readers([str(path)])
            if r.command.startswith("napari-topolens")
        ]

    # napari never offers TopoLens for a PNG (no "Choose reader" dialog preselecting it)
    assert ours(png) == []
    _, analysis = digits
    saved = analysis.save(tmp_path / "digits.topolens")
    assert ours(saved) == ["napari-topolens.get_reader"]
    assert get_reader(str(saved)) is read_analysis


def test_the_view_record_is_untrusted_like_the_rest_of_the_folder(tmp_path, digits):
    from napari_topolens.ui import io

    _, analysis = digits
    folder = analysis.save(tmp_path / "a.topolens")
    layer = analysis.layers[0]
    good = {"layer": layer, "color_by": "purity", "edge_threshold": 0.25}
    (folder / VIEW_FILE).write_text(json.dumps(good))
    assert io._view_settings(folder, analysis)["color_by"] == "purity"

    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(good))
    (folder / VIEW_FILE).unlink()
    (folder / VIEW_FILE).symlink_to(outside)
    assert io._view_settings(folder, analysis)["color_by"] == "dominant_class"  # link ignored

    (folder / VIEW_FILE).unlink()
    (folder / VIEW_FILE).write_text(json.dumps({**good, "pad": "x" * io.MAX_VIEW_FILE_BYTES}))
    assert io._view_settings(folder, analysis)["color_by"] == "dominant_class"  # too large
    (folder / VIEW_FILE).write_text("[" * 100_000 + "]" * 100_000)
    assert io._view_settings(folder, analysis)["color_by"] == "dominant_class"  # not a record
