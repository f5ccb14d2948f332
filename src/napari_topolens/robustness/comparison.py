"""Compare two analyses of the same images and layers: how far the topology drifted.

A :class:`Comparison` holds, per layer, the bottleneck and sliced Wasserstein
distances between the two analyses' H0 and H1 diagrams, the change of each quality
number, and which images *moved*. Cluster numbers and Mapper node names of two
separately computed analyses mean nothing to each other, so groups are first
matched: the variant's best-stage clusters (and, separately, its Mapper nodes) are
paired one-to-one with the base's by the Hungarian method on the Jaccard overlap
of their image sets. An image moved when its set of matched groups changed; its
score is the Jaccard distance between its base and its (matched) variant group
sets, averaged over the Mapper nodes and the clusters (0: same company, 1: none
in common).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import LayerError, TopoLensError
from ..topology.results import Comparison, LayerDrift

__all__ = ["QUALITY_NUMBERS", "Comparison", "LayerDrift", "compare", "receptive_field_heat"]

# Above this many base x variant group pairs, groups are matched greedily (best
# Jaccard first) instead of by the Hungarian method, whose time is cubic and whose
# dense cost matrix would take 8 bytes per pair.
_HUNGARIAN_MAX_CELLS = 1_000_000

#: The per-layer numbers whose change (variant - base) a comparison records.
QUALITY_NUMBERS = (
    "purity",
    "homogeneity",
    "ari",
    "nmi",
    "silhouette",
    "ph_dimension",
    "total_persistence_h0",
    "total_persistence_h1",
    "mapper_nodes",
    "best_clusters",
)


def receptive_field_heat(cloud: Any, image: int) -> np.ndarray:
    """How often each pixel of ``image`` lies in the receptive field of one of its points.

    ``(H, W)`` float32 scaled to 0..1 (all zero when the image has no point in the
    cloud); the "which pixels" view of a moved image, for a layer's
    :class:`~napari_topolens.activations.pointcloud.PointCloud` of the base or the
    variant. Pooled and vector points cover the whole image.
    """
    height, width = (int(v) for v in cloud.image_shape)
    heat = np.zeros((height, width), dtype=np.float32)
    for y0, x0, y1, x1 in cloud.receptive_field[cloud.image_index == int(image)].tolist():
        heat[y0:y1, x0:x1] += 1.0
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat


# ----------------------------------------------------------------------------- engine


def compare(
    base: Any, variant: Any, *, base_name: str = "base", variant_name: str = "variant"
) -> Comparison:
    """How ``variant``'s topology differs from ``base``'s, per layer and per image.

    Parameters
    ----------
    base, variant : Analysis
        Of the same images (same count, same order) and with common layers, e.g.
        an analysis of images and one of their perturbed copies, or one model and
        its compressed copy.

    Returns
    -------
    Comparison
        Layers both have, in the base's order. Distances use the base config's
        ``sw_n_directions``; diagrams of dimensions both have.
    """
    from ..topology.analysis import Analysis
    from ..topology.distances import diagram_distance

    for argument, value in (("base", base), ("variant", variant)):
        if not isinstance(value, Analysis):
            raise TopoLensError(
                f"compare: {argument} must be an Analysis (from analyze or load_analysis), "
                f"got {type(value).__name__}"
            )
    n_base = _n_images(base, variant)
    layers = [name for name in base.layers if name in variant]
    if not layers:
        raise LayerError(
            f"the analyses share no layer (base: {', '.join(base.layers)}; variant: "
            f"{', '.join(variant.layers)})"
        )
    n_directions = int(base.config.sw_n_directions)

    def distance(a: np.ndarray, b: np.ndarray, kind: str) -> float:
        if np.array_equal(a, b):  # exactly 0 (gudhi's bottleneck can return a denormal)
            return 0.0
        return diagram_distance(a, b, kind, n_directions=n_directions)

    drifts = []
    for name in layers:
        a, b = base[name], variant[name]
        dims = min(len(a.persistence.diagrams), len(b.persistence.diagrams))
        pairs = [(a.persistence.diagrams[d], b.persistence.diagrams[d]) for d in range(dims)]
        bottleneck = np.array([distance(x, y, "bottleneck") for x, y in pairs])
        sliced = np.array([distance(x, y, "sliced_wasserstein") for x, y in pairs])
        empty = np.zeros((0, 2))
        bottleneck_scale = np.array([distance(x, empty, "bottleneck") for x, _ in pairs])
        sliced_scale = np.array([distance(x, empty, "sliced_wasserstein") for x, _ in pairs])
        mapper_distance, mapper_moved = _moved(_mapper_groups(a, n_base), _mapper_groups(b, n_base))
        cluster_distance, cluster_moved = _moved(
            _cluster_groups(a, n_base), _cluster_groups(b, n_base)
        )
        compared = _present(a, n_base) & _present(b, n_base)
        score = np.where(compared, 0.5 * (mapper_distance + cluster_distance), np.nan)
        drifts.append(
            LayerDrift(
                layer=name,
                bottleneck=bottleneck,
                sliced_wasserstein=sliced,
                quality_base=_quality_numbers(a),
                quality_variant=_quality_numbers(b),
                image_score=score,
                mapper_moved=mapper_moved & compared,
                cluster_moved=cluster_moved & compared,
                bottleneck_scale=bottleneck_scale,
                sliced_wasserstein_scale=sliced_scale,
            )
        )
    accuracy_base = _accuracy(base)
    accuracy_variant = _accuracy(variant)
    changed = math.nan
    a, b = _predicted(base), _predicted(variant)
    if a is not None and b is not None:
        n = min(len(a), len(b), n_base)
        run = (a[:n] >= 0) & (b[:n] >= 0)  # images both models were run on
        if run.any():
            changed = float(np.mean(a[:n][run] != b[:n][run]))
    return Comparison(
        base_name=str(base_name),
        variant_name=str(variant_name),
        drifts=drifts,
        n_images=n_base,
        accuracy_base=accuracy_base,
        accuracy_variant=accuracy_variant,
        prediction_changed=changed,
        notes={
            "moved": (
                "groups (best-stage clusters; Mapper nodes) matched one-to-one by the "
                "Hungarian method on the Jaccard overlap of their image sets (greedily, best "
                f"overlap first, above {_HUNGARIAN_MAX_CELLS:,} group pairs); an image moved "
                "when its matched group set changed"
            ),
            "distances": f"finite bars; sliced Wasserstein with {n_directions} directions",
            **_config_note(base, variant),
        },
    )


def _config_note(base: Any, variant: Any) -> dict[str, str]:
    """Say so when the two analyses were made with different parameters."""
    a, b = base.config.to_dict(), variant.config.to_dict()
    differ = sorted(k for k in a if a.get(k) != b.get(k))
    if not differ:
        return {}
    shown = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in differ)
    return {
        "config": f"the analyses differ in {shown}; part of the drift comes from the parameters"
    }


def _declared_images(analysis: Any) -> int | None:
    """How many images the analysis says it is of (its images, else its labels)."""
    if analysis.images is not None:
        return len(analysis.images)
    if analysis.labels is not None:
        return len(analysis.labels)
    return None


def _n_images(base: Any, variant: Any) -> int:
    declared = [n for n in (_declared_images(base), _declared_images(variant)) if n is not None]
    if len(declared) == 2 and declared[0] != declared[1]:
        raise TopoLensError(
            f"the analyses are of {declared[0]} and {declared[1]} images; compare analyses of "
            "the same images (a variant is index-aligned with its base)"
        )
    reached = max(
        int(r.cloud.image_index.max()) + 1 if len(r.cloud) else 0
        for analysis in (base, variant)
        for r in analysis.layer_results
    )
    if declared and reached > declared[0]:
        raise TopoLensError(
            f"the clouds refer to image {reached - 1}, but the analyses are of {declared[0]} images"
        )
    return declared[0] if declared else reached


def _present(result: Any, n_images: int) -> np.ndarray:
    present = np.zeros(n_images, dtype=bool)
    index = result.cloud.image_index
    present[index[index < n_images]] = True
    return present


def _groups_matrix(
    image_of_member: np.ndarray, group_of_member: np.ndarray, n_images: int, n_groups: int
):
    from scipy.sparse import csr_matrix

    keep = (image_of_member < n_images) & (group_of_member >= 0)
    data = np.ones(int(keep.sum()), dtype=np.float64)
    matrix = csr_matrix(
        (data, (image_of_member[keep], group_of_member[keep])), shape=(n_images, max(n_groups, 0))
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # image in group: yes or no
    return matrix


def _mapper_groups(result: Any, n_images: int):
    mapper = result.mapper
    sizes = np.diff(mapper.member_offsets)
    node_of_member = np.repeat(np.arange(len(sizes)), sizes)
    images = result.cloud.image_index[mapper.members]
    return _groups_matrix(images, node_of_member, n_images, len(sizes))


def _cluster_groups(result: Any, n_images: int):
    clusters = np.asarray(result.best_clusters, dtype=np.int64)
    n_groups = int(clusters.max()) + 1 if len(clusters) and clusters.max() >= 0 else 0
    return _groups_matrix(result.cloud.image_index, clusters, n_images, n_groups)


def _moved(base_groups: Any, variant_groups: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per image: Jaccard distance of its base and matched variant group sets, and changed."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import csr_matrix, hstack

    n_images, n_base = base_groups.shape
    n_variant = variant_groups.shape[1]
    mapping = np.arange(n_base, n_base + n_variant)  # unmatched: a group of its own
    if n_base and n_variant:
        overlap = (base_groups.T @ variant_groups).tocoo()  # sparse: only groups that share images
        size_b = np.asarray(base_groups.sum(axis=0)).ravel()
        size_v = np.asarray(variant_groups.sum(axis=0)).ravel()
        rows, cols, common = overlap.row, overlap.col, overlap.data
        jaccard = common / (size_b[rows] + size_v[cols] - common)
        if n_base * n_variant <= _HUNGARIAN_MAX_CELLS:
            dense = np.zeros((n_base, n_variant))
            dense[rows, cols] = jaccard
            pick_b, pick_v = linear_sum_assignment(dense, maximize=True)
            paired = dense[pick_b, pick_v] > 0
            mapping[pick_v[paired]] = pick_b[paired]
        else:  # too many groups for the cubic Hungarian method: greedy, best overlap first
            free_b = np.ones(n_base, dtype=bool)
            free_v = np.ones(n_variant, dtype=bool)
            for k in np.lexsort((cols, rows, -jaccard)).tolist():
                b, v = int(rows[k]), int(cols[k])
                if free_b[b] and free_v[v]:
                    mapping[v] = b
                    free_b[b] = free_v[v] = False
    total = n_base + n_variant
    permute = csr_matrix(
        (np.ones(n_variant), (np.arange(n_variant), mapping)), shape=(n_variant, total)
    )
    mapped = (variant_groups @ permute).tocsr()
    padded = hstack([base_groups, csr_matrix((n_images, n_variant))]).tocsr()
    common = np.asarray(padded.multiply(mapped).sum(axis=1)).ravel()
    size_b = np.asarray(padded.sum(axis=1)).ravel()
    size_v = np.asarray(mapped.sum(axis=1)).ravel()
    union = size_b + size_v - common
    similarity = np.divide(common, union, out=np.ones_like(common), where=union > 0)
    distance = 1.0 - similarity
    return distance, distance > 1e-12


def _quality_numbers(result: Any) -> dict[str, float]:
    quality = result.quality
    total = np.asarray(result.persistence.total_persistence, dtype=np.float64)
    best = np.asarray(result.best_clusters)
    return {
        "purity": float(quality.purity),
        "homogeneity": float(quality.homogeneity),
        "ari": float(quality.ari),
        "nmi": float(quality.nmi),
        "silhouette": float(quality.silhouette),
        "ph_dimension": float(result.phdim.dimension),
        "total_persistence_h0": float(total[0]) if len(total) > 0 else math.nan,
        "total_persistence_h1": float(total[1]) if len(total) > 1 else math.nan,
        "mapper_nodes": float(len(result.mapper.node_ids)),
        "best_clusters": float(len(np.unique(best[best >= 0]))),
    }


def _accuracy(analysis: Any) -> float:
    from ..label_sources import labels_match_predictions

    predicted = _predicted(analysis)
    if predicted is None or analysis.labels is None:
        return math.nan
    if not labels_match_predictions(getattr(analysis, "provenance", None)):
        return math.nan  # text labels numbered by name: not the model's class indices
    labels = np.asarray(analysis.labels)
    n = min(len(labels), len(predicted))
    known = (labels[:n] >= 0) & (predicted[:n] >= 0)
    if not known.any():
        return math.nan
    return float(np.mean(predicted[:n][known] == labels[:n][known]))


def _predicted(analysis: Any) -> np.ndarray | None:
    """The model's class per image, -1 where it was not run (None: no predictions kept).

    ``Analysis.predictions`` when recorded, else the argmax of ``probabilities``
    (an analysis of some images of a stack holds NaN rows elsewhere).
    """
    if getattr(analysis, "predictions", None) is not None:
        return np.asarray(analysis.predictions, dtype=np.int64)
    if analysis.probabilities is None:
        return None
    probabilities = np.asarray(analysis.probabilities)
    run = np.isfinite(probabilities).all(axis=1)
    predicted = np.full(len(probabilities), -1, dtype=np.int64)
    predicted[run] = probabilities[run].argmax(axis=1)
    return predicted
