"""The analysis widget's input scale: chosen in the form, applied, recorded, warned about."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import wait_for

from napari_topolens import load_sample, predict_proba
from napari_topolens.ui.analysis_widget import SAMPLE_PREFIX


@pytest.mark.slow
def test_uint8_photos_get_the_models_own_predictions_and_a_warning_as_stored(
    make_napari_viewer, qtbot
):
    viewer = make_napari_viewer()
    sample = load_sample("digits")
    photos = np.rint(sample.images[:60] * 255).astype(np.uint8)
    viewer.add_image(photos, name="digit photos")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-topolens", "Topology analysis")
    assert widget.input_scale.value == "dtype"
    assert widget.input_scale.native.currentText() == "[0, 1] from dtype"
    assert widget.scale_mean_std.native.isHidden()  # only for a custom mean/std
    widget.input_scale.value = "custom"
    assert not widget.scale_mean_std.native.isHidden()
    widget.scale_mean_std.value = "0.5"
    assert widget.run() is None and "mean / std" in widget.status.value  # refused, named
    widget.input_scale.value = "dtype"

    widget.model_source.value = SAMPLE_PREFIX + "digits"
    assert widget.load_model() is not None
    widget.module_tree.set_checked(["fc1"])
    worker = widget.run()
    assert worker is not None, widget.status.value
    assert "Warning" not in widget.status.value
    wait_for(qtbot, worker)
    analysis = widget.analysis
    assert analysis is not None, widget.status.value
    own = predict_proba(sample.model, photos.astype(np.float32) / 255).argmax(1)
    np.testing.assert_array_equal(analysis.predictions, own)
    assert analysis.provenance["input_scale"] == "[0, 1] from dtype (uint8 / 255)"

    widget.input_scale.value = "as-stored"
    worker = widget.run()
    assert worker is not None, widget.status.value
    assert "Warning: input scale as stored" in widget.status.value  # said at once
    wait_for(qtbot, worker)
    assert "Warning: input scale as stored" in widget.status.value  # and kept at the end
    assert widget.analysis.provenance["input_scale"] == "as stored"
    assert "input_scale" in widget.analysis.provenance["notes"]
