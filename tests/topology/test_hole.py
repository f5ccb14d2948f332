"""HOLE views: cluster flow, blob graph and heatmap dendrogram."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path
from scipy.cluster.hierarchy import dendrogram, fcluster, linkage
from scipy.spatial.distance import pdist, squareform
from sklearn.metrics import adjusted_rand_score

from napari_topolens.errors import TopoLensError
from napari_topolens.topology.hole import blob_graph, cluster_flow, cut_linkage, heatmap_dendrogram
from napari_topolens.topology.quality import cluster_quality


def three_gaussians(n: int = 100, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.zeros((3, d))
    centers[1, 0] = 12.0
    centers[2, 1] = 12.0
    x = np.concatenate([rng.normal(c, 1.0, size=(n, d)) for c in centers])
    return x, np.repeat(np.arange(3), n)


# ----------------------------------------------------------------- cluster flow


def test_cut_matches_scipy_fcluster() -> None:
    x, _ = three_gaussians(40)
    z = linkage(x, "single")
    for t in [z[0, 2], z[10, 2], z[60, 2], 0.5 * (z[60, 2] + z[61, 2]), z[-2, 2], z[-1, 2]]:
        ours = cut_linkage(z, t)
        theirs = fcluster(z, t, "distance")
        assert len(np.unique(ours)) == len(np.unique(theirs))
        assert adjusted_rand_score(ours, theirs) == pytest.approx(1.0)


def test_flow_on_three_gaussians() -> None:
    x, y = three_gaussians()
    z = linkage(x, "single")
    flow = cluster_flow(z, y, noise_size=3)
    assert flow.stage_names == ["labels", "smallest", "best", "intermediate", "merged"]
    assert np.isnan(flow.thresholds[0])
    assert np.all(np.diff(flow.thresholds[1:]) >= 0)
    assert flow.thresholds[1] == z[0, 2] and flow.thresholds[-1] == z[-1, 2]
    np.testing.assert_array_equal(flow.memberships[0], y)

    best = flow.memberships[flow.best_stage]
    q = cluster_quality(y, best)
    assert q.purity >= 0.95
    assert flow.scores[flow.best_stage] == pytest.approx(0.7 * q.purity + 0.3 * q.homogeneity)
    # everything merged: one cluster, numbered 0
    assert np.all(flow.memberships[-1] == 0)
    # the smallest H0 death leaves (almost) only tiny clusters: noise
    assert np.mean(flow.memberships[1] == -1) > 0.9

    # flows conserve the points between every pair of stages, and match the memberships
    m = len(y)
    for s in range(len(flow.stage_names) - 1):
        rows = flow.flows[flow.flows[:, 0] == s]
        assert rows[:, 3].sum() == m
        for _, a, b, count in rows:
            assert count == np.sum((flow.memberships[s] == a) & (flow.memberships[s + 1] == b))


def test_best_threshold_is_the_exact_maximum_over_merge_heights() -> None:
    # overlapping classes, so the score varies; check the scan against a brute force
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(c, 1.0, size=(40, 2)) for c in ([0, 0], [3, 0], [0, 3])])
    y = np.repeat(np.arange(3), 40)
    y[::17] = -1  # some unknown labels
    z = linkage(x, "single")
    flow = cluster_flow(z, y, noise_size=2)
    brute = []
    for t in np.unique(z[:, 2]):
        q = cluster_quality(y, cut_linkage(z, t, noise_size=2))
        brute.append(0.7 * q.purity + 0.3 * q.homogeneity)
    assert flow.scores[flow.best_stage] == pytest.approx(max(brute))
    for s in range(1, len(flow.stage_names)):
        q = cluster_quality(y, flow.memberships[s])
        assert flow.scores[s] == pytest.approx(0.7 * q.purity + 0.3 * q.homogeneity)


def test_noise_marking_and_numbering_by_size() -> None:
    # groups of 5, 2 and 4 points on a line, far apart; cut inside the groups
    x = np.r_[np.arange(5.0), 100 + np.arange(2.0), 200 + np.arange(4.0)][:, None]
    z = linkage(x, "single")
    labels = cut_linkage(z, 1.0, noise_size=3)
    np.testing.assert_array_equal(labels, [0] * 5 + [-1] * 2 + [1] * 4)
    labels = cut_linkage(z, 1.0, noise_size=1)
    np.testing.assert_array_equal(labels, [0] * 5 + [2] * 2 + [1] * 4)


def test_flow_without_labels_cuts_in_the_largest_gap() -> None:
    x, y = three_gaussians()
    flow = cluster_flow(linkage(x, "single"))
    assert flow.stage_names == ["smallest", "best", "intermediate", "merged"]
    best = flow.memberships[flow.best_stage]
    assert adjusted_rand_score(y, best) > 0.95
    assert flow.flows[:, 3].sum() == len(y) * 3


def test_far_outlier_does_not_win_the_unlabelled_cut() -> None:
    x, _y = three_gaussians()
    x = np.vstack([x, np.full((1, x.shape[1]), 500.0)])
    flow = cluster_flow(linkage(x, "single"), noise_size=3)
    best = flow.memberships[flow.best_stage]
    assert best[-1] == -1
    assert len(np.unique(best[best >= 0])) == 3


def test_flow_rejects_bad_linkage() -> None:
    with pytest.raises(TopoLensError):
        cluster_flow(np.zeros((3, 3)))
    z = linkage(np.arange(5.0)[:, None] ** 2, "single")
    with pytest.raises(TopoLensError, match="one entry per point"):
        cluster_flow(z, np.zeros(3, int))


# ------------------------------------------------------------------- blob graph


def test_blob_hulls_contain_their_points_and_are_closed() -> None:
    x, y = three_gaussians(60, d=6, seed=2)
    cluster = y.copy()
    cluster[:3] = 7  # a cluster of 3 points
    cluster[3] = 8  # a cluster of 1 point
    cluster[4:6] = 9  # a cluster of 2 points
    cluster[6:9] = -1  # noise: no hull
    blobs = blob_graph(x, cluster, y)
    assert blobs.coords.shape == (len(x), 2)
    np.testing.assert_array_equal(blobs.hull_clusters, [0, 1, 2, 7, 8, 9])
    assert len(blobs.hulls) == 6
    for c, hull in zip(blobs.hull_clusters, blobs.hulls):
        assert hull.shape[1] == 2 and len(hull) >= 4
        np.testing.assert_array_equal(hull[0], hull[-1])
        inside = Path(hull).contains_points(blobs.coords[cluster == c])
        assert inside.all(), f"cluster {c}: {np.sum(~inside)} points outside"
    # the padding is ~15 %: the hull's extent grows by about 2 * pad
    big = blobs.hulls[0]
    pts = blobs.coords[cluster == 0]
    growth = np.ptp(big, axis=0).max() / np.ptp(pts, axis=0).max()
    assert 1.2 < growth < 1.35
    assert blobs.explained_variance.sum() <= 1.0 + 1e-12


def test_blob_layout_is_pca_with_a_fixed_sign() -> None:
    x, y = three_gaussians(30, seed=5)
    a = blob_graph(x, y)
    perm = np.random.default_rng(0).permutation(len(x))
    b = blob_graph(x[perm], y[perm])  # same cloud, rows shuffled: same picture
    np.testing.assert_allclose(a.coords[perm], b.coords, atol=1e-9)
    centred = x - x.mean(axis=0)
    # distances in the layout never exceed distances in the cloud (a projection)
    assert np.all(pdist(a.coords) <= pdist(centred) + 1e-9)
    # sign rule: the largest loading of each axis is positive
    loadings = np.linalg.lstsq(centred, a.coords, rcond=None)[0]
    for k in range(2):
        assert loadings[np.argmax(np.abs(loadings[:, k])), k] > 0
    np.testing.assert_array_equal(a.labels, np.full(len(x), -1))


def test_collinear_cluster_gets_a_hull() -> None:
    x = np.c_[np.arange(10.0), np.zeros(10), np.zeros(10)]
    x[5:, 1] = 50
    cluster = np.repeat([0, 1], 5)
    blobs = blob_graph(x, cluster)
    for c, hull in zip(blobs.hull_clusters, blobs.hulls):
        assert Path(hull).contains_points(blobs.coords[cluster == c]).all()


# ------------------------------------------------------------------- dendrogram


def test_dendrogram_order_distances_and_members() -> None:
    x, _ = three_gaussians(50, seed=3)
    d = heatmap_dendrogram(x, max_points=120, seed=1)
    n = len(d.index)
    assert n == 120 and np.all(np.diff(d.index) > 0)
    np.testing.assert_array_equal(np.sort(d.order), np.arange(n))
    full = squareform(pdist(x[d.index]))
    np.testing.assert_allclose(d.distances, full[np.ix_(d.order, d.order)], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(d.linkage[:, 2], linkage(x[d.index], "single")[:, 2])

    # root merge covers every shown point; each merge is the union of its children
    np.testing.assert_array_equal(np.sort(d.branch_members(n - 2)), d.index)
    for i, (a, b) in enumerate(d.linkage[:, :2].astype(int)):

        def rows(node: int) -> set[int]:
            return {int(d.index[node])} if node < n else set(d.branch_members(node - n).tolist())

        got = d.branch_members(i)
        assert len(got) == int(d.linkage[i, 3])
        assert set(got.tolist()) == rows(a) | rows(b)
        assert not rows(a) & rows(b)

    # the branches are scipy's, one per linkage row
    ref = dendrogram(d.linkage, no_plot=True)
    ours = sorted(map(tuple, np.c_[d.icoord, d.dcoord].round(9)))
    theirs = sorted(map(tuple, np.c_[np.array(ref["icoord"]), np.array(ref["dcoord"])].round(9)))
    assert ours == theirs
    np.testing.assert_array_equal(d.leaves, ref["leaves"])


def test_dendrogram_subsample_is_seeded() -> None:
    x, _ = three_gaussians(100)
    a = heatmap_dendrogram(x, max_points=50, seed=7)
    b = heatmap_dendrogram(x, max_points=50, seed=7)
    c = heatmap_dendrogram(x, max_points=50, seed=8)
    np.testing.assert_array_equal(a.index, b.index)
    assert not np.array_equal(a.index, c.index)
    whole = heatmap_dendrogram(x[:40])
    assert len(whole.index) == 40
    # the result says whether it shows a subsample, for the views and the report
    assert a.note.startswith(f"50 of {len(x)} points, drawn at random (seed 7)")
    assert whole.note == "all 40 points"


def test_rcm_order_is_a_permutation_with_a_narrow_band() -> None:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 10, 150))
    x = np.c_[t, np.sin(t)] + rng.normal(0, 0.01, (150, 2))
    perm = rng.permutation(150)
    d = heatmap_dendrogram(x[perm], order="rcm", max_points=200)
    assert d.ordering == "rcm"
    np.testing.assert_array_equal(np.sort(d.order), np.arange(150))
    # a curve read in RCM order: consecutive rows are near each other
    shown = x[perm][d.order]
    steps = np.linalg.norm(np.diff(shown, axis=0), axis=1)
    assert np.median(steps) < 0.5
    np.testing.assert_allclose(
        d.distances, squareform(pdist(x[perm]))[np.ix_(d.order, d.order)], atol=1e-5
    )


def test_dendrogram_rejects_nan_and_unknown_order() -> None:
    with pytest.raises(TopoLensError, match="NaN"):
        heatmap_dendrogram(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with pytest.raises(TopoLensError, match="order"):
        heatmap_dendrogram(np.zeros((4, 2)), order="spectral")
