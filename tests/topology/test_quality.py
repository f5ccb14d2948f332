"""Cluster quality numbers on examples small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from napari_topolens.errors import TopoLensError
from napari_topolens.topology.quality import cluster_quality, purity_score


def test_perfect_clustering_scores_one_whatever_the_cluster_ids() -> None:
    truth = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([7, 7, 7, 3, 3, 3, 5, 5, 5])
    points = np.array(
        [[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10], [-10, 10], [-10, 11], [-11, 10]],
        float,
    )
    q = cluster_quality(truth, pred, points)
    assert q.purity == pytest.approx(1.0)
    assert q.homogeneity == pytest.approx(1.0)
    assert q.ari == pytest.approx(1.0)
    assert q.nmi == pytest.approx(1.0)
    assert q.silhouette > 0.8


def test_known_purity_and_homogeneity() -> None:
    # cluster A: classes 0,0,0,1 (max 3); cluster B: 1,1,2,2 (max 2) -> purity 5/8
    truth = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert purity_score(truth, pred) == pytest.approx(5 / 8)
    q = cluster_quality(truth, pred)
    assert q.purity == pytest.approx(5 / 8)
    # homogeneity by hand: 1 - H(C|K) / H(C)
    h_c = -sum(p * np.log(p) for p in (3 / 8, 3 / 8, 2 / 8))
    h_a = -(3 / 4 * np.log(3 / 4) + 1 / 4 * np.log(1 / 4))
    h_b = -(2 * 0.5 * np.log(0.5))
    assert q.homogeneity == pytest.approx(1 - (0.5 * h_a + 0.5 * h_b) / h_c)
    assert np.isnan(q.silhouette)  # no points given


def test_one_cluster_for_everything() -> None:
    truth = np.array([0, 0, 1, 1, 1, 2])
    q = cluster_quality(truth, np.zeros(6, int), np.arange(12.0).reshape(6, 2))
    assert q.purity == pytest.approx(0.5)
    assert q.homogeneity == pytest.approx(0.0)
    assert q.ari == pytest.approx(0.0)
    assert np.isnan(q.silhouette)  # fewer than two clusters


def test_noise_is_one_cluster_and_unknown_truth_is_left_out() -> None:
    truth = np.array([0, 0, 1, 1, -1, -1])
    # two noise points of different classes form one impure "noise" cluster
    pred = np.array([0, -1, 1, -1, 0, 1])
    q = cluster_quality(truth, pred)
    # known points: (0,0) (0,-1) (1,1) (1,-1) -> clusters 0:{0}, 1:{1}, noise:{0,1}
    assert q.purity == pytest.approx(3 / 4)
    # relabelling the unknown points changes nothing
    q2 = cluster_quality(truth, np.array([0, -1, 1, -1, 5, 5]))
    assert q2.purity == q.purity and q2.ari == q.ari


def test_silhouette_leaves_noise_out_and_subsamples_deterministically() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.1, (50, 3))
    b = rng.normal(5, 0.1, (50, 3))
    outliers = rng.normal(2.5, 3.0, (20, 3))
    x = np.vstack([a, b, outliers])
    pred = np.r_[np.zeros(50, int), np.ones(50, int), -np.ones(20, int)]
    truth = np.r_[np.zeros(50, int), np.ones(50, int), np.zeros(20, int)]
    full = cluster_quality(truth, pred, x).silhouette
    assert full > 0.95  # outliers as noise do not pull it down
    s1 = cluster_quality(truth, pred, x, silhouette_max_points=30, seed=3).silhouette
    s2 = cluster_quality(truth, pred, x, silhouette_max_points=30, seed=3).silhouette
    assert s1 == s2 and s1 > 0.9


def test_cosine_silhouette_differs_from_euclidean() -> None:
    # two rays: far apart in angle, spread in length
    x = np.array([[1, 0], [5, 0], [9, 0], [0, 1], [0, 5], [0, 9]], float)
    pred = np.array([0, 0, 0, 1, 1, 1])
    q_cos = cluster_quality(pred, pred, x, metric="cosine")
    q_euc = cluster_quality(pred, pred, x, metric="euclidean")
    assert q_cos.silhouette == pytest.approx(1.0)
    assert q_euc.silhouette < 0.5


def test_bad_input() -> None:
    with pytest.raises(TopoLensError, match="same length"):
        cluster_quality([0, 1], [0, 1, 2])
    with pytest.raises(TopoLensError, match="NaN"):
        cluster_quality([0, 1, 1], [0, 1, 1], np.array([[0.0], [np.nan], [1.0]]))
