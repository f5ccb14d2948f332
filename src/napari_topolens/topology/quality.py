"""Cluster quality numbers per layer (HOLE, Athreya & Rosen 2025).

Conventions, shared with :func:`napari_topolens.topology.hole.cluster_flow`:

* points whose true label is -1 (unknown) are left out of every number;
* predicted noise (-1) counts as one cluster of its own for purity, homogeneity,
  ARI and NMI, so calling everything noise is scored like one big cluster, not
  like perfect singletons; the silhouette leaves noise out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from napari_topolens.errors import EmptySelectionError, LayerError, TopoLensError

__all__ = ["Quality", "cluster_quality", "purity_score"]


@dataclass
class Quality:
    """Quality of one clustering against the true labels (nan where undefined)."""

    purity: float
    homogeneity: float
    ari: float
    nmi: float
    silhouette: float


def purity_score(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Fraction of points in their cluster's most frequent class.

    ``sum_k max_c n_kc / N``; every predicted id (noise -1 included) is one cluster.
    """
    t = np.asarray(labels_true).ravel()
    p = np.asarray(labels_pred).ravel()
    if len(t) == 0:
        return float("nan")
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    table = np.zeros((pi.max() + 1, ti.max() + 1), dtype=np.int64)
    np.add.at(table, (pi.ravel(), ti.ravel()), 1)
    return float(table.max(axis=1).sum() / len(t))


def cluster_quality(
    labels_true: ArrayLike,
    labels_pred: ArrayLike,
    points: ArrayLike | None = None,
    *,
    metric: str = "euclidean",
    silhouette_max_points: int = 2000,
    seed: int = 0,
    **metric_kw: int,
) -> Quality:
    """Purity, homogeneity, ARI, NMI and silhouette of a clustering.

    Parameters
    ----------
    labels_true : array (M,) of int
        True class per point, -1 = unknown (left out).
    labels_pred : array (M,) of int
        Predicted cluster per point, -1 = noise (one cluster of its own).
    points : array (M, D), optional
        The cloud, for the silhouette; without it the silhouette is nan.
    metric : str
        Silhouette metric: ``"euclidean"``/``"cosine"`` directly, the other metrics
        of :func:`napari_topolens.topology.metrics.distance_matrix` precomputed.
    silhouette_max_points : int
        The silhouette is O(n^2): above this many non-noise points a seeded random
        subsample is scored.
    **metric_kw
        Options of the metric; distances between the scored points are those of
        the whole cloud (see ``MetricSpace.submatrix``).
    seed : int

    Notes
    -----
    The silhouette ignores the true labels and uses every non-noise point; it is
    nan with fewer than two clusters, or when every cluster is a single point.
    """
    from sklearn.metrics import (
        adjusted_rand_score,
        homogeneity_score,
        normalized_mutual_info_score,
    )

    t = np.asarray(labels_true)
    p = np.asarray(labels_pred)
    if t.ndim != 1 or p.shape != t.shape:
        raise TopoLensError(
            "labels_true and labels_pred must be 1-D of the same length, "
            f"got {t.shape} and {p.shape}."
        )
    if len(t) == 0:
        raise EmptySelectionError("no points to score; select at least one image.")
    t = t.astype(np.int64)
    p = p.astype(np.int64)
    known = t >= 0
    if known.any():
        tk, pk = t[known], p[known]
        purity = purity_score(tk, pk)
        homogeneity = float(homogeneity_score(tk, pk))
        ari = float(adjusted_rand_score(tk, pk))
        nmi = float(normalized_mutual_info_score(tk, pk))
    else:
        purity = homogeneity = ari = nmi = float("nan")

    silhouette = float("nan")
    if points is not None:
        silhouette = _silhouette(
            points, p, metric, int(silhouette_max_points), int(seed), metric_kw
        )
    return Quality(purity=purity, homogeneity=homogeneity, ari=ari, nmi=nmi, silhouette=silhouette)


def _silhouette(
    points: ArrayLike,
    pred: np.ndarray,
    metric: str,
    max_points: int,
    seed: int,
    metric_kw: dict[str, int],
) -> float:
    from sklearn.metrics import silhouette_score

    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(pred):
        raise TopoLensError(
            f"points must be (M, D) with M = {len(pred)} rows, got shape {x.shape}."
        )
    if not np.all(np.isfinite(x)):
        raise LayerError(
            "the point cloud holds NaN or infinite values; drop non-finite rows first."
        )
    rows = np.flatnonzero(pred != -1)
    if len(rows) > max_points:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=max_points, replace=False))
    n_clusters = len(np.unique(pred[rows]))
    if n_clusters < 2 or n_clusters >= len(rows):
        return float("nan")
    if metric in ("euclidean", "cosine"):
        return float(silhouette_score(x[rows], pred[rows], metric=metric))
    # heavy: metrics imports scipy
    from napari_topolens.topology.metrics import MetricSpace

    dist = np.asarray(MetricSpace(x, metric, **metric_kw).submatrix(rows), dtype=np.float64)
    return float(silhouette_score(dist, pred[rows], metric="precomputed"))
