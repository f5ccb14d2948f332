"""Distances between persistence diagrams, and linear CKA (docs/methods.md §4).

Layer x layer matrices compare a model's layers (or a model with its perturbed or
compressed variant) by the shape of their clouds: sliced Wasserstein on H1 is
Purvine et al.'s choice; bottleneck and Wasserstein-p come from gudhi's hera
bindings, which are far faster than persim's. Linear CKA (Kornblith et al. 2019)
is the representational-similarity score shown beside them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_topolens.errors import EmptySelectionError, TopoLensError

__all__ = [
    "DIAGRAM_DISTANCES",
    "cka_matrix",
    "diagram_distance",
    "diagram_distance_matrix",
    "linear_cka",
]

DIAGRAM_DISTANCES = ("sliced_wasserstein", "bottleneck", "wasserstein")


def _finite_diagram(diagram: object) -> np.ndarray:
    """(k, 2) float64 finite bars of a diagram; infinite bars are dropped."""
    try:
        array = np.asarray(diagram, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TopoLensError(
            "a persistence diagram must be a numeric (k, 2) array of birth/death"
        ) from exc
    if array.size == 0:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[1] != 2:
        raise TopoLensError(f"a persistence diagram must have shape (k, 2), got {array.shape}")
    if np.isnan(array).any():
        raise TopoLensError(
            "a persistence diagram has NaN values; recompute it from a finite point cloud"
        )
    return np.ascontiguousarray(array[np.isfinite(array).all(axis=1)])


def _check_kind(kind: str) -> str:
    if kind not in DIAGRAM_DISTANCES:
        raise TopoLensError(
            f"unknown diagram distance {kind!r}; use one of {', '.join(DIAGRAM_DISTANCES)}"
        )
    return kind


def _check_options(p: float, n_directions: int) -> tuple[float, int]:
    if not np.isfinite(p) or p < 1:
        raise TopoLensError(f"the Wasserstein order p must be a finite number >= 1, got {p}")
    if int(n_directions) < 2:
        raise TopoLensError(f"n_directions must be at least 2, got {n_directions}")
    return float(p), int(n_directions)


def diagram_distance(
    a: object,
    b: object,
    kind: str = "sliced_wasserstein",
    *,
    p: float = 1.0,
    n_directions: int = 50,
) -> float:
    """Distance between two persistence diagrams, on their finite bars.

    Parameters
    ----------
    a, b : (k, 2) array_like
        Diagrams (birth, death). Infinite bars are dropped: every H0 diagram has
        exactly one, so it carries no information. An empty diagram is allowed:
        the distance of two empty diagrams is 0, and an empty diagram against a
        non-empty one measures the cost of sending all bars to the diagonal.
    kind : {"sliced_wasserstein", "bottleneck", "wasserstein"}
        ``sliced_wasserstein``: gudhi's sliced Wasserstein distance (Carriere et al.
        2017) with ``n_directions`` evenly spaced projection lines;
        ``bottleneck``: gudhi's bottleneck distance (exact up to the last bits of a
        double); ``wasserstein``: hera's Wasserstein-``p`` distance with L-infinity
        ground metric (relative error 1 %).
    p : float
        Order of the Wasserstein distance (ignored by the others).
    n_directions : int
        Projection lines of the sliced Wasserstein distance.
    """
    kind = _check_kind(kind)
    p, n_directions = _check_options(p, n_directions)
    a, b = _finite_diagram(a), _finite_diagram(b)
    if len(a) == 0 and len(b) == 0:
        return 0.0
    if kind == "sliced_wasserstein":
        from gudhi.representations import SlicedWassersteinDistance

        return float(SlicedWassersteinDistance(num_directions=n_directions)(a, b))
    if kind == "bottleneck":
        import gudhi

        return float(gudhi.bottleneck_distance(a, b))
    from gudhi.hera import wasserstein_distance

    return float(wasserstein_distance(a, b, order=p, internal_p=np.inf))


def diagram_distance_matrix(
    diagrams: Sequence[object],
    kind: str = "sliced_wasserstein",
    *,
    p: float = 1.0,
    n_directions: int = 50,
) -> np.ndarray:
    """``(L, L)`` matrix of :func:`diagram_distance` between diagrams; symmetric, zero diagonal.

    Finite bars only. Sliced Wasserstein projects every diagram once
    (``gudhi.representations.pairwise_persistence_diagram_distances``); the others
    are computed for each pair ``i < j`` and mirrored, so the matrix is exactly
    symmetric even where hera's approximation is not.
    """
    kind = _check_kind(kind)
    p, n_directions = _check_options(p, n_directions)
    finite = [_finite_diagram(d) for d in diagrams]
    n = len(finite)
    out = np.zeros((n, n))
    if n < 2:
        return out
    if kind == "sliced_wasserstein":
        from gudhi.representations.metrics import pairwise_persistence_diagram_distances

        matrix = pairwise_persistence_diagram_distances(
            finite, metric="sliced_wasserstein", num_directions=n_directions, n_jobs=1
        )
        out = 0.5 * (np.asarray(matrix, dtype=np.float64) + np.asarray(matrix, dtype=np.float64).T)
        np.fill_diagonal(out, 0.0)
        return out
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = diagram_distance(
                finite[i], finite[j], kind, p=p, n_directions=n_directions
            )
    return out


# ---- linear CKA -----------------------------------------------------------------
def _centred(features: object, what: str) -> np.ndarray:
    try:
        array = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TopoLensError(f"{what} must be a numeric (n, d) array") from exc
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise TopoLensError(f"{what} must be a 2-D (n, d) array, got shape {array.shape}")
    if array.shape[0] < 2:
        raise EmptySelectionError(
            f"{what} has {array.shape[0]} row(s); CKA needs at least 2 matched rows"
        )
    if not np.all(np.isfinite(array)):
        raise TopoLensError(f"{what} has NaN or infinite values; drop those rows first")
    centred = array - array.mean(axis=0)
    centred[:, np.ptp(array, axis=0) == 0] = 0.0  # constant columns: exactly 0, not rounding noise
    return centred


def _cross(x: np.ndarray, y: np.ndarray) -> float:
    """``||y^T x||_F^2`` for centred features, i.e. ``tr(K_x K_y)``, by the cheaper route."""
    n = x.shape[0]
    if x.shape[1] * y.shape[1] <= n * n:
        return float(np.linalg.norm(y.T @ x) ** 2)
    return float(np.vdot(x @ x.T, y @ y.T))


def _self_norm(x: np.ndarray) -> float:
    """``||x^T x||_F = ||x x^T||_F``, by the smaller matrix."""
    return (
        float(np.linalg.norm(x.T @ x))
        if x.shape[1] <= x.shape[0]
        else float(np.linalg.norm(x @ x.T))
    )


def linear_cka(x: object, y: object) -> float:
    """Linear CKA between two representations of the same rows (Kornblith et al. 2019).

    ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on column-centred features: 1 for
    representations equal up to rotation and isotropic scaling, near 0 for
    unrelated ones. NaN when either representation is constant (undefined).
    """
    xc, yc = _centred(x, "x"), _centred(y, "y")
    if xc.shape[0] != yc.shape[0]:
        raise TopoLensError(
            f"x has {xc.shape[0]} rows and y has {yc.shape[0]}; CKA compares the same inputs row by row"
        )
    norm_x, norm_y = _self_norm(xc), _self_norm(yc)
    if norm_x == 0.0 or norm_y == 0.0:
        return float("nan")
    return _cross(xc, yc) / (norm_x * norm_y)


def cka_matrix(features: Sequence[object]) -> np.ndarray:
    """``(L, L)`` linear CKA between representations with matched rows; symmetric.

    The diagonal is 1 (NaN for a constant representation).
    """
    centred = [_centred(f, f"features[{i}]") for i, f in enumerate(features)]
    n_rows = {c.shape[0] for c in centred}
    if len(n_rows) > 1:
        raise TopoLensError(
            f"features have different row counts {sorted(n_rows)}; CKA compares the same inputs row by row"
        )
    norms = np.array([_self_norm(c) for c in centred])
    size = len(centred)
    out = np.full((size, size), np.nan)
    for i in range(size):
        for j in range(i, size):
            if norms[i] == 0.0 or norms[j] == 0.0:
                continue
            out[i, j] = out[j, i] = _cross(centred[i], centred[j]) / (norms[i] * norms[j])
    return out
