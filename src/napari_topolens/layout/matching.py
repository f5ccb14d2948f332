"""Which images each group holds, and the one-to-one pairing of two analyses' groups.

Groups are the Mapper nodes (or the clusters) of one layer's point cloud. Two
separately computed analyses of the same images number theirs independently, so a
group of one means nothing to the other until the two are paired by the images
they share. The drift view (:func:`~napari_topolens.layout.drift.variant_layout`)
draws a variant's Mapper node where the base node it pairs with is drawn, and the
robustness comparison (``robustness.comparison``) says which images moved between
paired groups; both pair here, so they pair alike. Plain numpy and scipy.sparse
(the lowest layer, so that both can use it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

__all__ = ["HUNGARIAN_MAX_CELLS", "images_by_groups", "images_by_nodes", "pair_groups"]

#: Above this many base x variant group pairs, groups are paired greedily (best Jaccard
#: first) instead of by the Hungarian method, whose time is cubic and whose dense score
#: matrix takes 8 bytes per pair.
HUNGARIAN_MAX_CELLS = 1_000_000


def images_by_groups(
    image_of_member: np.ndarray, group_of_member: np.ndarray, n_images: int, n_groups: int
) -> csr_matrix:
    """``(n_images, n_groups)`` sparse 0/1 matrix: image ``i`` has a member in group ``j``.

    Members of an image outside ``0..n_images-1`` and members of a negative group
    (noise) are left out.
    """
    from scipy.sparse import csr_matrix

    images = np.asarray(image_of_member, dtype=np.int64)
    groups = np.asarray(group_of_member, dtype=np.int64)
    keep = (images >= 0) & (images < n_images) & (groups >= 0)
    matrix = csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float64), (images[keep], groups[keep])),
        shape=(n_images, max(int(n_groups), 0)),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # image in group: yes or no
    return matrix


def images_by_nodes(
    members: np.ndarray, member_offsets: np.ndarray, image_of_point: np.ndarray, n_images: int
) -> csr_matrix:
    """``(n_images, n_nodes)`` sparse 0/1 matrix: which images each Mapper node holds.

    ``members``, ``member_offsets``: the graph's point lists (``MapperGraph``, node
    ``n`` holds points ``members[member_offsets[n]:member_offsets[n + 1]]``);
    ``image_of_point``: the image of each point (``PointCloud.image_index``).
    """
    offsets = np.asarray(member_offsets, dtype=np.int64)
    sizes = np.diff(offsets)
    node_of_member = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    images = np.asarray(image_of_point, dtype=np.int64)[np.asarray(members, dtype=np.int64)]
    return images_by_groups(images, node_of_member, n_images, len(sizes))


def pair_groups(
    base_groups: csr_matrix, variant_groups: csr_matrix, *, max_cells: int = HUNGARIAN_MAX_CELLS
) -> np.ndarray:
    """The base group each variant group is paired with (-1: none), one-to-one.

    Pairs maximise the summed Jaccard overlap ``|A ∩ B| / |A ∪ B|`` of the groups'
    image sets (the Hungarian method; above ``max_cells`` base x variant pairs,
    greedily: best overlap first, ties by base then variant group). Only groups that
    share an image are paired.

    Parameters
    ----------
    base_groups, variant_groups : sparse matrix (n_images, n_base), (n_images, n_variant)
        Which images each group holds (:func:`images_by_groups`); any non-zero
        entry counts as "holds", a stored zero as "does not".

    Returns
    -------
    ndarray (n_variant,) int64
    """
    base = _zero_one(base_groups)
    variant = _zero_one(variant_groups)
    n_base, n_variant = base.shape[1], variant.shape[1]
    paired = np.full(n_variant, -1, dtype=np.int64)
    if not (n_base and n_variant):
        return paired
    overlap = (base.T @ variant).tocoo()  # sparse: only groups that share images
    size_b = np.asarray(base.sum(axis=0)).ravel()
    size_v = np.asarray(variant.sum(axis=0)).ravel()
    shared = overlap.data > 0
    rows, cols, common = overlap.row[shared], overlap.col[shared], overlap.data[shared]
    # a scored pair shares an image, so its union is at least 1: the division is exact
    jaccard = common / (size_b[rows] + size_v[cols] - common)
    if n_base * n_variant <= max_cells:
        from scipy.optimize import linear_sum_assignment

        dense = np.zeros((n_base, n_variant))
        dense[rows, cols] = jaccard
        pick_b, pick_v = linear_sum_assignment(dense, maximize=True)
        good = dense[pick_b, pick_v] > 0
        paired[pick_v[good]] = pick_b[good]
        return paired
    # too many groups for the cubic Hungarian method: greedy, best overlap first
    free_b = np.ones(n_base, dtype=bool)
    for k in np.lexsort((cols, rows, -jaccard)).tolist():
        b, v = int(rows[k]), int(cols[k])
        if free_b[b] and paired[v] < 0:
            paired[v] = b
            free_b[b] = False
    return paired


def _zero_one(groups: csr_matrix) -> csr_matrix:
    """``groups`` as a 0/1 float64 CSR matrix without stored zeros."""
    matrix = groups.tocsr().astype(np.float64)  # a copy: the caller's matrix is kept
    matrix.eliminate_zeros()
    matrix.data[:] = 1.0
    return matrix
