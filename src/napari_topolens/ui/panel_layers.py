"""Layer data of the canvas panels: pure functions from an analysis to napari layer-data tuples.

Each builder returns ``(data, kwargs, layer_type)`` tuples for the topology canvas
(``ui.canvas``), drawn in the unit square of ``layout`` and placed on the analysis's
slot (``ui.layer_tuples``). Only one panel is visible at a time; the frame group
holds the visible panel's frame, text and colour key (``ui.panel_axes``,
``ui.panel_text``, ``ui.color_key``). :func:`group_layer_data` makes any group.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..layout import geometry as geo
from ..topology.results import Analysis
from .color_key import panel_key_data
from .drift_view import drift_layer_data
from .layer_tuples import (
    SIDE,
    LayerDataTuple,
    layer_name,
    slot_origin,
    slot_placement,
    topolens_meta,
)
from .mapper_nodes import (
    class_name,
    edge_widths,
    most_common,
    node_colors,
    node_features,
    node_sizes,
)
from .palette import BORDER_RGBA, DIM_COLORS, EDGE_RGBA, UNKNOWN_RGBA, categorical_colors, per_item
from .panel_axes import panel_axes_data
from .panel_text import panel_text_data
from .panels import MAX_BARS


def mapper_layer_data(
    analysis: Analysis,
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
            "name": layer_name("mapper nodes", key, layer),
            "features": node_features(analysis, layer, layout),
            "size": per_item(node_sizes(graph), 0.05),
            "face_color": per_item(colors, UNKNOWN_RGBA),
            "border_color": per_item(np.tile(BORDER_RGBA, (graph.n_nodes, 1)), BORDER_RGBA),
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
    analysis: Analysis, layer: str, key: str, slot: int, layout: np.ndarray, threshold: float
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
    colors = np.column_stack([np.full((len(weight), 3), 0.8), alpha]) if len(weight) else EDGE_RGBA
    return (
        lines,
        {
            "name": layer_name("mapper edges", key, layer),
            "shape_type": "line",
            "features": features,
            "edge_width": list(edge_widths(weight, graph.n_nodes)),
            "edge_color": colors,
            "metadata": topolens_meta("mapper_edges", key, layer),
            **slot_placement(slot),
        },
        "shapes",
    )


def diagram_layer_data(analysis: Analysis, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
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
    colors = np.column_stack([DIM_COLORS[np.minimum(dim_a, 2)], np.full(len(dim_a), 0.85)])
    return [
        (
            geo.diagram_coords(birth, death, top),
            {
                "name": layer_name("persistence diagram", key, layer),
                "features": features,
                "size": 0.02,
                "face_color": per_item(colors, UNKNOWN_RGBA),
                "border_color": per_item(np.tile(BORDER_RGBA, (len(dim_a), 1)), BORDER_RGBA),
                "border_width": 0.08,
                "metadata": topolens_meta("diagram", key, layer),
                **slot_placement(slot),
            },
            "points",
        )
    ]


def barcode_layer_data(analysis: Analysis, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
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
                "name": layer_name("barcode", key, layer),
                "shape_type": "line",
                "features": table,
                "edge_width": [width] * n,
                "edge_color": np.column_stack([DIM_COLORS[np.minimum(dims, 2)], np.ones(n)])
                if n
                else EDGE_RGBA,
                "metadata": topolens_meta("barcode", key, layer),
                **slot_placement(slot),
            },
            "shapes",
        )
    ]


def matrix_title(analysis: Analysis, view: str) -> str:
    if view == "cka":
        return "linear CKA between layers"
    kind = analysis.config.layer_distance.replace("_", " ")
    return f"H{analysis.config.distance_dim} {kind} distance between layers"


def matrix_layer_data(analysis: Analysis, key: str, slot: int) -> list[LayerDataTuple]:
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
                    "name": layer_name(matrix_title(analysis, view), key),
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


def flow_layer_data(analysis: Analysis, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
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
        band_colors.append(most_common(known) if known.size else -1)
        rows.append((s, a, b, count))
    band_features = pd.DataFrame(rows, columns=["stage", "cluster", "next_cluster", "count"])
    band_rgba = categorical_colors(np.array(band_colors, np.int64), 0.55) if rows else EDGE_RGBA
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
                "name": layer_name("cluster flow", key, layer),
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
                "name": layer_name("flow clusters", key, layer),
                "shape_type": "rectangle",
                "features": block_features,
                "face_color": per_item(np.array(block_colors), EDGE_RGBA),
                "edge_color": per_item(np.tile(BORDER_RGBA, (len(rects), 1)), BORDER_RGBA),
                "edge_width": [0.002] * len(rects),
                "metadata": topolens_meta("flow_clusters", key, layer),
                **slot_placement(slot),
            },
            "shapes",
        ),
    ]


def blob_layer_data(analysis: Analysis, layer: str, key: str, slot: int) -> list[LayerDataTuple]:
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
                "name": layer_name("blob hulls", key, layer),
                "shape_type": "polygon",
                "features": pd.DataFrame({"cluster": hull_ids}),
                "face_color": per_item(
                    np.tile([0.8, 0.8, 0.8, 0.12], (len(hull_ids), 1)), EDGE_RGBA
                ),
                "edge_color": per_item(
                    np.tile([0.8, 0.8, 0.8, 0.8], (len(hull_ids), 1)), EDGE_RGBA
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
                "name": layer_name("blob points", key, layer),
                "features": point_features,
                "size": 0.018 / crowd,
                "face_color": per_item(categorical_colors(labels, alpha=0.9), UNKNOWN_RGBA),
                "border_color": per_item(np.tile(BORDER_RGBA, (len(coords), 1)), BORDER_RGBA),
                "border_width": 0.1,
                "metadata": topolens_meta("blob_points", key, layer),
                **slot_placement(slot),
            },
            "points",
        ),
    ]


_TREE_TOP, _TREE_BOTTOM = 0.02, 0.24
_HEAT_TOP, _HEAT_LEFT, _HEAT_SIDE = 0.26, 0.08, 0.66


def dendrogram_layer_data(
    analysis: Analysis, layer: str, key: str, slot: int
) -> list[LayerDataTuple]:
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
            "name": layer_name("dendrogram heatmap", key, layer),
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
            "name": layer_name("dendrogram tree", key, layer),
            "shape_type": "path",
            "features": features,
            "edge_color": np.tile(EDGE_RGBA, (len(paths), 1)) if paths else EDGE_RGBA,
            "edge_width": [width] * len(paths),
            "metadata": topolens_meta("dendrogram_tree", key, layer),
            **slot_placement(slot),
        },
        "shapes",
    )
    return [heat, tree]


def group_layer_data(
    group: str,
    analysis: Analysis,
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
