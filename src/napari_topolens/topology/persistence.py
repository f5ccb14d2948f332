"""Vietoris-Rips persistence of a layer's point cloud (docs/methods.md §4).

H0 is computed exactly on the whole cloud as single linkage (its merge heights
are the minimum-spanning-tree edge lengths, i.e. the finite H0 deaths); H1 and
above use gudhi's Ripser-class ``RipsPersistence`` on a subsample of at most
``max_points`` points (max-min landmarks by default), never a full simplex tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_topolens.errors import TopoLensError
from napari_topolens.topology.metrics import MetricSpace, check_int

__all__ = [
    "SUBSAMPLE_MODES",
    "PersistenceResult",
    "betti_curves",
    "compute_persistence",
    "maxmin_landmarks",
    "persistence_diagrams",
    "persistence_entropy",
    "total_persistence",
]

SUBSAMPLE_MODES = ("maxmin", "random")
_METRIC_KEYWORDS = ("pca_dims", "n_neighbors", "density_k")
_BETTI_GRID_POINTS = 100


@dataclass
class PersistenceResult:
    """Persistence diagrams of one cloud and everything needed to show and link them.

    Attributes
    ----------
    diagrams : list of (k, 2) float64 arrays
        Index = homology dimension; rows are (birth, death). ``diagrams[0]`` is H0 of
        the *whole* cloud: the ``n - 1`` finite bars in the order of ``linkage`` rows
        (so ``diagrams[0][:-1, 1] == linkage[:, 2]``), then the one infinite bar
        (death ``inf``) last. ``diagrams[1:]`` are of the subsample ``h1_index``,
        sorted by decreasing persistence; zero-length bars are not listed.
    metric, n_points, max_dim
        What was computed.
    h1_index : (m,) int64
        Sorted cloud rows used for H1 and above (all rows when ``subsample == "none"``;
        empty when ``max_dim == 0``).
    subsample : str
        ``"none"``, ``"random"`` or ``"maxmin"``.
    h0_members, h0_member_offsets : CSR
        For each row of ``diagrams[0]``, the cloud rows of the component that dies
        there: the *smaller* of the two components merged at that height (every H0
        class is born at 0, so the elder rule cannot decide; on equal sizes, the one
        formed later, i.e. with the larger scipy cluster id). The infinite bar: all
        points.
    h1_members, h1_member_offsets : CSR
        For each row of ``diagrams[1]``, the cloud rows of a cycle born with the bar:
        the bar's birth edge ``(u, v)`` (an edge of length ``birth``) closed by the
        path from ``v`` back to ``u`` in the subsample's minimum spanning tree, in
        cycle order. That path only uses edges no longer than the birth, so the
        cycle exists when the bar is born; it is a representative of a class born
        then, not a minimal or canonical one.
    betti_grid : (G,) float64
        Filtration values, 0 to the largest finite death.
    betti_curves : (max_dim + 1, G) int64
        Number of bars with ``birth <= t < death`` at each grid value.
    total_persistence, entropy : (max_dim + 1,) float64
        Sum of finite bar lengths; persistence entropy of the finite bars (natural log).
    linkage : (n - 1, 4) float64
        Single-linkage ``Z`` of the whole cloud (scipy layout).
    """

    diagrams: list[np.ndarray]
    metric: str
    n_points: int
    max_dim: int
    h1_index: np.ndarray
    subsample: str
    h0_members: np.ndarray
    h0_member_offsets: np.ndarray
    h1_members: np.ndarray
    h1_member_offsets: np.ndarray
    betti_grid: np.ndarray
    betti_curves: np.ndarray
    total_persistence: np.ndarray
    entropy: np.ndarray
    linkage: np.ndarray


# ---- summaries ------------------------------------------------------------------
def _finite(diagram: np.ndarray) -> np.ndarray:
    diagram = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
    return diagram[np.isfinite(diagram).all(axis=1)]


def total_persistence(diagram: np.ndarray) -> float:
    """Sum of ``death - birth`` over the finite bars."""
    finite = _finite(diagram)
    return float(np.sum(finite[:, 1] - finite[:, 0]))


def persistence_entropy(diagram: np.ndarray) -> float:
    """Shannon entropy (natural log) of the finite bar lengths normalised to sum 1; 0 if none."""
    finite = _finite(diagram)
    lengths = finite[:, 1] - finite[:, 0]
    lengths = lengths[lengths > 0]
    if lengths.size == 0:
        return 0.0
    p = lengths / lengths.sum()
    return float(-np.sum(p * np.log(p))) + 0.0  # + 0.0: one bar gives 0, not -0


def betti_curves(diagrams: list[np.ndarray], grid: np.ndarray) -> np.ndarray:
    """Betti numbers ``#{birth <= t < death}`` of each diagram at each grid value."""
    grid = np.asarray(grid, dtype=np.float64)
    out = np.zeros((len(diagrams), len(grid)), dtype=np.int64)
    for dim, diagram in enumerate(diagrams):
        diagram = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
        if len(diagram):
            alive = (diagram[:, :1] <= grid[None, :]) & (grid[None, :] < diagram[:, 1:])
            out[dim] = alive.sum(axis=0)
    return out


# ---- subsampling ----------------------------------------------------------------
def maxmin_landmarks(space: MetricSpace, n_landmarks: int, seed: int = 0) -> np.ndarray:
    """Greedy farthest-point (max-min) landmarks under the space's metric.

    Starts at a point drawn with ``seed``; each next landmark is the point farthest
    from those chosen (ties: lowest row). Returns rows in the order chosen.
    """
    n = space.n
    n_landmarks = int(min(n_landmarks, n))
    rng = np.random.default_rng(seed)
    chosen = np.empty(n_landmarks, dtype=np.int64)
    chosen[0] = int(rng.integers(n))
    nearest = space.rows(chosen[:1])[0]
    nearest[chosen[0]] = -1.0
    for i in range(1, n_landmarks):
        nxt = int(np.argmax(nearest))
        chosen[i] = nxt
        np.minimum(nearest, space.rows([nxt])[0], out=nearest)
        nearest[nxt] = -1.0  # never choose a point twice, even among duplicates
    return chosen


def _choose_subsample(
    space: MetricSpace, max_points: int, mode: str, seed: int
) -> tuple[np.ndarray, str]:
    if space.n <= max_points:
        return np.arange(space.n, dtype=np.int64), "none"
    if mode == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(space.n, size=max_points, replace=False)).astype(
            np.int64
        ), "random"
    return np.sort(maxmin_landmarks(space, max_points, seed)), "maxmin"


# ---- H0 -------------------------------------------------------------------------
def _h0_members(z: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR members of the dying component of each merge, then all points (infinite bar)."""
    left = z[:, 0].astype(np.int64)
    right = z[:, 1].astype(np.int64)
    size = np.ones(2 * n - 1, dtype=np.int64)
    size[n:] = z[:, 3].astype(np.int64)
    # Leaves of any subtree are contiguous in the dendrogram's leaf order: place the
    # subtrees top-down, then every member list is a slice of that order.
    start = np.zeros(2 * n - 1, dtype=np.int64)
    for i in range(n - 2, -1, -1):
        node = n + i
        start[left[i]] = start[node]
        start[right[i]] = start[node] + size[left[i]]
    order = np.empty(n, dtype=np.int64)
    order[start[:n]] = np.arange(n)
    dying = np.where(size[left] < size[right], left, right)  # tie: the larger id, formed later
    counts = np.append(size[dying], n)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    members = np.empty(offsets[-1], dtype=np.int64)
    for i, node in enumerate(dying):
        members[offsets[i] : offsets[i + 1]] = order[start[node] : start[node] + size[node]]
    members[offsets[-2] :] = np.arange(n)
    return members, offsets


# ---- H1 and above ---------------------------------------------------------------
def _rips_higher(distances: np.ndarray, max_dim: int) -> list[np.ndarray]:
    """H1..H``max_dim`` of the Rips filtration of a distance matrix (gudhi's Ripser fork)."""
    from gudhi.sklearn.rips_persistence import RipsPersistence

    dims = list(range(1, max_dim + 1))
    rips = RipsPersistence(homology_dimensions=dims, input_type="full distance matrix", n_jobs=1)
    result = rips.fit_transform([np.ascontiguousarray(distances, dtype=np.float64)])[0]
    out = []
    for diagram in result:
        diagram = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
        diagram = diagram[diagram[:, 1] > diagram[:, 0]]
        order = np.lexsort((diagram[:, 0], -(diagram[:, 1] - diagram[:, 0])))
        out.append(diagram[order])
    return out


def _prim_parents(distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum spanning tree of a dense matrix as parent pointers (root 0) and depths."""
    m = distances.shape[0]
    parent = np.full(m, -1, dtype=np.int64)
    depth = np.zeros(m, dtype=np.int64)
    in_tree = np.zeros(m, dtype=bool)
    in_tree[0] = True
    best = distances[0].copy()
    best_from = np.zeros(m, dtype=np.int64)
    best[0] = np.inf
    for _ in range(m - 1):
        nxt = int(np.argmin(best))
        parent[nxt] = best_from[nxt]
        depth[nxt] = depth[best_from[nxt]] + 1
        in_tree[nxt] = True
        best[nxt] = np.inf
        closer = (distances[nxt] < best) & ~in_tree
        best[closer] = distances[nxt][closer]
        best_from[closer] = nxt
    return parent, depth


def _h1_members(
    diagram: np.ndarray, distances: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """CSR cycles: each bar's birth edge closed through the minimum spanning tree."""
    m = distances.shape[0]
    offsets = np.zeros(len(diagram) + 1, dtype=np.int64)
    if len(diagram) == 0 or m < 3:
        return np.zeros(0, dtype=np.int64), offsets
    parent, depth = _prim_parents(distances)
    iu, ju = np.triu_indices(m, 1)
    lengths = distances[iu, ju]
    by_length = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[by_length]
    cycles = []
    for birth in diagram[:, 0]:
        pos = int(np.searchsorted(sorted_lengths, birth))
        candidates = [p for p in (pos - 1, pos, pos + 1) if 0 <= p < len(sorted_lengths)]
        pos = min(candidates, key=lambda p: (abs(sorted_lengths[p] - birth), p))
        u, v = int(iu[by_length[pos]]), int(ju[by_length[pos]])
        up, down = [u], [v]  # climb to the lowest common ancestor
        a, b = u, v
        while a != b:
            if depth[a] >= depth[b]:
                a = int(parent[a])
                up.append(a)
            else:
                b = int(parent[b])
                down.append(b)
        cycle = up + down[-2::-1]  # u .. lca .. v (lca once); the birth edge closes it
        cycles.append(index[np.asarray(cycle, dtype=np.int64)])
        offsets[len(cycles)] = offsets[len(cycles) - 1] + len(cycle)
    return np.concatenate(cycles), offsets


# ---- public API -----------------------------------------------------------------
def compute_persistence(
    points: object,
    *,
    max_dim: int = 1,
    metric: str = "euclidean",
    max_points: int = 1000,
    subsample: str = "maxmin",
    seed: int = 0,
    **metric_kw: int,
) -> PersistenceResult:
    """Rips persistence H0..H``max_dim`` of a point cloud, with members and summaries.

    Parameters
    ----------
    points : (n, D) array_like
        The cloud (finite, at least 2 rows).
    max_dim : int
        Highest homology dimension (1 = H0 and H1, docs/methods.md §4).
    metric : str
        One of ``metrics.METRICS``; ``metric_kw`` (``pca_dims``, ``n_neighbors``,
        ``density_k``) tune it, see :class:`~napari_topolens.topology.metrics.MetricSpace`.
    max_points : int
        Cap on the points used for H1 and above; H1 cost grows steeply with the
        number of points (docs/methods.md §4; measured: ~10 s for a noisy circle at 1,000 points).
        H0 always uses every point.
    subsample : {"maxmin", "random"}
        How to pick ``max_points`` points when the cloud is larger: greedy max-min
        landmarks under ``metric`` (cover the cloud, keep its loops) or uniform.
    seed : int
        Start landmark / random draw; the result is deterministic given it.

    Returns
    -------
    PersistenceResult
    """
    for key in metric_kw:
        if key not in _METRIC_KEYWORDS:
            raise TopoLensError(
                f"unknown keyword {key!r}; metric options are {', '.join(_METRIC_KEYWORDS)}"
            )
    max_dim = check_int("max_dim", max_dim, 0)
    max_points = check_int("max_points", max_points, 3)
    seed = check_int("seed", seed, 0)
    if subsample not in SUBSAMPLE_MODES:
        raise TopoLensError(
            f"unknown subsample {subsample!r}; use one of {', '.join(SUBSAMPLE_MODES)}"
        )

    space = MetricSpace(points, metric, **metric_kw)
    n = space.n
    z = space.single_linkage()
    h0 = np.column_stack([np.zeros(n), np.append(z[:, 2], np.inf)])
    h0_members, h0_offsets = _h0_members(z, n)
    diagrams = [h0]

    h1_members = np.zeros(0, dtype=np.int64)
    h1_offsets = np.zeros(1, dtype=np.int64)
    if max_dim >= 1:
        index, mode = _choose_subsample(space, max_points, subsample, seed)
        distances = space.submatrix(index)
        diagrams.extend(_rips_higher(distances, max_dim))
        h1_members, h1_offsets = _h1_members(diagrams[1], distances, index)
    else:
        index, mode = np.zeros(0, dtype=np.int64), "none"

    finite_values = np.concatenate([_finite(d).ravel() for d in diagrams])
    top = float(finite_values.max()) if finite_values.size else 0.0
    grid = np.linspace(0.0, top if top > 0 else 1.0, _BETTI_GRID_POINTS)
    return PersistenceResult(
        diagrams=diagrams,
        metric=metric,
        n_points=n,
        max_dim=max_dim,
        h1_index=index,
        subsample=mode,
        h0_members=h0_members,
        h0_member_offsets=h0_offsets,
        h1_members=h1_members,
        h1_member_offsets=h1_offsets,
        betti_grid=grid,
        betti_curves=betti_curves(diagrams, grid),
        total_persistence=np.array([total_persistence(d) for d in diagrams]),
        entropy=np.array([persistence_entropy(d) for d in diagrams]),
        linkage=z,
    )


def persistence_diagrams(
    points: object, max_dim: int = 1, metric: str = "euclidean", **kw: Any
) -> list[np.ndarray]:
    """Just the diagrams of :func:`compute_persistence` (same keywords)."""
    return compute_persistence(points, max_dim=max_dim, metric=metric, **kw).diagrams
