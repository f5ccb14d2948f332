"""What the Mapper nodes show: their colour by a node feature, their size, their table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import TopoLensError
from ..label_sources import labels_match_predictions
from ..topology.mapper import MapperGraph
from ..topology.results import Analysis, LayerAnalysis
from .palette import categorical_colors, continuous_colors
from .panels import COLOR_BY, COLOR_BY_LABELS, NEEDS_PREDICTIONS


def class_name(code: int, class_names: Sequence[str] | None) -> str:
    if code < 0:
        return "unknown"
    if class_names is not None and code < len(class_names):
        return str(class_names[code])
    return str(code)


def most_common(codes: np.ndarray) -> int:
    """The most frequent of non-negative codes (the smallest on ties), sized by the codes
    present rather than by their largest value (``np.bincount`` would be)."""
    values, counts = np.unique(np.asarray(codes, dtype=np.int64), return_counts=True)
    return int(values[np.argmax(counts)])


def node_predicted_class(
    analysis: Analysis, result: LayerAnalysis, predictions: np.ndarray
) -> np.ndarray:
    """Most frequent predicted class among each node's member images (-1: none known)."""
    graph = result.mapper
    per_point = np.asarray(predictions, dtype=np.int64)[np.asarray(result.cloud.image_index)]
    out = np.full(graph.n_nodes, -1, dtype=np.int64)
    for node in range(graph.n_nodes):
        known = per_point[graph.node_members(node)]
        known = known[known >= 0]
        if known.size:
            out[node] = most_common(known)
    return out


def node_correct_share(result: LayerAnalysis, predictions: np.ndarray) -> np.ndarray:
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


def analysis_predictions(analysis: Analysis) -> np.ndarray | None:
    """The per-image predicted classes of the analysis (``analysis.predictions``), if any."""
    predictions = getattr(analysis, "predictions", None)
    if predictions is None:
        return None
    return np.asarray(predictions, dtype=np.int64).reshape(-1)


def node_colors(
    analysis: Analysis, layer: str, color_by: str
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


def node_sizes(graph: MapperGraph) -> np.ndarray:
    """Unit-square diameters growing with the square root of the member count."""
    size = np.asarray(graph.size, dtype=np.float64)
    top = size.max() if len(size) else 1.0
    crowd = max(1.0, math.sqrt(max(graph.n_nodes, 1) / 30.0))
    return (0.018 + 0.05 * np.sqrt(size / top)) / crowd


def edge_widths(weight: np.ndarray, n_nodes: int) -> np.ndarray:
    """Unit-square widths growing with the Jaccard weight."""
    crowd = max(1.0, math.sqrt(max(n_nodes, 1) / 30.0))
    return (0.002 + 0.012 * np.asarray(weight, dtype=np.float64)) / crowd


def node_features(analysis: Analysis, layer: str, layout: np.ndarray) -> pd.DataFrame:
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
