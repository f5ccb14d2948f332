"""The codec of saved results: any result dataclass as a tree of JSON values plus arrays.

Dataclasses are written generically (``dataclasses.fields`` recursion) under their
class name, so a new field of a result type needs no code here. Arrays and numpy
scalars go to an :class:`ArraySink` (the npz) and are referred to by key. Python
floats are written as JSON numbers (``repr``, which round-trips exactly); NaN and the
infinities, which JSON lacks, are written as ``{"__float__": "nan"}`` and the like.
Tuples, dicts with non-string keys and ``None`` are tagged so they come back as they
were.

Decoding rebuilds the tree checking every value against the type annotations of
the dataclass field that holds it (``store_types``); the domain checks of each
rebuilt object are passed in (:class:`DecodeChecks`), so this module knows no
result type.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AnalysisFileError
from .store_types import field_hints, lookup_class, register_dataclass, type_problem

__all__ = [
    "MAX_DEPTH",
    "NO_CHECKS",
    "ArraySink",
    "Arrays",
    "DecodeChecks",
    "from_tree",
    "to_tree",
]

#: Deepest nesting of the JSON tree (an Analysis needs about 12).
MAX_DEPTH = 64

# Tags of the JSON tree. A plain JSON object never appears untagged.
_T_ARRAY = "__array__"
_T_FLOAT = "__float__"
_T_TUPLE = "__tuple__"
_T_DICT = "__dict__"
_T_ITEMS = "__items__"
_T_DATACLASS = "__dataclass__"


def _no_values_check(owner: str, values: dict[str, Any], where: str) -> None:
    return None


def _no_object_check(obj: Any, where: str) -> None:
    return None


@dataclass(frozen=True)
class DecodeChecks:
    """Domain checks run on every dataclass the decoder rebuilds.

    ``values(owner, values, where)`` sees the decoded fields before the object is
    made; ``built(obj, where)`` sees the object. Either raises ``AnalysisFileError``.
    """

    values: Callable[[str, dict[str, Any], str], None] = _no_values_check
    built: Callable[[Any, str], None] = _no_object_check


#: Decoding with the type checks only.
NO_CHECKS = DecodeChecks()


# --------------------------------------------------------------------------- encode


class ArraySink:
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


def to_tree(value: Any, sink: ArraySink, path: str = "analysis") -> Any:
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


class Arrays:
    """Arrays by key, read from the npz only when the tree asks for them."""

    def __init__(self, get: Callable[[str], np.ndarray]) -> None:
        self._get = get
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = self._get(key)
        return self._cache[key]


def from_tree(
    node: Any,
    arrays: Mapping[str, np.ndarray] | Arrays,
    where: str,
    depth: int = 0,
    checks: DecodeChecks = NO_CHECKS,
) -> Any:
    """Decode a tree written by :func:`to_tree`; ``arrays[key]`` gives an array.

    ``where`` names the file, ``depth`` counts the nesting (at most :data:`MAX_DEPTH`)
    and ``checks`` are run on every dataclass rebuilt.
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
        return [from_tree(v, arrays, where, deeper, checks) for v in node]
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
        return tuple(from_tree(v, arrays, where, deeper, checks) for v in items)
    if _T_DICT in node:
        items = node[_T_DICT]
        if len(node) != 1 or not isinstance(items, dict):
            raise AnalysisFileError(f"{where} holds a dict whose payload is not an object")
        return {k: from_tree(v, arrays, where, deeper, checks) for k, v in items.items()}
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
            key = from_tree(k, arrays, where, deeper, checks)
            try:
                hash(key)
            except TypeError:
                raise AnalysisFileError(f"{where} holds a dict key that is not hashable") from None
            result[key] = from_tree(v, arrays, where, deeper, checks)
        return result
    if _T_DATACLASS in node:
        return _build_dataclass(node, arrays, where, deeper, checks)
    raise AnalysisFileError(f"{where} holds an untagged object: {sorted(map(str, node))!r:.80}")


def _build_dataclass(
    node: dict,
    arrays: Mapping[str, np.ndarray] | Arrays,
    where: str,
    depth: int,
    checks: DecodeChecks,
) -> Any:
    cls = lookup_class(node[_T_DATACLASS], where)
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
        value = from_tree(saved[f.name], arrays, where, depth, checks)
        problem = type_problem(value, hints.get(f.name, Any))
        if problem:
            raise AnalysisFileError(f"{where}: {cls.__name__}.{f.name} holds {problem}")
        values[f.name] = value
        (init_kwargs if f.init else late)[f.name] = value
    checks.values(cls.__name__, values, where)
    try:
        obj = cls(**init_kwargs)
        for name, value in late.items():
            object.__setattr__(obj, name, value)
        checks.built(obj, where)
    except AnalysisFileError:
        raise
    except Exception as exc:  # a result type's own validation, whatever it raises
        raise AnalysisFileError(
            f"{where} holds a {cls.__name__} that does not validate: {type(exc).__name__}: {exc}"
        ) from exc
    return obj
