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
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LayerError, TopoLensError
from ..label_sources import labels_match_predictions
from ..layout.matching import HUNGARIAN_MAX_CELLS, images_by_groups, images_by_nodes, pair_groups
from ..topology.distances import diagram_distance
from ..topology.results import Analysis, Comparison, LayerAnalysis, LayerDrift

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

__all__ = [
    "QUALITY_NUMBERS",
    "Comparison",
    "LayerDrift",
    "compare",
    "model_accuracy",
    "predicted_classes",
    "receptive_field_heat",
]

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
    base: Analysis, variant: Analysis, *, base_name: str = "base", variant_name: str = "variant"
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
    _check_analyses(base, variant)
    n_base = _n_images(base, variant)
    layers = _common_layers(base, variant)
    n_directions = int(base.config.sw_n_directions)
    drifts = [
        _layer_drift(name, base[name], variant[name], n_base, n_directions) for name in layers
    ]
    return Comparison(
        base_name=str(base_name),
        variant_name=str(variant_name),
        drifts=drifts,
        n_images=n_base,
        accuracy_base=model_accuracy(base),
        accuracy_variant=model_accuracy(variant),
        prediction_changed=_prediction_changed(base, variant, n_base),
        notes={
            "moved": (
                "groups (best-stage clusters; Mapper nodes) matched one-to-one by the "
                "Hungarian method on the Jaccard overlap of their image sets (greedily, best "
                f"overlap first, above {HUNGARIAN_MAX_CELLS:,} group pairs); an image moved "
                "when its matched group set changed"
            ),
            "distances": f"finite bars; sliced Wasserstein with {n_directions} directions",
            **_config_note(base, variant),
        },
    )


def _check_analyses(base: object, variant: object) -> None:
    for argument, value in (("base", base), ("variant", variant)):
        if not isinstance(value, Analysis):
            raise TopoLensError(
                f"compare: {argument} must be an Analysis (from analyze or load_analysis), "
                f"got {type(value).__name__}"
            )


def _common_layers(base: Analysis, variant: Analysis) -> list[str]:
    """The layers both analyses have, in the base's order."""
    layers = [name for name in base.layers if name in variant]
    if not layers:
        raise LayerError(
            f"the analyses share no layer (base: {', '.join(base.layers)}; variant: "
            f"{', '.join(variant.layers)})"
        )
    return layers


def _diagram_distance(a: np.ndarray, b: np.ndarray, kind: str, n_directions: int) -> float:
    if np.array_equal(a, b):  # exactly 0 (gudhi's bottleneck can return a denormal)
        return 0.0
    return diagram_distance(a, b, kind, n_directions=n_directions)


def _layer_drift(
    name: str, a: LayerAnalysis, b: LayerAnalysis, n_images: int, n_directions: int
) -> LayerDrift:
    """One layer's drift from the base's result ``a`` to the variant's ``b``."""
    dims = min(len(a.persistence.diagrams), len(b.persistence.diagrams))
    pairs = [(a.persistence.diagrams[d], b.persistence.diagrams[d]) for d in range(dims)]
    empty = np.zeros((0, 2))

    def distances(kind: str, to_empty: bool = False) -> np.ndarray:
        return np.array(
            [_diagram_distance(x, empty if to_empty else y, kind, n_directions) for x, y in pairs]
        )

    mapper_distance, mapper_moved = _moved(_mapper_groups(a, n_images), _mapper_groups(b, n_images))
    cluster_distance, cluster_moved = _moved(
        _cluster_groups(a, n_images), _cluster_groups(b, n_images)
    )
    compared = _present(a, n_images) & _present(b, n_images)
    score = np.where(compared, 0.5 * (mapper_distance + cluster_distance), np.nan)
    return LayerDrift(
        layer=name,
        bottleneck=distances("bottleneck"),
        sliced_wasserstein=distances("sliced_wasserstein"),
        quality_base=_quality_numbers(a),
        quality_variant=_quality_numbers(b),
        image_score=score,
        mapper_moved=mapper_moved & compared,
        cluster_moved=cluster_moved & compared,
        bottleneck_scale=distances("bottleneck", to_empty=True),
        sliced_wasserstein_scale=distances("sliced_wasserstein", to_empty=True),
    )


def _prediction_changed(base: Analysis, variant: Analysis, n_images: int) -> float:
    """Fraction of the images both models were run on whose predicted class differs."""
    a, b = predicted_classes(base), predicted_classes(variant)
    if a is None or b is None:
        return math.nan
    n = min(len(a), len(b), n_images)
    run = (a[:n] >= 0) & (b[:n] >= 0)  # images both models were run on
    if not run.any():
        return math.nan
    return float(np.mean(a[:n][run] != b[:n][run]))


def _config_note(base: Analysis, variant: Analysis) -> dict[str, str]:
    """Say so when the two analyses were made with different parameters."""
    a, b = base.config.to_dict(), variant.config.to_dict()
    differ = sorted(k for k in a if a.get(k) != b.get(k))
    if not differ:
        return {}
    shown = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in differ)
    return {
        "config": f"the analyses differ in {shown}; part of the drift comes from the parameters"
    }


def _declared_images(analysis: Analysis) -> int | None:
    """How many images the analysis says it is of (its images, else its labels)."""
    if analysis.images is not None:
        return len(analysis.images)
    if analysis.labels is not None:
        return len(analysis.labels)
    return None


def _n_images(base: Analysis, variant: Analysis) -> int:
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


def _present(result: LayerAnalysis, n_images: int) -> np.ndarray:
    present = np.zeros(n_images, dtype=bool)
    index = result.cloud.image_index
    present[index[index < n_images]] = True
    return present


def _mapper_groups(result: LayerAnalysis, n_images: int) -> csr_matrix:
    mapper = result.mapper
    return images_by_nodes(
        mapper.members, mapper.member_offsets, result.cloud.image_index, n_images
    )


def _cluster_groups(result: LayerAnalysis, n_images: int) -> csr_matrix:
    clusters = np.asarray(result.best_clusters, dtype=np.int64)
    n_groups = int(clusters.max()) + 1 if len(clusters) and clusters.max() >= 0 else 0
    return images_by_groups(result.cloud.image_index, clusters, n_images, n_groups)


def _moved(
    base_groups: csr_matrix, variant_groups: csr_matrix, *, max_cells: int = HUNGARIAN_MAX_CELLS
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: Jaccard distance of its base and matched variant group sets, and changed.

    An image in no group of either analysis keeps its (empty) company: distance 0.
    """
    from scipy.sparse import csr_matrix, hstack

    n_images, n_base = base_groups.shape
    n_variant = variant_groups.shape[1]
    paired = pair_groups(base_groups, variant_groups, max_cells=max_cells)
    # an unpaired variant group is a group of its own, numbered after the base's
    mapping = np.where(paired >= 0, paired, np.arange(n_base, n_base + n_variant))
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


def _quality_numbers(result: LayerAnalysis) -> dict[str, float]:
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


def model_accuracy(analysis: Analysis) -> float:
    """Top-1 accuracy of the analysis's predictions on its labelled images (nan: unknown).

    Nan without labels or predictions, and for text labels numbered by their own
    names (not the model's class indices); images the model was not run on are left
    out. The drift table's accuracies, and the report's first check that the images
    reached the model as it was trained to see them.
    """
    predicted = predicted_classes(analysis)
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


def predicted_classes(analysis: Analysis) -> np.ndarray | None:
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
