"""Numbers and unit-square geometry of the drift plot, and a variant's Mapper layout.

The drift plot shows, per network layer (x, in forward order), how far each
variant's topology moved from the base's: the relative sliced-Wasserstein H1
distance on top and the fraction of images that moved below, one line per
variant. :func:`drift_table` holds the numbers (the HTML report's drift figure
plots the same ones); :func:`drift_geometry` says where each point lies.

:func:`variant_layout` places a variant's Mapper nodes in its base's layout, so
that an image whose group did not change stays where it was and a moved one
jumps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .geometry import nice_ticks
from .matching import HUNGARIAN_MAX_CELLS, images_by_nodes, pair_groups

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

__all__ = [
    "DRIFT_COLS",
    "DRIFT_PLOTS",
    "DriftGeometry",
    "drift_geometry",
    "drift_table",
    "variant_layout",
]

#: Rows (top, bottom) of the two plots in the unit square: distance, moved fraction.
DRIFT_PLOTS = {"distance": (0.17, 0.46), "moved": (0.6, 0.89)}
#: Columns (left, right) of both plots.
DRIFT_COLS = (0.15, 0.97)


def drift_table(base: Any, dim: int = 1) -> pd.DataFrame:
    """One row per (variant, network layer) with every number the drift plot shows.

    Columns: ``variant`` (its name), ``variant_index``, ``layer``, ``layer_index``
    (forward order of the base), ``distance`` (sliced Wasserstein H``dim``, raw),
    ``relative`` (divided by the base diagram's own scale), ``bottleneck``
    (H``dim``), ``moved`` (fraction of compared images), ``accuracy_base`` and
    ``accuracy_variant``. Layers a variant was not compared at are left out.
    """
    rows = []
    layers = list(base.layers)
    for number, variant in enumerate(getattr(base, "variants", None) or []):
        comparison = variant.comparison
        for drift in comparison.drifts:
            if drift.layer not in layers:
                continue
            rows.append(
                {
                    "variant": str(variant.name),
                    "variant_index": number,
                    "layer": drift.layer,
                    "layer_index": layers.index(drift.layer),
                    "distance": drift.distance("sliced_wasserstein", dim),
                    "relative": drift.distance("sliced_wasserstein", dim, relative=True),
                    "bottleneck": drift.distance("bottleneck", dim),
                    "moved": drift.moved_fraction,
                    "accuracy_base": float(comparison.accuracy_base),
                    "accuracy_variant": float(comparison.accuracy_variant),
                }
            )
    columns = [
        "variant",
        "variant_index",
        "layer",
        "layer_index",
        "distance",
        "relative",
        "bottleneck",
        "moved",
        "accuracy_base",
        "accuracy_variant",
    ]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({"variant_index": np.int64, "layer_index": np.int64})


@dataclass
class DriftGeometry:
    """Where the drift plot draws: unit-square rows/columns of each point and tick.

    Attributes
    ----------
    points : DataFrame
        :func:`drift_table` rows twice, once per plot (``plot``: ``"distance"`` or
        ``"moved"``), with ``row`` and ``col``; nan values are left out.
    layer_cols : ndarray (L,)
        Column of each network layer.
    distance_top : float
        The distance plot's top value (its y axis runs 0..distance_top).
    distance_ticks, moved_ticks : ndarray
        Tick values of the two y axes.
    """

    points: pd.DataFrame
    layer_cols: np.ndarray
    distance_top: float
    distance_ticks: np.ndarray
    moved_ticks: np.ndarray

    def row_of(self, plot: str, value: float) -> float:
        """The row of a value in one plot."""
        top, bottom = DRIFT_PLOTS[plot]
        high = self.distance_top if plot == "distance" else 1.0
        return bottom - (bottom - top) * float(value) / high


def drift_geometry(table: pd.DataFrame, n_layers: int) -> DriftGeometry:
    """Unit-square positions of the points of :func:`drift_table` in the two plots."""
    left, right = DRIFT_COLS
    pitch = (right - left) / max(n_layers, 1)
    layer_cols = left + pitch * (np.arange(n_layers) + 0.5)
    finite = table["relative"].to_numpy(dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    peak = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    ticks = nice_ticks(0.0, peak, 4)
    step = float(ticks[1] - ticks[0]) if len(ticks) > 1 else peak
    top = float(ticks[-1]) if len(ticks) and ticks[-1] >= peak else float(ticks[-1] + step)
    ticks = nice_ticks(0.0, top, 4)
    geometry = DriftGeometry(
        points=pd.DataFrame(),
        layer_cols=layer_cols,
        distance_top=top,
        distance_ticks=ticks,
        moved_ticks=np.array([0.0, 0.25, 0.5, 0.75, 1.0]),
    )
    parts = []
    for plot, column in (("distance", "relative"), ("moved", "moved")):
        values = table[column].to_numpy(dtype=np.float64)
        keep = np.isfinite(values)
        part = table[keep].copy()
        part.insert(0, "plot", plot)
        part["row"] = [geometry.row_of(plot, v) for v in values[keep]]
        part["col"] = layer_cols[part["layer_index"].to_numpy(dtype=np.int64)]
        parts.append(part)
    points = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    points.insert(0, "point", np.arange(len(points), dtype=np.int64))
    geometry.points = points
    return geometry


def _node_images(result: Any, n_images: int) -> csr_matrix:
    """(images x nodes) 0/1 sparse matrix: which images each Mapper node of ``result`` holds."""
    graph = result.mapper
    return images_by_nodes(graph.members, graph.member_offsets, result.cloud.image_index, n_images)


def variant_layout(
    base_result: Any,
    base_layout: np.ndarray,
    variant_result: Any,
    *,
    max_cells: int = HUNGARIAN_MAX_CELLS,
) -> tuple[np.ndarray, np.ndarray]:
    """A variant's Mapper node positions in its base's layout, and the base node each took.

    Variant nodes are paired one-to-one with base nodes by the Jaccard overlap of
    their image sets (the Hungarian method; greedily, best overlap first, above
    ``max_cells`` node pairs); a paired node takes its base node's position, so
    an unchanged graph is drawn exactly like the base's. An unpaired node sits at
    the mean base position of its images (the mean over the base nodes holding
    them), or, with no image in the base graph, in the base layout's centre.

    Returns
    -------
    layout : ndarray (n_variant_nodes, 2)
    paired : ndarray (n_variant_nodes,) int64
        The base node each variant node took (-1: none).
    """
    base_layout = np.asarray(base_layout, dtype=np.float64).reshape(-1, 2)
    n_variant = int(variant_result.mapper.n_nodes)
    paired = np.full(n_variant, -1, dtype=np.int64)
    if n_variant == 0:
        return np.zeros((0, 2)), paired
    centre = base_layout.mean(axis=0) if len(base_layout) else np.array([0.5, 0.5])
    n_images = 1 + max(
        int(np.max(r.cloud.image_index, initial=-1)) for r in (base_result, variant_result)
    )
    base_groups = _node_images(base_result, n_images)
    variant_groups = _node_images(variant_result, n_images)
    n_base = base_groups.shape[1]
    layout = np.tile(centre, (n_variant, 1))
    if n_base and n_images:
        paired = pair_groups(base_groups, variant_groups, max_cells=max_cells)
        # where each image sits in the base graph: the mean of its nodes' positions
        counts = np.asarray(base_groups.sum(axis=1)).ravel()
        image_pos = np.asarray(base_groups @ base_layout) / np.maximum(counts, 1)[:, None]
        placed = counts > 0
        for v in np.flatnonzero(paired < 0).tolist():
            images = variant_groups[:, v].nonzero()[0]
            images = images[placed[images]]
            if len(images):
                layout[v] = image_pos[images].mean(axis=0)
        has = paired >= 0
        layout[has] = base_layout[paired[has]]
    return layout, paired
