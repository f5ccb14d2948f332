"""Out-of-sample placement is exact for the analysed points (topology.placement)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_topolens.errors import LayerError
from napari_topolens.topology.analysis import AnalysisConfig, analyze
from napari_topolens.topology.hole import cluster_flow
from napari_topolens.topology.mapper import mapper_graph
from napari_topolens.topology.persistence import compute_persistence
from napari_topolens.topology.placement import Placer, place, placement_index
from napari_topolens.topology.store import load_analysis


def _memberships(graph) -> list[list[int]]:
    rows: list[list[int]] = [
        [] for _ in range(int(graph.members.max()) + 1 if graph.n_nodes else 0)
    ]
    for node in range(graph.n_nodes):
        for row in graph.node_members(node):
            rows[row].append(node)
    return rows


def assert_in_sample_exact(result, placed) -> None:
    """Every analysed point lands in exactly its nodes, and in its own flow clusters."""
    graph = result.mapper
    n = len(result.cloud)
    expected: list[list[int]] = [[] for _ in range(n)]
    for node in range(graph.n_nodes):
        for row in graph.node_members(node):
            expected[row].append(node)
    got = [placed.nodes_of(i).tolist() for i in range(n)]
    wrong = [i for i in range(n) if got[i] != sorted(expected[i])]
    assert not wrong, f"{len(wrong)} points misplaced, e.g. {wrong[:5]}"
    stages = [i for i, name in enumerate(result.flow.stage_names) if name != "labels"]
    np.testing.assert_array_equal(placed.flow, result.flow.memberships[stages])
    assert not placed.outside.any()


class _Result:
    """The parts of a LayerAnalysis the placer reads."""

    def __init__(self, x: np.ndarray, graph, flow) -> None:
        self.name = "layer"
        self.mapper = graph
        self.flow = flow
        self.placement = placement_index(x, graph)

        class _Cloud:
            points = x

            def __len__(self) -> int:
                return len(x)

        self.cloud = _Cloud()


def _cloud_with_noise_and_a_bridge() -> np.ndarray:
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 0.25, (200, 3)) + np.array([3.0, 0.0, 0.0])
    b = rng.normal(0.0, 0.25, (200, 3)) + np.array([-3.0, 0.0, 0.0])
    noise = rng.uniform(-6.0, 6.0, (40, 3))
    # two chains and one point between their ends, within eps (0.2) of both ends but
    # with too few neighbours to be core: a border point of two clusters
    steps = 0.06 * np.arange(10)[:, None] * [1.0, 0.0, 0.0]
    left = np.array([0.0, 5.0, 0.0]) - steps
    right = np.array([0.36, 5.0, 0.0]) + steps
    bridge = np.array([[0.18, 5.0, 0.0]])
    return np.vstack([a, b, noise, left, right, bridge]).astype(np.float32)


@pytest.mark.parametrize("lens", ["l2norm", "pca1", "pca2"])
def test_synthetic_cloud_with_noise_places_back_exactly(lens: str) -> None:
    x = _cloud_with_noise_and_a_bridge()
    graph = mapper_graph(x, lens=lens, n_cubes=5, min_samples=6, eps=0.2)
    flow = cluster_flow(compute_persistence(x, max_dim=0).linkage)
    result = _Result(x, graph, flow)
    placed = Placer.of(result).place(x)
    assert_in_sample_exact(result, placed)
    noise = np.array([len(placed.nodes_of(i)) == 0 for i in range(len(x))])
    assert noise.sum() >= 20  # the uniform noise is DBSCAN noise, and placed as noise


def test_a_border_point_of_two_clusters_joins_the_lower_numbered_one() -> None:
    x = _cloud_with_noise_and_a_bridge()
    # one interval: the chains are two clusters of one cube
    graph = mapper_graph(x, n_cubes=1, min_samples=4, eps=0.2)
    flow = cluster_flow(compute_persistence(x, max_dim=0).linkage)
    result = _Result(x, graph, flow)
    bridge = len(x) - 1
    core = Placer.of(result)
    hits = [n for n in range(graph.n_nodes) if bridge in graph.node_members(n)]
    assert len(hits) == 1
    # the bridge is within eps of a core point of both clumps' clusters
    ends = {bridge - 20, bridge - 10}
    clumps = [n for n in range(graph.n_nodes) if set(graph.node_members(n).tolist()) & ends]
    assert len(clumps) == 2 and hits[0] == min(clumps)
    assert not core.index.member_core[np.flatnonzero(graph.members == bridge)].any()
    assert core.place(x[bridge]).nodes_of(0).tolist() == hits


def test_new_vectors_far_away_or_outside_the_cover_are_in_no_node() -> None:
    x = _cloud_with_noise_and_a_bridge()
    graph = mapper_graph(x, n_cubes=5, min_samples=6, eps=0.2)
    result = _Result(x, graph, cluster_flow(compute_persistence(x, max_dim=0).linkage))
    placer = Placer.of(result)
    far = np.array([[100.0, 0.0, 0.0], [0.0, -5.0, 0.0]])
    placed = placer.place(far)
    assert placed.node.tolist() == [-1, -1]
    assert placed.outside.tolist() == [True, False]  # 100 is beyond the lens range
    assert (placed.flow[:, 0] == -1).all()  # farther than the last merge from every point
    with pytest.raises(LayerError, match="3-dimensional"):
        placer.place(np.zeros((2, 4)))
    with pytest.raises(LayerError, match="NaN"):
        placer.place(np.full((1, 3), np.nan))


@pytest.fixture(scope="module", params=["digits", "shapes"])
def sample_analysis(request, tmp_path_factory: pytest.TempPathFactory):
    from napari_topolens.activations.extract import extract_activations
    from napari_topolens.samples import load_sample

    sample = load_sample(request.param)
    index = np.arange(0, len(sample.images), 6)[:200]
    layers = {"digits": ["pool1", "fc1"], "shapes": ["pool2", "fc1"]}[request.param]
    clouds = extract_activations(sample.model, sample.images[index], layers, sampling="top_norm")
    config = AnalysisConfig(h1_max_points=100, phdim_start=50, phdim_step=40, phdim_max_points=150)
    analysis = analyze(clouds, sample.labels[index], config=config)
    folder = tmp_path_factory.mktemp(request.param) / "analysis"
    analysis.save(folder)
    return analysis, Path(folder)


def test_analysed_points_placed_again_land_in_their_nodes_saved_and_reopened(
    sample_analysis,
) -> None:
    analysis, folder = sample_analysis
    reopened = load_analysis(folder)
    for one in (analysis, reopened):
        for name in one.layers:
            result = one[name]
            assert result.placement is not None
            assert_in_sample_exact(result, place(one, name, result.cloud.points))
    # an analysis saved before placement was recorded: the index is rebuilt, same answer
    name = reopened.layers[0]
    kept = reopened[name].placement
    reopened[name].placement = None
    rebuilt = Placer.of(reopened[name])
    assert "rebuilt" in rebuilt.notes[0]
    np.testing.assert_array_equal(rebuilt.index.member_core, kept.member_core)
    np.testing.assert_array_equal(rebuilt.index.cube_lower, kept.cube_lower)
