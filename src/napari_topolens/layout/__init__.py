"""Pure geometry of the views: where every item of every view is drawn.

Plain numpy/networkx; never imports napari or Qt (an import-linter contract
enforces it). The napari views (``ui.view_data``) and the HTML report
(``report.figures``) both draw from here, so both show the same picture of an
analysis: the Mapper node positions in particular are computed once, in
``topology.analysis.analyze``, by :func:`mapper_layout` and saved with the analysis.

Every view draws in a unit square, rows down and columns right; the caller maps
that square onto its canvas.
"""

from __future__ import annotations

from .geometry import (
    DIAGRAM_AXES,
    INF_ROW,
    MATRIX_BOX,
    STAGE_LABELS,
    barcode_bars,
    barcode_rows,
    blob_unit_transform,
    diagram_coords,
    diagram_top,
    flow_band,
    flow_geometry,
    format_value,
    nice_ticks,
    short_label,
)
from .mapper import mapper_layout, mapper_layouts

__all__ = [
    "DIAGRAM_AXES",
    "INF_ROW",
    "MATRIX_BOX",
    "STAGE_LABELS",
    "barcode_bars",
    "barcode_rows",
    "blob_unit_transform",
    "diagram_coords",
    "diagram_top",
    "flow_band",
    "flow_geometry",
    "format_value",
    "mapper_layout",
    "mapper_layouts",
    "nice_ticks",
    "short_label",
]
