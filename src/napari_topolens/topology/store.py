"""Save and load an :class:`~napari_topolens.topology.analysis.Analysis` losslessly.

The format is a directory holding ``analysis.json`` and ``arrays.npz``:

* ``analysis.json`` names the format and its version, records the size and the
  sha256 of every ``.npz`` beside it, and holds the analysis as a tree of JSON
  values. Dataclasses are written generically (``dataclasses.fields`` recursion)
  under their class name, so a new field of a result type needs no code here.
* ``arrays.npz`` (``np.savez``, no pickle) holds every numpy array and numpy
  scalar, so arrays keep their dtype and shape bit for bit.

Python floats are written as JSON numbers (``repr``, which round-trips exactly);
NaN and the infinities, which JSON lacks, are written as ``{"__float__": "nan"}``
and the like. Tuples, dicts with non-string keys and ``None`` are tagged so they
come back as they were. Nothing is ever unpickled: loading uses
``np.load(allow_pickle=False)``.

Saving writes into a temporary sibling directory and renames it into place, so
an interrupted or failed save never leaves a half-written analysis over good
saved work. Loading refuses, with an :class:`~napari_topolens.errors.AnalysisFileError`
naming the file and what is wrong, a missing or damaged file, a folder that is not
an analysis and a format version newer than this code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnalysisFileError

__all__ = [
    "ARRAYS_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "from_tree",
    "is_analysis_dir",
    "load_analysis",
    "register_dataclass",
    "save_analysis",
    "to_tree",
]

FORMAT_NAME = "napari-topolens-analysis"
FORMAT_VERSION = 1
MANIFEST_NAME = "analysis.json"
ARRAYS_NAME = "arrays.npz"

# Modules whose dataclasses may appear in a saved analysis. They are imported on
# first use (not at import time) and every dataclass defined in them is registered
# under its class name; `register_dataclass` adds others.
_RESULT_MODULES = (
    "napari_topolens.activations.pointcloud",
    "napari_topolens.topology.persistence",
    "napari_topolens.topology.phdim",
    "napari_topolens.topology.mapper",
    "napari_topolens.topology.hole",
    "napari_topolens.topology.quality",
    "napari_topolens.topology.analysis",
    "napari_topolens.robustness.comparison",
    "napari_topolens.robustness.study",
)
_REGISTRY: dict[str, type] = {}
_SCANNED = False

# Tags of the JSON tree. A plain JSON object never appears untagged.
_T_ARRAY = "__array__"
_T_FLOAT = "__float__"
_T_TUPLE = "__tuple__"
_T_DICT = "__dict__"
_T_ITEMS = "__items__"
_T_DATACLASS = "__dataclass__"


def register_dataclass(cls: type) -> type:
    """Make a dataclass known to the loader by its class name (usable as a decorator)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    known = _REGISTRY.get(cls.__name__)
    if known is not None and known is not cls:
        raise TypeError(
            f"two result classes are named {cls.__name__!r} "
            f"({known.__module__} and {cls.__module__}); saved files name classes by name"
        )
    _REGISTRY[cls.__name__] = cls
    return cls


def _scan_result_modules() -> None:
    global _SCANNED
    if _SCANNED:
        return
    complete = True
    for module_name in _RESULT_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a missing optional module: try again on the next load
            complete = False
            continue
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
            ):
                register_dataclass(value)
    _SCANNED = complete


def _lookup_class(name: str, where: str) -> type:
    _scan_result_modules()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise AnalysisFileError(
            f"{where} holds a result of type {name!r}, which this version of "
            "napari-topolens does not know; update napari-topolens to read it"
        )
    return cls


# --------------------------------------------------------------------------- encode


class _ArraySink:
    """Collects arrays for the npz and hands out their keys."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, value: np.ndarray, path: str) -> str:
        if value.dtype.hasobject:
            raise TypeError(
                f"{path} is an object array, which cannot be saved without pickle; "
                "store plain numeric or string arrays"
            )
        key = f"a{len(self.arrays)}"
        self.arrays[key] = value
        return key


def to_tree(value: Any, sink: _ArraySink, path: str = "analysis") -> Any:
    """Encode ``value`` as a JSON-able tree, moving arrays into ``sink``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.ndarray):
        return {_T_ARRAY: sink.add(value, path)}
    if isinstance(value, np.generic):  # numpy scalar: keep its dtype via a 0-d array
        return {_T_ARRAY: sink.add(np.asarray(value), path), "scalar": True}
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return {_T_FLOAT: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        register_dataclass(cls)
        fields = {
            f.name: to_tree(getattr(value, f.name), sink, f"{path}.{f.name}")
            for f in dataclasses.fields(value)
        }
        return {_T_DATACLASS: cls.__name__, "fields": fields}
    if isinstance(value, list):
        return [to_tree(v, sink, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {_T_TUPLE: [to_tree(v, sink, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {_T_DICT: {k: to_tree(v, sink, f"{path}[{k!r}]") for k, v in value.items()}}
        return {
            _T_ITEMS: [
                [to_tree(k, sink, f"{path}<key>"), to_tree(v, sink, f"{path}[{k!r}]")]
                for k, v in value.items()
            ]
        }
    raise TypeError(
        f"{path} is a {type(value).__name__}, which is not plain data; result types "
        "may hold only arrays, numbers, strings, None, lists, tuples, dicts and dataclasses"
    )


# --------------------------------------------------------------------------- decode


def from_tree(node: Any, arrays: Any, where: str) -> Any:
    """Decode a tree written by :func:`to_tree`; ``arrays`` maps keys to arrays."""
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if isinstance(node, list):
        return [from_tree(v, arrays, where) for v in node]
    if not isinstance(node, dict) or len(node) == 0:
        raise AnalysisFileError(f"{where} holds a value of unexpected form: {node!r:.80}")
    if _T_ARRAY in node:
        key = node[_T_ARRAY]
        try:
            array = arrays[key]
        except KeyError:
            raise AnalysisFileError(
                f"{where} refers to array {key!r}, which {ARRAYS_NAME} does not hold; "
                "the analysis is damaged"
            ) from None
        return array[()] if node.get("scalar") else array
    if _T_FLOAT in node:
        text = node[_T_FLOAT]
        if text not in ("nan", "inf", "-inf"):
            raise AnalysisFileError(f"{where} holds an unknown float code {text!r}")
        return float(text)
    if _T_TUPLE in node:
        return tuple(from_tree(v, arrays, where) for v in node[_T_TUPLE])
    if _T_DICT in node:
        return {k: from_tree(v, arrays, where) for k, v in node[_T_DICT].items()}
    if _T_ITEMS in node:
        return {from_tree(k, arrays, where): from_tree(v, arrays, where) for k, v in node[_T_ITEMS]}
    if _T_DATACLASS in node:
        return _build_dataclass(node, arrays, where)
    raise AnalysisFileError(f"{where} holds an untagged object: {sorted(node)!r:.80}")


def _build_dataclass(node: dict, arrays: Any, where: str) -> Any:
    cls = _lookup_class(node[_T_DATACLASS], where)
    saved = node.get("fields")
    if not isinstance(saved, dict):
        raise AnalysisFileError(f"{where} holds a {cls.__name__} without fields")
    init_kwargs: dict[str, Any] = {}
    late: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in saved:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise AnalysisFileError(
                    f"{where} holds a {cls.__name__} without its field {f.name!r}; "
                    "the analysis is damaged or was written by an incompatible version"
                )
            continue  # a field added after the file was written: keep its default
        value = from_tree(saved[f.name], arrays, where)
        (init_kwargs if f.init else late)[f.name] = value
    try:
        obj = cls(**init_kwargs)
    except (TypeError, ValueError) as exc:
        raise AnalysisFileError(
            f"{where} holds a {cls.__name__} that does not validate: {exc}"
        ) from exc
    for name, value in late.items():
        object.__setattr__(obj, name, value)
    return obj


# --------------------------------------------------------------------------- files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_analysis_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a napari-topolens analysis manifest."""
    path = Path(path)
    manifest = path / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        with open(manifest, encoding="utf-8") as handle:
            head = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT_NAME


def save_analysis(analysis: Any, path: str | os.PathLike) -> Path:
    """Write ``analysis`` to the directory ``path`` (created or atomically replaced).

    ``path`` may be new, an empty directory or a previously saved analysis; any
    other existing file or folder is refused rather than overwritten.
    """
    target = Path(path).expanduser()
    if target.exists():
        if not target.is_dir():
            raise AnalysisFileError(
                f"{target} is a file; save the analysis to a new or empty folder"
            )
        if any(target.iterdir()) and not is_analysis_dir(target):
            raise AnalysisFileError(
                f"{target} is a folder with other content, not a saved analysis; "
                "save to a new or empty folder so nothing of yours is overwritten"
            )
    target.parent.mkdir(parents=True, exist_ok=True)

    sink = _ArraySink()
    tree = to_tree(analysis, sink)
    token = uuid.uuid4().hex[:12]
    staging = target.parent / f".{target.name}.saving-{token}"
    retired = target.parent / f".{target.name}.old-{token}"
    try:
        staging.mkdir()
        arrays_path = staging / ARRAYS_NAME
        np.savez(arrays_path, **sink.arrays)  # type: ignore[arg-type]
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "files": {
                ARRAYS_NAME: {"sha256": _sha256(arrays_path), "bytes": arrays_path.stat().st_size}
            },
            "analysis": tree,
        }
        text = json.dumps(manifest, indent=1, allow_nan=False)
        with open(staging / MANIFEST_NAME, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if retired.exists() and not target.exists():
            os.replace(retired, target)  # put the good saved work back
        raise
    shutil.rmtree(retired, ignore_errors=True)
    return target


def _read_manifest(folder: Path) -> dict:
    manifest_path = folder / MANIFEST_NAME
    if not folder.exists():
        raise AnalysisFileError(f"{folder} does not exist; give the folder of a saved analysis")
    if not folder.is_dir():
        raise AnalysisFileError(
            f"{folder} is a file, not a saved analysis; give the folder that holds {MANIFEST_NAME}"
        )
    if not manifest_path.is_file():
        raise AnalysisFileError(
            f"{folder} is not a saved napari-topolens analysis (it has no {MANIFEST_NAME})"
        )
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except ValueError as exc:
        raise AnalysisFileError(
            f"{manifest_path} is damaged: it is not valid JSON ({exc})"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise AnalysisFileError(
            f"{manifest_path} is not a napari-topolens analysis (format "
            f"{manifest.get('format') if isinstance(manifest, dict) else None!r})"
        )
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise AnalysisFileError(f"{manifest_path} has no valid format version ({version!r})")
    if version > FORMAT_VERSION:
        raise AnalysisFileError(
            f"{manifest_path} was written in format version {version}, newer than the "
            f"{FORMAT_VERSION} this napari-topolens reads; update napari-topolens"
        )
    if version < 1:
        raise AnalysisFileError(f"{manifest_path} has an unknown format version {version}")
    return manifest


def _check_files(folder: Path, manifest: dict) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or ARRAYS_NAME not in files:
        raise AnalysisFileError(f"{folder / MANIFEST_NAME} does not list {ARRAYS_NAME}")
    for name, record in files.items():
        file_path = folder / name
        if not file_path.is_file():
            raise AnalysisFileError(f"{file_path} is missing; the analysis is incomplete")
        size = file_path.stat().st_size
        if size != record.get("bytes"):
            raise AnalysisFileError(
                f"{file_path} is damaged or truncated: it has {size} bytes, "
                f"{record.get('bytes')} were saved"
            )
        if _sha256(file_path) != record.get("sha256"):
            raise AnalysisFileError(
                f"{file_path} is damaged: its sha256 differs from the one recorded when it was saved"
            )


def load_analysis(path: str | os.PathLike) -> Any:
    """Read an analysis saved by :func:`save_analysis` (``Analysis.save``).

    Raises
    ------
    AnalysisFileError
        For a missing, foreign, damaged or truncated file, or a newer format version.
    """
    folder = Path(path).expanduser()
    manifest = _read_manifest(folder)
    _check_files(folder, manifest)
    arrays_path = folder / ARRAYS_NAME
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise AnalysisFileError(f"{arrays_path} cannot be read: {exc}") from exc
    if "analysis" not in manifest:
        raise AnalysisFileError(f"{folder / MANIFEST_NAME} holds no analysis")
    return from_tree(manifest["analysis"], arrays, str(folder / MANIFEST_NAME))
