"""Layer data of the views: pure functions from an analysis to napari layer-data tuples.

Each builder returns ``(data, kwargs, layer_type)`` tuples for the topology
canvas (``ui.canvas``): every view draws in the unit square of ``layout``,
mapped onto the analysis's slot of the canvas by ``scale``/``translate``
(:func:`slot_placement`), so a second analysis (a variant of the same images)
sits beside the first with the same layout. Only one view (a *panel*) is visible
at a time; the text and frame layers hold the visible panel's titles, ticks and
labels (:func:`panel_text_data`, :func:`panel_axes_data`).

``kwargs["metadata"]["topolens"]`` names the view and the analysis key, nothing
more: the state of what is shown lives in ``ui.state``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from ..errors import TopoLensError
from ..label_sources import labels_match_predictions
from ..layout import geometry as geo

__all__ = [
    "COLOR_BY",
    "GALLERY_TILES",
    "MAX_BARS",
    "PANELS",
    "PANEL_TITLES",
    "PANEL_VIEWS",
    "SIDE",
    "VIEW_NAMES",
    "ColorBy",
    "LayerDataTuple",
    "Panel",
    "ViewName",
    "categorical_colors",
    "class_name",
    "gallery_mosaic",
    "member_images",
    "node_colors",
    "overlay_for_members",
    "slot_origin",
    "slot_placement",
]

LayerDataTuple = tuple[Any, dict[str, Any], str]

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

#: World side of a view's unit square in the canvas; slots sit side by side.
SIDE = 100.0
SLOT_GAP = 0.25 * SIDE
#: Bars per homology dimension drawn in the barcode (the most persistent ones).
MAX_BARS = 60
#: Images tiled in the selection gallery.
GALLERY_TILES = 16
#: Matrices up to this many layers print their values in the cells.
MAX_VALUE_LABELS = 8

# A colour-blind-aware categorical palette (Okabe-Ito, then Tableau) for classes and
# clusters; unknown (-1) is grey. Selection (white) and pixel hits (magenta) use
# colours outside it.
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
_DIM_COLORS = np.array([(0.337, 0.706, 0.914), (0.902, 0.624, 0.000), (0.0, 0.62, 0.451)])
_BORDER = np.array([0.1, 0.1, 0.1, 1.0])
_UNKNOWN_RGBA = np.append(UNKNOWN_RGB, 1.0)
_EDGE_RGBA = np.array([0.85, 0.85, 0.85, 1.0])
_FRAME_RGBA = (0.45, 0.45, 0.45, 1.0)


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
    out = np.tile(_UNKNOWN_RGBA, (len(values), 1))
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


def class_name(code: int, class_names: Sequence[str] | None) -> str:
    if code < 0:
        return "unknown"
    if class_names is not None and code < len(class_names):
        return str(class_names[code])
    return str(code)


def slot_origin(slot: int) -> tuple[float, float]:
    """World top-left of an analysis's unit square in the canvas (slots side by side)."""
    return (0.0, slot * (SIDE + SLOT_GAP))


def slot_placement(slot: int) -> dict[str, Any]:
    """``scale``/``translate`` mapping the unit square onto a slot."""
    return {"scale": (SIDE, SIDE), "translate": slot_origin(slot)}


def topolens_meta(view: str, key: str, layer: str = "", **extra: Any) -> dict:
    """``metadata`` of a plugin layer: its view and analysis key (state lives in ``ui.state``)."""
    return {"topolens": {"view": view, "key": key, "layer": layer, **extra}}


def _name(title: str, key: str, layer: str = "") -> str:
    return f"{title} · {layer} · {key}" if layer else f"{title} · {key}"


#: Point size of a panel's titles, axis names and ticks (shrunk down to
#: ``MIN_PANEL_TEXT_SIZE`` by the canvas when slots sit side by side).
PANEL_TEXT_SIZE = 10.0
MIN_PANEL_TEXT_SIZE = 7.0
#: Screen pixels per character of napari text, per point of size (measured: about
#: 0.72 em per character, 96/72 pixels per point).
TEXT_PX_PER_CHAR_POINT = 0.96


def _text_layer(
    view: str, key: str, layer: str, slot: int, pos, text, color, size: float, name: str
) -> LayerDataTuple:
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


# --------------------------------------------------------------------------- mapper


def _most_common(codes: np.ndarray) -> int:
    """The most frequent of non-negative codes (the smallest on ties), sized by the codes
    present rather than by their largest value (``np.bincount`` would be)."""
    values, counts = np.unique(np.asarray(codes, dtype=np.int64), return_counts=True)
    return int(values[np.argmax(counts)])


def node_predicted_class(analysis: Any, result: Any, predictions: np.ndarray) -> np.ndarray:
    """Most frequent predicted class among each node's member images (-1: none known)."""
    graph = result.mapper
    per_point = np.asarray(predictions, dtype=np.int64)[np.asarray(result.cloud.image_index)]
    out = np.full(graph.n_nodes, -1, dtype=np.int64)
    for node in range(graph.n_nodes):
        known = per_point[graph.node_members(node)]
        known = known[known >= 0]
        if known.size:
            out[node] = _most_common(known)
    return out


def node_correct_share(result: Any, predictions: np.ndarray) -> np.ndarray:
    """Share of each node's members whose image is classified correctly (nan: unknown)."""
    graph = result.mapper
    predicted = np.asarray(predictions, dtype=np.int64)[np.asarray(result.cloud.image_index)]
    truth = np.asarray(result.point_labels, dtype=np.int64)
    out = np.full(graph.n_nodes, np.nan)
    for node in range(graph.n_nodes):
        members = graph.node_members(node)
        known = (predicted[members] >= 0) & (truth[members] >= 0)
        if known.any():
            out[node] = float(np.mean(predicted[members][known] == truth[members][known]))
    return out


def analysis_predictions(analysis: Any) -> np.ndarray | None:
    """The per-image predicted classes of the analysis (``analysis.predictions``), if any."""
    predictions = getattr(analysis, "predictions", None)
    if predictions is None:
        return None
    return np.asarray(predictions, dtype=np.int64).reshape(-1)


def node_colors(
    analysis: Any, layer: str, color_by: str
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """RGBA per Mapper node for a colouring and, for continuous ones, the value range."""
    if color_by not in COLOR_BY:
        raise TopoLensError(
            f"cannot colour nodes by {color_by!r}; choose one of {', '.join(COLOR_BY)}"
        )
    result = analysis[layer]
    graph = result.mapper
    if color_by in NEEDS_PREDICTIONS:
        predictions = analysis_predictions(analysis)
        if predictions is None:
            raise TopoLensError(
                f"colouring by {COLOR_BY_LABELS[color_by]} needs the model's predictions, "
                "which this analysis does not hold; run the analysis with the model"
            )
        if color_by == "predicted_class":
            return categorical_colors(node_predicted_class(analysis, result, predictions)), None
        if not labels_match_predictions(analysis.provenance):
            raise TopoLensError(
                "the labels of this analysis are text numbered by their own names, not the "
                "model's classes, so the correct share is unknown; give the model's class names"
            )
        return continuous_colors(node_correct_share(result, predictions), "correct", (0.0, 1.0))
    if color_by in ("dominant_class", "component", "community"):
        return categorical_colors(np.asarray(getattr(graph, color_by))), None
    values = np.asarray(getattr(graph, color_by), dtype=np.float64)
    if color_by == "size":
        values = np.log10(np.maximum(values, 1))
    if color_by == "purity":
        return continuous_colors(values, color_by, (0.0, 1.0))
    return continuous_colors(values, color_by)


def node_sizes(graph: Any) -> np.ndarray:
    """Unit-square diameters growing with the square root of the member count."""
    size = np.asarray(graph.size, dtype=np.float64)
    top = size.max() if len(size) else 1.0
    crowd = max(1.0, math.sqrt(max(graph.n_nodes, 1) / 30.0))
    return (0.018 + 0.05 * np.sqrt(size / top)) / crowd


def edge_widths(weight: np.ndarray, n_nodes: int) -> np.ndarray:
    """Unit-square widths growing with the Jaccard weight."""
    crowd = max(1.0, math.sqrt(max(n_nodes, 1) / 30.0))
    return (0.002 + 0.012 * np.asarray(weight, dtype=np.float64)) / crowd


def node_features(analysis: Any, layer: str, layout: np.ndarray) -> pd.DataFrame:
    result = analysis[layer]
    graph = result.mapper
    names = analysis.class_names
    table = pd.DataFrame(
        {
            "node": np.arange(graph.n_nodes, dtype=np.int64),
            "node_id": list(graph.node_ids),
            "size": np.asarray(graph.size, dtype=np.int64),
            "purity": np.asarray(graph.purity, dtype=np.float64),
            "dominant_class": [class_name(int(c), names) for c in graph.dominant_class],
            "mean_lens": np.asarray(graph.mean_lens, dtype=np.float64),
            "component": np.asarray(graph.component, dtype=np.int64),
            "community": np.asarray(graph.community, dtype=np.int64),
            "x": layout[:, 1] if len(layout) else np.zeros(0),
            "y": layout[:, 0] if len(layout) else np.zeros(0),
        }
    )
    predictions = analysis_predictions(analysis)
    if predictions is not None and graph.n_nodes:
        match = labels_match_predictions(analysis.provenance)  # else codes of unrelated names
        table["predicted_class"] = [
            class_name(int(c), names if match else None)
            for c in node_predicted_class(analysis, result, predictions)
        ]
        table["correct_share"] = (
            node_correct_share(result, predictions) if match else np.full(graph.n_nodes, np.nan)
        )
    return table


def mapper_layer_data(
    analysis: Any,
    layer: str,
    key: str,
    slot: int,
    layout: np.ndarray,
    *,
    color_by: str = "dominant_class",
    edge_threshold: float = 0.0,
) -> list[LayerDataTuple]:
    """Mapper edges (Shapes lines) and nodes (Points) of one layer (its colour key: the
    frame's, :func:`panel_key_data`)."""
    graph = analysis[layer].mapper
    colors, _limits = node_colors(analysis, layer, color_by)
    nodes = (
        np.asarray(layout, dtype=np.float64).reshape(-1, 2).copy(),
        {
            "name": _name("mapper nodes", key, layer),
            "features": node_features(analysis, layer, layout),
            "size": per_item(node_sizes(graph), 0.05),
            "face_color": per_item(colors, _UNKNOWN_RGBA),
            "border_color": per_item(np.tile(_BORDER, (graph.n_nodes, 1)), _BORDER),
            "border_width": 0.08,
            "metadata": topolens_meta("mapper_nodes", key, layer),
            **slot_placement(slot),
        },
        "points",
    )
    return [
        edge_layer_data(analysis, layer, key, slot, layout, edge_threshold),
        nodes,
    ]


def edge_layer_data(
    analysis: Any, layer: str, key: str, slot: int, layout: np.ndarray, threshold: float
) -> LayerDataTuple:
    """The Mapper edges at least ``threshold`` Jaccard-heavy."""
    graph = analysis[layer].mapper
    idx_all = np.asarray(graph.edges, dtype=np.int64).reshape(-1, 2)
    weight_all = np.asarray(graph.edge_weight, dtype=np.float64)
    keep = weight_all >= threshold
    idx, weight = idx_all[keep], weight_all[keep]
    lines = [np.array([layout[a], layout[b]]) for a, b in idx]
    features = pd.DataFrame(
        {
            "edge": np.flatnonzero(keep).astype(np.int64),
            "source": idx[:, 0],
            "target": idx[:, 1],
            "jaccard": weight,
        }
    )
    alpha = 0.45 + 0.5 * weight
    colors = np.column_stack([np.full((len(weight), 3), 0.8), alpha]) if len(weight) else _EDGE_RGBA
    return (
        lines,
        {
            "name": _name("mapper edges", key, layer),
            "shape_type": "line",
            "features": features,
            "edge_width": list(edge_widths(weight, graph.n_nodes)),
            "edge_color": colors,
            "metadata": topolens_meta("mapper_edges", key, layer),
            **slot_placement(slot),
        },
        "shapes",
    )


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
    analysis: Any, layer: str, panel: str, color_by: str = "dominant_class"
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
    analysis: Any, layer: str, key: str, slot: int, panel: str, color_by: str = "dominant_class"
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
            "name": _name(f"colour key: {title}", key, layer),
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


# --------------------------------------------------------------------------- persistence


def diagram_layer_data(analysis: Any, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
    """Persistence diagram: one point per bar of every dimension."""
    pers = analysis[layer].persistence
    top = geo.diagram_top(pers.diagrams)
    dims, bars, births, deaths = [], [], [], []
    for dim, diagram in enumerate(pers.diagrams):
        diagram = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
        dims.append(np.full(len(diagram), dim))
        bars.append(np.arange(len(diagram)))
        births.append(diagram[:, 0])
        deaths.append(diagram[:, 1])
    dim_a = np.concatenate(dims).astype(np.int64)
    bar_a = np.concatenate(bars).astype(np.int64)
    birth, death = np.concatenate(births), np.concatenate(deaths)
    features = pd.DataFrame(
        {"dim": dim_a, "bar": bar_a, "birth": birth, "death": death, "persistence": death - birth}
    )
    colors = np.column_stack([_DIM_COLORS[np.minimum(dim_a, 2)], np.full(len(dim_a), 0.85)])
    return [
        (
            geo.diagram_coords(birth, death, top),
            {
                "name": _name("persistence diagram", key, layer),
                "features": features,
                "size": 0.02,
                "face_color": per_item(colors, _UNKNOWN_RGBA),
                "border_color": per_item(np.tile(_BORDER, (len(dim_a), 1)), _BORDER),
                "border_width": 0.08,
                "metadata": topolens_meta("diagram", key, layer),
                **slot_placement(slot),
            },
            "points",
        )
    ]


def barcode_layer_data(analysis: Any, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
    """Barcode: one Shapes line per shown bar, H0 above H1, longest first."""
    pers = analysis[layer].persistence
    top = geo.diagram_top(pers.diagrams)
    table = geo.barcode_bars(pers, MAX_BARS)
    n = len(table)
    dims = table["dim"].to_numpy().astype(np.int64)
    rows, pitch = geo.barcode_rows(dims)
    col0, col1 = geo.barcode_cols(table["birth"].to_numpy(), table["death"].to_numpy(), top)
    lines = [np.array([[r, a], [r, b]]) for r, a, b in zip(rows, col0, col1)]
    width = float(min(0.7 * pitch, 0.012))
    return [
        (
            lines,
            {
                "name": _name("barcode", key, layer),
                "shape_type": "line",
                "features": table,
                "edge_width": [width] * n,
                "edge_color": np.column_stack([_DIM_COLORS[np.minimum(dims, 2)], np.ones(n)])
                if n
                else _EDGE_RGBA,
                "metadata": topolens_meta("barcode", key, layer),
                **slot_placement(slot),
            },
            "shapes",
        )
    ]


# --------------------------------------------------------------------------- matrices


def matrix_title(analysis: Any, view: str) -> str:
    if view == "cka":
        return "linear CKA between layers"
    kind = analysis.config.layer_distance.replace("_", " ")
    return f"H{analysis.config.distance_dim} {kind} distance between layers"


def matrix_layer_data(analysis: Any, key: str, slot: int) -> list[LayerDataTuple]:
    """Layer x layer diagram-distance and linear-CKA heatmaps (with napari colour bars)."""
    kind = analysis.config.layer_distance
    n = len(analysis.layers)
    top, left, side = geo.MATRIX_BOX
    pixel = side / max(n, 1) * SIDE
    origin = slot_origin(slot)
    out: list[LayerDataTuple] = []
    for view, matrix_key, cmap in (("layer_distances", kind, "magma"), ("cka", "cka", "viridis")):
        matrix = np.asarray(analysis.layer_distances[matrix_key], dtype=np.float32)
        finite = matrix[np.isfinite(matrix)]
        if view == "cka":
            limits = (0.0, 1.0)
        else:
            hi = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            limits = (0.0, hi)
        out.append(
            (
                np.nan_to_num(matrix, nan=0.0),
                {
                    "name": _name(matrix_title(analysis, view), key),
                    "colormap": cmap,
                    "contrast_limits": limits,
                    "interpolation2d": "nearest",
                    "scale": (pixel, pixel),
                    "translate": (
                        origin[0] + top * SIDE + pixel / 2,
                        origin[1] + left * SIDE + pixel / 2,
                    ),
                    "metadata": topolens_meta(view, key, "", kind=matrix_key),
                },
                "image",
            )
        )
    return out


# --------------------------------------------------------------------------- HOLE views


def flow_layer_data(analysis: Any, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
    """Cluster flow: Sankey bands (polygons) and cluster blocks (rectangles)."""
    result = analysis[layer]
    flow = result.flow
    memberships = np.asarray(flow.memberships)
    labels = np.asarray(result.point_labels)
    blocks, cols, width = geo.flow_geometry(flow)
    per_point = {
        (s, c): h / max(int(np.sum(memberships[s] == c)), 1) for (s, c), (_r, h) in blocks.items()
    }
    out_cursor = {k: v[0] for k, v in blocks.items()}
    in_cursor = dict(out_cursor)
    bands, rows, band_colors = [], [], []
    flows = np.asarray(flow.flows, dtype=np.int64).reshape(-1, 4)
    order = np.lexsort((flows[:, 2], flows[:, 1], flows[:, 0])) if len(flows) else np.zeros(0, int)
    for f in order:
        s, a, b, count = (int(v) for v in flows[f])
        h0, h1 = count * per_point[(s, a)], count * per_point[(s + 1, b)]
        t0, t1 = out_cursor[(s, a)], in_cursor[(s + 1, b)]
        out_cursor[(s, a)] += h0
        in_cursor[(s + 1, b)] += h1
        bands.append(geo.flow_band(cols[s] + width, cols[s + 1], t0, t0 + h0, t1, t1 + h1))
        inside = (memberships[s] == a) & (memberships[s + 1] == b)
        known = labels[inside]
        known = known[known >= 0]
        band_colors.append(_most_common(known) if known.size else -1)
        rows.append((s, a, b, count))
    band_features = pd.DataFrame(rows, columns=["stage", "cluster", "next_cluster", "count"])
    band_rgba = categorical_colors(np.array(band_colors, np.int64), 0.55) if rows else _EDGE_RGBA
    rects, block_rows, block_colors = [], [], []
    for (s, c), (row, h) in sorted(blocks.items()):
        rects.append(np.array([[row, cols[s]], [row + max(h, 0.002), cols[s] + width]]))
        block_rows.append((s, flow.stage_names[s], c, int(np.sum(memberships[s] == c))))
        block_colors.append((0.35, 0.35, 0.35, 1.0) if c < 0 else (0.92, 0.92, 0.92, 1.0))
    block_features = pd.DataFrame(block_rows, columns=["stage", "stage_name", "cluster", "count"])
    return [
        (
            bands,
            {
                "name": _name("cluster flow", key, layer),
                "shape_type": "polygon",
                "features": band_features,
                "face_color": band_rgba,
                "edge_color": band_rgba,
                "edge_width": [0.0] * len(bands),
                "metadata": topolens_meta("flow", key, layer),
                **slot_placement(slot),
            },
            "shapes",
        ),
        (
            rects,
            {
                "name": _name("flow clusters", key, layer),
                "shape_type": "rectangle",
                "features": block_features,
                "face_color": per_item(np.array(block_colors), _EDGE_RGBA),
                "edge_color": per_item(np.tile(_BORDER, (len(rects), 1)), _BORDER),
                "edge_width": [0.002] * len(rects),
                "metadata": topolens_meta("flow_clusters", key, layer),
                **slot_placement(slot),
            },
            "shapes",
        ),
    ]


def blob_layer_data(analysis: Any, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
    """Blob graph: PCA points coloured by label and padded hulls of the best clusters."""
    result = analysis[layer]
    blobs = result.blobs
    coords = np.asarray(blobs.coords, dtype=np.float64).reshape(-1, 2)
    shapes = [np.asarray(h, dtype=np.float64) for h in blobs.hulls]
    to_unit = geo.blob_unit_transform(coords, shapes)
    labels = np.asarray(blobs.labels, dtype=np.int64)
    names = analysis.class_names
    point_features = pd.DataFrame(
        {
            "point": np.arange(len(coords), dtype=np.int64),
            "cluster": np.asarray(blobs.cluster, dtype=np.int64),
            "label": labels,
            "class_name": [class_name(int(c), names) for c in labels],
            "image": np.asarray(result.cloud.image_index, dtype=np.int64),
        }
    )
    hull_ids = np.asarray(blobs.hull_clusters, dtype=np.int64)
    crowd = max(1.0, math.sqrt(len(coords) / 200.0))
    return [
        (
            [to_unit(h[:-1] if len(h) > 3 and np.allclose(h[0], h[-1]) else h) for h in shapes],
            {
                "name": _name("blob hulls", key, layer),
                "shape_type": "polygon",
                "features": pd.DataFrame({"cluster": hull_ids}),
                "face_color": per_item(
                    np.tile([0.8, 0.8, 0.8, 0.12], (len(hull_ids), 1)), _EDGE_RGBA
                ),
                "edge_color": per_item(
                    np.tile([0.8, 0.8, 0.8, 0.8], (len(hull_ids), 1)), _EDGE_RGBA
                ),
                "edge_width": [0.004] * len(hull_ids),
                "metadata": topolens_meta("blob_hulls", key, layer),
                **slot_placement(slot),
            },
            "shapes",
        ),
        (
            to_unit(coords),
            {
                "name": _name("blob points", key, layer),
                "features": point_features,
                "size": 0.018 / crowd,
                "face_color": per_item(categorical_colors(labels, alpha=0.9), _UNKNOWN_RGBA),
                "border_color": per_item(np.tile(_BORDER, (len(coords), 1)), _BORDER),
                "border_width": 0.1,
                "metadata": topolens_meta("blob_points", key, layer),
                **slot_placement(slot),
            },
            "points",
        ),
    ]


_TREE_TOP, _TREE_BOTTOM = 0.02, 0.24
_HEAT_TOP, _HEAT_LEFT, _HEAT_SIDE = 0.26, 0.08, 0.66


def dendrogram_layer_data(analysis: Any, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
    """Heatmap dendrogram: the distance heatmap (Image) under the tree (Shapes paths)."""
    dendro = analysis[layer].dendrogram
    n = len(dendro.index)
    origin = slot_origin(slot)
    distances = np.asarray(dendro.distances, dtype=np.float32)
    hi = float(distances.max()) if distances.size and distances.max() > 0 else 1.0
    pixel = _HEAT_SIDE / max(n, 1) * SIDE
    heat = (
        distances,
        {
            "name": _name("dendrogram heatmap", key, layer),
            "colormap": "magma",
            "contrast_limits": (0.0, hi),
            "interpolation2d": "nearest",
            "scale": (pixel, pixel),
            "translate": (
                origin[0] + _HEAT_TOP * SIDE + pixel / 2,
                origin[1] + _HEAT_LEFT * SIDE + pixel / 2,
            ),
            "metadata": topolens_meta("dendrogram_heatmap", key, layer),
        },
        "image",
    )
    icoord = np.asarray(dendro.icoord, dtype=np.float64).reshape(-1, 4)
    dcoord = np.asarray(dendro.dcoord, dtype=np.float64).reshape(-1, 4)
    top = float(dcoord.max()) if dcoord.size and dcoord.max() > 0 else 1.0
    col = _HEAT_LEFT + _HEAT_SIDE * icoord / (10.0 * max(n, 1))
    row = _TREE_BOTTOM - (_TREE_BOTTOM - _TREE_TOP) * dcoord / top
    paths = [np.column_stack([r, c]) for r, c in zip(row, col)]
    sizes = np.diff(np.asarray(dendro.member_offsets))
    features = pd.DataFrame(
        {
            "merge": np.arange(len(paths), dtype=np.int64),
            "height": np.asarray(dendro.linkage, dtype=np.float64).reshape(-1, 4)[:, 2]
            if len(paths)
            else np.zeros(0),
            "size": sizes.astype(np.int64),
        }
    )
    width = max(0.0015, min(0.004, 0.5 / max(n, 1)))
    tree = (
        paths,
        {
            "name": _name("dendrogram tree", key, layer),
            "shape_type": "path",
            "features": features,
            "edge_color": np.tile(_EDGE_RGBA, (len(paths), 1)) if paths else _EDGE_RGBA,
            "edge_width": [width] * len(paths),
            "metadata": topolens_meta("dendrogram_tree", key, layer),
            **slot_placement(slot),
        },
        "shapes",
    )
    return [heat, tree]


# --------------------------------------------------------------------------- drift (variants)

#: Point symbols of the variants in the drift plot (with their colours: told apart twice).
DRIFT_SYMBOLS = ("disc", "square", "diamond", "triangle_up", "triangle_down", "star", "cross")


def has_variants(analysis: Any) -> bool:
    return bool(getattr(analysis, "variants", None))


def drift_colors(variant_index: np.ndarray) -> np.ndarray:
    """RGBA of each variant's line and points in the drift plot."""
    return categorical_colors(np.asarray(variant_index, dtype=np.int64))


def _hex(rgba: Any) -> str:
    r, g, b = (round(255 * float(v)) for v in list(rgba)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def drift_layer_data(analysis: Any, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
    """The drift plot of a base analysis with variants: lines and points, both plots.

    ``[]`` for an analysis without variants (a variant itself, another analysis).
    """
    from ..layout import drift as drift_layout

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
    point_colors = drift_colors(points["variant_index"].to_numpy()) if len(points) else _EDGE_RGBA
    symbols = [DRIFT_SYMBOLS[int(i) % len(DRIFT_SYMBOLS)] for i in points["variant_index"]]
    features = points.drop(columns=["row", "col"]).reset_index(drop=True)
    return [
        (
            lines,
            {
                "name": _name("drift lines", key),
                "shape_type": "path",
                "features": line_features,
                "edge_color": per_item(line_colors, _EDGE_RGBA),
                "edge_width": [0.006] * len(lines),
                "metadata": topolens_meta("drift_lines", key, layer),
                **slot_placement(slot),
            },
            "shapes",
        ),
        (
            points[["row", "col"]].to_numpy(dtype=np.float64).reshape(-1, 2),
            {
                "name": _name("drift points", key),
                "features": features,
                "size": 0.035,
                "symbol": symbols if symbols else "disc",
                "face_color": per_item(point_colors, _UNKNOWN_RGBA),
                "border_color": per_item(np.tile(_BORDER, (len(points), 1)), _BORDER),
                "border_width": 0.12,
                "metadata": topolens_meta("drift_points", key, layer),
                **slot_placement(slot),
            },
            "points",
        ),
    ]


def drift_dim(analysis: Any) -> int:
    """The homology dimension the drift plot measures (H1 where the analysis has it)."""
    return min(int(analysis.config.max_dim), 1)


def _drift_frame(analysis: Any, layer: str, add: Any) -> None:
    from ..layout import drift as drift_layout

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


def _drift_text(analysis: Any, layer: str, put: Any) -> str:
    """Legend, axis names and tick labels of the drift plot; returns its subtitle."""
    from ..layout import drift as drift_layout

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
            _hex(colors[number]),
        )
    titles = {
        "distance": f"relative H{dim} distance (sliced W.)",
        "moved": "fraction of images that moved",
    }
    for plot, (top, bottom) in drift_layout.DRIFT_PLOTS.items():
        put(top - 0.03, (left + right) / 2, titles[plot], _TEXT)
        ticks = geometry.distance_ticks if plot == "distance" else geometry.moved_ticks[::2]
        for tick in ticks:
            put(
                geometry.row_of(plot, float(tick)),
                left - 0.065,
                geo.format_value(float(tick)),
                _DIM_TEXT,
            )
        for name, col in zip(analysis.layers, geometry.layer_cols):
            shade = _TEXT if name == layer else _DIM_TEXT
            put(bottom + 0.035, float(col), geo.short_label(name, 10), shade)
    return "grey line: the layer shown · click a point"


# --------------------------------------------------------------------------- panel text, frames


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def best_stage_text(flow: Any) -> str:
    """The cluster-flow stage the blob graph shows, with its cut and size."""
    stage = int(flow.best_stage)
    memberships = np.asarray(flow.memberships)
    clusters = np.unique(memberships[stage]) if memberships.size else np.zeros(0, np.int64)
    n_clusters = int(np.sum(clusters >= 0))
    cut = float(np.asarray(flow.thresholds, dtype=np.float64)[stage])
    where = f"cut {cut:.3g}" if np.isfinite(cut) else str(flow.stage_names[stage])
    return f"best stage: {where}, {n_clusters} cluster{'s' if n_clusters != 1 else ''}"


_TITLE_ROW, _SUBTITLE_ROW = -0.095, -0.04
#: The same with a base and its variant side by side: the canvas then draws each view
#: at about half the size, while the text keeps its screen size (a line apart still).
_SIDE_BY_SIDE_ROWS = (-0.17, -0.075)


def _side_by_side(analysis: Any, panel: str) -> bool:
    """A base with variants, or a variant: drawn beside the other in the canvas."""
    run = getattr(analysis, "provenance", None) or {}
    return panel != "drift" and (has_variants(analysis) or isinstance(run.get("variant"), str))


_TEXT, _DIM_TEXT = "white", "#bbbbbb"
#: Longest subtitle kept whole when a base and its variant sit side by side.
SIDE_BY_SIDE_SUBTITLE_CHARS = 22


def short_subtitle(analysis: Any, layer: str, panel: str, subtitle: str) -> str:
    """A panel's subtitle in a few words, for a slot drawn beside another."""
    result = analysis[layer]
    if panel == "diagram":
        return (
            ", ".join(
                f"H{d} {len(diagram)}" for d, diagram in enumerate(result.persistence.diagrams)
            )
            + " bars"
        )
    if panel == "barcode":
        return "longest bars"
    if panel == "flow":
        return subtitle.replace("best stage: ", "best: ").replace(" clusters", " cl.")
    if panel == "blobs":
        return f"purity {result.quality.purity:.2f}"
    if panel == "dendrogram":
        return plural(len(result.dendrogram.index), "point")
    return subtitle if len(subtitle) <= 2 * SIDE_BY_SIDE_SUBTITLE_CHARS else subtitle[:21] + "…"


def panel_text_data(
    analysis: Any,
    layer: str,
    key: str,
    slot: int,
    panel: str,
    *,
    color_by: str = "dominant_class",
) -> list[LayerDataTuple]:
    """The visible panel's title, subtitle, axis names and tick labels (text only), the
    colour key's title and end values, and the matrix values in a smaller font."""
    result = analysis[layer]
    pos: list[tuple[float, float]] = []
    text: list[str] = []
    color: list[str] = []
    values_pos: list[tuple[float, float]] = []
    values_text: list[str] = []
    values_color: list[str] = []

    def put(row: float, col: float, words: str, shade: str = _TEXT) -> None:
        pos.append((row, col))
        text.append(words)
        color.append(shade)

    where = f"{key} · {layer}" if panel not in (*ANALYSIS_VIEWS, "drift") else key
    # a base and its variant side by side: each view about half as wide, text as large,
    # so notes are left out (hover says them) and labels alternate or shorten
    beside = _side_by_side(analysis, panel)
    title = f"{PANEL_TITLES[panel]} · {where}"
    run = (
        "base"
        if has_variants(analysis)
        else (getattr(analysis, "provenance", None) or {}).get("variant")
    )
    if isinstance(run, str) and panel != "drift":
        # base and variant side by side: short titles that never run into each other
        title = f"{run} · {layer}" if panel not in ANALYSIS_VIEWS else str(run)
    subtitle = ""
    if panel == "drift":
        if not has_variants(analysis):  # the plot is its base's: a blank text here
            # (one blank item, not none: the text is never empty in the other panels, and
            # napari's text of points added to an empty layer fails its colour encoding)
            return [
                _text_layer(
                    "panel_text",
                    key,
                    layer,
                    slot,
                    [(0.5, 0.5)],
                    [""],
                    [_TEXT],
                    10,
                    _name("view text", key),
                ),
                _text_layer(
                    "panel_values", key, layer, slot, [], [], [], 8, _name("matrix values", key)
                ),
            ]
        subtitle = _drift_text(analysis, layer, put)
    elif panel == "mapper":
        graph = result.mapper
        subtitle = (
            f"{graph.n_nodes} nodes, {len(graph.edges)} edges, "
            f"{plural(int(np.max(graph.component)) + 1, 'component')}"
            if graph.n_nodes
            else f"no nodes: {plural(len(result.cloud), 'point')}; try more images"
        )
        if isinstance(run, str) and graph.n_nodes:
            subtitle = f"{graph.n_nodes} nodes, {len(graph.edges)} edges"
    elif panel in ("diagram", "barcode"):
        pers = result.persistence
        top = geo.diagram_top(pers.diagrams)
        if panel == "diagram":
            subtitle = ", ".join(
                f"H{d} {len(pers.diagrams[d])} bars ({('blue', 'orange', 'green')[min(d, 2)]})"
                for d in range(len(pers.diagrams))
            )
            low, high = geo.DIAGRAM_AXES
            for tick in geo.nice_ticks(0.0, top, 5):
                frac = low + (high - low) * tick / top
                put(high + 0.035, frac, geo.format_value(float(tick)), _DIM_TEXT)
                put(
                    high - (high - low) * tick / top,
                    low - 0.05,
                    geo.format_value(float(tick)),
                    _DIM_TEXT,
                )
            put(geo.INF_ROW, low - 0.05, "∞", _DIM_TEXT)
            put(high + 0.075, (low + high) / 2, "birth", _TEXT)
            put(low - 0.055, low, "death", _TEXT)  # above its axis, below the ∞ line
        else:
            bars = geo.barcode_bars(pers, MAX_BARS)
            shown = ", ".join(
                f"H{d} {int((bars['dim'] == d).sum())} of {len(pers.diagrams[d])}"
                for d in range(len(pers.diagrams))
            )
            subtitle = f"longest bars: {shown}"
            rows, _pitch = geo.barcode_rows(bars["dim"].to_numpy())
            for d in sorted(set(bars["dim"].tolist())):
                mine = rows[bars["dim"].to_numpy() == d]
                put(float(mine.mean()), 0.045, f"H{d}", _TEXT)
            for tick in geo.nice_ticks(0.0, top, 5):
                put(
                    geo.BARCODE_ROWS[1] + 0.06,
                    geo.barcode_value_col(float(tick), top),
                    geo.format_value(float(tick)),
                    _DIM_TEXT,
                )
            put(geo.BARCODE_ROWS[1] + 0.06, geo.BARCODE_COLS[1] + 0.035, "∞", _DIM_TEXT)
            put(geo.BARCODE_ROWS[1] + 0.11, 0.5, "filtration value", _TEXT)
    elif panel == "flow":
        flow = result.flow
        subtitle = best_stage_text(flow)
        _, cols, width = geo.flow_geometry(flow)
        for s, name in enumerate(flow.stage_names):
            put(
                0.92 + 0.04 * (s % 2 if len(cols) > 6 or beside else 0),
                cols[s] + width / 2,
                geo.STAGE_LABELS.get(name, geo.short_label(str(name), 8)),
                _DIM_TEXT,
            )
        if not beside:
            put(1.0, 0.5, "classes, then cuts fine → coarse", _TEXT)
    elif panel == "blobs":
        q = result.quality
        subtitle = f"vs labels: purity {q.purity:.2f}, ARI {q.ari:.2f}"
        put(0.975, 0.5, "PC1 →", _DIM_TEXT)
        put(0.5, 0.02, "PC2", _DIM_TEXT)
    elif panel == "dendrogram":
        subtitle = f"{plural(len(result.dendrogram.index), 'point')}, ordered by the tree"
        if not beside:
            put(0.99, 0.5, "heatmap: pairwise distances", _DIM_TEXT)
    else:  # layer x layer matrices
        subtitle = (
            "of per-image mean activations"
            if panel == "cka"
            else f"H{analysis.config.distance_dim} {analysis.config.layer_distance.replace('_', ' ')}"
        )
        names = analysis.layers
        n = len(names)
        top, left, side = geo.MATRIX_BOX
        pixel = side / max(n, 1)
        matrix = np.asarray(
            analysis.layer_distances["cka" if panel == "cka" else analysis.config.layer_distance],
            dtype=np.float64,
        )
        finite = matrix[np.isfinite(matrix)]
        limits = (
            (0.0, 1.0)
            if panel == "cka"
            else (0.0, float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
        )
        for i, name in enumerate(names):
            label = str(i + 1) if beside else f"{i + 1} {geo.short_label(name, 12)}"
            put(top + (i + 0.5) * pixel, left / 2 if not beside else left - 0.04, label, _TEXT)
            put(top + side + 0.035, left + (i + 0.5) * pixel, str(i + 1), _TEXT)
        if n <= MAX_VALUE_LABELS and not beside:
            for i in range(n):
                for j in range(n):
                    value = matrix[i, j]
                    values_pos.append((top + (i + 0.5) * pixel, left + (j + 0.5) * pixel))
                    values_text.append(geo.format_value(float(value)) if np.isfinite(value) else "")
                    bright = (
                        np.isfinite(value)
                        and (value - limits[0]) / ((limits[1] - limits[0]) or 1.0) > 0.6
                    )
                    values_color.append("black" if bright else "white")
        if not beside:
            put(
                top + side + 0.1,
                left + side / 2,
                "hover a cell for its full value",
                _DIM_TEXT,
            )
    if beside and len(subtitle) > SIDE_BY_SIDE_SUBTITLE_CHARS:
        # two slots side by side: a long subtitle would run into the other's
        subtitle = short_subtitle(analysis, layer, panel, subtitle)
    title_row, subtitle_row = (
        _SIDE_BY_SIDE_ROWS if _side_by_side(analysis, panel) else (_TITLE_ROW, _SUBTITLE_ROW)
    )
    put(title_row, 0.5, title, _TEXT)
    if subtitle:
        put(subtitle_row, 0.5, subtitle, _DIM_TEXT)
    color_key = panel_key(analysis, layer, panel, color_by)
    if color_key is not None:  # every key is titled, its ends numbered
        key_title, _cmap, (low, high) = color_key
        middle = (KEY_COLS[0] + KEY_COLS[1]) / 2
        put(KEY_ROWS[0] - 0.11, middle - 0.09, key_title, _TEXT)
        put(KEY_ROWS[0] - 0.04, middle - 0.02, geo.format_value(float(high)), _DIM_TEXT)
        put(KEY_ROWS[1] + 0.04, middle - 0.02, geo.format_value(float(low)), _DIM_TEXT)
    return [
        _text_layer(
            "panel_text",
            key,
            layer,
            slot,
            pos,
            text,
            color,
            PANEL_TEXT_SIZE,
            _name("view text", key),
        ),
        _text_layer(
            "panel_values",
            key,
            layer,
            slot,
            values_pos,
            values_text,
            values_color,
            8,
            _name("matrix values", key),
        ),
    ]


#: The box every panel (titles and tick labels included) fits in: the camera frames it.
PANEL_BOX = ((-0.14, -0.02), (1.05, 1.1))
#: Width of the frame's lines, in the unit square's units.
FRAME_WIDTH = 0.003


def panel_axes_data(analysis: Any, layer: str, key: str, slot: int, panel: str) -> LayerDataTuple:
    """The visible panel's frame, axes and ticks (and an invisible box the camera fits).

    A Vectors layer, one segment per line (a rectangle is four): putting new
    segments into it costs the main thread a few milliseconds, where a Shapes
    layer triangulates every item again (about 0.1 s per pick, per analysis).
    """
    starts: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    kinds: list[str] = []
    colors: list[tuple[float, float, float, float]] = []

    def add(coords, kind: str, shape: str = "line", rgba=_FRAME_RGBA, width: float = 0.003) -> None:
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
    if _side_by_side(analysis, panel):
        r0 = _SIDE_BY_SIDE_ROWS[0] - 0.045  # room for the title a line higher
    drift_elsewhere = panel == "drift" and not has_variants(analysis)
    if not drift_elsewhere:  # the drift plot is its base's: no frame for the others
        add([[r0, c0], [r1, c1]], "fit_box", "rectangle", (0.0, 0.0, 0.0, 0.0), 0.0)
        add([[0.0, 0.0], [1.0, 1.0]], "frame", "rectangle", (0.3, 0.3, 0.3, 1.0), 0.003)
    if panel == "drift" and not drift_elsewhere:
        _drift_frame(analysis, layer, add)
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
            "name": _name("view frame", key),
            "features": pd.DataFrame({"what": kinds}),
            "edge_color": per_item(np.array(colors), _EDGE_RGBA),  # frames never dim beneath
            "edge_width": FRAME_WIDTH,
            "vector_style": "line",
            "metadata": topolens_meta("panel_axes", key, layer),
            **slot_placement(slot),
        },
        "vectors",
    )


def group_layer_data(
    group: str,
    analysis: Any,
    layer: str,
    key: str,
    slot: int,
    layout: np.ndarray,
    panel: str,
    *,
    color_by: str = "dominant_class",
    edge_threshold: float = 0.0,
) -> list[LayerDataTuple]:
    """The canvas layers of one group: a panel (``PANELS``; the two matrices are one
    group, ``"matrices"``) or ``"frame"`` (the visible panel's frame and text)."""
    if group == "frame":
        return [
            panel_axes_data(analysis, layer, key, slot, panel),
            *panel_text_data(analysis, layer, key, slot, panel, color_by=color_by),
            panel_key_data(analysis, layer, key, slot, panel, color_by),
        ]
    if group == "matrices":
        return matrix_layer_data(analysis, key, slot)
    if group == "drift":
        return drift_layer_data(analysis, layer, key, slot)
    if group == "mapper":
        return mapper_layer_data(
            analysis, layer, key, slot, layout, color_by=color_by, edge_threshold=edge_threshold
        )
    builders = {
        "diagram": diagram_layer_data,
        "barcode": barcode_layer_data,
        "flow": flow_layer_data,
        "blobs": blob_layer_data,
        "dendrogram": dendrogram_layer_data,
    }
    return builders[group](analysis, layer, key, slot)


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


# --------------------------------------------------------------------------- image viewer side


def overlay_for_members(
    cloud: Any, members: np.ndarray, n_images: int, *, skip_whole: bool = False
) -> np.ndarray:
    """Heat ``(N, H, W)``: per image, how many member points' receptive fields cover each pixel.

    With ``skip_whole``, fields covering the whole image (pooled or dense layers) are
    left out: they say nothing per pixel, and tinting the whole input would hide it.
    """
    height, width = (int(v) for v in cloud.image_shape)
    heat = np.zeros((n_images, height, width), dtype=np.float32)
    members = np.asarray(members, dtype=np.int64)
    for image, (y0, x0, y1, x1) in zip(cloud.image_index[members], cloud.receptive_field[members]):
        if skip_whole and y0 <= 0 and x0 <= 0 and y1 >= height and x1 >= width:
            continue
        if 0 <= image < n_images:
            heat[image, y0:y1, x0:x1] += 1.0
    return heat


def member_images(cloud: Any, members: np.ndarray) -> np.ndarray:
    """Member images, most member points first (ties: lower index first)."""
    images, counts = np.unique(
        np.asarray(cloud.image_index)[np.asarray(members, dtype=np.int64)], return_counts=True
    )
    return images[np.lexsort((images, -counts))]


#: Pixels of the class-coloured frame around each gallery tile.
TILE_BORDER = 2
GALLERY_COLUMNS = 4
#: Longest tile caption (longer ones are cut with an ellipsis).
CAPTION_CHARS = 11


def label_band(height: int) -> int:
    """Rows of the black band under each gallery tile that holds its class label."""
    return max(4, round(0.4 * height))


def column_gap(width: int) -> int:
    """Columns between gallery tiles: room for the labels under them."""
    return max(1, round(0.7 * width))


def tile_box(k: int, image_shape: tuple[int, ...], columns: int = GALLERY_COLUMNS):
    """((top, left), (height, width)) of gallery tile ``k`` in mosaic pixels (frame included)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    th, tw = h + 2 * TILE_BORDER, w + 2 * TILE_BORDER
    r, c = divmod(k, columns)
    return (r * (th + label_band(h)), c * (tw + column_gap(w))), (th, tw)


def gallery_mosaic(
    images: Any,
    heat: np.ndarray,
    chosen: np.ndarray,
    columns: int = GALLERY_COLUMNS,
    tile_classes: np.ndarray | None = None,
) -> np.ndarray:
    """RGB tiles of ``chosen`` images with the heat in red, each framed in its class colour.

    Grey images stay grey, RGB images keep their colours (the heat tints the
    covered pixels red); under each tile a black band holds its label (drawn as
    text by the caller, at :func:`tile_box` + :func:`label_band`).
    """
    _, h, w = heat.shape
    n = len(chosen)
    b = TILE_BORDER
    if n == 0:
        return np.zeros((h + 2 * b, w + 2 * b, 3), dtype=np.float32)
    rows = math.ceil(n / columns)
    cols = min(n, columns)
    (_, _), (th, tw) = tile_box(0, (h, w), columns)
    mosaic = np.zeros(
        (rows * (th + label_band(h)), cols * (tw + column_gap(w)) - column_gap(w), 3),
        dtype=np.float32,
    )
    frame_colors = (
        categorical_colors(np.asarray(tile_classes))[:, :3]
        if tile_classes is not None
        else np.tile(UNKNOWN_RGB, (n, 1))
    )
    red = np.array([1.0, 0.15, 0.1], dtype=np.float32)
    for k, image in enumerate(chosen):
        if images is not None and image < len(images):
            pixels = np.asarray(images[image], dtype=np.float32)
            if pixels.ndim == 3 and pixels.shape[-1] == 4:
                pixels = pixels[..., :3]
            lo, hi = float(pixels.min()), float(pixels.max())
            pixels = (pixels - lo) / (hi - lo) if hi > lo else np.zeros_like(pixels)
            rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)
        else:
            rgb = np.zeros((h, w, 3), dtype=np.float32)
        tile_heat = heat[image] if image < len(heat) else np.zeros((h, w), np.float32)
        top = float(tile_heat.max())
        # a field covering the whole image (pooled, dense layers) says nothing per pixel:
        # no tint, so the image keeps its own colours
        partial = top > 0 and float(tile_heat.min()) < top
        alpha = (0.5 * tile_heat / top if partial else np.zeros_like(tile_heat))[..., None]
        rgb = rgb * (1 - alpha) + alpha * red
        (y, x), _ = tile_box(k, (h, w), columns)
        mosaic[y : y + th, x : x + tw] = frame_colors[k]
        mosaic[y + b : y + b + h, x + b : x + b + w] = rgb
    return np.clip(mosaic, 0.0, 1.0)


@dataclass
class ImageGeometry:
    """Where an input stack lies in the image viewer's world (its two displayed axes)."""

    height: float
    width: float
    origin: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def of_layer(cls, layer: Any) -> ImageGeometry:
        shape = layer.data.shape[:-1] if getattr(layer, "rgb", False) else layer.data.shape
        scale = np.asarray(layer.scale)[-2:]
        translate = np.asarray(layer.translate)[-2:]
        # napari centres pixel k at translate + k * scale: the corner is half a pixel off
        return cls(
            float(shape[-2] * scale[0]),
            float(shape[-1] * scale[1]),
            (float(translate[0] - scale[0] / 2), float(translate[1] - scale[1] / 2)),
        )

    def gallery_box(self, index: int = 0) -> tuple[tuple[float, float], float]:
        """Top-left and side of the gallery of the ``index``-th analysis of these images.

        Below the images, side by side; room above each for its title.
        """
        side = 2.0 * max(self.height, self.width)
        gap = 0.25 * side
        return (
            (self.origin[0] + self.height + gap, self.origin[1] + index * (side + 0.1 * side)),
            side,
        )


def variant_gallery_geometry(base: ImageGeometry) -> ImageGeometry:
    """The geometry a variant's gallery is placed by: its base's, moved below the base's
    gallery (side by side, the titles would run into each other on a laptop screen)."""
    (_r0, _c0), side = base.gallery_box(0)
    return ImageGeometry(base.height, base.width, (base.origin[0] + 1.3 * side, base.origin[1]))


def gallery_title(key: str, variant_of: str | None = None) -> str:
    """The title of an empty selection gallery (short for a variant: it sits under its base's)."""
    if variant_of is not None and key.startswith(f"{variant_of} · "):
        return f"gallery · {key[len(variant_of) + 3 :]}: click a view item"
    return f"selection gallery · {key}: click a view item"


def variant_labels_layer_data(
    key: str, names: Sequence[str], boxes: Sequence[tuple[float, float, float, float]]
) -> LayerDataTuple:
    """Names above the base's images and each variant's (``boxes``: top, left, bottom, right)."""
    pos = [
        ((top - 0.08 * (bottom - top)), (left + right) / 2) for top, left, bottom, right in boxes
    ]
    return (
        np.asarray(pos, dtype=np.float64).reshape(-1, 2),
        {
            "name": _name("variant names", key),
            "features": pd.DataFrame({"text": list(names)}),
            "size": 0.0,
            "face_color": "transparent",
            "border_color": "transparent",
            "border_width": 0,
            "text": {"string": "{text}", "size": 9, "color": "white", "anchor": "center"},
            "metadata": topolens_meta("variant_labels", key, ""),
        },
        "points",
    )


def images_layer_data(analysis: Any, key: str) -> LayerDataTuple:
    """The input stack from ``analysis.images``, or a blank stand-in of the right shape."""
    images = getattr(analysis, "images", None)
    extra: dict[str, Any] = {}
    extra_kwargs: dict[str, Any] = {}
    if images is None:
        h, w = analysis[analysis.layers[-1]].cloud.image_shape
        # the images the clouds refer to (checked when loaded), not a count the file
        # declares; a read-only view of one blank image: no memory per image
        n = max((int(np.max(r.cloud.image_index)) + 1 for r in analysis if len(r.cloud)), default=1)
        images = np.broadcast_to(np.zeros((1, int(h), int(w)), np.float32), (n, int(h), int(w)))
        extra["placeholder"] = True
        extra_kwargs["contrast_limits"] = (0.0, 1.0)
        name = _name("images (not stored in the analysis)", key)
    else:
        images = np.asarray(images)
        name = _name("images", key)
    rgb = images.ndim == 4 and images.shape[-1] in (3, 4)
    kwargs: dict[str, Any] = {
        "name": name,
        "metadata": topolens_meta("images", key, "", analysis=analysis, **extra),
        "rgb": rgb,
    }
    if not rgb:
        kwargs["colormap"] = "gray"
    return (images, {**kwargs, **extra_kwargs}, "image")


def overlay_layer_data(analysis: Any, key: str, image_layer: Any) -> LayerDataTuple:
    """An empty receptive-field heat overlay aligned with the input stack."""
    rgb = bool(getattr(image_layer, "rgb", False))
    shape = image_layer.data.shape[:-1] if rgb else image_layer.data.shape
    return (
        # read-only and blank until a selection: no memory per image of the stack
        np.broadcast_to(np.zeros((), dtype=np.float32), tuple(shape)),
        {
            "name": _name("receptive-field overlay", key),
            "colormap": "red",
            "blending": "additive",
            "opacity": 0.6,
            "contrast_limits": (0.0, 1.0),
            "scale": tuple(image_layer.scale),
            "translate": tuple(image_layer.translate),
            "metadata": topolens_meta("overlay", key, "", analysis=analysis),
        },
        "image",
    )


def gallery_placement(
    geometry: ImageGeometry, index: int, mosaic_shape: tuple[int, ...]
) -> dict[str, Any]:
    """scale/translate fitting a mosaic into the gallery box."""
    (r0, c0), side = geometry.gallery_box(index)
    pixel = side / max(mosaic_shape[0], mosaic_shape[1], 1)
    return {"scale": (pixel, pixel), "translate": (r0 + pixel / 2, c0 + pixel / 2)}


def gallery_layer_data(
    analysis: Any,
    key: str,
    geometry: ImageGeometry,
    index: int,
    h: int,
    w: int,
    variant_of: str | None = None,
) -> list[LayerDataTuple]:
    """An empty gallery (a black tile) and its text (title, tile classes)."""
    mosaic = np.zeros((h, w, 3), dtype=np.float32)
    return [
        (
            mosaic,
            {
                "name": _name("selection gallery", key),
                "rgb": True,
                "metadata": topolens_meta("gallery", key, "", analysis=analysis),
                **gallery_placement(geometry, index, mosaic.shape),
            },
            "image",
        ),
        gallery_text_data(key, geometry, index, gallery_title(key, variant_of), [], []),
    ]


def caption_fit(side: float, tile_pitch: float | None = None) -> tuple[float, int]:
    """Text size (world units, napari's text ``scaling`` on) and longest caption of a gallery.

    ``side``: the gallery box's; ``tile_pitch``: world units from one tile's left
    edge to the next's (default: a full row of :data:`GALLERY_COLUMNS`). The size
    is the one of a full gallery at most (the title shares it), and a caption of
    the returned length fills at most 90 % of the pitch: neighbours never touch.
    """
    full = side / GALLERY_COLUMNS  # a full gallery's pitch is about a quarter of its side
    pitch = full if tile_pitch is None else float(tile_pitch)
    # napari draws text of size s about 0.72 s wide per character (measured), an
    # ellipsis as wide as three characters
    size = min(pitch, full) / (0.8 * (CAPTION_CHARS + 1))
    return size, max(CAPTION_CHARS, int(0.9 * pitch / (0.72 * size)) - 2)


def gallery_text_data(
    key: str,
    geometry: ImageGeometry,
    index: int,
    title: str,
    tile_centres: Sequence[tuple[float, float]],
    tile_labels: Sequence[str],
    tile_pitch: float | None = None,
) -> LayerDataTuple:
    """The gallery's title (what is selected) and each tile's class, as text.

    The text is sized in world units and zooms with the tiles (napari's text
    ``scaling``): a caption of :data:`CAPTION_CHARS` characters stays within its
    tile's pitch (``tile_pitch``, world units from one tile's left edge to the
    next's) at any zoom, so neighbours never run into each other.
    """
    (r0, c0), side = geometry.gallery_box(index)
    size, _ = caption_fit(side, tile_pitch)
    pos = [(r0 - 0.06 * side, c0 + 0.5 * side), *tile_centres]
    text = [title, *tile_labels]
    features = pd.DataFrame({"text": text})
    return (
        np.asarray(pos, dtype=np.float64).reshape(-1, 2),
        {
            "name": _name("gallery text", key),
            "features": features,
            "size": 0.0,
            "face_color": "transparent",
            "border_color": "transparent",
            "border_width": 0,
            "text": {
                "string": "{text}",
                "size": size,
                "scaling": True,
                "color": "white",
                "anchor": "center",
            },
            "metadata": topolens_meta("gallery_text", key, ""),
        },
        "points",
    )
