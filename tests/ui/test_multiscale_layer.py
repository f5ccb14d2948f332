"""A multiscale image layer in the analysis widget: the level the model takes, overlaid."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dock_analysis, wait_for

from napari_topolens import load_sample
from napari_topolens.ui.level_layer import LEVEL_KEY


def _pyramid_viewer(make_napari_viewer, levels):
    viewer = make_napari_viewer()
    pyramid = viewer.add_image(levels, multiscale=True, name="pyramid", translate=(0, 3.0, -2.0))
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None
    widget.image_layer.value = pyramid
    return viewer, widget, pyramid


@pytest.mark.slow
def test_only_the_coarser_level_fits_so_it_is_analysed_and_linked(make_napari_viewer, qtbot):
    small = load_sample("digits").images[:40].astype(np.float32)  # (40, 8, 8): the model's size
    big = np.repeat(np.repeat(small, 2, axis=1), 2, axis=2)  # (40, 16, 16): the model refuses it
    viewer, widget, pyramid = _pyramid_viewer(make_napari_viewer, [big, small])
    widget.module_tree.set_checked(["pool1", "fc1"])
    labels_choice = widget.labels_source.value

    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker)
    analysis = widget.analysis
    assert analysis is not None, widget.status.value

    level = viewer.layers["pyramid (level 1, analysed)"]
    assert level.data is pyramid.data[1] and not level.multiscale
    assert level.metadata[LEVEL_KEY] == {"layer": "pyramid", "level": 1}
    # drawn where napari draws level 1 of the pyramid: 2x the scale, same origin
    np.testing.assert_allclose(level.scale, (1.0, 2.0, 2.0))
    np.testing.assert_allclose(level.translate, pyramid.translate)
    np.testing.assert_allclose(pyramid.world_to_data((7, 3.0 + 6.0, -2.0 + 10.0)), (7, 6, 10))
    np.testing.assert_allclose(level.world_to_data((7, 3.0 + 6.0, -2.0 + 10.0)), (7, 3, 5))

    # the analysis read level 1 and is linked to its layer
    assert widget.image_layer.value is level
    assert widget.labels_source.value == labels_choice  # the swap kept the label choice
    assert analysis["pool1"].cloud.image_shape == (8, 8)
    assert analysis.provenance["image_layer"] == level.name
    assert analysis.provenance["image_shape"] == [8, 8]
    np.testing.assert_array_equal(analysis.images, small)
    from napari_topolens.ui.links import links_for

    links = links_for(viewer)
    (key,) = links.keys
    assert links.image_layer_of(key) is level
    overlay = next(
        layer
        for layer in viewer.layers
        if layer.metadata.get("topolens", {}).get("view") == "overlay"
    )
    assert overlay.data.shape == small.shape
    np.testing.assert_allclose(overlay.scale, level.scale)

    # a second run on the pyramid reuses the level layer
    widget.image_layer.value = pyramid
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker)
    assert [layer.name for layer in viewer.layers].count("pyramid (level 1, analysed)") == 1


def test_no_level_fits_gives_one_message_and_adds_nothing(make_napari_viewer):
    images = np.random.default_rng(0).random((5, 24, 24)).astype(np.float32)
    viewer, widget, _pyramid = _pyramid_viewer(make_napari_viewer, [images, images[:, ::2, ::2]])
    before = [layer.name for layer in viewer.layers]
    assert widget.run() is None
    assert "no level of the multiscale image fits the model" in widget.status.value
    assert "level 0: 24x24; level 1: 12x12" in widget.status.value
    assert [layer.name for layer in viewer.layers] == before
    assert widget.analysis is None


def test_a_refused_run_on_a_multiscale_layer_takes_its_level_layer_away(make_napari_viewer):
    small = load_sample("digits").images[:20].astype(np.float32)
    big = np.repeat(np.repeat(small, 2, axis=1), 2, axis=2)
    viewer, widget, pyramid = _pyramid_viewer(make_napari_viewer, [big, small])
    before = [layer.name for layer in viewer.layers]
    widget.module_tree.set_checked(["pool1", "fc1"])
    widget.variant_form.add(text="gaussian:0.1")
    widget.sampling.value = "foreground"  # without a foreground mask: refused after the swap
    assert widget.run() is None
    assert "mask" in widget.status.value.lower()
    assert [layer.name for layer in viewer.layers] == before
    assert widget.image_layer.value is pyramid
