"""The three HOLE views of one layer as plain data (Athreya & Rosen 2025).

All three come from the H0 filtration, i.e. the single-linkage tree ``Z`` of the
cloud (scipy's ``linkage(X, "single")``; its merge heights are the finite H0
deaths):

* :func:`cluster_flow` cuts ``Z`` at a few thresholds (the stages of a Sankey
  diagram) and counts how points move between the clusters of consecutive stages;
* :func:`blob_graph` lays the cloud out in 2-D PCA and draws a padded, rounded
  convex hull around each cluster of one membership;
* :func:`heatmap_dendrogram` gives the single-linkage dendrogram and the distance
  matrix in the same leaf order, plus the members of every branch.

Cutting at threshold ``t`` follows ``scipy.cluster.hierarchy.fcluster(Z, t,
"distance")``: the clusters are the components after every merge of height
``<= t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from napari_topolens.errors import EmptySelectionError, LayerError, TopoLensError

__all__ = [
    "BlobGraph",
    "ClusterFlow",
    "Dendrogram",
    "blob_graph",
    "cluster_flow",
    "cut_linkage",
    "heatmap_dendrogram",
]

PURITY_WEIGHT = 0.7
HOMOGENEITY_WEIGHT = 0.3


# --------------------------------------------------------------------------- flow


@dataclass
class ClusterFlow:
    """Clusters of the H0 filtration at a few thresholds, and the flows between them.

    Attributes
    ----------
    stage_names : list of str
        ``["labels", "smallest", "best", "intermediate", "merged"]`` with labels,
        the same without ``"labels"`` otherwise.
    thresholds : ndarray (S,) float64
        Cut height of each stage; nan for the label stage.
    memberships : ndarray (S, M) int64
        Cluster of every point at each stage. Cluster stages number clusters by
        decreasing size (ties: lowest first point) and mark clusters of at most
        ``noise_size`` points -1 (noise). The label stage holds the labels as given
        (-1 = unknown).
    flows : ndarray (F, 4) int64
        Rows ``(s, a, b, count)``: ``count`` points are in cluster ``a`` at stage
        ``s`` and in cluster ``b`` at stage ``s + 1``; noise and unknown are -1.
        Sorted by ``(s, a, b)``; only positive counts.
    best_stage : int
        Index of the ``"best"`` stage.
    scores : ndarray (S,) float64
        With labels: ``0.7 * purity + 0.3 * homogeneity`` of each stage (noise as
        one cluster); nan for the label stage. Without labels: the gap score
        described in :func:`cluster_flow`.
    """

    stage_names: list[str]
    thresholds: np.ndarray
    memberships: np.ndarray
    flows: np.ndarray
    best_stage: int
    scores: np.ndarray


def _check_linkage(linkage: ArrayLike) -> np.ndarray:
    z = np.asarray(linkage, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != 4:
        raise TopoLensError(
            f"linkage must be a scipy linkage matrix (n - 1, 4), got shape {z.shape}."
        )
    if not np.all(np.isfinite(z)):
        raise LayerError(
            "the linkage holds NaN or infinite values; the point cloud must be finite."
        )
    if len(z):
        from scipy.cluster.hierarchy import is_valid_linkage

        if not is_valid_linkage(z):
            raise TopoLensError(
                "linkage is not a valid scipy linkage matrix; build it with "
                "scipy.cluster.hierarchy.linkage(X, 'single')."
            )
        if np.any(np.diff(z[:, 2]) < 0):
            raise TopoLensError(
                "linkage heights must be non-decreasing (a single-linkage tree); "
                "build it with linkage(X, 'single')."
            )
    return z


def cut_linkage(linkage: ArrayLike, threshold: float, *, noise_size: int = 0) -> np.ndarray:
    """Flat clusters after every merge of height ``<= threshold``.

    Clusters are numbered by decreasing size (ties: lowest first point); clusters
    of at most ``noise_size`` points are -1.
    """
    z = _check_linkage(linkage)
    return _cut(z, float(threshold), int(noise_size))


def _cut(z: np.ndarray, threshold: float, noise_size: int) -> np.ndarray:
    n = len(z) + 1
    parent = np.arange(2 * n - 1)
    # merges are in height order, so the applied ones are a prefix
    k = int(np.searchsorted(z[:, 2], threshold, side="right"))
    for i in range(k):
        parent[int(z[i, 0])] = n + i
        parent[int(z[i, 1])] = n + i
    root = parent.copy()
    # resolve roots top-down: a merge's parent has a larger index, so walk backwards
    for node in range(2 * n - 2, -1, -1):
        p = parent[node]
        if p != node:
            root[node] = root[p]
    return _renumber(root[:n], noise_size)


def _renumber(groups: np.ndarray, noise_size: int) -> np.ndarray:
    """Number groups by decreasing size (ties: lowest first member), small ones -1."""
    uniq, first, inverse, counts = np.unique(
        groups, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -counts))
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    out = rank[inverse.ravel()]
    noise = counts[inverse.ravel()] <= noise_size
    if noise.any():
        # keep the numbering dense over the clusters that stay
        kept = np.unique(out[~noise])
        remap = np.full(len(uniq), -1, dtype=np.int64)
        remap[kept] = np.arange(len(kept))
        out = remap[out]
    return out.astype(np.int64)


def child_counts_of(counts: list[dict[int, int] | None], i: int) -> dict[int, int]:
    found = counts[i]
    assert found is not None  # a cluster's counts live until it merges
    return found


def _class_codes(
    labels: np.ndarray, known: np.ndarray, n_known: int
) -> tuple[np.ndarray, int, float]:
    """Class index ``0..k-1`` of every point (unknown points: -1), ``k``, and the
    entropy ``H(C)`` of the known points' classes."""
    classes, cls = np.unique(np.where(known, labels, -1), return_inverse=True)
    offset = 1 if classes[0] == -1 else 0  # class index of label -1 is dropped
    cls = cls.ravel() - offset
    k = len(classes) - offset
    p = np.bincount(cls[known], minlength=k) / n_known
    p = p[p > 0]
    return cls, k, float(-(p * np.log(p)).sum())


def _score_scan(z: np.ndarray, labels: np.ndarray, noise_size: int) -> np.ndarray:
    """``0.7 * purity + 0.3 * homogeneity`` after each merge, in one pass.

    Noise (clusters of at most ``noise_size`` points) counts as one cluster; points
    with unknown label (-1) are left out of both numbers, as in
    :func:`napari_topolens.topology.quality.cluster_quality`. Entry ``i`` is the
    score with merges ``0..i`` applied. Each cluster keeps its class counts (a
    dict), their largest value and ``sum n_c log n_c``; merging the smaller dict
    into the larger makes the pass O(M log M) plus O(K) per merge for the noise.
    """
    n = len(z) + 1
    known = labels >= 0
    n_known = int(known.sum())
    if n_known == 0:
        return np.full(n - 1, np.nan)
    cls, k, h_c = _class_codes(labels, known, n_known)

    counts: list[dict[int, int] | None] = [None] * (2 * n - 1)
    peak = np.zeros(2 * n - 1)  # largest class count of each cluster
    xlogx = np.zeros(2 * n - 1)  # sum_c n_c log n_c (0 for singletons)
    tot = np.zeros(2 * n - 1)  # labelled points
    sizes = np.zeros(2 * n - 1, dtype=np.int64)
    sizes[:n] = 1
    for i in range(n):
        counts[i] = {int(cls[i]): 1} if known[i] else {}
        peak[i] = tot[i] = float(known[i])
    noise = np.zeros(max(k, 1))
    pur_sum = 0.0  # sum over real clusters of the largest class count
    ent_sum = 0.0  # sum over real clusters of n_k log n_k - sum_c n_kc log n_kc
    if noise_size >= 1:
        np.add.at(noise, cls[known], 1.0)
    else:
        pur_sum = float(peak[:n].sum())

    def ent(t: float, s: float) -> float:
        return t * np.log(t) - s if t > 0 else 0.0

    def score() -> float:
        nz = noise[noise > 0]
        t = nz.sum()
        noise_peak = nz.max() if len(nz) else 0.0
        noise_ent = ent(t, float((nz * np.log(nz)).sum())) if len(nz) else 0.0
        purity = (pur_sum + noise_peak) / n_known
        homog = 1.0 if h_c == 0 else 1.0 - ((ent_sum + noise_ent) / n_known) / h_c
        return PURITY_WEIGHT * purity + HOMOGENEITY_WEIGHT * homog

    after = np.empty(n - 1)
    for i in range(n - 1):
        new = n + i
        a, b = int(z[i, 0]), int(z[i, 1])
        for child in (a, b):
            child_counts = counts[child]
            assert child_counts is not None
            if sizes[child] <= noise_size:
                for c, v in child_counts.items():
                    noise[c] -= v
            else:
                pur_sum -= peak[child]
                ent_sum -= ent(tot[child], xlogx[child])
        if len(child_counts_of(counts, a)) < len(child_counts_of(counts, b)):
            a, b = b, a
        big, small = counts[a], counts[b]
        assert big is not None and small is not None  # merged children are retired once
        s, top = xlogx[a], peak[a]
        for c, v in small.items():
            old = big.get(c, 0)
            now = old + v
            s += now * np.log(now) - (old * np.log(old) if old else 0.0)
            big[c] = now
            top = max(top, now)
        counts[new], counts[a], counts[b] = big, None, None
        xlogx[new], peak[new], tot[new] = s, top, tot[a] + tot[b]
        sizes[new] = sizes[a] + sizes[b]
        if sizes[new] <= noise_size:
            for c, v in big.items():
                noise[c] += v
        else:
            pur_sum += peak[new]
            ent_sum += ent(tot[new], xlogx[new])
        after[i] = score()
    return after


def _n_real_clusters_scan(z: np.ndarray, noise_size: int) -> np.ndarray:
    """Number of clusters larger than ``noise_size`` after each merge."""
    n = len(z) + 1
    sizes = np.zeros(2 * n - 1, dtype=np.int64)
    sizes[:n] = 1
    real = n if noise_size < 1 else 0
    out = np.empty(n - 1, dtype=np.int64)
    for i in range(n - 1):
        a, b = int(z[i, 0]), int(z[i, 1])
        real -= int(sizes[a] > noise_size) + int(sizes[b] > noise_size)
        sizes[n + i] = sizes[a] + sizes[b]
        real += int(sizes[n + i] > noise_size)
        out[i] = real
    return out


def cluster_flow(
    linkage: ArrayLike, labels: ArrayLike | None = None, *, noise_size: int = 3
) -> ClusterFlow:
    """Cut the H0 filtration at a few thresholds and count the flows (HOLE's Sankey).

    Stages: the true labels (when given); the smallest H0 death; the best
    threshold; an intermediate one, the geometric mean of the best and the last
    merge height (arithmetic mean when the best is 0); the last merge height, where
    everything is one cluster.

    The best threshold is searched exactly over every distinct merge height:

    * with labels, it maximises ``0.7 * purity + 0.3 * homogeneity`` (noise counted
      as one cluster, unknown labels left out); among equal scores (within 1e-12)
      the largest threshold wins, i.e. the fewest clusters at that quality;
    * without labels, it sits in the largest gap of the merge heights: the score of
      height ``h_i`` is ``(h_{i+1} - h_i) / h_max`` (the gap up to the next distinct
      height), counted only where the cut leaves at least two clusters larger than
      ``noise_size``, so that a lone far outlier cannot win. If no cut does, the
      best is the last merge.

    Parameters
    ----------
    linkage : ndarray (M - 1, 4)
        Single-linkage matrix of the cloud (e.g. ``PersistenceResult.linkage``).
    labels : array (M,) of int, optional
        True class per point, -1 = unknown.
    noise_size : int
        Clusters of at most this many points are shown as noise (-1).
    """
    z = _check_linkage(linkage)
    n = len(z) + 1
    noise_size = int(noise_size)
    if noise_size < 0:
        raise TopoLensError(f"noise_size must be >= 0, got {noise_size}.")
    lab = None if labels is None else _checked_point_labels(labels, n)
    heights = z[:, 2]
    smallest, best_t, inter_t, top, merge_score = _stage_thresholds(z, lab, noise_size)

    def stage_score(t: float) -> float:
        k = int(np.searchsorted(heights, t, side="right")) - 1
        return float(merge_score[k]) if 0 <= k < len(merge_score) else float("nan")

    names: list[str] = []
    thresholds: list[float] = []
    rows: list[np.ndarray] = []
    scores: list[float] = []
    if lab is not None:
        names.append("labels")
        thresholds.append(np.nan)
        rows.append(lab.copy())
        scores.append(np.nan)
    for name, t in (
        ("smallest", smallest),
        ("best", best_t),
        ("intermediate", inter_t),
        ("merged", top),
    ):
        names.append(name)
        thresholds.append(t)
        rows.append(_cut(z, t, noise_size))
        scores.append(stage_score(t))
    memberships = np.stack(rows).astype(np.int64)
    return ClusterFlow(
        stage_names=names,
        thresholds=np.asarray(thresholds, dtype=np.float64),
        memberships=memberships,
        flows=_flows(memberships),
        best_stage=names.index("best"),
        scores=np.asarray(scores, dtype=np.float64),
    )


def _checked_point_labels(labels: ArrayLike, n: int) -> np.ndarray:
    """One class id per point of the linkage, as int64 (-1 = unknown)."""
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise TopoLensError(
            f"labels must have one entry per point of the linkage ({n}), got shape {lab.shape}."
        )
    lab = lab.astype(np.int64)
    if np.any(lab < -1):
        raise TopoLensError("labels must be class ids >= 0, or -1 for unknown.")
    return lab


def _stage_thresholds(
    z: np.ndarray, lab: np.ndarray | None, noise_size: int
) -> tuple[float, float, float, float, np.ndarray]:
    """The cut heights (smallest, best, intermediate, merged) and the score after each
    merge, as :func:`cluster_flow` describes them."""
    n = len(z) + 1
    heights = z[:, 2]
    if n == 1:
        return 0.0, 0.0, 0.0, 0.0, np.zeros(0)
    smallest, top = float(heights[0]), float(heights[-1])
    # a cut at height t applies every merge up to the last one of height <= t
    last = np.flatnonzero(np.r_[heights[1:] != heights[:-1], True])
    if lab is not None and bool(np.any(lab >= 0)):
        merge_score = _score_scan(z, lab, noise_size)
        cand = merge_score[last]
        pick = int(np.flatnonzero(cand >= np.nanmax(cand) - 1e-12)[-1])
        best_t = float(heights[last[pick]])
    else:
        real = _n_real_clusters_scan(z, noise_size)[last]
        gap = np.r_[np.diff(heights[last]), 0.0] / (top if top > 0 else 1.0)
        merge_score = np.full(n - 1, np.nan)
        merge_score[last] = np.where(real >= 2, gap, 0.0)
        cand = np.where(real >= 2, gap, -np.inf)
        pick = int(np.argmax(cand))
        best_t = float(heights[last[pick]]) if cand[pick] > 0 else top
    inter_t = float(np.sqrt(best_t * top)) if best_t > 0 else 0.5 * (best_t + top)
    return smallest, best_t, inter_t, top, merge_score


def _flows(memberships: np.ndarray) -> np.ndarray:
    out = []
    for s in range(len(memberships) - 1):
        pair_rows = np.stack([memberships[s], memberships[s + 1]], axis=1)
        pairs, counts = np.unique(pair_rows, axis=0, return_counts=True)
        out.append(np.column_stack([np.full(len(pairs), s), pairs, counts]))
    if not out:
        return np.zeros((0, 4), dtype=np.int64)
    return np.concatenate(out).astype(np.int64)


# --------------------------------------------------------------------------- blobs


@dataclass
class BlobGraph:
    """A 2-D PCA layout of the cloud with a padded, rounded hull per cluster.

    Attributes
    ----------
    coords : ndarray (M, 2) float64
        PCA scores; each axis's largest-magnitude loading is positive.
    cluster : ndarray (M,) int64
        The membership the hulls are drawn for (noise as ``noise_label``).
    labels : ndarray (M,) int64
        True labels to colour points by, -1 unknown.
    hull_clusters : ndarray (K,) int64
        Cluster id of each hull, ascending; noise has none.
    hulls : list of ndarray (k, 2)
        Closed polygons (first vertex == last), counter-clockwise.
    explained_variance : ndarray (2,)
        Explained variance ratio of the two axes.
    """

    coords: np.ndarray
    cluster: np.ndarray
    labels: np.ndarray
    hull_clusters: np.ndarray
    hulls: list[np.ndarray]
    explained_variance: np.ndarray


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centred = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), 2)), np.zeros(2)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2
    total = var.sum()
    ratio = np.zeros(2)
    k = min(2, len(vt))
    if total > 0:
        ratio[:k] = var[:k] / total
    vt = vt[:k]
    sign = np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])
    sign[sign == 0] = 1.0
    coords = np.zeros((len(x), 2))
    coords[:, :k] = centred @ (vt * sign[:, None]).T
    return coords, ratio


def _rounded_hull(pts: np.ndarray, radius: float, n_arc: int = 24) -> np.ndarray:
    """Convex hull of ``pts`` grown by a disc of ``radius`` (Minkowski sum), closed.

    Every input point lies at least ``radius * cos(pi / n_arc)`` inside the
    polygon, so the padding is strict and the corners come out round.
    """
    from scipy.spatial import ConvexHull, QhullError

    angles = np.linspace(0.0, 2.0 * np.pi, n_arc, endpoint=False)
    disc = radius * np.column_stack([np.cos(angles), np.sin(angles)])
    try:
        base = pts[ConvexHull(pts).vertices] if len(pts) >= 3 else pts
    except QhullError:  # collinear or repeated points
        base = pts
    base = np.unique(base, axis=0)
    grown = (base[:, None, :] + disc[None, :, :]).reshape(-1, 2)
    ring = grown[ConvexHull(grown).vertices]  # counter-clockwise in 2-D
    return np.vstack([ring, ring[:1]])


def blob_graph(
    points: ArrayLike,
    cluster: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    pad: float = 0.15,
    noise_label: int = -1,
) -> BlobGraph:
    """HOLE's blob graph: 2-D PCA of the cloud and a padded hull around each cluster.

    Each hull is the cluster's convex hull grown by a disc whose radius is
    ``pad`` times the hull's extent (the larger side of its bounding box), and at
    least 2 % of the whole layout's extent so that clusters of one or two points
    get a small circle or capsule. Growing by a disc keeps the hull convex, rounds
    its corners (the smoothing) and keeps every member strictly inside.

    Parameters
    ----------
    points : array (M, D)
    cluster : array (M,) of int
        Membership to draw, e.g. ``ClusterFlow.memberships[best_stage]``.
    labels : array (M,) of int, optional
        True labels for the point colours (-1 unknown).
    pad : float
        Padding as a fraction of each hull's extent (~15 % in HOLE).
    noise_label : int
        The cluster id that gets no hull.
    """
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise EmptySelectionError(f"points must be a non-empty (M, D) array, got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise LayerError(
            "the point cloud holds NaN or infinite values; drop non-finite rows first."
        )
    m = len(x)
    cl = np.asarray(cluster)
    if cl.shape != (m,):
        raise TopoLensError(f"cluster must have one entry per point ({m}), got shape {cl.shape}.")
    cl = cl.astype(np.int64)
    if labels is None:
        lab = np.full(m, -1, dtype=np.int64)
    else:
        lab = np.asarray(labels)
        if lab.shape != (m,):
            raise TopoLensError(
                f"labels must have one entry per point ({m}), got shape {lab.shape}."
            )
        lab = lab.astype(np.int64)
    if not (np.isfinite(pad) and pad >= 0):
        raise TopoLensError(f"pad must be a non-negative fraction, got {pad}.")

    coords, ratio = _pca2(x)
    layout_extent = float(np.ptp(coords, axis=0).max()) if m > 1 else 0.0
    min_radius = 0.02 * layout_extent if layout_extent > 0 else 1e-3
    ids = np.unique(cl[cl != noise_label])
    hulls = []
    for c in ids:
        pts = coords[cl == c]
        extent = float(np.ptp(pts, axis=0).max())
        hulls.append(_rounded_hull(pts, max(pad * extent, min_radius)))
    return BlobGraph(
        coords=coords,
        cluster=cl,
        labels=lab,
        hull_clusters=ids.astype(np.int64),
        hulls=hulls,
        explained_variance=ratio,
    )


# ----------------------------------------------------------------------- dendrogram


@dataclass
class Dendrogram:
    """The single-linkage dendrogram beside the distance matrix (HOLE's heatmap view).

    Attributes
    ----------
    index : ndarray (n,) int64
        Cloud rows shown (a seeded subsample when the cloud is larger), ascending.
    linkage : ndarray (n - 1, 4)
        Single-linkage matrix over the shown points (leaf ``j`` is ``index[j]``).
    order : ndarray (n,) int64
        Display order of the heatmap rows/columns, as positions into ``index``:
        the dendrogram's leaf order, or reverse Cuthill–McKee order.
    leaves : ndarray (n,) int64
        The dendrogram's leaf order (equals ``order`` for ``"dendrogram"``).
    distances : ndarray (n, n) float32
        ``D[order][:, order]``.
    icoord, dcoord : ndarray (n - 1, 4)
        The branch drawn for linkage row ``i`` (scipy's convention: leaves at
        x = 5, 15, 25, ... in ``leaves`` order; ``[x_left, x_left, x_right,
        x_right]`` and ``[h_left, h, h, h_right]``).
    members, member_offsets : ndarray int64
        CSR, for each linkage row the cloud rows under that branch, in leaf order
        (they are a contiguous run of ``index[leaves]``).
    ordering : str
        ``"dendrogram"`` or ``"rcm"``.
    metric : str
    note : str
        Which points are shown, e.g. ``"300 of 100,000 points, drawn at random
        (seed 0)"``, so that views and the report can say the tree is of a
        subsample (its heights are those of the whole cloud's metric).
    """

    index: np.ndarray
    linkage: np.ndarray
    order: np.ndarray
    leaves: np.ndarray
    distances: np.ndarray
    icoord: np.ndarray
    dcoord: np.ndarray
    members: np.ndarray
    member_offsets: np.ndarray
    ordering: str
    metric: str
    note: str = ""

    def branch_members(self, merge: int) -> np.ndarray:
        """Cloud rows under linkage row ``merge``."""
        return self.members[self.member_offsets[merge] : self.member_offsets[merge + 1]]


def heatmap_dendrogram(
    points: ArrayLike,
    *,
    metric: str = "euclidean",
    order: str = "dendrogram",
    max_points: int = 300,
    seed: int = 0,
    n_neighbors: int = 10,
    **metric_kw: int,
) -> Dendrogram:
    """Single-linkage dendrogram and distance heatmap of (a subsample of) the cloud.

    Parameters
    ----------
    points : array (M, D)
    metric : str
        ``"euclidean"`` (scipy ``pdist``) or any metric of
        :func:`napari_topolens.topology.metrics.distance_matrix`.
    order : {"dendrogram", "rcm"}
        Heatmap order: the dendrogram's leaves (blocks on the diagonal are the
        clusters), or reverse Cuthill–McKee on the symmetrised
        ``n_neighbors``-nearest-neighbour graph of the distances (a band-limited
        matrix that shows chains and manifolds).
    max_points : int
        More points are subsampled uniformly at random with ``seed`` (a dense
        heatmap of thousands of rows is unreadable and O(n^2)).
    n_neighbors : int
        k of the kNN graph for ``"rcm"``, and of the geodesic metric's graph.
    **metric_kw
        Other options of the metric (``pca_dims``, ``density_k``). The
        distances between the shown points are those of the whole cloud (geodesics
        through its full kNN graph, whitening and density scales from all points),
        so the tree is the H0 filtration of the layer restricted to these points.
    """
    from scipy.cluster.hierarchy import leaves_list
    from scipy.cluster.hierarchy import linkage as scipy_linkage
    from scipy.spatial.distance import squareform

    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise EmptySelectionError(f"points must be a non-empty (M, D) array, got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise LayerError(
            "the point cloud holds NaN or infinite values; drop non-finite rows first."
        )
    if order not in ("dendrogram", "rcm"):
        raise TopoLensError(f"order must be 'dendrogram' or 'rcm', got {order!r}.")
    if int(max_points) < 1:
        raise TopoLensError(f"max_points must be at least 1, got {max_points}.")
    index, note = _shown_points(len(x), max_points, seed)
    n = len(index)
    dist = _shown_distances(x, index, metric, n_neighbors, metric_kw)
    if n > 1:
        z = scipy_linkage(squareform(dist, checks=False), method="single")
        leaves = leaves_list(z).astype(np.int64)
    else:
        z = np.zeros((0, 4))
        leaves = np.zeros(1, dtype=np.int64)

    display = _rcm_order(dist, n_neighbors) if order == "rcm" and n > 2 else leaves

    icoord, dcoord, members, offsets = _branches(z, leaves, index)
    return Dendrogram(
        index=index,
        linkage=z,
        order=display,
        leaves=leaves,
        distances=dist[np.ix_(display, display)].astype(np.float32),
        icoord=icoord,
        dcoord=dcoord,
        members=members,
        member_offsets=offsets,
        ordering=order,
        metric=metric,
        note=note,
    )


def _shown_points(m: int, max_points: int, seed: int) -> tuple[np.ndarray, str]:
    """Rows the heatmap shows (all, or ``max_points`` drawn with ``seed``) and a note."""
    if m > max_points:
        rng = np.random.default_rng(seed)
        index = np.sort(rng.choice(m, size=int(max_points), replace=False)).astype(np.int64)
        note = (
            f"{len(index):,} of {m:,} points, drawn at random (seed {seed}): "
            f"a heatmap of more is unreadable and O(n²)"
        )
    else:
        index = np.arange(m, dtype=np.int64)
        note = f"all {m:,} points"
    return index, note


def _shown_distances(
    x: np.ndarray, index: np.ndarray, metric: str, n_neighbors: int, metric_kw: dict[str, int]
) -> np.ndarray:
    """Square distances between the shown rows, under the metric of the whole cloud."""
    from scipy.spatial.distance import pdist, squareform

    if metric == "euclidean":
        return squareform(pdist(x[index])) if len(index) > 1 else np.zeros((1, 1))
    # heavy: metrics imports scipy
    from napari_topolens.topology.metrics import MetricSpace

    space = MetricSpace(x, metric, n_neighbors=n_neighbors, **metric_kw)
    return np.asarray(space.submatrix(index), dtype=np.float64)


def _rcm_order(dist: np.ndarray, n_neighbors: int) -> np.ndarray:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    n = len(dist)
    k = max(1, min(int(n_neighbors), n - 1))
    d = dist.copy()
    np.fill_diagonal(d, np.inf)
    nbr = np.argpartition(d, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    graph = sp.csr_matrix((np.ones(n * k), (rows, nbr.ravel())), shape=(n, n))
    graph = ((graph + graph.T) > 0).astype(np.float64).tocsr()
    return np.asarray(reverse_cuthill_mckee(graph, symmetric_mode=True), dtype=np.int64)


def _branches(
    z: np.ndarray, leaves: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per linkage row: the drawn branch (scipy's coordinates) and its leaf range."""
    n = len(leaves)
    position = np.empty(n, dtype=np.int64)
    position[leaves] = np.arange(n)
    n_merges = len(z)
    x = np.zeros(n + n_merges)
    h = np.zeros(n + n_merges)
    lo = np.zeros(n + n_merges, dtype=np.int64)
    hi = np.zeros(n + n_merges, dtype=np.int64)
    x[:n] = 5.0 + 10.0 * position
    lo[:n] = position
    hi[:n] = position + 1
    icoord = np.zeros((n_merges, 4))
    dcoord = np.zeros((n_merges, 4))
    for i in range(n_merges):
        a, b = int(z[i, 0]), int(z[i, 1])
        if lo[a] > lo[b]:  # left child is the one whose leaves come first
            a, b = b, a
        node = n + i
        h[node] = z[i, 2]
        x[node] = 0.5 * (x[a] + x[b])
        lo[node] = lo[a]
        hi[node] = hi[b]
        icoord[i] = (x[a], x[a], x[b], x[b])
        dcoord[i] = (h[a], h[node], h[node], h[b])
    sizes = hi[n:] - lo[n:]
    offsets = np.zeros(n_merges + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    shown = index[leaves]
    members = (
        np.concatenate([shown[lo[n + i] : hi[n + i]] for i in range(n_merges)])
        if n_merges
        else np.zeros(0, dtype=np.int64)
    )
    return icoord, dcoord, members.astype(np.int64), offsets
