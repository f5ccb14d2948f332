"""The analysis widget's defaults and label sources, and what it tells the user."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import dock_analysis, wait_for

from napari_topolens import load_sample
from napari_topolens.ui.analysis_widget import (
    ADDED_PREFIX,
    DEFAULT_SAMPLING,
    SAMPLE_PREFIX,
)
from napari_topolens.ui.label_choice import (
    CSV_FILE,
    LAYER_METADATA,
    NO_LABELS,
    PREDICTIONS,
    read_label_choice,
)
from napari_topolens.ui.widget_parts import CURRENT_IMAGE, MARKED_IMAGES


def label_values(widget):
    return [value for _, value in widget._label_choices()]


def test_defaults_follow_the_open_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-topolens", "shapes")
    widget = dock_analysis(viewer)
    assert widget.model_source.value == SAMPLE_PREFIX + "shapes"  # not the digits model
    assert widget.sampling.value == DEFAULT_SAMPLING == "top_norm"
    # a sample carries true labels: offered by name and chosen visibly, not taken silently
    assert widget.labels_source.value == LAYER_METADATA
    assert widget.labels_source.native.currentText() == "true labels (layer metadata)"
    assert widget.load_model() is not None
    assert widget.module_tree.checked() == ["pool1", "pool2", "pool3", "fc1"]

    # the digits sample opened later and chosen as the images: its model follows
    (digits,) = viewer.open_sample("napari-topolens", "digits")
    widget.image_layer.value = digits
    assert widget.model_source.value == SAMPLE_PREFIX + "digits"

    # a user's own images carry no labels: the model's predictions, said so by name
    mine = viewer.add_image(np.zeros((5, 8, 8), np.float32), name="mine")
    widget.image_layer.value = mine
    assert widget.labels_source.value == PREDICTIONS
    assert LAYER_METADATA not in label_values(widget)
    assert "predictions" in widget.labels_source.native.currentText()
    assert widget.labels_file.native.isHidden()
    widget.labels_source.value = CSV_FILE
    assert not widget.labels_file.native.isHidden()


def test_labels_from_a_features_column_of_points_on_the_stack(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((6, 8, 8), np.float32), name="stack")
    points = viewer.add_points(
        np.array([[0, 1, 1], [2, 3, 3], [2, 4, 4], [5, 1, 1], [9, 1, 1]]),
        features={"kind": ["ring", "disk", "disk", "ring", "disk"], "score": [1, 2, 3, 4, 5]},
        name="marks",
    )
    table = viewer.add_labels(np.zeros((6, 8, 8), np.uint8), name="table")
    table.features = {"index": np.arange(6), "cls": [0, 1, 1, 0, 2, 2]}
    widget = dock_analysis(viewer)
    widget.image_layer.value = image
    values = label_values(widget)
    assert ("features", "marks", "kind") in values and ("features", "marks", "score") in values
    assert ("features", "table", "cls") in values

    chosen = read_label_choice(("features", "marks", "kind"), viewer, image, 6)
    # each point labels the image it sits on; images without a point are unknown
    np.testing.assert_array_equal(chosen.labels, [1, -1, 0, -1, -1, 1])
    assert chosen.class_names == ["disk", "ring"]
    assert "'kind'" in chosen.description and "'marks'" in chosen.description
    rows = read_label_choice(("features", "table", "cls"), viewer, image, 6)
    np.testing.assert_array_equal(rows.labels, [0, 1, 1, 0, 2, 2])  # one row per image

    # two points on one image that disagree: one clear message, nothing guessed
    points.features = {"kind": ["ring", "disk", "ring", "ring", "disk"], "score": [1, 2, 3, 4, 5]}
    with pytest.raises(ValueError, match="image 2 has marks with different labels"):
        read_label_choice(("features", "marks", "kind"), viewer, image, 6)
    viewer.layers.remove(points)
    with pytest.raises(ValueError, match="'marks' is gone"):
        read_label_choice(("features", "marks", "kind"), viewer, image, 6)
    assert read_label_choice(NO_LABELS, viewer, image, 6).labels is None


def test_a_bad_csv_is_refused_before_anything_runs(make_napari_viewer, tmp_path: Path):
    viewer = make_napari_viewer()
    (images,) = viewer.open_sample("napari-topolens", "digits")
    widget = dock_analysis(viewer)
    assert widget.load_model() is not None
    widget.labels_source.value = CSV_FILE
    assert widget.run() is None
    assert "choose the labels CSV file" in widget.status.value
    bad = tmp_path / "labels.csv"
    bad.write_text("label\n1\n2\n")  # 2 labels for 1,797 images
    widget.labels_file.value = bad
    assert widget.run() is None
    assert "2 labels for 1797 images" in widget.status.value
    assert [layer.name for layer in viewer.layers] == [images.name]
    assert widget.worker is None and widget.progress_bar.isHidden()


def test_csv_labels_reach_the_analysis(make_napari_viewer, qtbot, tmp_path: Path):
    viewer = make_napari_viewer()
    (images,) = viewer.open_sample("napari-topolens", "digits")
    widget = dock_analysis(viewer)
    assert widget.load_model() is not None
    widget.module_tree.set_checked(["fc1"])
    marks = np.zeros(images.data.shape, np.uint8)
    chosen = np.arange(0, 1797, 15)
    marks[chosen, 0, 0] = 1
    viewer.add_labels(marks, name="marks")
    widget.which.value = MARKED_IMAGES
    widget.marker_layer.value = viewer.layers["marks"]
    csv = tmp_path / "mine.csv"
    truth = images.metadata["labels"]
    csv.write_text("image,label\n" + "".join(f"{i},{truth[i]}\n" for i in chosen))
    widget.labels_source.value = CSV_FILE
    widget.labels_file.value = csv
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker)
    analysis = widget.analysis
    assert analysis is not None, widget.status.value
    np.testing.assert_array_equal(analysis.labels[chosen], truth[chosen])
    assert np.all(np.delete(analysis.labels, chosen) == -1)
    assert analysis.class_names == list(load_sample("digits").class_names)  # the model's classes
    assert analysis.provenance["labels"] == "labels file mine.csv"
    assert analysis.provenance["labels_from_predictions"] is False
    # the model's predictions are recorded all the same, for correct / incorrect
    assert analysis.predictions.dtype == np.int64
    assert np.all(analysis.predictions[chosen] >= 0)
    assert np.all(np.delete(analysis.predictions, chosen) == -1)
    accuracy = np.mean(analysis.predictions[chosen] == truth[chosen])
    assert accuracy > 0.8, accuracy  # the sample model is good: codes line up with classes


def _user_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(24, 3),
    )


def test_a_users_rgb_images_get_the_models_predictions_as_labels(make_napari_viewer, qtbot):
    import napari_topolens as tl

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    rgb = rng.random((40, 12, 12, 3), dtype=np.float32)
    viewer.add_image(rgb, name="my photos", rgb=True)
    widget = dock_analysis(viewer)
    progress = []
    tl.add_model(viewer, _user_model(), name="net")
    assert widget.model_source.value == ADDED_PREFIX + "net"
    assert widget.load_model() is not None
    assert widget.module_tree.checked() == ["2", "5"]  # a spread: both stage ends
    assert widget.labels_source.value == PREDICTIONS
    worker = widget.run()
    assert worker is not None, widget.status.value
    assert widget.progress_bar.isVisibleTo(widget)  # in the dock, where the user looks
    worker.yielded.connect(lambda _step: progress.append(widget.progress_bar.value()))
    assert "labels: the model's own predictions" in widget.status.value
    wait_for(qtbot, worker)
    analysis = widget.analysis
    assert analysis is not None, widget.status.value
    assert not widget.progress_bar.isVisibleTo(widget)
    assert progress and max(progress) > 0 and progress == sorted(progress)
    np.testing.assert_array_equal(analysis.labels, analysis.predictions)
    assert analysis.class_names == ["class 0", "class 1", "class 2"]
    assert analysis.provenance["labels_from_predictions"] is True
    assert "predictions" in analysis.provenance["labels"]
    assert "model's own predictions" in widget.status.value
    assert analysis.provenance["sampling"] == "top_norm"
    # top_norm: receptive fields are patches, not the whole image
    fields = analysis["2"].cloud.receptive_field
    assert np.all((fields[:, 2] - fields[:, 0]) < 12)


def test_the_current_image_alone_is_analysed_at_every_position(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-topolens", "shapes")
    widget = dock_analysis(viewer)
    assert widget.load_model() is not None
    viewer.dims.set_current_step(0, 7)
    widget.which.value = CURRENT_IMAGE
    # a layer without a grid gives one point: said before any topology runs
    widget.module_tree.set_checked(["pool1", "fc1"])
    worker = widget.run()
    assert worker is not None
    wait_for(qtbot, worker)
    assert widget.analysis is None
    assert re.search(r"one image gives fc1 too few points.*untick it", widget.status.value)
    # spatial layers only: every position of that one image, and the status says so
    widget.module_tree.set_checked(["pool1", "pool2"])
    worker = widget.run()
    assert "all_positions instead of top_norm" in widget.status.value
    wait_for(qtbot, worker)
    analysis = widget.analysis
    assert analysis is not None, widget.status.value
    assert analysis.provenance["image_index"] == [7]
    assert analysis.provenance["sampling"] == "all_positions"
    assert "one image" in analysis.provenance["sampling_note"]
    assert len(analysis["pool1"].cloud) == 24 * 24


def test_a_model_without_class_scores_needs_another_label_source(make_napari_viewer, qtbot):
    import torch

    import napari_topolens as tl

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).random((30, 10, 10), dtype=np.float32), name="img")
    widget = dock_analysis(viewer)
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3)
    )
    tl.add_model(viewer, encoder, name="encoder")  # outputs feature maps, not class scores
    assert widget.load_model() is encoder
    widget.module_tree.set_checked(["1"])
    assert widget.labels_source.value == PREDICTIONS
    worker = widget.run()
    wait_for(qtbot, worker)
    assert widget.analysis is None
    assert "not a (batch, classes) tensor" in widget.status.value
    assert "choose another label source" in widget.status.value
    widget.labels_source.value = NO_LABELS
    worker = widget.run()
    wait_for(qtbot, worker)
    analysis = widget.analysis
    assert analysis is not None, widget.status.value
    assert analysis.labels is None and analysis.predictions is None
    assert "predictions" in analysis.provenance["notes"]
    assert analysis.provenance["labels"] == "none"
