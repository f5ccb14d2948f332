"""Mapper graphs (kmapper cover + DBSCAN, edges from shared points)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_topolens.errors import LayerError, TopoLensError
from napari_topolens.topology.mapper import knee_eps, mapper_graph


def blobs(n: int = 200, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three unit Gaussians whose centres lie 10 apart along the first axis."""
    rng = np.random.default_rng(seed)
    centers = np.zeros((3, d))
    centers[:, 0] = [0.0, 10.0, 20.0]
    centers[:, 1] = [3.0, 0.0, 6.0]
    x = np.concatenate([rng.normal(c, 1.0, size=(n, d)) for c in centers])
    return x, np.repeat(np.arange(3), n)


@pytest.mark.parametrize("lens", ["pca1", "l2norm"])
def test_one_pure_component_per_blob(lens: str) -> None:
    x, y = blobs()
    g = mapper_graph(x, y, lens=lens)
    assert g.n_nodes > 3
    comps = np.unique(g.component)
    assert len(comps) == 3
    seen_classes = []
    for c in comps:
        nodes = np.flatnonzero(g.component == c)
        pts = np.unique(np.concatenate([g.node_members(i) for i in nodes]))
        classes = np.unique(y[pts])
        assert len(classes) == 1, f"component {c} mixes classes {classes}"
        seen_classes.append(int(classes[0]))
        # most of the blob is covered by its component
        assert len(pts) > 0.8 * np.sum(y == classes[0])
    assert sorted(seen_classes) == [0, 1, 2]
    np.testing.assert_allclose(g.purity, 1.0)


def test_node_statistics_and_members_map_back_to_points() -> None:
    x, y = blobs(seed=1)
    y = y.copy()
    y[::50] = -1  # unknown labels are not counted
    g = mapper_graph(x, y, lens="pca1")
    assert g.member_offsets[0] == 0 and g.member_offsets[-1] == len(g.members)
    for i, node in enumerate(g.nodes):
        rows = node.members
        assert node.size == len(rows) == g.size[i]
        assert np.all(np.diff(rows) > 0)
        np.testing.assert_allclose(g.mean_activation[i], x[rows].mean(axis=0), rtol=1e-5, atol=1e-5)
        assert node.mean_lens == pytest.approx(g.lens[rows].mean())
        known = y[rows][y[rows] >= 0]
        np.testing.assert_array_equal(node.class_counts, np.bincount(known, minlength=3))
        assert node.dominant_class == np.argmax(np.bincount(known, minlength=3))
        # kmapper's node name says which cube it is: members lie in one lens interval
        assert node.id.startswith("cube") and "_cluster" in node.id
    assert g.mean_activation.dtype == np.float32
    assert g.class_counts.shape == (g.n_nodes, 3)
    # node order: by (cube, cluster) numerically
    keys = [tuple(int(s) for s in nid.replace("cube", "").split("_cluster")) for nid in g.node_ids]
    assert keys == sorted(keys)


def test_edges_are_jaccard_overlaps_of_members() -> None:
    x, y = blobs(seed=2)
    g = mapper_graph(x, y, lens="pca2", n_cubes=6)
    sets = [set(g.node_members(i).tolist()) for i in range(g.n_nodes)]
    expected = {}
    for a in range(g.n_nodes):
        for b in range(a + 1, g.n_nodes):
            inter = len(sets[a] & sets[b])
            if inter:
                expected[(a, b)] = inter / len(sets[a] | sets[b])
    got = {(int(a), int(b)): w for (a, b), w in zip(g.edges, g.edge_weight)}
    assert len(expected) > 0
    assert got.keys() == expected.keys()
    for key, w in expected.items():
        assert got[key] == pytest.approx(w)
    assert [tuple(e) for e in g.edges] == sorted(tuple(e) for e in g.edges)
    assert g.lens_components.shape == (len(x), 2)
    np.testing.assert_array_equal(g.lens, g.lens_components[:, 0])


def test_same_nodes_as_kmapper_nerve() -> None:
    import kmapper
    from sklearn.cluster import DBSCAN

    x, y = blobs(100, seed=3)
    g = mapper_graph(x, y, lens="l2norm", n_cubes=8, perc_overlap=0.4)
    lens = np.linalg.norm(x, axis=1)[:, None]
    ref = kmapper.KeplerMapper(verbose=0).map(
        lens,
        x,
        cover=kmapper.Cover(n_cubes=8, perc_overlap=0.4),
        clusterer=DBSCAN(eps=g.params["eps"], min_samples=5),
    )
    assert set(ref["nodes"]) == set(g.node_ids)
    for i, nid in enumerate(g.node_ids):
        np.testing.assert_array_equal(np.sort(ref["nodes"][nid]), g.node_members(i))
    ref_edges = {frozenset((a, b)) for a, ends in ref["links"].items() for b in ends}
    ours = {frozenset((g.node_ids[a], g.node_ids[b])) for a, b in g.edges}
    assert ours == ref_edges


def test_components_and_communities_are_consistent_and_seeded() -> None:
    x, y = blobs(seed=4)
    g1 = mapper_graph(x, y, lens="pca2", seed=3)
    g2 = mapper_graph(x, y, lens="pca2", seed=3)
    np.testing.assert_array_equal(g1.community, g2.community)
    np.testing.assert_array_equal(g1.component, g2.component)
    # edges never cross components; communities never span two components
    for a, b in g1.edges:
        assert g1.component[a] == g1.component[b]
    for c in np.unique(g1.community):
        assert len(np.unique(g1.component[g1.community == c])) == 1
    assert g1.community.max() + 1 >= len(np.unique(g1.component))


def test_probability_lens_and_explicit_lens() -> None:
    x, y = blobs(60, seed=5)
    rng = np.random.default_rng(0)
    prob = rng.dirichlet(np.ones(4), size=len(x))
    g = mapper_graph(x, y, lens="probability", probabilities=prob)
    np.testing.assert_allclose(g.lens, prob.max(axis=1))
    assert g.params["lens"] == "probability"
    h = mapper_graph(x, y, lens_values=x[:, 0])
    np.testing.assert_allclose(h.lens, x[:, 0])
    assert h.params["lens"] == "custom"
    with pytest.raises(TopoLensError, match="probabilities"):
        mapper_graph(x, lens="probability")
    with pytest.raises(TopoLensError, match="unknown lens"):
        mapper_graph(x, lens="umap")


def test_knee_eps_sits_between_the_scales() -> None:
    rng = np.random.default_rng(0)
    # dense blob (spacing ~0.01) plus sparse background (spacing ~1+)
    dense = rng.normal(0, 0.05, (300, 2))
    sparse = rng.uniform(-50, 50, (60, 2))
    eps = knee_eps(np.vstack([dense, sparse]), min_samples=5)
    assert 0.01 < eps < 5.0
    # gaps growing linearly along a line: a straight k-distance curve, no knee -> median
    line = np.cumsum(np.arange(1.0, 102.0))[:, None]
    kdist = np.r_[2.0, np.arange(2.0, 102.0)]  # nearest-neighbour gap of each point
    assert knee_eps(line, 2) == pytest.approx(np.median(kdist))
    # all k-distances equal: the median, which is that distance
    assert knee_eps(np.arange(100.0)[:, None], 2) == pytest.approx(1.0)


def test_degenerate_inputs_give_an_empty_or_small_graph() -> None:
    x, y = blobs(20, seed=6)
    few = mapper_graph(x[:3], y[:3])
    assert few.n_nodes == 0 and few.edges.shape == (0, 2) and "min_samples" in few.params["note"]
    assert few.mean_activation.shape == (0, x.shape[1])
    # every point is noise when eps is tiny
    noise = mapper_graph(x, y, eps=1e-9)
    assert noise.n_nodes == 0 and "noise" in noise.params["note"]
    # a constant lens: one interval, the graph is DBSCAN's clustering of the cloud
    const = mapper_graph(x, y, lens_values=np.ones(len(x)))
    assert const.params["n_cubes_used"] == 1
    assert const.n_nodes == 3 and len(const.edges) == 0
    assert np.all(const.size >= 17)  # a few outliers may be DBSCAN noise
    np.testing.assert_allclose(const.purity, 1.0)


def test_nan_points_raise() -> None:
    x, _ = blobs(20)
    x[3, 2] = np.nan
    with pytest.raises(LayerError, match="NaN"):
        mapper_graph(x)
    with pytest.raises(TopoLensError, match="one entry per point"):
        mapper_graph(np.zeros((10, 2)), labels=np.zeros(3, int))


def _dbscan_by_route(route: str):
    from napari_topolens.topology import mapper as mapper_module

    if route == "blocked":
        return lambda x, eps, min_samples, budget: mapper_module._dbscan_blocked(
            mapper_module._EpsBlocks.of(np.asarray(x, float), eps, budget), min_samples
        )[0]
    if route == "balls":
        return lambda x, eps, min_samples, budget: mapper_module._dbscan_balls(
            mapper_module._sklearn_balls(np.asarray(x, float), eps), len(x), min_samples, budget
        )[0]
    if route == "projected":
        return lambda x, eps, min_samples, budget: mapper_module._dbscan_projected(
            mapper_module._ProjectedBalls(np.asarray(x, float), eps), min_samples, budget
        )[0]
    if route == "projected balls":
        return lambda x, eps, min_samples, budget: mapper_module._dbscan_balls(
            mapper_module._ProjectedBalls(np.asarray(x, float), eps).balls_of,
            len(x),
            min_samples,
            budget,
        )[0]
    return lambda x, eps, min_samples, budget: mapper_module.dbscan_labels(
        x, eps, min_samples, budget=budget
    )


@pytest.mark.parametrize("route", ["chosen", "blocked", "balls", "projected", "projected balls"])
@pytest.mark.parametrize("budget", [50, 1_000_000])
def test_bounded_dbscan_gives_scikit_learns_labels(budget: int, route: str) -> None:
    from sklearn.cluster import DBSCAN

    dbscan_labels = _dbscan_by_route(route)

    rng = np.random.default_rng(8)
    # blobs touching through border points, a chain, scattered noise, duplicates
    x = np.vstack(
        [
            rng.normal(size=(150, 3)),
            rng.normal(size=(150, 3)) + np.array([2.2, 0.0, 0.0]),
            np.column_stack([np.linspace(5, 9, 40), np.zeros(40), np.zeros(40)]),
            rng.uniform(-8, 12, size=(60, 3)),
            np.repeat(rng.normal(size=(5, 3)) + 20, 6, axis=0),
        ]
    )[rng.permutation(430)]
    for eps, min_samples in [(0.35, 5), (0.6, 8), (0.11, 3), (3.0, 40)]:
        expected = DBSCAN(eps=eps, min_samples=min_samples).fit(x).labels_
        got = dbscan_labels(x, eps, min_samples, budget)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dim", [20, 64])
def test_bounded_dbscan_in_many_dimensions_gives_scikit_learns_labels(dim: int) -> None:
    """Activation-like clouds (non-negative, norms spread), where all pairs are blocked."""
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    from napari_topolens.topology.mapper import dbscan_labels

    rng = np.random.default_rng(dim)
    x = np.abs(rng.normal(size=(1200, dim))) * rng.uniform(0.2, 3.0, size=(1200, 1))
    x[:300] += 4.0 * np.eye(dim)[0]  # a second group
    kdist = NearestNeighbors(n_neighbors=5).fit(x).kneighbors(x)[0][:, -1]
    for q in (0.1, 0.5, 0.9):
        eps = float(np.quantile(kdist, q))
        expected = DBSCAN(eps=eps, min_samples=5).fit(x).labels_
        for budget in (20_000, 32_000_000):
            np.testing.assert_array_equal(dbscan_labels(x, eps, 5, budget=budget), expected)


@pytest.mark.parametrize("dim", [3, 32])
def test_every_point_with_its_k_distance_within_the_knee_eps_is_core(dim: int) -> None:
    """eps is a point's k-distance: rounding must not push its k-th neighbour outside
    the ball (scikit-learn's brute search rounds it through |x|^2 + |y|^2 - 2 x.y,
    and sqrt(s)**2 can fall an ulp short of s)."""
    from napari_topolens.topology.mapper import dbscan_labels
    from napari_topolens.topology.mst import squared_distances

    for seed in range(6):
        rng = np.random.default_rng(100 * dim + seed)
        # far from the origin, where that rounding is largest
        n = 400
        x = np.abs(rng.normal(size=(n, dim))) * rng.uniform(0.2, 3.0, size=(n, 1)) + 50.0
        for min_samples in (2, 5):
            eps = knee_eps(x, min_samples)
            rows, cols = np.divmod(np.arange(n * n), n)
            d2 = squared_distances(x, rows, cols).reshape(n, n)  # scikit-learn's trees' bits
            counts = (d2 <= eps * eps).sum(1)
            kdist = np.sqrt(np.sort(d2, axis=1)[:, min_samples - 1])
            assert (counts[kdist <= eps] >= min_samples).all()
            labels = dbscan_labels(x, eps, min_samples)
            assert (labels[counts >= min_samples] != -1).all()


def test_knee_eps_does_not_trust_the_order_of_the_neighbours_found(monkeypatch) -> None:
    """Brute-force search orders near-equal neighbours by rounded distances: the
    k-distance is the largest exact distance of the k found, wherever it sits."""
    from sklearn.neighbors import NearestNeighbors

    x, _ = blobs(200, seed=9)
    expected = knee_eps(x, 5)
    found = NearestNeighbors.kneighbors

    def reversed_order(self, *args, **kwargs):
        dist, index = found(self, *args, **kwargs)
        return dist[:, ::-1], index[:, ::-1]

    monkeypatch.setattr(NearestNeighbors, "kneighbors", reversed_order)
    assert knee_eps(x, 5) == expected


def test_blocked_dbscan_gives_the_border_point_the_lowest_numbered_cluster() -> None:
    from sklearn.cluster import DBSCAN

    from napari_topolens.topology.mapper import dbscan_labels

    x = np.zeros((9, 20))
    x[:, 0] = [0.0, 1.3, 1.4, 1.5, 1.6, 0.1, 0.2, 0.3, 0.8]
    expected = DBSCAN(eps=0.51, min_samples=4, algorithm="kd_tree").fit(x).labels_
    np.testing.assert_array_equal(expected, [0, 1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(dbscan_labels(x, 0.51, 4), expected)


def test_blocked_dbscan_decides_pairs_near_eps_in_float64_when_float32_cannot() -> None:
    """Pairs spread over +-1000 (float32 then rounds squared distances by ~0.1),
    each pair at exactly eps = 0.5 or 1e-9 beyond it."""
    from napari_topolens.topology.mapper import _dbscan_blocked, _EpsBlocks

    eps, dim, pairs = 0.5, 20, 60
    rng = np.random.default_rng(3)
    x = np.zeros((2 * pairs, dim))
    x[0::2, 1:4] = rng.uniform(-1000, 1000, size=(pairs, 3)).round()
    x[1::2] = x[0::2]
    apart = np.where(np.arange(pairs) % 2 == 0, eps, eps + 1e-9)
    x[1::2, 0] = apart
    labels, _ = _dbscan_blocked(_EpsBlocks.of(x, eps, 100_000), 2)
    inside = apart == eps
    assert (labels[0::2][inside] >= 0).all() and (
        labels[0::2][inside] == labels[1::2][inside]
    ).all()
    assert (labels[0::2][~inside] == -1).all() and (labels[1::2][~inside] == -1).all()
    assert len(np.unique(labels[labels >= 0])) == inside.sum()


def test_blocked_dbscan_decides_pairs_at_exactly_eps_in_float64() -> None:
    """A chain with gaps of exactly eps and one of eps + 1e-12: only float64 tells
    them apart, and the answer is ``sum((x - y)**2) <= eps * eps``, as scikit-learn's
    trees test it."""
    from napari_topolens.topology.mapper import _dbscan_blocked, _EpsBlocks

    eps = 0.5
    dim = 20
    steps = np.array([0.0, eps, eps, eps + 1e-12, eps, eps])
    x = np.zeros((len(steps), dim))
    x[:, 0] = 1000.0 + np.cumsum(steps)
    x[:, 1:] = 3.0
    # the pairs' float64 squared distances are eps**2 exactly, one just above it
    d2 = np.diff(x[:, 0]) ** 2
    assert (d2[[0, 1, 3, 4]] == eps**2).all() and d2[2] > eps**2
    labels, _ = _dbscan_blocked(_EpsBlocks.of(x, eps, 1_000), 2)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("route", ["chosen", "balls"])
def test_bounded_dbscan_memory_follows_its_budget_on_one_dense_ball(route: str) -> None:
    """36M neighbour pairs, a 4M budget: neither the blocks (the route chosen here)
    nor the pairs joining clusters (the ball route) pile up to it."""
    import tracemalloc

    dbscan_labels = _dbscan_by_route(route)
    x = np.random.default_rng(0).normal(size=(6000, 4))
    budget = 4_000_000
    tracemalloc.start()
    try:
        labels = dbscan_labels(x, 2.5, 5, budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert labels.max() == 0  # one cluster
    # measured: 32 bytes per budget entry; 92 when the pairs were merged only at the budget
    assert peak < 50 * budget, f"{peak / 2**20:.0f} MiB"


def test_mapper_nodes_unchanged_with_a_tiny_neighbour_budget(monkeypatch) -> None:
    import napari_topolens.topology.mapper as mapper_module

    x, y = blobs(120, seed=5)
    g = mapper_graph(x, y, n_cubes=6, perc_overlap=0.3)
    monkeypatch.setattr(mapper_module, "NEIGHBOR_BUDGET", 64)
    small = mapper_graph(x, y, n_cubes=6, perc_overlap=0.3)
    assert small.node_ids == g.node_ids
    np.testing.assert_array_equal(small.members, g.members)
    np.testing.assert_array_equal(small.edges, g.edges)


def relu_cloud(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """benchmarks/bench_mapper_scale.py's cloud: ReLU of a 6-d latent mixture of 16
    clusters mapped to ``dim`` dimensions, plus a little noise, in float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(16, 6)) * 3.0
    w = (rng.normal(size=(6, dim)) / np.sqrt(6)).astype(np.float32)
    b = rng.normal(size=dim).astype(np.float32) * 0.5 - 0.5
    z = (centres[rng.integers(0, 16, n)] + rng.normal(size=(n, 6))).astype(np.float32)
    h = z @ w + b + rng.normal(size=(n, dim)).astype(np.float32) * 0.05
    return np.maximum(h, 0).astype(np.float32)


@pytest.mark.parametrize(
    "route, budget", [("chosen", 20_000), ("projected", 20_000), ("projected", 32_000_000)]
)
def test_dbscan_labels_and_core_points_are_scikit_learns_on_the_benchmark_cloud(
    route: str, budget: int
) -> None:
    """The 256-d float32 benchmark cloud (a subset), eps around its knee: labels and
    core points equal scikit-learn's tree-based DBSCAN on the same float32 values.
    The projected route with a small budget finds its pairs again for each pass
    and screens each block's columns a few at a time; with a big one it keeps them."""
    from sklearn.cluster import DBSCAN

    from napari_topolens.topology import mapper as mapper_module

    x = relu_cloud(1500, 256, seed=1)
    knee = knee_eps(x, 5)
    for eps in (0.7 * knee, knee, 1.3 * knee):
        ref = DBSCAN(eps=eps, min_samples=5, algorithm="ball_tree").fit(x)
        core = np.zeros(len(x), dtype=bool)
        core[ref.core_sample_indices_] = True
        if route == "chosen":
            labels, got_core = mapper_module.dbscan_labels_and_core(x, eps, 5, budget=20_000)
        else:
            balls = mapper_module._ProjectedBalls(x, eps)
            labels, got_core = mapper_module._dbscan_projected(balls, 5, budget)
        np.testing.assert_array_equal(labels, ref.labels_)
        np.testing.assert_array_equal(got_core, core)


def test_mapper_nodes_are_kmappers_with_scikit_learns_dbscan_on_the_benchmark_cloud() -> None:
    """The whole graph on a subset of the benchmark cloud, float32 kept: the nodes of
    kmapper's map with scikit-learn's tree-based DBSCAN at the same eps, and the
    same graph from the cloud's float64 copy."""
    import kmapper
    from sklearn.cluster import DBSCAN

    x = relu_cloud(3000, 256, seed=2)
    g = mapper_graph(x)
    lens = np.linalg.norm(x.astype(np.float64), axis=1)[:, None]
    ref = kmapper.KeplerMapper(verbose=0).map(
        lens,
        x,
        cover=kmapper.Cover(n_cubes=10, perc_overlap=0.5),
        clusterer=DBSCAN(eps=g.params["eps"], min_samples=5, algorithm="ball_tree"),
    )
    assert g.n_nodes > 10
    assert set(ref["nodes"]) == set(g.node_ids)
    for i, nid in enumerate(g.node_ids):
        np.testing.assert_array_equal(np.sort(ref["nodes"][nid]), g.node_members(i))
    g64 = mapper_graph(x.astype(np.float64))
    assert g64.node_ids == g.node_ids and g64.params["eps"] == g.params["eps"]
    np.testing.assert_array_equal(g64.members, g.members)
    np.testing.assert_allclose(g64.mean_activation, g.mean_activation, rtol=1e-6)


@pytest.mark.parametrize("dim", [8, 64])
def test_sampled_knee_uses_exact_k_distances_of_the_sample(monkeypatch, dim: int) -> None:
    """Above KNEE_EXACT_MAX points the knee is that of a seeded sample whose
    k-distances are exact against the whole cloud (found through the axes' tree)."""
    from napari_topolens.topology import mapper as mapper_module

    # isotropic: the nearest along the axes are seldom the nearest
    x = np.abs(np.random.default_rng(dim).normal(size=(2000, dim)))
    exact = mapper_module._exact_kdistances(x, 5)
    rows = np.sort(np.random.default_rng(0).choice(len(x), 300, replace=False))
    got = mapper_module._ProjectedBalls(x, 0.0).kdistances(rows, 5)
    np.testing.assert_array_equal(got, exact[rows])
    monkeypatch.setattr(mapper_module, "KNEE_EXACT_MAX", 1000)
    monkeypatch.setattr(mapper_module, "KNEE_SAMPLE", 300)
    assert mapper_module.knee_eps(x, 5) == mapper_module._knee_of(exact[rows])[0]


def test_projected_dbscan_decides_pairs_at_exactly_eps_in_float64() -> None:
    """Pairs at eps or 1e-12 beyond it, far from the origin and off the top axes,
    where only the coordinates in float64 tell them apart."""
    from napari_topolens.topology import mapper as mapper_module

    eps, dim, pairs = 0.5, 40, 80
    rng = np.random.default_rng(4)
    x = np.zeros((2 * pairs, dim))
    x[0::2, 1:20] = rng.uniform(-1000, 1000, size=(pairs, 19)).round()
    x[1::2] = x[0::2]
    # along the last axis: the smallest spread, off the tree's 16 axes
    apart = np.where(np.arange(pairs) % 2 == 0, eps, eps + 1e-12)
    x[1::2, -1] = apart
    labels, core = mapper_module._dbscan_projected(mapper_module._ProjectedBalls(x, eps), 2, 1_000)
    inside = apart == eps
    assert (labels[0::2][inside] >= 0).all() and (
        labels[0::2][inside] == labels[1::2][inside]
    ).all()
    assert (labels[0::2][~inside] == -1).all() and (labels[1::2][~inside] == -1).all()
    assert len(np.unique(labels[labels >= 0])) == inside.sum()
    np.testing.assert_array_equal(core, labels >= 0)


@pytest.mark.parametrize("threads", [1, 3])
def test_projected_blocks_find_exactly_the_pairs_within_eps(monkeypatch, threads: int) -> None:
    """Every pair (i, j > i) within eps of a subset of the benchmark cloud, each once,
    whatever the blocks' sizes and the number of threads: the route's eps-graph is
    the exact one (float64 differences), so its clusters are DBSCAN's."""
    from napari_topolens.topology import mapper as mapper_module

    monkeypatch.setattr(mapper_module, "ROW_BLOCK", 64)
    monkeypatch.setattr(mapper_module, "COLUMN_BLOCK", 16)
    monkeypatch.setattr(mapper_module, "PROJECTED_THREADS", threads)
    x = relu_cloud(1200, 256, seed=3)
    x64 = x.astype(np.float64)
    sq = np.einsum("ij,ij->i", x64, x64)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x64 @ x64.T
    eps = float(np.sqrt(np.quantile(d2[np.triu_indices(len(x), 1)], 0.01)))
    blocks = mapper_module._ProjectedBlocks(mapper_module._ProjectedBalls(x, eps), 20_000)
    starts = range(0, len(x), mapper_module.ROW_BLOCK)
    found = [pair for pair in mapper_module._blocks_in_order(blocks, starts)]
    i = blocks.order[np.concatenate([p[0] for p in found])]
    j = blocks.order[np.concatenate([p[1] for p in found])]
    got = np.sort(np.minimum(i, j) * len(x) + np.maximum(i, j))
    # the exact answer, from the coordinates' differences in float64
    a, b = np.nonzero(np.triu(d2 <= eps * eps + 1e-6 * sq.max(), 1))
    exact = mapper_module._exact_squared(x, a, b) <= eps * eps
    expected = np.sort(a[exact] * len(x) + b[exact])
    assert 1000 < len(expected) < len(a) + 1
    np.testing.assert_array_equal(got, expected)


def test_projection_and_sampled_knee_do_not_depend_on_the_threads(monkeypatch) -> None:
    """The axis coordinates, residuals and the sampled knee (its tree queried on
    several threads) are the same with one thread or three, and the coordinates are
    those of the whole cloud projected at once."""
    from napari_topolens.topology import mapper as mapper_module

    monkeypatch.setattr(mapper_module, "KNEE_EXACT_MAX", 1000)
    monkeypatch.setattr(mapper_module, "KNEE_SAMPLE", 300)
    x = relu_cloud(40_000, 32, seed=5)  # three chunks of 16,384 rows
    got = {}
    for threads in (1, 3):
        monkeypatch.setattr(mapper_module, "PROJECTED_THREADS", threads)
        balls = mapper_module._ProjectedBalls(x, 0.5)
        got[threads] = (balls.sq, balls.y, balls.r, balls.delta, mapper_module.knee_eps(x, 5))
    for one, three in zip(got[1], got[3]):
        np.testing.assert_array_equal(one, three)
    x64 = x.astype(np.float64)
    c = x64 - x64.mean(axis=0)
    rows = np.sort(np.random.default_rng(0).choice(len(x), 4096, replace=False))
    sample = c[rows]
    basis = mapper_module._top_axes(sample.T @ sample, 16)
    np.testing.assert_allclose(balls.y, c @ basis, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(balls.sq, np.einsum("ij,ij->i", x64, x64), rtol=1e-12)
    top = float(np.einsum("ij,ij->i", c, c).max())
    assert balls.delta == 64.0 * (32 + 2) * mapper_module._U64 * max(top, 0.25)


@pytest.mark.parametrize("scale", [1e-20, 1e20])
def test_projected_dbscan_labels_do_not_depend_on_the_clouds_scale(scale: float) -> None:
    """The blocks' float32 products are scaled by a power of two: coordinates near
    1e20 (whose squares overflow float32) or 1e-20 give the labels of the cloud at
    scale 1, which are scikit-learn's."""
    from sklearn.cluster import DBSCAN

    from napari_topolens.topology import mapper as mapper_module

    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(size=(3000, 3)) @ rng.normal(size=(3, 20)), 0.0)
    eps = 0.35
    expected = DBSCAN(eps=eps, min_samples=5, algorithm="kd_tree").fit(x).labels_
    assert expected.max() > 3 and (expected < 0).sum() > 10
    for cloud, radius in ((x, eps), (x * scale, eps * scale)):
        balls = mapper_module._ProjectedBalls(cloud, radius)
        labels, _core = mapper_module._dbscan_projected(balls, 5, 1_000_000)
        np.testing.assert_array_equal(labels, expected)
