"""The visible panel's frame, axes and ticks (and the invisible box the camera fits)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..layout import geometry as geo
from ..topology.results import Analysis
from .drift_view import drift_frame, has_variants
from .layer_tuples import LayerDataTuple, layer_name, slot_placement, topolens_meta
from .palette import EDGE_RGBA, FRAME_RGBA, per_item
from .panel_text import SIDE_BY_SIDE_ROWS, side_by_side

#: The box every panel (titles and tick labels included) fits in: the camera frames it.
PANEL_BOX = ((-0.14, -0.02), (1.05, 1.1))
#: Width of the frame's lines, in the unit square's units, and the least on screen (px):
#: software OpenGL drops a line thinner than a pixel wherever it falls between pixel
#: centres (a laptop dock's slots are about 180 px wide: 0.003 is half a pixel there).
FRAME_WIDTH = 0.003
MIN_FRAME_PX = 1.0


def panel_axes_data(
    analysis: Analysis, layer: str, key: str, slot: int, panel: str
) -> LayerDataTuple:
    """The visible panel's frame, axes and ticks (and an invisible box the camera fits).

    A Vectors layer, one segment per line (a rectangle is four): putting new
    segments into it costs the main thread a few milliseconds, where a Shapes
    layer triangulates every item again (about 0.1 s per pick, per analysis).
    """
    starts: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    kinds: list[str] = []
    colors: list[tuple[float, float, float, float]] = []

    def add(coords, kind: str, shape: str = "line", rgba=FRAME_RGBA, width: float = 0.003) -> None:
        del width  # one width for the whole frame (a Vectors layer has one)
        points = np.asarray(coords, dtype=np.float64)
        if shape == "rectangle":
            (r0, c0), (r1, c1) = points
            points = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0], [r0, c0]])
        for a, b in itertools.pairwise(points):
            starts.append(a)
            steps.append(b - a)
            kinds.append(kind)
            colors.append(tuple(rgba))

    (r0, c0), (r1, c1) = PANEL_BOX
    if side_by_side(analysis, panel):
        r0 = SIDE_BY_SIDE_ROWS[0] - 0.045  # room for the title a line higher
    drift_elsewhere = panel == "drift" and not has_variants(analysis)
    if not drift_elsewhere:  # the drift plot is its base's: no frame for the others
        add([[r0, c0], [r1, c1]], "fit_box", "rectangle", (0.0, 0.0, 0.0, 0.0), 0.0)
        add([[0.0, 0.0], [1.0, 1.0]], "frame", "rectangle", (0.3, 0.3, 0.3, 1.0), 0.003)
    if panel == "drift" and not drift_elsewhere:
        drift_frame(analysis, layer, add)
    elif panel in ("diagram", "barcode"):
        pers = analysis[layer].persistence
        top = geo.diagram_top(pers.diagrams)
        if panel == "diagram":
            low, high = geo.DIAGRAM_AXES
            add([[high, low], [low, high]], "diagonal", rgba=(0.8, 0.8, 0.8, 1.0))
            add(
                [[geo.INF_ROW, low], [geo.INF_ROW, high]],
                "infinity",
                rgba=(0.6, 0.6, 0.6, 1.0),
                width=0.002,
            )
            add([[high, low], [high, high]], "birth_axis")
            add([[high, low], [low, low]], "death_axis")
            for tick in geo.nice_ticks(0.0, top, 5):
                frac = low + (high - low) * tick / top
                add([[high, frac], [high + 0.015, frac]], "tick")
                row = high - (high - low) * tick / top
                add([[row, low - 0.015], [row, low]], "tick")
        else:
            axis_row = geo.BARCODE_ROWS[1] + 0.01
            add([[axis_row, geo.BARCODE_COLS[0]], [axis_row, geo.BARCODE_COLS[1]]], "value_axis")
            for tick in geo.nice_ticks(0.0, top, 5):
                col = geo.barcode_value_col(float(tick), top)
                add([[axis_row, col], [axis_row + 0.015, col]], "tick")
    data = (
        np.stack([np.array(starts), np.array(steps)], axis=1)
        if starts
        else np.zeros((0, 2, 2), dtype=np.float64)
    )
    return (
        data,
        {
            "name": layer_name("view frame", key),
            "features": pd.DataFrame({"what": kinds}),
            "edge_color": per_item(np.array(colors), EDGE_RGBA),  # frames never dim beneath
            "edge_width": FRAME_WIDTH,
            "vector_style": "line",
            "metadata": topolens_meta("panel_axes", key, layer),
            **slot_placement(slot),
        },
        "vectors",
    )
