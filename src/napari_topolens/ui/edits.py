"""Interactive edits of shown views: node colouring, edge threshold, class fading.

Each edit changes the canvas layers in place and records the new setting in
``ui.state`` (which tells the explorer and the links).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import TopoLensError
from . import view_data as vd
from .canvas import canvas_for
from .layer_update import update_layer
from .links import links_for
from .state import ShownAnalysis, state_for

__all__ = ["highlight_class", "recolor_nodes", "set_edge_threshold"]


def _entry(viewer: Any, key: str, view: str) -> tuple[ShownAnalysis, Any]:
    entry = state_for(viewer).get(key)
    layer = entry.layers.get(view)
    if layer is None or not entry.network_layer:
        raise TopoLensError(
            f"no {view.replace('_', ' ')} layer of analysis {key!r} is shown; show the analysis first"
        )
    return entry, layer


def recolor_nodes(viewer: Any, key: str, color_by: str) -> None:
    """Colour the Mapper nodes of analysis ``key`` by a node feature (``view_data.COLOR_BY``)."""
    entry, layer = _entry(viewer, key, "mapper_nodes")
    colors, limits = vd.node_colors(entry.analysis, entry.network_layer, color_by)
    nodes = layer.features["node"].to_numpy()
    if len(nodes):
        layer.face_color = colors[nodes]
    key_layer = entry.layers.get("color_key")
    if key_layer is not None:
        update_layer(
            key_layer,
            vd.color_key_data(key, entry.network_layer, entry.slot, color_by, limits),
        )
        canvas_for(viewer).sync_visibility(entry)
    state_for(viewer).set(key, "color_by", color_by)
    if entry.faded_class is not None:  # a class search stays applied
        highlight_class(viewer, key, entry.faded_class)


def set_edge_threshold(viewer: Any, key: str, threshold: float) -> None:
    """Show only the Mapper edges whose Jaccard weight is at least ``threshold``."""
    entry, layer = _entry(viewer, key, "mapper_edges")
    item = vd.edge_layer_data(
        entry.analysis,
        entry.network_layer,
        key,
        entry.slot,
        entry.layout(),
        float(threshold),
    )
    update_layer(layer, item)

    links_for(viewer).refresh(layer)  # its own colours: the new edges
    state_for(viewer).set(key, "edge_threshold", float(threshold))


def highlight_class(viewer: Any, key: str, class_name: str | None) -> None:
    """Fade every Mapper node whose dominant class is not ``class_name`` (None: none faded)."""
    entry, layer = _entry(viewer, key, "mapper_nodes")
    names = entry.analysis.class_names
    if class_name is not None and names is not None and str(class_name) not in names:
        raise TopoLensError(f"class {class_name!r} is unknown; classes: {', '.join(names)}")
    colors = np.array(layer.face_color, dtype=np.float64)
    if len(colors):
        keep = (
            np.ones(len(colors), bool)
            if class_name is None
            else layer.features["dominant_class"].astype(str).to_numpy() == str(class_name)
        )
        colors[:, 3] = np.where(keep, 1.0, 0.15)
        layer.face_color = colors
    state_for(viewer).set(key, "faded_class", class_name)
