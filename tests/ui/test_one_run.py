"""One run, three front ends: the command, the widget and ``run_variants`` give equal analyses.

The same job (40 digits, two layers, a perturbation and a compression, on ``cpu``)
made by ``napari-topolens report``, by the analysis widget docked in napari and by
``run_variants``: the arrays are equal, the provenance too apart from the front
end's own description of its inputs, predictions are recorded by each, and the
device reaches every stage of the base and of each variant.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import dock_analysis, wait_for

from napari_topolens import cli, load_sample
from napari_topolens.pipeline.provenance import ANALYSIS_KEYS, RUN_KEYS
from napari_topolens.pipeline.variants import run_variants
from napari_topolens.topology.analysis import AnalysisConfig
from napari_topolens.ui.label_choice import LAYER_METADATA
from napari_topolens.ui.widget_parts import ALL_IMAGES

N_IMAGES = 40
LAYERS = ["pool2", "fc1"]
VARIANTS = ["gaussian:0.1", "prune:0.5"]
H1_POINTS = 60


def assert_same(a, b, path: str = "analysis") -> None:
    """Equal values, arrays element by element (NaN equal to NaN); times are not compared."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), path
        for spec in dataclasses.fields(a):
            if spec.name not in ("seconds", "provenance"):
                assert_same(getattr(a, spec.name), getattr(b, spec.name), f"{path}.{spec.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in set(a) - {"seconds"}:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for number, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{number}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def run_record(provenance: dict) -> dict:
    """What the pipeline writes of the job and the analysis of itself (not the front end's)."""
    return {k: v for k, v in provenance.items() if k in (*RUN_KEYS, *ANALYSIS_KEYS)} | {
        "source": None,
        "image_index": None,  # the widget's stack positions (0..39 here): its own
    }


@pytest.fixture
def devices(monkeypatch):
    """The device each extraction and each analysis of the pipeline is asked to use."""
    import napari_topolens.pipeline.run as run_module

    seen: list[tuple[str, object]] = []
    real_extract = run_module.iter_extract_activations

    def extract(*args, **kwargs):
        seen.append(("extract", kwargs.get("device")))
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(run_module, "iter_extract_activations", extract)
    # here (the command) or in a child process (the widget): the same arguments
    for name in ("iter_analyze", "iter_analyze_in_child"):
        real_analyze = getattr(run_module, name)

        def analyze(*args, real_analyze=real_analyze, **kwargs):
            seen.append(("analyze", kwargs.get("device")))
            return real_analyze(*args, **kwargs)

        monkeypatch.setattr(run_module, name, analyze)
    return seen


def _by_the_command(tmp_path, monkeypatch):
    written = []

    def keep(analysis, out, **kwargs):  # the analysis, not its page (tests/test_report_cli.py)
        written.append(analysis)
        kwargs["seconds"]["report page"] = (0.0, 0.0)
        return out

    monkeypatch.setattr(cli, "write_report", keep)
    argv = ["report", "--sample", "digits", "--max-images", str(N_IMAGES)]
    argv += ["--layers", ",".join(LAYERS), "--h1-max-points", str(H1_POINTS), "--device", "cpu"]
    argv += ["--perturb", VARIANTS[0], "--compress", VARIANTS[1]]
    assert cli.main([*argv, "--out", str(tmp_path / "report"), "--quiet"]) == 0
    return written[0]


def _by_the_widget(viewer, qtbot, images, labels, class_names):
    layer = viewer.add_image(
        images, name="digits subset", metadata={"labels": labels, "class_names": class_names}
    )
    widget = dock_analysis(viewer)
    widget.model_source.value = "sample: digits"
    assert widget.load_model() is not None, widget.status.value
    widget.image_layer.value = layer
    widget.which.value = ALL_IMAGES
    widget.refresh_choices()
    widget.labels_source.value = LAYER_METADATA
    widget.module_tree.set_checked(LAYERS)
    widget.h1_max_points.value = H1_POINTS
    widget.device.value = "cpu"
    for text in VARIANTS:
        assert widget.variant_form.add(text=text) == text
    worker = widget.run()
    assert worker is not None, widget.status.value
    wait_for(qtbot, worker, timeout=300_000)
    assert widget.analysis is not None, widget.status.value
    return widget.analysis


@pytest.mark.slow
def test_the_command_the_widget_and_run_variants_make_the_same_analysis(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, devices
):
    by_command = _by_the_command(tmp_path, monkeypatch)
    # --device reached every stage of every run: the base's and each variant's
    assert devices == [("extract", "cpu"), ("analyze", "cpu")] * (1 + len(VARIANTS))
    runs = len(devices)
    sample = load_sample("digits")
    index = np.asarray(by_command.provenance["sample_image_index"])
    images, labels = sample.images[index], sample.labels[index]
    class_names = list(sample.class_names)
    by_widget = _by_the_widget(make_napari_viewer(), qtbot, images, labels, class_names)
    by_api = run_variants(
        sample.model,
        images,
        LAYERS,
        VARIANTS,
        labels=labels,
        class_names=class_names,
        config=AnalysisConfig(h1_max_points=H1_POINTS),
        device="cpu",
    )
    # the job's device reached every stage of every run (base and variants), each front end
    assert devices == devices[:runs] * 3 and {device for _, device in devices} == {"cpu"}

    for name, other in (("the widget", by_widget), ("run_variants", by_api)):
        assert other.config == by_command.config, name
        assert_same(by_command, other, name)  # arrays, variants and comparisons included
        assert run_record(other.provenance) == run_record(by_command.provenance), name
        for mine, theirs in zip(by_command.variants, other.variants):
            record = run_record(theirs.analysis.provenance)
            assert record == run_record(mine.analysis.provenance), f"{name}: {mine.name}"
    assert by_command.predictions is not None  # recorded by every front end
    assert all(v.analysis.predictions is not None for v in by_command.variants)
    assert by_command.provenance["layers"] == LAYERS  # a list, from every front end
    sources = [a.provenance["source"] for a in (by_command, by_widget, by_api)]
    assert sources == [
        cli.FRONT_END,
        "napari-topolens analysis widget",
        "napari_topolens.run_variants",
    ]
