"""The drift plot of a base analysis with variants: its layers, frame and text."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..layout import drift as drift_layout
from ..layout import geometry as geo
from ..topology.results import Analysis
from .layer_tuples import LayerDataTuple, layer_name, slot_placement, topolens_meta
from .palette import (
    BORDER_RGBA,
    DIM_TEXT_COLOR,
    EDGE_RGBA,
    TEXT_COLOR,
    UNKNOWN_RGBA,
    drift_colors,
    hex_color,
    per_item,
)

#: Point symbols of the variants in the drift plot (with their colours: told apart twice).
DRIFT_SYMBOLS = ("disc", "square", "diamond", "triangle_up", "triangle_down", "star", "cross")


def has_variants(analysis: Analysis) -> bool:
    return bool(getattr(analysis, "variants", None))


def drift_layer_data(analysis: Analysis, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
    """The drift plot of a base analysis with variants: lines and points, both plots.

    ``[]`` for an analysis without variants (a variant itself, another analysis).
    """

    if not has_variants(analysis):
        return []
    n_layers = len(analysis.layers)
    table = drift_layout.drift_table(analysis, drift_dim(analysis))
    geometry = drift_layout.drift_geometry(table, n_layers)
    points = geometry.points
    lines, line_rows = [], []
    for number, variant in enumerate(analysis.variants):
        for plot in drift_layout.DRIFT_PLOTS:
            mine = points[(points["variant_index"] == number) & (points["plot"] == plot)]
            mine = mine.sort_values("layer_index")
            if len(mine) >= 2:
                lines.append(mine[["row", "col"]].to_numpy(dtype=np.float64))
                line_rows.append((number, str(variant.name), plot))
    line_features = pd.DataFrame(line_rows, columns=["variant_index", "variant", "plot"])
    line_colors = drift_colors(line_features["variant_index"].to_numpy())
    point_colors = drift_colors(points["variant_index"].to_numpy()) if len(points) else EDGE_RGBA
    symbols = [DRIFT_SYMBOLS[int(i) % len(DRIFT_SYMBOLS)] for i in points["variant_index"]]
    features = points.drop(columns=["row", "col"]).reset_index(drop=True)
    return [
        (
            lines,
            {
                "name": layer_name("drift lines", key),
                "shape_type": "path",
                "features": line_features,
                "edge_color": per_item(line_colors, EDGE_RGBA),
                "edge_width": [0.006] * len(lines),
                "metadata": topolens_meta("drift_lines", key, layer),
                **slot_placement(slot),
            },
            "shapes",
        ),
        (
            points[["row", "col"]].to_numpy(dtype=np.float64).reshape(-1, 2),
            {
                "name": layer_name("drift points", key),
                "features": features,
                "size": 0.035,
                "symbol": symbols if symbols else "disc",
                "face_color": per_item(point_colors, UNKNOWN_RGBA),
                "border_color": per_item(np.tile(BORDER_RGBA, (len(points), 1)), BORDER_RGBA),
                "border_width": 0.12,
                "metadata": topolens_meta("drift_points", key, layer),
                **slot_placement(slot),
            },
            "points",
        ),
    ]


def drift_dim(analysis: Analysis) -> int:
    """The homology dimension the drift plot measures (H1 where the analysis has it)."""
    return min(int(analysis.config.max_dim), 1)


def drift_frame(analysis: Analysis, layer: str, add: Callable[..., None]) -> None:
    """The drift plot's axes, ticks, grid and the line of the layer the other views show."""
    table = drift_layout.drift_table(analysis, drift_dim(analysis))
    geometry = drift_layout.drift_geometry(table, len(analysis.layers))
    left, right = drift_layout.DRIFT_COLS
    for plot, (top, bottom) in drift_layout.DRIFT_PLOTS.items():
        add([[bottom, left], [bottom, right]], "x_axis")
        add([[top, left], [bottom, left]], "y_axis")
        ticks = geometry.distance_ticks if plot == "distance" else geometry.moved_ticks
        for tick in ticks:
            row = geometry.row_of(plot, float(tick))
            add([[row, left - 0.012], [row, left]], "tick")
            add([[row, left], [row, right]], "grid", rgba=(0.3, 0.3, 0.3, 1.0), width=0.0015)
        for col in geometry.layer_cols:
            add([[bottom, col], [bottom + 0.012, col]], "tick")
    if layer in analysis.layers:  # the network layer the other views show
        col = float(geometry.layer_cols[analysis.layers.index(layer)])
        rows = [r for pair in drift_layout.DRIFT_PLOTS.values() for r in pair]
        add(
            [[min(rows), col], [max(rows), col]],
            "current_layer",
            rgba=(0.75, 0.75, 0.75, 0.6),
            width=0.004,
        )


def drift_text(
    analysis: Analysis, layer: str, put: Callable[[float, float, str, str], None]
) -> str:
    """Legend, axis names and tick labels of the drift plot; returns its subtitle."""

    dim = drift_dim(analysis)
    table = drift_layout.drift_table(analysis, dim)
    geometry = drift_layout.drift_geometry(table, len(analysis.layers))
    left, right = drift_layout.DRIFT_COLS
    variants = list(analysis.variants)
    longest = max((len(str(v.name)) for v in variants), default=0)
    per_row = max(1, min(len(variants), 3 if longest <= 9 else 2))
    colors = drift_colors(np.arange(len(variants)))
    marks = {"disc": "●", "square": "■", "diamond": "◆", "triangle_up": "▲"}
    for number, variant in enumerate(variants):
        row, col = divmod(number, per_row)
        symbol = DRIFT_SYMBOLS[number % len(DRIFT_SYMBOLS)]
        put(
            0.03 + 0.045 * row,
            (col + 0.5) / per_row,
            f"{marks.get(symbol, '◆')} {geo.short_label(str(variant.name), 16)}",
            hex_color(colors[number]),
        )
    titles = {
        "distance": f"relative H{dim} distance (sliced W.)",
        "moved": "fraction of images that moved",
    }
    for plot, (top, bottom) in drift_layout.DRIFT_PLOTS.items():
        put(top - 0.03, (left + right) / 2, titles[plot], TEXT_COLOR)
        ticks = geometry.distance_ticks if plot == "distance" else geometry.moved_ticks[::2]
        for tick in ticks:
            put(
                geometry.row_of(plot, float(tick)),
                left - 0.065,
                geo.format_value(float(tick)),
                DIM_TEXT_COLOR,
            )
        for name, col in zip(analysis.layers, geometry.layer_cols):
            shade = TEXT_COLOR if name == layer else DIM_TEXT_COLOR
            put(bottom + 0.035, float(col), geo.short_label(name, 10), shade)
    return "grey line: the layer shown · click a point"
