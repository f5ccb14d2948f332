"""Issue 9: early errors, honest caps, safe report writes, hostile inputs to the CLI and API.

Every test here failed before the hardening it checks.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_topolens import cli, extract_activations, load_model
from napari_topolens.activations.models import load_state_dict
from napari_topolens.activations.pointcloud import PointCloud
from napari_topolens.errors import (
    CheckpointError,
    ImageError,
    LayerError,
    ModelError,
    TopoLensError,
)
from napari_topolens.image_files import read_labels
from napari_topolens.topology.analysis import AnalysisConfig, analyze
from napari_topolens.topology.store import load_analysis

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
DIGITS = "napari_topolens.sample_models:digits_cnn"
FAST = ["--h1-max-points", "60", "--quiet"]


def _digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    with np.load(SAMPLE_DATA / "digits.npz", allow_pickle=False) as data:
        images = (data["images"][:n] / data["scale"]).astype(np.float32)
        labels = data["labels"][:n].astype(np.int64)
    return images, labels


@pytest.fixture
def no_extraction(monkeypatch):
    """Fail the test if any activation is extracted (the error must come first)."""
    import napari_topolens.activations.extract as extract

    def refuse(*args, **kwargs):
        raise AssertionError("extraction ran before the error")

    monkeypatch.setattr(extract, "_extraction_steps", refuse)


def _own_model_args(tmp_path: Path, images: np.ndarray, labels: np.ndarray | None = None):
    np.save(tmp_path / "images.npy", images)
    argv = ["report", "--model", DIGITS, "--images", str(tmp_path / "images.npy")]
    if labels is not None:
        np.save(tmp_path / "labels.npy", labels)
        argv += ["--labels", str(tmp_path / "labels.npy")]
    return argv


# ------------------------------------------------------------------ errors before the work


@pytest.mark.parametrize(
    "case, message",
    [
        ("one image", "topology needs at least 3"),
        ("one image, all positions, vector layer", "one point per image"),
        ("negative labels", "label -4 is negative"),
        ("foreign analysis folder", "not a saved analysis"),
        ("user's report.html", "not written by napari-topolens"),
        ("duplicate layers", "more than once"),
    ],
)
def test_errors_known_before_extraction_come_before_it(
    case, message, tmp_path: Path, capsys, no_extraction
) -> None:
    images, labels = _digits(10)
    out = tmp_path / "out"
    layers = "pool2,fc1"
    extra: list[str] = []
    if case.startswith("one image"):
        images, labels = images[:1], labels[:1]
    if case == "one image, all positions, vector layer":
        extra = ["--sampling", "all_positions"]
    if case == "negative labels":
        labels = labels.copy()
        labels[3] = -4
    if case == "foreign analysis folder":
        (out / "analysis").mkdir(parents=True)
        (out / "analysis" / "data.csv").write_text("1,2")
    if case == "user's report.html":
        out.mkdir()
        (out / "report.html").write_text("<p>my own page</p>")
    if case == "duplicate layers":
        layers = "pool2,fc1,pool2"
    argv = _own_model_args(tmp_path, images, labels)
    code = cli.main([*argv, "--layers", layers, "--out", str(out), *extra, *FAST])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    if case == "user's report.html":
        assert (out / "report.html").read_text() == "<p>my own page</p>"


# ------------------------------------------------------------------ caps


def test_every_cap_is_a_flag_and_reported_where_the_numbers_are(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = cli.main(
        [
            "report",
            "--sample",
            "digits",
            "--max-images",
            "100",  # pool2 is a 2x2 grid: 400 positions
            "--layers",
            "pool2",
            "--sampling",
            "all_positions",
            "--max-points",
            "300",
            "--analysis-max-points",
            "120",
            "--dendrogram-max-points",
            "50",
            "--phdim-max-points",
            "100",
            "--out",
            str(out),
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "--max-points 300 is above the analysis cap --analysis-max-points 120" in err
    analysis = load_analysis(out / "analysis")
    layer = analysis["pool2"]
    assert len(layer.cloud) == 120 and layer.cloud.meta["points_before_cap"] == 300
    assert analysis.config.max_points == 120 and analysis.config.dendrogram_max_points == 50
    caps = analysis.provenance["caps"]
    assert caps["extraction max_points"] == "300"
    assert caps["analysis max_points"].startswith("120 per layer: a random 120 of the points")
    assert caps["dendrogram_max_points"].startswith("50 ")
    assert caps["phdim_max_points"].startswith("100 ")
    assert max(layer.phdim.sizes) <= 100
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "H0 on a random 120 of the 300 extracted points" in page
    assert "H0 on all" not in page
    assert "<details open><summary>caps</summary>" in page
    assert "cap phdim_max_points = 100" in page


# ------------------------------------------------------------------ writing the report


def _small_analysis():
    rng = np.random.default_rng(0)
    cloud = PointCloud(
        layer="fc",
        points=rng.normal(size=(40, 3)).astype(np.float32),
        image_index=np.arange(40),
        position=None,
        receptive_field=np.tile([0, 0, 4, 4], (40, 1)),
        sampling="pooled",
        grid_shape=(),
        image_shape=(4, 4),
    )
    config = AnalysisConfig(
        h1_max_points=20, phdim_start=10, phdim_step=5, dendrogram_max_points=20
    )
    return analyze([cloud], config=config)


def test_a_failed_last_rename_restores_the_previous_report(tmp_path: Path, monkeypatch) -> None:
    from napari_topolens.report import html

    out = tmp_path / "out"
    first = _small_analysis()
    html.write_report(first, out, title="first")
    before = (out / "report.html").read_text()
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst).name == "report.html":
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(html.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        html.write_report(_small_analysis(), out, title="second")
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["analysis", "report.html"]  # no debris
    assert (out / "report.html").read_text() == before
    assert load_analysis(out / "analysis").provenance["created"] == first.provenance["created"]
    # our own report may be replaced
    html.write_report(_small_analysis(), out, title="third")
    assert "<title>third</title>" in (out / "report.html").read_text()


def test_sigterm_cleans_up_like_ctrl_c(tmp_path: Path, capsys, monkeypatch) -> None:
    import napari_topolens.topology.store_files as store

    real_savez = store.np.savez

    def terminated(*args, **kwargs):
        real_savez(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "existing"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(store.np, "savez", terminated)
    before = signal.getsignal(signal.SIGTERM)
    code = cli.main(
        ["report", "--sample", "digits", "--out", str(out), "--max-images", "40", *FAST]
    )
    assert code == 143
    assert "terminated; nothing was written" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # no hidden debris
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


# ------------------------------------------------------------------ model code and files


def test_a_model_module_that_calls_sys_exit(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "exiting_module_xyz.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "exiting_builder_xyz.py").write_text("import sys\ndef build():\n    sys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match=r"sys\.exit\(0\)"):
        load_model("exiting_module_xyz:build")
    with pytest.raises(ModelError, match=r"sys\.exit\(3\)"):
        load_model("exiting_builder_xyz:build")
    np.save(tmp_path / "images.npy", np.zeros((5, 28, 28), np.float32))
    code = cli.main(
        [
            "report",
            "--model",
            "exiting_module_xyz:build",
            "--images",
            str(tmp_path / "images.npy"),
            "--layers",
            "a",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "sys.exit(0)" in capsys.readouterr().err


def test_a_weights_folder_is_named_a_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a folder"):
        load_state_dict(tmp_path)


def test_labels_files_say_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("chat\nchien\nb\xe9b\xe9\n".encode("latin-1"))
    with pytest.raises(ImageError, match="not UTF-8"):
        read_labels(tmp_path / "latin1.txt")
    np.save(tmp_path / "nan.npy", np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ImageError, match="label 1 is nan") as info:
        read_labels(tmp_path / "nan.npy")
    assert "pickled" not in str(info.value)
    np.save(tmp_path / "half.npy", np.array([0.0, 1.5]))
    with pytest.raises(ImageError, match="label 1 is 1.5"):
        read_labels(tmp_path / "half.npy")
    (tmp_path / "names.txt").write_text("tabby cat\ngolden retriever\ntabby cat\n")
    labels = read_labels(tmp_path / "names.txt", n_images=3)
    assert labels.class_names == ["golden retriever", "tabby cat"]
    np.testing.assert_array_equal(labels.codes, [1, 0, 1])
    with pytest.raises(ImageError, match="whitespace-separated labels on 3 lines for 4 images"):
        read_labels(tmp_path / "names.txt", n_images=4)


# ------------------------------------------------------------------ API type misuse


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten()).eval()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"layers": 5}, LayerError, "layers must be a layer name"),
        ({"layers": ["0", "0"]}, LayerError, "asked for twice"),
        ({"seed": 1.5}, TopoLensError, "seed must be a whole number"),
        ({"batch_size": "8"}, TopoLensError, "batch_size must be a whole number"),
        ({"model": None}, ModelError, "must be a torch.nn.Module, got NoneType"),
        ({"model": _net}, ModelError, "call it first"),
    ],
)
def test_extraction_type_misuse_is_a_project_error(kwargs, error, message) -> None:
    call = {"model": _net(), "images": np.zeros((3, 8, 8), np.float32), "layers": ["0"]}
    call.update(kwargs)
    with pytest.raises(error, match=message):
        extract_activations(**call)


def test_analysis_type_misuse_is_a_project_error() -> None:
    with pytest.raises(TopoLensError, match="PointCloud"):
        analyze([np.zeros((5, 2)), np.zeros((5, 2))])
    with pytest.raises(TopoLensError, match="max_points got float 2.5"):
        AnalysisConfig(max_points=2.5)
    with pytest.raises(TopoLensError, match="distance_dim must be non-negative"):
        AnalysisConfig(distance_dim=-1)


def test_huge_label_values_are_refused_and_class_indices_kept() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array([3, 10**12, 17]), 15)
    cloud = PointCloud(
        layer="fc",
        points=(
            rng.normal(size=(3, 4))[np.repeat(np.arange(3), 15)] * 5 + rng.normal(size=(45, 4))
        ),
        image_index=np.arange(45),
        position=None,
        receptive_field=np.tile([0, 0, 4, 4], (45, 1)),
        sampling="pooled",
        grid_shape=(),
        image_shape=(4, 4),
    )
    config = AnalysisConfig(
        h1_max_points=20, phdim_start=10, phdim_step=5, dendrogram_max_points=20
    )
    with pytest.raises(ImageError, match="label 1000000000000 is not a class index"):
        analyze([cloud], labels, config=config)  # refused before any allocation by it
    labels[labels == 10**12] = 5  # labels are the model's class indices: never renumbered
    analysis = analyze([cloud], labels, config=config)
    assert analysis.class_names is None
    np.testing.assert_array_equal(analysis.labels, labels)
    assert analysis["fc"].mapper.class_counts.shape[1] == 18
    with pytest.raises(ImageError, match="label -5 is negative"):
        analyze([cloud], np.full(45, -5), config=config)


def test_a_labels_file_is_read_only_as_itself_and_within_its_size(tmp_path: Path) -> None:
    real = tmp_path / "labels.txt"
    real.write_text("0 1 2\n")
    link = tmp_path / "link.txt"
    os.symlink(real, link)
    with pytest.raises(ImageError, match="is a link"):
        read_labels(link)
    big = tmp_path / "big.txt"
    with open(big, "wb") as handle:  # sparse: 33 MiB declared, nothing written
        handle.truncate(33 * 2**20)
    with pytest.raises(ImageError, match="MiB"):
        read_labels(big)
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(ImageError, match="not a file"):
        read_labels(tmp_path / "folder.txt")
