"""The run pipeline on a tiny model: options reach every stage, one provenance, cancel, checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_topolens.pipeline.run as run_module
from napari_topolens._progress import drive
from napari_topolens.errors import Cancelled, TopoLensError
from napari_topolens.pipeline import Provenance, RunJob, iter_run, run_variants
from napari_topolens.robustness.study import VariantSpec
from napari_topolens.topology.analysis import AnalysisConfig

IMAGES = np.random.default_rng(0).random((16, 8, 8)).astype(np.float32)
FAST = AnalysisConfig(h1_max_points=20, mapper_n_cubes=3, mapper_min_samples=2)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.Flatten(), torch.nn.Linear(108, 4)
    ).eval()


def test_the_device_scheduler_cache_and_probe_limit_reach_the_variants(monkeypatch, tmp_path):
    calls: list[dict] = []
    real = run_module.iter_extract_activations

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "iter_extract_activations", spy)
    analysis = run_variants(
        _net(),
        IMAGES,
        ["0", "2"],
        ["gaussian:0.1", "prune:0.5"],
        config=FAST,
        device="cpu",
        cache_dir=tmp_path / "cache",
        max_probe_pixels=10**8,
    )
    assert len(calls) == 3  # the base and each variant
    for kwargs in calls:
        assert kwargs["device"] == "cpu" and kwargs["max_probe_pixels"] == 10**8
        assert kwargs["cache_dir"] == str(tmp_path / "cache") and kwargs["sampling"] == "top_norm"
    for run in (analysis, *(v.analysis for v in analysis.variants)):
        assert run.predictions is not None  # recorded for the base and every variant
        assert run.provenance["device"] == "cpu" and run.provenance["layers"] == ["0", "2"]
        assert run.provenance["activation_cache"] == str(tmp_path / "cache")
    assert analysis.provenance["variants"] == ["gaussian:0.1", "prune:0.5"]
    assert "variants" not in analysis.variants[0].analysis.provenance
    assert analysis.variants[1].analysis.provenance["variant"] == "prune:0.5"


def test_a_run_is_cancelled_between_steps_and_bad_jobs_are_refused_before_any_work():
    job = RunJob(model=_net(), images=IMAGES, layers=["2"], config=FAST)
    ticks = iter(range(100))
    with pytest.raises(Cancelled):
        drive(iter_run(job), cancel=lambda: next(ticks) > 2)
    with pytest.raises(TopoLensError, match="labels for 16 images"):
        iter_run(RunJob(model=_net(), images=IMAGES, layers=["2"], labels=np.zeros(3, int)))
    with pytest.raises(TopoLensError, match="unknown sampling"):
        iter_run(RunJob(model=_net(), images=IMAGES, layers=["2"], sampling="most"))
    with pytest.raises(TopoLensError, match="occlusion variant only"):
        iter_run(
            RunJob(
                model=_net(),
                images=IMAGES,
                layers=["2"],
                variants=[VariantSpec.parse("blur:1")],
                occlusion_mask=np.ones((16, 8, 8), bool),
            )
        )


def test_provenance_is_one_record_with_layers_always_a_list():
    record = Provenance(
        front_end="x",
        layers=["a", "b"],
        sampling="top_norm",
        max_points=None,
        batch_size=64,
        max_probe_pixels=10,
        seed=3,
        input_scale="as stored",
        origin={"model": "m", "layers": "a, b"},  # an origin never overrides the run's keys
    )
    saved = record.as_dict()
    assert saved["layers"] == ["a", "b"] and saved["source"] == "x" and saved["model"] == "m"
    assert saved["seeds"] == {"extraction": 3} and "device" not in saved
    variant = record.replace(device="cuda").of_variant(VariantSpec.parse("int8"), "cpu")
    assert variant["device"] == "cpu" and "INT8" in variant["device_note"]
    assert variant["variant"] == "int8" and variant["variant_spec"]["quantize"] == "int8"
