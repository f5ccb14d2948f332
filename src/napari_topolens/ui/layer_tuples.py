"""Where the canvas views sit and how their napari layer-data tuples are labelled.

Each view draws in the unit square of ``layout``, mapped onto its analysis's slot of
the canvas by ``scale``/``translate`` (:func:`slot_placement`), so a second analysis (a
variant of the same images) sits beside the first with the same layout.
``kwargs["metadata"]["topolens"]`` names the view and the analysis key, nothing more:
the state of what is shown lives in ``ui.state``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

LayerDataTuple = tuple[Any, dict[str, Any], str]

#: World side of a view's unit square in the canvas; slots sit side by side.
SIDE = 100.0
SLOT_GAP = 0.25 * SIDE


def slot_origin(slot: int) -> tuple[float, float]:
    """World top-left of an analysis's unit square in the canvas (slots side by side)."""
    return (0.0, slot * (SIDE + SLOT_GAP))


def slot_placement(slot: int) -> dict[str, Any]:
    """``scale``/``translate`` mapping the unit square onto a slot."""
    return {"scale": (SIDE, SIDE), "translate": slot_origin(slot)}


def topolens_meta(view: str, key: str, layer: str = "", **extra: Any) -> dict:
    """``metadata`` of a plugin layer: its view and analysis key (state lives in ``ui.state``)."""
    return {"topolens": {"view": view, "key": key, "layer": layer, **extra}}


def layer_name(title: str, key: str, layer: str = "") -> str:
    """A plugin layer's name: what it shows, the network layer and the analysis key."""
    return f"{title} · {layer} · {key}" if layer else f"{title} · {key}"


def text_layer(
    view: str, key: str, layer: str, slot: int, pos, text, color, size: float, name: str
) -> LayerDataTuple:
    """A Points layer of text only (one coloured string per position, no dots)."""
    features = pd.DataFrame({"text": list(text), "text_color": list(color)})
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 2)
    return (
        pos,
        {
            "name": name,
            "features": features,
            "size": 0.0,
            "face_color": "transparent",
            "border_color": "transparent",  # text only: no dot under the text
            "border_width": 0,
            "text": {
                "string": "{text}",
                "size": size,
                "color": {"feature": "text_color"},
                "anchor": "center",
            },
            "metadata": topolens_meta(view, key, layer),
            **slot_placement(slot),
        },
        "points",
    )
