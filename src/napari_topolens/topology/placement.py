"""Out-of-sample placement: any activation vector, placed in a saved analysis's graph.

An analysis is built from a sample of positions, but its Mapper graph and its
cluster-flow stages are defined by rules a new vector can be put through without
recomputing anything (docs/methods.md §8):

* **Mapper.** The cover is the lens's intervals (kmapper's cubes, saved as
  ``cube_lower``/``cube_upper``); a vector lies in every cube whose interval holds
  its lens value. In each such cube it joins the **lowest-numbered cluster that
  has a core point within eps** of it, or none (noise). That is exactly DBSCAN's
  own rule for the points it clustered (``topology.mapper.dbscan_labels``): a core
  point is within eps of itself and of no core point of another cluster, and a
  border point joins the lowest-numbered cluster whose core points reach it (the
  one scikit-learn's expansion reaches first). So every analysed point, placed
  again, lands in exactly the nodes it is a member of. A new vector is placed as a
  border point would be: it never becomes core and never joins or splits clusters.
* **Cluster flow.** Each stage is the single-linkage tree cut at a height ``t``. A
  vector takes the cluster (or noise) of its **nearest analysed point** when that
  point lies within ``t``, else it is noise (-1) at that stage. An analysed point's
  nearest point is itself (distance 0), so it keeps its cluster at every stage.
  Only the Euclidean metric can be placed this way (the others depend on the whole
  cloud); other metrics leave the flow unplaced (said in ``Placement.note``).

"Within eps" is decided as DBSCAN decides it: ``sum((x - y)**2) <= eps * eps``,
summed coordinate by coordinate in float64 (``topology.mst.squared_distances``),
after a float64 screen by matrix products with a rounding margin. All work runs in
blocks of about :data:`BLOCK_ENTRIES` pairs, so memory is bounded for any number
of vectors.

What placement needs is recorded once, when the analysis is made
(:func:`placement_index`), and saved with it (``LayerAnalysis.placement``):
lens parameters, the cover's intervals, eps, min_samples and which members of
each node are core points in its cube.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import LayerError, TopoLensError
from .mapper import NODE_ID, MapperGraph
from .results import Analysis, LayerAnalysis, PlacementIndex

__all__ = [
    "BLOCK_ENTRIES",
    "Placement",
    "PlacementIndex",
    "Placer",
    "place",
    "placement_index",
]

#: Pairs tested at once (float64 products and masks: about 100 MB at most).
BLOCK_ENTRIES = 4_000_000
_U64 = float(np.finfo(np.float64).eps)
_PLACEABLE_LENSES = ("l2norm", "pca1", "pca2", "probability")


@dataclass
class Placement:
    """Where each of ``n`` vectors falls in one layer's analysis.

    Attributes
    ----------
    layer : str
    nodes, node_offsets : ndarray of int64
        CSR lists: the Mapper node numbers of vector ``i`` are
        ``nodes[node_offsets[i]:node_offsets[i + 1]]`` (ascending; empty = in no
        node: outside every cube, or DBSCAN noise in every cube that holds it).
    node : ndarray (n,) int64
        One node per vector, the lowest-numbered of its nodes; -1 for none.
    stage_names : list of str
        The cluster-flow stages placed (the cluster stages; not ``"labels"``).
    flow : ndarray (S, n) int64
        Cluster of each vector at each of those stages, -1 for noise or too far.
    nearest : ndarray (n,) int64
        Row of the nearest analysed point (Euclidean); -1 when the flow is not placed.
    nearest_distance : ndarray (n,) float64
    outside : ndarray (n,) bool
        The lens value lies in no cube of the cover (outside the analysed range): in
        no node for that reason, not as DBSCAN noise.
    note : str
        What could not be placed and why (empty when everything was).
    """

    layer: str
    nodes: np.ndarray
    node_offsets: np.ndarray
    node: np.ndarray
    stage_names: list[str]
    flow: np.ndarray
    nearest: np.ndarray
    nearest_distance: np.ndarray
    outside: np.ndarray
    note: str = ""

    def __len__(self) -> int:
        return len(self.node)

    def nodes_of(self, i: int) -> np.ndarray:
        """Node numbers of vector ``i``."""
        return self.nodes[self.node_offsets[i] : self.node_offsets[i + 1]]

    def membership(self, n_nodes: int) -> Any:
        """``(n, n_nodes)`` sparse 0/1 matrix: vector i is in node j."""
        import scipy.sparse as sp

        counts = np.diff(self.node_offsets)
        rows = np.repeat(np.arange(len(counts)), counts)
        return sp.csr_matrix(
            (np.ones(len(self.nodes), np.int8), (rows, self.nodes)), shape=(len(counts), n_nodes)
        )


# --------------------------------------------------------------------------- exact tests


def _pair_squared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum((a - b)**2)`` per row pair, coordinate by coordinate (``mst.squared_distances``)."""
    diff = (a - b).T
    total = np.zeros(len(a))
    for row in diff:
        total += row * row
    return total


def _screen(
    q: np.ndarray, c: np.ndarray, qsq: np.ndarray, csq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances from one product, ``(len(q), len(c))``, and a per-row bound on
    their rounding error (the largest column norm stands for every column's)."""
    approx = q @ c.T
    approx *= -2.0
    approx += qsq[:, None]
    approx += csq[None, :]
    top = float(csq.max()) if len(csq) else 0.0
    margin = 4.0 * (q.shape[1] + 8) * _U64 * (qsq + top) + 1e-300
    return approx, margin


def _within(
    q: np.ndarray, c: np.ndarray, qsq: np.ndarray, csq: np.ndarray, e2: float
) -> np.ndarray:
    """(len(q), len(c)) bool: ``sum((q_i - c_j)**2) <= e2``, exactly."""
    approx, margin = _screen(q, c, qsq, csq)
    inside = approx <= (e2 - margin)[:, None]
    unsure = approx <= (e2 + margin)[:, None]
    del approx
    unsure ^= inside
    # flat: numpy's 2-D nonzero is many times slower on a mostly-False block
    rr, cc = np.divmod(np.flatnonzero(unsure), unsure.shape[1])
    del unsure
    if len(rr):
        inside[rr, cc] = _pair_squared(q[rr], c[cc]) <= e2
    return inside


def _row_blocks(n_rows: int, n_cols: int, budget: int = BLOCK_ENTRIES) -> Iterator[slice]:
    step = max(1, budget // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


# --------------------------------------------------------------------------- the index


def _pca_axes(x: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and signed axes of ``topology.mapper``'s PCA lens (same SVD, same signs)."""
    mean = x.mean(axis=0)
    if len(x) < 2:
        return mean, np.zeros((x.shape[1], n_components))
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    vt = vt[:n_components]
    if vt.shape[0] < n_components:
        vt = np.vstack([vt, np.zeros((n_components - vt.shape[0], x.shape[1]))])
    rows = np.arange(len(vt))
    sign = np.sign(vt[rows, np.argmax(np.abs(vt), axis=1)])
    sign[sign == 0] = 1.0
    return mean, np.ascontiguousarray((vt * sign[:, None]).T)


def _cover_bounds(lens: np.ndarray, n_cubes: int, perc_overlap: float) -> tuple:
    """kmapper's cubes as it builds them (``Cover.fit``), the non-empty ones in its order."""
    import kmapper

    data = np.c_[np.arange(len(lens)), lens]
    cover = kmapper.Cover(n_cubes=int(n_cubes), perc_overlap=float(perc_overlap))
    centers = cover.fit(data)
    lower: list[np.ndarray] = []
    upper: list[np.ndarray] = []
    for center in centers:
        lo, hi = center - cover.radius_, center + cover.radius_
        inside = np.all((data[:, cover.di_] >= lo) & (data[:, cover.di_] <= hi), axis=1)
        if inside.any():  # kmapper drops empty cubes before numbering them
            lower.append(np.asarray(lo, dtype=np.float64))
            upper.append(np.asarray(hi, dtype=np.float64))
    width = lens.shape[1]
    if not lower:
        return np.zeros((0, width)), np.zeros((0, width))
    return np.stack(lower), np.stack(upper)


def _in_cube(lens: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return np.all((lens >= lower) & (lens <= upper), axis=1)


def _core_counts(x: np.ndarray, rows: np.ndarray, cube_rows: np.ndarray, e2: float) -> np.ndarray:
    """Points of ``cube_rows`` within eps of each of ``rows`` (itself included)."""
    counts = np.zeros(len(rows), dtype=np.int64)
    c = x[cube_rows]
    csq = np.einsum("ij,ij->i", c, c)
    q_all = x[rows]
    qsq_all = np.einsum("ij,ij->i", q_all, q_all)
    for block in _row_blocks(len(rows), len(cube_rows)):
        counts[block] = np.count_nonzero(_within(q_all[block], c, qsq_all[block], csq, e2), axis=1)
    return counts


def placement_index(points: Any, mapper: MapperGraph, metric: str = "euclidean") -> PlacementIndex:
    """Record what placing new vectors in ``mapper`` (built on ``points``) needs.

    Core flags are found again here (DBSCAN's pass does not hand them out): for the
    members of each node, the points of their cube within eps are counted, a block
    of pairs at a time.
    """
    x = np.ascontiguousarray(np.asarray(points, dtype=np.float64))
    params = mapper.params
    lens_name = str(params.get("lens", ""))
    n_nodes = mapper.n_nodes
    node_cube = np.zeros(n_nodes, dtype=np.int64)
    node_cluster = np.zeros(n_nodes, dtype=np.int64)
    for i, node_id in enumerate(mapper.node_ids):
        match = NODE_ID.match(node_id)
        if match is None:
            raise TopoLensError(f"Mapper node {node_id!r} is not named cube<i>_cluster<j>.")
        node_cube[i], node_cluster[i] = int(match.group(1)), int(match.group(2))
    lens = np.asarray(mapper.lens_components, dtype=np.float64)
    width = lens.shape[1] if lens.ndim == 2 else 1
    mean = np.zeros(0)
    axes = np.zeros((0, 0))
    note = ""
    if lens_name in ("pca1", "pca2"):
        mean, axes = _pca_axes(x, 1 if lens_name == "pca1" else 2)
    elif lens_name not in _PLACEABLE_LENSES:
        note = f"the lens {lens_name!r} is not a function of the vector: Mapper nodes not placed"
    eps = float(params.get("eps", float("nan")))
    min_samples = int(params.get("min_samples", 1))
    core = np.zeros(len(mapper.members), dtype=bool)
    if n_nodes:
        lower, upper = _cover_bounds(
            lens,
            int(params.get("n_cubes_used", params.get("n_cubes", 10))),
            float(params.get("perc_overlap", 0.5)),
        )
        if node_cube.max() >= len(lower):
            raise TopoLensError(
                f"the Mapper graph names cube {int(node_cube.max())} but its cover has "
                f"{len(lower)} non-empty cubes; it was not built by mapper_graph"
            )
        e2 = eps * eps
        for cube in np.unique(node_cube):
            cube_rows = np.flatnonzero(_in_cube(lens, lower[cube], upper[cube]))
            in_cube = np.flatnonzero(node_cube == cube)
            entries = np.concatenate(
                [np.arange(mapper.member_offsets[n], mapper.member_offsets[n + 1]) for n in in_cube]
            )
            counts = _core_counts(x, mapper.members[entries], cube_rows, e2)
            core[entries] = counts >= min_samples
    else:
        lower = upper = np.zeros((0, width))
    return PlacementIndex(
        lens=lens_name,
        lens_mean=np.asarray(mean, dtype=np.float64),
        lens_axes=np.asarray(axes, dtype=np.float64),
        cube_lower=lower,
        cube_upper=upper,
        eps=eps,
        min_samples=min_samples,
        member_core=core,
        node_cube=node_cube,
        node_cluster=node_cluster,
        metric=str(metric),
        note=note,
    )


# --------------------------------------------------------------------------- placing


@dataclass
class _Cube:
    lower: np.ndarray
    upper: np.ndarray
    core: np.ndarray  # (n_core, D) float64, sorted by cluster number
    core_sq: np.ndarray
    core_node: np.ndarray  # node number of each core row


@dataclass
class Placer:
    """One layer's analysis, ready to place vectors (built once, reused per image).

    Use :meth:`of` to build it and :meth:`place` to place; :func:`place` is the
    one-call form.
    """

    layer: str
    dims: int
    index: PlacementIndex
    cubes: list[_Cube]
    cloud: np.ndarray  # (M, D) float64: the analysed points
    cloud_sq: np.ndarray
    stage_names: list[str]
    stage_rows: np.ndarray  # rows of flow.memberships placed
    thresholds: np.ndarray
    memberships: np.ndarray  # (S, M)
    n_nodes: int
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, result: LayerAnalysis) -> Placer:
        """The placer of one layer's results (its saved index, or one built now for an
        analysis saved before placement was recorded)."""
        index = getattr(result, "placement", None)
        cloud = np.ascontiguousarray(np.asarray(result.cloud.points, dtype=np.float64))
        notes: list[str] = []
        if index is None:
            index = placement_index(cloud, result.mapper)
            notes.append("placement index rebuilt (the analysis was saved without one)")
        mapper = result.mapper
        cubes: list[_Cube] = []
        if mapper.n_nodes and not index.note:
            order = np.lexsort((index.node_cluster, index.node_cube))
            for cube in range(len(index.cube_lower)):
                nodes = order[index.node_cube[order] == cube]
                rows: list[np.ndarray] = []
                owner: list[np.ndarray] = []
                for n in nodes:
                    sl = slice(mapper.member_offsets[n], mapper.member_offsets[n + 1])
                    core_members = mapper.members[sl][index.member_core[sl]]
                    rows.append(core_members)
                    owner.append(np.full(len(core_members), n, dtype=np.int64))
                core_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
                core = cloud[core_rows]
                cubes.append(
                    _Cube(
                        index.cube_lower[cube],
                        index.cube_upper[cube],
                        core,
                        np.einsum("ij,ij->i", core, core),
                        np.concatenate(owner) if owner else np.zeros(0, np.int64),
                    )
                )
        elif index.note:
            notes.append(index.note)
        flow = result.flow
        stage_rows = np.array(
            [i for i, name in enumerate(flow.stage_names) if name != "labels"], dtype=np.int64
        )
        if index.metric != "euclidean":
            notes.append(
                f"the cluster flow uses the {index.metric!r} metric, which depends on the whole "
                "cloud: flow clusters not placed"
            )
            stage_rows = np.zeros(0, np.int64)
        return cls(
            layer=result.name,
            dims=cloud.shape[1],
            index=index,
            cubes=cubes,
            cloud=cloud,
            cloud_sq=np.einsum("ij,ij->i", cloud, cloud),
            stage_names=[flow.stage_names[i] for i in stage_rows],
            stage_rows=stage_rows,
            thresholds=np.asarray(flow.thresholds, dtype=np.float64)[stage_rows],
            memberships=np.asarray(flow.memberships)[stage_rows],
            n_nodes=mapper.n_nodes,
            notes=notes,
        )

    def lens_of(self, x: np.ndarray, probabilities: Any = None) -> np.ndarray:
        """The lens value(s) ``(n, L)`` of vectors, as ``mapper_graph`` computes them."""
        index = self.index
        if index.lens == "l2norm":
            return np.linalg.norm(x, axis=1)[:, None]
        if index.lens in ("pca1", "pca2"):
            return (x - index.lens_mean) @ index.lens_axes
        if index.lens == "probability":
            if probabilities is None:
                raise TopoLensError(
                    "this layer's Mapper lens is the predicted-class probability: pass "
                    "probabilities (the softmax of each vector's image, (n, K), or its max, (n,))"
                )
            p = np.asarray(probabilities, dtype=np.float64)
            if p.ndim == 2:
                p = p.max(axis=1)
            if p.shape != (len(x),) or not np.all(np.isfinite(p)):
                raise TopoLensError(
                    f"probabilities must be finite, one row per vector ({len(x)}), got shape "
                    f"{np.shape(probabilities)}"
                )
            return p[:, None]
        raise TopoLensError(f"the lens {index.lens!r} cannot be placed")

    def place(self, vectors: Any, probabilities: Any = None) -> Placement:
        """Place ``(n, D)`` vectors; see the module docstring for the rules."""
        x = _vectors(vectors, self.dims, self.layer)
        n = len(x)
        node_lists: list[np.ndarray] = []  # (vector, node) pairs, per cube
        vector_lists: list[np.ndarray] = []
        covered = np.ones(n, dtype=bool)
        if self.cubes:
            lens = self.lens_of(x, probabilities)
            sq = np.einsum("ij,ij->i", x, x)
            e2 = float(self.index.eps) ** 2
            covered[:] = False
            for cube in self.cubes:
                held = _in_cube(lens, cube.lower, cube.upper)
                covered |= held
                inside = np.flatnonzero(held)
                if not len(inside) or not len(cube.core):
                    continue
                for block in _row_blocks(len(inside), len(cube.core)):
                    rows = inside[block]
                    hits = _within(x[rows], cube.core, sq[rows], cube.core_sq, e2)
                    reached = hits.any(axis=1)
                    first = hits.argmax(axis=1)  # core rows sorted by cluster number
                    vector_lists.append(rows[reached])
                    node_lists.append(cube.core_node[first[reached]])
        if vector_lists:
            vec = np.concatenate(vector_lists)
            nod = np.concatenate(node_lists)
            order = np.lexsort((nod, vec))
            vec, nod = vec[order], nod[order]
        else:
            vec = nod = np.zeros(0, np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(vec, minlength=n), out=offsets[1:])
        first_node = np.full(n, -1, dtype=np.int64)
        has = offsets[1:] > offsets[:-1]
        first_node[has] = nod[offsets[:-1][has]]
        nearest = np.full(n, -1, dtype=np.int64)
        distance = np.full(n, np.nan)
        flow = np.full((len(self.stage_rows), n), -1, dtype=np.int64)
        if len(self.stage_rows) and n:
            nearest, d2 = self._nearest(x)
            distance = np.sqrt(d2)
            for s in range(len(self.stage_rows)):
                close = distance <= self.thresholds[s]
                flow[s, close] = self.memberships[s, nearest[close]]
        return Placement(
            layer=self.layer,
            nodes=nod.astype(np.int64),
            node_offsets=offsets,
            node=first_node,
            stage_names=list(self.stage_names),
            flow=flow,
            nearest=nearest,
            nearest_distance=distance,
            outside=~covered,
            note="; ".join(self.notes),
        )

    def _nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest analysed row (ties: lowest row) and its exact squared distance."""
        n = len(x)
        best = np.zeros(n, dtype=np.int64)
        best_d2 = np.zeros(n)
        sq = np.einsum("ij,ij->i", x, x)
        for block in _row_blocks(n, len(self.cloud)):
            q = x[block]
            approx, margin = _screen(q, self.cloud, sq[block], self.cloud_sq)
            # every column whose true distance could be the smallest
            cutoff = approx.min(axis=1) + 2.0 * margin
            rr, cc = np.divmod(np.flatnonzero(approx <= cutoff[:, None]), approx.shape[1])
            del approx
            exact = _pair_squared(q[rr], self.cloud[cc])
            # per query: the smallest exact value, then the lowest row among equals
            order = np.lexsort((cc, exact, rr))
            rr, cc, exact = rr[order], cc[order], exact[order]
            first = np.r_[True, rr[1:] != rr[:-1]]
            best[block.start + rr[first]] = cc[first]
            best_d2[block.start + rr[first]] = exact[first]
        return best, best_d2


def _vectors(vectors: Any, dims: int, layer: str) -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim == 1 and dims and x.shape[0] == dims:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dims:
        raise LayerError(
            f"layer {layer!r} has {dims}-dimensional activations; the vectors to place are "
            f"shaped {x.shape}: pass (n, {dims})"
        )
    if x.dtype.kind not in "biuf":
        raise LayerError(f"the vectors to place are {x.dtype}, not numbers")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise LayerError("the vectors to place hold NaN or infinite values")
    return x


def place(analysis: Analysis, layer: str, vectors: Any, *, probabilities: Any = None) -> Placement:
    """Place activation vectors of ``layer`` in a saved analysis: Mapper nodes and flow clusters.

    Parameters
    ----------
    analysis : Analysis
    layer : str
        One of ``analysis.layers``.
    vectors : array (n, D)
        Activation vectors of that layer (any positions of any images).
    probabilities : array (n, K) or (n,), optional
        Only for the ``"probability"`` lens: the softmax (or its max) of each
        vector's image.

    Returns
    -------
    Placement
        Exact for analysed points: each, placed again, lands in exactly the nodes
        it is a member of and in its own cluster at every cluster stage.
    """
    return Placer.of(analysis[layer]).place(vectors, probabilities)
