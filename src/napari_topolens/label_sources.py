"""Class labels per image from a table column or a label file (docs/methods.md §9).

The one place labels are parsed, for the widgets and the command line: every
source turns into :class:`ImageLabels`, one int64 code per image of the stack
(-1: unknown) and, for text labels, the class names. Whole numbers are kept as
codes, because they are the model's own class indices (so that "correct /
incorrect" and accuracies compare like with like); text becomes the positions of
the names in ``class_names`` when the caller knows the model's classes, else
codes 0..K-1 in natural order of the names (then not the model's indices:
``coded_by_name``). Predictions of the model are a third source;
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

from .errors import ImageError, TopoLensError

__all__ = [
    "LABELS_CODED_BY_NAME",
    "MAX_CLASSES",
    "MAX_LABEL_FILE_BYTES",
    "PREDICTED_LABELS_NOTE",
    "ImageLabels",
    "checked_class_names",
    "checked_label_file",
    "labels_from_values",
    "labels_match_predictions",
    "predicted_labels_note",
    "read_labels_csv",
]

#: Provenance key set when text labels were coded by their sorted names (no class names
#: of the model were given): the codes are then not the model's class indices, so
#: accuracies and correct shares are not computed (:func:`labels_match_predictions`).
LABELS_CODED_BY_NAME = "labels_coded_by_name"

#: What views and reports say when the "classes" are the model's own predictions.
PREDICTED_LABELS_NOTE = "classes are the model's own predictions, not true labels"

#: Largest class code or number of distinct class names accepted.
MAX_CLASSES = 10_000
#: Largest label file read (a label per image for millions of images fits).
MAX_LABEL_FILE_BYTES = 32 * 2**20
#: Longest cell of a label file or class name, in characters.
MAX_LABEL_CHARS = 1000

_INDEX_HEADERS = ("index", "image", "image_index", "stack_index", "slice", "i")
#: Headers of a column of image file names (matched to the files of an image folder).
_NAME_HEADERS = ("name", "file", "filename", "file_name", "image_name", "path")
_LABEL_HEADERS = ("label", "labels", "class", "class_name", "target", "y", "category")


@dataclass
class ImageLabels:
    """One class code per image (-1 unknown) and, for text labels, the class names."""

    codes: np.ndarray
    class_names: list[str] | None
    source: str
    #: True when text labels were coded by sorting their own names: the codes are
    #: then not the model's class indices, and nothing compares them with predictions.
    coded_by_name: bool = False


def _natural_key(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


#: Text that means "no label" (also what None and NaN become as text).
_MISSING = ("", "nan", "NaN", "None", "NA", "<NA>")


def labels_from_values(
    values: Sequence[object] | np.ndarray,
    source: str,
    *,
    class_names: Sequence[str] | None = None,
) -> ImageLabels:
    """Class codes from one value per image: whole numbers, or class names as text.

    -1 and empty/NaN values are unknown (-1); other negative numbers are refused.
    Numbers must be whole and below :data:`MAX_CLASSES`. Text is matched to
    ``class_names`` (the model's classes) when given, and a name not among them is
    refused; without them the distinct names, sorted naturally, become the classes.
    """
    class_names = checked_class_names(class_names, "class names")
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
    too_long = next((str(t) for t in present if len(t) > MAX_LABEL_CHARS), None)
    if too_long is not None:
        raise ImageError(
            f"{source}: a label of {len(too_long)} characters ({too_long[:20]!r}...); class "
            f"names are at most {MAX_LABEL_CHARS} characters (is this the right column?)"
        )
    distinct, inverse = np.unique(present, return_inverse=True)
    if class_names is not None:
        unknown = sorted(set(distinct.tolist()) - set(class_names))
        if unknown:
            raise ImageError(
                f"{source}: label {unknown[0]!r} is not one of the {len(class_names)} class "
                f"names ({', '.join(class_names[:10])}{' ...' if len(class_names) > 10 else ''}); "
                "give labels by the model's class names or codes"
            )
        names = class_names
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
    return ImageLabels(codes, list(names), source, coded_by_name=class_names is None)


def _codes_from_numbers(
    numbers: np.ndarray, source: str, class_names: Sequence[str] | None
) -> ImageLabels:
    known = np.isfinite(numbers) & (numbers >= 0)
    if np.any(np.isinf(numbers)):
        raise ImageError(f"{source}: labels must be whole numbers or class names, found inf")
    if np.any(numbers < -1):
        raise ImageError(
            f"{source}: label {numbers[numbers < -1][0]:g} is negative; class codes are 0, 1, "
            "... (-1 or empty: unknown)"
        )
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
    if class_names is not None and int(largest) >= len(class_names):
        raise ImageError(
            f"{source}: label {int(largest)} has no class name ({len(class_names)} names given "
            f"for the classes 0..{len(class_names) - 1})"
        )
    return ImageLabels(codes, None if class_names is None else list(class_names), source)


def checked_class_names(class_names: Any, source: str = "class_names") -> list[str] | None:
    """``class_names`` as a list of distinct, non-empty names (None stays None).

    Names are the model's classes 0..K-1 in order, so one string (``"cat,dog"``
    would be split into letters), a repeated or empty name, or more than
    :data:`MAX_CLASSES` names is refused rather than silently mislabelling.
    """
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)):
        raise TopoLensError(
            f"{source} must be a list of names, one per class, not one string "
            f'({str(class_names)[:40]!r}); e.g. ["cat", "dog", "bird"]'
        )
    if isinstance(class_names, np.ndarray) and class_names.ndim != 1:
        raise TopoLensError(
            f"{source} must be a list of names, got an array of shape {class_names.shape}"
        )
    try:
        items = list(class_names)
    except TypeError:
        raise TopoLensError(
            f"{source} must be a list of names, one per class, got {type(class_names).__name__}"
        ) from None
    if len(items) > MAX_CLASSES:
        raise TopoLensError(f"{source} has {len(items)} names; at most {MAX_CLASSES} are supported")
    names: list[str] = []
    first_at: dict[str, int] = {}
    for position, item in enumerate(items):
        if isinstance(item, (bool, np.bool_)) or not isinstance(
            item, (str, int, np.integer, np.str_)
        ):
            raise TopoLensError(
                f"{source}: name {position} is {type(item).__name__}; class names are text"
            )
        name = str(item).strip()
        if not name or "\x00" in name or len(name) > MAX_LABEL_CHARS:
            what = (
                "is empty"
                if not name
                else (
                    "holds a NUL byte"
                    if "\x00" in name
                    else f"is over {MAX_LABEL_CHARS} characters"
                )
            )
            raise TopoLensError(f"{source}: name {position} {what}; give each class a short name")
        if name in first_at:
            raise TopoLensError(
                f"{source}: class name {name!r} is given twice (classes {first_at[name]} and "
                f"{position}); each class needs its own name"
            )
        first_at[name] = position
        names.append(name)
    return names


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
    n_images: int | None,
    *,
    image_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    first_images: bool = False,
    max_bytes: int = MAX_LABEL_FILE_BYTES,
) -> ImageLabels:
    """Labels for a stack of ``n_images`` images from a CSV (or ``.tsv``) file.

    Two layouts are read. One column: one label per image, in stack order, with
    an optional header (``label``, ``class``...); the rows must match the stack.
    Two or more columns, with a header naming an index or file-name column
    (``index``, ``image``, ``filename``...) and a label column (``label``,
    ``class``...), or headerless ``index,label`` / ``name,label`` rows, in any
    order: whole numbers are image indices 0..n_images-1, anything else the file
    names of ``image_names`` (an image folder). Each image is listed at most once;
    images not listed by index are unknown, and in a folder every image needs a row.

    ``first_images``: the stack is the first ``n_images`` images of a longer set
    (``--max-images``), so rows for later images (indices or names beyond the
    stack, labels after the first ``n_images``) are left out rather than refused.

    Every refusal is an :class:`~napari_topolens.errors.ImageError` naming the line.
    """
    file = checked_label_file(path, max_bytes)
    source = f"labels file {file.name}"
    if image_names is not None and n_images is None:
        n_images = len(image_names)
    numbered = _csv_file_rows(file, max_bytes, source)
    header = [cell.lower() for cell in numbered[0][1]]
    has_header = _has_header(numbered, header, image_names)
    body = numbered[1:] if has_header else numbered
    if not body:
        raise ImageError(f"{source} has a header but no labels")
    widths = {len(row) for _, row in body}
    if widths == {1} and (not has_header or len(header) == 1):
        return _labels_in_stack_order(body, n_images, first_images, source, class_names)
    if min(widths) < 2 or (has_header and len(header) < 2):
        line = next(number for number, row in body if len(row) != len(numbered[0][1]))
        raise ImageError(f"{source}, line {line}: rows have different numbers of columns")
    key_col, label_col = _key_and_label_columns(numbered[0][1], has_header, source)
    short = next((number for number, row in body if len(row) <= max(key_col, label_col)), None)
    if short is not None:
        raise ImageError(f"{source}, line {short}: the row is shorter than the header")
    keys = [row[key_col] for _, row in body]
    if all(_is_whole_number(key) for key in keys):
        rows = _rows_by_index(body, keys, n_images, first_images, source)
    else:
        rows = _rows_by_name(body, keys, image_names, first_images, source)
    kept = [(image, row[label_col]) for image, (_, row) in zip(rows, body) if image >= 0]
    labelled = labels_from_values(
        np.array([label for _, label in kept], dtype=object), source, class_names=class_names
    )
    assert n_images is not None  # both row readers need it
    codes = np.full(n_images, -1, dtype=np.int64)
    codes[np.array([image for image, _ in kept], dtype=np.int64)] = labelled.codes
    return ImageLabels(codes, labelled.class_names, source, labelled.coded_by_name)


def _csv_file_rows(file: Path, max_bytes: int, source: str) -> list[tuple[int, list[str]]]:
    """The non-empty rows of a checked label file with their line numbers; the
    delimiter is the most frequent of ``,;\\t`` in the first row (tab for ``.tsv``)."""
    try:
        text = file.read_bytes()[:max_bytes].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImageError(
            f"{source} is not UTF-8 text (byte {exc.start}); save it as a CSV file"
        ) from exc
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ImageError(f"{source}, line {line}: a NUL byte; the file is binary, not a CSV file")
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if file.suffix.lower() == ".tsv":
        delimiter: str | None = "\t"
    else:
        per_delimiter = {d: first.count(d) for d in ",;\t"}  # the delimiter of the first row
        delimiter = (
            max(per_delimiter, key=lambda d: per_delimiter[d])
            if any(per_delimiter.values())
            else None
        )
    numbered = _csv_rows(lines, delimiter, source)
    if not numbered:
        raise ImageError(f"{source} holds no labels")
    return numbered


def _has_header(
    numbered: list[tuple[int, list[str]]], header: list[str], image_names: Sequence[str] | None
) -> bool:
    """Whether the first row (lower-cased: ``header``) names the columns."""
    known_headers = _INDEX_HEADERS + _NAME_HEADERS + _LABEL_HEADERS
    folder_names = set(image_names) if image_names is not None else set()
    return (
        any(cell in known_headers for cell in header)
        or (
            len(header) > 1  # "foo,bar" over "0,a" rows: a header; over "b.png,cat" rows: data
            and not _is_whole_number(header[0])
            and Path(numbered[0][1][0]).name not in folder_names
            and all(_is_whole_number(row[0]) for _, row in numbered[1:])
        )
    )


def _key_and_label_columns(first_row: list[str], has_header: bool, source: str) -> tuple[int, int]:
    """Columns of the image key (index or file name) and of the label: the header's, else 0, 1."""
    if not has_header:
        return 0, 1
    header = [cell.lower() for cell in first_row]
    key_col = next((i for i, c in enumerate(header) if c in _INDEX_HEADERS + _NAME_HEADERS), -1)
    label_col = next((i for i, c in enumerate(header) if c in _LABEL_HEADERS), -1)
    if key_col < 0 or label_col < 0:
        raise ImageError(
            f"{source}: the header {first_row} needs an index column "
            f"({', '.join(_INDEX_HEADERS)}) or a file name column "
            f"({', '.join(_NAME_HEADERS)}) and a label column ({', '.join(_LABEL_HEADERS)})"
        )
    return key_col, label_col


def _is_whole_number(cell: str) -> bool:
    return cell.lstrip("+-").isdigit() and cell.isascii()


def _csv_rows(lines: list[str], delimiter: str | None, source: str) -> list[tuple[int, list[str]]]:
    """``(line number, stripped cells)`` of each non-blank row; long or broken cells refused."""
    reader = csv.reader(lines, delimiter=delimiter or ",")  # quotes are undone either way
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            cells = [cell.strip() for cell in (row[:1] if delimiter is None else row)]
            if not any(cells):
                continue
            long = next((cell for cell in cells if len(cell) > MAX_LABEL_CHARS), None)
            if long is not None:
                raise ImageError(
                    f"{source}, line {reader.line_num}: a cell of {len(long)} characters; "
                    f"labels and names are at most {MAX_LABEL_CHARS} characters"
                )
            rows.append((reader.line_num, cells))
    except csv.Error as exc:
        raise ImageError(f"{source}, line {reader.line_num}: not valid CSV ({exc})") from None
    return rows


def _labels_in_stack_order(
    body: list[tuple[int, list[str]]],
    n_images: int | None,
    first_images: bool,
    source: str,
    class_names: Sequence[str] | None,
) -> ImageLabels:
    """One label per image, the rows in stack order."""
    if n_images is not None and (len(body) < n_images if first_images else len(body) != n_images):
        raise ImageError(
            f"{source} has {len(body)} labels for {n_images} images; give one label per "
            "image in stack order, or 'index,label' rows"
        )
    values = [row[0] for _, row in body[: n_images if first_images else None]]
    return labels_from_values(np.array(values, dtype=object), source, class_names=class_names)


def _rows_by_index(
    body: list[tuple[int, list[str]]],
    keys: list[str],
    n_images: int | None,
    first_images: bool,
    source: str,
) -> list[int]:
    """The image of each row by its index (-1: beyond the first ``n_images``, left out)."""
    if n_images is None:
        raise ImageError(f"{source}: 'index,label' rows need the number of images")
    images: list[int] = []
    listed: dict[int, int] = {}
    for (line, _), key in zip(body, keys):
        index = int(key)
        if index < 0 or (index >= n_images and not first_images):
            raise ImageError(
                f"{source}, line {line}: image index {index} is outside the stack "
                f"(0..{n_images - 1})"
            )
        if index in listed:
            raise ImageError(
                f"{source}, line {line}: image {index} is listed more than once (also on "
                f"line {listed[index]}); give each image one label"
            )
        listed[index] = line
        images.append(index if index < n_images else -1)
    return images


def _rows_by_name(
    body: list[tuple[int, list[str]]],
    keys: list[str],
    image_names: Sequence[str] | None,
    first_images: bool,
    source: str,
) -> list[int]:
    """The image of each row by its file name; every image of the folder needs one."""
    if image_names is None:
        bad = next(
            (number, key) for (number, _), key in zip(body, keys) if not _is_whole_number(key)
        )
        raise ImageError(
            f"{source}, line {bad[0]}: {bad[1][:40]!r} is not an image index; 'name,label' "
            "rows need an image folder (its file names), else give 'index,label' rows"
        )
    position = {name: i for i, name in enumerate(image_names)}
    images: list[int] = []
    listed: dict[str, int] = {}
    for (line, _), key in zip(body, keys):
        name = Path(key).name
        if name in listed:
            raise ImageError(
                f"{source}, line {line}: image {name!r} is listed more than once (also on "
                f"line {listed[name]}); give each image one label"
            )
        listed[name] = line
        if name not in position and not first_images:
            raise ImageError(
                f"{source}, line {line}: {key[:80]!r} is not one of the {len(image_names)} "
                "images of the folder"
            )
        images.append(position.get(name, -1))
    missing = [name for name in image_names if name not in listed]
    if missing:
        raise ImageError(
            f"{source} has no label for {len(missing)} image(s), e.g. {missing[0]!r}; give a "
            "'name,label' row for every image file"
        )
    return images


def predicted_labels_note(provenance: dict[str, Any] | None) -> str | None:
    """:data:`PREDICTED_LABELS_NOTE` when an analysis's labels are the model's predictions.

    Views and reports show it beside class colours and purity, which then measure
    agreement with the model rather than with the truth. Reads the provenance key
    ``labels_from_predictions`` the analysis widget writes.
    """
    return PREDICTED_LABELS_NOTE if (provenance or {}).get("labels_from_predictions") else None


def labels_match_predictions(provenance: dict[str, Any] | None) -> bool:
    """Whether an analysis's label codes are the model's class indices.

    False when text labels were coded by their own sorted names
    (:data:`LABELS_CODED_BY_NAME`): comparing them with predictions would count
    chance agreements of two unrelated numberings as correct.
    """
    return not (provenance or {}).get(LABELS_CODED_BY_NAME)
