"""Domain checks of a loaded analysis: every value a reader indexes or sizes with.

Checksums only show the files are undamaged (anyone can recompute them), so the
loaded analysis is cross-checked as a whole: CSR member lists (``x`` with
``x_offsets``) for monotone in-bounds offsets, the cross references of a layer
(member rows within the cloud, image numbers within the images), and every value
the report and the views index or size with (class and prediction codes,
per-image arrays, images against ``image_shape``, diagrams, Betti curves,
matrices, coordinates, cluster ids, orders) against the others, and each variant
with its comparison against its base. A reader may then index without checks of
its own, and nothing it allocates is sized by a number the file chose alone.
Every refusal is an :class:`~napari_topolens.errors.AnalysisFileError`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..activations.pointcloud import PointCloud
from ..errors import AnalysisFileError
from ..label_sources import MAX_CLASSES
from .hole import BlobGraph, ClusterFlow, Dendrogram
from .mapper import MapperGraph
from .results import Analysis, Comparison, LayerAnalysis, LayerDrift, PlacementIndex, Variant
from .store_codec import DecodeChecks
from .store_types import describe, type_problem

if TYPE_CHECKING:  # heavy: persistence and phdim import scipy (via metrics)
    from .persistence import PersistenceResult
    from .phdim import ClassPersistenceResult, PHDimResult

__all__ = [
    "DOMAIN_CHECKS",
    "MAX_IMAGE_PIXELS",
    "check_analysis",
    "check_member_lists",
    "check_references",
]


def _member_pairs(values: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """CSR pairs among a dataclass's fields: ``x_offsets`` with ``xs`` or ``x``."""
    for name in values:
        if name.endswith("_offsets"):
            stem = name[: -len("_offsets")]
            for members in (stem + "s", stem):
                if members in values:
                    yield members, name
                    break


def check_member_lists(owner: str, values: dict[str, Any], where: str) -> None:
    """CSR pairs among the decoded fields of ``owner``: monotone offsets over its members."""
    for members_name, offsets_name in _member_pairs(values):
        members, offsets = values[members_name], values[offsets_name]
        if not (isinstance(members, np.ndarray) and isinstance(offsets, np.ndarray)):
            continue
        label = f"{where}: {owner}.{offsets_name}"
        if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) < 1:
            raise AnalysisFileError(f"{label} is not a 1-D integer offset array")
        if members.ndim != 1 or (members.dtype.kind not in "iu" and len(members)):
            raise AnalysisFileError(f"{where}: {owner}.{members_name} is not a 1-D integer array")
        if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(members):
            raise AnalysisFileError(
                f"{label} does not run monotonically from 0 to the {len(members)} members"
            )
        if len(members) and members.min() < 0:
            raise AnalysisFileError(f"{where}: {owner}.{members_name} holds negative rows")


def _csr_members(obj: Any, seen: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """Every array of cloud rows inside a layer's results: CSR members, ``index`` fields."""
    if not dataclasses.is_dataclass(obj) or seen > 2:
        return
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    rows = [members for members, _ in _member_pairs(values)]
    if seen > 0:  # results inside a layer: `index`, `h1_index` ... are cloud rows too
        rows += [n for n in values if n == "index" or n.endswith("_index")]
    for name in rows:
        value = values[name]
        if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
            yield f"{type(obj).__name__}.{name}", value
    for value in values.values():
        if dataclasses.is_dataclass(value) and type(value).__name__ != "PointCloud":
            yield from _csr_members(value, seen + 1)


def _check_graph(graph: MapperGraph, where: str) -> None:
    """Mapper node and edge tables the views index by node number."""
    n_nodes = len(graph.node_ids)
    if len(graph.member_offsets) != n_nodes + 1:
        raise AnalysisFileError(
            f"{where}: a Mapper graph has {len(graph.member_offsets)} member offsets for "
            f"{n_nodes} nodes"
        )
    for field_name in ("size", "purity", "dominant_class", "mean_lens", "component", "community"):
        value = getattr(graph, field_name)
        length = len(value)
        if length != n_nodes:
            raise AnalysisFileError(
                f"{where}: a Mapper graph's {field_name} has {length} entries for {n_nodes} nodes"
            )
        kinds = (
            "iu" if field_name in ("size", "dominant_class", "component", "community") else "iuf"
        )
        if value.ndim != 1 or (length and value.dtype.kind not in kinds):
            raise AnalysisFileError(
                f"{where}: a Mapper graph's {field_name} is {describe(value)}, not 1-D numbers"
            )
    if len(graph.edges) and (
        graph.edges.dtype.kind not in "iu" or graph.edge_weight.dtype.kind not in "iuf"
    ):
        raise AnalysisFileError(f"{where}: a Mapper graph's edges are not node numbers")
    edges = graph.edges
    if edges.ndim != 2 or edges.shape[1] != 2 or len(graph.edge_weight) != len(edges):
        raise AnalysisFileError(
            f"{where}: a Mapper graph's edges are not (E, 2) with one weight each"
        )
    if len(edges) and (edges.min() < 0 or edges.max() >= n_nodes):
        raise AnalysisFileError(
            f"{where}: a Mapper graph's edges refer to node {int(edges.max())} of {n_nodes}"
        )


def _check_flow(flow: ClusterFlow, where: str) -> None:
    """Cluster-flow stages the views index by stage number."""
    n_stages = len(flow.stage_names)
    if not 0 <= flow.best_stage < max(n_stages, 1):
        raise AnalysisFileError(
            f"{where}: the cluster flow's best stage {flow.best_stage} is not one of its "
            f"{n_stages} stages"
        )
    if flow.memberships.ndim != 2 or len(flow.memberships) != n_stages:
        raise AnalysisFileError(
            f"{where}: the cluster flow has {len(flow.memberships)} membership rows for "
            f"{n_stages} stages"
        )
    for field_name in ("thresholds", "scores"):
        value = getattr(flow, field_name)
        if value.ndim != 1 or (len(value) and value.dtype.kind not in "iuf"):
            raise AnalysisFileError(f"{where}: the cluster flow's {field_name} are not numbers")
        if len(value) != n_stages:
            raise AnalysisFileError(
                f"{where}: the cluster flow's {field_name} do not match its {n_stages} stages"
            )
    flows = flow.flows
    if flows.ndim != 2 or flows.shape[1] != 4:
        raise AnalysisFileError(f"{where}: the cluster flow's flows are not (F, 4) rows")
    if len(flows) and (flows[:, 0].min() < 0 or flows[:, 0].max() >= max(n_stages - 1, 1)):
        raise AnalysisFileError(
            f"{where}: the cluster flow's flows refer to stage {int(flows[:, 0].max())} of "
            f"{n_stages}"
        )


def check_references(obj: Any, where: str) -> None:
    """Cross references the views follow: member rows, image numbers, pixel boxes."""
    if isinstance(obj, PointCloud):
        _check_cloud(obj, where)
    elif isinstance(obj, MapperGraph):
        _check_graph(obj, where)
    elif isinstance(obj, ClusterFlow):
        _check_flow(obj, where)
    elif isinstance(obj, LayerAnalysis):
        _check_layer_rows(obj, where)
    else:
        check = _PART_CHECKS.get(type(obj).__name__)
        if check is not None:
            check(obj, where)


def _check_cloud(obj: PointCloud, where: str) -> None:
    """Image numbers are not negative; receptive fields lie within the images."""
    height, width = (*obj.image_shape, 0, 0)[:2]
    if len(obj.image_index) and obj.image_index.min() < 0:
        raise AnalysisFileError(f"{where}: a PointCloud refers to negative image numbers")
    box = obj.receptive_field
    if len(box) and (
        box[:, :2].min() < 0
        or box[:, 2].max() > height
        or box[:, 3].max() > width
        or np.any(box[:, 2:] < box[:, :2])
    ):
        raise AnalysisFileError(
            f"{where}: a PointCloud's receptive fields leave its {height}x{width} images"
        )


def _check_layer_rows(obj: LayerAnalysis, where: str) -> None:
    """Every row a layer's results refer to lies within its cloud."""
    n = len(obj.cloud)
    flow_points = obj.flow.memberships.shape[1] if obj.flow.memberships.ndim == 2 else -1
    if flow_points != n:
        raise AnalysisFileError(
            f"{where}: layer {obj.name!r}: the cluster flow covers {flow_points} points "
            f"of a cloud of {n}"
        )
    if len(obj.point_labels) != n:
        raise AnalysisFileError(
            f"{where}: layer {obj.name!r} has {len(obj.point_labels)} point labels for {n} points"
        )
    for label, members in _csr_members(obj):
        if len(members) and (members.max() >= n or members.min() < 0):
            raise AnalysisFileError(
                f"{where}: layer {obj.name!r}: {label} refers to row {int(members.max())} "
                f"of a cloud of {n} points"
            )


# --------------------------------------------------------------------------- consistency
#
# Every saved value a reader (the report, the napari views) indexes or sizes with is
# checked against the others before the analysis is handed out: shapes of diagrams,
# matrices and coordinates, cluster ids, orders, class codes, image numbers and the
# images themselves. A reader may then index without checks of its own, and nothing
# it allocates is sized by a number the file chose alone.

#: Pixels of one image in an analysis that holds no images (the views draw a stand-in
#: of that size): 8192 x 8192. With images, their own shape is checked instead.
MAX_IMAGE_PIXELS = 8192 * 8192


def _refuse(where: str, what: str) -> typing.NoReturn:
    raise AnalysisFileError(f"{where}: {what}")


def _integer_codes(value: Any, where: str, what: str) -> np.ndarray:
    """A 1-D integer array of codes, -1 (unknown) or more."""
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iu":
        _refuse(where, f"{what} are not a 1-D integer array ({describe(value)})")
    if len(value) and int(value.min()) < -1:
        _refuse(where, f"{what} hold {int(value.min())}; codes are -1 (unknown) or more")
    return value


def _matrix(value: Any, where: str, what: str, columns: int | None = None) -> np.ndarray:
    """A 2-D numeric array (with ``columns`` columns when given)."""
    if (
        not isinstance(value, np.ndarray)
        or value.ndim != 2
        or value.dtype.kind not in "biuf"
        or (columns is not None and value.shape[1] != columns)
    ):
        shape = f"(n, {columns})" if columns is not None else "2-D"
        _refuse(where, f"{what} is not a {shape} numeric array ({describe(value)})")
    return value


def _same_length(where: str, owner: str, expected: int, **arrays: Any) -> None:
    for field_name, value in arrays.items():
        if len(value) != expected:
            _refuse(where, f"{owner}.{field_name} has {len(value)} entries for {expected}")


def _check_persistence(obj: PersistenceResult, where: str) -> None:
    """Diagrams ``(k, 2)``, one Betti curve per diagram over one grid, numbers per dimension."""
    if not obj.diagrams:
        _refuse(where, "a PersistenceResult holds no diagram")
    for dim, diagram in enumerate(obj.diagrams):
        _matrix(diagram, where, f"the H{dim} persistence diagram", columns=2)
        if diagram.dtype.kind not in "f":
            _refuse(where, f"the H{dim} persistence diagram is not floating point")
        birth, death = diagram[:, 0], diagram[:, 1]
        if len(diagram) and not (
            np.all(np.isfinite(birth)) and birth.min() >= 0 and np.all(death >= birth)
        ):
            _refuse(
                where,
                f"the H{dim} persistence diagram holds bars that are not 0 <= birth <= death "
                "(NaN, or a bar dying before it is born)",
            )
    n_dims = len(obj.diagrams)
    grid, curves = obj.betti_grid, obj.betti_curves
    if grid.ndim != 1 or grid.dtype.kind not in "iuf":
        _refuse(where, f"the Betti grid is not a 1-D numeric array ({describe(grid)})")
    if curves.ndim != 2 or curves.shape != (n_dims, len(grid)) or curves.dtype.kind not in "iuf":
        _refuse(
            where,
            f"the Betti curves {describe(curves)} are not one row per diagram ({n_dims}) "
            f"over the {len(grid)} grid values",
        )
    for field_name in ("total_persistence", "entropy"):
        value = getattr(obj, field_name)
        if value.ndim != 1 or len(value) != n_dims or value.dtype.kind not in "iuf":
            _refuse(where, f"the persistence's {field_name} is not one number per diagram")
    if obj.n_points < 0:
        _refuse(where, f"the persistence was computed on {obj.n_points} points")
    route = obj.h1_route or {}
    for key, kind in ((f"pilot_bottleneck_{obj.subsample}", float), ("pilot_points", int)):
        value = route.get(key)
        if value is not None and type_problem(value, kind) is not None:
            _refuse(where, f"the H1 route's {key} is {describe(value)}, not a number")


def _check_phdim(obj: PHDimResult, where: str) -> None:
    if obj.sizes.ndim != 1 or (len(obj.sizes) and obj.sizes.dtype.kind not in "iu"):
        _refuse(where, "the PH-dimension subsample sizes are not integers")
    if obj.energies.ndim != 1 or len(obj.energies) != len(obj.sizes):
        _refuse(where, "the PH-dimension energies are not one per subsample size")


def _check_class_persistence(obj: ClassPersistenceResult, where: str) -> None:
    if obj.classes.ndim != 1 or obj.total.ndim != 1 or len(obj.classes) != len(obj.total):
        _refuse(where, "the per-class persistence is not one total per class")


def _check_blobs(obj: BlobGraph, where: str) -> None:
    """PCA coordinates ``(n, 2)``, one cluster and label per point, one hull per cluster."""
    n = len(_matrix(obj.coords, where, "the blob coordinates", columns=2))
    if not np.all(np.isfinite(obj.coords)):
        _refuse(where, "the blob coordinates are not finite")
    _integer_codes(obj.labels, where, "the blob labels")
    if obj.cluster.ndim != 1 or obj.cluster.dtype.kind not in "iu":
        _refuse(where, "the blob clusters are not a 1-D integer array")
    _same_length(where, "BlobGraph", n, cluster=obj.cluster, labels=obj.labels)
    hull_ids = obj.hull_clusters
    if hull_ids.ndim != 1 or hull_ids.dtype.kind not in "iu" or len(hull_ids) != len(obj.hulls):
        _refuse(where, "the blob graph has not one cluster id per hull")
    if len(hull_ids) and not np.all(np.isin(hull_ids, obj.cluster)):
        _refuse(where, "a blob hull belongs to a cluster no point is in")
    for hull in obj.hulls:
        if len(_matrix(hull, where, "a blob hull", columns=2)) < 1 or not np.all(np.isfinite(hull)):
            _refuse(where, "a blob hull has no points or non-finite ones")
    ratio = obj.explained_variance
    if ratio.ndim != 1 or len(ratio) < 2 or ratio.dtype.kind not in "iuf":
        _refuse(where, "the blob graph's explained variance is not two numbers")


def _check_dendrogram(obj: Dendrogram, where: str) -> None:
    """``order`` and ``leaves`` permute the shown points; one row per merge elsewhere."""
    n = len(obj.index)
    if obj.index.ndim != 1:
        _refuse(where, "the dendrogram's points are not a 1-D array")
    for field_name in ("order", "leaves"):
        value = getattr(obj, field_name)
        if (
            value.ndim != 1
            or (len(value) and value.dtype.kind not in "iu")
            or len(value) != n
            or not np.array_equal(np.sort(value), np.arange(n))
        ):
            _refuse(where, f"the dendrogram's {field_name} is not an order of its {n} points")
    merges = max(n - 1, 0)
    distances = obj.distances
    if distances.ndim != 2 or distances.shape != (n, n) or distances.dtype.kind not in "iuf":
        _refuse(where, f"the dendrogram's distances {describe(distances)} are not ({n}, {n})")
    for field_name in ("linkage", "icoord", "dcoord"):
        value = getattr(obj, field_name)
        if value.shape != (merges, 4) or value.dtype.kind not in "iuf":
            _refuse(
                where,
                f"the dendrogram's {field_name} {describe(value)} is not ({merges}, 4) "
                f"for {n} points",
            )
    if len(obj.member_offsets) != merges + 1:
        _refuse(
            where,
            f"the dendrogram has {len(obj.member_offsets)} member offsets for {merges} merges",
        )


def _check_flow_counts(flow: ClusterFlow, where: str) -> None:
    """Every band of the cluster flow joins clusters of its stages with the points it says."""
    memberships, flows = flow.memberships, flow.flows
    if memberships.dtype.kind not in "iu" or (memberships.size and memberships.min() < -1):
        _refuse(where, "the cluster flow's memberships are not cluster ids (-1 or more)")
    if flows.dtype.kind not in "iu":
        _refuse(where, "the cluster flow's flows are not integers")
    for s in range(len(memberships) - 1):
        rows = flows[flows[:, 0] == s]
        if not len(rows):
            continue
        pairs, counts = np.unique(
            np.stack([memberships[s], memberships[s + 1]], axis=1), axis=0, return_counts=True
        )
        found = {(int(a), int(b)): int(c) for (a, b), c in zip(pairs, counts)}
        for _stage, a, b, count in rows.tolist():
            if found.get((a, b)) != count:
                _refuse(
                    where,
                    f"the cluster flow's band from cluster {a} to {b} at stage {s} holds "
                    f"{count} points, its stages {found.get((a, b), 0)}",
                )


def _check_drift(obj: LayerDrift, where: str) -> None:
    n = len(obj.image_score)
    for field_name in ("image_score", "mapper_moved", "cluster_moved"):
        if getattr(obj, field_name).ndim != 1:
            _refuse(where, f"the drift of layer {obj.layer!r}: {field_name} is not 1-D")
    _same_length(
        where,
        "LayerDrift",
        n,
        mapper_moved=obj.mapper_moved,
        cluster_moved=obj.cluster_moved,
    )
    if obj.mapper_moved.dtype.kind != "b" or obj.cluster_moved.dtype.kind != "b":
        _refuse(where, f"the drift of layer {obj.layer!r}: moved images are not booleans")
    for field_name in (
        "bottleneck",
        "sliced_wasserstein",
        "bottleneck_scale",
        "sliced_wasserstein_scale",
    ):
        value = getattr(obj, field_name)
        if value.ndim != 1 or (len(value) and value.dtype.kind not in "iuf"):
            _refuse(where, f"the drift of layer {obj.layer!r}: {field_name} is not 1-D numbers")
    keys = set(obj.quality_base)
    if (
        keys != set(obj.quality_variant)
        or not {"purity", "ari", "ph_dimension", "mapper_nodes"} <= keys
    ):
        _refuse(
            where, f"the drift of layer {obj.layer!r} does not compare the same quality numbers"
        )


def _check_comparison(obj: Comparison, where: str) -> None:
    if obj.n_images < 0:
        _refuse(where, f"a comparison of {obj.n_images} images")
    layers = [drift.layer for drift in obj.drifts]
    if len(set(layers)) != len(layers):
        _refuse(where, f"a comparison names a layer twice ({', '.join(layers)[:80]})")
    for drift in obj.drifts:
        if len(drift.image_score) != obj.n_images:
            _refuse(
                where,
                f"the drift of layer {drift.layer!r} scores {len(drift.image_score)} images "
                f"of the {obj.n_images} compared",
            )


def _check_placement(obj: PlacementIndex, where: str) -> None:
    """The placement index alone: lens parameters, cube intervals, eps."""
    label = "a layer's placement index"
    lower, upper = obj.cube_lower, obj.cube_upper
    _matrix(lower, where, f"{label}'s cube lower bounds")
    _matrix(upper, where, f"{label}'s cube upper bounds")
    if lower.shape != upper.shape or not (np.all(np.isfinite(lower)) and np.all(lower <= upper)):
        _refuse(where, f"{label}'s cube intervals are not finite (lower, upper) pairs of one shape")
    if obj.lens in ("pca1", "pca2"):
        width = 1 if obj.lens == "pca1" else 2
        axes, mean = obj.lens_axes, obj.lens_mean
        if (
            mean.ndim != 1
            or axes.shape != (len(mean), width)
            or not (np.all(np.isfinite(axes)) and np.all(np.isfinite(mean)))
        ):
            _refuse(where, f"{label}'s PCA lens is not a finite mean (D,) and axes (D, {width})")
        if lower.shape[1] != width:
            _refuse(where, f"{label}'s cubes have {lower.shape[1]} lens dimensions for {width}")
    elif lower.shape[1] not in (0, 1) and len(lower):
        _refuse(where, f"{label}'s cubes have {lower.shape[1]} lens dimensions for 1")
    if obj.member_core.ndim != 1 or (len(obj.member_core) and obj.member_core.dtype.kind != "b"):
        _refuse(where, f"{label}'s core flags are not a 1-D boolean array")
    for name in ("node_cube", "node_cluster"):
        value = getattr(obj, name)
        if value.ndim != 1 or (len(value) and value.dtype.kind not in "iu"):
            _refuse(where, f"{label}'s {name} is not a 1-D integer array")
        if len(value) and value.min() < 0:
            _refuse(where, f"{label}'s {name} holds negative numbers")
    if len(obj.node_cube) and obj.node_cube.max() >= len(lower):
        _refuse(
            where,
            f"{label} puts a node in cube {int(obj.node_cube.max())} of {len(lower)} cubes",
        )
    if len(obj.node_cube) and not (math.isfinite(obj.eps) and obj.eps > 0):
        _refuse(where, f"{label}'s eps {obj.eps!r} is not a positive number")
    if obj.min_samples < 1:
        _refuse(where, f"{label}'s min_samples {obj.min_samples} is below 1")


# by class name: persistence and phdim are heavy to import (scipy), so not by class
_PART_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "PlacementIndex": _check_placement,
    "PersistenceResult": _check_persistence,
    "PHDimResult": _check_phdim,
    "ClassPersistenceResult": _check_class_persistence,
    "BlobGraph": _check_blobs,
    "Dendrogram": _check_dendrogram,
    "LayerDrift": _check_drift,
    "Comparison": _check_comparison,
}


def _check_layer(obj: LayerAnalysis, where: str) -> None:
    """What the views and the report index within one layer's results."""
    n = len(obj.cloud)
    label = f"layer {obj.name!r}"
    _integer_codes(obj.point_labels, where, f"{label}'s point labels")
    blobs, flow = obj.blobs, obj.flow
    if len(blobs.coords) != n:
        _refuse(where, f"{label}'s blob graph has {len(blobs.coords)} points for {n}")
    if not np.array_equal(blobs.labels, obj.point_labels):
        _refuse(where, f"{label}'s blob graph colours other labels than its points have")
    if not np.array_equal(blobs.cluster, flow.memberships[flow.best_stage]):
        _refuse(where, f"{label}'s blob graph shows other clusters than the best flow stage")
    labelled = bool(flow.stage_names) and flow.stage_names[0] == "labels"
    if labelled and not np.array_equal(flow.memberships[0], obj.point_labels):
        _refuse(where, f"{label}'s cluster flow starts from other labels than its points")
    _check_flow_counts(flow, f"{where}: {label}")
    layout = obj.mapper_layout
    n_nodes = obj.mapper.n_nodes
    if layout is not None and (
        layout.shape != (n_nodes, 2)
        or layout.dtype.kind not in "iuf"
        or not np.all(np.isfinite(layout))
    ):
        _refuse(where, f"{label}'s Mapper layout {describe(layout)} is not ({n_nodes}, 2) finite")
    index = obj.placement
    if index is not None:
        mapper = obj.mapper
        if len(index.member_core) != len(mapper.members) or len(index.node_cube) != n_nodes:
            _refuse(
                where,
                f"{label}'s placement index has {len(index.member_core)} core flags and "
                f"{len(index.node_cube)} nodes for {len(mapper.members)} members of "
                f"{n_nodes} nodes",
            )
        if len(index.node_cluster) != n_nodes:
            _refuse(where, f"{label}'s placement index numbers {len(index.node_cluster)} nodes")
        if index.lens in ("pca1", "pca2") and index.lens_axes.shape[0] != obj.cloud.points.shape[1]:
            _refuse(
                where,
                f"{label}'s placement lens has {index.lens_axes.shape[0]} dimensions for "
                f"{obj.cloud.points.shape[1]}",
            )
        lens_width = mapper.lens_components.shape[1] if mapper.lens_components.ndim == 2 else 1
        if len(index.cube_lower) and index.cube_lower.shape[1] != lens_width:
            _refuse(where, f"{label}'s placement cubes do not match its {lens_width}-D lens")
    before = obj.cloud.meta.get("points_before_cap")
    if before is not None and type_problem(before, int) is not None:
        _refuse(where, f"{label}'s cloud records {describe(before)} points before the cap")


def check_analysis(obj: Analysis, where: str, base: Analysis | None = None) -> None:
    """Class codes, image numbers, per-image arrays and images, all against each other.

    ``base``: the analysis whose variant this is (its images serve the variant's
    clouds when the variant keeps none).
    """
    if not obj.layer_results:
        _refuse(where, "the analysis holds no layer")
    layer_names = obj.layers
    if len(set(layer_names)) != len(layer_names):
        _refuse(where, f"a layer name repeats in {', '.join(layer_names)[:80]}")
    _check_class_codes(obj, where)
    images = obj.images if obj.images is not None or base is None else base.images
    needed = _check_images(obj, images, where)
    _check_per_image(obj, images, needed, where)
    _check_provenance(obj, images, needed, where)
    for result in obj.layer_results:
        _check_layer_of(obj, result, where)
    _check_layer_matrices(obj, where)
    if obj.variants and base is not None:
        _refuse(where, "a variant holds variants of its own")
    for number, variant in enumerate(obj.variants):
        _check_variant(obj, number, variant, images, where)


def _check_class_codes(obj: Analysis, where: str) -> None:
    """Labels are codes -1..k-1 with a name each (when names are saved)."""
    labels, names = obj.labels, obj.class_names
    if labels is not None:
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or (len(labels) and labels.min() < -1):
            _refuse(where, "the saved labels are not class codes (-1 or more)")
        top = int(labels.max()) if len(labels) else -1
        if names is not None and top >= len(names):
            _refuse(where, f"label {top} has no class name ({len(names)} saved)")
        if names is None and top >= len(labels):
            _refuse(
                where,
                f"label {top} is not a class code of {len(labels)} labels without class names "
                "(codes run 0..k-1)",
            )
    if names is not None and len(names) > MAX_CLASSES:
        _refuse(where, f"{len(names):,} class names, more than the {MAX_CLASSES:,} allowed")


def _check_images(obj: Analysis, images: np.ndarray | None, where: str) -> int:
    """The images (own or the base's) against the clouds; the number of images they need."""
    shapes = {tuple(result.cloud.image_shape) for result in obj.layer_results}
    if len(shapes) != 1:
        _refuse(where, f"the layers were made from images of different shapes {sorted(shapes)}")
    image_shape = shapes.pop()
    if len(image_shape) != 2 or min(image_shape) < 1:
        _refuse(where, f"the image shape {image_shape} is not (height, width)")
    needed = max(
        (
            int(result.cloud.image_index.max()) + 1
            for result in obj.layer_results
            if len(result.cloud)
        ),
        default=0,
    )
    if images is not None:
        if (
            images.ndim not in (3, 4)
            or images.dtype.kind not in "biuf"
            or (images.ndim == 4 and images.shape[-1] not in (3, 4))
        ):
            _refuse(
                where,
                f"the saved images {describe(images)} are not (N, H, W) or (N, H, W, 3) numbers",
            )
        if tuple(images.shape[1:3]) != image_shape:
            _refuse(
                where,
                f"the saved images are {images.shape[1]}x{images.shape[2]} pixels but the "
                f"clouds were made from {image_shape[0]}x{image_shape[1]} images",
            )
        if len(images) < needed:
            _refuse(where, f"the clouds refer to image {needed - 1} of {len(images)} saved images")
    elif image_shape[0] * image_shape[1] > MAX_IMAGE_PIXELS:
        _refuse(
            where,
            f"the image shape {image_shape} is larger than any model input "
            f"({MAX_IMAGE_PIXELS:,} pixels at most)",
        )
    return needed


def _check_per_image(obj: Analysis, images: np.ndarray | None, needed: int, where: str) -> None:
    """Labels, predictions and probabilities cover the images; predictions are classes."""
    for field_name in ("labels", "predictions", "probabilities"):
        value = getattr(obj, field_name)
        if value is not None and len(value) < needed:
            _refuse(
                where,
                f"{len(value)} {field_name} were saved but the clouds refer to {needed} images",
            )
    probabilities = obj.probabilities
    if probabilities is not None:
        _matrix(probabilities, where, "the saved probabilities")
    if obj.predictions is not None:
        predictions = _integer_codes(obj.predictions, where, "the saved predictions")
        bound = probabilities.shape[1] if probabilities is not None else MAX_CLASSES
        if len(predictions) and int(predictions.max()) >= bound:
            _refuse(
                where,
                f"prediction {int(predictions.max())} is not a class index (at most "
                f"{bound - 1}{' for the saved probabilities' if probabilities is not None else ''})",
            )


def _check_provenance(obj: Analysis, images: np.ndarray | None, needed: int, where: str) -> None:
    """The image count and the notes the report reads from the provenance."""
    declared = obj.provenance.get("n_images")
    if declared is not None:
        per_image = [
            len(v)
            for v in (images, obj.labels, obj.predictions, obj.probabilities)
            if v is not None
        ]
        if type_problem(declared, int) is not None or not needed <= declared <= min(
            per_image, default=declared
        ):
            _refuse(
                where,
                f"the provenance's image count {declared!r:.40} does not fit the {needed} images "
                "the clouds refer to and the per-image arrays saved",
            )
    notes = obj.provenance.get("notes")
    if notes is not None and not isinstance(notes, dict):
        _refuse(where, f"the provenance's notes are {describe(notes)}, not a dict")


def _check_layer_of(obj: Analysis, result: LayerAnalysis, where: str) -> None:
    """One layer within its analysis: its points carry their images' labels and classes."""
    labels = obj.labels
    expected = (
        labels[result.cloud.image_index] if labels is not None else np.full(len(result.cloud), -1)
    )
    if not np.array_equal(result.point_labels, expected):
        _refuse(where, f"layer {result.name!r}: the point labels are not its images' labels")
    _check_layer(result, where)
    dominant = result.mapper.dominant_class
    n_classes = obj.n_classes
    if len(dominant) and (dominant.min() < -1 or dominant.max() >= max(n_classes, 1)):
        _refuse(where, f"layer {result.name!r}: a Mapper node's class is not one of {n_classes}")


def _check_layer_matrices(obj: Analysis, where: str) -> None:
    """Layer x layer matrices: the shown distance and CKA present, all (L, L) numbers."""
    n_layers = len(obj.layer_results)
    for kind in (obj.config.layer_distance, "cka"):
        if kind not in obj.layer_distances:
            _refuse(where, f"the {kind} matrix between the layers is missing")
    for kind, matrix in obj.layer_distances.items():
        if matrix.shape != (n_layers, n_layers) or matrix.dtype.kind not in "iuf":
            _refuse(
                where,
                f"the {kind} matrix {describe(matrix)} is not ({n_layers}, {n_layers}) numbers",
            )


def _check_variant(
    obj: Analysis, number: int, variant: Variant, images: np.ndarray | None, where: str
) -> None:
    """A variant: an analysis of the same images, compared at layers both have."""
    if not isinstance(variant, Variant) or type(variant.analysis) is not type(obj):
        _refuse(where, f"variant {number} is {describe(variant)}, not a variant analysis")
    mine = f"{where}: variant {variant.name!r}"
    check_analysis(variant.analysis, mine, base=obj)
    comparison = variant.comparison
    for drift in comparison.drifts:
        if drift.layer not in obj.layers or drift.layer not in variant.analysis.layers:
            _refuse(mine, f"the comparison names layer {drift.layer!r}, which is not in both")
    if images is not None and comparison.n_images > len(images):
        _refuse(mine, f"the comparison covers {comparison.n_images} of {len(images)} images")
    theirs = variant.analysis.images
    if (
        theirs is not None
        and images is not None
        and (theirs.shape[1:] != images.shape[1:] or comparison.n_images > len(theirs))
    ):
        _refuse(mine, f"the variant's images {describe(theirs)} do not match the base's")


#: The domain checks the loader runs on every result it rebuilds.
DOMAIN_CHECKS = DecodeChecks(values=check_member_lists, built=check_references)
