"""The type system of saved results: result classes by name, and values against annotations.

A saved analysis names each dataclass by its class name (:func:`register_dataclass`
makes a class known) and the loader checks every value against the annotation of
the field that holds it (:func:`field_hints`, :func:`type_problem`), so a new field
of a result type is validated with no code of its own.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any

import numpy as np

from ..errors import AnalysisFileError

__all__ = [
    "ARRAY_KINDS",
    "describe",
    "field_hints",
    "lookup_class",
    "register_dataclass",
    "type_problem",
]

#: dtype kinds an array may have: bool, integers, floats, complex, unicode text
ARRAY_KINDS = "biufcU"

_REGISTRY: dict[str, type] = {}
_HINTS: dict[type, dict[str, Any]] = {}


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


def lookup_class(name: Any, where: str) -> type:
    """The registered result class called ``name``; a project error naming ``where`` otherwise."""
    if not isinstance(name, str):
        raise AnalysisFileError(f"{where} names a result type that is not a string: {name!r:.80}")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise AnalysisFileError(
            f"{where} holds a result of type {name!r:.80}, which this version of "
            "napari-topolens does not know; update napari-topolens to read it"
        )
    return cls


def field_hints(cls: type) -> dict[str, Any]:
    """The resolved type annotation of every field of a dataclass.

    Names of registered result classes resolve too, so a field may be annotated
    with a result type imported only under ``TYPE_CHECKING``. An annotation that
    does not resolve (yet: its class is not registered) accepts every value, and
    the hints are cached only once all of them resolved.
    """
    hints = _HINTS.get(cls)
    if hints is not None:
        return hints
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
        return hints
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
        return f"{describe(value)} where {' or '.join(_type_name(a) for a in args)} belongs"
    if origin in (list, tuple, dict):
        if not isinstance(value, origin):
            return f"{describe(value)} where a {origin.__name__} belongs"
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
            return f"{describe(value)} where an array belongs"
        if value.dtype.kind not in ARRAY_KINDS or value.dtype.fields is not None:
            return f"an array of dtype {value.dtype} (only numbers, booleans and text are kept)"
        return None
    if hint is bool:
        return (
            None
            if isinstance(value, (bool, np.bool_))
            else f"{describe(value)} where a bool belongs"
        )
    if hint is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return None
        return f"{describe(value)} where an int belongs"
    if hint is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)
        ):
            return None
        return f"{describe(value)} where a float belongs"
    if hint is str:
        return None if isinstance(value, str) else f"{describe(value)} where a str belongs"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return None
        return f"{describe(value)} where a {hint.__name__} belongs"
    return None


def describe(value: Any) -> str:
    """``value`` in a few words for a message: its type, and its value or shape."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return f"a {type(value).__name__}"
    if isinstance(value, np.ndarray):
        return f"an array {value.dtype}{list(value.shape)}"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return f"{type(value).__name__} {value!r:.40}"
    return f"a {type(value).__name__}"
