"""The colour key of the visible panel: a titled strip at the slot's edge.

The Mapper graph has one for a continuous node colouring (categorical ones: the
canvas's class legend says them), every heatmap has one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..topology.results import Analysis
from .layer_tuples import SIDE, LayerDataTuple, layer_name, slot_origin, topolens_meta
from .mapper_nodes import analysis_predictions, node_colors
from .palette import colormap_for
from .panels import ANALYSIS_VIEWS, COLOR_BY, NEEDS_PREDICTIONS

#: The colour key strip: rows and columns of the unit square it covers (its title and
#: end values are panel text above and below it, so each slot's key names itself).
KEY_ROWS, KEY_COLS = (0.16, 0.84), (0.955, 0.98)
_KEY_STEPS = 64
#: Short titles of the colour keys (a key sits in a narrow column at the slot's edge).
KEY_TITLES: dict[str, str] = {
    "correct": "correct",
    "purity": "purity",
    "mean_lens": "lens",
    "size": "log10 size",
    "cka": "CKA",
    "dendrogram": "distance",
}


def panel_key(
    analysis: Analysis, layer: str, panel: str, color_by: str = "dominant_class"
) -> tuple[str, Any, tuple[float, float]] | None:
    """The colour key of a panel, ``(title, colormap, (low, high))``, or None when it has none.

    The Mapper graph has one for a continuous node colouring (categorical ones: the
    canvas's class legend says them), every heatmap has one.
    """
    if panel == "mapper":
        if color_by not in COLOR_BY or (
            color_by in NEEDS_PREDICTIONS and analysis_predictions(analysis) is None
        ):
            return None
        _colors, limits = node_colors(analysis, layer, color_by)
        if limits is None:
            return None
        return KEY_TITLES.get(color_by, color_by), colormap_for(color_by), limits
    if panel in ANALYSIS_VIEWS:
        from napari.utils.colormaps import ensure_colormap

        if panel == "cka":
            return KEY_TITLES["cka"], ensure_colormap("viridis"), (0.0, 1.0)
        matrix = np.asarray(analysis.layer_distances[analysis.config.layer_distance], float)
        finite = matrix[np.isfinite(matrix)]
        hi = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        kind = "".join(word[0] for word in analysis.config.layer_distance.split("_")).upper()
        return f"{kind} dist.", ensure_colormap("magma"), (0.0, hi)
    if panel == "dendrogram":
        from napari.utils.colormaps import ensure_colormap

        distances = np.asarray(analysis[layer].dendrogram.distances, dtype=np.float64)
        hi = float(distances.max()) if distances.size and distances.max() > 0 else 1.0
        return KEY_TITLES["dendrogram"], ensure_colormap("magma"), (0.0, hi)
    return None


def panel_key_data(
    analysis: Analysis,
    layer: str,
    key: str,
    slot: int,
    panel: str,
    color_by: str = "dominant_class",
) -> LayerDataTuple:
    """The colour key strip of the visible panel (hidden when it has no key)."""
    found = panel_key(analysis, layer, panel, color_by)
    if found is None:
        return _key_strip(key, layer, slot, "no key", "viridis", None, color_by)
    title, cmap, limits = found
    return _key_strip(key, layer, slot, title, cmap, limits, color_by)


def color_key_data(
    key: str, layer: str, slot: int, color_by: str, limits: tuple[float, float] | None
) -> LayerDataTuple:
    """The Mapper colouring's key strip (hidden for a categorical colouring)."""
    return _key_strip(
        key,
        layer,
        slot,
        KEY_TITLES.get(color_by, color_by),
        colormap_for(color_by),
        limits,
        color_by,
    )


def _key_strip(
    key: str,
    layer: str,
    slot: int,
    title: str,
    cmap: Any,
    limits: tuple[float, float] | None,
    color_by: str,
) -> LayerDataTuple:
    lo, hi = limits if limits is not None else (0.0, 1.0)
    data = np.linspace(hi, lo, _KEY_STEPS, dtype=np.float32)[:, None]
    pixel_rows = (KEY_ROWS[1] - KEY_ROWS[0]) * SIDE / _KEY_STEPS
    width = (KEY_COLS[1] - KEY_COLS[0]) * SIDE
    origin = slot_origin(slot)
    return (
        data,
        {
            "name": layer_name(f"colour key: {title}", key, layer),
            "colormap": cmap,
            "contrast_limits": (lo, hi if hi > lo else lo + 1.0),
            "interpolation2d": "nearest",
            "scale": (pixel_rows, width),
            "translate": (
                origin[0] + KEY_ROWS[0] * SIDE + pixel_rows / 2,
                origin[1] + KEY_COLS[0] * SIDE + width / 2,
            ),
            "visible": limits is not None,
            "metadata": topolens_meta(
                "color_key",
                key,
                layer,
                color_by=color_by,
                continuous=limits is not None,
                title=title,
            ),
        },
        "image",
    )
