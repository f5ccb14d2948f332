"""Save and load an :class:`~napari_topolens.topology.analysis.Analysis` losslessly.

The format is a directory holding exactly two files, ``analysis.json`` and
``arrays.npz``:

* ``analysis.json`` names the format and its version, records the size and the
  sha256 of ``arrays.npz``, holds the analysis as a tree of JSON values, and ends
  with ``manifest_sha256``: the sha256 of the canonical JSON text of everything
  else in it, so an edited parameter or result is noticed as well as a damaged
  array file. Dataclasses are written generically (``dataclasses.fields``
  recursion) under their class name, so a new field of a result type needs no
  code here.
* ``arrays.npz`` (``np.savez``, stored, no pickle) holds every numpy array and
  numpy scalar, so arrays keep their dtype and shape bit for bit.

Python floats are written as JSON numbers (``repr``, which round-trips exactly);
NaN and the infinities, which JSON lacks, are written as ``{"__float__": "nan"}``
and the like. Tuples, dicts with non-string keys and ``None`` are tagged so they
come back as they were.

Loading treats the folder as untrusted. It reads only the two file names above,
never through a link and never outside the folder; it checks both checksums, then
rebuilds the tree checking every value against the type annotations of the
dataclass field that holds it (so new fields are validated with no code of their
own), CSR member lists (``x`` with ``x_offsets``) for monotone in-bounds offsets,
and the cross references of a layer (member rows within the cloud, image numbers
within the images). Arrays are read one at a time, only those the tree refers
to, after their ``.npy`` header's shape times item size has been checked against
the bytes the archive really holds. Checksums only show the files are undamaged
(anyone can recompute them), so the loaded analysis is then cross-checked as a
whole: every value the report and the views index or size with (class and
prediction codes, per-image arrays, images against ``image_shape``, diagrams,
Betti curves, matrices, coordinates, cluster ids, orders) against the others,
and each variant with its comparison against its base. Every refusal is an
:class:`~napari_topolens.errors.AnalysisFileError` naming the file and what is
wrong; nothing is ever unpickled.

Saving writes into a temporary sibling directory and renames it into place, so
an interrupted or failed save never leaves a half-written analysis over good
saved work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import stat
import sys
import types
import typing
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import AnalysisFileError, TopoLensError

__all__ = [
    "ARRAYS_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_DEPTH",
    "MAX_MANIFEST_BYTES",
    "from_tree",
    "is_analysis_dir",
    "load_analysis",
    "open_plain_file",
    "register_dataclass",
    "save_analysis",
    "to_tree",
    "type_problem",
]

FORMAT_NAME = "napari-topolens-analysis"
#: 2: ``manifest_sha256`` covers analysis.json; 1 (unchecked analysis.json) is refused.
FORMAT_VERSION = 2
MANIFEST_NAME = "analysis.json"
ARRAYS_NAME = "arrays.npz"
#: analysis.json holds no arrays, so a larger one is not ours (arrays live in the npz).
MAX_MANIFEST_BYTES = 64 * 1024**2
#: Deepest nesting of the JSON tree (an Analysis needs about 12).
MAX_DEPTH = 64
# dtype kinds an array may have: bool, integers, floats, complex, unicode text
_ARRAY_KINDS = "biufcU"

# Modules whose dataclasses may appear in a saved analysis. They are imported on
# first use (not at import time) and every dataclass defined in them is registered
# under its class name; `register_dataclass` adds others.
_RESULT_MODULES = (
    "napari_topolens.activations.pointcloud",
    "napari_topolens.topology.persistence",
    "napari_topolens.topology.phdim",
    "napari_topolens.topology.mapper",
    "napari_topolens.topology.hole",
    "napari_topolens.topology.placement",
    "napari_topolens.topology.quality",
    "napari_topolens.topology.analysis",
    "napari_topolens.robustness.comparison",
    "napari_topolens.robustness.study",
)
_REGISTRY: dict[str, type] = {}
_SCANNED = False
_HINTS: dict[type, dict[str, Any]] = {}

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


def _lookup_class(name: Any, where: str) -> type:
    if not isinstance(name, str):
        raise AnalysisFileError(f"{where} names a result type that is not a string: {name!r:.80}")
    _scan_result_modules()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise AnalysisFileError(
            f"{where} holds a result of type {name!r:.80}, which this version of "
            "napari-topolens does not know; update napari-topolens to read it"
        )
    return cls


# --------------------------------------------------------------------------- types


def field_hints(cls: type) -> dict[str, Any]:
    """The resolved type annotation of every field of a dataclass (cached).

    Names of registered result classes resolve too, so a field may be annotated
    with a result type imported only under ``TYPE_CHECKING``.
    """
    hints = _HINTS.get(cls)
    if hints is None:
        _scan_result_modules()
        module = sys.modules.get(cls.__module__)
        namespace = dict(vars(module)) if module is not None else {}
        local = {**_REGISTRY, **namespace}
        try:
            hints = typing.get_type_hints(cls, globalns=namespace, localns=local)
        except Exception:  # an annotation that does not resolve: check what does
            hints = {}
            for f in dataclasses.fields(cls):
                try:
                    hints[f.name] = (
                        eval(f.type, namespace, local) if isinstance(f.type, str) else f.type
                    )
                except Exception:
                    hints[f.name] = Any
        _HINTS[cls] = hints
    return hints


def _type_name(hint: Any) -> str:
    if hint is type(None) or hint is None:
        return "None"
    if isinstance(hint, type):
        return "array" if hint is np.ndarray else hint.__name__
    return str(hint).replace("typing.", "").replace("numpy.ndarray", "array")


def type_problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` does not fit the annotation ``hint`` (None when it fits).

    Knows ``Any``, ``None``, ``bool``, ``int``, ``float``, ``str``,
    ``np.ndarray`` (numeric, bool or text dtypes), unions, ``list[X]``,
    ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[K, V]`` and dataclasses; any other
    annotation accepts every value.
    """
    if hint is Any or hint is object:
        return None
    if hint is None or hint is type(None):
        return None if value is None else f"{type(value).__name__} where None belongs"
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        problems = [type_problem(value, arm) for arm in args]
        if any(p is None for p in problems):
            return None
        return f"{_describe(value)} where {' or '.join(_type_name(a) for a in args)} belongs"
    if origin in (list, tuple, dict):
        if not isinstance(value, origin):
            return f"{_describe(value)} where a {origin.__name__} belongs"
        if origin is list and args:
            for i, item in enumerate(value):
                problem = type_problem(item, args[0])
                if problem:
                    return f"item {i}: {problem}"
        elif origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                arms = [args[0]] * len(value)
            elif args == ((),):
                arms = []
            else:
                arms = list(args)
                if len(arms) != len(value):
                    return f"a tuple of {len(value)} items where {len(arms)} belong"
            for i, (item, arm) in enumerate(zip(value, arms)):
                problem = type_problem(item, arm)
                if problem:
                    return f"item {i}: {problem}"
        elif origin is dict and args:
            for key, item in value.items():
                problem = type_problem(key, args[0]) or type_problem(item, args[1])
                if problem:
                    return f"entry {key!r:.40}: {problem}"
        return None
    if origin is not None:  # another generic (Mapping[...], Sequence[...]): not checked
        return None
    if hint is np.ndarray:
        if not isinstance(value, np.ndarray):
            return f"{_describe(value)} where an array belongs"
        if value.dtype.kind not in _ARRAY_KINDS or value.dtype.fields is not None:
            return f"an array of dtype {value.dtype} (only numbers, booleans and text are kept)"
        return None
    if hint is bool:
        return (
            None
            if isinstance(value, (bool, np.bool_))
            else f"{_describe(value)} where a bool belongs"
        )
    if hint is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return None
        return f"{_describe(value)} where an int belongs"
    if hint is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)
        ):
            return None
        return f"{_describe(value)} where a float belongs"
    if hint is str:
        return None if isinstance(value, str) else f"{_describe(value)} where a str belongs"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return None
        return f"{_describe(value)} where a {hint.__name__} belongs"
    return None


def _describe(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return f"a {type(value).__name__}"
    if isinstance(value, np.ndarray):
        return f"an array {value.dtype}{list(value.shape)}"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return f"{type(value).__name__} {value!r:.40}"
    return f"a {type(value).__name__}"


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


class _Arrays:
    """Arrays by key, read from the npz only when the tree asks for them."""

    def __init__(self, get: Any) -> None:
        self._get = get
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = self._get(key)
        return self._cache[key]


def from_tree(node: Any, arrays: Any, where: str, depth: int = 0) -> Any:
    """Decode a tree written by :func:`to_tree`; ``arrays[key]`` gives an array.

    ``where`` names the file and ``depth`` counts the nesting (at most :data:`MAX_DEPTH`).
    """
    if depth > MAX_DEPTH:
        raise AnalysisFileError(f"{where} is nested deeper than {MAX_DEPTH} levels; it is not ours")
    if node is None or isinstance(node, (bool, str, int)):
        return node
    if isinstance(node, float):
        if not math.isfinite(node):  # json accepts NaN/Infinity tokens; we never write them
            raise AnalysisFileError(f"{where} holds a bare non-finite number")
        return node
    deeper = depth + 1
    if isinstance(node, list):
        return [from_tree(v, arrays, where, deeper) for v in node]
    if not isinstance(node, dict) or len(node) == 0:
        raise AnalysisFileError(f"{where} holds a value of unexpected form: {node!r:.80}")
    if _T_ARRAY in node:
        key = node[_T_ARRAY]
        if not isinstance(key, str) or set(node) - {_T_ARRAY, "scalar"}:
            raise AnalysisFileError(f"{where} holds a malformed array reference {node!r:.80}")
        array = arrays[key]
        if node.get("scalar"):
            if array.ndim != 0:
                raise AnalysisFileError(f"{where}: array {key!r} is not a scalar")
            return array[()]
        return array
    if _T_FLOAT in node:
        text = node[_T_FLOAT]
        if len(node) != 1 or text not in ("nan", "inf", "-inf"):
            raise AnalysisFileError(f"{where} holds an unknown float code {text!r:.40}")
        return float(text)
    if _T_TUPLE in node:
        items = node[_T_TUPLE]
        if len(node) != 1 or not isinstance(items, list):
            raise AnalysisFileError(f"{where} holds a tuple whose payload is not a list")
        return tuple(from_tree(v, arrays, where, deeper) for v in items)
    if _T_DICT in node:
        items = node[_T_DICT]
        if len(node) != 1 or not isinstance(items, dict):
            raise AnalysisFileError(f"{where} holds a dict whose payload is not an object")
        return {k: from_tree(v, arrays, where, deeper) for k, v in items.items()}
    if _T_ITEMS in node:
        items = node[_T_ITEMS]
        if (
            len(node) != 1
            or not isinstance(items, list)
            or not all(isinstance(pair, list) and len(pair) == 2 for pair in items)
        ):
            raise AnalysisFileError(f"{where} holds a dict whose items are not [key, value] pairs")
        result = {}
        for k, v in items:
            key = from_tree(k, arrays, where, deeper)
            try:
                hash(key)
            except TypeError:
                raise AnalysisFileError(f"{where} holds a dict key that is not hashable") from None
            result[key] = from_tree(v, arrays, where, deeper)
        return result
    if _T_DATACLASS in node:
        return _build_dataclass(node, arrays, where, deeper)
    raise AnalysisFileError(f"{where} holds an untagged object: {sorted(map(str, node))!r:.80}")


def _build_dataclass(node: dict, arrays: Any, where: str, depth: int) -> Any:
    cls = _lookup_class(node[_T_DATACLASS], where)
    saved = node.get("fields")
    if not isinstance(saved, dict) or set(node) != {_T_DATACLASS, "fields"}:
        raise AnalysisFileError(f"{where} holds a {cls.__name__} without fields")
    hints = field_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(saved) - known)
    if extra:
        raise AnalysisFileError(
            f"{where} holds a {cls.__name__} with unknown field(s) {', '.join(extra)[:80]}; "
            "it was written by another version or edited"
        )
    init_kwargs: dict[str, Any] = {}
    late: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in saved:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise AnalysisFileError(
                    f"{where} holds a {cls.__name__} without its field {f.name!r}; "
                    "the analysis is damaged or was written by an incompatible version"
                )
            continue  # a field added after the file was written: keep its default
        value = from_tree(saved[f.name], arrays, where, depth)
        problem = type_problem(value, hints.get(f.name, Any))
        if problem:
            raise AnalysisFileError(f"{where}: {cls.__name__}.{f.name} holds {problem}")
        values[f.name] = value
        (init_kwargs if f.init else late)[f.name] = value
    _check_member_lists(cls.__name__, values, where)
    try:
        obj = cls(**init_kwargs)
        for name, value in late.items():
            object.__setattr__(obj, name, value)
        _check_references(obj, where)
    except AnalysisFileError:
        raise
    except Exception as exc:  # a result type's own validation, whatever it raises
        raise AnalysisFileError(
            f"{where} holds a {cls.__name__} that does not validate: {type(exc).__name__}: {exc}"
        ) from exc
    return obj


def _member_pairs(values: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """CSR pairs among a dataclass's fields: ``x_offsets`` with ``xs`` or ``x``."""
    for name in values:
        if name.endswith("_offsets"):
            stem = name[: -len("_offsets")]
            for members in (stem + "s", stem):
                if members in values:
                    yield members, name
                    break


def _check_member_lists(owner: str, values: dict[str, Any], where: str) -> None:
    for members_name, offsets_name in _member_pairs(values):
        members, offsets = values[members_name], values[offsets_name]
        if not (isinstance(members, np.ndarray) and isinstance(offsets, np.ndarray)):
            continue
        label = f"{where}: {owner}.{offsets_name}"
        if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) < 1:
            raise AnalysisFileError(f"{label} is not a 1-D integer offset array")
        if members.ndim != 1 or (members.dtype.kind not in "iu" and len(members)):
            raise AnalysisFileError(f"{where}: {owner}.{members_name} is not a 1-D integer array")
        if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(members):
            raise AnalysisFileError(
                f"{label} does not run monotonically from 0 to the {len(members)} members"
            )
        if len(members) and members.min() < 0:
            raise AnalysisFileError(f"{where}: {owner}.{members_name} holds negative rows")


def _csr_members(obj: Any, seen: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """Every array of cloud rows inside a layer's results: CSR members, ``index`` fields."""
    if not dataclasses.is_dataclass(obj) or seen > 2:
        return
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    rows = [members for members, _ in _member_pairs(values)]
    if seen > 0:  # results inside a layer: `index`, `h1_index` ... are cloud rows too
        rows += [n for n in values if n == "index" or n.endswith("_index")]
    for name in rows:
        value = values[name]
        if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
            yield f"{type(obj).__name__}.{name}", value
    for value in values.values():
        if dataclasses.is_dataclass(value) and type(value).__name__ != "PointCloud":
            yield from _csr_members(value, seen + 1)


def _check_graph(graph: Any, where: str) -> None:
    """Mapper node and edge tables the views index by node number."""
    n_nodes = len(graph.node_ids)
    if len(graph.member_offsets) != n_nodes + 1:
        raise AnalysisFileError(
            f"{where}: a Mapper graph has {len(graph.member_offsets)} member offsets for "
            f"{n_nodes} nodes"
        )
    for field_name in ("size", "purity", "dominant_class", "mean_lens", "component", "community"):
        value = getattr(graph, field_name)
        length = len(value)
        if length != n_nodes:
            raise AnalysisFileError(
                f"{where}: a Mapper graph's {field_name} has {length} entries for {n_nodes} nodes"
            )
        kinds = (
            "iu" if field_name in ("size", "dominant_class", "component", "community") else "iuf"
        )
        if value.ndim != 1 or (length and value.dtype.kind not in kinds):
            raise AnalysisFileError(
                f"{where}: a Mapper graph's {field_name} is {_describe(value)}, not 1-D numbers"
            )
    if len(graph.edges) and (
        graph.edges.dtype.kind not in "iu" or graph.edge_weight.dtype.kind not in "iuf"
    ):
        raise AnalysisFileError(f"{where}: a Mapper graph's edges are not node numbers")
    edges = graph.edges
    if edges.ndim != 2 or edges.shape[1] != 2 or len(graph.edge_weight) != len(edges):
        raise AnalysisFileError(
            f"{where}: a Mapper graph's edges are not (E, 2) with one weight each"
        )
    if len(edges) and (edges.min() < 0 or edges.max() >= n_nodes):
        raise AnalysisFileError(
            f"{where}: a Mapper graph's edges refer to node {int(edges.max())} of {n_nodes}"
        )


def _check_flow(flow: Any, where: str) -> None:
    """Cluster-flow stages the views index by stage number."""
    n_stages = len(flow.stage_names)
    if not 0 <= flow.best_stage < max(n_stages, 1):
        raise AnalysisFileError(
            f"{where}: the cluster flow's best stage {flow.best_stage} is not one of its "
            f"{n_stages} stages"
        )
    if flow.memberships.ndim != 2 or len(flow.memberships) != n_stages:
        raise AnalysisFileError(
            f"{where}: the cluster flow has {len(flow.memberships)} membership rows for "
            f"{n_stages} stages"
        )
    for field_name in ("thresholds", "scores"):
        value = getattr(flow, field_name)
        if value.ndim != 1 or (len(value) and value.dtype.kind not in "iuf"):
            raise AnalysisFileError(f"{where}: the cluster flow's {field_name} are not numbers")
        if len(value) != n_stages:
            raise AnalysisFileError(
                f"{where}: the cluster flow's {field_name} do not match its {n_stages} stages"
            )
    flows = flow.flows
    if flows.ndim != 2 or flows.shape[1] != 4:
        raise AnalysisFileError(f"{where}: the cluster flow's flows are not (F, 4) rows")
    if len(flows) and (flows[:, 0].min() < 0 or flows[:, 0].max() >= max(n_stages - 1, 1)):
        raise AnalysisFileError(
            f"{where}: the cluster flow's flows refer to stage {int(flows[:, 0].max())} of "
            f"{n_stages}"
        )


def _check_references(obj: Any, where: str) -> None:
    """Cross references the views follow: member rows, image numbers, pixel boxes."""
    name = type(obj).__name__
    if name == "PointCloud":
        height, width = (*obj.image_shape, 0, 0)[:2]
        if len(obj.image_index) and obj.image_index.min() < 0:
            raise AnalysisFileError(f"{where}: a PointCloud refers to negative image numbers")
        box = obj.receptive_field
        if len(box) and (
            box[:, :2].min() < 0
            or box[:, 2].max() > height
            or box[:, 3].max() > width
            or np.any(box[:, 2:] < box[:, :2])
        ):
            raise AnalysisFileError(
                f"{where}: a PointCloud's receptive fields leave its {height}x{width} images"
            )
    elif name == "MapperGraph":
        _check_graph(obj, where)
    elif name == "ClusterFlow":
        _check_flow(obj, where)
    elif name == "LayerAnalysis":
        n = len(obj.cloud)
        flow_points = obj.flow.memberships.shape[1] if obj.flow.memberships.ndim == 2 else -1
        if flow_points != n:
            raise AnalysisFileError(
                f"{where}: layer {obj.name!r}: the cluster flow covers {flow_points} points "
                f"of a cloud of {n}"
            )
        if len(obj.point_labels) != n:
            raise AnalysisFileError(
                f"{where}: layer {obj.name!r} has {len(obj.point_labels)} point labels "
                f"for {n} points"
            )
        for label, members in _csr_members(obj):
            if len(members) and (members.max() >= n or members.min() < 0):
                raise AnalysisFileError(
                    f"{where}: layer {obj.name!r}: {label} refers to row {int(members.max())} "
                    f"of a cloud of {n} points"
                )
    elif name in _PART_CHECKS:
        _PART_CHECKS[name](obj, where)


# --------------------------------------------------------------------------- consistency
#
# Every saved value a reader (the report, the napari views) indexes or sizes with is
# checked against the others before the analysis is handed out: shapes of diagrams,
# matrices and coordinates, cluster ids, orders, class codes, image numbers and the
# images themselves. A reader may then index without checks of its own, and nothing
# it allocates is sized by a number the file chose alone.

#: Pixels of one image in an analysis that holds no images (the views draw a stand-in
#: of that size): 8192 x 8192. With images, their own shape is checked instead.
MAX_IMAGE_PIXELS = 8192 * 8192


def _refuse(where: str, what: str) -> typing.NoReturn:
    raise AnalysisFileError(f"{where}: {what}")


def _integer_codes(value: Any, where: str, what: str) -> np.ndarray:
    """A 1-D integer array of codes, -1 (unknown) or more."""
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iu":
        _refuse(where, f"{what} are not a 1-D integer array ({_describe(value)})")
    if len(value) and int(value.min()) < -1:
        _refuse(where, f"{what} hold {int(value.min())}; codes are -1 (unknown) or more")
    return value


def _matrix(value: Any, where: str, what: str, columns: int | None = None) -> np.ndarray:
    """A 2-D numeric array (with ``columns`` columns when given)."""
    if (
        not isinstance(value, np.ndarray)
        or value.ndim != 2
        or value.dtype.kind not in "biuf"
        or (columns is not None and value.shape[1] != columns)
    ):
        shape = f"(n, {columns})" if columns is not None else "2-D"
        _refuse(where, f"{what} is not a {shape} numeric array ({_describe(value)})")
    return value


def _same_length(where: str, owner: str, expected: int, **arrays: Any) -> None:
    for field_name, value in arrays.items():
        if len(value) != expected:
            _refuse(where, f"{owner}.{field_name} has {len(value)} entries for {expected}")


def _check_persistence(obj: Any, where: str) -> None:
    """Diagrams ``(k, 2)``, one Betti curve per diagram over one grid, numbers per dimension."""
    if not obj.diagrams:
        _refuse(where, "a PersistenceResult holds no diagram")
    for dim, diagram in enumerate(obj.diagrams):
        _matrix(diagram, where, f"the H{dim} persistence diagram", columns=2)
        if diagram.dtype.kind not in "f":
            _refuse(where, f"the H{dim} persistence diagram is not floating point")
        birth, death = diagram[:, 0], diagram[:, 1]
        if len(diagram) and not (
            np.all(np.isfinite(birth)) and birth.min() >= 0 and np.all(death >= birth)
        ):
            _refuse(
                where,
                f"the H{dim} persistence diagram holds bars that are not 0 <= birth <= death "
                "(NaN, or a bar dying before it is born)",
            )
    n_dims = len(obj.diagrams)
    grid, curves = obj.betti_grid, obj.betti_curves
    if grid.ndim != 1 or grid.dtype.kind not in "iuf":
        _refuse(where, f"the Betti grid is not a 1-D numeric array ({_describe(grid)})")
    if curves.ndim != 2 or curves.shape != (n_dims, len(grid)) or curves.dtype.kind not in "iuf":
        _refuse(
            where,
            f"the Betti curves {_describe(curves)} are not one row per diagram ({n_dims}) "
            f"over the {len(grid)} grid values",
        )
    for field_name in ("total_persistence", "entropy"):
        value = getattr(obj, field_name)
        if value.ndim != 1 or len(value) != n_dims or value.dtype.kind not in "iuf":
            _refuse(where, f"the persistence's {field_name} is not one number per diagram")
    if obj.n_points < 0:
        _refuse(where, f"the persistence was computed on {obj.n_points} points")
    route = obj.h1_route or {}
    for key, kind in ((f"pilot_bottleneck_{obj.subsample}", float), ("pilot_points", int)):
        value = route.get(key)
        if value is not None and type_problem(value, kind) is not None:
            _refuse(where, f"the H1 route's {key} is {_describe(value)}, not a number")


def _check_phdim(obj: Any, where: str) -> None:
    if obj.sizes.ndim != 1 or (len(obj.sizes) and obj.sizes.dtype.kind not in "iu"):
        _refuse(where, "the PH-dimension subsample sizes are not integers")
    if obj.energies.ndim != 1 or len(obj.energies) != len(obj.sizes):
        _refuse(where, "the PH-dimension energies are not one per subsample size")


def _check_class_persistence(obj: Any, where: str) -> None:
    if obj.classes.ndim != 1 or obj.total.ndim != 1 or len(obj.classes) != len(obj.total):
        _refuse(where, "the per-class persistence is not one total per class")


def _check_blobs(obj: Any, where: str) -> None:
    """PCA coordinates ``(n, 2)``, one cluster and label per point, one hull per cluster."""
    n = len(_matrix(obj.coords, where, "the blob coordinates", columns=2))
    if not np.all(np.isfinite(obj.coords)):
        _refuse(where, "the blob coordinates are not finite")
    _integer_codes(obj.labels, where, "the blob labels")
    if obj.cluster.ndim != 1 or obj.cluster.dtype.kind not in "iu":
        _refuse(where, "the blob clusters are not a 1-D integer array")
    _same_length(where, "BlobGraph", n, cluster=obj.cluster, labels=obj.labels)
    hull_ids = obj.hull_clusters
    if hull_ids.ndim != 1 or hull_ids.dtype.kind not in "iu" or len(hull_ids) != len(obj.hulls):
        _refuse(where, "the blob graph has not one cluster id per hull")
    if len(hull_ids) and not np.all(np.isin(hull_ids, obj.cluster)):
        _refuse(where, "a blob hull belongs to a cluster no point is in")
    for hull in obj.hulls:
        if len(_matrix(hull, where, "a blob hull", columns=2)) < 1 or not np.all(np.isfinite(hull)):
            _refuse(where, "a blob hull has no points or non-finite ones")
    ratio = obj.explained_variance
    if ratio.ndim != 1 or len(ratio) < 2 or ratio.dtype.kind not in "iuf":
        _refuse(where, "the blob graph's explained variance is not two numbers")


def _check_dendrogram(obj: Any, where: str) -> None:
    """``order`` and ``leaves`` permute the shown points; one row per merge elsewhere."""
    n = len(obj.index)
    if obj.index.ndim != 1:
        _refuse(where, "the dendrogram's points are not a 1-D array")
    for field_name in ("order", "leaves"):
        value = getattr(obj, field_name)
        if (
            value.ndim != 1
            or (len(value) and value.dtype.kind not in "iu")
            or len(value) != n
            or not np.array_equal(np.sort(value), np.arange(n))
        ):
            _refuse(where, f"the dendrogram's {field_name} is not an order of its {n} points")
    merges = max(n - 1, 0)
    distances = obj.distances
    if distances.ndim != 2 or distances.shape != (n, n) or distances.dtype.kind not in "iuf":
        _refuse(where, f"the dendrogram's distances {_describe(distances)} are not ({n}, {n})")
    for field_name in ("linkage", "icoord", "dcoord"):
        value = getattr(obj, field_name)
        if value.shape != (merges, 4) or value.dtype.kind not in "iuf":
            _refuse(
                where,
                f"the dendrogram's {field_name} {_describe(value)} is not ({merges}, 4) "
                f"for {n} points",
            )
    if len(obj.member_offsets) != merges + 1:
        _refuse(
            where,
            f"the dendrogram has {len(obj.member_offsets)} member offsets for {merges} merges",
        )


def _check_flow_counts(flow: Any, where: str) -> None:
    """Every band of the cluster flow joins clusters of its stages with the points it says."""
    memberships, flows = flow.memberships, flow.flows
    if memberships.dtype.kind not in "iu" or (memberships.size and memberships.min() < -1):
        _refuse(where, "the cluster flow's memberships are not cluster ids (-1 or more)")
    if flows.dtype.kind not in "iu":
        _refuse(where, "the cluster flow's flows are not integers")
    for s in range(len(memberships) - 1):
        rows = flows[flows[:, 0] == s]
        if not len(rows):
            continue
        pairs, counts = np.unique(
            np.stack([memberships[s], memberships[s + 1]], axis=1), axis=0, return_counts=True
        )
        found = {(int(a), int(b)): int(c) for (a, b), c in zip(pairs, counts)}
        for _stage, a, b, count in rows.tolist():
            if found.get((a, b)) != count:
                _refuse(
                    where,
                    f"the cluster flow's band from cluster {a} to {b} at stage {s} holds "
                    f"{count} points, its stages {found.get((a, b), 0)}",
                )


def _check_drift(obj: Any, where: str) -> None:
    n = len(obj.image_score)
    for field_name in ("image_score", "mapper_moved", "cluster_moved"):
        if getattr(obj, field_name).ndim != 1:
            _refuse(where, f"the drift of layer {obj.layer!r}: {field_name} is not 1-D")
    _same_length(
        where,
        "LayerDrift",
        n,
        mapper_moved=obj.mapper_moved,
        cluster_moved=obj.cluster_moved,
    )
    if obj.mapper_moved.dtype.kind != "b" or obj.cluster_moved.dtype.kind != "b":
        _refuse(where, f"the drift of layer {obj.layer!r}: moved images are not booleans")
    for field_name in (
        "bottleneck",
        "sliced_wasserstein",
        "bottleneck_scale",
        "sliced_wasserstein_scale",
    ):
        value = getattr(obj, field_name)
        if value.ndim != 1 or (len(value) and value.dtype.kind not in "iuf"):
            _refuse(where, f"the drift of layer {obj.layer!r}: {field_name} is not 1-D numbers")
    keys = set(obj.quality_base)
    if (
        keys != set(obj.quality_variant)
        or not {"purity", "ari", "ph_dimension", "mapper_nodes"} <= keys
    ):
        _refuse(
            where, f"the drift of layer {obj.layer!r} does not compare the same quality numbers"
        )


def _check_comparison(obj: Any, where: str) -> None:
    if obj.n_images < 0:
        _refuse(where, f"a comparison of {obj.n_images} images")
    layers = [drift.layer for drift in obj.drifts]
    if len(set(layers)) != len(layers):
        _refuse(where, f"a comparison names a layer twice ({', '.join(layers)[:80]})")
    for drift in obj.drifts:
        if len(drift.image_score) != obj.n_images:
            _refuse(
                where,
                f"the drift of layer {drift.layer!r} scores {len(drift.image_score)} images "
                f"of the {obj.n_images} compared",
            )


def _check_placement(obj: Any, where: str) -> None:
    """The placement index alone: lens parameters, cube intervals, eps."""
    label = "a layer's placement index"
    lower, upper = obj.cube_lower, obj.cube_upper
    _matrix(lower, where, f"{label}'s cube lower bounds")
    _matrix(upper, where, f"{label}'s cube upper bounds")
    if lower.shape != upper.shape or not (np.all(np.isfinite(lower)) and np.all(lower <= upper)):
        _refuse(where, f"{label}'s cube intervals are not finite (lower, upper) pairs of one shape")
    if obj.lens in ("pca1", "pca2"):
        width = 1 if obj.lens == "pca1" else 2
        axes, mean = obj.lens_axes, obj.lens_mean
        if (
            mean.ndim != 1
            or axes.shape != (len(mean), width)
            or not (np.all(np.isfinite(axes)) and np.all(np.isfinite(mean)))
        ):
            _refuse(where, f"{label}'s PCA lens is not a finite mean (D,) and axes (D, {width})")
        if lower.shape[1] != width:
            _refuse(where, f"{label}'s cubes have {lower.shape[1]} lens dimensions for {width}")
    elif lower.shape[1] not in (0, 1) and len(lower):
        _refuse(where, f"{label}'s cubes have {lower.shape[1]} lens dimensions for 1")
    if obj.member_core.ndim != 1 or (len(obj.member_core) and obj.member_core.dtype.kind != "b"):
        _refuse(where, f"{label}'s core flags are not a 1-D boolean array")
    for name in ("node_cube", "node_cluster"):
        value = getattr(obj, name)
        if value.ndim != 1 or (len(value) and value.dtype.kind not in "iu"):
            _refuse(where, f"{label}'s {name} is not a 1-D integer array")
        if len(value) and value.min() < 0:
            _refuse(where, f"{label}'s {name} holds negative numbers")
    if len(obj.node_cube) and obj.node_cube.max() >= len(lower):
        _refuse(
            where,
            f"{label} puts a node in cube {int(obj.node_cube.max())} of {len(lower)} cubes",
        )
    if len(obj.node_cube) and not (math.isfinite(obj.eps) and obj.eps > 0):
        _refuse(where, f"{label}'s eps {obj.eps!r} is not a positive number")
    if obj.min_samples < 1:
        _refuse(where, f"{label}'s min_samples {obj.min_samples} is below 1")


_PART_CHECKS: dict[str, Any] = {
    "PlacementIndex": _check_placement,
    "PersistenceResult": _check_persistence,
    "PHDimResult": _check_phdim,
    "ClassPersistenceResult": _check_class_persistence,
    "BlobGraph": _check_blobs,
    "Dendrogram": _check_dendrogram,
    "LayerDrift": _check_drift,
    "Comparison": _check_comparison,
}


def _check_layer(obj: Any, where: str) -> None:
    """What the views and the report index within one layer's results."""
    n = len(obj.cloud)
    label = f"layer {obj.name!r}"
    _integer_codes(obj.point_labels, where, f"{label}'s point labels")
    blobs, flow = obj.blobs, obj.flow
    if len(blobs.coords) != n:
        _refuse(where, f"{label}'s blob graph has {len(blobs.coords)} points for {n}")
    if not np.array_equal(blobs.labels, obj.point_labels):
        _refuse(where, f"{label}'s blob graph colours other labels than its points have")
    if not np.array_equal(blobs.cluster, flow.memberships[flow.best_stage]):
        _refuse(where, f"{label}'s blob graph shows other clusters than the best flow stage")
    labelled = bool(flow.stage_names) and flow.stage_names[0] == "labels"
    if labelled and not np.array_equal(flow.memberships[0], obj.point_labels):
        _refuse(where, f"{label}'s cluster flow starts from other labels than its points")
    _check_flow_counts(flow, f"{where}: {label}")
    layout = obj.mapper_layout
    n_nodes = obj.mapper.n_nodes
    if layout is not None and (
        layout.shape != (n_nodes, 2)
        or layout.dtype.kind not in "iuf"
        or not np.all(np.isfinite(layout))
    ):
        _refuse(where, f"{label}'s Mapper layout {_describe(layout)} is not ({n_nodes}, 2) finite")
    index = obj.placement
    if index is not None:
        mapper = obj.mapper
        if len(index.member_core) != len(mapper.members) or len(index.node_cube) != n_nodes:
            _refuse(
                where,
                f"{label}'s placement index has {len(index.member_core)} core flags and "
                f"{len(index.node_cube)} nodes for {len(mapper.members)} members of "
                f"{n_nodes} nodes",
            )
        if len(index.node_cluster) != n_nodes:
            _refuse(where, f"{label}'s placement index numbers {len(index.node_cluster)} nodes")
        if index.lens in ("pca1", "pca2") and index.lens_axes.shape[0] != obj.cloud.points.shape[1]:
            _refuse(
                where,
                f"{label}'s placement lens has {index.lens_axes.shape[0]} dimensions for "
                f"{obj.cloud.points.shape[1]}",
            )
        lens_width = mapper.lens_components.shape[1] if mapper.lens_components.ndim == 2 else 1
        if len(index.cube_lower) and index.cube_lower.shape[1] != lens_width:
            _refuse(where, f"{label}'s placement cubes do not match its {lens_width}-D lens")
    before = obj.cloud.meta.get("points_before_cap")
    if before is not None and type_problem(before, int) is not None:
        _refuse(where, f"{label}'s cloud records {_describe(before)} points before the cap")


def _check_analysis(obj: Any, where: str, base: Any = None) -> None:
    """Class codes, image numbers, per-image arrays and images, all against each other.

    ``base``: the analysis whose variant this is (its images serve the variant's
    clouds when the variant keeps none).
    """
    from ..label_sources import MAX_CLASSES

    labels, names = obj.labels, obj.class_names
    if not obj.layer_results:
        _refuse(where, "the analysis holds no layer")
    layer_names = [result.name for result in obj.layer_results]
    if len(set(layer_names)) != len(layer_names):
        _refuse(where, f"a layer name repeats in {', '.join(layer_names)[:80]}")
    if labels is not None:
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or (len(labels) and labels.min() < -1):
            _refuse(where, "the saved labels are not class codes (-1 or more)")
        top = int(labels.max()) if len(labels) else -1
        if names is not None and top >= len(names):
            _refuse(where, f"label {top} has no class name ({len(names)} saved)")
        if names is None and top >= len(labels):
            _refuse(
                where,
                f"label {top} is not a class code of {len(labels)} labels without class names "
                "(codes run 0..k-1)",
            )
    if names is not None and len(names) > MAX_CLASSES:
        _refuse(where, f"{len(names):,} class names, more than the {MAX_CLASSES:,} allowed")

    # the image numbers the clouds refer to, and the arrays with one row per image
    shapes = {tuple(result.cloud.image_shape) for result in obj.layer_results}
    if len(shapes) != 1:
        _refuse(where, f"the layers were made from images of different shapes {sorted(shapes)}")
    image_shape = shapes.pop()
    if len(image_shape) != 2 or min(image_shape) < 1:
        _refuse(where, f"the image shape {image_shape} is not (height, width)")
    needed = max(
        (
            int(result.cloud.image_index.max()) + 1
            for result in obj.layer_results
            if len(result.cloud)
        ),
        default=0,
    )
    images = obj.images
    if images is None and base is not None:
        images = base.images
    if images is not None:
        if (
            images.ndim not in (3, 4)
            or images.dtype.kind not in "biuf"
            or (images.ndim == 4 and images.shape[-1] not in (3, 4))
        ):
            _refuse(
                where,
                f"the saved images {_describe(images)} are not (N, H, W) or (N, H, W, 3) numbers",
            )
        if tuple(images.shape[1:3]) != image_shape:
            _refuse(
                where,
                f"the saved images are {images.shape[1]}x{images.shape[2]} pixels but the "
                f"clouds were made from {image_shape[0]}x{image_shape[1]} images",
            )
        if len(images) < needed:
            _refuse(where, f"the clouds refer to image {needed - 1} of {len(images)} saved images")
    elif image_shape[0] * image_shape[1] > MAX_IMAGE_PIXELS:
        _refuse(
            where,
            f"the image shape {image_shape} is larger than any model input "
            f"({MAX_IMAGE_PIXELS:,} pixels at most)",
        )
    for field_name in ("labels", "predictions", "probabilities"):
        value = getattr(obj, field_name)
        if value is not None and len(value) < needed:
            _refuse(
                where,
                f"{len(value)} {field_name} were saved but the clouds refer to {needed} images",
            )
    probabilities = obj.probabilities
    if probabilities is not None:
        _matrix(probabilities, where, "the saved probabilities")
    if obj.predictions is not None:
        predictions = _integer_codes(obj.predictions, where, "the saved predictions")
        bound = probabilities.shape[1] if probabilities is not None else MAX_CLASSES
        if len(predictions) and int(predictions.max()) >= bound:
            _refuse(
                where,
                f"prediction {int(predictions.max())} is not a class index (at most "
                f"{bound - 1}{' for the saved probabilities' if probabilities is not None else ''})",
            )
    declared = obj.provenance.get("n_images")
    if declared is not None:
        per_image = [
            len(v) for v in (images, labels, obj.predictions, probabilities) if v is not None
        ]
        if type_problem(declared, int) is not None or not needed <= declared <= min(
            per_image, default=declared
        ):
            _refuse(
                where,
                f"the provenance's image count {declared!r:.40} does not fit the {needed} images "
                "the clouds refer to and the per-image arrays saved",
            )
    notes = obj.provenance.get("notes")
    if notes is not None and not isinstance(notes, dict):
        _refuse(where, f"the provenance's notes are {_describe(notes)}, not a dict")

    # per layer: labels of the points are the labels of their images
    for result in obj.layer_results:
        expected = (
            labels[result.cloud.image_index]
            if labels is not None
            else np.full(len(result.cloud), -1)
        )
        if not np.array_equal(result.point_labels, expected):
            _refuse(where, f"layer {result.name!r}: the point labels are not its images' labels")
        _check_layer(result, where)
        dominant = result.mapper.dominant_class
        n_classes = obj.n_classes
        if len(dominant) and (dominant.min() < -1 or dominant.max() >= max(n_classes, 1)):
            _refuse(
                where, f"layer {result.name!r}: a Mapper node's class is not one of {n_classes}"
            )

    # layer x layer matrices
    n_layers = len(obj.layer_results)
    for kind in (obj.config.layer_distance, "cka"):
        if kind not in obj.layer_distances:
            _refuse(where, f"the {kind} matrix between the layers is missing")
    for kind, matrix in obj.layer_distances.items():
        if matrix.shape != (n_layers, n_layers) or matrix.dtype.kind not in "iuf":
            _refuse(
                where,
                f"the {kind} matrix {_describe(matrix)} is not ({n_layers}, {n_layers}) numbers",
            )

    # variants: each an analysis of the same images, compared at layers both have
    if obj.variants and base is not None:
        _refuse(where, "a variant holds variants of its own")
    for number, variant in enumerate(obj.variants):
        if type(variant).__name__ != "Variant" or type(variant.analysis) is not type(obj):
            _refuse(where, f"variant {number} is {_describe(variant)}, not a variant analysis")
        mine = f"{where}: variant {variant.name!r}"
        _check_analysis(variant.analysis, mine, base=obj)
        comparison = variant.comparison
        for drift in comparison.drifts:
            if drift.layer not in layer_names or drift.layer not in variant.analysis.layers:
                _refuse(mine, f"the comparison names layer {drift.layer!r}, which is not in both")
        if images is not None and comparison.n_images > len(images):
            _refuse(mine, f"the comparison covers {comparison.n_images} of {len(images)} images")
        theirs = variant.analysis.images
        if (
            theirs is not None
            and images is not None
            and (theirs.shape[1:] != images.shape[1:] or comparison.n_images > len(theirs))
        ):
            _refuse(mine, f"the variant's images {_describe(theirs)} do not match the base's")


# --------------------------------------------------------------------------- files


def _sha256_handle(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return _sha256_handle(handle)


def _canonical_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON text, without its own digest."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@contextmanager
def _open_plain_file(folder: Path, name: str) -> Iterator[tuple[BinaryIO, int]]:
    """Open ``folder/name`` for reading only if it is a regular file, not a link.

    Yields the binary handle and the file's size.
    """
    path = folder / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise AnalysisFileError(f"{path} is missing; the analysis is incomplete") from None
    except OSError as exc:
        raise AnalysisFileError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise AnalysisFileError(
            f"{path} is a link; a saved analysis is read only from plain files inside its folder"
        )
    if not stat.S_ISREG(info.st_mode):
        raise AnalysisFileError(f"{path} is not a plain file")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise AnalysisFileError(f"{path} cannot be opened: {exc.strerror or exc}") from None
    handle = os.fdopen(fd, "rb")
    with handle:
        opened = os.fstat(handle.fileno())
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise AnalysisFileError(f"{path} changed while it was opened; try again")
        yield handle, opened.st_size


#: Other files a saved folder may hold (the napari view record) are opened the same way.
open_plain_file = _open_plain_file


def _read_manifest_text(folder: Path) -> bytes:
    with _open_plain_file(folder, MANIFEST_NAME) as (handle, size):
        if size > MAX_MANIFEST_BYTES:
            raise AnalysisFileError(
                f"{folder / MANIFEST_NAME} has {size:,} bytes, more than the "
                f"{MAX_MANIFEST_BYTES:,} an analysis manifest can have; it is not ours"
            )
        return handle.read(MAX_MANIFEST_BYTES + 1)


def is_analysis_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a napari-topolens analysis manifest."""
    folder = Path(path)
    try:
        if not folder.is_dir():
            return False
        head = json.loads(_read_manifest_text(folder).decode("utf-8"))
    except (AnalysisFileError, OSError, ValueError, RecursionError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT_NAME


def _folder_argument(path: Any, caller: str) -> Path:
    """``path`` as a Path; a project error naming the argument for anything but a path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TopoLensError(
            f"{caller}: path must be a folder (str or pathlib.Path), got {type(path).__name__}"
        )
    return Path(path).expanduser()


def save_analysis(analysis: Any, path: str | os.PathLike) -> Path:
    """Write ``analysis`` to the directory ``path`` (created or atomically replaced).

    ``path`` may be new, an empty directory or a previously saved analysis; any
    other existing file or folder is refused rather than overwritten.
    """
    if not dataclasses.is_dataclass(analysis) or isinstance(analysis, type):
        raise TopoLensError(
            f"save_analysis: analysis must be an Analysis, got {type(analysis).__name__}"
        )
    target = _folder_argument(path, "save_analysis")
    if target.is_symlink():
        raise AnalysisFileError(f"{target} is a link; save the analysis to a plain folder")
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
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "files": {
                ARRAYS_NAME: {"sha256": _sha256(arrays_path), "bytes": arrays_path.stat().st_size}
            },
            "analysis": tree,
        }
        manifest["manifest_sha256"] = _canonical_digest(manifest)
        text = json.dumps(manifest, indent=1, allow_nan=False)
        with open(staging / MANIFEST_NAME, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
    except BaseException:
        _remove_tree(staging)
        if retired.exists() and not target.exists():
            os.replace(retired, target)  # put the good saved work back
        raise
    _remove_tree(retired)
    return target


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _read_manifest(folder: Path) -> dict:
    manifest_path = folder / MANIFEST_NAME
    if not folder.exists():
        raise AnalysisFileError(f"{folder} does not exist; give the folder of a saved analysis")
    if not folder.is_dir():
        raise AnalysisFileError(
            f"{folder} is a file, not a saved analysis; give the folder that holds {MANIFEST_NAME}"
        )
    if not os.path.lexists(manifest_path):
        raise AnalysisFileError(
            f"{folder} is not a saved napari-topolens analysis (it has no {MANIFEST_NAME})"
        )
    raw = _read_manifest_text(folder)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise AnalysisFileError(f"{manifest_path} is damaged: it is not UTF-8 text") from exc
    except RecursionError:
        raise AnalysisFileError(
            f"{manifest_path} is nested too deeply to be an analysis; it is not ours"
        ) from None
    except ValueError as exc:
        raise AnalysisFileError(
            f"{manifest_path} is damaged: it is not valid JSON ({exc})"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise AnalysisFileError(
            f"{manifest_path} is not a napari-topolens analysis (format {found!r:.60})"
        )
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise AnalysisFileError(f"{manifest_path} has no valid format version ({version!r:.40})")
    if version > FORMAT_VERSION:
        raise AnalysisFileError(
            f"{manifest_path} was written in format version {version}, newer than the "
            f"{FORMAT_VERSION} this napari-topolens reads; update napari-topolens"
        )
    if version == 1:
        raise AnalysisFileError(
            f"{manifest_path} was written by an earlier napari-topolens (format 1), whose "
            "analysis.json carries no checksum, so edits to it cannot be detected; "
            "recompute the analysis"
        )
    if version < 1:
        raise AnalysisFileError(f"{manifest_path} has an unknown format version {version}")
    recorded = manifest.get("manifest_sha256")
    try:
        actual = _canonical_digest(manifest)
    except (ValueError, RecursionError):
        actual = None
    if not isinstance(recorded, str) or recorded != actual:
        raise AnalysisFileError(
            f"{manifest_path} is damaged or was edited: its content does not match the "
            "checksum recorded when it was saved"
        )
    if "analysis" not in manifest:
        raise AnalysisFileError(f"{manifest_path} holds no analysis")
    return manifest


def _arrays_record(folder: Path, manifest: dict) -> tuple[str, int]:
    files = manifest.get("files")
    where = folder / MANIFEST_NAME
    if not isinstance(files, dict) or set(files) != {ARRAYS_NAME}:
        listed = sorted(map(str, files)) if isinstance(files, dict) else files
        raise AnalysisFileError(
            f"{where} must list exactly the file {ARRAYS_NAME}, not {listed!r:.80}; "
            "a saved analysis never refers to other files"
        )
    record = files[ARRAYS_NAME]
    digest = record.get("sha256") if isinstance(record, dict) else None
    size = record.get("bytes") if isinstance(record, dict) else None
    if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool):
        raise AnalysisFileError(f"{where} records no size and sha256 for {ARRAYS_NAME}")
    return digest, size


def _read_member(archive: zipfile.ZipFile, key: str, archive_bytes: int, where: str) -> np.ndarray:
    """One ``.npy`` member, its header checked against the bytes the archive holds."""
    from numpy.lib import format as npy

    try:
        info = archive.getinfo(f"{key}.npy")
    except KeyError:
        raise AnalysisFileError(
            f"{where} refers to array {key!r:.40}, which {ARRAYS_NAME} does not hold; "
            "the analysis is damaged"
        ) from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise AnalysisFileError(f"{where}: array {key!r} is compressed; napari-topolens never is")
    if info.file_size > archive_bytes or info.compress_size != info.file_size:
        raise AnalysisFileError(
            f"{where}: array {key!r} declares {info.file_size:,} bytes in an archive of "
            f"{archive_bytes:,}"
        )
    with archive.open(info) as member:
        version = npy.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(member)
        else:
            raise AnalysisFileError(f"{where}: array {key!r} has npy version {version}")
        if dtype.hasobject or dtype.kind not in _ARRAY_KINDS or dtype.fields is not None:
            raise AnalysisFileError(
                f"{where}: array {key!r} has dtype {dtype}; only numbers, booleans and text are read"
            )
        count = 1
        for extent in shape:
            count *= int(extent)
        nbytes = count * dtype.itemsize
        header = member.tell()
        if header + nbytes != info.file_size:
            raise AnalysisFileError(
                f"{where}: array {key!r} declares shape {tuple(shape)} of {dtype} "
                f"({nbytes:,} bytes) but holds {info.file_size - header:,}"
            )
        buffer = bytearray(nbytes)
        if typing.cast(io.BufferedIOBase, member).readinto(buffer) != nbytes or member.read(1):
            raise AnalysisFileError(f"{where}: array {key!r} is truncated")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def load_analysis(path: str | os.PathLike, *, expected: type | None = None) -> Any:
    """Read an analysis saved by :func:`save_analysis` (``Analysis.save``).

    Parameters
    ----------
    path : str or path
        The folder.
    expected : type, optional
        The class of the saved top object; :class:`Analysis` when omitted.

    Raises
    ------
    AnalysisFileError
        For a missing, foreign, damaged, edited or truncated file, links or files
        other than the two of the format, values that do not fit their fields, and
        a newer format version.
    """
    if expected is None:
        from .analysis import Analysis

        expected = Analysis
    elif not isinstance(expected, type):
        raise TopoLensError(f"load_analysis: expected must be a class, got {expected!r:.40}")
    folder = _folder_argument(path, "load_analysis")
    manifest = _read_manifest(folder)
    digest, size = _arrays_record(folder, manifest)
    where = str(folder / MANIFEST_NAME)
    arrays_path = folder / ARRAYS_NAME
    with _open_plain_file(folder, ARRAYS_NAME) as (handle, actual_size):
        if actual_size != size:
            raise AnalysisFileError(
                f"{arrays_path} is damaged or truncated: it has {actual_size} bytes, "
                f"{size} were saved"
            )
        if _sha256_handle(handle) != digest:
            raise AnalysisFileError(
                f"{arrays_path} is damaged: its sha256 differs from the one recorded when it was saved"
            )
        handle.seek(0)
        try:
            with zipfile.ZipFile(handle) as archive:
                arrays = _Arrays(lambda key: _read_member(archive, key, actual_size, where))
                result = from_tree(manifest["analysis"], arrays, where)
        except AnalysisFileError:
            raise
        except RecursionError:
            raise AnalysisFileError(f"{where} is nested too deeply; it is not ours") from None
        except MemoryError:
            raise AnalysisFileError(f"{arrays_path} holds arrays too large to load") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
            raise AnalysisFileError(f"{arrays_path} cannot be read: {exc}") from exc
    if not isinstance(result, expected):
        raise AnalysisFileError(
            f"{where} holds {_describe(result)}, not a saved {expected.__name__}"
        )
    if type(result).__name__ == "Analysis":  # with its variants, against each other
        try:
            _check_analysis(result, where)
        except AnalysisFileError:
            raise
        except Exception as exc:  # a value no check foresaw: still a refusal, not a crash
            raise AnalysisFileError(
                f"{where} holds an analysis that does not validate: {type(exc).__name__}: {exc}"
            ) from exc
    return result
