"""Variants, foreground masks and the device in the analysis widget, in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dock_analysis, wait_for

from napari_topolens.robustness.perturbations import STRENGTH_RANGES
from napari_topolens.ui.analysis_widget import AnalysisWidget
from napari_topolens.ui.label_choice import PREDICTIONS
from napari_topolens.ui.variant_choice import STRENGTHS
from napari_topolens.ui.widget_parts import MARKED_IMAGES, layer_mask

#: 120 digits, every 15th from 2: the stack has 1797, so stack index != selection index.
CHOSEN = np.arange(2, 1797, 15)[:120]


@pytest.fixture
def digits(make_napari_viewer):
    viewer = make_napari_viewer()
    (images,) = viewer.open_sample("napari-topolens", "digits")
    marks = np.zeros(images.data.shape, dtype=np.uint8)
    marks[CHOSEN, 3:5, 3:5] = 1
    viewer.add_labels(marks, name="marks")
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None
    widget.module_tree.set_checked(["pool2", "fc1"])
    widget.which.value = MARKED_IMAGES
    widget.marker_layer.value = viewer.layers["marks"]
    return viewer, widget, images


def test_variant_form_adds_removes_and_refuses(digits):
    viewer, widget, _ = digits
    form = widget.variant_form
    assert list(form.kind.choices)[:8] == list(STRENGTHS)[:8]
    assert {"prune", "int8", "prune+int8", "gaussian", "fgsm", "occlusion"} <= set(
        form.kind.choices
    )

    # the strength follows the kind: range, step, default, tooltip
    form.kind.value = "blur"
    assert (form.strength.min, form.strength.max) == STRENGTH_RANGES["blur"]
    assert form.strength.value == 1.0
    assert "pixels" in form.strength.tooltip
    form.kind.value = "gaussian"
    assert (form.strength.min, form.strength.max) == STRENGTH_RANGES["gaussian"]
    assert form.strength.value == 0.1
    assert "value range" in form.strength.tooltip
    form.kind.value = "int8"
    assert not form.strength.enabled
    assert form.add() == "int8"
    form.kind.value = "prune+int8"
    assert form.strength.enabled and form.strength.value == 0.5
    assert form.add() == "prune:0.5+int8"
    form.kind.value = "gaussian"
    form.strength.value = 0.3
    assert form.add() == "gaussian:0.3"
    assert form.texts == ["int8", "prune:0.5+int8", "gaussian:0.3"]

    # a duplicate and bad specs are refused in the status line, the list unchanged
    assert form.add() is None
    assert "gaussian:0.3 is in the list already" in widget.status.value
    assert form.add(text="gaussian:-1") is None
    assert "within 0..10" in widget.status.value
    assert form.add(text="salt_pepper:2") is None and "within 0..1 " in widget.status.value
    assert form.add(text="jpeg:0.1") is None and "unknown variant" in widget.status.value
    assert form.add(text="prune:1.5") is None and "between 0 and 1" in widget.status.value
    assert form.texts == ["int8", "prune:0.5+int8", "gaussian:0.3"]

    # remove the selected entry; nothing selected: nothing removed
    form.specs_list.setCurrentRow(1)
    assert form.remove_selected() == "prune:0.5+int8"
    assert form.texts == ["int8", "gaussian:0.3"]
    form.specs_list.clearSelection()
    assert form.remove_selected() is None and form.texts == ["int8", "gaussian:0.3"]
    specs = form.specs(seed=7)
    assert [s.name for s in specs] == ["int8", "gaussian:0.3"] and specs[1].seed == 7

    # the mask choices: Shapes and Labels layers only (not images, points or views)
    viewer.add_shapes(
        [np.array([[0, 0, 0], [0, 0, 3], [0, 3, 3]])], shape_type="polygon", name="outline"
    )
    viewer.add_points(np.array([[1, 1, 1]]), name="dots")
    form.reset_choices()
    names = {layer.name for layer in form.occlusion_mask.choices if layer is not None}
    assert {"marks", "outline"} <= names and "dots" not in names and "digits images" not in names
    assert form.occlusion_mask.value is None  # nullable: a random patch
    widget.foreground_mask.reset_choices()
    assert {"marks", "outline"} <= {c.name for c in widget.foreground_mask.choices if c}


def test_variants_run_stack_indexed_and_save(digits, qtbot, tmp_path):
    from napari_topolens.topology.store import load_analysis
    from napari_topolens.ui.views import canvas_for

    viewer, widget, images = digits
    for text in ("gaussian:0", "gaussian:0.3", "prune:0.5"):
        assert widget.variant_form.add(text=text) == text
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker, timeout=240_000)
    analysis = widget.analysis
    assert analysis is not None, widget.status.value
    n_stack = len(images.data)
    np.testing.assert_array_equal(analysis.provenance["image_index"], CHOSEN)
    assert analysis.provenance["variants"] == ["gaussian:0", "gaussian:0.3", "prune:0.5"]
    by_name = {v.name: v for v in analysis.variants}
    assert list(by_name) == ["gaussian:0", "gaussian:0.3", "prune:0.5"]
    labels = images.metadata["labels"]

    for variant in analysis.variants:
        # the same image numbers as the base: stack positions of the layer
        for layer in ("pool2", "fc1"):
            index = variant.analysis[layer].cloud.image_index
            assert set(index.tolist()) <= set(CHOSEN.tolist())
            np.testing.assert_array_equal(
                variant.analysis[layer].point_labels, labels[index]
            )  # same labels as the base
        assert len(variant.analysis.predictions) == n_stack
        assert (variant.analysis.predictions[np.setdiff1d(np.arange(n_stack), CHOSEN)] == -1).all()
        # accuracies on the selection only (NaN rows of the stack left out)
        expected = np.mean(variant.analysis.predictions[CHOSEN] == labels[CHOSEN])
        # probabilities only for the probability lens: a stack x classes array is sized
        # by the layer, not by the selection
        assert variant.analysis.probabilities is None and analysis.probabilities is None
        assert variant.comparison.accuracy_variant == pytest.approx(expected)
        base_expected = np.mean(analysis.predictions[CHOSEN] == labels[CHOSEN])
        assert variant.comparison.accuracy_base == pytest.approx(base_expected)
        provenance = variant.analysis.provenance
        assert provenance["variant"] == variant.name
        assert provenance["image_layer"] == "digits images"
        assert provenance["image_index"] == CHOSEN.tolist()
        assert provenance["device"] == "cpu"
        assert variant.seconds["extraction"] >= 0

    # strength 0: the same topology, no image moved, the same predictions
    zero = by_name["gaussian:0"].comparison
    for drift in zero.drifts:
        assert np.all(drift.bottleneck == 0) and np.all(drift.sliced_wasserstein == 0)
        assert not drift.moved.any()
    assert zero.prediction_changed == 0.0
    noisy = by_name["gaussian:0.3"].comparison
    assert noisy.mean_drift() > 0 and np.nansum(noisy.moved_fraction) > 0

    # perturbed images: a full stack, zeros outside the selection, perturbed inside
    outside = np.setdiff1d(np.arange(n_stack), CHOSEN)
    for name, changed in (("gaussian:0", False), ("gaussian:0.3", True)):
        stack = by_name[name].images(analysis)
        assert stack.shape == images.data.shape and stack.dtype == images.data.dtype
        assert not stack[outside].any()
        assert changed == (not np.array_equal(stack[CHOSEN], images.data[CHOSEN]))
    assert by_name["prune:0.5"].analysis.images is None
    assert by_name["prune:0.5"].images(analysis) is analysis.images

    # one drift line per variant in the status
    status = widget.status.value
    for name in by_name:
        assert f"\n{name}: SW-H1 drift" in status
    assert "\nVariants (SW drift relative" in status
    assert "moved 0% at fc1, accuracy" in status and "→" in status
    # the base and, beside it, the first variant in the next slot of the canvas
    from napari_topolens.ui.state import state_for

    state = state_for(viewer)
    key = state.key_of(analysis)
    assert key is not None and f"{key} · gaussian:0" in state
    assert state.get(f"{key} · gaussian:0").slot == state.get(key).slot + 1
    assert len(canvas_for(viewer).model.layers) > 0

    # save / load round trip of the widget-made analysis with its variants
    analysis.save(tmp_path / "saved")
    loaded = load_analysis(tmp_path / "saved")
    assert [v.name for v in loaded.variants] == list(by_name)
    for old, new in zip(analysis.variants, loaded.variants):
        assert new.spec == old.spec
        if old.analysis.images is None:
            assert new.analysis.images is None
        else:
            np.testing.assert_array_equal(new.analysis.images, old.analysis.images)
        np.testing.assert_array_equal(
            new.analysis["fc1"].cloud.image_index, old.analysis["fc1"].cloud.image_index
        )
        np.testing.assert_allclose(
            new.comparison.distances(), old.comparison.distances(), equal_nan=True
        )
        assert new.comparison.accuracy_variant == pytest.approx(old.comparison.accuracy_variant)


def test_cancel_during_the_variants_leaves_the_viewer_untouched(digits, qtbot):
    from napari_topolens.ui.views import canvas_for

    viewer, widget, _ = digits
    for text in ("blur:1", "gaussian:0.2", "prune:0.3"):
        widget.variant_form.add(text=text)
    before = [layer.name for layer in viewer.layers]
    seen: list[str] = []

    def on_step(step):
        message = str(getattr(step, "message", ""))
        seen.append(message)
        if "variant 1/3" in message and widget._job is not None and not widget._job.cancelled:
            widget.cancel()

    worker = widget.run()
    assert worker is not None, widget.status.value
    worker.yielded.connect(on_step)
    wait_for(qtbot, worker, timeout=240_000)
    assert any("variant 1/3" in m for m in seen)
    assert not any("variant 2/3" in m for m in seen)  # stopped between steps
    assert widget.analysis is None and widget.layers_added == []
    assert [layer.name for layer in viewer.layers] == before
    assert len(canvas_for(viewer).model.layers) == 0
    assert "Cancelled" in widget.status.value


def test_perturbed_variants_of_a_stack_over_the_cap_are_refused_up_front(make_napari_viewer):
    import dask.array as da

    from napari_topolens.ui.label_choice import LabelChoice

    viewer = make_napari_viewer()
    frames = 20_000  # 312.5 MiB of float32 frames, declared by a lazy array
    layer = viewer.add_image(da.zeros((frames, 64, 64), dtype=np.float32), name="big")
    widget = dock_analysis(viewer)
    widget.variant_form.add(text="prune:0.5")
    no_labels = LabelChoice(None, None, "none")
    plan = widget._variant_plan(layer, np.arange(3), frames, no_labels)
    assert plan is not None and [s.name for s in plan.specs] == ["prune:0.5"]  # compression: fine
    widget.variant_form.add(text="blur:1")
    with pytest.raises(
        ValueError,
        match=r"1 x 20000 images of 64x64 float32 and the 3 selected take 312.5 MiB, more "
        r"than the 256 MiB cap",
    ):
        widget._variant_plan(layer, np.arange(3), frames, no_labels)
    # each perturbation keeps its own stack: the cap is on all of them together
    small = viewer.add_image(da.zeros((10_000, 64, 64), dtype=np.float32), name="small")
    assert widget._variant_plan(small, np.arange(3), 10_000, no_labels) is not None  # 156 MiB
    widget.variant_form.add(text="gaussian:0.1")
    with pytest.raises(ValueError, match=r"2 x 10000 images .* take 312\.5 MiB"):
        widget._variant_plan(small, np.arange(3), 10_000, no_labels)


@pytest.fixture
def shapes(make_napari_viewer):
    viewer = make_napari_viewer()
    (images,) = viewer.open_sample("napari-topolens", "shapes")
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: shapes"
    assert widget.load_model() is not None
    widget.module_tree.set_checked(["pool1", "pool2"])
    return viewer, widget, images


def test_foreground_sampling_with_a_labels_mask(shapes, qtbot, monkeypatch):
    viewer, widget, images = shapes
    chosen = np.arange(5, 1200, 20)  # 60 images
    mask = np.zeros(images.data.shape, dtype=np.uint8)
    mask[chosen, 30:46, 4:20] = 2  # the object: the bottom-left corner
    viewer.add_labels(mask, name="object")
    widget.which.value = MARKED_IMAGES
    widget.marker_layer.value = viewer.layers["object"]  # marks the same 60 images
    assert "foreground" in widget.sampling.choices
    assert widget.foreground_mask.native.isHidden()
    widget.sampling.value = "foreground"
    assert not widget.foreground_mask.native.isHidden()

    # no mask chosen: one clear message, nothing runs
    widget.foreground_mask.value = None
    assert widget.run() is None
    assert "Foreground mask" in widget.status.value
    # a mask of the wrong shape
    viewer.add_labels(np.ones((10, 48, 48), dtype=np.uint8), name="short")
    widget.foreground_mask.value = viewer.layers["short"]
    assert widget.run() is None
    assert "(10, 48, 48)" in widget.status.value and "(1200, 48, 48)" in widget.status.value

    from napari_topolens.activations.device import available_devices

    assert list(widget.device.choices) == available_devices()  # cpu first, GPUs when present
    assert widget.device.value == "cpu"
    widget.device.value = "cpu"
    import napari_topolens.pipeline.run as run_module

    real_iter_analyze = run_module.iter_analyze_in_child  # the widget's runs compute there
    devices: list = []

    def spy(*args, **kwargs):  # the device reaches the topology (its exact H0 tree) too
        devices.append(kwargs.get("device"))
        return real_iter_analyze(*args, **kwargs)

    monkeypatch.setattr(run_module, "iter_analyze_in_child", spy)
    widget.foreground_mask.value = viewer.layers["object"]
    # variants of the same run: FGSM against the model's own predictions (the labels),
    # and an occlusion of the object's pixels (the same layer as occlusion mask)
    widget.labels_source.value = PREDICTIONS
    widget.variant_form.add(text="fgsm:0.05")
    widget.variant_form.add(text="occlusion:1")
    widget.variant_form.occlusion_mask.value = viewer.layers["object"]
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker, timeout=240_000)
    analysis = widget.analysis
    assert analysis is not None, widget.status.value
    assert analysis.provenance["sampling"] == "foreground"
    assert analysis.provenance["foreground_mask"] == "object"
    assert analysis.provenance["device"] == "cpu"
    assert devices == ["cpu"] * 3  # the base and its two variants
    inside = mask != 0
    for name in ("pool1", "pool2"):
        cloud = analysis[name].cloud
        assert len(cloud) == len(chosen)
        rf = cloud.receptive_field
        cy, cx = (rf[:, 0] + rf[:, 2] - 1) // 2, (rf[:, 1] + rf[:, 3] - 1) // 2
        assert inside[cloud.image_index, cy, cx].all()
        for variant in analysis.variants:  # sampled inside the same mask
            cloud = variant.analysis[name].cloud
            rf = cloud.receptive_field
            cy, cx = (rf[:, 0] + rf[:, 2] - 1) // 2, (rf[:, 1] + rf[:, 3] - 1) // 2
            assert inside[cloud.image_index, cy, cx].all()
    fgsm, occlusion = analysis.variants
    assert fgsm.analysis.provenance["sampling"] == "foreground"
    assert "predictions changed" in widget.status.value and "accuracy" not in widget.status.value
    assert fgsm.comparison.prediction_changed > 0  # the attack flips some of the model's guesses
    # occlusion: the object's pixels greyed (one value), the rest of each image untouched
    greyed = occlusion.images(analysis)[chosen]
    original = images.data[chosen]
    object_pixels = inside[chosen]
    assert np.unique(greyed[object_pixels]).size == 1
    np.testing.assert_array_equal(greyed[~object_pixels], original[~object_pixels])


def test_shapes_masks_are_rasterised_on_the_image_they_sit_on(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((6, 16, 16), np.float32), name="stack")
    rect = np.array([[4, 2, 3], [4, 2, 9], [4, 7, 9], [4, 7, 3]], dtype=float)
    other = rect.copy()
    other[:, 0] = 1  # on an image that is not asked for
    shapes = viewer.add_shapes([rect, other], shape_type="rectangle", name="boxes")
    mask = layer_mask(shapes, image, np.array([0, 4]), max_bytes=2**20, what="the mask")
    assert mask.shape == (2, 16, 16)
    assert not mask[0].any()
    assert mask[1, 3:7, 4:9].all() and mask[1].sum() < 8 * 8
    flat = viewer.add_shapes([rect[:, 1:]], shape_type="rectangle", name="flat")
    one = layer_mask(flat, image, np.array([0, 4]), max_bytes=2**20, what="the mask")
    assert one.shape == (16, 16) and one[3:7, 4:9].all()
    with pytest.raises(ValueError, match="MiB"):
        layer_mask(shapes, image, np.arange(6), max_bytes=100, what="the mask")


def test_a_device_torch_cannot_use_is_refused_before_any_work(digits, monkeypatch):
    import torch

    from napari_topolens.activations import device as device_module

    viewer, widget, _ = digits
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal needs a machine without it")
    # a combo listing cuda (as on a GPU machine) hands it to extraction, which refuses it
    monkeypatch.setattr(device_module, "available_devices", lambda: ["cpu", "cuda"])
    widget.device.reset_choices()
    assert list(widget.device.choices) == ["cpu", "cuda"]
    widget.device.value = "cuda"
    before = [layer.name for layer in viewer.layers]
    assert widget.run() is None
    assert "device 'cuda' is not available" in widget.status.value
    assert [layer.name for layer in viewer.layers] == before and widget.analysis is None


def test_long_layer_names_and_drift_lines_fit_a_330_pixel_dock(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QApplication, QScrollArea

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 16, 16), np.float32), name="stack")
    long_name = "object mask drawn by hand on every image of the stack"
    viewer.add_labels(np.zeros((4, 16, 16), np.uint8), name=long_name)
    # made directly: measured on its own at a dock's width, not in napari's dock
    widget = AnalysisWidget(viewer)  # made while the long name is open
    widget.variants_section.expand(animate=False)
    widget.sampling.value = "foreground"
    widget.foreground_mask.value = viewer.layers[long_name]
    widget.variant_form.occlusion_mask.value = viewer.layers[long_name]
    widget.status.value = "Analysed ...\n" + "gaussian:0.3: SW-H1 drift 1.34, moved 91% " * 3
    qtbot.addWidget(widget)
    widget.resize(330, 900)
    widget.show()
    for _ in range(5):
        QApplication.processEvents()
    scroll = widget.findChild(QScrollArea)
    content = scroll.widget()
    assert content.minimumSizeHint().width() <= scroll.viewport().width()
    assert content.width() <= scroll.viewport().width()  # nothing cut at the right edge


def test_a_single_image_layer_gets_a_single_image_variant(make_napari_viewer, qtbot):
    from napari_topolens.ui.widget_parts import CURRENT_IMAGE

    viewer = make_napari_viewer()
    (images,) = viewer.open_sample("napari-topolens", "digits")
    one = viewer.add_image(np.asarray(images.data[5]), name="one")  # (8, 8): no stack axis
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None
    widget.module_tree.set_checked(["conv1", "conv2"])
    widget.image_layer.value = one
    widget.which.value = CURRENT_IMAGE
    assert widget.variant_form.add(text="gaussian:0.2") == "gaussian:0.2"
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker, timeout=240_000)
    assert widget.analysis is not None and widget.analysis.variants, widget.status.value
    (variant_layer,) = [
        layer
        for layer in viewer.layers
        if layer.metadata.get("topolens", {}).get("view") == "variant_images"
    ]
    assert variant_layer.data.shape == one.data.shape == (8, 8)
