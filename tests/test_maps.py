"""Topology maps of whole images (napari_topolens.maps) on the shapes sample."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_topolens.errors import TopoLensError
from napari_topolens.maps import map_drift, pixel_index, topology_map
from napari_topolens.topology.analysis import AnalysisConfig, analyze
from napari_topolens.topology.placement import place

CONFIG = AnalysisConfig(h1_max_points=100, phdim_start=50, phdim_step=40, phdim_max_points=150)


@pytest.fixture(scope="module")
def shapes():
    from napari_topolens.samples import load_sample

    return load_sample("shapes")


@pytest.fixture(scope="module")
def top_norm(shapes):
    """The default sampling: one position per image (the largest norm)."""
    from napari_topolens.activations.extract import extract_activations

    index = np.arange(0, len(shapes.images), 4)
    clouds = extract_activations(
        shapes.model, shapes.images[index], ["pool2", "fc1"], sampling="top_norm"
    )
    return analyze(clouds, shapes.labels[index], config=CONFIG), index


@pytest.fixture(scope="module")
def all_positions(shapes):
    from napari_topolens.activations.extract import extract_activations

    index = np.arange(0, len(shapes.images), 8)
    clouds = extract_activations(
        shapes.model, shapes.images[index], ["pool2"], sampling="all_positions", max_points=3000
    )
    return analyze(clouds, shapes.labels[index], config=CONFIG)


def _disk_and_ring() -> tuple[np.ndarray, np.ndarray]:
    """A disk and a ring of the same centre and outer radius; the ring's hole."""
    yy, xx = np.mgrid[0:48, 0:48]
    r = np.hypot(yy - 23.5, xx - 23.5)
    disk = np.where(r <= 14, 0.85, 0.1)
    ring = np.where((r <= 14) & (r >= 9), 0.85, 0.1)
    return np.stack([disk, ring]).astype(np.float32), r < 9


def _object(images: np.ndarray) -> np.ndarray:
    low = images.min(axis=(1, 2), keepdims=True)
    high = images.max(axis=(1, 2), keepdims=True)
    return images > (low + high) / 2


def test_the_map_places_the_analysed_positions_in_their_nodes(shapes, top_norm) -> None:
    analysis, index = top_norm
    first = 30
    maps = topology_map(analysis, shapes.images[index[:first]], shapes.model)
    for name in analysis.layers:
        result = analysis[name]
        rows = np.flatnonzero(result.cloud.image_index < first)
        placed = place(analysis, name, result.cloud.points[rows])
        grid = maps[name].node
        if result.cloud.position is None:
            got = grid[result.cloud.image_index[rows], 0, 0]
        else:
            pos = result.cloud.position[rows]
            got = grid[result.cloud.image_index[rows], pos[:, 0], pos[:, 1]]
        np.testing.assert_array_equal(got, placed.node)
        assert (placed.node >= 0).any()


def test_a_vector_layer_gives_one_answer_per_image(shapes, top_norm) -> None:
    analysis, index = top_norm
    one = topology_map(analysis, shapes.images[index[:3]], shapes.model, layer="fc1")["fc1"]
    assert one.kind == "vector" and one.grid_shape == (1, 1)
    assert "one answer per image" in one.note
    for i in range(3):
        pixels = one.pixel_map(i)
        assert pixels.shape == (48, 48) and (pixels == one.node[i, 0, 0]).all()


def test_object_and_background_of_one_image_fall_in_different_nodes(
    shapes, top_norm, all_positions
) -> None:
    from scipy.ndimage import distance_transform_edt

    images = shapes.images[shapes.test_index[:6]]
    objects = _object(images)
    # background: pixels well away from the object (fields that hold none of it)
    backgrounds = np.stack([distance_transform_edt(~inside) > 6 for inside in objects])
    # an analysis of positions anywhere covers the background (one big node) and leaves
    # the sparser object positions mostly as DBSCAN noise: the background's node is
    # not the object's
    pool2 = topology_map(all_positions, images, shapes.model, layer="pool2")["pool2"]
    for i, (inside, far) in enumerate(zip(objects, backgrounds)):
        pixels = pool2.pixel_map(i)
        values, counts = np.unique(pixels[far], return_counts=True)
        main = values[np.argmax(np.where(values >= 0, counts, -1))]
        assert main >= 0 and (pixels[far] == main).mean() > 0.5
        assert (pixels[inside] == main).mean() < 0.1
    # the default analysis (top_norm: the largest-norm position per image) covers the
    # object's lens range: object positions fall in nodes, the background mostly
    # outside the cover
    pool2 = topology_map(top_norm[0], images, shapes.model, layer="pool2")["pool2"]
    in_node = np.stack([pool2.pixel_map(i) >= 0 for i in range(len(images))])
    outside = np.stack([pool2.outside[i].reshape(-1)[pool2.pixels] for i in range(len(images))])
    assert in_node[objects].mean() > 5 * in_node[backgrounds].mean()
    assert outside[backgrounds].mean() > 0.8 > 0.2 > outside[objects].mean()


def test_a_disk_and_a_ring_differ_in_the_hole(shapes, all_positions) -> None:
    images, hole = _disk_and_ring()
    pool2 = topology_map(all_positions, images, shapes.model, layer="pool2")["pool2"]
    assert (pool2.pixel_map(0)[hole] != pool2.pixel_map(1)[hole]).mean() > 0.5
    outside_hole = ~hole & (pool2.pixel_map(0) >= 0)
    # elsewhere (the background) the two maps mostly agree
    assert (pool2.pixel_map(0)[outside_hole] == pool2.pixel_map(1)[outside_hole]).mean() > 0.5


def test_stronger_noise_moves_more_positions(shapes, top_norm) -> None:
    from napari_topolens.robustness.perturbations import perturb

    analysis, _ = top_norm
    images = shapes.images[shapes.test_index[:60]]
    base = topology_map(analysis, images, shapes.model, layer="pool2")["pool2"]
    share = {}
    for sigma in (0.05, 0.2):
        noisy = perturb(images, "gaussian", sigma, seed=1)
        variant = topology_map(analysis, noisy, shapes.model, layer="pool2")["pool2"]
        share[sigma] = map_drift(base, variant).mean_share
    assert share[0.2] > share[0.05] > 0


def test_fgsm_moves_the_object_more_than_the_background(shapes, top_norm) -> None:
    from napari_topolens.robustness.perturbations import perturb

    analysis, _ = top_norm
    test = shapes.test_index[:60]
    images = shapes.images[test]
    attacked = perturb(images, "fgsm", 0.03, model=shapes.model, labels=shapes.labels[test])
    base = topology_map(analysis, images, shapes.model, layer="pool2")["pool2"]
    variant = topology_map(analysis, attacked, shapes.model, layer="pool2")["pool2"]
    drift = map_drift(base, variant)
    changed = np.stack([drift.changed_pixels(i) for i in range(len(images))])
    inside = _object(images)
    assert changed[inside].mean() > 2 * changed[~inside].mean()
    assert drift.share.shape == (60,) and np.isclose(drift.mean_share, drift.share.mean())
    with pytest.raises(TopoLensError, match="the maps differ"):
        map_drift(base, topology_map(analysis, images[:2], shapes.model, layer="pool2")["pool2"])


@pytest.mark.parametrize("grid", [(3, 4), (5, 1)])
def test_each_pixel_takes_the_position_centred_nearest(grid: tuple[int, int]) -> None:
    height, width = 13, 17
    rows = np.array([1, 5, 9, 12, 2])[: grid[0]]
    cols = np.array([0, 4, 8, 16])[: grid[1]]
    centres = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    tokens = centres[::-1].copy()  # not a product grid: the general route
    for points, shape in ((centres, grid), (tokens, (len(tokens), 1))):
        got = pixel_index(points, shape, height, width)
        yy, xx = np.mgrid[0:height, 0:width]
        d = (yy[..., None] - points[:, 0]) ** 2 + (xx[..., None] - points[:, 1]) ** 2
        np.testing.assert_array_equal(got, d.argmin(axis=-1))  # argmin: lowest on ties
