"""Class labels per image from a table column or a CSV file (docs/methods.md §9).

Both turn into the same thing, :class:`ImageLabels`: one int64 code per image of
the stack (-1: unknown) and, for text labels, the class names. Whole numbers are
kept as codes, because they are usually the model's own class indices (so that
"correct / incorrect" compares like with like); text becomes codes 0..K-1 in
natural order of the names, or the positions of the names in ``class_names`` when
the caller knows the model's classes. Predictions of the model are a third source;
the widget computes those in its worker (``predict_proba``).

A label file is untrusted: its size is checked before it is read, links are
refused, and nothing is allocated by a number the file chose (codes are bounded by
:data:`MAX_CLASSES`, rows by the stack size).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError

__all__ = [
    "MAX_CLASSES",
    "MAX_LABEL_FILE_BYTES",
    "PREDICTED_LABELS_NOTE",
    "ImageLabels",
    "checked_label_file",
    "labels_from_values",
    "predicted_labels_note",
    "read_labels_csv",
]

#: What views and reports say when the "classes" are the model's own predictions.
PREDICTED_LABELS_NOTE = "classes are the model's own predictions, not true labels"

#: Largest class code or number of distinct class names accepted.
MAX_CLASSES = 10_000
#: Largest label file read (a label per image for millions of images fits).
MAX_LABEL_FILE_BYTES = 32 * 2**20

_INDEX_HEADERS = ("index", "image", "image_index", "stack_index", "slice", "i")
_LABEL_HEADERS = ("label", "labels", "class", "class_name", "target", "y", "category")


@dataclass
class ImageLabels:
    """One class code per image (-1 unknown) and, for text labels, the class names."""

    codes: np.ndarray
    class_names: list[str] | None
    source: str


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


#: Text that means "no label" (also what None and NaN become as text).
_MISSING = ("", "nan", "NaN", "None", "NA", "<NA>")


def labels_from_values(
    values: Sequence[Any] | np.ndarray,
    source: str,
    *,
    class_names: Sequence[str] | None = None,
) -> ImageLabels:
    """Class codes from one value per image: whole numbers, or class names as text.

    Negative numbers and empty/NaN values are unknown (-1). Numbers must be whole
    and below :data:`MAX_CLASSES`. Text is matched to ``class_names`` when every
    name is one of them (the model's classes); otherwise the distinct names,
    sorted naturally, become the classes.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise ImageError(f"{source}: labels must be one value per image, got shape {array.shape}")
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    if array.dtype.kind in "iu":
        return _codes_from_numbers(array.astype(np.float64), source, class_names)
    if array.dtype.kind == "f":
        return _codes_from_numbers(array.astype(np.float64), source, class_names)
    texts = np.char.strip(array.astype(str))  # None -> "None", NaN -> "nan": missing
    missing = np.isin(texts, _MISSING)
    present = texts[~missing]
    if not len(present):
        raise ImageError(f"{source} holds no labels (every value is empty)")
    try:  # numeric text such as "3" or "3.0" is a class code
        numbers = present.astype(np.float64)
    except ValueError:
        numbers = None
    if numbers is not None:
        floats = np.full(len(texts), math.nan)
        floats[~missing] = numbers
        return _codes_from_numbers(floats, source, class_names)
    distinct, inverse = np.unique(present, return_inverse=True)
    known = [str(name) for name in class_names] if class_names is not None else None
    if known is not None and set(distinct.tolist()) <= set(known):
        names = known
    else:
        if len(distinct) > MAX_CLASSES:
            raise ImageError(
                f"{source} has {len(distinct)} different class names; at most {MAX_CLASSES} "
                "are supported (is this the right column?)"
            )
        names = sorted(distinct.tolist(), key=_natural_key)
    lookup = {name: code for code, name in enumerate(names)}
    codes = np.full(len(texts), -1, dtype=np.int64)
    codes[~missing] = np.array([lookup[name] for name in distinct.tolist()], dtype=np.int64)[
        inverse.reshape(-1)
    ]
    return ImageLabels(codes, list(names), source)


def _codes_from_numbers(
    numbers: np.ndarray, source: str, class_names: Sequence[str] | None
) -> ImageLabels:
    known = np.isfinite(numbers) & (numbers >= 0)
    if np.any(np.isinf(numbers)):
        raise ImageError(f"{source}: labels must be whole numbers or class names, found inf")
    if np.any(numbers[known] != np.round(numbers[known])):
        bad = numbers[known][numbers[known] != np.round(numbers[known])][0]
        raise ImageError(
            f"{source}: labels must be whole numbers (class codes) or class names, found {bad:g}"
        )
    if not np.any(known):
        raise ImageError(f"{source} holds no labels (every value is empty or negative)")
    largest = float(numbers[known].max())
    if largest >= MAX_CLASSES:
        raise ImageError(
            f"{source}: class code {largest:.0f} is too large (at most {MAX_CLASSES - 1}); "
            "codes are class indices 0..K-1"
        )
    codes = np.full(len(numbers), -1, dtype=np.int64)
    codes[known] = numbers[known].astype(np.int64)
    names = None
    if class_names is not None and int(largest) < len(class_names):
        names = [str(name) for name in class_names]
    return ImageLabels(codes, names, source)


def checked_label_file(path: str | os.PathLike[str], max_bytes: int = MAX_LABEL_FILE_BYTES) -> Path:
    """The labels file itself, refused when it is a link, not a file, or over ``max_bytes``."""
    file = Path(path).expanduser()
    name = file.name
    if file.is_symlink():
        raise ImageError(f"labels file {name} is a link; choose the file itself")
    if not file.is_file():
        raise ImageError(f"labels file {file} does not exist or is not a file")
    size = file.stat().st_size
    if size > max_bytes:
        raise ImageError(
            f"labels file {name} is {size / 2**20:.1f} MiB; a labels file is expected to be at "
            f"most {max_bytes / 2**20:.0f} MiB"
        )
    return file


def read_labels_csv(
    path: str | os.PathLike[str],
    n_images: int,
    *,
    class_names: Sequence[str] | None = None,
    max_bytes: int = MAX_LABEL_FILE_BYTES,
) -> ImageLabels:
    """Labels for a stack of ``n_images`` images from a CSV file.

    Two layouts are read. One column: one label per image, in stack order, with
    an optional header (``label``, ``class``...); the rows must match the stack.
    Two or more columns with a header naming an index column (``index``,
    ``image``, ``slice``...) and a label column (``label``, ``class``...), or two
    headerless columns ``index,label``: the images not listed are unknown.
    """
    file = checked_label_file(path, max_bytes)
    name = file.name
    try:
        text = file.read_bytes()[:max_bytes].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImageError(
            f"labels file {name} is not UTF-8 text (byte {exc.start}); save it as a CSV file"
        ) from exc
    if "\x00" in text:
        raise ImageError(f"labels file {name} is binary, not a CSV file")
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    per_delimiter = {d: first.count(d) for d in ",;\t"}  # the delimiter of the first row
    delimiter = (
        max(per_delimiter, key=lambda d: per_delimiter[d]) if any(per_delimiter.values()) else None
    )
    try:
        reader = csv.reader(lines, delimiter=delimiter or ",")  # quotes are undone either way
        if delimiter is None:  # one column
            rows = [[row[0].strip()] for row in reader if row and row[0].strip()]
        else:
            rows = [
                [cell.strip() for cell in row]
                for row in reader
                if any(cell.strip() for cell in row)
            ]
    except csv.Error as exc:
        raise ImageError(f"labels file {name} is not valid CSV ({exc})") from exc
    if not rows:
        raise ImageError(f"labels file {name} holds no labels")
    header = [cell.lower() for cell in rows[0]]
    has_header = any(cell in _INDEX_HEADERS + _LABEL_HEADERS for cell in header) or (
        len(header) > 1 and not header[0].lstrip("+-").isdigit()  # "foo,bar": a header
    )
    body = rows[1:] if has_header else rows
    if not body:
        raise ImageError(f"labels file {name} has a header but no labels")
    widths = {len(row) for row in body}
    source = f"labels file {name}"
    if widths == {1} and (not has_header or len(header) == 1):
        if len(body) != n_images:
            raise ImageError(
                f"{source} has {len(body)} labels for {n_images} images; give one label per "
                "image in stack order, or 'index,label' rows"
            )
        return labels_from_values(
            np.array([row[0] for row in body], dtype=object), source, class_names=class_names
        )
    if min(widths) < 2:
        raise ImageError(f"{source}: rows have different numbers of columns")
    index_col, label_col = 0, 1
    if has_header:
        index_col = next((i for i, c in enumerate(header) if c in _INDEX_HEADERS), -1)
        label_col = next((i for i, c in enumerate(header) if c in _LABEL_HEADERS), -1)
        if index_col < 0 or label_col < 0:
            raise ImageError(
                f"{source}: the header {rows[0]} needs an index column ({', '.join(_INDEX_HEADERS)}) "
                f"and a label column ({', '.join(_LABEL_HEADERS)})"
            )
        if max(index_col, label_col) >= min(widths):
            raise ImageError(f"{source}: some rows are shorter than the header")
    if len(body) > n_images:
        raise ImageError(f"{source} has {len(body)} rows for {n_images} images")
    index = np.empty(len(body), dtype=np.int64)
    for row_number, row in enumerate(body):
        cell = row[index_col]
        try:
            value = int(cell)
        except ValueError:
            raise ImageError(
                f"{source}, row {row_number + 1 + has_header}: image index {cell!r} is not a "
                "whole number"
            ) from None
        if not 0 <= value < n_images:
            raise ImageError(
                f"{source}, row {row_number + 1 + has_header}: image index {value} is outside "
                f"the stack (0..{n_images - 1})"
            )
        index[row_number] = value
    unique, counts = np.unique(index, return_counts=True)
    if np.any(counts > 1):
        raise ImageError(f"{source}: image {int(unique[counts > 1][0])} is listed more than once")
    labelled = labels_from_values(
        np.array([row[label_col] for row in body], dtype=object), source, class_names=class_names
    )
    codes = np.full(n_images, -1, dtype=np.int64)
    codes[index] = labelled.codes
    return ImageLabels(codes, labelled.class_names, source)


def predicted_labels_note(provenance: dict[str, Any] | None) -> str | None:
    """:data:`PREDICTED_LABELS_NOTE` when an analysis's labels are the model's predictions.

    Views and reports show it beside class colours and purity, which then measure
    agreement with the model rather than with the truth. Reads the provenance key
    ``labels_from_predictions`` the analysis widget writes.
    """
    return PREDICTED_LABELS_NOTE if (provenance or {}).get("labels_from_predictions") else None
