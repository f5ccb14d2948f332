"""Class labels from a table column or a CSV file: codes, names, and refusals of bad files."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from napari_topolens.errors import ImageError, TopoLensError
from napari_topolens.label_sources import MAX_CLASSES, labels_from_values, read_labels_csv


def test_whole_numbers_stay_class_codes_and_gaps_are_unknown():
    result = labels_from_values(np.array([3, 0, -1, 3, 7]), "col")
    np.testing.assert_array_equal(result.codes, [3, 0, -1, 3, 7])
    assert result.codes.dtype == np.int64 and result.class_names is None
    floats = labels_from_values(np.array([1.0, np.nan, 2.0]), "col")
    np.testing.assert_array_equal(floats.codes, [1, -1, 2])
    named = labels_from_values(np.array([0, 2]), "col", class_names=["a", "b", "c"])
    assert named.class_names == ["a", "b", "c"]


def test_text_becomes_classes_in_natural_order_or_the_models_names():
    result = labels_from_values(pd.Series(["cat10", "cat2", None, "cat2", ""]).to_numpy(), "col")
    assert result.class_names == ["cat2", "cat10"]
    np.testing.assert_array_equal(result.codes, [1, 0, -1, 0, -1])
    known = labels_from_values(
        np.array(["ring", "disk"], dtype=object), "col", class_names=["disk", "x", "ring"]
    )
    np.testing.assert_array_equal(known.codes, [2, 0])
    assert known.class_names == ["disk", "x", "ring"]
    numeric_text = labels_from_values(np.array(["1", "0", "2.0"], dtype=object), "col")
    np.testing.assert_array_equal(numeric_text.codes, [1, 0, 2])
    categorical = labels_from_values(pd.Series(["b", "a", "b"], dtype="category").to_numpy(), "col")
    np.testing.assert_array_equal(categorical.codes, [1, 0, 1])


@pytest.mark.parametrize(
    "values, match",
    [
        (np.array([0.5, 1.0]), "whole numbers"),
        (np.array([0, MAX_CLASSES]), "too large"),
        (np.array([np.nan, np.nan]), "no labels"),
        (np.array([0, np.inf]), "inf"),
        (np.array([[0, 1]]), "one value per image"),
        (
            np.array([f"n{i}" for i in range(MAX_CLASSES + 1)], dtype=object),
            "different class names",
        ),
    ],
)
def test_bad_values_are_refused(values, match):
    with pytest.raises(ImageError, match=match):
        labels_from_values(values, "col")


def write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_one_label_per_image_in_stack_order(tmp_path):
    result = read_labels_csv(write(tmp_path, "label\nb\na\nb\n"), 3)
    assert result.class_names == ["a", "b"]
    np.testing.assert_array_equal(result.codes, [1, 0, 1])
    assert "labels.csv" in result.source
    headerless = read_labels_csv(write(tmp_path, "2\n0\n\n1\n"), 3)
    np.testing.assert_array_equal(headerless.codes, [2, 0, 1])
    quoted = read_labels_csv(write(tmp_path, '"class"\n"ring"\n" disk"\n'), 2)
    assert quoted.class_names == ["disk", "ring"]


def test_index_label_rows_leave_the_rest_unknown(tmp_path):
    result = read_labels_csv(write(tmp_path, "image,score,class\n4,0.3,ring\n1,0.9,disk\n"), 6)
    np.testing.assert_array_equal(result.codes, [-1, 0, -1, -1, 1, -1])
    assert result.class_names == ["disk", "ring"]
    semicolons = read_labels_csv(write(tmp_path, "0;1\n2;0\n"), 3)
    np.testing.assert_array_equal(semicolons.codes, [1, -1, 0])


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "holds no labels"),
        ("label\n", "header but no labels"),
        ("a\nb\n", "2 labels for 3 images"),
        ("index,label\n0,a\n0,b\n", "listed more than once"),
        ("index,label\n7,a\n", "outside the stack"),
        ("index,label\nx,a\n", "line 2: 'x' is not an image index"),
        ("foo,bar\n0,a\n", "needs an index column"),
        ("0,1\n1,0\n2,1\n3,0\n", "line 4: image index 3 is outside the stack"),
        ("index,label\n0,0.5\n", "whole numbers"),
        ("index,label\n0,99999999\n", "too large"),
    ],
)
def test_bad_csv_files_get_one_clear_message(tmp_path, text, match):
    with pytest.raises(ImageError, match=match):
        read_labels_csv(write(tmp_path, text), 3)


def test_untrusted_files_are_checked_before_reading(tmp_path):
    big = write(tmp_path, "0\n" * 100, "big.csv")
    with pytest.raises(ImageError, match="at most"):
        read_labels_csv(big, 100, max_bytes=50)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\x00\x01\x02label")
    with pytest.raises(TopoLensError, match="binary|UTF-8"):
        read_labels_csv(binary, 3)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ImageError, match="not UTF-8"):
        read_labels_csv(latin, 1)
    with pytest.raises(ImageError, match="does not exist"):
        read_labels_csv(tmp_path / "missing.csv", 3)
    with pytest.raises(ImageError, match="not a file"):
        read_labels_csv(tmp_path, 3)
    link = tmp_path / "link.csv"
    os.symlink(write(tmp_path, "0\n1\n2\n", "real.csv"), link)
    with pytest.raises(ImageError, match="is a link"):
        read_labels_csv(link, 3)


def test_the_note_for_predicted_labels():
    from napari_topolens.label_sources import PREDICTED_LABELS_NOTE, predicted_labels_note

    assert predicted_labels_note({"labels_from_predictions": True}) == PREDICTED_LABELS_NOTE
    assert predicted_labels_note({"labels_from_predictions": False}) is None
    assert predicted_labels_note({}) is None and predicted_labels_note(None) is None
