"""Colours of the views: the class palette, the colourmaps, the frame and text colours.

A colour-blind-aware categorical palette (Okabe-Ito, then Tableau) for classes and
clusters; unknown (-1) is grey. Selection (white) and pixel hits (magenta) use
colours outside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PALETTE = np.array(
    [
        (0.902, 0.624, 0.000),
        (0.337, 0.706, 0.914),
        (0.000, 0.620, 0.451),
        (0.941, 0.894, 0.259),
        (0.000, 0.447, 0.698),
        (0.835, 0.369, 0.000),
        (0.800, 0.475, 0.655),
        (0.600, 0.600, 0.950),
        (0.737, 0.741, 0.133),
        (0.090, 0.745, 0.812),
        (0.549, 0.337, 0.294),
        (0.580, 0.404, 0.741),
        (0.173, 0.627, 0.173),
        (0.839, 0.153, 0.157),
        (1.000, 0.733, 0.471),
        (0.682, 0.780, 0.910),
        (0.596, 0.875, 0.541),
        (1.000, 0.596, 0.588),
        (0.769, 0.612, 0.580),
        (0.500, 0.500, 0.300),
    ]
)
UNKNOWN_RGB = np.array([0.55, 0.55, 0.55])
SELECTED_RGBA = np.array([1.0, 1.0, 1.0, 1.0])
HIT_RGBA = np.array([1.0, 0.0, 1.0, 1.0])
DIM_COLORS = np.array([(0.337, 0.706, 0.914), (0.902, 0.624, 0.000), (0.0, 0.62, 0.451)])
BORDER_RGBA = np.array([0.1, 0.1, 0.1, 1.0])
UNKNOWN_RGBA = np.append(UNKNOWN_RGB, 1.0)
EDGE_RGBA = np.array([0.85, 0.85, 0.85, 1.0])
FRAME_RGBA = (0.45, 0.45, 0.45, 1.0)
#: Text of the panels: titles and axis names, and the dimmer ticks and notes.
TEXT_COLOR, DIM_TEXT_COLOR = "white", "#bbbbbb"


def categorical_colors(codes: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """RGBA per code from the palette (code -1 and below: grey)."""
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    rgb = np.where((codes >= 0)[:, None], PALETTE[np.maximum(codes, 0) % len(PALETTE)], UNKNOWN_RGB)
    return np.column_stack([rgb, np.full(len(codes), alpha)])


def colormap_for(color_by: str) -> Any:
    """The napari colormap of a continuous colouring."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    if color_by == "correct":  # red = the model is wrong there, green = right
        return Colormap(
            colors=[(0.839, 0.153, 0.157, 1.0), (0.95, 0.9, 0.3, 1.0), (0.0, 0.62, 0.451, 1.0)],
            name="topolens_correct",
        )
    return ensure_colormap("viridis")


def continuous_colors(
    values: np.ndarray, color_by: str = "purity", limits: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """RGBA per value through the colouring's colormap and the (low, high) it spans (nan: grey)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    out = np.tile(UNKNOWN_RGBA, (len(values), 1))
    if limits is None:
        limits = (
            (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0, 1)
        )
    lo, hi = limits
    if hi <= lo:
        hi = lo + 1.0
    if finite.any():
        scaled = np.clip((values[finite] - lo) / (hi - lo), 0.0, 1.0)
        out[finite] = colormap_for(color_by).map(scaled)
    return out, (float(lo), float(hi))


def per_item(values: Any, fallback: Any) -> Any:
    """Per-item colours/sizes, or one ``fallback`` for a layer with no items.

    napari rejects an empty ``(0, 4)`` colour array, so a view with no items (a
    Mapper graph with no nodes, no H1 bars) gets one colour, kept as the default.
    """
    return values if len(values) else fallback


def drift_colors(variant_index: np.ndarray) -> np.ndarray:
    """RGBA of each variant's line and points in the drift plot."""
    return categorical_colors(np.asarray(variant_index, dtype=np.int64))


def hex_color(rgba: Any) -> str:
    r, g, b = (round(255 * float(v)) for v in list(rgba)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"
