"""Vietoris-Rips persistence of a layer's point cloud (docs/methods.md §4).

H0 is computed exactly on the whole cloud as single linkage (its merge heights
are the minimum-spanning-tree edge lengths, i.e. the finite H0 deaths; above
2,048 points the tree is built in O(N·d) memory, see ``topology.mst``); H1 and
above use gudhi's Ripser-class ``RipsPersistence``, never a full simplex tree.

Which points H1 uses, and up to which edge length, is chosen by measured cost
and closeness (``subsample="auto"``, the default):

* a cloud of at most ``max_points`` points is used whole (exact);
* a cloud of at most ``min(max_points, 2 * PILOT_POINTS)`` points is used whole
  without a pilot (it would cost about what it saves);
* a larger one gets ``max_points`` landmarks, random or max-min: a random pilot
  subsample of the cloud is computed whole, and each landmark kind is computed on
  half of it; the kind whose pilot diagram is closer (bottleneck distance) to the
  pilot's full diagram is taken, unless its estimated cost exceeds that of the
  whole cloud, which is then used instead (so the default is never dearer than the
  full cloud; max-min landmarks are spread out and cost more per point);
* H1 (``max_dim == 1``) runs on a cut of the filtration that is proven not to
  change the diagram (``topology.rips_h1``: every longer edge is a tree edge or has
  a witness point closer to both its ends, and no class is alive at the cut), so
  it is the exact, uncut diagram of the points chosen. With H2 and above the
  filtration is not cut. The pilot's largest death only sizes the cost estimates.

Everything measured is recorded in ``PersistenceResult.h1_route``. Costs are
estimated deterministically from the pilot (``points³ × the fraction of
triangles below the cut``), so the same cloud and seed give the same route on
any machine; the seconds taken are recorded beside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from napari_topolens.errors import TopoLensError
from napari_topolens.topology.metrics import MetricSpace, check_int
from napari_topolens.topology.mst import Device
from napari_topolens.topology.rips_h1 import certified_h1

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

SUBSAMPLE_MODES = ("auto", "maxmin", "random", "full")
# Points of the random pilot subsample that sizes the H1 route and its cut.
PILOT_POINTS = 300
# The cut is this factor above the largest H1+ death seen on the pilot.
_CUT_FACTOR = 1.05
_METRIC_KEYWORDS = ("pca_dims", "n_neighbors", "density_k")
_BETTI_GRID_POINTS = 100
# Distance-matrix entries scanned per block when looking up H1 birth edges.
_EDGE_BLOCK_ENTRIES = 1 << 22


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
        ``"none"`` (the whole cloud), ``"random"`` or ``"maxmin"``: the points H1 used.
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
    h1_route : dict
        How H1 was computed: ``requested`` and chosen ``route``, ``points``,
        ``cut`` (edge length the filtration was cut at; inf when uncut),
        ``cut_held`` (the cut is proven not to change the diagram), for the
        certified H1 cut the ``birth_bound`` (longest edge that could start a
        bar), ``enclosing_radius`` and ``cut_tries``; ``planned_cut`` (the pilot's
        largest death x 1.05, used for the cost estimates), ``pilot_points``, per
        landmark kind the ``pilot_bottleneck_*`` to the pilot's full diagram, the
        estimated ``cost_*`` (relative units) and the ``seconds`` taken.
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
    h1_route: dict[str, Any] = field(default_factory=dict)


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
    if space.n <= max_points or mode == "full":
        return np.arange(space.n, dtype=np.int64), "none"
    if mode == "random":
        return _random_rows(space.n, max_points, seed), "random"
    return np.sort(maxmin_landmarks(space, max_points, seed)), "maxmin"


def _random_rows(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def _largest_death(diagrams: list[np.ndarray]) -> float:
    deaths = [d[np.isfinite(d[:, 1]), 1] for d in diagrams if len(d)]
    values = np.concatenate(deaths) if deaths else np.zeros(0)
    return float(values.max()) if values.size else float("nan")


def _triangle_fraction(distances: np.ndarray, cut: float) -> float:
    """Fraction of point triples whose three edges are all at most ``cut``."""
    m = len(distances)
    if m < 3 or not np.isfinite(cut):
        return 1.0
    adjacency = (distances <= cut).astype(np.float64)
    np.fill_diagonal(adjacency, 0.0)
    triangles = float(np.einsum("ij,ji->", adjacency @ adjacency, adjacency)) / 6.0
    return triangles / (m * (m - 1) * (m - 2) / 6.0)


def _bottleneck(a: np.ndarray, b: np.ndarray) -> float:
    import gudhi

    return float(gudhi.bottleneck_distance(_finite(a), _finite(b)))


def _plan_h1(
    space: MetricSpace, max_points: int, max_dim: int, seed: int
) -> tuple[np.ndarray, str, float, dict[str, Any]]:
    """Rows, landmark kind and filtration cut for H1 under ``subsample="auto"``."""
    n = space.n
    record: dict[str, Any] = {"requested": "auto"}
    pilot_size = min(n, PILOT_POINTS)
    if n <= min(max_points, 2 * PILOT_POINTS):  # a pilot would cost about what the cut saves
        record.update(route="full", pilot_points=0)
        return np.arange(n, dtype=np.int64), "none", float("inf"), record
    pilot = _random_rows(n, pilot_size, seed + 1)
    pilot_distances = space.submatrix(pilot)
    pilot_diagrams, _ = _rips_higher(pilot_distances, max_dim)
    cut = _largest_death(pilot_diagrams) * _CUT_FACTOR
    record.update(pilot_points=int(pilot_size))
    if n <= max_points:
        record.update(route="full")
        return np.arange(n, dtype=np.int64), "none", cut, record
    # closeness: each landmark kind on half of the pilot against the pilot's full
    # diagram; cost: points³ × the fraction of triangles under each kind's cut
    half = max(pilot_size // 2, 3)
    subsets = {
        "random": np.sort(np.random.default_rng(seed + 2).choice(pilot_size, half, replace=False)),
        "maxmin": np.sort(_maxmin_in_matrix(pilot_distances, half, seed)),
    }
    close: dict[str, float] = {}
    cuts: dict[str, float] = {}
    fraction: dict[str, float] = {}
    for kind, sub in subsets.items():
        sub_distances = pilot_distances[np.ix_(sub, sub)]
        diagrams, _ = _rips_higher(sub_distances, max_dim)
        close[kind] = _bottleneck(pilot_diagrams[0], diagrams[0])
        cuts[kind] = _largest_death(diagrams) * _CUT_FACTOR
        fraction[kind] = _triangle_fraction(sub_distances, cuts[kind])
    cost = {
        "full": float(n) ** 3 * _triangle_fraction(pilot_distances, cut),
        "random": float(max_points) ** 3 * fraction["random"],
        "maxmin": float(max_points) ** 3 * fraction["maxmin"],
    }
    record.update(
        pilot_bottleneck_random=close["random"],
        pilot_bottleneck_maxmin=close["maxmin"],
        **{f"cost_{k}": v for k, v in cost.items()},
    )
    kind = "maxmin" if close["maxmin"] < close["random"] else "random"
    if cost[kind] > cost["full"]:
        kind = "random" if cost["random"] <= cost["full"] else "full"
    record.update(route=kind)
    if kind == "full":
        return np.arange(n, dtype=np.int64), "none", cut, record
    if kind == "maxmin":
        rows = np.sort(maxmin_landmarks(space, max_points, seed))
        return rows, "maxmin", max(cuts["maxmin"], cut), record
    return _random_rows(n, max_points, seed), "random", cut, record


def _maxmin_in_matrix(distances: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Max-min landmarks of a dense distance matrix (as :func:`maxmin_landmarks`)."""
    m = len(distances)
    chosen = np.empty(size, dtype=np.int64)
    chosen[0] = int(np.random.default_rng(seed).integers(m))
    nearest = distances[chosen[0]].copy()
    nearest[chosen[0]] = -1.0
    for i in range(1, size):
        chosen[i] = int(np.argmax(nearest))
        np.minimum(nearest, distances[chosen[i]], out=nearest)
        nearest[chosen[i]] = -1.0
    return chosen


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
def _rips_higher(
    distances: np.ndarray, max_dim: int, parent: np.ndarray | None = None
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """H1..H``max_dim`` of the Rips filtration of a distance matrix (gudhi's Ripser fork),
    uncut, and how it was computed.

    H1 alone (``max_dim == 1``) runs on a cut proven not to change it
    (``topology.rips_h1``; ``parent``: the matrix's minimum spanning tree, computed
    when not given). With H2 and above the filtration is not cut (gudhi stops at the
    enclosing radius, above which nothing changes).
    """
    if max_dim == 1:
        if parent is None:
            parent, _ = _prim_parents(distances)
        h1, record = certified_h1(distances, parent)
        raw = [h1]
        record["cut_certified"] = True
    else:
        from gudhi.sklearn.rips_persistence import RipsPersistence

        rips = RipsPersistence(
            homology_dimensions=list(range(1, max_dim + 1)),
            input_type="full distance matrix",
            n_jobs=1,
        )
        result = rips.fit_transform([np.ascontiguousarray(distances, dtype=np.float64)])[0]
        raw = [np.asarray(d, dtype=np.float64).reshape(-1, 2) for d in result]
        record = {"cut": float("inf"), "cut_certified": False}
    out = []
    for diagram in raw:
        diagram = diagram[diagram[:, 1] > diagram[:, 0]]
        order = np.lexsort((diagram[:, 0], -(diagram[:, 1] - diagram[:, 0])))
        out.append(diagram[order])
    return out, record


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


def _exact_birth_edges(
    births: np.ndarray, distances: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per birth, the first edge ``(u < v)`` in row order whose length equals it exactly.

    Scans the upper triangle in row blocks (bounded memory, no sort of all pairs);
    ``found`` is False where no edge has exactly that length.
    """
    m = distances.shape[0]
    values, inverse = np.unique(births, return_inverse=True)
    first = np.full(len(values), -1, dtype=np.int64)
    rows = max(1, _EDGE_BLOCK_ENTRIES // max(m, 1))
    low, high = values[0], values[-1]
    for start in range(0, m - 1, rows):
        block = distances[start : start + rows, start + 1 :]  # right of the diagonal block
        row, column = np.nonzero((block >= low) & (block <= high))
        column += start + 1
        row += start
        upper = column > row
        row, column = row[upper], column[upper]  # row order, then column: pair order
        lengths = distances[row, column]
        slot = np.minimum(np.searchsorted(values, lengths), len(values) - 1)
        hit = np.flatnonzero(values[slot] == lengths)
        if hit.size == 0:
            continue
        which, at = np.unique(slot[hit], return_index=True)
        new = first[which] < 0
        first[which[new]] = row[hit[at[new]]] * m + column[hit[at[new]]]
        if (first >= 0).all():
            break
    edge = first[inverse]
    found = edge >= 0
    return np.where(found, edge // m, 0), np.where(found, edge % m, 0), found


def _nearest_birth_edges(
    births: np.ndarray, distances: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per birth, the pair whose length is nearest in the stable sort of all pair lengths.

    Only for births that are no exact matrix entry (never seen with gudhi's float64
    input); sorts all pairs, so it is kept off the common path.
    """
    m = distances.shape[0]
    iu, ju = np.triu_indices(m, 1)
    lengths = distances[iu, ju]
    by_length = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[by_length]
    u = np.empty(len(births), dtype=np.int64)
    v = np.empty(len(births), dtype=np.int64)
    for k, birth in enumerate(births):
        pos = int(np.searchsorted(sorted_lengths, birth))
        candidates = [p for p in (pos - 1, pos, pos + 1) if 0 <= p < len(sorted_lengths)]
        pos = min(candidates, key=lambda p: (abs(sorted_lengths[p] - birth), p))
        u[k], v[k] = iu[by_length[pos]], ju[by_length[pos]]
    return u, v


def _tree_paths(
    parent: np.ndarray, depth: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the tree paths ``u .. lca .. v``, all pairs climbed at once."""
    a, b = u.copy(), v.copy()
    while True:  # lowest common ancestors: climb the deeper end of every unfinished pair
        open_ = np.flatnonzero(a != b)
        if open_.size == 0:
            break
        climb_a = depth[a[open_]] >= depth[b[open_]]
        a[open_[climb_a]] = parent[a[open_[climb_a]]]
        b[open_[~climb_a]] = parent[b[open_[~climb_a]]]
    lca = a
    up = depth[u] - depth[lca] + 1  # u .. lca
    down = depth[v] - depth[lca]  # .. v, without the lca
    offsets = np.zeros(len(u) + 1, dtype=np.int64)
    np.cumsum(up + down, out=offsets[1:])
    members = np.empty(offsets[-1], dtype=np.int64)
    # u's side fills each cycle forwards from its start, v's backwards from its end
    for node, lengths, place, sign in (
        (u.copy(), up, offsets[:-1], 1),
        (v.copy(), down, offsets[1:] - 1, -1),
    ):
        for step in range(int(lengths.max(initial=0))):
            live = np.flatnonzero(lengths > step)
            members[place[live] + sign * step] = node[live]
            node[live] = parent[node[live]]
    return members, offsets


def _h1_members(
    diagram: np.ndarray,
    distances: np.ndarray,
    index: np.ndarray,
    tree: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """CSR cycles: each bar's birth edge closed through the minimum spanning tree."""
    m = distances.shape[0]
    if len(diagram) == 0 or m < 3:
        return np.zeros(0, dtype=np.int64), np.zeros(len(diagram) + 1, dtype=np.int64)
    parent, depth = _prim_parents(distances) if tree is None else tree
    births = np.asarray(diagram[:, 0], dtype=np.float64)
    u, v, found = _exact_birth_edges(births, distances)
    if not found.all():
        u[~found], v[~found] = _nearest_birth_edges(births[~found], distances)
    members, offsets = _tree_paths(parent, depth, u, v)
    return index[members], offsets


def _checked_options(
    metric_kw: dict[str, int], max_dim: int, max_points: int, seed: int, subsample: str
) -> tuple[int, int, int]:
    """``max_dim``, ``max_points`` and ``seed`` checked; unknown options refused."""
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
    return max_dim, max_points, seed


class _HigherHomology(NamedTuple):
    """H1..H``max_dim`` of the cloud's rows ``rows`` and how they were computed."""

    diagrams: list[np.ndarray]
    rows: np.ndarray
    subsample: str
    h1_members: np.ndarray
    h1_offsets: np.ndarray
    route: dict[str, Any]


def _higher_homology(
    space: MetricSpace, max_dim: int, max_points: int, subsample: str, seed: int
) -> _HigherHomology:
    """The diagrams above H0 on the points chosen for them (none when ``max_dim`` is 0)."""
    if max_dim < 1:
        route: dict[str, Any] = {"requested": subsample, "route": "none"}
        return _HigherHomology(
            [],
            np.zeros(0, dtype=np.int64),
            "none",
            np.zeros(0, dtype=np.int64),
            np.zeros(1, dtype=np.int64),
            route,
        )
    started = time.perf_counter()
    if subsample == "auto":
        index, mode, cut, route = _plan_h1(space, max_points, max_dim, seed)
    else:
        index, mode = _choose_subsample(space, max_points, subsample, seed)
        cut = float("inf")
        route = {"requested": subsample, "route": "full" if mode == "none" else mode}
    distances = space.submatrix(index)
    parent, depth = _prim_parents(distances)
    higher, cut_record = _rips_higher(distances, max_dim, parent)
    route.update(
        points=len(index),
        planned_cut=float(cut),
        cut=float(cut_record["cut"]),
        cut_held=bool(cut_record["cut_certified"]),
        **{k: v for k, v in cut_record.items() if k not in ("cut", "cut_certified")},
        seconds=time.perf_counter() - started,
    )
    h1_members, h1_offsets = _h1_members(higher[0], distances, index, (parent, depth))
    return _HigherHomology(higher, index, mode, h1_members, h1_offsets, route)


# ---- public API -----------------------------------------------------------------
def compute_persistence(
    points: object,
    *,
    max_dim: int = 1,
    metric: str = "euclidean",
    max_points: int = 1000,
    subsample: str = "auto",
    seed: int = 0,
    device: Device = None,
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
    subsample : {"auto", "maxmin", "random", "full"}
        ``"auto"``: chosen by measured cost and closeness (see the module notes;
        never dearer than the whole cloud). H1 is exact on the points used either way.
        ``"full"``: always the whole cloud. Otherwise how to pick ``max_points``
        points when the cloud is larger: greedy max-min
        landmarks under ``metric`` (cover the cloud, keep its loops) or uniform.
    seed : int
        Start landmark / random draw; the result is deterministic given it.
    device : str or torch.device, optional
        Where the H0 tree's distance blocks run (``"cuda"``, ``"mps"``, ``"cpu"``
        through torch); ``None``: numpy on the CPU. The diagrams are the same.

    Returns
    -------
    PersistenceResult
    """
    max_dim, max_points, seed = _checked_options(metric_kw, max_dim, max_points, seed, subsample)
    space = MetricSpace(points, metric, **metric_kw)
    n = space.n
    z = space.single_linkage(device=device)
    h0 = np.column_stack([np.zeros(n), np.append(z[:, 2], np.inf)])
    h0_members, h0_offsets = _h0_members(z, n)
    higher = _higher_homology(space, max_dim, max_points, subsample, seed)
    diagrams = [h0, *higher.diagrams]
    finite_values = np.concatenate([_finite(d).ravel() for d in diagrams])
    top = float(finite_values.max()) if finite_values.size else 0.0
    grid = np.linspace(0.0, top if top > 0 else 1.0, _BETTI_GRID_POINTS)
    return PersistenceResult(
        diagrams=diagrams,
        metric=metric,
        n_points=n,
        max_dim=max_dim,
        h1_index=higher.rows,
        subsample=higher.subsample,
        h0_members=h0_members,
        h0_member_offsets=h0_offsets,
        h1_members=higher.h1_members,
        h1_member_offsets=higher.h1_offsets,
        betti_grid=grid,
        betti_curves=betti_curves(diagrams, grid),
        total_persistence=np.array([total_persistence(d) for d in diagrams]),
        entropy=np.array([persistence_entropy(d) for d in diagrams]),
        linkage=z,
        h1_route=higher.route,
    )


def persistence_diagrams(
    points: object, max_dim: int = 1, metric: str = "euclidean", **kw: Any
) -> list[np.ndarray]:
    """Just the diagrams of :func:`compute_persistence` (same keywords)."""
    return compute_persistence(points, max_dim=max_dim, metric=metric, **kw).diagrams
