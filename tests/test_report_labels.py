"""The report says when its classes are the model's own predictions, not true labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_topolens.activations.pointcloud import PointCloud
from napari_topolens.topology.analysis import AnalysisConfig, analyze


def small_analysis(provenance):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    points = (rng.normal(scale=6, size=(3, 4))[labels] + rng.normal(size=(60, 4))).astype(
        np.float32
    )
    cloud = PointCloud(
        layer="fc",
        points=points,
        image_index=np.arange(60),
        position=None,
        receptive_field=np.tile([0, 0, 8, 8], (60, 1)),
        sampling="pooled",
        grid_shape=(),
        image_shape=(8, 8),
    )
    config = AnalysisConfig(
        h1_max_points=40, phdim_start=20, phdim_step=10, dendrogram_max_points=30
    )
    return analyze([cloud], labels, config=config, predictions=labels, provenance=provenance)


def test_predicted_classes_are_named_as_such_in_the_report(tmp_path: Path):
    from napari_topolens.report.html import write_report

    said = "classes are the model&#x27;s own predictions, not true labels"
    predicted = small_analysis(
        {"labels": "the model's own predictions", "labels_from_predictions": True}
    )
    page = write_report(predicted, tmp_path / "predicted").read_text(encoding="utf-8")
    assert said in page
    true = small_analysis({"labels": "labels file y.csv", "labels_from_predictions": False})
    page = write_report(true, tmp_path / "true").read_text(encoding="utf-8")
    assert said not in page and "labels file y.csv" in page
