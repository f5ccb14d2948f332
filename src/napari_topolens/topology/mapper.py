"""Mapper graphs of one layer's point cloud (TopoAct; Purvine et al. 2022).

The cover is kmapper's (``KeplerMapper.map`` with a ``Cover``); each interval is
clustered with DBSCAN. kmapper's nerve compares every pair of nodes, so it is
replaced here by a no-op and the edges are built from the point/node incidence
matrix instead (``B @ B.T``), whose cost follows the number of (point, node) pairs,
not the square of the number of nodes (docs/methods.md §3).

scikit-learn's ``DBSCAN`` holds the eps-neighbourhood of every point of an interval
at once (at 50,000 activation points that exceeds 12 GB). :class:`BoundedDBSCAN`
gives the same labels in bounded memory, by one of two routes. Where scikit-learn
would compare all pairs anyway (more than 15 dimensions) or the eps-balls are too
big to hold (activation clouds: the low-norm interval of a ReLU layer puts most of
its points in every ball), all pairs are tested a block of rows at a time from one
float32 matrix product, and only pairs near ``eps`` are decided in float64; no ball
is ever listed. Otherwise the balls come from scikit-learn's tree a chunk of rows at
a time, within a fixed number of neighbour entries.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike

from napari_topolens.errors import EmptySelectionError, LayerError, TopoLensError
from napari_topolens.topology.mst import join_components

__all__ = [
    "LENSES",
    "NODE_ID",
    "BoundedDBSCAN",
    "MapperGraph",
    "MapperNode",
    "dbscan_labels",
    "dbscan_labels_and_core",
    "knee_eps",
    "mapper_graph",
]

LENSES = ("l2norm", "pca1", "pca2", "probability")

#: ``rows -> (neighbours, counts)``: the eps-balls of some rows, flattened, and their sizes.
_BallsOf: TypeAlias = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
#: ``(chunk rows, flat neighbours, per-row counts or slots)``: one piece of a ball listing.
_Chunk: TypeAlias = tuple[np.ndarray, np.ndarray, np.ndarray]

#: The name kepler-mapper gives a node: ``cube<i>_cluster<j>`` (hypercube i, its cluster j).
NODE_ID = re.compile(r"^cube(\d+)_cluster(\d+)$")
# The memory of one interval's DBSCAN, in neighbour entries. The blocked route
# tests an eighth of it in pairs at a time (a float32, three bools and at worst two
# int64 indices each: about 100 MB). The ball route holds that many int32
# neighbour entries (128 MB): when all the eps-balls of an interval fit, they are
# computed once, otherwise the core points' balls are computed again for each of
# the two later passes; core-core pairs that join clusters are merged each time an
# eighth of it has gathered.
NEIGHBOR_BUDGET = 32_000_000
_U32 = float(np.finfo(np.float32).eps)  # float32 rounding unit, as in topology.mst
_U64 = float(np.finfo(np.float64).eps)
# Above this many points the knee is that of a seeded sample of KNEE_SAMPLE points'
# exact k-distances (an exact k-NN of every point of a 1M x 256 cloud is 1e12 pairs).
KNEE_EXACT_MAX = 20_000
KNEE_SAMPLE = 4096
# Principal axes of the KD-tree that finds the eps-balls in more than 15 dimensions.
PROJECTED_AXES = 16
# The blocked all-pairs test is taken instead when the tree lists more than this
# share of the points per point. Both routes test pairs with the same float32
# product; the projected one tests a few times the listed pairs (half of them, by
# symmetry), the blocked one half of all pairs. Measured at 28,208 points x 256
# (the 1M cloud's first interval), 318 listed per point (1/89): 2.3 CPU-s on the
# projected route, 14.4 in blocks; in proportion about 10 at a share of 1/20.
BIG_BALL_SHARE = 1 / 20
# Below this many points an interval's blocks are as fast as the tree (at 23,518
# points x 256: 9.3 CPU-s in blocks, 10 on the tree), and the tree's build is spared.
PROJECTED_MIN = 20_000
# The projected route's blocks: rows tested together (in the tree's leaf order),
# and the runs of columns whose bounding boxes are tested against theirs.
ROW_BLOCK = 256
COLUMN_BLOCK = 32
# Threads that test the projected route's blocks (the answer does not depend on it).
PROJECTED_THREADS = 4


@dataclass(frozen=True)
class MapperNode:
    """A read-only view of one node of a :class:`MapperGraph`."""

    id: str
    index: int
    members: np.ndarray
    size: int
    class_counts: np.ndarray
    purity: float
    mean_lens: float
    dominant_class: int


@dataclass
class MapperGraph:
    """The Mapper graph of one point cloud.

    Attributes
    ----------
    node_ids : list of str
        kmapper's names (``"cube{i}_cluster{j}"``), ordered by ``(i, j)`` numerically.
    members, member_offsets : ndarray of int64
        CSR member lists: rows of the point cloud in node ``n`` are
        ``members[member_offsets[n]:member_offsets[n + 1]]`` (sorted).
    size : ndarray (n_nodes,) int64
    class_counts : ndarray (n_nodes, n_classes) int64
        Known labels only (points labelled -1 are not counted); ``n_classes`` is 0
        without labels.
    purity : ndarray (n_nodes,) float64
        Largest class count / number of labelled members; nan without labels or
        when a node has no labelled member.
    dominant_class : ndarray (n_nodes,) int64
        Most frequent class (lowest id on ties); -1 without labels.
    mean_lens : ndarray (n_nodes,) float64
        Mean of the first lens coordinate over the members.
    mean_activation : ndarray (n_nodes, D) float32
    edges : ndarray (E, 2) int64
        Node index pairs ``(a, b)`` with ``a < b``, sorted lexicographically.
    edge_weight : ndarray (E,) float64
        Jaccard overlap ``|A ∩ B| / |A ∪ B|`` of the two member sets.
    component : ndarray (n_nodes,) int64
        Connected component, numbered in order of their first node.
    community : ndarray (n_nodes,) int64
        Louvain community on the Jaccard weights (seeded), numbered by decreasing
        size, ties by first node.
    lens : ndarray (M,) float64
        The first lens coordinate of every point (PC1 for ``"pca2"``).
    lens_components : ndarray (M, L) float64
        All lens coordinates used for the cover (``L = 2`` for ``"pca2"``, else 1).
    params : dict
        Everything used: lens, n_cubes, perc_overlap, min_samples, eps,
        eps_source (``"given"``, ``"knee"``, ``"median"``), seed, and ``note`` for
        degenerate input.
    """

    node_ids: list[str]
    members: np.ndarray
    member_offsets: np.ndarray
    size: np.ndarray
    class_counts: np.ndarray
    purity: np.ndarray
    dominant_class: np.ndarray
    mean_lens: np.ndarray
    mean_activation: np.ndarray
    edges: np.ndarray
    edge_weight: np.ndarray
    component: np.ndarray
    community: np.ndarray
    lens: np.ndarray
    lens_components: np.ndarray
    params: dict[str, Any]

    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    def node_members(self, node: int) -> np.ndarray:
        """Rows of the point cloud in node number ``node``."""
        return self.members[self.member_offsets[node] : self.member_offsets[node + 1]]

    @property
    def nodes(self) -> list[MapperNode]:
        return [
            MapperNode(
                id=node_id,
                index=i,
                members=self.node_members(i),
                size=int(self.size[i]),
                class_counts=self.class_counts[i],
                purity=float(self.purity[i]),
                mean_lens=float(self.mean_lens[i]),
                dominant_class=int(self.dominant_class[i]),
            )
            for i, node_id in enumerate(self.node_ids)
        ]


def _as_cloud(points: ArrayLike) -> np.ndarray:
    """The cloud as float64, or as float32 when given so (a 1M x 256 layer is 1 GB
    in float32: it is not copied; exact decisions read its values in float64)."""
    x = np.asarray(points)
    if x.dtype != np.float32:
        x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise TopoLensError(
            f"points must be an (M, D) array, got shape {x.shape}; pass one row per point."
        )
    if len(x) == 0 or x.shape[1] == 0:
        raise EmptySelectionError(
            f"the point cloud is empty (shape {x.shape}); select at least one image and a layer with outputs."
        )
    if not all(np.isfinite(x[s : s + 65536]).all() for s in range(0, len(x), 65536)):
        raise LayerError(
            "the point cloud holds NaN or infinite values; check the layer's output "
            "(or the model's weights) and drop non-finite rows before the analysis."
        )
    return x


def knee_eps(points: ArrayLike, min_samples: int = 5) -> float:
    """DBSCAN ``eps`` from the knee of the sorted k-distance curve.

    The k-distance of a point is its distance to the ``min_samples``-th nearest
    point counting itself, i.e. the smallest ``eps`` that makes it a DBSCAN core
    point. The curve is sorted and both axes scaled to [0, 1]; the knee is the point
    farthest from the chord joining the curve's ends. When there is no clear knee
    (that distance is below 0.05, a near straight curve) or it lands on 0, the
    median k-distance is returned instead (docs/methods.md §3).

    Returns
    -------
    float
        A positive ``eps``.
    """
    eps, _ = _knee_eps(_as_cloud(points), int(min_samples))
    return eps


def _knee_eps(x: np.ndarray, min_samples: int) -> tuple[float, str]:
    if min_samples < 1:
        raise TopoLensError(f"min_samples must be at least 1, got {min_samples}.")
    n = len(x)
    if n < 2:
        raise EmptySelectionError(
            "knee_eps needs at least 2 points; select more images or positions."
        )
    k = min(min_samples, n)
    if n > KNEE_EXACT_MAX:
        # the curve of a seeded sample of points, each k-distance exact against the
        # whole cloud: the sample's empirical curve is within sqrt(ln(2 / a) / 2S)
        # of the whole cloud's quantiles with probability 1 - a (DKW; 0.021 for
        # S = 4096, a = 0.05)
        rows = np.sort(np.random.default_rng(0).choice(n, KNEE_SAMPLE, replace=False))
        kdist_sq = _ProjectedBalls(x, 0.0).kdistances(rows, k)
    else:
        kdist_sq = _exact_kdistances(x, k)
    return _knee_of(kdist_sq)


def _exact_kdistances(x: np.ndarray, k: int) -> np.ndarray:
    """Squared k-distances of every point (itself counted), exact."""
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    _, index = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    # the k-distances again, exactly: scikit-learn's brute search rounds them
    # through |x|^2 + |y|^2 - 2 x.y, and may order near-equal neighbours wrongly,
    # so the k-th is the largest exact distance of the k found
    kdist_sq = np.zeros(n)
    rows = np.arange(n)
    for column in index.T:
        np.maximum(kdist_sq, _exact_squared(x, rows, column), out=kdist_sq)
    return kdist_sq


def _knee_of(kdist_sq: np.ndarray) -> tuple[float, str]:
    """The knee eps of squared k-distances, as :func:`knee_eps` describes it."""
    n = len(kdist_sq)
    kdist_sq = np.sort(kdist_sq)
    kdist = np.sqrt(kdist_sq)
    positive = kdist[kdist > 0]
    tiny = float(positive.min()) if len(positive) else 1e-12
    median = float(np.median(kdist))
    source = "median"
    eps = median
    span = kdist[-1] - kdist[0]
    if n >= 3 and span > 0:
        t = np.linspace(0.0, 1.0, n)
        y = (kdist - kdist[0]) / span
        # distance of (t, y) to the chord y = t, up to the constant 1/sqrt(2)
        gap = np.abs(y - t) / np.sqrt(2.0)
        i = int(np.argmax(gap))
        if gap[i] >= 0.05 and kdist[i] > 0:
            eps, source = float(kdist[i]), "knee"
    if eps <= 0:
        eps = tiny
    # DBSCAN tests sum((x - y)**2) <= eps * eps: every point whose k-distance is at
    # most eps must be core at it, so eps is raised (by an ulp or two at most)
    # until its square reaches their squared k-distances
    while True:
        reached = int(np.searchsorted(kdist, eps, side="right"))
        if not reached or eps * eps >= kdist_sq[reached - 1]:
            break
        eps = float(np.nextafter(eps, np.inf))
    return eps, source


def _lens(
    x: np.ndarray,
    lens: str,
    lens_values: ArrayLike | None,
    probabilities: ArrayLike | None,
) -> tuple[np.ndarray, str]:
    m = len(x)
    if lens_values is not None:
        v = np.asarray(lens_values, dtype=np.float64)
        if v.ndim == 1:
            v = v[:, None]
        if v.ndim != 2 or len(v) != m:
            raise TopoLensError(
                f"lens_values must have one value (or row) per point: {m}, got shape {v.shape}."
            )
        if not np.all(np.isfinite(v)):
            raise TopoLensError("lens_values hold NaN or infinite values; pass finite values.")
        return v, "custom"
    if lens == "l2norm":
        # in float64 for a float32 cloud too (the same lens as its float64 copy's)
        norms = np.empty(m)
        for s in range(0, m, 65536):
            norms[s : s + 65536] = np.linalg.norm(x[s : s + 65536].astype(np.float64), axis=1)
        return norms[:, None], lens
    if lens in ("pca1", "pca2"):
        n_comp = 1 if lens == "pca1" else 2
        if x.shape[1] < n_comp:
            raise TopoLensError(
                f"lens {lens!r} needs at least {n_comp} dimensions, the cloud has {x.shape[1]}; "
                "use 'pca1' or 'l2norm'."
            )
        return _pca(np.asarray(x, dtype=np.float64), n_comp), lens
    if lens == "probability":
        if probabilities is None:
            raise TopoLensError(
                "lens 'probability' needs probabilities (M, K) (the model's softmax outputs "
                "per point); pass them or use another lens."
            )
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 2 or len(p) != m:
            raise TopoLensError(
                f"probabilities must be (M, K) with M = {m} points, got shape {p.shape}."
            )
        if not np.all(np.isfinite(p)):
            raise TopoLensError(
                "probabilities hold NaN or infinite values; pass finite softmax outputs."
            )
        return p.max(axis=1)[:, None], lens
    raise TopoLensError(f"unknown lens {lens!r}; use one of {LENSES} or pass lens_values.")


def _pca(x: np.ndarray, n_components: int) -> np.ndarray:
    """PCA scores with a fixed sign: each axis's largest-magnitude loading is positive."""
    centred = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), n_components))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:n_components]
    if vt.shape[0] < n_components:
        vt = np.vstack([vt, np.zeros((n_components - vt.shape[0], x.shape[1]))])
    rows = np.arange(len(vt))
    sign = np.sign(vt[rows, np.argmax(np.abs(vt), axis=1)])
    sign[sign == 0] = 1.0
    return centred @ (vt * sign[:, None]).T


def _exact_squared(x: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``sum((x[p] - x[q])**2)`` in float64 per pair, coordinate by coordinate as
    scikit-learn's trees sum it (float32 clouds are read in float64), a few
    million coordinates at a time."""
    out = np.empty(len(p))
    step = max(16, (4 << 20) // max(x.shape[1], 1))
    for s in range(0, len(p), step):
        sl = slice(s, s + step)
        diff = (x[p[sl]].astype(np.float64) - x[q[sl]].astype(np.float64)).T
        total = np.zeros(diff.shape[1])
        for row in diff:
            total += row * row
        out[sl] = total
    return out


def _sklearn_balls(x: np.ndarray, eps: float) -> _BallsOf:
    """``rows -> (neighbours, counts)``: the eps-balls from scikit-learn's tree."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(radius=float(eps)).fit(x)

    def balls_of(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = index.radius_neighbors(x[rows], return_distance=False)
        counts = np.fromiter((len(v) for v in found), dtype=np.int64, count=len(found))
        flat = (
            np.concatenate([np.asarray(v, dtype=np.int64) for v in found]).astype(np.int32)
            if len(found)
            else np.zeros(0, np.int32)
        )
        return flat, counts

    return balls_of


def _top_axes(scatter: np.ndarray, axes: int) -> np.ndarray:
    """Orthonormal (d, axes): the scatter's top eigenvectors, by subspace iteration
    (matrix products and a thin QR). Any orthonormal axes keep the balls exact; the
    top ones make the tree's balls tight. LAPACK's full eigensolver is avoided: with
    two OpenBLAS threads on a loaded machine it took 0.9 CPU-s for 256 x 256."""
    d = len(scatter)
    if axes >= d:
        return np.eye(d)
    width = min(d, axes + 8)
    q = np.linalg.qr(scatter @ np.random.default_rng(0).normal(size=(d, width)))[0]
    for _ in range(6):
        q = np.linalg.qr(scatter @ q)[0]
    values, vectors = np.linalg.eigh(q.T @ scatter @ q)
    top = q @ vectors[:, np.argsort(values)[::-1][:axes]]
    # re-orthonormalised: the Ritz vectors are orthonormal only to rounding
    return np.linalg.qr(top)[0]


def _threads() -> int:
    """Threads for the stages spread over threads: ``PROJECTED_THREADS``, at most
    the cores this process may use (the answers never depend on it)."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, min(PROJECTED_THREADS, len(usable) if usable else os.cpu_count() or 1))


def _project_rows(
    x: np.ndarray,
    mean: np.ndarray,
    basis: np.ndarray,
    sq: np.ndarray,
    y: np.ndarray,
    rsq: np.ndarray,
) -> float:
    """Fills ``sq`` (|x|²), ``y`` (the axis coordinates of x - mean) and ``rsq`` (the
    residual's |r|²) 16,384 rows at a time on :func:`_threads` threads, each with one
    BLAS thread (every chunk computed alike whatever the thread count); returns the
    largest |x - mean|²."""
    from threadpoolctl import threadpool_limits

    def chunk(s: int) -> float:
        raw = x[s : s + 16384].astype(np.float64)
        sq[s : s + len(raw)] = np.einsum("ij,ij->i", raw, raw)
        c = raw - mean
        del raw
        yc = c @ basis
        y[s : s + len(c)] = yc
        cc = np.einsum("ij,ij->i", c, c)
        rsq[s : s + len(c)] = np.maximum(cc - np.einsum("ij,ij->i", yc, yc), 0.0)
        return float(cc.max())

    starts = range(0, len(x), 16384)
    with threadpool_limits(limits=1, user_api="blas"):
        if _threads() == 1 or len(starts) == 1:
            return max(map(chunk, starts), default=0.0)
        with ThreadPoolExecutor(max_workers=_threads()) as pool:
            return max(pool.map(chunk, starts), default=0.0)


class _ProjectedBalls:
    """Exact eps-balls and k-distances in many dimensions, from a KD-tree on the
    cloud's top principal axes.

    A point is ``mean + V y + r`` with ``r`` orthogonal to the axes ``V``, so
    ``|x - x'|² = |y - y'|² + |r - r'|²`` with ``(|r| - |r'|)² <= |r - r'|² <=
    (|r| + |r'|)²``. The tree lists the points within eps in ``y`` (a superset of the
    ball); the two bounds decide most of them, and a pair they leave open (within a
    margin far above float64 rounding of eps²) is decided from its coordinates:
    ``sum((x - x')**2) <= eps**2`` in float64, as scikit-learn's trees test it.
    On activation clouds (a low intrinsic dimension) the tree's balls are a small
    multiple of the true ones, and no pair is tested outside them.
    """

    def __init__(self, x: np.ndarray, eps: float, axes: int = PROJECTED_AXES) -> None:
        from scipy.spatial import cKDTree

        self.x = x
        n, d = x.shape
        self.n = n
        self.e2 = float(eps) * float(eps)
        mean = x.mean(axis=0, dtype=np.float64)
        pick = np.arange(n)
        if n > 4096:
            pick = np.sort(np.random.default_rng(0).choice(n, 4096, replace=False))
        sample = x[pick].astype(np.float64) - mean
        basis = _top_axes(sample.T @ sample, min(axes, d))
        del sample
        # a float32 copy screens the pairs the bounds leave open (as _EpsBlocks does)
        self.x32 = x if x.dtype == np.float32 else x.astype(np.float32)
        self.sq = np.empty(n)
        self.y = np.empty((n, basis.shape[1]))
        rsq = np.empty(n)
        top = _project_rows(x, mean, basis, self.sq, self.y, rsq)
        #: The largest |x - mean|² (the blocks scale by it).
        self.top = top
        self.finite = bool(np.isfinite(top))
        self.r = np.sqrt(rsq)
        # float64 error of y, |y - y'|² and r² (sums of d products of numbers up to
        # sqrt(top)) below delta, and of r below sqrt(delta); the margin is many
        # times what that can move the bounds, and the tree's radius is widened by it
        self.delta = 64.0 * (d + 2) * _U64 * max(top, self.e2)
        root = float(np.sqrt(self.delta))
        self.radius_pad = 8.0 * root
        self.margin = 16.0 * float(eps) * root + 16.0 * self.delta + 16.0 * (d + 2) * _U64 * self.e2
        # SciPy's tree: built without the GIL and about 5x faster than scikit-learn's
        # at 1M points x 16; its queries run on _threads() threads
        self.tree = cKDTree(self.y, leafsize=32) if self.finite else None

    def _decide(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``sum((x[a] - x[b])**2) <= eps**2`` per pair, the coordinates read only where
        the bounds leave it open."""
        out = np.empty(len(a), dtype=bool)
        step = 1 << 18
        for s in range(0, len(a), step):
            p, q = a[s : s + step], b[s : s + step]
            dy = self.y[p] - self.y[q]
            proj = np.einsum("ij,ij->i", dy, dy)
            del dy
            rp, rq = self.r[p], self.r[q]
            inside = proj + (rp + rq) ** 2 <= self.e2 - self.margin
            open_ = ~inside & (proj + (rp - rq) ** 2 <= self.e2 + self.margin)
            at = np.flatnonzero(open_)
            if len(at):
                inside[at] = self.screened(p[at], q[at])
            out[s : s + step] = inside
        return out

    def screened(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """``sum((x[p] - x[q])**2) <= eps**2`` from float32 dot products, float64 only for
        pairs within float32's rounding bound of eps² (:class:`_EpsBlocks`'s bound,
        on the uncentred cloud)."""
        sq_p, sq_q = self.sq[p], self.sq[q]
        dot = np.empty(len(p))
        step = max(16, (8 << 20) // max(self.x.shape[1], 1))  # 2 x 32 MB of rows at a time
        for s in range(0, len(p), step):
            sl = slice(s, s + step)
            dot[sl] = np.einsum("ij,ij->i", self.x32[p[sl]], self.x32[q[sl]])
        screened = sq_p + sq_q - 2.0 * dot
        margin = 2.0 * (2 * self.x.shape[1] + 16) * _U32 * (sq_p + sq_q)
        inside = screened <= self.e2 - margin
        near = np.flatnonzero(~inside & (screened <= self.e2 + margin))
        if len(near):
            inside[near] = _exact_squared(self.x, p[near], q[near]) <= self.e2
        return inside

    def candidates(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(slot, point)`` pairs: the points within eps of ``rows[slot]`` along the
        axes, a superset of their eps-balls."""
        assert self.tree is not None
        radius = np.sqrt(self.e2) * (1.0 + 1e-9) + self.radius_pad
        found = self.tree.query_ball_point(self.y[rows], r=radius, workers=_threads())
        counts = np.fromiter((len(v) for v in found), dtype=np.int64, count=len(found))
        flat = (
            np.concatenate([np.asarray(v, dtype=np.int64) for v in found])
            if len(found)
            else np.zeros(0, np.int64)
        )
        del found
        return np.repeat(np.arange(len(rows)), counts), flat

    def balls_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The eps-balls of ``rows`` (themselves included): neighbours and counts."""
        owner, flat = self.candidates(rows)
        keep = self._decide(rows[owner], flat)
        counts = np.bincount(owner[keep], minlength=len(rows)).astype(np.int64)
        return flat[keep].astype(np.int32 if self.n < 2**31 else np.int64), counts

    def mean_candidates(self, sample: int = 256) -> float:
        """The mean number of pairs the tree lists per point, from evenly spread rows."""
        rows = np.unique(np.linspace(0, self.n - 1, min(sample, self.n)).astype(np.int64))
        return len(self.candidates(rows)[1]) / len(rows)

    def kdistances(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Exact squared k-distances of ``rows`` (itself counted): the k-th exact
        distance among the tree's nearest in ``y`` bounds it; every point within that
        bound lies within it in ``y`` too, and the k-th of those is the k-distance."""
        assert self.tree is not None
        tree = self.tree  # queried on _threads() threads, each row independently
        near = min(self.n, max(2 * k, k + 8))
        _, cand = tree.query(self.y[rows], k=near, workers=_threads())
        owner = np.repeat(rows, near)
        d2 = _exact_squared(self.x, owner, cand.ravel()).reshape(len(rows), near)
        bound = np.partition(d2, k - 1, axis=1)[:, k - 1]
        found = tree.query_ball_point(
            self.y[rows], r=np.sqrt(bound) * (1.0 + 1e-9) + self.radius_pad, workers=_threads()
        )
        counts = np.fromiter((len(v) for v in found), dtype=np.int64, count=len(found))
        flat = np.concatenate([np.asarray(v, dtype=np.int64) for v in found])
        slot = np.repeat(np.arange(len(rows)), counts)
        owner = rows[slot]
        dy = self.y[owner] - self.y[flat]
        lower = np.einsum("ij,ij->i", dy, dy) + (self.r[owner] - self.r[flat]) ** 2
        del dy
        # points whose lower bound exceeds the bound cannot be among the k nearest
        keep = lower <= bound[slot] + self.margin
        slot, flat = slot[keep], flat[keep]
        exact = _exact_squared(self.x, rows[slot], flat)
        order = np.lexsort((exact, slot))
        start = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(np.bincount(slot, minlength=len(rows)), out=start[1:])
        return exact[order][start[:-1] + k - 1]


def _float32_screen(e2: float, sq: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the float32 values below which a screened ``|x|² + |y|² - 2 x.y`` is
    surely within eps² (``sure``) and above which surely not (``near``): the float32
    error of that value is below (2d + 16) u32 (|x|² + |y|²), doubled for the float32
    copy of the coordinates (topology.mst); ``sq`` the rows' |x|², scaled near 1."""
    margin = 2.0 * (2 * d + 16) * _U32 * (sq + float(sq.max()))
    top = float(np.finfo(np.float32).max)
    sure = np.nextafter(np.clip(e2 - margin, -top, top).astype(np.float32), np.float32(-np.inf))
    near = np.nextafter(np.clip(e2 + margin, -top, top).astype(np.float32), np.float32(np.inf))
    return sure, near


class _ProjectedBlocks:
    """Which pairs of a cloud lie within eps, a block of nearby rows at a time.

    The rows are taken in the order of :class:`_ProjectedBalls`' tree leaves, in
    blocks of ``ROW_BLOCK`` consecutive points (neighbours: the tree's boxes are
    small), and ``|x - x'|² >= |y - y'|² + (|r| - |r'|)²`` (``y`` the axis
    coordinates, ``r`` the residual) bounds every pair from below. The columns of
    a block are the points of the runs of ``COLUMN_BLOCK`` whose bounding boxes in
    ``(y, |r|)`` come within eps of the block's box, then of those the points whose
    bound comes within eps of one of its rows (one float32 product of 19 columns).
    The block's pairs with them are screened together in float32 from one matrix
    product of the centred cloud, with :class:`_EpsBlocks`' rounding bound, and a
    pair within that bound of eps² is decided in float64 from its coordinates: the
    answer is the exact ``sum((x - y)**2) <= eps**2``. Only the pairs ``(i, j > i)``
    are tested; no list of candidates per point is made.
    """

    def __init__(self, balls: _ProjectedBalls, budget: int) -> None:
        assert balls.tree is not None
        self.balls = balls
        self.n, self.d = balls.x.shape
        self.order = np.asarray(balls.tree.indices, dtype=np.int64)
        # everything below is scaled by a power of two (exact) so that the largest
        # |x - mean|² is about 1: float32 neither overflows (|x| ~ 1e20 would) nor
        # loses small clouds (as _EpsBlocks)
        top = balls.top
        scale = 2.0 ** -np.floor(np.log2(np.sqrt(top))) if top > 0 else 1.0
        # (y, |r|) per point in that order: |x - x'|² >= |(y, |r|) - (y', |r'|)|²
        yr = np.column_stack([balls.y[self.order], balls.r[self.order]]) * scale
        starts = np.arange(0, self.n, COLUMN_BLOCK)
        self.lo = np.minimum.reduceat(yr, starts, axis=0)
        self.hi = np.maximum.reduceat(yr, starts, axis=0)
        # [a, |a|², 1] in float32 for a = (y, |r|): the bound of a pair from one product
        self.k = yr.shape[1]
        self.bound_sq = np.einsum("ij,ij->i", yr, yr)
        self.bound_aug = np.empty((self.n, self.k + 2), dtype=np.float32)
        self.bound_aug[:, : self.k] = yr
        self.bound_aug[:, self.k] = self.bound_sq
        self.bound_aug[:, self.k + 1] = 1.0
        del yr
        # a pair whose lower bound exceeds this is outside eps, rounding included
        # (the bounds of _ProjectedBalls._decide)
        reach = (float(np.sqrt(balls.e2)) * (1.0 + 1e-9) + balls.radius_pad) * scale
        self.reach2 = reach * reach + balls.margin * (scale * scale)
        # [c, |c|², 1] per point in that order, c the centred point, scaled, in float32
        self.aug = np.empty((self.n, self.d + 2), dtype=np.float32)
        sq = np.empty(self.n)
        mean = balls.x.mean(axis=0, dtype=np.float64)
        for s in range(0, self.n, 16384):
            c = (balls.x[self.order[s : s + 16384]].astype(np.float64) - mean) * scale
            sq[s : s + len(c)] = np.einsum("ij,ij->i", c, c)
            self.aug[s : s + len(c), : self.d] = c
        self.aug[:, self.d] = sq
        self.aug[:, self.d + 1] = 1.0
        self.sure, self.near = _float32_screen(balls.e2 * (scale * scale), sq, self.d)
        self.entries = max(int(budget) // 8, ROW_BLOCK)

    def columns(self, start: int, stop: int) -> np.ndarray:
        """The points (in order, from ``start``) whose lower bound comes within eps of
        some row of ``start:stop``, among the runs whose boxes do."""
        first = start // COLUMN_BLOCK
        box_lo = np.minimum.reduce(self.lo[first : -(-stop // COLUMN_BLOCK)])
        box_hi = np.maximum.reduce(self.hi[first : -(-stop // COLUMN_BLOCK)])
        gap = np.maximum(self.lo[first:] - box_hi, box_lo - self.hi[first:])
        np.maximum(gap, 0.0, out=gap)
        runs = first + np.flatnonzero(np.einsum("ij,ij->i", gap, gap) <= self.reach2)
        points = (runs[:, None] * COLUMN_BLOCK + np.arange(COLUMN_BLOCK)).ravel()
        points = points[points < self.n]
        # the bound per pair as |a|² + |b|² - 2 a.b from one float32 product: within
        # 2 (2k + 16) u32 (|a|² + |b|²) of its value (as _EpsBlocks' screen), so that
        # much is added
        rows = np.empty((stop - start, self.k + 2), dtype=np.float32)
        rows[:, : self.k] = self.bound_aug[start:stop, : self.k] * np.float32(-2.0)
        rows[:, self.k] = 1.0
        rows[:, self.k + 1] = self.bound_aug[start:stop, self.k]
        top = float(self.bound_sq[start:stop].max())
        keep = np.empty(len(points), dtype=bool)
        step = max(self.entries // len(rows), 1)
        for s in range(0, len(points), step):
            part = points[s : s + step]
            slack = (2.0 * (2 * self.k + 16) * _U32) * (top + self.bound_sq[part])
            lower = (rows @ self.bound_aug[part].T).min(axis=0)
            keep[s : s + step] = lower <= self.reach2 + slack
        return points[keep]

    def pairs(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        """``(i, j)``, ``i < j`` in order, every pair within eps with ``i`` among rows
        ``start:start + ROW_BLOCK``."""
        stop = min(start + ROW_BLOCK, self.n)
        cols = self.columns(start, stop)
        rows = np.empty((stop - start, self.d + 2), dtype=np.float32)
        rows[:, : self.d] = self.aug[start:stop, : self.d] * np.float32(-2.0)
        rows[:, self.d] = 1.0
        rows[:, self.d + 1] = self.aug[start:stop, self.d]
        step = max(self.entries // len(rows), 1)
        found_i, found_j = [], []
        for s in range(0, len(cols), step):
            part = cols[s : s + step]
            h = rows @ self.aug[part].T
            inside = h <= self.sure[start:stop, None]
            unsure = h <= self.near[start:stop, None]
            del h
            unsure ^= inside
            rr, cc = np.divmod(np.flatnonzero(unsure), len(part))
            del unsure
            if len(rr):
                exact = _exact_squared(self.balls.x, self.order[rr + start], self.order[part[cc]])
                inside[rr, cc] = exact <= self.balls.e2
            rr, cc = np.divmod(np.flatnonzero(inside), len(part))
            del inside
            i, j = rr + start, part[cc]
            later = j > i
            found_i.append(i[later])
            found_j.append(j[later])
        if not found_i:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(found_i), np.concatenate(found_j)


def _dbscan_projected(
    balls: _ProjectedBalls, min_samples: int, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """DBSCAN from the pairs within eps of :class:`_ProjectedBlocks` (each pair once):
    ball sizes, then components of the core points joined by core-core pairs, then
    border points. The pairs are kept for the two later passes when they fit half
    the budget (two int32 each), else found again."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread per block (OpenBLAS's threads on these small products cost 4x
    # the CPU on a loaded machine), the blocks spread over threads instead
    with threadpool_limits(limits=1, user_api="blas"):
        return _dbscan_projected_pairs(_ProjectedBlocks(balls, budget), min_samples, budget)


def _blocks_in_order(
    blocks: _ProjectedBlocks, starts: range
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``blocks.pairs(start)`` for each start, in order, computed on up to
    ``PROJECTED_THREADS`` threads (numpy and BLAS release the GIL), at most twice
    that many blocks ahead, and no more once the finished ones hold ``blocks.entries``
    pairs (dense blocks): the results do not depend on the number of threads."""
    workers = _threads()
    if workers == 1:
        yield from map(blocks.pairs, starts)
        return

    def held(ahead: deque[Future[tuple[np.ndarray, np.ndarray]]]) -> int:
        return sum(len(f.result()[0]) for f in ahead if f.done() and f.exception() is None)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        ahead: deque[Future[tuple[np.ndarray, np.ndarray]]] = deque()
        for start in starts:
            ahead.append(pool.submit(blocks.pairs, start))
            while len(ahead) > 2 * workers or (len(ahead) > 1 and held(ahead) > blocks.entries):
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _dbscan_projected_pairs(
    blocks: _ProjectedBlocks, min_samples: int, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_dbscan_projected` from the pairs of ``blocks``."""
    n, order = blocks.n, blocks.order
    starts = range(0, n, ROW_BLOCK)
    counts = np.ones(n, dtype=np.int64)  # in the blocks' order; a point is in its ball
    cached: list[tuple[np.ndarray, np.ndarray]] | None = []
    held = 0
    for start, (i, j) in zip(starts, _blocks_in_order(blocks, starts)):
        counts[start : start + ROW_BLOCK] += np.bincount(i - start, minlength=ROW_BLOCK)[
            : min(ROW_BLOCK, n - start)
        ]
        np.add.at(counts, j, 1)
        if cached is not None:
            held += len(i)
            if held <= budget // 2 and n < 2**31:
                cached.append((i.astype(np.int32), j.astype(np.int32)))
            else:
                cached = None

    def all_pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if cached is not None:
            yield from cached
        else:
            yield from _blocks_in_order(blocks, starts)

    core = counts >= min_samples
    labels = np.full(n, -1, dtype=np.int64)
    core_at = np.zeros(n, dtype=bool)
    core_at[order] = core
    if not core.any():
        return labels, core_at
    component = np.arange(n)
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    held = 0
    for i, j in all_pairs():
        both = core[i] & core[j]
        a, b = i[both], j[both]
        differ = component[a] != component[b]
        pending.append((a[differ], b[differ]))
        held += int(differ.sum())
        if held > max(budget // 8, 1):
            component = join_components(component, *map(np.concatenate, zip(*pending)))
            pending, held = [], 0
    if held:
        component = join_components(component, *map(np.concatenate, zip(*pending)))
    component_at = np.empty(n, dtype=np.int64)
    component_at[order] = component
    core_rows = np.flatnonzero(core_at)
    _number_clusters(labels, core_rows, component_at[core_rows])
    # border points: the lowest-numbered cluster with a core point within eps
    ordered_labels = labels[order]
    best = np.full(n, np.iinfo(np.int64).max)
    for i, j in all_pairs():
        for p, q in ((i, j), (j, i)):
            hit = core[p] & ~core[q]
            np.minimum.at(best, q[hit], ordered_labels[p[hit]])
    reached = best < np.iinfo(np.int64).max
    labels[order[reached]] = best[reached]
    return labels, core_at


def _neighborhood_chunks(balls_of: _BallsOf, rows: np.ndarray, budget: int) -> Iterator[_Chunk]:
    """Yield ``(chunk rows, flat neighbours, counts)`` with about ``budget`` entries each."""
    step = 256
    start = 0
    while start < len(rows):
        chunk = rows[start : start + step]
        flat, counts = balls_of(chunk)
        yield chunk, flat, counts
        start += len(chunk)
        mean = max(float(counts.mean()) if len(counts) else 1.0, 1.0)
        # a chunk holds an eighth of the budget: scikit-learn's own lists of it
        # (int64 arrays) live beside the kept int32 ones while they are copied
        step = int(np.clip(budget / 8 / mean, 16, 65536))


def dbscan_labels(
    points: ArrayLike, eps: float, min_samples: int, *, budget: int = NEIGHBOR_BUDGET
) -> np.ndarray:
    """The labels of ``sklearn.cluster.DBSCAN(eps, min_samples).fit(points)``, in bounded memory.

    A point is core when its eps-ball (itself included) holds ``min_samples``
    points; clusters are the connected components of the core points under
    "within eps", numbered in the order of their first core point; a border point
    joins the lowest-numbered cluster with a core point within eps (the cluster
    scikit-learn's expansion reaches first); the rest is noise (-1).

    The routes are :func:`dbscan_labels_and_core`'s.

    "Within eps" is ``sum((x - y)**2) <= eps * eps`` computed exactly, as
    scikit-learn's trees compute it (``algorithm="kd_tree"`` or ``"ball_tree"``).
    Its brute-force search (what ``"auto"`` picks above 15 dimensions) rounds
    distances through ``|x|² + |y|² - 2 x·y`` and may decide a pair lying at eps
    to within that rounding the other way.
    """
    return dbscan_labels_and_core(points, eps, min_samples, budget=budget)[0]


def dbscan_labels_and_core(
    points: ArrayLike, eps: float, min_samples: int, *, budget: int = NEIGHBOR_BUDGET
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`dbscan_labels` and the core-point mask (``core_sample_indices_`` of
    scikit-learn's DBSCAN as a boolean array).

    Three routes give the labels. In more than 15 dimensions and above
    ``PROJECTED_MIN`` points, a KD-tree on the top principal axes
    (:class:`_ProjectedBalls`) is built first; when it lists at most
    ``BIG_BALL_SHARE`` of the points per point (a sample says), blocks of
    neighbouring rows in its leaf order are tested against the points its bounds
    leave near them (:func:`_dbscan_projected`), otherwise all pairs are tested in
    blocks (:class:`_EpsBlocks`). In 15 dimensions or fewer,
    the blocks are taken when the balls would exceed ``budget`` entries, otherwise
    scikit-learn's tree gives the balls. A float32 cloud is read in float64 where
    a pair is decided, without a float64 copy of it on the tree's route.
    """
    x = np.asarray(points)
    if x.dtype != np.float32:
        x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.full(0, -1, dtype=np.int64), np.zeros(0, dtype=bool)
    if x.ndim == 2 and x.shape[1] > 15 and n > PROJECTED_MIN:
        projected = _ProjectedBalls(x, eps)
        if projected.finite and projected.mean_candidates() <= BIG_BALL_SHARE * n:
            return _dbscan_projected(projected, int(min_samples), budget)
        del projected
    x = np.asarray(x, dtype=np.float64)
    blocks = _EpsBlocks.of(x, eps, budget)
    if blocks is not None and (x.shape[1] > 15 or blocks.estimated_entries() > budget):
        return _dbscan_blocked(blocks, int(min_samples))
    del blocks
    return _dbscan_balls(_sklearn_balls(x, eps), n, int(min_samples), budget)


def _number_clusters(labels: np.ndarray, core_rows: np.ndarray, roots: np.ndarray) -> None:
    """Label the core points: clusters numbered by their first core point (rows ascend)."""
    unique_roots, first_at = np.unique(roots, return_index=True)
    order = np.argsort(first_at, kind="stable")
    cluster_of_root = np.empty(len(first_at), dtype=np.int64)
    cluster_of_root[order] = np.arange(len(first_at))
    labels[core_rows] = cluster_of_root[np.searchsorted(unique_roots, roots)]


class _EpsBlocks:
    """Which pairs of a cloud lie within ``eps``, one block of rows at a time.

    Squared distances are screened in float32 from one matrix product of the
    centred cloud (``|x|² + |y|² - 2 x·y``, as ``topology.mst`` screens them, with
    its rounding bound); a pair within that bound of ``eps²`` is decided from its
    float64 coordinate differences. The answer is the exact (and symmetric)
    ``sum((x - y)**2) <= eps**2`` that scikit-learn's trees test.
    """

    def __init__(self, x: np.ndarray, eps: float, budget: int, centred: np.ndarray) -> None:
        self.x = x
        self.n, self.d = x.shape
        self.e2 = float(eps) * float(eps)  # as scikit-learn's trees square the radius
        sq = np.einsum("ij,ij->i", centred, centred)
        sq_max = float(sq.max())
        # scaled by a power of two (exactly) so that the largest squared norm is
        # about 1: float32 neither overflows nor loses precision to underflow
        scale = 2.0 ** -np.floor(np.log2(np.sqrt(sq_max))) if sq_max > 0 else 1.0
        centred = centred * scale
        sq = sq * (scale * scale)
        self.sure, self.near = _float32_screen(self.e2 * (scale * scale), sq, self.d)
        self.rows_aug = np.empty((self.n, self.d + 2), dtype=np.float32)
        self.rows_aug[:, : self.d] = centred
        self.rows_aug[:, self.d] = sq
        self.rows_aug[:, self.d + 1] = 1.0
        # the column side, one row per point: a range of points is a contiguous
        # slice, and its transpose goes to BLAS without a copy
        self.cols = np.empty((self.n, self.d + 2), dtype=np.float32)
        self.cols[:, : self.d] = -2.0 * centred
        self.cols[:, self.d] = 1.0
        self.cols[:, self.d + 1] = sq
        # one block: a float32 value, three bool masks and, in the worst case, a
        # pair of int64 indices per entry
        self.entries = max(int(budget) // 8, 1)

    @classmethod
    def of(cls, x: np.ndarray, eps: float, budget: int) -> _EpsBlocks | None:
        """None when the cloud is not finite (scikit-learn then says so)."""
        centred = x - x.mean(axis=0)
        if not (len(x) and np.isfinite(np.einsum("ij,ij->i", centred, centred).max())):
            return None
        return cls(x, eps, budget, centred)

    def row_blocks(self, rows: np.ndarray, n_cols: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, block)`` pieces of ``rows`` with about ``entries`` pairs each."""
        step = max(1, self.entries // max(n_cols, 1))
        for start in range(0, len(rows), step):
            yield start, rows[start : start + step]

    def within(self, rows: np.ndarray, cols: np.ndarray, col_ids: np.ndarray | int) -> np.ndarray:
        """(len(rows), len(cols)) bool: pairs within eps.

        ``cols`` holds rows of :attr:`cols` (``self.cols[col_ids]``; an int is the
        first point of a contiguous slice).
        """
        h = self.rows_aug[rows] @ cols.T
        inside = h <= self.sure[rows, None]
        unsure = h <= self.near[rows, None]
        del h
        unsure ^= inside
        # flat: numpy's 2-D nonzero costs ~20x more on a mostly-False block
        rr, cc = np.divmod(np.flatnonzero(unsure), unsure.shape[1])
        del unsure
        if len(rr):
            q = cc + col_ids if isinstance(col_ids, int) else col_ids[cc]
            inside[rr, cc] = self._exact(rows[rr], q)
        return inside

    def _exact(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        out = np.empty(len(p), dtype=bool)
        step = max(16, (4 << 20) // max(self.d, 1))  # ~32 MB of differences
        for s in range(0, len(p), step):
            sl = slice(s, s + step)
            out[sl] = _exact_squared(self.x, p[sl], q[sl]) <= self.e2
        return out

    def estimated_entries(self, sample: int = 256) -> float:
        """All balls' entries together, from the balls of evenly spread rows."""
        rows = np.unique(np.linspace(0, self.n - 1, min(sample, self.n)).astype(np.int64))
        counts = np.zeros(len(rows))
        for start, block in self.row_blocks(rows, self.n):
            counts[start : start + len(block)] = np.count_nonzero(
                self.within(block, self.cols, 0), axis=1
            )
        return float(counts.mean()) * self.n


def _dbscan_blocked(blocks: _EpsBlocks, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    n = blocks.n
    labels = np.full(n, -1, dtype=np.int64)
    # ball sizes from the pairs (i, j >= i) only: "within eps" is symmetric, so a
    # block's column counts are the later rows' counts of its rows
    counts = np.zeros(n, dtype=np.int64)
    for start, rows in blocks.row_blocks(np.arange(n), n):
        stop = start + len(rows)
        hits = blocks.within(rows, blocks.cols[start:], start)
        counts[rows] += np.count_nonzero(hits, axis=1)
        counts[stop:] += np.count_nonzero(hits[:, len(rows) :], axis=0)
        del hits
    core = counts >= min_samples
    if not core.any():
        return labels, core
    core_rows = np.flatnonzero(core)
    m = len(core_rows)
    core_cols = blocks.cols[core_rows]
    # clusters: components of the core points joined by core-core pairs within eps
    # (again j >= i), merged block by block: after the first blocks, few pairs
    # join new components
    component = np.arange(m)
    for start, rows in blocks.row_blocks(core_rows, m):
        joins = blocks.within(rows, core_cols[start:], core_rows[start:])
        joins &= component[start : start + len(rows), None] != component[None, start:]
        a, b = np.divmod(np.flatnonzero(joins), m - start)
        del joins
        if len(a):
            component = join_components(component, a + start, b + start)
    _number_clusters(labels, core_rows, component)
    # border points: the lowest-numbered cluster with a core point within eps; the
    # core columns sorted by cluster make it the first hit of each row
    other = np.flatnonzero(~core)
    if len(other):
        by_label = np.argsort(labels[core_rows], kind="stable")
        sorted_ids = core_rows[by_label]
        sorted_cols = core_cols[by_label]
        sorted_labels = labels[sorted_ids]
        del core_cols
        for _start, rows in blocks.row_blocks(other, m):
            hits = blocks.within(rows, sorted_cols, sorted_ids)
            reached = hits.any(axis=1)
            first = hits.argmax(axis=1)
            labels[rows[reached]] = sorted_labels[first[reached]]
    return labels, core


def _dbscan_balls(
    balls_of: _BallsOf, n: int, min_samples: int, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """DBSCAN from the balls ``balls_of(rows) -> (neighbours, counts)`` (scikit-learn's
    tree in low dimensions, :class:`_ProjectedBalls` in many), a chunk of rows at a
    time: about ``budget`` neighbour entries held, and kept for the second pass only
    when all of them fit."""
    labels = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    cached: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = []
    held = 0
    for chunk, flat, chunk_counts in _neighborhood_chunks(balls_of, np.arange(n), budget):
        counts[chunk] = chunk_counts
        if cached is not None:
            held += len(flat)
            if held <= budget:
                cached.append((chunk, flat, chunk_counts))
            else:
                cached = None
    core = counts >= int(min_samples)
    if not core.any():
        return labels, core
    core_rows = np.flatnonzero(core)

    def core_neighborhoods() -> Iterator[_Chunk]:
        """The balls of the core points again: from the first pass if kept, else recomputed."""
        if cached is None:
            yield from _neighborhood_chunks(balls_of, core_rows, budget)
            return
        for chunk, flat, chunk_counts in cached:
            pick = core[chunk]
            if pick.any():
                yield chunk[pick], flat[np.repeat(pick, chunk_counts)], chunk_counts[pick]

    # clusters: components of the core points joined by core-core neighbours
    component = np.arange(n)
    pending_a: list[np.ndarray] = []
    pending_b: list[np.ndarray] = []
    pending = 0

    def merge() -> None:
        nonlocal component, pending
        if not pending:
            return
        a, b = np.concatenate(pending_a), np.concatenate(pending_b)
        pending_a.clear()
        pending_b.clear()
        component = join_components(component, a, b)
        pending = 0

    for chunk, flat, chunk_counts in core_neighborhoods():
        owner = np.repeat(chunk, chunk_counts)
        both = core[flat]
        a, b = owner[both], flat[both]
        differ = component[a] != component[b]
        pending_a.append(a[differ].astype(np.int32 if n < 2**31 else np.int64))
        pending_b.append(b[differ])
        pending += int(differ.sum())
        # merged at an eighth of the budget: the merge holds a few copies of the pairs
        # (component ids, the sparse graph and its CSR form)
        if pending > max(budget // 8, 1):
            merge()
    merge()
    _number_clusters(labels, core_rows, component[core_rows])
    # border points: the lowest-numbered cluster whose core points reach them, as
    # scikit-learn's expansion (cluster by cluster, from the core points' balls) does
    best = np.full(n, np.iinfo(np.int64).max)
    for chunk, flat, chunk_counts in core_neighborhoods():
        owner_label = np.repeat(labels[chunk], chunk_counts)
        border = ~core[flat]
        np.minimum.at(best, flat[border], owner_label[border])
    reached = ~core & (best < np.iinfo(np.int64).max)
    labels[reached] = best[reached]
    return labels, core


class BoundedDBSCAN:
    """A DBSCAN clusterer for kmapper with :func:`dbscan_labels` inside.

    kmapper reads ``get_params()["min_samples"]`` (an interval with fewer points
    is not clustered) and calls ``fit_predict``; the labels are scikit-learn's.
    """

    def __init__(self, eps: float = 0.5, min_samples: int = 5, budget: int = NEIGHBOR_BUDGET):
        self.eps = eps
        self.min_samples = min_samples
        self.budget = budget

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"eps": self.eps, "min_samples": self.min_samples, "budget": self.budget}

    def fit(self, x: ArrayLike, y: object = None) -> BoundedDBSCAN:
        self.labels_ = dbscan_labels(x, self.eps, self.min_samples, budget=self.budget)
        return self

    def fit_predict(self, x: ArrayLike, y: object = None) -> np.ndarray:
        return self.fit(x).labels_

    def __repr__(self) -> str:
        return f"BoundedDBSCAN(eps={self.eps}, min_samples={self.min_samples})"


def mapper_graph(
    points: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    lens: str = "l2norm",
    lens_values: ArrayLike | None = None,
    probabilities: ArrayLike | None = None,
    n_cubes: int = 10,
    perc_overlap: float = 0.5,
    min_samples: int = 5,
    eps: float | None = None,
    n_classes: int | None = None,
    seed: int = 0,
) -> MapperGraph:
    """Build the Mapper graph of a point cloud.

    Parameters
    ----------
    points : array (M, D)
        The layer's point cloud.
    labels : array (M,) of int, optional
        Class per point (-1 = unknown), for class counts and purity.
    lens : {"l2norm", "pca1", "pca2", "probability"}
        The filter: L2 norm of each vector (default, TopoAct), the first one or two
        principal components, or the largest predicted-class probability (needs
        ``probabilities``). Ignored when ``lens_values`` is given.
    lens_values : array (M,) or (M, L), optional
        An explicit lens.
    probabilities : array (M, K), optional
        The model's class probabilities per point (for ``lens="probability"``).
    n_cubes, perc_overlap : int, float
        ``kmapper.Cover`` parameters (published defaults 10 and 0.5).
    min_samples : int
        DBSCAN ``min_samples``; an interval with fewer points is not clustered.
    eps : float, optional
        DBSCAN ``eps``; by default :func:`knee_eps` on the whole cloud.
    n_classes : int, optional
        Number of classes for ``class_counts`` (default: largest label + 1).
    seed : int
        Seed of the Louvain communities.

    Returns
    -------
    MapperGraph
        A graph with zero nodes is a valid result: fewer points than
        ``min_samples``, or every point DBSCAN noise; ``params["note"]`` says why.
        A constant lens makes every interval the whole cloud, so the cover is
        reduced to one interval (the graph is then DBSCAN's clustering).
    """
    x = _as_cloud(points)
    m, _d = x.shape
    lab = _labels(labels, m)
    if n_classes is None:
        n_classes = int(lab.max()) + 1 if lab is not None and lab.size and lab.max() >= 0 else 0
    elif lab is not None and lab.size and lab.max() >= n_classes:
        raise TopoLensError(
            f"labels go up to {int(lab.max())} but n_classes is {n_classes}; raise n_classes."
        )
    if int(n_cubes) < 1:
        raise TopoLensError(f"n_cubes must be at least 1, got {n_cubes}.")
    if not 0.0 <= float(perc_overlap) < 1.0:
        raise TopoLensError(f"perc_overlap must be in [0, 1), got {perc_overlap}.")
    if int(min_samples) < 1:
        raise TopoLensError(f"min_samples must be at least 1, got {min_samples}.")
    if eps is not None and not (np.isfinite(eps) and eps > 0):
        raise TopoLensError(f"eps must be a positive number, got {eps}.")

    lens_arr, lens_name = _lens(x, lens, lens_values, probabilities)
    params: dict[str, Any] = {
        "lens": lens_name,
        "n_cubes": int(n_cubes),
        "perc_overlap": float(perc_overlap),
        "min_samples": int(min_samples),
        "eps": float("nan") if eps is None else float(eps),
        "eps_source": "given" if eps is not None else "knee",
        "clusterer": "DBSCAN",
        "n_cubes_used": int(n_cubes),
        "n_classes": int(n_classes),
        "seed": int(seed),
        "note": "",
    }

    nodes: dict[str, list[int]] = {}
    if m < int(min_samples):
        params["note"] = f"{m} points, fewer than min_samples={min_samples}: no node can form."
        if eps is None:
            params["eps_source"] = "none"
    else:
        if eps is None:
            eps, params["eps_source"] = _knee_eps(x, int(min_samples))
            params["eps"] = float(eps)
        cubes = int(n_cubes)
        if np.all(np.ptp(lens_arr, axis=0) == 0):
            cubes = 1
            params["note"] = "constant lens: the cover was reduced to one interval."
        params["n_cubes_used"] = cubes
        nodes = _cluster_cubes(
            x, lens_arr, cubes, float(perc_overlap), float(eps), int(min_samples)
        )
        if not nodes:
            prefix = params["note"] + " " if params["note"] else ""
            params["note"] = prefix + "every point is DBSCAN noise: no nodes."

    return _assemble(x, lab, n_classes, lens_arr, nodes, params, int(seed))


def _cluster_cubes(
    x: np.ndarray,
    lens_arr: np.ndarray,
    n_cubes: int,
    perc_overlap: float,
    eps: float,
    min_samples: int,
) -> dict[str, list[int]]:
    """kmapper's ``map`` (its ``Cover``, its node names, an interval with fewer than
    ``min_samples`` points left unclustered), without its float64 copy of the cloud
    with an id column: each interval's rows are taken from the cloud as they are."""
    import kmapper

    m = len(x)
    lens_ids = np.column_stack([np.arange(m, dtype=np.float64), lens_arr])
    cover = kmapper.Cover(n_cubes=n_cubes, perc_overlap=perc_overlap)
    cover.fit(lens_ids)
    nodes: dict[str, list[int]] = {}
    for i, hypercube in enumerate(cover.transform(lens_ids)):
        if hypercube.shape[0] < min_samples:
            continue
        ids = hypercube[:, 0].astype(np.int64)
        predictions = dbscan_labels(x[ids], eps, min_samples, budget=NEIGHBOR_BUDGET)
        for cluster in np.unique(predictions):
            if cluster != -1:
                nodes[f"cube{i}_cluster{int(cluster)}"] = ids[predictions == cluster].tolist()
    return nodes


def _labels(labels: ArrayLike | None, m: int) -> np.ndarray | None:
    if labels is None:
        return None
    lab = np.asarray(labels)
    if lab.shape != (m,):
        raise TopoLensError(f"labels must have one entry per point ({m}), got shape {lab.shape}.")
    if (
        lab.size
        and not np.issubdtype(lab.dtype, np.integer)
        and (not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)))
    ):
        raise TopoLensError("labels must be integer class ids (-1 = unknown).")
    lab = lab.astype(np.int64)
    if lab.size and lab.min() < -1:
        raise TopoLensError("labels must be class ids >= 0, or -1 for unknown.")
    return lab


def _node_key(node_id: str) -> tuple[int, int, str]:
    match = NODE_ID.match(node_id)
    if match is None:
        return (1 << 62, 0, node_id)
    return (int(match.group(1)), int(match.group(2)), node_id)


def _assemble(
    x: np.ndarray,
    lab: np.ndarray | None,
    n_classes: int,
    lens_arr: np.ndarray,
    nodes: dict[str, list[int]],
    params: dict[str, Any],
    seed: int,
) -> MapperGraph:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    m, d = x.shape
    node_ids = sorted(nodes, key=_node_key)
    n_nodes = len(node_ids)
    member_lists = [np.unique(np.asarray(nodes[k], dtype=np.int64)) for k in node_ids]
    size = np.array([len(v) for v in member_lists], dtype=np.int64)
    offsets = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(size, out=offsets[1:])
    members = np.concatenate(member_lists) if n_nodes else np.zeros(0, dtype=np.int64)
    node_of_entry = np.repeat(np.arange(n_nodes, dtype=np.int64), size)

    # point/node incidence: B[n, p] = 1 when point p is in node n
    incidence = sp.csr_matrix(
        (np.ones(len(members), dtype=np.float64), (node_of_entry, members)), shape=(n_nodes, m)
    )
    safe = np.maximum(size, 1)[:, None]
    mean_activation = np.empty((n_nodes, d), dtype=np.float32)
    for s in range(0, d, 32):  # float64 sums, a few columns of a float32 cloud at a time
        block = np.asarray(incidence @ x[:, s : s + 32].astype(np.float64))
        mean_activation[:, s : s + 32] = block / safe
    mean_lens = np.asarray(incidence @ lens_arr[:, 0]).ravel() / safe[:, 0]

    class_counts = np.zeros((n_nodes, n_classes), dtype=np.int64)
    purity = np.full(n_nodes, np.nan)
    dominant = np.full(n_nodes, -1, dtype=np.int64)
    if lab is not None and n_classes > 0 and n_nodes:
        entry_labels = lab[members]
        known = entry_labels >= 0
        np.add.at(class_counts, (node_of_entry[known], entry_labels[known]), 1)
        labelled = class_counts.sum(axis=1)
        has = labelled > 0
        dominant[has] = np.argmax(class_counts[has], axis=1)
        purity[has] = class_counts[has].max(axis=1) / labelled[has]

    # edges from shared points: (B @ B.T)[a, b] = |A ∩ B|
    overlap = sp.triu(incidence @ incidence.T, k=1).tocoo()
    order = np.lexsort((overlap.col, overlap.row))
    a = overlap.row[order].astype(np.int64)
    b = overlap.col[order].astype(np.int64)
    inter = np.rint(overlap.data[order])
    keep = inter > 0
    a, b, inter = a[keep], b[keep], inter[keep]
    edges = np.stack([a, b], axis=1) if len(a) else np.zeros((0, 2), dtype=np.int64)
    edge_weight = inter / (size[a] + size[b] - inter) if len(a) else np.zeros(0)

    if n_nodes:
        adjacency = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(n_nodes, n_nodes))
        _, component = connected_components(adjacency, directed=False)
        component = _renumber_first_seen(component)
    else:
        component = np.zeros(0, dtype=np.int64)
    community = _communities(n_nodes, edges, edge_weight, seed)

    return MapperGraph(
        node_ids=list(node_ids),
        members=members.astype(np.int64),
        member_offsets=offsets,
        size=size,
        class_counts=class_counts,
        purity=purity,
        dominant_class=dominant,
        mean_lens=mean_lens.astype(np.float64),
        mean_activation=mean_activation,
        edges=edges.astype(np.int64),
        edge_weight=edge_weight.astype(np.float64),
        component=component.astype(np.int64),
        community=community,
        lens=lens_arr[:, 0].astype(np.float64).copy(),
        lens_components=lens_arr.astype(np.float64),
        params=params,
    )


def _renumber_first_seen(groups: np.ndarray) -> np.ndarray:
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse]


def _communities(n_nodes: int, edges: np.ndarray, weight: np.ndarray, seed: int) -> np.ndarray:
    import networkx as nx

    community = np.zeros(n_nodes, dtype=np.int64)
    if n_nodes == 0:
        return community
    graph = nx.Graph()
    graph.add_nodes_from(range(n_nodes))
    graph.add_weighted_edges_from((int(u), int(v), float(w)) for (u, v), w in zip(edges, weight))
    groups = nx.community.louvain_communities(graph, weight="weight", seed=seed)
    groups = sorted((sorted(g) for g in groups), key=lambda g: (-len(g), g[0]))
    for i, group in enumerate(groups):
        community[group] = i
    return community
