"""A dask-backed image layer is analysed batch by batch, never read whole."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dock_analysis, wait_for

from napari_topolens import extract_activations, load_sample

da = pytest.importorskip("dask.array")


class CountingArray:
    """An array-like that records how many images each read asked for."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.reads: list[int] = []

    def __getitem__(self, key):
        rows = self.array[key]
        self.reads.append(len(rows) if np.ndim(rows) == self.ndim else 1)
        return rows


def test_dask_layer_is_read_in_chunks_and_gives_the_numpy_result(make_napari_viewer, qtbot):
    sample = load_sample("digits")
    images = sample.images[:160]
    counting = CountingArray(images)
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        da.from_array(counting, chunks=(20, 8, 8), asarray=False),
        name="lazy digits",
        metadata={"labels": sample.labels[:160], "class_names": sample.class_names},
    )
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None
    widget.module_tree.set_checked(["pool2", "fc1"])
    widget.image_layer.value = layer
    widget.h1_max_points.value = 60
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker)
    analysis = widget.analysis
    assert analysis is not None, widget.status.value
    assert counting.reads and max(counting.reads) <= 20  # chunk by chunk, never all 160
    want = extract_activations(
        sample.model,
        images,
        ["pool2", "fc1"],
        sampling=widget.sampling.value,
        max_points=int(widget.max_points.value) or None,
        seed=int(widget.seed.value),
    )
    for name in ("pool2", "fc1"):
        np.testing.assert_array_equal(analysis[name].cloud.points, want[name].points)
    np.testing.assert_array_equal(analysis.images, images)


@pytest.mark.slow
def test_scheduler_field_runs_the_analysis_on_a_local_cluster(make_napari_viewer, qtbot):
    distributed = pytest.importorskip("distributed")
    from napari_topolens.topology.analysis import analyze

    sample = load_sample("digits")
    images = sample.images[:120]
    viewer = make_napari_viewer()
    layer = viewer.add_image(images, name="digits part")
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None
    widget.module_tree.set_checked(["pool2", "fc1"])
    widget.image_layer.value = layer
    widget.h1_max_points.value = 60
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        widget.scheduler.value = f"  {cluster.scheduler_address} "
        worker = widget.run()
        assert worker is not None, widget.status.value
        wait_for(qtbot, worker, timeout=180_000)
        assert {"batch_task", "layer_task"} <= {
            p.lstrip("_") for p in cluster.scheduler.task_prefixes
        }
    analysis = widget.analysis
    assert analysis is not None, widget.status.value
    assert analysis.provenance["scheduler"] == cluster.scheduler_address
    clouds = extract_activations(
        sample.model,
        images,
        ["pool2", "fc1"],
        sampling=widget.sampling.value,
        max_points=int(widget.max_points.value) or None,
        seed=int(widget.seed.value),
    )
    here = analyze(clouds, None, config=widget.config())
    for name in ("pool2", "fc1"):
        np.testing.assert_array_equal(analysis[name].cloud.points, clouds[name].points)
        for dim in (0, 1):
            np.testing.assert_array_equal(
                analysis[name].persistence.diagrams[dim], here[name].persistence.diagrams[dim]
            )
