"""Extraction batches and per-layer topology as Dask tasks on a two-process LocalCluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_topolens import cli, extract_activations, load_sample
from napari_topolens.distributed import SchedulerError, connect
from napari_topolens.topology.analysis import AnalysisConfig, analyze

distributed = pytest.importorskip("distributed")

LAYERS = ["pool1", "pool2", "fc1"]
CONFIG = AnalysisConfig(h1_max_points=60, phdim_start=40, phdim_step=30)


#: torch and BLAS threads, the same in the workers and in this process: float32 GEMMs
#: split over another number of threads round differently (Dask starts its workers with
#: OMP_NUM_THREADS=1), and the equality test below compares arrays exactly.
THREADS = 1


def _pin_threads(count: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(count)
    threadpool_limits(count)


@pytest.fixture(scope="module")
def cluster():
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    before_torch = torch.get_num_threads()
    before_blas = {pool["user_api"]: pool["num_threads"] for pool in threadpool_info()}
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as local:
        with distributed.Client(local) as client:
            client.run(_pin_threads, THREADS)
        _pin_threads(THREADS)
        try:
            yield local
        finally:
            torch.set_num_threads(before_torch)
            for api, count in before_blas.items():
                threadpool_limits(count, user_api=api)


@pytest.fixture(scope="module")
def shapes():
    sample = load_sample("shapes")
    index = np.arange(0, len(sample.images), 8)  # 150 images
    return sample, index


#: Manifest keys that differ between two runs of the same analysis: times, checksums of
#: the files, and the receptive-field probe passes this call made (0 when the model's
#: probes were cached by an earlier extraction in the same process).
VOLATILE = ("created", "seconds", "sha256", "manifest_sha256", "receptive_field_probe_passes")


def _volatile(tree):
    """The manifest without what differs between two runs (times, library list)."""
    if isinstance(tree, dict):
        return {k: _volatile(v) for k, v in tree.items() if k not in VOLATILE}
    if isinstance(tree, list):
        return [_volatile(v) for v in tree]
    return tree


@pytest.mark.slow
def test_saved_analysis_equals_the_in_process_one_array_for_array(
    cluster, shapes, tmp_path: Path
) -> None:
    sample, index = shapes
    images, labels = sample.images[index], sample.labels[index]
    address = cluster.scheduler_address
    assert address.startswith("tcp://127.0.0.1:")
    local = extract_activations(sample.model, images, LAYERS, sampling="top_norm", batch_size=32)
    remote = extract_activations(
        sample.model, images, LAYERS, sampling="top_norm", batch_size=32, scheduler=address
    )
    kw = dict(config=CONFIG, class_names=sample.class_names, images=images)
    in_process = analyze(local, labels, **kw)
    on_cluster = analyze(remote, labels, scheduler=address, **kw)
    assert on_cluster.layers == in_process.layers == LAYERS
    ran = {prefix.lstrip("_") for prefix in cluster.scheduler.task_prefixes}
    assert {"batch_task", "layer_task"} <= ran, ran  # the work really ran as Dask tasks
    in_process.save(tmp_path / "here.topolens")
    on_cluster.save(tmp_path / "there.topolens")
    with (
        np.load(tmp_path / "here.topolens" / "arrays.npz", allow_pickle=False) as here,
        np.load(tmp_path / "there.topolens" / "arrays.npz", allow_pickle=False) as there,
    ):
        assert sorted(here.files) == sorted(there.files)
        assert len(here.files) > 50
        for key in here.files:
            np.testing.assert_array_equal(here[key], there[key], err_msg=key)
    manifests = [
        json.loads((tmp_path / f"{n}.topolens" / "analysis.json").read_text())
        for n in ("here", "there")
    ]
    here_tree, there_tree = (_volatile(m) for m in manifests)
    _assert_same_tree(here_tree, there_tree, "manifest")


def _assert_same_tree(a, b, where: str) -> None:
    """Equal JSON trees; the failure names the first differing path."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for key in a:
            _assert_same_tree(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_a_model_error_on_a_worker_reaches_the_caller(cluster, shapes) -> None:
    from torch import nn

    from napari_topolens.errors import ModelError

    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            if x.shape[0] > 1:
                raise RuntimeError("boom on a batch")
            return self.conv(x)

    sample, index = shapes
    with pytest.raises(ModelError, match="boom on a batch"):
        extract_activations(
            Fails(), sample.images[index[:20]], ["conv"], scheduler=cluster.scheduler_address
        )


def test_workers_scale_the_images_and_hook_each_call(cluster, shapes) -> None:
    """uint8 photos reach the model as [0, 1] on the workers too; pool#k at its own call."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_module_calls import build

    sample, index = shapes
    photos = np.rint(sample.images[index[:40]] * 255).astype(np.uint8)
    floats = photos.astype(np.float32) / 255
    for model, layers in ((sample.model, ["pool2", "fc1"]), (build(), ["pool#1", "pool#2"])):
        if layers[0] == "pool#1":
            photos, floats = photos[:, :16, :16].copy(), floats[:, :16, :16].copy()
        remote = extract_activations(
            model, photos, layers, sampling="top_norm", scheduler=cluster.scheduler_address
        )
        here = extract_activations(model, floats, layers, sampling="top_norm")
        for name in layers:
            np.testing.assert_array_equal(remote[name].points, here[name].points)
            np.testing.assert_array_equal(remote[name].receptive_field, here[name].receptive_field)


def test_report_command_on_a_scheduler(cluster, tmp_path: Path, capsys) -> None:
    code = cli.main(
        [
            "report",
            "--sample",
            "shapes",
            "--max-images",
            "120",
            "--layers",
            "pool2,fc1",
            "--h1-max-points",
            "60",
            "--scheduler",
            cluster.scheduler_address,
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    from napari_topolens.topology.store import load_analysis

    analysis = load_analysis(tmp_path / "out" / "analysis")
    assert analysis.provenance["scheduler"] == cluster.scheduler_address


def test_no_scheduler_at_the_address_is_one_clear_error() -> None:
    with (
        pytest.raises(SchedulerError, match="no Dask scheduler at .tcp://127.0.0.1:9."),
        connect("tcp://127.0.0.1:9", timeout=1.0),
    ):
        pass
