"""The O(N·d) Borůvka minimum spanning tree against scipy's single linkage."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.cluster.hierarchy import cophenet, is_valid_linkage, linkage
from scipy.spatial.distance import cdist, pdist, squareform

from napari_topolens.topology.metrics import METRICS, MetricSpace, linkage_from_edges
from napari_topolens.topology.mst import minimum_spanning_edges


def _clouds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 12)) * 6
    by_class = np.repeat(np.arange(4), 150)  # sorted by class, as extraction gives them
    return {
        "gaussian": rng.normal(size=(700, 24)),
        "sorted blobs": centres[by_class] + rng.normal(size=(600, 12)),
        "grid (ties)": np.array([[i, j] for i in range(25) for j in range(25)], dtype=float),
        "duplicates": np.repeat(rng.normal(size=(120, 5)), 4, axis=0)[rng.permutation(480)],
        "many zero rows": np.vstack([np.zeros((300, 6)), np.abs(rng.normal(size=(200, 6)))]),
        "small integers (ties)": rng.integers(0, 3, size=(500, 4)).astype(float),
    }


@pytest.mark.parametrize("name", list(_clouds()))
@pytest.mark.parametrize("n_neighbors", [1, 16])
def test_tree_equals_scipy_single_linkage(name: str, n_neighbors: int) -> None:
    x = _clouds()[name]
    stats: dict = {}
    # small blocks and short lists force many blocks, rounds and queries
    a, b, w = minimum_spanning_edges(x, n_neighbors=n_neighbors, block_bytes=1 << 16, stats=stats)
    assert len(a) == len(x) - 1
    z = linkage_from_edges(len(x), a, b, w)
    reference = linkage(pdist(x), "single")
    assert is_valid_linkage(z)
    # the same merge heights bit for bit, and the same ultrametric (cophenetic
    # distances), which is single linkage whatever the order of tied merges
    assert np.array_equal(z[:, 2], reference[:, 2])
    assert np.array_equal(cophenet(z), cophenet(reference))
    if name == "gaussian":  # no ties: the very same Z
        assert np.array_equal(z, reference)
    # every edge is as long as it says
    np.testing.assert_allclose(w, np.linalg.norm(x[a] - x[b], axis=1), rtol=1e-14, atol=0)
    assert stats["distinct"] == len(np.unique(x, axis=0))


@pytest.mark.parametrize("metric", [m for m in METRICS if m != "geodesic"])
def test_boruvka_route_equals_the_dense_route_for_every_metric(metric: str) -> None:
    x = _clouds()["sorted blobs"][::2]
    space = MetricSpace(x, metric)
    dense = space.single_linkage(method="dense")
    tree = space.single_linkage(method="boruvka")
    assert np.array_equal(tree[:, 2], dense[:, 2])
    assert np.array_equal(cophenet(tree), cophenet(dense))


def test_component_bridges_are_the_tree_over_the_components() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(240, 3))
    components = rng.integers(0, 7, size=240)
    a, b, w = minimum_spanning_edges(x, components=components, n_neighbors=2)
    assert len(a) == 6
    assert np.all(components[a] != components[b])
    # brute force: the shortest distance between each pair of components, then Kruskal
    from scipy.sparse.csgraph import minimum_spanning_tree

    between = np.zeros((7, 7))
    for i in range(7):
        for j in range(i + 1, 7):
            between[i, j] = cdist(x[components == i], x[components == j]).min()
    expected = np.sort(minimum_spanning_tree(between).data)
    np.testing.assert_array_equal(np.sort(w), expected)


def test_torch_blocks_give_the_same_tree() -> None:
    pytest.importorskip("torch")
    x = _clouds()["sorted blobs"]
    a, b, w = minimum_spanning_edges(x, block_bytes=1 << 16)
    ta, tb, tw = minimum_spanning_edges(x, block_bytes=1 << 16, device="cpu")
    key = np.lexsort((np.maximum(a, b), np.minimum(a, b)))
    tkey = np.lexsort((np.maximum(ta, tb), np.minimum(ta, tb)))
    assert np.array_equal(np.minimum(a, b)[key], np.minimum(ta, tb)[tkey])
    assert np.array_equal(np.maximum(a, b)[key], np.maximum(ta, tb)[tkey])
    assert np.array_equal(w[key], tw[tkey])


def test_memory_stays_far_below_the_distance_matrix() -> None:
    rng = np.random.default_rng(4)
    n = 12_000  # a condensed matrix alone would take 576 MB
    x = rng.normal(size=(n, 8))
    tracemalloc.start()
    try:
        a, _, _ = minimum_spanning_edges(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(a) == n - 1
    assert peak < 150e6, f"peak {peak / 1e6:.0f} MB"


def test_single_linkage_of_a_large_cloud_takes_the_tree_route() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2600, 6))  # above DENSE_LINKAGE_LIMIT
    z = MetricSpace(x).single_linkage()
    assert np.array_equal(z, linkage(pdist(x), "single"))


def test_density_scales_far_from_one_give_the_scipy_tree() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(400, 5)) * 50.0  # radii ~ 50: scaled distances shrink a lot
    scale = rng.uniform(20.0, 80.0, size=400)
    a, b, w = minimum_spanning_edges(x, scale=scale, n_neighbors=3, block_bytes=1 << 15)
    dist = squareform(pdist(x)) / np.sqrt(scale[:, None] * scale[None, :])
    reference = linkage(squareform(dist, checks=False), "single")
    z = linkage_from_edges(len(x), a, b, w)
    assert np.array_equal(z[:, 2], reference[:, 2])
