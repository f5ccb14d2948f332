"""The views the canvas shows, by name: panels, their canvas layers, node colourings.

Allowed values as ``Literal`` types (``ColorBy``, ``Panel``, ``ViewName``), the canvas
layers of each panel and the layer group that draws each. Names and limits only.
"""

from __future__ import annotations

from typing import Literal, get_args

#: Node features the Mapper nodes can be coloured by.
ColorBy = Literal[
    "dominant_class",
    "predicted_class",
    "correct",
    "purity",
    "mean_lens",
    "size",
    "component",
    "community",
]
COLOR_BY: tuple[ColorBy, ...] = get_args(ColorBy)
#: Readable names of the colourings.
COLOR_BY_LABELS: dict[str, str] = {
    "dominant_class": "dominant class",
    "predicted_class": "predicted class",
    "correct": "correct share",
    "purity": "purity",
    "mean_lens": "lens (mean)",
    "size": "size (log)",
    "component": "component",
    "community": "community",
}
#: Colourings that need the model's per-image predictions.
NEEDS_PREDICTIONS = ("predicted_class", "correct")

#: The views the canvas shows one at a time.
Panel = Literal[
    "mapper", "diagram", "barcode", "flow", "blobs", "dendrogram", "layer_distances", "cka", "drift"
]
#: Views of a base analysis with variants only (offered when one is shown).
VARIANT_PANELS: tuple[Panel, ...] = ("drift",)
#: The views of every analysis.
PANELS: tuple[Panel, ...] = tuple(p for p in get_args(Panel) if p not in VARIANT_PANELS)
ALL_PANELS: tuple[Panel, ...] = get_args(Panel)
PANEL_TITLES: dict[str, str] = {
    "mapper": "Mapper graph",
    "diagram": "persistence diagram",
    "barcode": "barcode",
    "flow": "cluster flow",
    "blobs": "blob graph (PCA)",
    "dendrogram": "heatmap dendrogram",
    "layer_distances": "diagram distance",
    "cka": "linear CKA",
    "drift": "drift (variants)",
}

#: Every view name a layer made by the plugin can carry.
ViewName = Literal[
    "images",
    "variant_images",
    "variant_labels",
    "overlay",
    "gallery",
    "gallery_text",
    "panel_text",
    "panel_values",
    "panel_axes",
    "color_key",
    "mapper_edges",
    "mapper_nodes",
    "diagram",
    "barcode",
    "flow",
    "flow_clusters",
    "blob_hulls",
    "blob_points",
    "dendrogram_heatmap",
    "dendrogram_tree",
    "layer_distances",
    "cka",
    "drift_lines",
    "drift_points",
]
VIEW_NAMES: tuple[ViewName, ...] = get_args(ViewName)
#: The canvas layers of each panel (shown when the panel is picked, hidden otherwise).
PANEL_VIEWS: dict[str, tuple[str, ...]] = {
    "mapper": ("mapper_edges", "mapper_nodes"),
    "diagram": ("diagram",),
    "barcode": ("barcode",),
    "flow": ("flow", "flow_clusters"),
    "blobs": ("blob_hulls", "blob_points"),
    "dendrogram": ("dendrogram_heatmap", "dendrogram_tree"),
    "layer_distances": ("layer_distances",),
    "cka": ("cka",),
    "drift": ("drift_lines", "drift_points"),
}
#: Canvas layers drawn for one network layer (updated when another one is shown).
LAYER_VIEWS = tuple(
    view
    for panel, views in PANEL_VIEWS.items()
    # the matrices and the drift plot span all network layers
    if panel not in ("layer_distances", "cka", "drift")
    for view in views
)
#: Canvas layers drawn once per analysis.
ANALYSIS_VIEWS = ("layer_distances", "cka")
#: Canvas layers that hold the visible panel's frame, text and colour key (the key's
#: strip is shown when the panel has one: a continuous node colouring, a heatmap).
PANEL_LAYERS = ("panel_axes", "panel_text", "panel_values", "color_key")


#: Bars per homology dimension drawn in the barcode (the most persistent ones).
MAX_BARS = 60


#: Matrices up to this many layers print their values in the cells.
MAX_VALUE_LABELS = 8


def panel_group(panel: str) -> str:
    """The layer group that draws a panel."""
    return "matrices" if panel in ANALYSIS_VIEWS else panel


def group_of_view(view: str) -> str:
    """The layer group a canvas view layer belongs to."""
    if view in PANEL_LAYERS:
        return "frame"
    for panel, views in PANEL_VIEWS.items():
        if view in views:
            return panel_group(panel)
    raise KeyError(view)
