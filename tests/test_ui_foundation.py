"""The samples open in a real viewer, and the widget pulls activations through its worker."""

from __future__ import annotations

import numpy as np
import pytest

from napari_topolens.ui.activation_widget import CURRENT_IMAGE, ActivationWidget
from napari_topolens.ui.sample_data import SAMPLE_KEY


@pytest.mark.parametrize("name, shape", [("digits", (8, 8)), ("shapes", (48, 48))])
def test_samples_open_as_image_stacks(make_napari_viewer, name, shape):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-topolens", name)
    (layer,) = layers
    assert layer.data.ndim == 3 and layer.data.shape[1:] == shape
    meta = layer.metadata
    assert meta[SAMPLE_KEY] == name
    assert len(meta["labels"]) == len(layer.data)
    assert len(meta["class_names"]) == int(meta["labels"].max()) + 1


def wait_for(qtbot, worker, timeout=60_000):
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass


def test_widget_pulls_activations_end_to_end(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-topolens", "shapes")
    widget = ActivationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.model_source.value == "sample: shapes"  # the open sample's, not digits
    assert widget.sampling.value == "top_norm"
    widget.model_source.value = "sample: shapes"
    assert widget.image_layer.value.metadata[SAMPLE_KEY] == "shapes"
    widget.load_model()
    assert "pool2" in widget.layers.choices
    widget.layers.value = ["pool1", "pool2"]
    widget.sampling.value = "top_norm"
    worker = widget.run()
    assert worker is not None
    wait_for(qtbot, worker)
    assert set(widget.clouds) == {"pool1", "pool2"}
    n_images = len(viewer.layers[0].data)
    cloud = widget.clouds["pool2"]
    assert len(cloud) == n_images and cloud.position is not None
    assert "pool2:" in widget.status.value and f"{n_images} points" in widget.status.value
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_widget_current_image_only(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-topolens", "digits")
    widget = ActivationWidget(viewer)
    widget.model_source.value = "sample: digits"
    widget.load_model()
    viewer.dims.set_current_step(0, 7)
    widget.which.value = CURRENT_IMAGE
    worker = widget.run()
    wait_for(qtbot, worker)
    for cloud in widget.clouds.values():
        np.testing.assert_array_equal(np.unique(cloud.image_index), [0])
    np.testing.assert_array_equal(widget.source["image_index"], [7])


def test_widget_reports_bad_input_and_keeps_the_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.full((3, 8, 8), np.nan, dtype=np.float32), name="broken")
    widget = ActivationWidget(viewer)
    widget.model_source.value = "sample: digits"
    widget.image_layer.value = viewer.layers["broken"]
    widget.load_model()
    assert widget.run() is None
    assert "NaN" in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["broken"]
    assert widget.clouds == {}
    widget.model_source.value = "import spec + weights"
    widget.spec.value = "no_such_package_xyz:net"
    assert widget.load_model() is None
    assert "could not be imported" in widget.status.value


def test_the_activation_widget_shares_the_analysis_widgets_model_chooser(make_napari_viewer, qtbot):
    """One chooser for both widgets: the activation widget lists a model handed over with
    ``add_model`` too, and a changed choice drops the model loaded before, so a run never
    uses a model the form no longer shows."""
    import torch

    import napari_topolens as tl
    from napari_topolens.ui.analysis_widget import AnalysisWidget
    from napari_topolens.ui.model_chooser import ADDED_PREFIX, ModelChooser

    viewer = make_napari_viewer()
    viewer.open_sample("napari-topolens", "digits")
    widget = ActivationWidget(viewer)
    assert isinstance(widget.model_chooser, ModelChooser)
    assert isinstance(AnalysisWidget(viewer).model_chooser, ModelChooser)
    assert widget.load_model() is not None
    assert widget.layers.choices  # the sample model's layers
    torch.manual_seed(0)
    tiny = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(108, 10)
    )
    tl.add_model(viewer, tiny, name="tiny")
    assert widget.model_source.value == ADDED_PREFIX + "tiny"  # listed and chosen when idle
    assert widget.model_chooser.chosen is None and list(widget.layers.choices) == []
    worker = widget.run()  # loads the model the form shows, not the sample's kept before
    assert worker is not None
    wait_for(qtbot, worker)
    assert widget.source["model"].startswith("added:tiny")
    assert set(widget.clouds) <= {"0", "1", "2", "3"} and widget.clouds


def test_closing_the_window_while_activations_are_pulled_stops_it_quietly(
    make_napari_viewer, qtbot
):
    """A user closes napari's window while the docked widget pulls activations: the pull
    stops at its next step and nothing raises on the widget napari has deleted (its end
    set its buttons and status, in Qt slots)."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-topolens", "shapes")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-topolens", "Pull activations")
    widget.model_source.value = "sample: shapes"
    widget.load_model()
    widget.layers.value = ["pool1", "pool2"]
    worker = widget.run()
    assert worker is not None, widget.status.value
    ended: list[bool] = []
    worker.finished.connect(lambda: ended.append(True))  # (it may end inside close)
    viewer.close()
    qtbot.waitUntil(lambda: bool(ended), timeout=60_000)
    qtbot.wait(200)  # what was queued for the deleted widget comes due (and must not raise)
    assert not widget.clouds  # stopped, not finished


@pytest.mark.parametrize("widget_name", ["AnalysisWidget", "ActivationWidget"])
def test_a_widget_no_window_holds_is_freed_by_the_collector(make_napari_viewer, widget_name):
    """Built from its class (as a script would, or as one taken off by its dock's X is:
    then Python's to free): nothing of the plugin's keeps it alive, and freeing it runs
    none of its code inside the collector (a ``destroyed`` handler did, and segfaulted)."""
    import gc
    import weakref

    from napari_topolens.ui import activation_widget, analysis_widget

    viewer = make_napari_viewer()
    module = analysis_widget if widget_name == "AnalysisWidget" else activation_widget
    widget = getattr(module, widget_name)(viewer)
    ref = weakref.ref(widget)
    del widget
    for _ in range(3):
        gc.collect()
    assert ref() is None
