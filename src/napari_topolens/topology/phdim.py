"""Persistent-homology fractal dimension and per-class total H0 persistence (docs/methods.md §5).

After Magai & Ayzenberg (2022) and Magai (2023): the total H0 persistence
``E_alpha(n)`` of ``n`` points drawn from a ``d``-dimensional measure grows like
``n^((d - alpha) / d)``, so the slope ``m`` of ``log E`` against ``log n`` gives
``d = alpha / (1 - m)``. H0 is the minimum spanning tree, computed as single
linkage, so each energy is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_topolens.errors import EmptySelectionError, TopoLensError
from napari_topolens.topology.metrics import MetricSpace, check_int, check_metric, validate_points

__all__ = ["ClassPersistenceResult", "PHDimResult", "class_total_persistence", "ph_dimension"]

_MIN_SIZES = 3
_FALLBACK_SIZES = 5
_MIN_POINTS = 15


@dataclass
class PHDimResult:
    """PH dimension estimate and the data of its fit.

    Attributes
    ----------
    dimension : float
        ``alpha / (1 - slope)``; NaN when the fit is degenerate (see ``note``).
    sizes : (k,) int64
        Subsample sizes ``n``.
    energies : (k,) float64
        ``E_alpha(n)``, the mean over the repeated subsamples of each size.
    slope : float
        Least-squares slope of ``log E`` on ``log n``.
    alpha : float
    note : str
        How the sizes were chosen and averaged, and any caveat.
    """

    dimension: float
    sizes: np.ndarray
    energies: np.ndarray
    slope: float
    alpha: float
    note: str


@dataclass
class ClassPersistenceResult:
    """Total H0 persistence of each class's points, and their mean over classes."""

    classes: np.ndarray
    total: np.ndarray
    mean: float


def _h0_energy(points: np.ndarray, metric: str, alpha: float, metric_kw: dict[str, int]) -> float:
    heights = MetricSpace(points, metric, **metric_kw).single_linkage()[:, 2]
    return float(np.sum(heights**alpha))


def _subsample_sizes(
    n_total: int, start: int, step: int, n_repeats: int, max_size: int
) -> tuple[np.ndarray, str]:
    """The subsample sizes of the fit (see :func:`ph_dimension`) and a note saying how
    they were chosen."""
    cap = min(n_total, max_size)
    sizes = np.arange(start, cap + 1, step, dtype=np.int64)
    if len(sizes) >= _MIN_SIZES:
        note = f"sizes {sizes[0]}..{sizes[-1]} step {step}"
    else:
        sizes = np.unique(
            np.round(np.linspace(cap / _FALLBACK_SIZES, cap, _FALLBACK_SIZES)).astype(np.int64)
        )
        note = (
            f"only {cap} points usable, too few for 3 sizes from {start} in steps of {step}: "
            f"used {len(sizes)} evenly spaced sizes {sizes[0]}..{sizes[-1]} instead"
        )
    note += f"; E averaged over {n_repeats} random subsample(s) per size"
    if cap < n_total:
        note += f"; capped at max_size={max_size} of {n_total} points"
    return sizes, note


def _mean_energies(
    data: np.ndarray,
    sizes: np.ndarray,
    n_repeats: int,
    seed: int,
    metric: str,
    alpha: float,
    metric_kw: dict[str, int],
) -> np.ndarray:
    """Mean H0 energy of ``n_repeats`` random subsamples per size (the whole cloud once)."""
    n_total = data.shape[0]
    rng = np.random.default_rng(seed)
    energies = np.empty(len(sizes))
    for i, size in enumerate(sizes):
        repeats = 1 if size >= n_total else n_repeats
        values = []
        for _ in range(repeats):
            chosen = (
                rng.choice(n_total, size=int(size), replace=False)
                if size < n_total
                else np.arange(n_total)
            )
            values.append(_h0_energy(data[chosen], metric, alpha, metric_kw))
        energies[i] = float(np.mean(values))
    return energies


def ph_dimension(
    points: object,
    *,
    alpha: float = 1.0,
    start: int = 500,
    step: int = 350,
    metric: str = "euclidean",
    seed: int = 0,
    n_repeats: int = 3,
    max_size: int = 2000,
    **metric_kw: int,
) -> PHDimResult:
    """PH fractal dimension of a cloud from H0 energies of random subsamples.

    Parameters
    ----------
    points : (N, D) array_like
        The cloud.
    alpha : float
        Exponent of the bar lengths in ``E_alpha`` (published default 1).
    start, step : int
        Subsample sizes ``start, start + step, ...`` up to ``min(N, max_size)``
        (published: 500, 850, 1200, ...). When fewer than 3 such sizes fit,
        ``_FALLBACK_SIZES`` (5) evenly spaced sizes from ``N / 5`` to ``N`` are used
        instead and ``note`` says so; at least 15 points are needed.
    metric : str
        Any of ``metrics.METRICS``; each subsample's distances are its own.
        ``metric_kw`` (``pca_dims``, ``n_neighbors``, ``density_k``) tune it.
        The estimate assumes distances that scale like lengths: ``cosine``
        (``1 - cos``, about half a squared angle) halves the dimension of the
        directions, and ``density`` rescales every distance by the local
        neighbour distance, so ``E`` grows about linearly and the result is
        NaN (slope >= 1); euclidean is the published choice.
    seed : int
        Seed of the random subsamples (deterministic given it).
    n_repeats : int
        Subsamples drawn per size; their energies are averaged (the mean, not the
        mean log), which steadies the fit at small ``n``. A size equal to ``N`` is
        the whole cloud and computed once.
    max_size : int
        Largest subsample used (not in the publications): each size costs a single
        linkage, quadratic in ``n``, and the fit needs only the trend.

    Returns
    -------
    PHDimResult
    """
    data = validate_points(points)
    n_total = data.shape[0]
    if not np.isfinite(alpha) or alpha <= 0:
        raise TopoLensError(f"alpha must be a positive number, got {alpha}")
    start = check_int("start", start, 2)
    step = check_int("step", step, 1)
    n_repeats = check_int("n_repeats", n_repeats, 1)
    max_size = check_int("max_size", max_size, _MIN_POINTS)
    seed = check_int("seed", seed, 0)
    check_metric(metric)
    for key in metric_kw:
        if key not in ("pca_dims", "n_neighbors", "density_k"):
            raise TopoLensError(
                f"unknown keyword {key!r}; metric options are pca_dims, n_neighbors, density_k"
            )
    if n_total < _MIN_POINTS:
        raise EmptySelectionError(
            f"PH dimension needs at least {_MIN_POINTS} points, got {n_total}; "
            "select more images or positions"
        )

    sizes, note = _subsample_sizes(n_total, start, step, n_repeats, max_size)
    energies = _mean_energies(data, sizes, n_repeats, seed, metric, alpha, metric_kw)
    if np.any(energies <= 0):
        return PHDimResult(
            float("nan"),
            sizes,
            energies,
            float("nan"),
            float(alpha),
            note + "; zero energy (duplicate points), no fit",
        )
    slope = float(np.polyfit(np.log(sizes), np.log(energies), 1)[0])
    if slope >= 1.0:
        dimension = float("nan")
        note += f"; slope {slope:.3f} >= 1: energy grows too fast for a dimension (not a sample of one measure?)"
    else:
        dimension = float(alpha / (1.0 - slope))
    return PHDimResult(dimension, sizes, energies, slope, float(alpha), note)


def class_total_persistence(
    points: object, labels: object, *, max_per_class: int = 250, seed: int = 0
) -> ClassPersistenceResult:
    """Total H0 persistence of each class's points (Magai 2023), and the mean over classes.

    Up to ``max_per_class`` points are drawn at random from each class (labels < 0
    mean unknown and are skipped). The drawn points of *all* classes are min-max
    scaled together, feature by feature, to [0, 1] (constant features become 0), so
    that layers of different scale compare while classes within a layer keep their
    relative spread. Each class's total persistence is the sum of its euclidean
    minimum-spanning-tree edge lengths (0 for a single point).
    """
    data = validate_points(points, min_points=1)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != data.shape[0]:
        raise TopoLensError(
            f"labels has {labels.shape[0]} entries but points has {data.shape[0]} rows; "
            "give one label per point"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if (
            np.issubdtype(labels.dtype, np.floating)
            and np.all(np.isfinite(labels))
            and np.all(labels == np.round(labels))
        ):
            labels = labels.astype(np.int64)
        else:
            raise TopoLensError("labels must be integers (class ids, -1 for unknown)")
    max_per_class = check_int("max_per_class", max_per_class, 1)
    seed = check_int("seed", seed, 0)
    classes = np.unique(labels[labels >= 0])
    if classes.size == 0:
        raise EmptySelectionError(
            "no point has a known class label (all labels < 0); load labels for the images"
        )

    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        if len(rows) > max_per_class:
            rows = np.sort(rng.choice(rows, size=max_per_class, replace=False))
        chosen.append(rows)
    union = data[np.concatenate(chosen)]
    low, span = union.min(axis=0), np.ptp(union, axis=0)
    span[span == 0] = 1.0

    totals = np.zeros(len(classes))
    for i, rows in enumerate(chosen):
        if len(rows) >= 2:
            scaled = (data[rows] - low) / span
            totals[i] = float(MetricSpace(scaled, "euclidean").single_linkage()[:, 2].sum())
    return ClassPersistenceResult(classes=classes, total=totals, mean=float(totals.mean()))
