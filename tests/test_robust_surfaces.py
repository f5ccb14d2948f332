"""Issue 19: hostile or careless input on six surfaces, one table (parametrised test) each.

Inputs, device names, variant strengths, scheduler addresses, weights archives and
signals: every case ends in one clear project error or a correct result, never a
traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_topolens import cli
from napari_topolens.errors import CheckpointError, ImageError, TopoLensError

SRC = Path(__file__).resolve().parents[1] / "src"
DIGITS = "napari_topolens.sample_models:digits_cnn"


@pytest.fixture
def no_extraction(monkeypatch):
    """Fail the test if any activation is extracted (the error must come first)."""
    import napari_topolens.activations.extract as extract

    def refuse(*args, **kwargs):
        raise AssertionError("extraction ran before the error")

    monkeypatch.setattr(extract, "_extraction_steps", refuse)


def _one_line_error(capsys, code: int, expected: int = 2) -> str:
    err = capsys.readouterr().err
    assert code == expected, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------ inputs


def _images(n: int = 12) -> np.ndarray:
    return np.random.default_rng(0).random((n, 8, 8)).astype(np.float32)


def _png_folder(folder: Path, images: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def _damaged_zarr_chunk(tmp: Path) -> None:
    import zarr

    from napari_topolens.activations.image_source import open_image_source

    store = zarr.open(str(tmp / "imgs.zarr"), mode="w", shape=(20, 8, 8), chunks=(5, 8, 8))
    store[:] = _images(20)
    chunk = next(p for p in (tmp / "imgs.zarr").rglob("*") if p.is_file() and "2" in p.parts)
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # truncated
    source = open_image_source(tmp / "imgs.zarr")
    source.read([0, 1])  # the chunks before it still read
    with pytest.raises(ImageError, match=r"imgs\.zarr: chunk 2 along the image axis \(images 10"):
        source.read(np.arange(20))


def _empty_npy(tmp: Path) -> None:
    from napari_topolens.activations.image_source import open_image_source
    from napari_topolens.image_files import MaskFile, read_images

    (tmp / "empty.npy").write_bytes(b"")
    for read in (
        lambda: open_image_source(tmp / "empty.npy"),
        lambda: read_images(tmp / "empty.npy"),
        lambda: MaskFile(tmp / "empty.npy", height=8, width=8),
    ):
        with pytest.raises(ImageError, match="empty.npy"):
            read()


def _link_in_image_folder(tmp: Path) -> None:
    from napari_topolens.activations.image_source import open_image_source
    from napari_topolens.image_files import read_images

    folder = _png_folder(tmp / "imgs", _images(4))
    outside = _png_folder(tmp / "elsewhere", _images(1))
    (folder / "img9.png").symlink_to(outside / "img0.png")
    for read in (lambda: open_image_source(folder), lambda: read_images(folder)):
        with pytest.raises(ImageError, match=r"holds 1 link\(s\) \(first: img9\.png\)"):
            read()


def _mask_for(tmp: Path, images_path: Path, masks_path: Path, masks: np.ndarray) -> None:
    """``--mask`` aligned with lazily read images (was: 'setting an array element')."""
    import argparse

    image_set = cli._read_image_input(str(images_path), None)
    job = {
        "images": image_set.images,
        "image_names": image_set.names,
        "provenance": {},
    }
    args = argparse.Namespace(max_images=None)
    got = cli._read_mask_file(str(masks_path), "--mask", args, job)
    np.testing.assert_array_equal(got, masks)


def _mask_with_lazy_npy(tmp: Path) -> None:
    images = _images()
    np.save(tmp / "imgs.npy", images)
    np.save(tmp / "masks.npy", images > 0.5)
    _mask_for(tmp, tmp / "imgs.npy", tmp / "masks.npy", images > 0.5)


def _mask_with_image_folder(tmp: Path) -> None:
    images = _images()
    folder = _png_folder(tmp / "imgs", images)
    masks = (images > 0.5).astype(np.float32)
    mask_folder = _png_folder(tmp / "masks", masks)
    _mask_for(tmp, folder, mask_folder, masks > 0)


@pytest.mark.parametrize(
    "case",
    [
        _damaged_zarr_chunk,
        _empty_npy,
        _link_in_image_folder,
        _mask_with_lazy_npy,
        _mask_with_image_folder,
    ],
    ids=lambda case: case.__name__.strip("_"),
)
def test_inputs(case, tmp_path: Path) -> None:
    case(tmp_path)


# ------------------------------------------------------------------------------ devices


def _small_cloud():
    from napari_topolens.activations.pointcloud import PointCloud
    from napari_topolens.topology.analysis import AnalysisConfig

    rng = np.random.default_rng(0)
    cloud = PointCloud(
        layer="fc",
        points=rng.normal(size=(30, 3)).astype(np.float32),
        image_index=np.arange(30),
        position=None,
        receptive_field=np.tile([0, 0, 4, 4], (30, 1)),
        sampling="pooled",
        grid_shape=(),
        image_shape=(4, 4),
    )
    config = AnalysisConfig(
        h1_max_points=20, phdim_start=10, phdim_step=5, dendrogram_max_points=20
    )
    return cloud, config


@pytest.mark.parametrize(
    "name, expected",
    [
        ("CPU", "cpu"),
        (" Cpu ", "cpu"),
        ("cpu", "cpu"),
        ("GPU", "unknown device 'GPU'"),
        ("tpu:0", "unknown device"),
        ("cuda:99", "not available"),
        ("meta", "not supported"),
    ],
)
def test_devices(name: str, expected: str, tmp_path: Path, capsys, no_extraction) -> None:
    from napari_topolens.activations.device import DeviceError, resolve_device
    from napari_topolens.topology.analysis import analyze

    cloud, config = _small_cloud()
    if expected == "cpu":
        # the command line, the API's analyze (was: a failure after extraction) and
        # extraction all take it
        assert cli._checked_device(name, None) == "cpu"
        assert resolve_device(name) == torch.device("cpu")
        assert len(analyze([cloud], config=config, device=name).layer_results) == 1
        return
    with pytest.raises(DeviceError, match=expected):
        resolve_device(name)
    with pytest.raises(DeviceError, match=expected):
        analyze([cloud], config=config, device=name)
    # the command line refuses it before loading anything
    code = cli.main(
        ["report", "--sample", "digits", "--device", name, "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert "--device" in _one_line_error(capsys, code)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ strengths


@pytest.mark.parametrize(
    "spec, outcome",
    [
        ("uniform:1e308", "within 0..10"),  # was OverflowError
        ("speckle:1e308", "within 0..10"),  # was 'images contain NaN'
        ("blur:1e9", "within 0..100"),  # was out of memory
        ("gaussian:-0.1", "within 0..10"),
        ("occlusion:1.5", "within 0..1 "),
        ("fgsm:inf", "within 0..1 "),
        ("poisson:1e-300", None),  # was ZeroDivisionError; now a correct, tiny noise
        ("poisson:1e-7", None),
        ("blur:100", None),
    ],
)
def test_strengths(spec: str, outcome: str | None, tmp_path: Path, capsys, no_extraction) -> None:
    from napari_topolens.robustness.perturbations import perturb
    from napari_topolens.robustness.study import VariantSpec

    kind, _, value = spec.partition(":")
    images = _images(4)
    if outcome is None:
        out = perturb(images, kind, float(value), seed=1)
        assert out.shape == images.shape and np.all(np.isfinite(out))
        if kind == "poisson":
            assert np.abs(out - images).max() < 1e-3  # the noise of a tiny strength is tiny
        assert VariantSpec.parse(spec).name == f"{kind}:{float(value):g}"
        return
    for refuse in (lambda: perturb(images, kind, float(value)), lambda: VariantSpec.parse(spec)):
        with pytest.raises(TopoLensError, match=rf"the strength of {kind} must be {outcome}"):
            refuse()
    code = cli.main(
        ["report", "--sample", "digits", "--perturb", spec, "--out", str(tmp_path / "o")]
    )
    line = _one_line_error(capsys, code)
    assert kind in line and outcome.strip() in line


def test_help_lists_each_kinds_strength_range() -> None:
    from napari_topolens.robustness.perturbations import STRENGTH_RANGES

    text = " ".join(
        cli.build_parser()._subparsers._group_actions[0].choices["report"].format_help().split()
    )
    for kind, (low, high) in STRENGTH_RANGES.items():
        assert f"{kind} ({low:g}..{high:g})" in text


# ------------------------------------------------------------------------------ scheduler


def _free_loopback_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_listener():
    """An address on 127.0.0.1 that accepts connections and never says anything."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in accepted:
        connection.close()


@pytest.mark.parametrize(
    "address, expected",
    [
        ("not a scheduler", "is not a scheduler address"),
        ("garbage", "is not a scheduler address"),
        ("tcp://127.0.0.1:99999", "no port between 1 and 65535"),
        ("http://127.0.0.1:8786", "has the scheme 'http'"),
        ("LOOPBACK", "nothing is listening on port"),
        ("SILENT", "it is not a Dask scheduler"),  # distributed itself would wait forever
    ],
)
def test_scheduler(
    address: str, expected: str, tmp_path: Path, capsys, no_extraction, silent_listener
) -> None:
    pytest.importorskip("distributed")
    from napari_topolens.distributed import SchedulerError, connect

    if address == "LOOPBACK":
        address = f"tcp://127.0.0.1:{_free_loopback_port()}"
    if address == "SILENT":
        address = silent_listener
    with pytest.raises(SchedulerError, match=expected) as refused, connect(address, timeout=2):
        pass
    assert repr(address) in str(refused.value) and "dask scheduler" in str(refused.value)
    code = cli.main(
        [
            "report",
            "--sample",
            "digits",
            "--scheduler",
            address,
            "--scheduler-timeout",
            "2",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    line = _one_line_error(capsys, code)
    assert expected in line and "dask scheduler" in line
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ weights


def _zip_bomb(path: Path) -> None:
    """A checkpoint-shaped zip whose one deflated member inflates ~1000-fold."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * 64)
        with archive.open("archive/data/0", "w") as member:
            for _ in range(8):
                member.write(b"\0" * (1 << 23))  # 64 MiB of zeros, ~64 KB on disk


@pytest.mark.parametrize("case", ["zip bomb", "declares too much", "unknown compression", "plain"])
def test_weights(case: str, tmp_path: Path, monkeypatch) -> None:
    from napari_topolens.activations import models
    from napari_topolens.activations.models import load_state_dict

    path = tmp_path / "net.pt"
    torch.save({"weight": torch.arange(6.0)}, path)
    if case == "plain":
        assert torch.equal(load_state_dict(path)["weight"], torch.arange(6.0))
        return
    if case == "zip bomb":
        _zip_bomb(path)
        expected = "would inflate from"
    elif case == "declares too much":
        monkeypatch.setattr(models, "MAX_WEIGHTS_BYTES", 16)  # a real checkpoint, a tiny cap
        expected = "weights are read up to"
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as archive:
            archive.writestr("archive/data.pkl", b"x" * 100)
        expected = "compression torch cannot read"

    def never(*args, **kwargs):
        raise AssertionError("torch.load ran: the archive was inflated before it was bounded")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(CheckpointError, match=expected):
        load_state_dict(path)


# ------------------------------------------------------------------------------ signals

_WRITER = """
import sys
from napari_topolens import cli
from napari_topolens.report.html import write_report
from napari_topolens.topology.store import load_analysis

analysis = load_analysis(sys.argv[1])
analysis.provenance["run"] = "new"
cli._handle_sigterm()  # as the command line does
try:
    write_report(analysis, sys.argv[2], title="new")
except KeyboardInterrupt as exc:
    print("interrupted", type(exc).__name__, getattr(exc, "block_completed", False))
    sys.exit(130)
"""


@pytest.fixture(scope="module")
def old_report(tmp_path_factory) -> tuple[Path, Path]:
    """A small saved analysis, and a folder holding the report of its 'old' run."""
    from napari_topolens.report.html import write_report
    from napari_topolens.topology.analysis import analyze

    cloud, config = _small_cloud()
    analysis = analyze([cloud], config=config)
    root = tmp_path_factory.mktemp("signals")
    analysis.save(root / "saved")
    analysis.provenance["run"] = "old"
    write_report(analysis, root / "old", title="old")
    return root / "saved", root / "old"


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_paused(argv: list[str], pause: str, signum: int) -> subprocess.CompletedProcess:
    """Run ``argv`` with a pause point set, send ``signum`` once it is reached."""
    env = dict(os.environ, PYTHONPATH=str(SRC), NAPARI_TOPOLENS_PAUSE_AT=pause)
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # the default SIGINT action even when this run inherited an ignored one (a shell's
        # background job ignores SIGINT, and Python then installs no KeyboardInterrupt)
        preexec_fn=_default_signals,
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("paused at"):
            process.send_signal(signum)
            break
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, "".join(seen) + stderr)


def _state(out: Path) -> tuple[str, str, list[str]]:
    """Which run the page and the analysis belong to, and every name in the folder."""
    page = (out / "report.html").read_text(encoding="utf-8")
    manifest = (out / "analysis" / "analysis.json").read_text(encoding="utf-8")
    page_run = "new" if "<title>new" in page else "old" if "<title>old" in page else "?"
    analysis_run = "new" if '"new"' in manifest else "old" if '"old"' in manifest else "?"
    return page_run, analysis_run, sorted(os.listdir(out))


@pytest.mark.parametrize(
    "surface, pause, signum, expected",
    [
        ("command", "import", signal.SIGINT, (130, "stopped; nothing was written")),
        ("cli", "startup", signal.SIGINT, (130, "stopped; nothing was written")),
        ("cli", "startup", signal.SIGTERM, (143, "terminated; nothing was written")),
        ("write", "report-written", signal.SIGTERM, (130, "old")),
        ("write", "report-swap", signal.SIGTERM, (130, "new")),
        ("write", "report-swap", signal.SIGINT, (130, "new")),
        ("write", "report-written", signal.SIGKILL, (-9, "old")),
        ("write", "report-swap", signal.SIGKILL, (-9, "new")),
    ],
)
def test_signals(surface, pause, signum, expected, old_report, tmp_path: Path) -> None:
    import shutil

    from napari_topolens.report.html import remove_report_debris

    code, outcome = expected
    if surface in ("cli", "command"):  # command: the console script, before it imports the cli
        done = _run_paused(
            [
                sys.executable,
                "-m",
                "napari_topolens" if surface == "command" else "napari_topolens.cli",
                "report",
                "--sample",
                "digits",
                "--out",
                str(tmp_path / "o"),
            ],
            pause,
            signum,
        )
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == code and "Traceback" not in done.stderr
        assert lines[-1] == f"napari-topolens: {outcome}" and len(lines) == 2  # pause + one
        assert not (tmp_path / "o").exists()
        return
    saved, old = old_report
    out = tmp_path / "out"
    shutil.copytree(old, out)
    done = _run_paused([sys.executable, "-c", _WRITER, str(saved), str(out)], pause, signum)
    assert done.returncode == code and "Traceback" not in done.stderr, done.stderr
    if signum != signal.SIGKILL:
        assert done.stdout.split() == [
            "interrupted",
            "_Terminated" if signum == signal.SIGTERM else "KeyboardInterrupt",
            str(outcome == "new"),
        ]
        assert _state(out) == (outcome, outcome, ["analysis", "report.html"])
        return
    # killed outright: scratch is left, and the next run finishes or undoes it
    assert len(_state(out)[2]) > 2
    assert remove_report_debris(out)
    assert _state(out) == (outcome, outcome, ["analysis", "report.html"])
