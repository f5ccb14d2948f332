"""Tests of Rips persistence: exact H0, Ripser-class H1, members, subsampling, summaries."""

from __future__ import annotations

import gudhi
import numpy as np
import pytest
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import cdist, pdist, squareform

from napari_topolens.errors import EmptySelectionError, TopoLensError
from napari_topolens.topology.metrics import distance_matrix
from napari_topolens.topology.persistence import (
    betti_curves,
    compute_persistence,
    persistence_diagrams,
    persistence_entropy,
    total_persistence,
)


def _noisy_circle(n: int, seed: int, noise: float = 0.05, dim: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    points = np.zeros((n, dim))
    points[:, 0], points[:, 1] = np.cos(t), np.sin(t)
    return points + rng.normal(scale=noise, size=points.shape)


def _simplex_tree_diagram(distances: np.ndarray, dim: int) -> np.ndarray:
    """The slow reference: a full Rips simplex tree."""
    st = gudhi.RipsComplex(distance_matrix=distances).create_simplex_tree(max_dimension=dim + 1)
    st.compute_persistence()
    diagram = st.persistence_intervals_in_dimension(dim).reshape(-1, 2)
    return diagram[np.lexsort((diagram[:, 1], diagram[:, 0]))]


def _sorted(diagram: np.ndarray) -> np.ndarray:
    return diagram[np.lexsort((diagram[:, 1], diagram[:, 0]))]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric", ["euclidean", "geodesic"])
def test_h0_deaths_are_the_minimum_spanning_tree(seed: int, metric: str) -> None:
    points = np.random.default_rng(seed).normal(size=(70, 5))
    result = compute_persistence(points, metric=metric, max_dim=0)
    h0 = result.diagrams[0]
    assert h0.shape == (70, 2)
    assert np.all(h0[:, 0] == 0.0)
    assert np.isinf(h0[-1, 1]) and np.all(np.isfinite(h0[:-1, 1]))
    mst = minimum_spanning_tree(
        squareform(pdist(points)) if metric == "euclidean" else distance_matrix(points, metric)
    )
    np.testing.assert_allclose(np.sort(h0[:-1, 1]), np.sort(mst.data), rtol=1e-12)
    np.testing.assert_array_equal(h0[:-1, 1], result.linkage[:, 2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_h1_equals_the_simplex_tree_reference(seed: int) -> None:
    points = np.random.default_rng(seed).normal(size=(60, 3))
    result = compute_persistence(points, max_dim=1)
    assert result.subsample == "none"
    reference = _simplex_tree_diagram(squareform(pdist(points)), 1)
    assert len(reference) > 3
    np.testing.assert_allclose(_sorted(result.diagrams[1]), reference, rtol=1e-12)


def test_h1_with_a_non_euclidean_metric_equals_the_simplex_tree_on_its_matrix() -> None:
    points = np.random.default_rng(3).normal(size=(50, 4))
    result = compute_persistence(points, max_dim=1, metric="cosine")
    reference = _simplex_tree_diagram(distance_matrix(points, "cosine"), 1)
    np.testing.assert_allclose(_sorted(result.diagrams[1]), reference, rtol=1e-10)


def test_h2_equals_the_simplex_tree_reference_on_a_sphere() -> None:
    rng = np.random.default_rng(4)
    sphere = rng.normal(size=(60, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    result = compute_persistence(sphere, max_dim=2)
    assert len(result.diagrams) == 3
    reference = _simplex_tree_diagram(squareform(pdist(sphere)), 2)
    np.testing.assert_allclose(_sorted(result.diagrams[2]), reference, rtol=1e-12)
    lengths = np.diff(result.diagrams[2], axis=1).ravel()
    assert lengths.max() > 0.5  # the void of the sphere


def test_noisy_circle_has_one_prominent_loop_and_its_cycle_goes_round() -> None:
    points = _noisy_circle(120, seed=5)
    result = compute_persistence(points)
    h1 = result.diagrams[1]
    lengths = h1[:, 1] - h1[:, 0]
    assert lengths[0] == lengths.max()  # sorted by decreasing persistence
    assert lengths[0] > 1.0
    assert np.all(lengths[1:] < 0.3)
    cycle = result.h1_members[result.h1_member_offsets[0] : result.h1_member_offsets[1]]
    angles = np.sort(np.arctan2(points[cycle, 1], points[cycle, 0]))
    gaps = np.diff(np.append(angles, angles[0] + 2 * np.pi))
    assert gaps.max() < 0.5  # the cycle visits the whole circle


def test_h1_members_are_cycles_present_at_birth() -> None:
    points = np.random.default_rng(6).normal(size=(80, 3))
    result = compute_persistence(points)
    d = squareform(pdist(points))
    offsets = result.h1_member_offsets
    assert len(offsets) == len(result.diagrams[1]) + 1
    for k, (birth, _death) in enumerate(result.diagrams[1]):
        cycle = result.h1_members[offsets[k] : offsets[k + 1]]
        assert len(cycle) >= 3
        assert len(set(cycle.tolist())) == len(cycle)
        assert d[cycle[0], cycle[-1]] == pytest.approx(birth)  # the birth edge closes it
        steps = d[cycle[:-1], cycle[1:]]
        assert np.all(steps <= birth + 1e-12)


def _tree_path(tree: np.ndarray, u: int, v: int) -> list[int]:
    from scipy.sparse.csgraph import breadth_first_order

    _order, predecessor = breadth_first_order(tree, u, directed=False)
    path = [v]
    while path[-1] != u:
        path.append(int(predecessor[path[-1]]))
    return path[::-1]


@pytest.mark.parametrize("shift", [0.0, 1e-9])
def test_h1_members_are_the_tree_path_closing_the_first_birth_edge(shift: float) -> None:
    """Reference, one bar at a time: the first pair (row order) of the birth's length
    (or of the nearest length, for a birth that is no matrix entry), closed through
    the minimum spanning tree."""
    from napari_topolens.topology.persistence import _h1_members, _rips_higher

    points = np.random.default_rng(21).normal(size=(160, 5))
    d = squareform(pdist(points))
    diagram = _rips_higher(d, 1)[0][0].copy()
    diagram[::3, 0] += shift  # births off the matrix entries: the nearest edge is used
    index = np.arange(160) * 7
    members, offsets = _h1_members(diagram, d, index)
    tree = minimum_spanning_tree(d)
    iu, ju = np.triu_indices(160, 1)
    lengths = d[iu, ju]
    assert len(offsets) == len(diagram) + 1
    for k, birth in enumerate(diagram[:, 0]):
        nearest = np.abs(lengths - birth)
        first = int(np.flatnonzero(nearest == nearest.min())[0])
        expected = index[_tree_path(tree, int(iu[first]), int(ju[first]))]
        np.testing.assert_array_equal(members[offsets[k] : offsets[k + 1]], expected)


def _brute_dying_components(z: np.ndarray, n: int) -> list[set[int]]:
    clusters: dict[int, set[int]] = {i: {i} for i in range(n)}
    out = []
    for i, (a, b, _h, _size) in enumerate(z):
        left, right = clusters.pop(int(a)), clusters.pop(int(b))
        out.append(left if len(left) < len(right) else right)
        clusters[n + i] = left | right
    return out


@pytest.mark.parametrize("metric", ["euclidean", "density"])
def test_h0_members_are_the_smaller_merged_component(metric: str) -> None:
    points = np.random.default_rng(7).normal(size=(90, 3))
    result = compute_persistence(points, metric=metric, max_dim=0)
    offsets = result.h0_member_offsets
    assert len(offsets) == 91
    expected = _brute_dying_components(result.linkage, 90)
    for k, members in enumerate(expected):
        assert set(result.h0_members[offsets[k] : offsets[k + 1]].tolist()) == members
    np.testing.assert_array_equal(np.sort(result.h0_members[offsets[-2] :]), np.arange(90))


def test_subsampling_is_recorded_deterministic_and_feeds_h1() -> None:
    points = _noisy_circle(400, seed=8, noise=0.1, dim=3)
    a = compute_persistence(points, max_points=80, subsample="maxmin", seed=3)
    b = compute_persistence(points, max_points=80, subsample="maxmin", seed=3)
    c = compute_persistence(points, max_points=80, subsample="maxmin", seed=4)
    assert a.subsample == "maxmin"
    assert len(a.h1_index) == 80 and len(np.unique(a.h1_index)) == 80
    np.testing.assert_array_equal(a.h1_index, b.h1_index)
    assert not np.array_equal(a.h1_index, c.h1_index)
    for dim in (0, 1):
        np.testing.assert_array_equal(a.diagrams[dim], b.diagrams[dim])
    # H1 is that of the subsample; H0 stays that of every point
    direct = compute_persistence(points[a.h1_index], max_points=80)
    np.testing.assert_allclose(a.diagrams[1], direct.diagrams[1])
    assert len(a.diagrams[0]) == 400
    # h1 members are rows of the whole cloud, inside the subsample
    assert np.isin(a.h1_members, a.h1_index).all()

    r1 = compute_persistence(points, max_points=80, subsample="random", seed=3)
    r2 = compute_persistence(points, max_points=80, subsample="random", seed=3)
    assert r1.subsample == "random"
    np.testing.assert_array_equal(r1.h1_index, r2.h1_index)
    # max-min landmarks cover the cloud better than a random draw of the same size
    cover_maxmin = cdist(points, points[a.h1_index]).min(axis=1).max()
    cover_random = cdist(points, points[r1.h1_index]).min(axis=1).max()
    assert cover_maxmin < cover_random
    # the loop survives the landmarks
    assert np.diff(a.diagrams[1][0])[0] > 1.0


def test_summaries_betti_total_and_entropy() -> None:
    diagram = np.array([[0.0, 1.0], [0.0, 3.0], [0.5, 1.5], [0.0, np.inf]])
    assert total_persistence(diagram) == pytest.approx(1.0 + 3.0 + 1.0)
    p = np.array([1.0, 3.0, 1.0]) / 5.0
    assert persistence_entropy(diagram) == pytest.approx(-np.sum(p * np.log(p)))
    assert persistence_entropy(np.zeros((0, 2))) == 0.0
    assert persistence_entropy(np.array([[0.0, 2.0], [1.0, 3.0]])) == pytest.approx(np.log(2))
    curves = betti_curves([diagram], np.array([0.0, 0.75, 1.0, 2.0, 10.0]))
    np.testing.assert_array_equal(curves, [[3, 4, 3, 2, 1]])

    points = np.random.default_rng(9).normal(size=(50, 2))
    result = compute_persistence(points)
    assert result.betti_curves.shape == (2, len(result.betti_grid))
    assert result.betti_curves[0, 0] == 50 and result.betti_curves[0, -1] == 1
    assert np.all(np.diff(result.betti_curves[0]) <= 0)
    np.testing.assert_allclose(
        result.total_persistence, [total_persistence(d) for d in result.diagrams]
    )
    np.testing.assert_allclose(result.entropy, [persistence_entropy(d) for d in result.diagrams])


def test_max_dim_zero_and_persistence_diagrams_wrapper() -> None:
    points = np.random.default_rng(10).normal(size=(40, 3))
    result = compute_persistence(points, max_dim=0)
    assert len(result.diagrams) == 1 and len(result.h1_index) == 0 and result.subsample == "none"
    assert result.betti_curves.shape[0] == 1
    full = compute_persistence(points, max_dim=1)
    for a, b in zip(persistence_diagrams(points, 1), full.diagrams, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_raise_topolens_errors() -> None:
    points = np.random.default_rng(11).normal(size=(10, 2))
    with pytest.raises(TopoLensError, match="maxmin, random"):
        compute_persistence(points, subsample="kmeans")
    with pytest.raises(TopoLensError, match="max_points"):
        compute_persistence(points, max_points=1)
    with pytest.raises(TopoLensError, match="pca_dims, n_neighbors, density_k"):
        compute_persistence(points, n_neighbours=5)
    with pytest.raises(TopoLensError, match="euclidean, cosine"):
        compute_persistence(points, metric="l1")
    with pytest.raises(EmptySelectionError):
        compute_persistence(points[:1])
    with pytest.raises(TopoLensError, match="NaN"):
        compute_persistence(np.full((5, 2), np.nan))


def test_auto_route_on_a_small_cloud_is_the_exact_full_diagram() -> None:
    points = np.random.default_rng(11).normal(size=(650, 16))
    auto = compute_persistence(points, max_points=700)
    full = compute_persistence(points, max_points=700, subsample="full")
    assert auto.subsample == "none" and auto.h1_route["route"] == "full"
    assert auto.h1_route["pilot_points"] == 300
    # the pilot's largest death only plans; H1 runs on the certified cut either way
    assert np.isfinite(auto.h1_route["planned_cut"]) and auto.h1_route["cut_held"]
    np.testing.assert_array_equal(auto.diagrams[1], full.diagrams[1])
    np.testing.assert_array_equal(auto.h1_members, full.h1_members)
    assert full.h1_route == {**full.h1_route, "requested": "full", "planned_cut": np.inf}
    assert full.h1_route["cut_held"] and full.h1_route["cut"] <= full.h1_route["enclosing_radius"]


def test_a_planned_cut_below_a_death_changes_nothing(monkeypatch) -> None:
    import napari_topolens.topology.persistence as persistence_module

    points = _noisy_circle(620, seed=12, noise=0.15, dim=3)
    monkeypatch.setattr(persistence_module, "_CUT_FACTOR", 0.3)  # far too low a cut
    cut = compute_persistence(points, max_points=700)
    assert cut.h1_route["planned_cut"] < cut.diagrams[1][:, 1].max()
    full = compute_persistence(points, max_points=700, subsample="full")
    np.testing.assert_array_equal(cut.diagrams[1], full.diagrams[1])
    assert np.all(np.isfinite(cut.diagrams[1]))


def test_auto_route_on_a_large_cloud_records_cost_and_closeness() -> None:
    points = _noisy_circle(900, seed=13, noise=0.1, dim=4)
    a = compute_persistence(points, max_points=200, seed=1)
    b = compute_persistence(points, max_points=200, seed=1)
    route = a.h1_route
    assert route["route"] in ("random", "maxmin") and a.subsample == route["route"]
    assert route["points"] == 200 == len(a.h1_index)
    for kind in ("random", "maxmin"):
        assert route[f"pilot_bottleneck_{kind}"] >= 0.0
    # the route taken never costs more than the whole cloud
    assert route[f"cost_{route['route']}"] <= route["cost_full"]
    # deterministic given the seed (times aside)
    assert {k: v for k, v in route.items() if k != "seconds"} == {
        k: v for k, v in b.h1_route.items() if k != "seconds"
    }
    np.testing.assert_array_equal(a.diagrams[1], b.diagrams[1])
    # the loop is found on the landmarks
    assert np.diff(a.diagrams[1][0])[0] > 1.0
    # and H1 is exactly that of the chosen points
    direct = compute_persistence(points[a.h1_index], max_points=200, subsample="full")
    np.testing.assert_array_equal(a.diagrams[1], direct.diagrams[1])
