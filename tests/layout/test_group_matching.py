"""One pairing of two analyses' groups by image Jaccard, used by the drift layout and compare."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from napari_topolens.layout.drift import variant_layout
from napari_topolens.layout.matching import images_by_groups, images_by_nodes, pair_groups
from napari_topolens.robustness import comparison


def _groups(image_sets: list[list[int]], n_images: int) -> csr_matrix:
    images = [i for members in image_sets for i in members]
    groups = [g for g, members in enumerate(image_sets) for _ in members]
    return images_by_groups(np.array(images), np.array(groups), n_images, len(image_sets))


def test_images_by_nodes_marks_each_image_once_per_node():
    # node 0 holds points 0, 1 (both of image 2), node 1 points 1, 2, node 2 nothing
    matrix = images_by_nodes(
        members=np.array([0, 1, 1, 2]),
        member_offsets=np.array([0, 2, 4, 4]),
        image_of_point=np.array([2, 2, 0]),
        n_images=3,
    )
    np.testing.assert_array_equal(matrix.toarray(), [[0, 1, 0], [0, 0, 0], [1, 1, 0]])


def test_images_by_groups_leaves_out_noise_and_images_out_of_range():
    matrix = images_by_groups(np.array([0, 1, 5, -1, 2]), np.array([0, -1, 0, 1, 1]), 3, 2)
    np.testing.assert_array_equal(matrix.toarray(), [[1, 0], [0, 0], [0, 1]])


@pytest.mark.parametrize("max_cells", [1_000_000, 0])  # Hungarian, then greedy
def test_pairing_follows_the_images_not_the_numbers(max_cells):
    base = _groups([[0, 1, 2], [3, 4], [5]], 6)
    variant = _groups([[5], [3, 4], [0, 1]], 6)  # the same groups renumbered, one shrunk
    np.testing.assert_array_equal(pair_groups(base, variant, max_cells=max_cells), [2, 1, 0])


@pytest.mark.parametrize("max_cells", [1_000_000, 0])
def test_pairing_scores_image_sets_not_weights_and_never_divides_by_zero(max_cells):
    # A stored entry is "holds", whatever its value (3: three points of the image), and
    # a stored zero is "does not hold". Only pairs sharing an image are scored, so every
    # union divided by is at least 1: exact, no 0/0, no epsilon floor hiding one.
    base = csr_matrix(
        (np.array([1.0, 1.0, 0.0, 1.0]), (np.array([0, 1, 3, 2]), np.array([0, 0, 1, 1]))),
        shape=(4, 3),  # B0 = {0, 1}, B1 = {2} (and a stored zero at image 3), B2 = {}
    )
    variant = csr_matrix(
        (np.array([3.0, 1.0, 0.0]), (np.array([0, 2, 3]), np.array([0, 0, 1]))),
        shape=(4, 2),  # V0 = {0, 2} (image 0 three times), V1 = {} (a stored zero)
    )
    kept = base.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 would warn
        paired = pair_groups(base, variant, max_cells=max_cells)
    # Jaccard(B0, V0) = 1/3 < Jaccard(B1, V0) = 1/2 (with the weights: 3/3 > 1/4);
    # V1 holds no image and shares none with the empty B2: unpaired
    np.testing.assert_array_equal(paired, [1, -1])
    # the caller's matrices are kept
    np.testing.assert_array_equal(base.data, kept.data)
    np.testing.assert_array_equal(base.indices, kept.indices)


def test_an_image_in_no_group_of_either_analysis_did_not_move():
    # image 2 is noise in both analyses: its (empty) company did not change, distance 0
    base = _groups([[0], [1]], 3)
    variant = _groups([[1], [0]], 3)
    distance, changed = comparison._moved(base, variant)
    np.testing.assert_array_equal(distance, [0.0, 0.0, 0.0])
    assert not changed.any()


def _result(image_sets: list[list[int]]) -> SimpleNamespace:
    """A layer result with one point per (node, image) membership."""
    members, offsets, images = [], [0], []
    for node_images in image_sets:
        for image in node_images:
            members.append(len(images))
            images.append(image)
        offsets.append(len(members))
    mapper = SimpleNamespace(
        members=np.array(members, dtype=np.int64),
        member_offsets=np.array(offsets, dtype=np.int64),
        n_nodes=len(image_sets),
    )
    return SimpleNamespace(mapper=mapper, cloud=SimpleNamespace(image_index=np.array(images)))


def test_the_drift_layout_and_compare_pair_alike():
    base = _result([[0, 1, 2], [3, 4], [5, 6]])
    variant = _result([[5, 6], [0, 1], [3, 4, 2], [7]])
    layout = np.array([[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]])
    placed, paired = variant_layout(base, layout, variant)
    expected = pair_groups(
        comparison._mapper_groups(base, 8), comparison._mapper_groups(variant, 8)
    )
    np.testing.assert_array_equal(paired, expected)
    np.testing.assert_array_equal(paired, [2, 0, 1, -1])
    np.testing.assert_allclose(placed[:3], layout[[2, 0, 1]])
