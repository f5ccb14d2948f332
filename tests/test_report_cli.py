"""The `napari-topolens report` command, the HTML page and the image/label readers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from napari_topolens import cli
from napari_topolens.errors import ImageError
from napari_topolens.image_files import read_images, read_labels
from napari_topolens.topology.analysis import Analysis
from napari_topolens.topology.store import load_analysis

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
FAST = ["--h1-max-points", "80", "--quiet"]


def _check_page(page: str, layers: list[str]) -> None:
    """Self-contained: nothing fetched from elsewhere; one section and figures per layer."""
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", page, re.I)
    assert "<script" not in page.lower()
    sections = re.findall(r'<section class="layer" id="layer-\d+">(.*?)</section>', page, re.S)
    assert len(sections) == len(layers)
    for layer, section in zip(layers, sections):
        assert f"<code>{layer}</code>" in section
        assert (
            section.count('src="data:image/png;base64,') >= 5
        )  # persistence, Mapper, flow, blobs, dendrogram
    assert (
        page.count('src="data:image/png;base64,') >= 5 * len(layers) + 2
    )  # + the cross-layer figures


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory) -> tuple[Path, int, str]:
    out = tmp_path_factory.mktemp("report") / "digits"
    import contextlib
    import io

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = cli.main(
            [
                "report",
                "--sample",
                "digits",
                "--out",
                str(out),
                "--max-images",
                "150",
                "--h1-max-points",
                "80",
            ]
        )
    return out, code, stderr.getvalue()


def test_sample_report_end_to_end(sample_report) -> None:
    out, code, stderr = sample_report
    assert code == 0, stderr
    assert "report written to" in stderr
    assert "\r[" in stderr and "100%" in stderr  # the progress bar
    page = (out / "report.html").read_text(encoding="utf-8")
    _check_page(page, ["pool1", "pool2", "fc1"])
    assert "digits" in page
    for name in ("0", "9"):
        assert f"</i>{name}</span>" in page  # the class legend
    analysis = load_analysis(out / "analysis")
    assert isinstance(analysis, Analysis)
    assert analysis.layers == ["pool1", "pool2", "fc1"]
    assert analysis.provenance["n_images"] == 150
    assert len(analysis.provenance["sample_image_index"]) == 150
    assert len(analysis["fc1"].cloud) == 150
    assert analysis.class_names == [str(i) for i in range(10)]
    # leftovers of the atomic writes are gone
    assert sorted(p.name for p in out.iterdir()) == ["analysis", "report.html"]


def test_the_command_prints_its_stage_times(sample_report) -> None:
    _out, code, stderr = sample_report
    assert code == 0, stderr
    lines = stderr.replace("\r", "\n").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    table = lines[start + 1 : next(i for i, line in enumerate(lines) if line.startswith("total"))]
    stages = {line[:34].strip(): line[34:].split() for line in table}
    page = next(name for name in stages if name.startswith("report page ("))
    for name in ("loading model and images", "activation extraction", "analysis", page):
        wall, cpu = (float(v) for v in stages[name])  # one line each: wall, CPU seconds
        assert wall >= 0 and cpu >= 0
    # the analysis steps, summed over the layers, the Mapper layout apart
    for step in ("persistence", "mapper", "mapper layout", "phdim"):
        assert len(stages[step]) == 1 and float(stages[step][0]) >= 0  # wall only
    assert "saving" in stages


@pytest.mark.slow
def test_a_second_process_draws_the_same_page(sample_report) -> None:
    from napari_topolens.report.html import render_report

    analysis = load_analysis(sample_report[0] / "analysis")
    serial = render_report(analysis, workers=1)
    fractions: list[float] = []
    parallel = render_report(
        analysis, workers=2, progress=lambda fraction, _message: fractions.append(fraction)
    )
    assert parallel == serial  # same figures, same order
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # the bar never goes back


@pytest.mark.slow
def test_write_report_from_a_loaded_analysis(sample_report, tmp_path: Path) -> None:
    from napari_topolens.report.html import write_report

    out, code, _ = sample_report
    assert code == 0
    analysis = load_analysis(out / "analysis")
    path = write_report(analysis, tmp_path / "again", title="Reloaded <digits>")
    page = path.read_text(encoding="utf-8")
    assert "<title>Reloaded &lt;digits&gt;</title>" in page
    _check_page(page, analysis.layers)
    assert load_analysis(tmp_path / "again" / "analysis").layers == analysis.layers


def test_own_model_with_npy_images_and_text_labels(tmp_path: Path, capsys) -> None:
    with np.load(SAMPLE_DATA / "digits.npz", allow_pickle=False) as data:
        images = (data["images"][:120] / data["scale"]).astype(np.float32)
        labels = data["labels"][:120]
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "labels.txt").write_text("\n".join(str(int(v)) for v in labels))
    out = tmp_path / "out"
    code = cli.main(
        [
            "report",
            "--model",
            "napari_topolens.sample_models:digits_cnn",
            "--weights",
            str(SAMPLE_DATA / "digits_cnn.pt"),
            "--images",
            str(tmp_path / "images.npy"),
            "--labels",
            str(tmp_path / "labels.txt"),
            "--layers",
            "pool2,fc1",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0, capsys.readouterr().err
    analysis = load_analysis(out / "analysis")
    assert analysis.layers == ["pool2", "fc1"]
    np.testing.assert_array_equal(analysis.labels, labels)
    assert analysis.provenance["model"] == "napari_topolens.sample_models:digits_cnn"
    _check_page((out / "report.html").read_text(encoding="utf-8"), ["pool2", "fc1"])


def test_bad_model_spec_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "images.npy", np.zeros((10, 8, 8), np.float32))
    code = cli.main(
        [
            "report",
            "--model",
            "no_such_package_xyz.nets:build",
            "--images",
            str(tmp_path / "images.npy"),
            "--layers",
            "a",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("napari-topolens: error:")
    assert "no_such_package_xyz" in lines[0] and "could not be imported" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sample", "nope"], "unknown sample"),
        (["--sample", "digits", "--layers", "pool1,nonexistent"], "nonexistent"),
        (["--sample", "digits", "--images", "x.npy"], "cannot be combined"),
        (
            [
                "--model",
                "napari_topolens.sample_models:digits_cnn",
                "--images",
                "missing.npy",
                "--layers",
                "fc1",
            ],
            "does not exist",
        ),
        (
            ["--model", "napari_topolens.sample_models:digits_cnn", "--images", "missing.npy"],
            "give --layers",
        ),
    ],
)
def test_input_errors_exit_2(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    code = cli.main(
        ["report", *argv, "--out", str(tmp_path / "out"), "--quiet", "--max-images", "20"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_during_analysis_exits_130_and_writes_nothing(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import napari_topolens.pipeline.run as run_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "iter_analyze", interrupted)
    code = cli.main(
        [
            "report",
            "--sample",
            "digits",
            "--out",
            str(tmp_path / "out"),
            "--max-images",
            "30",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 130
    assert [line for line in err.splitlines() if line.strip()] == [
        "napari-topolens: stopped; nothing was written"
    ]
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_saving_leaves_no_half_written_output(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import napari_topolens.topology.store_files as store

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "existing"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(store.np, "savez", interrupted)
    code = cli.main(
        ["report", "--sample", "digits", "--out", str(out), "--max-images", "40", *FAST]
    )
    assert code == 130
    assert sorted(p.name for p in out.iterdir()) == [
        "notes.txt"
    ]  # the user's file kept, nothing of ours


def test_report_refuses_to_replace_a_foreign_analysis_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    (out / "analysis").mkdir(parents=True)
    (out / "analysis" / "data.csv").write_text("1,2")
    code = cli.main(
        ["report", "--sample", "digits", "--out", str(out), "--max-images", "40", *FAST]
    )
    assert code == 2
    assert "not a saved analysis" in capsys.readouterr().err
    assert (out / "analysis" / "data.csv").read_text() == "1,2"


# ----------------------------------------------------------------------------- image files


def test_images_from_a_folder_of_pngs(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = (rng.random((11, 9, 7)) * 255).astype(np.uint8)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(pixels):  # natural order: img2 before img10
        Image.fromarray(image).save(folder / f"img{i}.png")
    (folder / "readme.txt").write_text("not an image")
    image_set = read_images(folder)
    assert image_set.names == [f"img{i}.png" for i in range(11)]
    assert image_set.images.dtype == np.float32 and image_set.images.shape == (11, 9, 7)
    np.testing.assert_allclose(image_set.images, pixels / 255.0, atol=1e-7)
    assert read_images(folder, max_images=3).images.shape == (3, 9, 7)
    # name,label rows are matched to the files, in any order
    rows = [f"img{i}.png,{'cat' if i % 2 else 'dog'}" for i in reversed(range(11))]
    (tmp_path / "labels.csv").write_text("filename,label\n" + "\n".join(rows))
    label_set = read_labels(tmp_path / "labels.csv", image_names=image_set.names)
    assert label_set.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(label_set.codes, [1 - (i % 2) for i in range(11)])


def test_colour_pngs_and_mixed_sizes(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "rgb"
    folder.mkdir()
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0] = 255
    Image.fromarray(rgba, "RGBA").save(folder / "a.png")
    Image.fromarray(np.full((5, 6), 128, np.uint8)).save(folder / "b.png")
    images = read_images(folder).images
    assert images.shape == (2, 5, 6, 3)
    np.testing.assert_allclose(images[0, 0, 0], [1, 0, 0])
    np.testing.assert_allclose(images[1, 0, 0], [128 / 255] * 3, atol=1e-7)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "c.png")
    with pytest.raises(ImageError, match="same size"):
        read_images(folder)


def test_images_from_npy_npz_and_tiff(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(1)
    stack = rng.normal(size=(6, 5, 4)).astype(np.float64)
    np.save(tmp_path / "a.npy", stack)
    loaded = read_images(tmp_path / "a.npy").images
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, stack.astype(np.float32))  # arrays are not rescaled
    channels_first = rng.random((3, 3, 5, 6)).astype(np.float32)
    np.save(tmp_path / "c.npy", channels_first)
    np.testing.assert_array_equal(
        read_images(tmp_path / "c.npy").images, np.moveaxis(channels_first, 1, -1)
    )
    np.savez(tmp_path / "b.npz", images=stack, labels=np.arange(6))
    image_set = read_images(tmp_path / "b.npz", max_images=4)
    assert image_set.images.shape == (4, 5, 4)
    np.testing.assert_array_equal(image_set.labels, np.arange(4))
    tiff = (rng.random((3, 5, 4)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", tiff, photometric="minisblack")  # a stack of 3 grey images
    np.testing.assert_allclose(read_images(tmp_path / "s.tif").images, tiff / 65535.0, rtol=1e-6)
    np.save(tmp_path / "bad.npy", np.full((2, 3, 3), np.nan))
    with pytest.raises(ImageError, match="NaN"):
        read_images(tmp_path / "bad.npy")
    np.save(tmp_path / "flat.npy", np.zeros((3, 3)))
    with pytest.raises(ImageError, match="single 2-D"):
        read_images(tmp_path / "flat.npy")


def test_labels_from_npy_and_txt(tmp_path: Path) -> None:
    np.save(tmp_path / "l.npy", np.array([3, 1, 2]))
    np.testing.assert_array_equal(read_labels(tmp_path / "l.npy").codes, [3, 1, 2])
    (tmp_path / "l.txt").write_text("b a\nc\n")
    label_set = read_labels(tmp_path / "l.txt")
    assert label_set.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(label_set.codes, [1, 0, 2])
    (tmp_path / "l.csv").write_text("label\n1.0\n2.5\n")
    with pytest.raises(ImageError, match="whole numbers"):
        read_labels(tmp_path / "l.csv")


def test_unwritable_output_is_refused_before_any_work(tmp_path: Path, capsys, monkeypatch) -> None:
    import napari_topolens.activations.extract as extract

    def no_extraction(*args, **kwargs):
        raise AssertionError("the output folder must be checked before extracting")

    monkeypatch.setattr(extract, "extract_activations", no_extraction)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = cli.main(["report", "--sample", "digits", "--out", str(blocker / "report"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "not a writable folder" in err
    code = cli.main(["report", "--sample", "digits", "--out", str(blocker), "--quiet"])
    assert code == 2 and "is a file" in capsys.readouterr().err


def test_damaged_npy_is_refused_without_advice_to_unpickle(tmp_path: Path) -> None:
    path = tmp_path / "images.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageError, match="never loaded") as info:
        read_images(path)
    assert "allow_pickle" not in str(info.value)


def test_maps_flag_adds_topology_maps_and_their_drift(tmp_path: Path, capsys) -> None:
    out = tmp_path / "maps"
    code = cli.main(
        [
            "report",
            "--sample",
            "digits",
            "--layers",
            "pool2,fc1",
            "--sampling",
            "top_norm",
            "--max-images",
            "100",
            "--maps",
            "1",
            "--perturb",
            "gaussian:0.2",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0, capsys.readouterr().err
    page = (out / "report.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="maps">(.*?)</section>', page, re.S)
    assert section is not None and '<a href="#maps">' in page
    # one figure of maps (pool2 only: fc1 is a vector layer) and one of drift
    assert section.group(1).count('src="data:image/png;base64,') == 2
    assert "gaussian:0.2 · pool2:" in section.group(1)


def test_the_provenance_table_writes_lists_as_the_command_line_does():
    from napari_topolens.report.html import _plain

    assert _plain(["pool2", "fc1"]) == "pool2, fc1"
    assert _plain(["gaussian:0.1", "prune:0.5"]) == "gaussian:0.1, prune:0.5"
    assert _plain({"a": 1}) == "{'a': 1}"  # anything else as before
