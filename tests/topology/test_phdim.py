"""Tests of the PH fractal dimension and per-class total H0 persistence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

from napari_topolens.errors import EmptySelectionError, TopoLensError
from napari_topolens.topology.phdim import class_total_persistence, ph_dimension


def _mst_total(points: np.ndarray, alpha: float = 1.0) -> float:
    return float(np.sum(minimum_spanning_tree(squareform(pdist(points))).data ** alpha))


def test_unit_square_has_dimension_two() -> None:
    points = np.random.default_rng(0).uniform(size=(3000, 2))
    result = ph_dimension(points, seed=0)
    np.testing.assert_array_equal(result.sizes, [500, 850, 1200, 1550, 1900])
    assert abs(result.dimension - 2.0) < 0.3
    assert result.slope == pytest.approx(1 - 1 / result.dimension)


def test_unit_cube_has_dimension_three() -> None:
    points = np.random.default_rng(1).uniform(size=(3000, 3))
    assert abs(ph_dimension(points, seed=1).dimension - 3.0) < 0.45
    # alpha enters the formula: E_2 grows like n^((d - 2) / d), still giving d
    assert abs(ph_dimension(points, alpha=2.0, seed=1).dimension - 3.0) < 0.45


def test_a_line_in_the_plane_has_dimension_one() -> None:
    t = np.random.default_rng(2).uniform(size=2000)
    points = np.c_[t, 0.5 * t]
    assert abs(ph_dimension(points, seed=2).dimension - 1.0) < 0.1


def test_energies_are_h0_totals_and_results_are_deterministic() -> None:
    points = np.random.default_rng(3).uniform(size=(200, 2))
    a = ph_dimension(points, seed=5)
    b = ph_dimension(points, seed=5)
    np.testing.assert_array_equal(a.energies, b.energies)
    assert a.dimension == b.dimension
    # the last size is the whole cloud, whose energy is the MST length
    assert a.sizes[-1] == 200
    assert a.energies[-1] == pytest.approx(_mst_total(points))
    assert "evenly spaced" in a.note
    np.testing.assert_array_equal(a.sizes, [40, 80, 120, 160, 200])
    assert a.dimension == pytest.approx(
        1.0 / (1.0 - np.polyfit(np.log(a.sizes), np.log(a.energies), 1)[0])
    )
    alpha2 = ph_dimension(points, alpha=2.0, seed=5)
    assert alpha2.energies[-1] == pytest.approx(_mst_total(points, 2.0))


def test_ph_dimension_bad_input() -> None:
    with pytest.raises(EmptySelectionError):
        ph_dimension(np.random.default_rng(4).uniform(size=(10, 2)))
    with pytest.raises(TopoLensError, match="alpha"):
        ph_dimension(np.zeros((50, 2)), alpha=0)
    with pytest.raises(TopoLensError, match="euclidean, cosine"):
        ph_dimension(np.random.default_rng(4).uniform(size=(50, 2)), metric="hamming")


def test_class_total_persistence_scales_and_averages() -> None:
    rng = np.random.default_rng(6)
    tight = rng.normal(size=(100, 3)) * 0.1
    wide = rng.normal(size=(120, 3)) * 1.0 + 4.0
    points = np.vstack([tight, wide, rng.normal(size=(5, 3))])
    labels = np.r_[np.zeros(100, int), np.ones(120, int), -np.ones(5, int)]
    result = class_total_persistence(points, labels)
    np.testing.assert_array_equal(result.classes, [0, 1])
    assert result.total[1] > 5 * result.total[0]
    assert result.mean == pytest.approx(result.total.mean())
    # min-max scaling is over the labelled points together, feature by feature
    chosen = points[:220]
    scaled = (chosen - chosen.min(0)) / np.ptp(chosen, 0)
    assert result.total[0] == pytest.approx(_mst_total(scaled[:100]))
    assert result.total[1] == pytest.approx(_mst_total(scaled[100:220]))
    # scale invariance of the whole layer
    again = class_total_persistence(points * 7.0 + 3.0, labels)
    np.testing.assert_allclose(again.total, result.total)


def test_class_total_persistence_caps_points_per_class() -> None:
    rng = np.random.default_rng(7)
    points = rng.uniform(size=(1000, 2))
    labels = np.r_[np.zeros(600, int), np.ones(400, int)]
    capped = class_total_persistence(points, labels, max_per_class=100, seed=1)
    full = class_total_persistence(points, labels, max_per_class=1000)
    # an MST of 100 uniform points is much shorter than one of 400-600
    assert np.all(capped.total < 0.7 * full.total)
    np.testing.assert_array_equal(
        capped.total, class_total_persistence(points, labels, max_per_class=100, seed=1).total
    )
    assert not np.array_equal(
        capped.total, class_total_persistence(points, labels, max_per_class=100, seed=2).total
    )


def test_class_total_persistence_bad_input() -> None:
    points = np.zeros((4, 2))
    with pytest.raises(EmptySelectionError):
        class_total_persistence(points, [-1, -1, -1, -1])
    with pytest.raises(TopoLensError, match="one label per point"):
        class_total_persistence(points, [0, 1])
    with pytest.raises(TopoLensError, match="integers"):
        class_total_persistence(points, ["a", "b", "a", "b"])
