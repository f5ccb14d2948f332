"""Tests of the point-cloud metrics, distance matrices and single linkage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import is_valid_linkage
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import cdist, pdist, squareform

from napari_topolens.errors import EmptySelectionError, TopoLensError
from napari_topolens.topology.metrics import METRICS, MetricSpace, distance_matrix, single_linkage


def _two_blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(size=(35, 4)), rng.normal(size=(25, 4)) + 25.0])


@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_gives_symmetric_zero_diagonal_finite_matrix(metric: str) -> None:
    points = _two_blobs()
    d = distance_matrix(points, metric)
    assert d.shape == (60, 60)
    assert d.dtype == np.float64
    assert np.array_equal(d, d.T)
    assert np.all(np.diag(d) == 0.0)
    assert np.all(np.isfinite(d))
    off = d[~np.eye(60, dtype=bool)]
    assert np.all(off > 0.0)  # distinct points


@pytest.mark.parametrize("metric", METRICS)
def test_single_linkage_heights_are_the_mst_of_the_distance_matrix(metric: str) -> None:
    points = _two_blobs(1)
    z = single_linkage(points, metric)
    assert is_valid_linkage(z)
    mst = np.sort(minimum_spanning_tree(distance_matrix(points, metric)).data)
    assert len(mst) == len(points) - 1
    np.testing.assert_allclose(np.sort(z[:, 2]), mst, rtol=1e-10, atol=1e-12)


def test_mahalanobis_is_invariant_to_an_invertible_affine_map() -> None:
    rng = np.random.default_rng(2)
    points = rng.normal(size=(120, 6)) * np.array([5.0, 1.0, 0.2, 3.0, 1.0, 0.5])
    linear = rng.normal(size=(6, 6)) + 3 * np.eye(6)
    assert abs(np.linalg.det(linear)) > 1e-3
    mapped = points @ linear.T + rng.normal(size=6) * 10
    np.testing.assert_allclose(
        distance_matrix(mapped, "mahalanobis"), distance_matrix(points, "mahalanobis"), atol=1e-8
    )
    # and it is not simply euclidean: the euclidean matrix does change
    assert not np.allclose(distance_matrix(mapped), distance_matrix(points), atol=1e-3)


def test_mahalanobis_matches_the_sample_covariance_formula() -> None:
    rng = np.random.default_rng(3)
    points = rng.normal(size=(80, 3)) @ np.array(
        [[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.4]]
    )
    vi = np.linalg.inv(np.cov(points, rowvar=False))
    expected = squareform(pdist(points, "mahalanobis", VI=vi))
    np.testing.assert_allclose(
        distance_matrix(points, "mahalanobis"), expected, rtol=1e-9, atol=1e-9
    )


def test_mahalanobis_reduces_to_pca_dims_components() -> None:
    rng = np.random.default_rng(4)
    points = rng.normal(size=(60, 12))
    space = MetricSpace(points, "mahalanobis", pca_dims=5)
    assert space.features.shape == (60, 5)
    np.testing.assert_allclose(space.features.var(axis=0, ddof=1), 1.0, rtol=1e-9)


def test_cosine_matches_scipy_and_handles_zero_vectors() -> None:
    rng = np.random.default_rng(5)
    points = rng.normal(size=(30, 7))
    np.testing.assert_allclose(
        distance_matrix(points, "cosine"), squareform(pdist(points, "cosine")), atol=1e-12
    )
    # scale invariance
    np.testing.assert_allclose(
        distance_matrix(points * rng.uniform(0.1, 10, size=(30, 1)), "cosine"),
        distance_matrix(points, "cosine"),
        atol=1e-12,
    )
    with_zero = np.vstack([points, np.zeros((2, 7))])
    d = distance_matrix(with_zero, "cosine")
    np.testing.assert_allclose(d[30, :30], 1.0, atol=1e-12)
    assert d[30, 31] == 0.0
    z = single_linkage(with_zero, "cosine")
    # the two zero rows coincide: the MST is that of the cloud without one of them, plus a 0 edge
    expected = np.sort(np.append(minimum_spanning_tree(d[:31, :31]).data, 0.0))
    np.testing.assert_allclose(np.sort(z[:, 2]), expected, atol=1e-12)


def test_geodesic_follows_the_curve_not_the_chord() -> None:
    t = np.linspace(0, np.pi, 200)
    arc = np.c_[np.cos(t), np.sin(t)]
    d = distance_matrix(arc, "geodesic", n_neighbors=4)
    chord = np.linalg.norm(arc[0] - arc[-1])
    assert chord == pytest.approx(2.0)
    assert d[0, -1] == pytest.approx(np.pi, rel=1e-3)  # the arc length
    np.testing.assert_array_less(cdist(arc, arc) - 1e-12, d + 1e-12)  # never shorter than euclidean


def test_geodesic_bridges_disconnected_components_with_shortest_edges() -> None:
    rng = np.random.default_rng(6)
    left = rng.normal(size=(30, 2)) * 0.3
    right = rng.normal(size=(30, 2)) * 0.3 + [10.0, 0.0]
    top = rng.normal(size=(30, 2)) * 0.3 + [0.0, 30.0]
    points = np.vstack([left, right, top])
    d = distance_matrix(points, "geodesic", n_neighbors=5)
    assert np.all(np.isfinite(d))
    euclid = cdist(points, points)
    # the closest pair between two components is joined by its own euclidean edge
    block = euclid[:30, 30:60]
    i, j = np.unravel_index(np.argmin(block), block.shape)
    assert d[i, 30 + j] == pytest.approx(block[i, j])
    block = euclid[:30, 60:]
    i, j = np.unravel_index(np.argmin(block), block.shape)
    assert d[i, 60 + j] == pytest.approx(block[i, j])
    # top is bridged to left (nearest), so right-to-top passes through left
    assert d[30:60, 60:].min() > euclid[30:60, 60:].min() + 5


def test_density_metric_is_the_locally_scaled_distance() -> None:
    rng = np.random.default_rng(7)
    points = np.vstack([rng.normal(size=(40, 3)) * 0.1, rng.normal(size=(40, 3)) * 3 + 10])
    euclid = cdist(points, points)
    kth = np.sort(euclid, axis=1)[:, 5]  # column 0 is the point itself
    expected = euclid / np.sqrt(np.outer(kth, kth))
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(
        distance_matrix(points, "density", density_k=5), expected, rtol=1e-10
    )
    # within-cluster scales become comparable although the spreads differ 30 fold
    d = distance_matrix(points, "density")
    tight, wide = d[:40, :40], d[40:, 40:]
    assert 0.3 < np.median(tight[tight > 0]) / np.median(wide[wide > 0]) < 3


def test_submatrix_is_the_restriction_of_the_full_matrix() -> None:
    points = _two_blobs(8)
    index = np.array([3, 10, 40, 55, 0])
    for metric in METRICS:
        space = MetricSpace(points, metric)
        full = space.submatrix()
        np.testing.assert_allclose(
            space.submatrix(index), full[np.ix_(index, index)], rtol=1e-12, atol=1e-12
        )
        np.testing.assert_allclose(space.rows(index), full[index], rtol=1e-12, atol=1e-12)


def test_bad_input_raises_one_topolens_error() -> None:
    with pytest.raises(TopoLensError, match="euclidean, cosine, mahalanobis, geodesic, density"):
        distance_matrix(np.zeros((5, 2)), "manhattan")
    with pytest.raises(TopoLensError, match="NaN"):
        distance_matrix(np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]))
    with pytest.raises(TopoLensError, match="2-D"):
        distance_matrix(np.zeros(5))
    with pytest.raises(EmptySelectionError):
        single_linkage(np.zeros((1, 3)))
    with pytest.raises(TopoLensError, match="n_neighbors"):
        distance_matrix(np.zeros((5, 2)), "geodesic", n_neighbors=0)
