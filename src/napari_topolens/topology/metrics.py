"""Point-cloud metrics, distance matrices and single linkage.

Five dissimilarities are offered (HOLE, docs/methods.md §6): ``euclidean``, ``cosine``,
``mahalanobis`` (on a whitened PCA), ``geodesic`` (shortest paths in a kNN graph)
and ``density`` (locally scaled euclidean). Each is built once per cloud as a
:class:`MetricSpace`, which can hand out the full matrix, a sub-matrix for a
subsample, one row at a time (for max-min landmarks) and the single-linkage tree,
each by the cheapest route that metric allows: single linkage (exact H0) runs on
condensed distances for small clouds and on the exact Borůvka minimum spanning
tree (``topology.mst``, O(n·d) memory) above ``DENSE_LINKAGE_LIMIT`` points, in
(whitened / unit) coordinates for euclidean, cosine and Mahalanobis, locally
scaled for density, and on the kNN graph alone for geodesic distances.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_topolens.errors import EmptySelectionError, TopoLensError
from napari_topolens.topology import config
from napari_topolens.topology.mst import Device, minimum_spanning_edges

__all__ = [
    "METRICS",
    "MetricSpace",
    "check_metric",
    "distance_matrix",
    "linkage_from_edges",
    "single_linkage",
    "validate_points",
]

METRICS = config.METRICS

# Up to this many points single linkage runs on the condensed distance matrix
# (scipy, 17 MB at 2,048 points, fastest there); above, on the O(n·d) Borůvka tree.
DENSE_LINKAGE_LIMIT = 2048

# Rows of a distance block computed at once, so that memory stays ~ 8 MB * n / 1000.
_BLOCK_ROWS = 1024
# Sparse graphs cannot hold an edge of length 0 (duplicate points): such kNN edges
# are stored as the smallest positive double, and path lengths below this limit
# (sums of such edges only) are read back as 0.
_ZERO_EDGE = np.finfo(np.float64).tiny
_ZERO_EDGE_LIMIT = 1e-300


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int, refusing bools, non-integers and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise TopoLensError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def validate_points(points: object, *, min_points: int = 2, what: str = "points") -> np.ndarray:
    """Return ``points`` as a finite 2-D float64 array with at least ``min_points`` rows.

    Raises
    ------
    EmptySelectionError
        Fewer than ``min_points`` rows.
    TopoLensError
        Not 2-D, or NaN / inf values.
    """
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TopoLensError(
            f"{what} must be a numeric (n_points, n_features) array; got {type(points).__name__}"
        ) from exc
    if array.ndim != 2:
        raise TopoLensError(
            f"{what} must be a 2-D (n_points, n_features) array, got shape {array.shape}; "
            "reshape it, e.g. points.reshape(len(points), -1)"
        )
    if array.shape[0] < min_points:
        raise EmptySelectionError(
            f"{what} has {array.shape[0]} row(s) but at least {min_points} are needed; "
            "select more images or positions"
        )
    if array.shape[1] < 1:
        raise TopoLensError(
            f"{what} has no features (shape {array.shape}); pick a layer with channels"
        )
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(array), axis=1)))
        raise TopoLensError(
            f"{what} has NaN or infinite values in {bad} row(s); drop those rows or check the layer output"
        )
    return array


def check_metric(metric: str) -> str:
    """``metric`` itself when it is one of :data:`METRICS`; a project error naming the choices otherwise."""
    if metric not in METRICS:
        raise TopoLensError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    return metric


def linkage_from_edges(
    n: int, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Single-linkage matrix ``Z`` (scipy layout) from the edges of a spanning tree.

    Kruskal's merges in order of weight are exactly the single-linkage merges, so a
    minimum spanning tree of any graph turns into its dendrogram in ``O(n log n)``.
    Cluster ids follow scipy: leaves ``0..n-1``, merge ``i`` creates id ``n + i``.
    """
    order = np.argsort(weights, kind="stable")
    parent = np.arange(n)
    cluster_id = np.arange(n)
    size = np.ones(n, dtype=np.int64)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    z = np.empty((n - 1, 4), dtype=np.float64)
    k = 0
    for e in order:
        a, b = find(int(rows[e])), find(int(cols[e]))
        if a == b:
            continue
        ida, idb = cluster_id[a], cluster_id[b]
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
        cluster_id[a] = n + k
        z[k] = (min(ida, idb), max(ida, idb), weights[e], size[a])
        k += 1
    if k != n - 1:
        raise TopoLensError(
            f"the graph is disconnected ({n - 1 - k} merges missing); cannot build single linkage"
        )
    return z


class MetricSpace:
    """A point cloud together with one of :data:`METRICS`, preprocessed once.

    Parameters
    ----------
    points : (n, D) array_like
        The cloud; validated (finite, 2-D, at least 2 rows).
    metric : str
        One of :data:`METRICS`:

        ``euclidean``
            Straight-line distance.
        ``cosine``
            ``1 - cos(angle)``. An all-zero vector has no direction: it is put at
            distance 1 from every other vector and 0 from other zero vectors
            (implemented by mapping each row to a unit vector in ``D + 1`` dims,
            where the cosine distance is half the squared euclidean distance).
        ``mahalanobis``
            Euclidean distance after whitening: PCA to ``min(pca_dims, D, n - 1)``
            components, each divided by the square root of its eigenvalue
            (components with eigenvalue below ``1e-12`` of the largest are dropped,
            they carry no variance). With ``D <= pca_dims`` and ``n > D`` this is the
            Mahalanobis distance of the sample covariance, invariant to any invertible
            affine map of the points.
        ``geodesic``
            Shortest-path length in the symmetric kNN graph (an edge when either
            point is among the other's ``n_neighbors`` nearest, weighted by euclidean
            length), as in Isomap. If that graph falls apart, its components are
            joined by the shortest euclidean edges between them (a minimum spanning
            tree over the components, as scikit-learn's Isomap does), so every
            distance is finite and a bridge costs its true euclidean length.
        ``density``
            Locally scaled euclidean distance ``d(x, y) / sqrt(r_k(x) r_k(y))``, with
            ``r_k`` the distance to the ``density_k``-th nearest other point (the
            self-tuning scale of Zelnik-Manor & Perona 2004): distances inside dense
            regions grow, those in sparse regions shrink, so clusters of different
            density become comparable. ``r_k = 0`` (more than ``k`` duplicates) is
            raised to the smallest positive ``r_k``. Symmetric, but not a metric
            (the triangle inequality can fail); Rips filtrations do not need one.
    pca_dims, n_neighbors, density_k : int
        Parameters of the metrics above (defaults of docs/methods.md §6: 50-D PCA, k = 5).
    """

    def __init__(
        self,
        points: object,
        metric: str = "euclidean",
        *,
        pca_dims: int = 50,
        n_neighbors: int = 10,
        density_k: int = 5,
    ) -> None:
        self.metric = check_metric(metric)
        self.points = validate_points(points)
        self.n = int(self.points.shape[0])
        for name, value in (
            ("pca_dims", pca_dims),
            ("n_neighbors", n_neighbors),
            ("density_k", density_k),
        ):
            if int(value) < 1:
                raise TopoLensError(f"{name} must be at least 1, got {value}")
        self.pca_dims = int(pca_dims)
        self.n_neighbors = int(n_neighbors)
        self.density_k = int(density_k)
        # ``features``: coordinates in which the metric is euclidean (or, for cosine,
        # half the squared euclidean distance); None for geodesic/density.
        self.features: np.ndarray | None = None
        self.graph = None
        self.radius: np.ndarray | None = None  # density: distance to the k-th neighbour
        if metric == "euclidean":
            self.features = self.points
        elif metric == "cosine":
            self.features = _cosine_features(self.points)
        elif metric == "mahalanobis":
            self.features = _whiten(self.points, self.pca_dims)
        elif metric == "geodesic":
            self.graph = _knn_graph(self.points, self.n_neighbors)
        else:
            self.radius = _kth_neighbor_distance(self.points, self.density_k)

    # ---- distances -------------------------------------------------------------
    def rows(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """Distances from the points ``index`` to every point, shape ``(len(index), n)``."""
        from scipy.spatial.distance import cdist

        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if self.metric == "geodesic":
            from scipy.sparse.csgraph import dijkstra

            out = dijkstra(self.graph, directed=False, indices=index)
            out[out < _ZERO_EDGE_LIMIT] = 0.0  # paths over duplicate points only
            out[np.arange(len(index)), index] = 0.0
            return out
        if self.metric == "density":
            out = cdist(self.points[index], self.points)
            out /= np.sqrt(self._radius()[index, None] * self._radius()[None, :])
            return out
        if self.metric == "cosine":
            out = cdist(self._features()[index], self._features(), "sqeuclidean")
            out *= 0.5
            return out
        return cdist(self._features()[index], self._features())

    def _features(self) -> np.ndarray:
        if self.features is None:
            raise TopoLensError(f"the {self.metric} metric has no feature coordinates")
        return self.features

    def _radius(self) -> np.ndarray:
        if self.radius is None:
            raise TopoLensError(f"the {self.metric} metric has no density radii")
        return self.radius

    def submatrix(self, index: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Symmetric zero-diagonal distance matrix between the points ``index`` (all by default).

        Distances are those of the whole cloud: geodesics run through the full kNN
        graph, density scales and whitening come from all points.
        """
        from scipy.spatial.distance import pdist, squareform

        index = (
            np.arange(self.n) if index is None else np.asarray(index, dtype=np.int64).reshape(-1)
        )
        if self.metric == "geodesic":
            blocks = [
                self.rows(index[s : s + _BLOCK_ROWS])[:, index]
                for s in range(0, len(index), _BLOCK_ROWS)
            ]
            out = np.vstack(blocks) if blocks else np.zeros((0, 0))
            out = np.minimum(out, out.T)  # Dijkstra sums may differ in the last bit
        elif self.metric == "density":
            out = squareform(pdist(self.points[index]))
            out /= np.sqrt(
                self._radius()[index, None] * self._radius()[None, index]
            )  # exactly symmetric
        elif self.metric == "cosine":
            out = squareform(pdist(self._features()[index], "sqeuclidean"))
            out *= 0.5
        else:
            out = squareform(pdist(self._features()[index]))
        np.fill_diagonal(out, 0.0)
        return out

    def single_linkage(self, *, method: str = "auto", device: Device = None) -> np.ndarray:
        """Single-linkage ``Z`` of the whole cloud; ``Z[:, 2]`` are the finite H0 deaths.

        Parameters
        ----------
        method : {"auto", "dense", "boruvka"}
            ``"dense"``: scipy's ``linkage`` on the condensed distance matrix
            (``n²/2`` doubles). ``"boruvka"``: the exact minimum spanning tree of
            :func:`~napari_topolens.topology.mst.minimum_spanning_edges`, in
            ``O(n·d)`` memory, then Kruskal's merges. Both give the same merge
            heights bit for bit (and the same ``Z`` without tied distances).
            ``"auto"`` takes dense up to ``DENSE_LINKAGE_LIMIT`` points.
        device : str or torch.device, optional
            Screen the Borůvka distance blocks with torch on this device
            (``"cuda"``, ``"mps"``, ``"cpu"``); the tree is the same.
        """
        from scipy.cluster.hierarchy import linkage
        from scipy.spatial.distance import pdist, squareform

        if method not in ("auto", "dense", "boruvka"):
            raise TopoLensError(f"unknown method {method!r}; use auto, dense or boruvka")
        if method == "auto":
            method = "dense" if self.n <= DENSE_LINKAGE_LIMIT and device is None else "boruvka"
        if self.metric == "geodesic":
            # The minimax path length of a graph's shortest-path metric is the minimax
            # path length of the graph itself, so the graph's MST gives the dendrogram.
            from scipy.sparse.csgraph import minimum_spanning_tree

            tree = minimum_spanning_tree(self.graph).tocoo()
            z = linkage_from_edges(self.n, tree.row, tree.col, tree.data)
            z[z[:, 2] < _ZERO_EDGE_LIMIT, 2] = 0.0
            return z
        if method == "boruvka":
            if self.metric == "density":
                a, b, w = minimum_spanning_edges(self.points, scale=self._radius(), device=device)
            else:
                a, b, w = minimum_spanning_edges(self._features(), device=device)
            z = linkage_from_edges(self.n, a, b, w)
        elif self.metric == "density":
            condensed = squareform(self.submatrix(), checks=False)
            return linkage(condensed, method="single")
        else:
            # what linkage(X, "single") does, minus its guess that a square X might
            # already be a distance matrix
            z = linkage(pdist(self.features), method="single")
        if self.metric == "cosine":
            # Single linkage depends only on the order of distances; cosine is a
            # monotone function (s**2 / 2) of the euclidean distance s of the unit rows.
            z[:, 2] = 0.5 * z[:, 2] ** 2
        return z


def _cosine_features(points: np.ndarray) -> np.ndarray:
    """Unit rows in ``D + 1`` dims: cosine distance = squared euclidean / 2, zero rows handled."""
    norms = np.linalg.norm(points, axis=1)
    zero = norms <= np.finfo(np.float64).tiny
    out = np.zeros((points.shape[0], points.shape[1] + 1))
    out[~zero, :-1] = points[~zero] / norms[~zero, None]
    out[zero, -1] = 1.0
    return out


def _whiten(points: np.ndarray, pca_dims: int) -> np.ndarray:
    """PCA to ``min(pca_dims, D, n - 1)`` dims, each divided by sqrt of its eigenvalue."""
    from sklearn.decomposition import PCA

    n, d = points.shape
    if not np.any(np.ptp(points, axis=0) > 0):  # all points identical: every distance is 0
        return np.zeros((n, 1))
    k = max(1, min(pca_dims, d, n - 1))
    pca = PCA(n_components=k, svd_solver="auto", random_state=0).fit(points)
    variance = pca.explained_variance_
    keep = variance > 1e-12 * max(float(variance.max()), np.finfo(np.float64).tiny)
    if not np.any(keep):  # variance only at rounding level
        return np.zeros((n, 1))
    projected = (points - pca.mean_) @ pca.components_[keep].T
    return projected / np.sqrt(variance[keep])


def _neighbors(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the ``k`` nearest other points of every point."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, points.shape[0] - 1)
    nn = NearestNeighbors(n_neighbors=k).fit(points)
    distances, indices = nn.kneighbors()  # no query: a point is not its own neighbour
    return distances, indices


def _kth_neighbor_distance(points: np.ndarray, k: int) -> np.ndarray:
    distances, _ = _neighbors(points, k)
    radius = distances[:, -1].copy()
    positive = radius[radius > 0]
    floor = float(positive.min()) if positive.size else 1.0
    radius[radius <= 0] = floor
    return radius


def _knn_graph(points: np.ndarray, k: int):
    """Symmetric kNN graph (CSR) with euclidean weights; components bridged by shortest edges."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n = points.shape[0]
    distances, indices = _neighbors(points, k)
    rows = np.repeat(np.arange(n), indices.shape[1])
    cols = indices.ravel()
    weights = np.maximum(distances.ravel(), _ZERO_EDGE)
    graph = csr_matrix((weights, (rows, cols)), shape=(n, n))
    n_components, component = connected_components(graph, directed=False)
    if n_components > 1:
        b_rows, b_cols, b_weights = _component_bridges(points, component, n_components)
        rows = np.concatenate([rows, b_rows])
        cols = np.concatenate([cols, b_cols])
        weights = np.concatenate([weights, np.maximum(b_weights, _ZERO_EDGE)])
        graph = csr_matrix((weights, (rows, cols)), shape=(n, n))
    return graph


def _component_bridges(
    points: np.ndarray, component: np.ndarray, n_components: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shortest euclidean edges joining the components: an MST over the components."""
    return minimum_spanning_edges(points, components=component)


def distance_matrix(
    points: object,
    metric: str = "euclidean",
    *,
    pca_dims: int = 50,
    n_neighbors: int = 10,
    density_k: int = 5,
) -> np.ndarray:
    """Dense ``(n, n)`` float64 distance matrix, symmetric with zero diagonal.

    See :class:`MetricSpace` for what each metric means and how corner cases
    (zero vectors, disconnected kNN graphs, duplicates) are handled.
    """
    space = MetricSpace(
        points, metric, pca_dims=pca_dims, n_neighbors=n_neighbors, density_k=density_k
    )
    return space.submatrix()


def single_linkage(
    points: object,
    metric: str = "euclidean",
    *,
    method: str = "auto",
    device: Device = None,
    **metric_kw: int,
) -> np.ndarray:
    """Scipy single-linkage matrix ``Z`` (n - 1, 4) of the cloud under ``metric``.

    Euclidean and Mahalanobis link the (whitened) coordinates, cosine the unit
    vectors (heights mapped back), density the locally scaled distances: on the
    condensed matrix for small clouds, on the exact Borůvka minimum spanning tree
    in ``O(n·d)`` memory above ``DENSE_LINKAGE_LIMIT`` points (see
    :meth:`MetricSpace.single_linkage`). Geodesic uses the kNN graph's minimum
    spanning tree.
    """
    return MetricSpace(points, metric, **metric_kw).single_linkage(method=method, device=device)
