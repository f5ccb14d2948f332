"""The public face of the napari views: show, edit and find them (one import for callers).

The work is split by role:

- ``napari_topolens.layout`` -- pure geometry (Mapper layout, axes, ticks), shared
  with the HTML report;
- ``ui.view_data`` -- layer-data tuples from an analysis (pure);
- ``ui.state`` -- the one owner of what each shown analysis shows, with events;
- ``ui.canvas`` -- the topology canvas dock (its own camera; one view at a time);
- ``ui.links`` -- selection <-> pixels;
- ``ui.edits`` -- recolour, edge threshold, class fading;
- ``ui.show`` -- adding and updating the layers (at once or one per event-loop turn);
- ``ui.variants`` -- a base's variants beside it: linked, drift plot, most-moved images;
- ``ui.topology_maps`` -- every pixel's node: the map overlay, a click's node, drift maps
  (imported here, so a pixel click answers wherever the views are shown).
"""

from __future__ import annotations

from typing import Any

from ..layout.mapper import mapper_layout, mapper_layouts
from ..topology.results import Analysis
from .canvas import canvas_for, existing_canvas
from .edits import highlight_class, recolor_nodes, set_edge_threshold
from .show import (
    IncrementalShow,
    remove_analysis,
    show_analysis,
    show_analysis_incrementally,
)
from .show import watch_viewer as _watch_layers
from .state import viewer_showing
from .topology_maps import maps_for
from .variants import (
    show_variants,
    show_variants_incrementally,
    variant_views_for,
    watch_variants,
)
from .view_data import (
    COLOR_BY,
    COLOR_BY_LABELS,
    GALLERY_TILES,
    MAX_BARS,
    PANELS,
    VIEW_NAMES,
    LayerDataTuple,
    images_layer_data,
)

__all__ = [
    "COLOR_BY",
    "COLOR_BY_LABELS",
    "GALLERY_TILES",
    "MAX_BARS",
    "PANELS",
    "VIEW_NAMES",
    "IncrementalShow",
    "LayerDataTuple",
    "canvas_for",
    "find_layers",
    "highlight_class",
    "mapper_layout",
    "mapper_layouts",
    "maps_for",
    "reader_layer_data",
    "recolor_nodes",
    "remove_analysis",
    "saved_view_settings",
    "set_edge_threshold",
    "show_analysis",
    "show_analysis_incrementally",
    "show_variants",
    "show_variants_incrementally",
    "watch_viewer",
]


def watch_viewer(viewer: Any) -> None:
    """Show the analyses of layers added to ``viewer`` (the reader's path), their variants too."""
    _watch_layers(viewer)
    watch_variants(viewer)


def find_layers(viewer: Any, key: str | None = None, view: str | None = None) -> list[Any]:
    """Plugin layers of ``viewer`` and of its topology canvas, optionally of one key and/or view."""
    canvas = existing_canvas(viewer)
    layers = list(viewer.layers) + (list(canvas.model.layers) if canvas is not None else [])
    found = []
    for layer in layers:
        meta = layer.metadata.get("topolens") if isinstance(layer.metadata, dict) else None
        if not isinstance(meta, dict) or "view" not in meta:
            continue
        if key is not None and meta.get("key") != key:
            continue
        if view is not None and meta.get("view") != view:
            continue
        found.append(layer)
    return found


def reader_layer_data(
    analysis: Analysis,
    key: str,
    *,
    layer_name: str | None = None,
    color_by: str = "dominant_class",
    edge_threshold: float = 0.0,
    compare: str | None = None,
) -> list[LayerDataTuple]:
    """What the reader returns: the analysis's images, carrying the analysis and how to show it.

    When napari adds the layer, the viewer (see :func:`watch_viewer`) shows the
    views in the topology canvas from the saved analysis and its saved layouts;
    nothing is recomputed. An analysis with variants then shows them too (``compare``:
    the one beside it; default the first).
    """
    data, kwargs, kind = images_layer_data(analysis, key)
    kwargs["metadata"]["topolens"]["show"] = {
        "layer_name": layer_name,
        "color_by": color_by,
        "edge_threshold": float(edge_threshold),
        "variants": bool(getattr(analysis, "variants", None)),
        "compare": compare,
    }
    return [(data, kwargs, kind)]


def saved_view_settings(analysis: Analysis) -> dict[str, Any]:
    """How ``analysis`` is shown (network layer, view, colouring, threshold, compared variant)."""
    found = viewer_showing(analysis)  # in whichever viewer shows it, current or not
    if found is None:
        return {}
    viewer, state = found
    key = state.key_of(analysis)
    if key is None:
        return {}
    entry = state.get(key)
    settings: dict[str, Any] = {
        "layer": entry.network_layer,
        "panel": state.panel,
        "color_by": entry.color_by,
        "edge_threshold": float(entry.edge_threshold),
    }
    record = variant_views_for(viewer).bases.get(key)
    if record is not None and record.compared is not None:
        settings["compare"] = record.compared
    return settings
