"""The analysis widget end to end in a real viewer: run, marks, cancel, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dock_analysis, wait_for

from napari_topolens.errors import TopoLensError
from napari_topolens.ui.analysis_widget import (
    ADDED_PREFIX,
    CONSOLE_PREFIX,
    IMPORT_SPEC,
    AnalysisWidget,
)
from napari_topolens.ui.model_registry import discovered_models
from napari_topolens.ui.module_tree import ModuleTree
from napari_topolens.ui.widget_parts import (
    CURRENT_IMAGE,
    MARKED_IMAGES,
    marked_stack_indices,
)


def layer_names(viewer):
    return [layer.name for layer in viewer.layers]


@pytest.fixture
def digits(make_napari_viewer):
    viewer = make_napari_viewer()
    (images,) = viewer.open_sample("napari-topolens", "digits")
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None
    return viewer, widget, images


def test_run_on_marked_images_adds_linked_layers(digits, qtbot):
    viewer, widget, images = digits
    marked = np.zeros(images.data.shape, dtype=np.uint8)
    chosen = np.arange(3, 1797, 12)  # 150 images
    marked[chosen, 2:5, 2:5] = 1
    viewer.add_labels(marked, name="marks")
    assert widget.module_tree.checked() == ["pool1", "pool2", "fc1"]  # the sample's defaults
    widget.module_tree.set_checked(["pool2", "fc1"])
    widget.which.value = MARKED_IMAGES
    widget.marker_layer.value = viewer.layers["marks"]
    widget.lens.value = "probability"
    before = layer_names(viewer)

    worker = widget.run()
    assert worker is not None and not widget.run_button.enabled
    wait_for(qtbot, worker, timeout=60_000)

    analysis = widget.analysis
    assert analysis is not None, widget.status.value
    assert analysis.layers == ["pool2", "fc1"]
    # the clouds index the image layer's stack, not the 150 analysed images
    np.testing.assert_array_equal(np.unique(analysis["fc1"].cloud.image_index), chosen)
    np.testing.assert_array_equal(
        analysis["fc1"].point_labels, images.metadata["labels"][analysis["fc1"].cloud.image_index]
    )
    provenance = analysis.provenance
    assert provenance["model"] == "sample:digits" and provenance["sample"] == "digits"
    assert provenance["image_layer"] == "digits images"
    assert provenance["image_index"] == chosen.tolist() and provenance["marker_layer"] == "marks"
    # the probability lens got the model's predictions for exactly the analysed images
    assert analysis.config.mapper_lens == "probability"
    assert np.isfinite(analysis.probabilities[chosen]).all()
    assert np.isnan(np.delete(analysis.probabilities, chosen, axis=0)).all()
    np.testing.assert_allclose(analysis.probabilities[chosen].sum(axis=1), 1.0, atol=1e-5)
    # the whole stack travels with the analysis, so a saved one needs no image files
    assert provenance["images_embedded"] is True
    np.testing.assert_array_equal(analysis.images, images.data)
    assert analysis.images is not images.data

    # layers came back on the main thread, tagged with the analysis key: the overlay and
    # gallery in the image viewer, the views in the topology canvas
    from napari_topolens.ui.views import canvas_for

    canvas_layers = list(canvas_for(viewer).model.layers)
    added = [layer for layer in viewer.layers if layer.name not in before] + canvas_layers
    assert added and widget.layers_added
    assert {layer.name for layer in widget.layers_added} <= {
        layer.name for layer in [*viewer.layers, *canvas_layers]
    }
    keys = {layer.metadata["topolens"]["key"] for layer in added}
    assert len(keys) == 1
    views = {layer.metadata["topolens"]["view"] for layer in added}
    assert {"mapper_nodes", "mapper_edges", "overlay", "gallery"} <= views
    assert "images" not in views  # the analysed Image layer was reused
    assert "Analysed 2 layer(s) of 150 image(s)" in widget.status.value
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_marks_of_points_shapes_and_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((10, 8, 8), np.float32), name="stack")
    points = viewer.add_points(np.array([[3, 1, 1], [7, 2, 2], [3, 4, 4], [12, 1, 1]]), name="p")
    shapes = viewer.add_shapes(
        [np.array([[5, 0, 0], [5, 0, 3], [5, 3, 3], [5, 3, 0]])], shape_type="polygon", name="s"
    )
    labels = np.zeros((10, 8, 8), np.uint8)
    labels[[2, 9], 4, 4] = 1
    labels_layer = viewer.add_labels(labels, name="l")
    np.testing.assert_array_equal(
        marked_stack_indices(image, points), [3, 7]
    )  # 12 is off the stack
    np.testing.assert_array_equal(marked_stack_indices(image, shapes), [5])
    np.testing.assert_array_equal(marked_stack_indices(image, labels_layer), [2, 9])

    flat = viewer.add_points(np.array([[1.0, 1.0]]), name="flat")
    with pytest.raises(ValueError, match="no stack axis"):
        marked_stack_indices(image, flat)
    empty = viewer.add_labels(np.zeros((10, 8, 8), np.uint8), name="empty")
    with pytest.raises(ValueError, match="marks no image"):
        marked_stack_indices(image, empty)

    widget = dock_analysis(viewer)
    widget.image_layer.value = image
    assert widget.marker_layer.native.isHidden()  # shown only when it matters
    widget.which.value = MARKED_IMAGES
    assert not widget.marker_layer.native.isHidden()
    assert {name for name, _ in widget._marker_layer_choices()} == {"p", "s", "l", "flat", "empty"}
    widget.marker_layer.value = points
    np.testing.assert_array_equal(widget.selected_indices(), [3, 7])
    viewer.dims.set_current_step(0, 6)
    widget.which.value = CURRENT_IMAGE
    np.testing.assert_array_equal(widget.selected_indices(), [6])


def test_cancel_mid_run_leaves_the_viewer_unchanged(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-topolens", "shapes")
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: shapes"
    widget.load_model()
    widget.sampling.value = "all_positions"
    widget.max_points.value = 2500
    before = layer_names(viewer)
    seen = []

    worker = widget.run()
    assert worker is not None

    def cancel_once_in_topology(step):
        seen.append(step.message)
        if step.message.startswith("topology") and len(seen) < 1000:
            widget.cancel()

    worker.yielded.connect(cancel_once_in_topology)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert any(m.startswith("topology") for m in seen), seen
    assert not any("analysis done" in m for m in seen)
    assert layer_names(viewer) == before
    assert widget.analysis is None and widget.layers_added == []
    assert "Cancelled" in widget.status.value
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_bad_input_gives_one_message_and_keeps_the_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.full((6, 8, 8), np.nan, dtype=np.float32), name="broken")
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: digits"
    widget.image_layer.value = viewer.layers["broken"]
    assert widget.load_model() is not None

    from napari.utils.notifications import notification_manager

    before = len(notification_manager.records)
    assert widget.run() is None
    assert widget.status.value.startswith("Error:") and "NaN" in widget.status.value
    (note,) = notification_manager.records[before:]  # one message, the same one
    assert str(note.message) in widget.status.value

    widget.module_tree.set_checked([])
    assert widget.run() is None
    assert "no layers are ticked" in widget.status.value

    widget.model_source.value = IMPORT_SPEC
    widget.spec.value = "no_such_package_xyz:net"
    assert widget.run() is None
    assert "could not be imported" in widget.status.value

    widget.model_source.value = "sample: digits"
    widget.which.value = MARKED_IMAGES
    assert widget.run() is None
    assert "no marking layer is chosen" in widget.status.value

    assert layer_names(viewer) == ["broken"]
    assert widget.analysis is None and widget.worker is None


class ConsoleNet:
    """Built lazily so that torch is imported inside the test only."""

    @staticmethod
    def make():
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(1, 4, 3)
                self.act = torch.nn.ReLU()
                self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 10 * 10, 5))
                self.spare = torch.nn.Linear(3, 3)  # never called

            def forward(self, x):
                return self.head(self.act(self.conv(x)))

        return Net()


def test_models_given_with_add_model(make_napari_viewer):
    import torch
    from qtpy.QtCore import Qt

    import napari_topolens as tl

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((20, 12, 12), dtype=np.float32), name="noise")
    widget = dock_analysis(viewer)
    net = ConsoleNet.make()
    assert tl.add_model(viewer, net, name="my_net") == "my_net"
    # the open widget lists it at once and chooses it (the user just handed it over)
    assert widget.model_source.value == ADDED_PREFIX + "my_net"
    assert tl.add_model(viewer, torch.nn.Sequential(torch.nn.Linear(2, 2))) == "Sequential"
    other_viewer = make_napari_viewer()
    assert ADDED_PREFIX + "my_net" not in dock_analysis(other_viewer).model_source.choices
    # a widget opened after add_model starts with the model handed over
    # a second widget in the same viewer (napari docks one per name): made directly
    assert AnalysisWidget(viewer).model_source.value == ADDED_PREFIX + "Sequential"
    with pytest.raises(TopoLensError, match="expects a torch.nn.Module"):
        tl.add_model(viewer, "not a model")
    with pytest.raises(TopoLensError, match="non-empty name"):
        tl.add_model(viewer, net, name="  ")

    widget.model_source.value = ADDED_PREFIX + "my_net"
    assert widget.load_model() is net
    tree: ModuleTree = widget.module_tree
    assert tree.names == ["conv", "act", "head.0", "head.1", "head"]  # forward order
    assert tree.item("head.1").parent() is tree.item("head")  # nested like named_modules()
    # no defaults: a spread over depth (not the output, not the flatten), not only one layer
    assert tree.checked() == ["conv", "act"]
    assert not tree.item("spare").flags() & Qt.ItemFlag.ItemIsUserCheckable
    tree.set_checked(["head.1", "conv", "spare"])
    assert tree.checked() == ["conv", "head.1"]  # forward order, the uncalled one dropped
    assert widget._model_label.startswith("added:my_net")

    # the same name again: the new model replaces the old one, also once loaded
    replacement = ConsoleNet.make()
    tl.add_model(viewer, replacement, name="my_net")
    assert widget.load_model() is replacement

    widget.model_source.value = ADDED_PREFIX + "Sequential"
    tl.remove_model(viewer, "Sequential")
    assert widget.load_model() is None
    assert "no model is added as 'Sequential' any more" in widget.status.value


def test_a_spread_of_layers_is_ticked_for_a_model_without_defaults():
    import torch
    from torch import nn

    from napari_topolens.activations.models import list_layers
    from napari_topolens.ui.analysis_widget import spread_layers

    net = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(),
        nn.Linear(8 * 5 * 5, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )
    names = list_layers(net, (1, 28, 28))
    # each stage's end (pooling, not the ReLU before it), spread from first to last
    assert spread_layers(net, names) == ["2", "7", "11"]
    assert spread_layers(net, names, count=5) == ["2", "5", "7", "11"]  # all 4 stage ends
    assert spread_layers(net, names, count=1) == ["11"]  # the last one before the output
    single = nn.Linear(4, 2)
    assert spread_layers(single, list_layers(single)) == []
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    assert spread_layers(flat, list_layers(flat, (1, 8, 8))) == ["0"]
    assert isinstance(net, torch.nn.Module)


@pytest.mark.enable_console
def test_models_defined_in_the_open_console_are_found(make_napari_viewer):
    import torch

    viewer = make_napari_viewer()
    console = viewer.window._qt_viewer.console  # (the test opens it; src uses public API only)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    viewer.update_console({"live_net": net})
    assert console.shell.user_ns["live_net"] is net
    assert discovered_models()["live_net"] is net
    widget = dock_analysis(viewer)
    assert CONSOLE_PREFIX + "live_net" in widget.model_source.choices
    widget.model_source.value = CONSOLE_PREFIX + "live_net"
    assert widget.load_model() is net
    # a model both added and in the console is listed once, as added
    import napari_topolens as tl

    tl.add_model(viewer, net, name="live")
    assert ADDED_PREFIX + "live" in widget.model_source.choices
    assert CONSOLE_PREFIX + "live_net" not in widget.model_source.choices


def test_a_run_shows_its_progress_in_the_dock_and_makes_no_napari_progress_bar(
    digits, qtbot, monkeypatch
):
    """napari's bar runs the event loop when it is made and on each update (a quarter
    second, and whatever is due then, in one turn): the dock has a bar of its own."""
    import napari.utils

    _viewer, widget, _images = digits
    made: list[object] = []
    monkeypatch.setattr(napari.utils, "progress", lambda *a, **k: made.append(k))
    values: list[int] = []
    widget.progress_bar.valueChanged.connect(values.append)
    statuses: list[str] = []
    widget.progress_bar.valueChanged.connect(lambda _v: statuses.append(widget.status.value))
    widget.module_tree.set_checked(["fc1"])
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker, timeout=60_000)
    assert widget.analysis is not None, widget.status.value
    assert made == []
    assert len(values) > 3 and values == sorted(values)  # the dock's bar moved forward
    # the bar says the percentage, the status the step (which wraps): each once
    assert widget.progress_bar.format() == "%p%"
    assert len(statuses) > 3 and not any("%:" in status for status in statuses), statuses


def test_a_warning_of_the_child_process_is_a_napari_notification(digits, qtbot, monkeypatch):
    """The topology computes in a child process; its warnings (a library's, ours) reach
    napari's notifications, as they did when it computed here."""
    from napari.utils.notifications import notification_manager

    from napari_topolens.topology import child_process

    for idle in child_process.live_children():  # (started with the child's usual code)
        idle.close()
    monkeypatch.setattr(
        child_process,
        "CHILD_CODE",
        "import warnings\n"
        "from napari_topolens.topology import child_process as c\n"
        "real = c.iter_analyze\n"
        "def warning_analysis(*args, **kwargs):\n"
        "    warnings.warn('a cover this thin leaves points out', RuntimeWarning)\n"
        "    return (yield from real(*args, **kwargs))\n"
        "c.iter_analyze = warning_analysis\n"
        "c.serve()\n",
    )
    _viewer, widget, _images = digits
    widget.module_tree.set_checked(["fc1"])
    messages: list[str] = []
    notification_manager.notification_ready.connect(lambda n: messages.append(str(n.message)))
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker, timeout=60_000)
    assert widget.analysis is not None, widget.status.value
    qtbot.waitUntil(lambda: bool(messages), timeout=10_000)
    assert any("a cover this thin leaves points out" in m for m in messages), messages
    for child in child_process.live_children():  # not left for other tests with this code
        child.close()


def test_cancel_while_the_topology_computes_ends_its_child_process(digits, qtbot):
    """The topology runs in a child process: Cancel ends it (napari keeps an aborted
    worker's generator suspended; the widget closes it)."""
    from napari_topolens.topology import child_process

    _viewer, widget, _images = digits
    widget.module_tree.set_checked(["pool2", "fc1"])
    messages: list[str] = []
    worker = widget.run()
    assert worker is not None, widget.status.value
    worker.yielded.connect(lambda step: messages.append(str(getattr(step, "message", ""))))
    qtbot.waitUntil(lambda: any("topology: layer" in m for m in messages), timeout=60_000)
    computing = child_process.live_children()
    assert len(computing) == 1 and not child_process._IDLE  # taken from the pool, computing
    widget.cancel()
    wait_for(qtbot, worker, timeout=60_000)
    qtbot.waitUntil(lambda: not computing[0].alive, timeout=10_000)
    assert widget.analysis is None and "Cancelled" in widget.status.value


@pytest.mark.parametrize("closed_while", ["computing", "showing"])
def test_closing_the_window_during_a_run_stops_it_quietly(make_napari_viewer, qtbot, closed_while):
    """A user closes napari's window while a run computes or adds its views: the run
    stops (its child process ends, no full collection stays paused) and nothing raises
    on the widget napari has deleted (its progress and status did, in Qt slots; a run
    closed while showing waited for its views ten minutes)."""
    from napari_topolens.topology import child_process
    from napari_topolens.ui import collector
    from napari_topolens.ui.show import IncrementalShow

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-topolens", "digits")
    widget = dock_analysis(viewer)  # through napari's door
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None
    widget.module_tree.set_checked(["pool2", "fc1"])
    messages: list[str] = []
    worker = widget.run()
    assert worker is not None, widget.status.value
    worker.yielded.connect(lambda step: messages.append(str(getattr(step, "message", ""))))
    if closed_while == "computing":
        qtbot.waitUntil(lambda: any("topology: layer" in m for m in messages), timeout=60_000)
        (computing,) = child_process.live_children()
    else:
        qtbot.waitUntil(lambda: bool(IncrementalShow.running()), timeout=60_000)
    ended: list[bool] = []
    worker.finished.connect(lambda: ended.append(True))  # (it may end inside close)
    viewer.close()
    qtbot.waitUntil(lambda: bool(ended), timeout=30_000)
    if closed_while == "computing":
        qtbot.waitUntil(lambda: not computing.alive, timeout=10_000)
    qtbot.waitUntil(lambda: not collector.is_paused(), timeout=10_000)
    assert not IncrementalShow.running()
    qtbot.wait(200)  # what was queued for the deleted widget comes due (and must not raise)


def test_a_run_extracts_with_a_core_left_for_the_viewer_and_puts_torch_back(
    digits, qtbot, monkeypatch
):
    """torch's default is a thread per core: the viewer's main thread then got a third of
    a core on two. A run leaves one core, and the count comes back after it. (torch's
    count is set in the thread that runs it, the worker's; here a recorded count of 4 on
    4 cores stands for whatever this machine has.)"""
    import os

    import torch

    import napari_topolens.pipeline.run as run_module

    _viewer, widget, _images = digits
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    threads = [4]
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads[0])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: threads.__setitem__(0, n))
    seen: list[int] = []
    real = run_module.iter_extract_activations

    def spy(*args, **kwargs):  # what the extraction sees when it runs, in the worker
        steps = real(*args, **kwargs)

        def extracting():
            seen.append(threads[0])
            return (yield from steps)

        return extracting()

    monkeypatch.setattr(run_module, "iter_extract_activations", spy)
    widget.module_tree.set_checked(["fc1"])
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker, timeout=60_000)
    assert widget.analysis is not None, widget.status.value
    assert seen == [3] and threads == [4]
