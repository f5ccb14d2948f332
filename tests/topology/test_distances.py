"""Tests of diagram distances and linear CKA."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from napari_topolens.errors import EmptySelectionError, TopoLensError
from napari_topolens.topology.distances import (
    DIAGRAM_DISTANCES,
    cka_matrix,
    diagram_distance,
    diagram_distance_matrix,
    linear_cka,
)


def _random_diagram(seed: int, k: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    birth = rng.uniform(0, 1, k)
    return np.c_[birth, birth + rng.exponential(0.5, k)]


@pytest.mark.parametrize("kind", DIAGRAM_DISTANCES)
def test_matrix_is_symmetric_with_zero_diagonal_and_matches_pairs(kind: str) -> None:
    diagrams = [_random_diagram(s) for s in range(4)] + [
        np.zeros((0, 2)),
        np.array([[0.0, 0.5], [0.0, np.inf]]),
    ]
    matrix = diagram_distance_matrix(diagrams, kind)
    assert matrix.shape == (6, 6)
    assert np.array_equal(matrix, matrix.T)
    assert np.all(np.diag(matrix) == 0.0)
    assert np.all(matrix[~np.eye(6, dtype=bool)] > 0)
    for i in range(6):
        for j in range(6):
            if i != j:
                assert matrix[i, j] == pytest.approx(
                    diagram_distance(diagrams[i], diagrams[j], kind), rel=0.02
                )


@pytest.mark.parametrize("kind", DIAGRAM_DISTANCES)
def test_shifted_copy_is_farther_than_itself(kind: str) -> None:
    diagram = _random_diagram(7)
    assert diagram_distance(diagram, diagram, kind) == pytest.approx(0.0, abs=1e-12)
    near = diagram_distance(diagram, diagram + np.array([0.0, 0.05]), kind)
    far = diagram_distance(diagram, diagram + np.array([0.0, 0.5]), kind)
    assert 0 < near < far


def test_bottleneck_and_wasserstein_equal_hand_computed_values() -> None:
    a = np.array([[0.0, 2.0]])
    b = np.array([[1.0, 5.0]])
    # match (0,2)-(1,5): L-inf cost 3; both to the diagonal: (2 - 0)/2 = 1 and (5 - 1)/2 = 2
    assert diagram_distance(a, b, "bottleneck") == pytest.approx(2.0)
    assert diagram_distance(a, b, "wasserstein", p=1) == pytest.approx(3.0, rel=0.011)
    assert diagram_distance(a, b, "wasserstein", p=2) == pytest.approx(np.sqrt(1 + 4), rel=0.011)
    # one bar shrinks by 0.5, the short bar (half-length 0.5) goes to the diagonal
    c = np.array([[0.0, 4.0], [1.0, 2.0]])
    d = np.array([[0.0, 3.5]])
    assert diagram_distance(c, d, "bottleneck") == pytest.approx(0.5)
    assert diagram_distance(c, d, "wasserstein", p=1) == pytest.approx(1.0, rel=0.011)


def test_empty_diagrams_and_infinite_bars() -> None:
    empty = np.zeros((0, 2))
    bar = np.array([[0.0, 2.0]])
    for kind in DIAGRAM_DISTANCES:
        assert diagram_distance(empty, empty, kind) == 0.0
        assert diagram_distance(empty, np.empty(0), kind) == 0.0
        assert diagram_distance(empty, bar, kind) == pytest.approx(
            diagram_distance(bar, empty, kind)
        )
        assert diagram_distance(empty, bar, kind) > 0
        # the one infinite H0 bar is dropped: it is in every H0 diagram
        assert diagram_distance(np.vstack([bar, [[0.0, np.inf]]]), bar, kind) == pytest.approx(
            0.0, abs=1e-12
        )
    assert diagram_distance(empty, bar, "bottleneck") == pytest.approx(1.0)
    assert diagram_distance(empty, bar, "wasserstein") == pytest.approx(1.0, rel=0.011)
    assert diagram_distance_matrix([empty, empty]).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert diagram_distance_matrix([bar]).shape == (1, 1)


def test_sliced_wasserstein_is_gudhis() -> None:
    from gudhi.representations import SlicedWassersteinDistance

    a, b = _random_diagram(1), _random_diagram(2, 20)
    expected = SlicedWassersteinDistance(num_directions=50)(a, b)
    assert diagram_distance(a, b) == pytest.approx(expected, rel=1e-12)
    assert diagram_distance(a, b, n_directions=200) == pytest.approx(
        SlicedWassersteinDistance(num_directions=200)(a, b)
    )


def test_bad_distance_arguments() -> None:
    with pytest.raises(TopoLensError, match="sliced_wasserstein, bottleneck, wasserstein"):
        diagram_distance(np.zeros((0, 2)), np.zeros((0, 2)), "energy")
    with pytest.raises(TopoLensError, match="shape"):
        diagram_distance(np.zeros((3, 3)), np.zeros((0, 2)))
    with pytest.raises(TopoLensError, match="p must"):
        diagram_distance(np.zeros((0, 2)), np.zeros((0, 2)), "wasserstein", p=0.5)


def test_cka_is_one_under_rotation_and_isotropic_scaling() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 10)) @ rng.normal(size=(10, 10))
    rotation = ortho_group.rvs(10, random_state=4)
    assert linear_cka(x, 3.7 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-10)
    noise = rng.normal(size=(200, 10))
    assert linear_cka(x, noise) < 0.2
    # an anisotropic scaling is not an invariance of linear CKA
    assert linear_cka(x, x * np.linspace(0.1, 10, 10)) < 0.99


def test_cka_gram_route_equals_feature_route_and_matrix() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 60))  # d > n: Gram route
    y = x[:, :15] @ rng.normal(size=(15, 8)) + 0.5 * rng.normal(size=(20, 8))
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)
    matrix = cka_matrix([x, y, x * 2])
    assert np.array_equal(matrix, matrix.T)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert matrix[0, 1] == pytest.approx(expected, rel=1e-10)
    assert matrix[0, 2] == pytest.approx(1.0)


def test_cka_bad_input() -> None:
    x = np.random.default_rng(6).normal(size=(10, 3))
    with pytest.raises(TopoLensError, match="rows"):
        linear_cka(x, x[:5])
    with pytest.raises(TopoLensError, match="row counts"):
        cka_matrix([x, x[:5]])
    with pytest.raises(EmptySelectionError):
        linear_cka(x[:1], x[:1])
    assert np.isnan(linear_cka(x, np.ones((10, 2))))
