"""Exact H1 on a certified cut (topology.rips_h1) against gudhi's own uncut Ripser.

Equality is exact: the same gudhi reduction on the same float64 matrix entries, so
the bars are compared bit for bit (and the bottleneck distance is 0, not ~1e-9).
"""

from __future__ import annotations

import gudhi
import numpy as np
import pytest
from gudhi.sklearn.rips_persistence import RipsPersistence
from scipy.spatial.distance import pdist, squareform

from napari_topolens.topology import rips_h1
from napari_topolens.topology.persistence import _prim_parents, compute_persistence


def _gudhi_h1(distances: np.ndarray) -> np.ndarray:
    """gudhi's RipsPersistence, uncut (it stops at the enclosing radius itself)."""
    h1 = RipsPersistence(homology_dimensions=1, input_type="full distance matrix", n_jobs=1)
    return _bars(h1.fit_transform([distances])[0])


def _bars(diagram: np.ndarray) -> np.ndarray:
    diagram = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
    diagram = diagram[diagram[:, 1] > diagram[:, 0]]
    return diagram[np.lexsort((diagram[:, 1], diagram[:, 0]))]


def _certified(distances: np.ndarray) -> tuple[np.ndarray, dict]:
    parent, _ = _prim_parents(distances)
    h1, record = rips_h1.certified_h1(distances, parent)
    return _bars(h1), record


def _circle(n: int, seed: int, noise: float, dim: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    points = np.zeros((n, dim))
    points[:, 0], points[:, 1] = np.cos(t), np.sin(t)
    return points + rng.normal(scale=noise, size=points.shape)


def _clouds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=4.0, size=(5, 16))
    grid = np.stack(np.meshgrid(np.arange(7), np.arange(6)), -1).reshape(-1, 2).astype(float)
    return {
        "gaussian 400x32": rng.normal(size=(400, 32)),
        "clusters 400x16": centres[rng.integers(0, 5, 400)] + rng.normal(size=(400, 16)),
        "circle + noise 300x8": _circle(300, 4, 0.08, 8),
        # equal lengths everywhere, and duplicate points (zero-length edges)
        "integer grid with duplicates": np.vstack([grid, grid[:5]]),
    }


@pytest.mark.parametrize("name", list(_clouds()))
def test_certified_h1_is_gudhis_uncut_diagram(name: str) -> None:
    distances = squareform(pdist(_clouds()[name]))
    ours, record = _certified(distances)
    reference = _gudhi_h1(distances)
    assert len(reference) > 0
    np.testing.assert_array_equal(ours, reference)
    # gudhi's exact bottleneck distance reports 0 as its smallest error bound (~1e-308)
    assert gudhi.bottleneck_distance(ours, reference) < 1e-300
    assert record["birth_bound"] <= record["cut"] <= record["enclosing_radius"]
    # every bar is born no later than the last possible birth the witnesses allow
    assert ours[:, 0].max() <= record["birth_bound"]


def _arc_with_a_late_gap() -> np.ndarray:
    """A dense arc of 300 degrees: a path at small scales (no cycle at all), closed by
    the chord across its gap (length 1) much later; that cycle then fills."""
    angles = np.linspace(0.0, 5 * np.pi / 3, 120)
    return np.column_stack([np.cos(angles), np.sin(angles)])


def test_a_bar_born_after_h1_was_trivial_is_found() -> None:
    distances = squareform(pdist(_arc_with_a_late_gap()))
    reference = _gudhi_h1(distances)
    assert len(reference) == 1 and reference[0, 0] == pytest.approx(1.0)
    # cut below that birth: nothing is alive there, yet the bar is missed; this is
    # why the cut must also lie above the last possible birth
    step = float(distances[0, 1])
    low = _bars(rips_h1._ripser_h1(distances, 2 * step))
    assert len(low) == 0
    ours, record = _certified(distances)
    np.testing.assert_array_equal(ours, reference)
    assert record["birth_bound"] == pytest.approx(1.0)


def test_a_cut_with_a_class_still_alive_is_raised(monkeypatch) -> None:
    distances = squareform(pdist(_circle(200, 5, 0.05, 3)))
    monkeypatch.setattr(rips_h1, "_FIRST_GROWTH", 1.0)  # first cut at the last birth
    ours, record = _certified(distances)
    # the circle's class is born long before it dies: the first cut had it alive
    assert record["cut_tries"] > 1
    assert np.all(np.isfinite(ours)) and ours[:, 1].max() <= record["cut"]
    np.testing.assert_array_equal(ours, _gudhi_h1(distances))


def test_witness_search_finds_the_longest_unwitnessed_non_tree_edge() -> None:
    distances = squareform(pdist(np.random.default_rng(6).normal(size=(150, 6))))
    parent, _ = _prim_parents(distances)
    radius = rips_h1.enclosing_radius(distances)
    bound, _ = rips_h1.last_birth_bound(distances, parent, radius)
    # brute force: every pair, every witness
    m = len(distances)
    longest = 0.0
    for u in range(m):
        for v in range(u + 1, m):
            length = distances[u, v]
            if length > radius or parent[u] == v or parent[v] == u:
                continue
            if not np.any(np.maximum(distances[u], distances[v]) < length):
                longest = max(longest, length)
    assert bound == longest > 0.0


def test_compute_persistence_exact_route_matches_gudhi_and_keeps_members() -> None:
    points = np.random.default_rng(8).normal(size=(500, 24))
    result = compute_persistence(points, max_dim=1, subsample="full")
    np.testing.assert_array_equal(_bars(result.diagrams[1]), _gudhi_h1(squareform(pdist(points))))
    assert result.h1_route["cut_held"] and result.h1_route["cut"] < np.inf
    # each cycle closes: consecutive members and the last-first pair are edges no
    # longer than the bar's birth
    distances = squareform(pdist(points))
    for k, (birth, _) in enumerate(result.diagrams[1][:50]):
        cycle = result.h1_members[result.h1_member_offsets[k] : result.h1_member_offsets[k + 1]]
        steps = distances[cycle, np.roll(cycle, -1)]
        assert len(cycle) >= 3 and steps.max() <= birth


def test_a_capped_witness_search_still_gives_the_exact_diagram(monkeypatch) -> None:
    """With few candidates kept (small blocks, a small cap), the bound may only rise
    to the shortest kept edge: never below the true last birth, and the diagram is
    unchanged."""
    distances = squareform(pdist(np.random.default_rng(9).normal(size=(200, 8))))
    parent, _ = _prim_parents(distances)
    radius = rips_h1.enclosing_radius(distances)
    exact_bound, _ = rips_h1.last_birth_bound(distances, parent, radius)
    monkeypatch.setattr(rips_h1, "_BLOCK_ENTRIES", 1000)
    monkeypatch.setattr(rips_h1, "_MAX_CANDIDATES", 40)
    capped_bound, _ = rips_h1.last_birth_bound(distances, parent, radius)
    assert capped_bound >= exact_bound > 0.0
    ours, _ = _certified(distances)
    np.testing.assert_array_equal(ours, _gudhi_h1(distances))


def test_without_gudhis_dense_binding_the_public_class_gives_the_same_cut_runs(
    monkeypatch,
) -> None:
    import sys

    distances = squareform(pdist(np.random.default_rng(10).normal(size=(300, 16))))
    dense = [rips_h1._ripser_h1(distances, t) for t in (4.0, 4.6, np.inf)]
    monkeypatch.setitem(sys.modules, "gudhi._ripser_ext", None)  # its import now fails
    public = [rips_h1._ripser_h1(distances, t) for t in (4.0, 4.6, np.inf)]
    assert np.isinf(dense[0][:, 1]).any()  # a cut with classes alive: shown as infinite
    for a, b in zip(dense, public, strict=True):
        np.testing.assert_array_equal(_bars(a), _bars(b))
