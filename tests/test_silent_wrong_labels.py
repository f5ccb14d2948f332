"""Issue 19: labels that were read or compared silently wrong, one table per surface.

Each row is a hostile or careless input; each ends as a clear project error (the
message is matched) or as the correct result, never as a traceback or a silently
wrong answer: label files read by their index or file name, class names checked
wherever they enter, and integer labels kept as the model's class indices so
accuracies compare like with like.
"""

from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from napari_topolens import cli
from napari_topolens.activations.pointcloud import PointCloud
from napari_topolens.errors import ImageError, TopoLensError
from napari_topolens.image_files import read_labels
from napari_topolens.label_sources import labels_from_values, read_labels_csv
from napari_topolens.topology.analysis import AnalysisConfig, analyze, check_class_labels

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
DIGITS = "napari_topolens.sample_models:digits_cnn"

# --------------------------------------------------------------------- label files

_SHUFFLED = [(i, (7 * i) % 10) for i in range(120)]
random.Random(0).shuffle(_SHUFFLED)
_TRUTH = np.array([(7 * i) % 10 for i in range(120)])
_FOLDER = [f"img{i}.png" for i in range(4)]

# id: (file name, content, read_labels keywords, expected codes or the error's message)
LABEL_FILES = {
    "shuffled image,label rows": (
        "l.csv",
        "image,label\n" + "\n".join(f"{i},{c}" for i, c in _SHUFFLED),
        {"n_images": 120},
        _TRUTH,
    ),
    "shuffled headerless index,label rows": (
        "l.csv",
        "\n".join(f"{i},{c}" for i, c in _SHUFFLED),
        {"n_images": 120},
        _TRUTH,
    ),
    "shuffled index rows, tab separated": (
        "l.tsv",
        "index\tclass\n" + "\n".join(f"{i}\t{c}" for i, c in _SHUFFLED),
        {"n_images": 120},
        _TRUTH,
    ),
    "index rows of the first images only (--max-images)": (
        "l.csv",
        "index,label\n5,1\n2,3\n0,2\n",
        {"n_images": 3, "first_images": True},
        [2, -1, 3],
    ),
    "name,label rows of the first files only (--max-images)": (
        "l.csv",
        "img9.png,cat\nimg1.png,dog\nimg0.png,cat\n",
        {"image_names": _FOLDER[:2], "first_images": True},
        [0, 1],
    ),
    "a .txt longer than the first images (--max-images)": (
        "l.txt",
        "3\n1\n2\n0\n",
        {"n_images": 2, "first_images": True},
        [3, 1],
    ),
    "negative index": (
        "l.csv",
        "index,label\n0,1\n-1,2\n",
        {"n_images": 3},
        "line 3: image index -1",
    ),
    "duplicated index": (
        "l.csv",
        "index,label\n0,1\n2,2\n0,1\n",
        {"n_images": 3},
        "line 4: image 0 is listed more than once \\(also on line 2\\)",
    ),
    "index past the images": (
        "l.csv",
        "0,1\n3,1\n",
        {"n_images": 3},
        "line 2: image index 3 is outside",
    ),
    "index rows without a count": ("l.csv", "0,1\n1,1\n", {}, "need the number of images"),
    "name,label rows in any order": (
        "l.csv",
        "filename,label\nimg3.png,cat\nsub/img1.png,dog\nimg0.png,cat\nimg2.png,dog\n",
        {"image_names": _FOLDER},
        [0, 1, 1, 0],
    ),
    "one file name with two labels": (
        "l.csv",
        "name,label\nimg0.png,cat\nimg1.png,dog\nimg2.png,cat\nimg3.png,dog\nimg0.png,dog\n",
        {"image_names": _FOLDER},
        "line 6: image 'img0.png' is listed more than once",
    ),
    "one file name twice with the same label": (
        "l.csv",
        "img0.png,cat\nimg1.png,dog\nimg2.png,cat\nimg3.png,dog\nimg0.png,cat\n",
        {"image_names": _FOLDER},
        "line 5: image 'img0.png' is listed more than once",
    ),
    "a file name not in the folder": (
        "l.csv",
        "img0.png,cat\nimg1.png,dog\nimg2.png,cat\nimg3.png,dog\nimg9.png,cat\n",
        {"image_names": _FOLDER},
        "line 5: 'img9.png' is not one of the 4 images",
    ),
    "an image without a row": (
        "l.csv",
        "img0.png,cat\nimg1.png,dog\n",
        {"image_names": _FOLDER},
        "no label for 2 image",
    ),
    "file names without a folder": (
        "l.csv",
        "a.png,cat\nb.png,dog\n",
        {"n_images": 2},
        "line 1: 'a.png' is not an image index",
    ),
    "NUL byte in a CSV": (
        "l.csv",
        "index,label\n0,1\n1,2\x00\n",
        {"n_images": 3},
        "line 3: a NUL byte",
    ),
    "NUL byte in a .txt": ("l.txt", "cat\ndog\x00\n", {"n_images": 2}, "line 2: a NUL byte"),
    "a field over Python's csv limit": (
        "l.csv",
        "index,label\n0," + "x" * 200_000 + "\n",
        {"n_images": 3},
        "line 2: not valid CSV",
    ),
    "a long class name": (
        "l.csv",
        "index,label\n0,1\n1," + "x" * 5000 + "\n",
        {"n_images": 3},
        "line 3: a cell of 5000 characters",
    ),
    "text labels matched to the model's class names": (
        "l.csv",
        "index,label\n0,bird\n1,cat\n2,bird\n",
        {"n_images": 3, "class_names": ["cat", "dog", "bird"]},
        [2, 0, 2],
    ),
    "a text label not among the class names": (
        "l.csv",
        "index,label\n0,bird\n1,cow\n",
        {"n_images": 3, "class_names": ["cat", "dog", "bird"]},
        "label 'cow' is not one of the 3 class names",
    ),
    "a code without a class name": (
        "l.csv",
        "index,label\n0,1\n1,5\n",
        {"n_images": 3, "class_names": ["cat", "dog", "bird"]},
        "label 5 has no class name",
    ),
    "a .txt text label not among the class names": (
        "l.txt",
        "cat\ncow\n",
        {"n_images": 2, "class_names": ["cat", "dog"]},
        "label 'cow' is not one of the 2",
    ),
    "a label of -5": ("l.csv", "index,label\n0,1\n1,-5\n", {"n_images": 3}, "label -5 is negative"),
}


@pytest.mark.parametrize("case", list(LABEL_FILES))
def test_label_files_are_read_by_their_index_or_refused(case: str, tmp_path: Path) -> None:
    name, text, keywords, expected = LABEL_FILES[case]
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    if isinstance(expected, str):
        with pytest.raises(ImageError, match=expected):
            read_labels(path, **keywords)
        return
    labels = read_labels(path, **keywords)
    np.testing.assert_array_equal(labels.codes, expected)
    if path.suffix == ".csv" and "n_images" in keywords:  # the widget's reader: the same parser
        widget = read_labels_csv(
            path,
            keywords["n_images"],
            class_names=keywords.get("class_names"),
            first_images=keywords.get("first_images", False),
        )
        np.testing.assert_array_equal(widget.codes, expected)


# --------------------------------------------------------------------- class names


def _cloud(n: int = 30) -> PointCloud:
    rng = np.random.default_rng(0)
    return PointCloud(
        layer="fc",
        points=rng.normal(size=(n, 4)),
        image_index=np.arange(n),
        position=None,
        receptive_field=np.tile([0, 0, 4, 4], (n, 1)),
        sampling="pooled",
        grid_shape=(),
        image_shape=(4, 4),
    )


def _cli(argv: list[str]) -> tuple[int, str]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = cli.main(["report", *argv])
    return code, stderr.getvalue()


def _cli_class_names(tmp_path: Path, names: str) -> None:
    np.save(tmp_path / "images.npy", np.zeros((5, 8, 8), np.float32))
    argv = ["--model", DIGITS, "--images", str(tmp_path / "images.npy"), "--layers", "fc1"]
    code, err = _cli([*argv, "--class-names", names, "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    raise TopoLensError(err)  # matched like the other rows


def _metadata_choice(names: list[str]) -> None:
    from napari_topolens.ui.label_choice import LAYER_METADATA, read_label_choice

    layer = SimpleNamespace(name="digits", metadata={"labels": np.arange(3), "class_names": names})
    read_label_choice(LAYER_METADATA, None, layer, 3)


def _csv_choice(tmp_path: Path, names: list[str]) -> None:
    from napari_topolens.ui.label_choice import CSV_FILE, read_label_choice

    (tmp_path / "l.csv").write_text("label\na\nb\na\n")
    read_label_choice(CSV_FILE, None, None, 3, csv_path=tmp_path / "l.csv", class_names=names)


def _predictions_choice(names: list[str]) -> None:
    from napari_topolens.ui.label_choice import PREDICTIONS, read_label_choice

    read_label_choice(PREDICTIONS, None, None, 3, class_names=names)


_TEN_A = ["a"] * 10

# id: (a call that gets the class names, the error's message)
CLASS_NAMES = {
    "--class-names a,a,...": (
        lambda tmp: _cli_class_names(tmp, ",".join(_TEN_A)),
        "class name 'a' is given twice",
    ),
    "--class-names with an empty name": (
        lambda tmp: _cli_class_names(tmp, "cat,,dog"),
        "--class-names: name 1 is empty",
    ),
    "analyze(class_names='cat,dog,bird')": (
        lambda tmp: analyze([_cloud()], np.arange(30) % 3, class_names="cat,dog,bird"),
        "class_names must be a list of names, one per class, not one string",
    ),
    "analyze(class_names=ten times 'a')": (
        lambda tmp: analyze([_cloud()], np.arange(30) % 3, class_names=_TEN_A),
        "class name 'a' is given twice",
    ),
    "analyze(class_names=5)": (
        lambda tmp: analyze([_cloud()], np.arange(30) % 3, class_names=5),
        "class_names must be a list of names, one per class, got int",
    ),
    "analyze(class_names=[None, 'b'])": (
        lambda tmp: analyze([_cloud()], np.arange(30) % 2, class_names=[None, "b"]),
        "name 0 is NoneType",
    ),
    "analyze(labels='0,1,2')": (
        lambda tmp: analyze([_cloud()], "0,1,2"),
        "labels must be one integer class code per image",
    ),
    "check_class_labels(names with a NUL byte)": (
        lambda tmp: check_class_labels(np.arange(3), ["a", "b\x00", "c"]),
        "name 1 holds a NUL byte",
    ),
    "a table column with repeated class names": (
        lambda tmp: labels_from_values(
            np.array(["a", "b"], dtype=object), "col", class_names=_TEN_A
        ),
        "class name 'a' is given twice",
    ),
    "a label file with repeated class names": (
        lambda tmp: read_labels(_write(tmp, "l.txt", "a b a"), n_images=3, class_names=["a", "a"]),
        "class name 'a' is given twice",
    ),
    "the widget: a layer's metadata with repeated class names": (
        lambda tmp: _metadata_choice(["x", "y", "x"]),
        "class name 'x' is given twice",
    ),
    "the widget: the model's predictions with repeated class names": (
        lambda tmp: _predictions_choice(["a", "b", "a"]),
        "the model's class names: class name 'a' is given twice",
    ),
    "the widget: a CSV with the model's repeated class names": (
        lambda tmp: _csv_choice(tmp, ["a", "b", "a"]),
        "class name 'a' is given twice",
    ),
}


def _write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


@pytest.mark.parametrize("case", list(CLASS_NAMES))
def test_class_names_are_checked_wherever_they_enter(case: str, tmp_path: Path) -> None:
    call, message = CLASS_NAMES[case]
    with pytest.raises(TopoLensError, match=message):
        call(tmp_path)


# --------------------------------------------------------------------- class codes


@pytest.fixture(scope="module")
def digits_without_zeros() -> tuple[np.ndarray, np.ndarray, float]:
    """90 held-out digits 1..9 (class 0 removed) and the trained model's true accuracy."""
    from napari_topolens import load_sample
    from napari_topolens.activations.extract import predict_proba

    sample = load_sample("digits")
    index = np.asarray(sample.test_index)
    index = index[sample.labels[index] != 0][:90]
    images, labels = sample.images[index], sample.labels[index].astype(np.int64)
    assert labels.min() == 1 and labels.max() == 9
    truth = float(np.mean(predict_proba(sample.model, images).argmax(axis=1) == labels))
    assert truth > 0.9  # a trained model: a shift of the codes would give about 0.1
    return images, labels, truth


_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _api_accuracy(images: np.ndarray, labels: np.ndarray, tmp_path: Path) -> tuple[float, Any]:
    from napari_topolens import load_sample
    from napari_topolens.pipeline.variants import run_variants

    analysis = run_variants(
        load_sample("digits").model,
        images,
        ["fc1"],
        ["gaussian:0.01"],
        labels=labels,
        config=AnalysisConfig(h1_max_points=60),
    )
    return analysis.variants[0].comparison.accuracy_base, analysis


def _cli_accuracy(
    images: np.ndarray, labels: np.ndarray, tmp_path: Path, *, as_text: bool, names: bool
) -> tuple[float, Any]:
    from napari_topolens.topology.store import load_analysis

    np.save(tmp_path / "images.npy", images)
    rows = [(i, _NAMES[c] if as_text else str(c)) for i, c in enumerate(labels)]
    random.Random(1).shuffle(rows)  # read by the index column, not in file order
    (tmp_path / "labels.csv").write_text(
        "image,label\n" + "\n".join(f"{i},{c}" for i, c in rows), encoding="utf-8"
    )
    argv = ["--model", DIGITS, "--weights", str(SAMPLE_DATA / "digits_cnn.pt")]
    argv += ["--images", str(tmp_path / "images.npy"), "--labels", str(tmp_path / "labels.csv")]
    argv += ["--layers", "fc1", "--perturb", "gaussian:0.01", "--h1-max-points", "60", "--quiet"]
    argv += ["--out", str(tmp_path / "out")] + (
        ["--class-names", ",".join(_NAMES)] if names else []
    )
    code, err = _cli(argv)
    assert code == 0, err
    analysis = load_analysis(tmp_path / "out" / "analysis")
    return analysis.variants[0].comparison.accuracy_base, analysis


def _widget_accuracy(
    images: np.ndarray, labels: np.ndarray, tmp_path: Path, *, as_text: bool
) -> tuple[float, Any]:
    """As the analysis widget does it: labels from a CSV file, the predictions kept."""
    from napari_topolens import extract_activations, load_sample
    from napari_topolens.activations.extract import predict_proba
    from napari_topolens.label_sources import LABELS_CODED_BY_NAME
    from napari_topolens.robustness.comparison import model_accuracy
    from napari_topolens.ui.label_choice import CSV_FILE, read_label_choice

    model = load_sample("digits").model
    (tmp_path / "l.csv").write_text(
        "index,label\n"
        + "".join(f"{i},{_NAMES[c] if as_text else c}\n" for i, c in enumerate(labels))
    )
    choice = read_label_choice(CSV_FILE, None, None, len(labels), csv_path=tmp_path / "l.csv")
    provenance = {LABELS_CODED_BY_NAME: True} if choice.coded_by_name else {}
    analysis = analyze(
        extract_activations(model, images, ["fc1"]),
        choice.labels,
        class_names=choice.class_names,
        predictions=predict_proba(model, images).argmax(axis=1),
        provenance=provenance,
        config=AnalysisConfig(h1_max_points=60),
    )
    return model_accuracy(analysis), analysis


# id: how the accuracy is computed; "truth": the model's true accuracy, nan: not comparable
CLASS_CODES = {
    "widget: labels 1..9 from a CSV file": (
        lambda x, y, tmp: _widget_accuracy(x, y, tmp, as_text=False),
        "truth",
    ),
    "widget: text labels numbered by their own names": (
        lambda x, y, tmp: _widget_accuracy(x, y, tmp, as_text=True),
        "nan",
    ),
    "API: labels 1..9 of a 10-class model": (lambda x, y, tmp: _api_accuracy(x, y, tmp), "truth"),
    "CLI: labels 1..9 in a shuffled index,label CSV": (
        lambda x, y, tmp: _cli_accuracy(x, y, tmp, as_text=False, names=False),
        "truth",
    ),
    "CLI: text labels matched to --class-names": (
        lambda x, y, tmp: _cli_accuracy(x, y, tmp, as_text=True, names=True),
        "truth",
    ),
    "CLI: text labels numbered by their own names": (
        lambda x, y, tmp: _cli_accuracy(x, y, tmp, as_text=True, names=False),
        "nan",
    ),
}


@pytest.mark.parametrize("case", list(CLASS_CODES))
def test_integer_labels_are_the_models_class_indices(
    case: str, digits_without_zeros, tmp_path: Path
) -> None:
    from napari_topolens.ui import view_data

    images, labels, truth = digits_without_zeros
    run, expected = CLASS_CODES[case]
    accuracy, analysis = run(images, labels, tmp_path)
    fc1 = analysis["fc1"]
    nodes = view_data.node_features(analysis, "fc1", fc1.mapper_layout)  # the views' node table
    if expected == "nan":  # codes of sorted names ("eight" = 0) are not the model's indices
        assert np.isnan(accuracy)
        assert analysis.class_names[0] == "eight"
        if analysis.predictions is not None:  # the views: no correct share either
            assert nodes["correct_share"].isna().all()
            with pytest.raises(TopoLensError, match="correct share is unknown"):
                view_data.node_colors(analysis, "fc1", "correct")
        return
    assert accuracy == pytest.approx(truth)
    np.testing.assert_array_equal(analysis.labels, labels)  # never renumbered
    assert analysis.n_classes == 10
    if analysis.predictions is not None:  # the views' correct share: the model's own accuracy
        share = nodes["correct_share"].to_numpy()
        assert np.nanmean(share) > 0.9  # about 0.1 if the codes were shifted
        view_data.node_colors(analysis, "fc1", "correct")


def test_label_codes_no_model_has_are_refused_before_any_work() -> None:
    with pytest.raises(ImageError, match="label 1000000000000 is not a class index"):
        check_class_labels(np.array([3, 10**12, 17]), None)
    codes, names = check_class_labels(np.array([3, 9, -1]), None)
    np.testing.assert_array_equal(codes, [3, 9, -1])
    assert names is None
