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


def test_a_reused_base_gives_its_variants_its_sampling_and_is_not_changed(monkeypatch):
    from napari_topolens.activations.extract import extract_activations
    from napari_topolens.topology.analysis import analyze

    clouds = extract_activations(_net(), IMAGES, ["0"], sampling="pooled")
    base = analyze(clouds, config=FAST, provenance={"sampling": "pooled", "max_points": None})
    before = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.provenance.items()}
    samplings: list[str] = []
    real = run_module.iter_extract_activations

    def spy(*args, **kwargs):
        samplings.append(kwargs["sampling"])
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "iter_extract_activations", spy)
    result = run_variants(_net(), IMAGES, ["0"], "gaussian:0.1", config=FAST, base=base)
    assert samplings == ["pooled"]  # the variant is extracted as its base was
    assert result.variants[0].analysis.provenance["sampling"] == "pooled"
    assert base.provenance == before  # the caller's analysis is untouched
    with pytest.raises(TopoLensError, match="sampling='pooled'"):
        run_variants(_net(), IMAGES, ["0"], "gaussian:0.1", base=base, sampling="top_norm")
    with pytest.raises(TopoLensError, match="layers 0, not 2"):
        run_variants(_net(), IMAGES, ["2"], "gaussian:0.1", base=base)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_probe_pixels": None}, "max_probe_pixels"),
        ({"max_points": 0}, "max_points must be at least 1"),
        ({"cache_dir": 123}, "cache_dir must be a folder path"),
        ({"provenance": {"notes": "text"}}, "notes must be a dict"),
    ],
)
def test_bad_run_options_are_one_project_error(options, message):
    with pytest.raises(TopoLensError, match=message):
        run_variants(_net(), IMAGES, ["0"], "gaussian:0.1", config=FAST, **options)


@pytest.mark.parametrize("home", ["napari_topolens.robustness", "napari_topolens.robustness.study"])
def test_the_old_home_of_run_variants_says_where_it_went(home):
    import importlib

    module = importlib.import_module(home)
    with pytest.raises(ImportError, match="use napari_topolens.run_variants"):
        exec(f"from {home} import run_variants", {})
    assert not hasattr(module, "no_such_name")
    assert callable(getattr(importlib.import_module("napari_topolens"), "run_variants"))


def test_a_job_with_its_topology_in_a_child_process_saves_the_same_arrays(tmp_path):
    """The widget's runs compute the topology in a child process: the base and its
    variant are the analyses the same job makes here, array for array; a cancel during
    the topology ends the child."""
    from napari_topolens.topology import child_process

    runs = {}
    for in_child in (False, True):
        job = RunJob(
            model=_net(),
            images=IMAGES,
            layers=["0", "2"],
            config=FAST,
            variants=[VariantSpec.parse("gaussian:0.1")],
            topology_in_child=in_child,
        )
        runs[in_child] = drive(iter_run(job))
        runs[in_child].save(tmp_path / f"{in_child}.topolens")
    assert child_process._IDLE and child_process._IDLE[0].alive  # kept for the next run
    with (
        np.load(tmp_path / "False.topolens" / "arrays.npz", allow_pickle=False) as here,
        np.load(tmp_path / "True.topolens" / "arrays.npz", allow_pickle=False) as there,
    ):
        assert sorted(here.files) == sorted(there.files) and len(here.files) > 30
        for key in here.files:
            np.testing.assert_array_equal(here[key], there[key], err_msg=key)

    idle = child_process._IDLE[0]
    job = RunJob(model=_net(), images=IMAGES, layers=["2"], config=FAST, topology_in_child=True)
    messages: list[str] = []
    with pytest.raises(Cancelled):
        drive(
            iter_run(job),
            progress=lambda _f, m: messages.append(m),
            cancel=lambda: any("topology: layer 1/1" in m for m in messages),
        )
    assert not idle.alive and not child_process._IDLE  # the child computing it was ended
