"""Extraction options and their checks, shared by extraction, its cache and the callers
that check a run's options before any work."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import LayerError, TopoLensError

__all__ = ["DEFAULT_MAX_POSITIONS", "SAMPLING_MODES", "layer_list", "whole_number"]

SAMPLING_MODES = ("pooled", "random_position", "top_norm", "all_positions", "foreground")
#: Cap for ``all_positions`` when none is given (TopoAct's smaller published run).
DEFAULT_MAX_POSITIONS = 80_000


def whole_number(name: str, value: Any) -> int:
    """``value`` as an int if it is one (numpy integers too); a TopoLensError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TopoLensError(f"{name} must be a whole number, got {value!r:.40}")
    return int(value)


def layer_list(layers: Any) -> list[str]:
    """Layer names as a list without repeats; a LayerError for anything but names."""
    names = [layers] if isinstance(layers, str) else layers
    if not isinstance(names, Iterable) or isinstance(names, bytes):
        names = [names]
    names = list(names)
    if not all(isinstance(n, str) for n in names):
        raise LayerError(
            f"layers must be a layer name or a list of names (see list_layers), got {layers!r:.60}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise LayerError(f"layer(s) {', '.join(map(repr, repeated))} are asked for twice")
    return names
