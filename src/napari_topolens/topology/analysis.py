"""Run the whole topology engine on the point clouds of a model's layers.

:func:`iter_analyze` (a progress generator) and :func:`analyze` (its plain form)
compute, per layer: persistence (H0 on the full cloud, H1 on the points chosen by cost),
a Mapper graph, the PH dimension, per-class total H0 persistence, the HOLE cluster
flow, blob graph and heatmap dendrogram, and the cluster-quality numbers of the
best flow stage (:func:`analyze_layer`, what a Dask worker runs per layer); and once,
after the layers: diagram-distance matrices and linear CKA between them.
The result, an :class:`Analysis`, saves and loads losslessly (``topology.store``).
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .._progress import CancelCallback, Progress, ProgressCallback, drive, scaled
from .._version import __version__ as package_version
from ..activations import device as devices
from ..activations.extract import as_image_batch
from ..activations.pointcloud import PointCloud
from ..distributed import iter_remote_tasks
from ..errors import EmptySelectionError, ImageError, LayerError, TopoLensError
from ..label_sources import MAX_CLASSES, checked_class_names
from ..layout.mapper import mapper_layout
from .config import DISTANCE_KINDS as _DISTANCE_KINDS
from .config import AnalysisConfig
from .distances import cka_matrix, diagram_distance_matrix
from .hole import blob_graph, cluster_flow, heatmap_dendrogram
from .mapper import mapper_graph
from .placement import placement_index
from .quality import cluster_quality
from .results import Analysis, LayerAnalysis

if TYPE_CHECKING:  # annotations only
    from .hole import Dendrogram
    from .mapper import MapperGraph
    from .persistence import PersistenceResult
    from .phdim import ClassPersistenceResult, PHDimResult
    from .quality import Quality

__all__ = [
    "Analysis",
    "AnalysisConfig",
    "LayerAnalysis",
    "analysed_cloud",
    "analyze",
    "analyze_layer",
    "check_class_labels",
    "check_images",
    "checked_clouds",
    "iter_analyze",
    "resolve_h0_device",
    "warm_imports",
]

T = TypeVar("T")
_LIBRARIES = (
    "numpy",
    "scipy",
    "scikit-learn",
    "gudhi",
    "kmapper",
    "networkx",
    "torch",
    "napari-topolens",
)


# ----------------------------------------------------------------------------- helpers


def warm_imports() -> None:
    """Import what an analysis imports on first use (a child process does it while idle)."""
    import gudhi  # noqa: F401
    import kmapper  # noqa: F401
    import networkx  # noqa: F401
    import scipy.optimize
    import scipy.sparse.csgraph
    import scipy.spatial  # noqa: F401
    import sklearn.decomposition
    import sklearn.metrics
    import sklearn.neighbors  # noqa: F401
    from gudhi.hera import wasserstein_distance  # noqa: F401
    from gudhi.sklearn.rips_persistence import RipsPersistence  # noqa: F401


def _library_versions() -> dict[str, str]:
    """Installed versions, read from package metadata so nothing heavy is imported."""
    from importlib import metadata

    versions: dict[str, str] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    if versions["napari-topolens"] == "not installed":
        versions["napari-topolens"] = str(package_version)
    return versions


def checked_clouds(clouds: Mapping[str, PointCloud] | Sequence[PointCloud]) -> list[PointCloud]:
    if isinstance(clouds, PointCloud):
        clouds = [clouds]
    if not isinstance(clouds, (Mapping, Sequence)) or isinstance(clouds, (str, bytes)):
        raise TopoLensError(
            "clouds must be the dict of PointCloud that extract_activations returns (or a "
            f"list of PointCloud), got {type(clouds).__name__}"
        )
    items = list(clouds.values()) if isinstance(clouds, Mapping) else list(clouds)
    if not items:
        raise EmptySelectionError("no layers to analyse; pick at least one layer")
    for cloud in items:
        if not isinstance(cloud, PointCloud):
            raise TopoLensError(
                f"expected PointCloud objects (from extract_activations), got {type(cloud).__name__}"
            )
    names = [cloud.layer for cloud in items]
    if len(set(names)) != len(names):
        raise LayerError(f"layer names repeat in {names}; analyse each layer once")
    for cloud in items:
        if len(cloud) < 3:
            raise EmptySelectionError(
                f"layer {cloud.layer!r} has {len(cloud)} points; topology needs at least 3. "
                + (
                    "Use more images, or sampling 'all_positions' for more points per image"
                    if cloud.grid_shape
                    else "It gives one point per image: use more images, or leave this layer out"
                )
            )
        if not np.all(np.isfinite(cloud.points)):
            raise LayerError(
                f"layer {cloud.layer!r} has non-finite activations (NaN or inf); "
                "check the model and the image normalisation"
            )
    return items


def _n_images(items: list[PointCloud]) -> int:
    return int(max(int(cloud.image_index.max()) for cloud in items)) + 1


def check_class_labels(
    labels: Any, class_names: Sequence[str] | None, n_images: int | None = None
) -> tuple[np.ndarray | None, list[str] | None]:
    """Validate class labels per image, before any work.

    Labels are integers, ``-1`` for unknown, and they are the model's class
    indices: they are kept as they are (never renumbered), so that predictions
    and accuracies compare like with like. With ``class_names`` (distinct names
    of the classes 0..K-1) every label must be below ``len(class_names)``;
    without them every label must be below :data:`~napari_topolens.label_sources.MAX_CLASSES`,
    so nothing is ever sized by a huge label value.

    Returns
    -------
    codes : ndarray of int64 or None
    class_names : list of str or None
    """
    names = checked_class_names(class_names)
    if labels is None:
        return None, names
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise ImageError(
            f"labels must be one integer class code per image (an array), got "
            f"{type(labels).__name__}"
        )
    array = np.asarray(labels)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ImageError(
            f"labels must be a 1-D array of integer class codes, got dtype {array.dtype} "
            f"and shape {array.shape}"
        )
    if n_images is not None and len(array) < n_images:
        raise ImageError(
            f"{len(array)} labels for at least {n_images} images; give one label per image"
        )
    codes = array.astype(np.int64)
    if len(codes) and codes.min() < -1:
        raise ImageError(
            f"label {int(codes.min())} is negative; class labels are 0, 1, ... (-1: unknown)"
        )
    known = codes[codes >= 0]
    if names is not None:
        if len(known) and known.max() >= len(names):
            raise ImageError(
                f"label {int(known.max())} has no class name ({len(names)} names given)"
            )
        return codes, names
    if len(known) and int(known.max()) >= MAX_CLASSES:
        raise ImageError(
            f"label {int(known.max())} is not a class index: labels are the model's class "
            f"indices 0..K-1 (at most {MAX_CLASSES - 1}); give other ids as text labels "
            "(class names)"
        )
    return codes, None


def caps_applied(config: AnalysisConfig, items: Sequence[PointCloud]) -> dict[str, str]:
    """Every cap on the points, in words, with what it did to these clouds."""
    extracted = {cloud.layer: len(cloud) for cloud in items}
    over = [f"{name} ({n:,})" for name, n in extracted.items() if n > config.max_points]
    caps = {}
    extraction_caps = {
        int(cloud.meta["max_points"]) for cloud in items if cloud.meta.get("max_points") is not None
    }
    caps["extraction max_points"] = (
        ", ".join(f"{int(c):,}" for c in sorted(extraction_caps))
        if extraction_caps
        else "none (every image, one point each)"
    )
    caps["analysis max_points"] = f"{config.max_points:,} per layer: " + (
        f"a random {config.max_points:,} of the points of {', '.join(over)}"
        if over
        else "no layer was over it"
    )
    caps["h1_max_points"] = (
        f"at most {config.h1_max_points:,} points for H1 ({config.subsample}; "
        "each layer's persistence.h1_route says which)"
    )
    caps["phdim_max_points"] = (
        f"{config.phdim_max_points:,} points in the largest PH-dimension subsample"
    )
    caps["class_max_per_class"] = f"{config.class_max_per_class:,} points per class (class H0)"
    caps["dendrogram_max_points"] = f"{config.dendrogram_max_points:,} points in the heatmap"
    caps["silhouette_max_points"] = f"{config.silhouette_max_points:,} points for the silhouette"
    probe_caps = {
        int(cloud.meta["max_probe_pixels"])
        for cloud in items
        if cloud.meta.get("max_probe_pixels") is not None
    }
    if probe_caps:
        caps["max_probe_pixels"] = ", ".join(f"{int(c):.3g}" for c in sorted(probe_caps))
    return caps


def _check_probabilities(probabilities: Any, items: list[PointCloud]) -> np.ndarray | None:
    if probabilities is None:
        return None
    probabilities = np.asarray(probabilities, dtype=np.float64)
    needed = _n_images(items)
    if probabilities.ndim != 2 or len(probabilities) < needed:
        raise ImageError(
            f"probabilities must be (N, K) with one row per image (N >= {needed}), "
            f"got shape {probabilities.shape}"
        )
    return probabilities


def _check_predictions(predictions: Any, items: list[PointCloud]) -> np.ndarray | None:
    if predictions is None:
        return None
    predictions = np.asarray(predictions)
    if predictions.ndim != 1 or not np.issubdtype(predictions.dtype, np.integer):
        raise ImageError(
            f"predictions must be a 1-D array of integer class indices (-1 unknown), got "
            f"dtype {predictions.dtype} and shape {predictions.shape}"
        )
    needed = _n_images(items)
    if len(predictions) < needed:
        raise ImageError(
            f"{len(predictions)} predictions for at least {needed} images; give one per image"
        )
    if len(predictions) and int(predictions.min()) < -1:
        raise ImageError(
            f"prediction {int(predictions.min())} is not a class index; use -1 for unknown"
        )
    return predictions.astype(np.int64)


def _cka_features(items: list[PointCloud]) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-image mean activation per layer, over the images every layer has points for."""
    common: np.ndarray | None = None
    for cloud in items:
        present = np.unique(cloud.image_index)
        common = present if common is None else np.intersect1d(common, present)
    assert common is not None
    features = []
    for cloud in items:
        position = np.searchsorted(common, cloud.image_index)
        keep = (position < len(common)) & (
            common[np.minimum(position, len(common) - 1)] == cloud.image_index
        )
        sums = np.zeros((len(common), cloud.points.shape[1]), dtype=np.float64)
        np.add.at(sums, position[keep], cloud.points[keep].astype(np.float64))
        counts = np.bincount(position[keep], minlength=len(common)).astype(np.float64)
        features.append(sums / counts[:, None])
    return features, common


#: Rough relative cost of each per-layer step, for a smooth progress bar.
_STEP_WEIGHTS = {
    "persistence": 4.0,
    "mapper": 2.0,
    "phdim": 2.0,
    "class persistence": 1.0,
    "cluster flow": 0.5,
    "blob graph": 0.5,
    "dendrogram": 1.0,
    "quality": 0.5,
}
_LAYER_WEIGHT = sum(_STEP_WEIGHTS.values())
#: Progress weight of the cross-layer matrices (diagram distances, CKA).
_CROSS_LAYER_WEIGHT = 2.0


class _LayerSteps:
    """One layer's steps: progress within the layer (0..1) and the seconds each took."""

    def __init__(self) -> None:
        self.done = 0.0
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the seconds the block took as ``seconds[name]``."""
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start

    def run(self, step: str, message: str, work: Callable[[], T]) -> Generator[Progress, None, T]:
        """Announce ``message``, run ``work`` timed as ``step``, count the step's weight."""
        yield Progress(min(self.done / _LAYER_WEIGHT, 1.0), message)
        with self.timed(step):
            result = work()
        self.skip(step)
        return result

    def skip(self, step: str) -> None:
        """Count a step that has nothing to do here (the bar moves on all the same)."""
        self.done += _STEP_WEIGHTS[step]


def resolve_h0_device(device: Any, scheduler: Any) -> Any:
    """The torch device of the H0 tree's distance blocks, checked before any work (any case:
    ``"CPU"`` is the CPU); ``None`` for the CPU (numpy). With a scheduler only the name is
    checked here: the workers have the devices."""
    if device is None:
        return None
    checked = (
        devices.parse_device(device) if scheduler is not None else devices.resolve_device(device)
    )
    return None if checked.type == "cpu" else checked


def _checked_inputs(
    items: list[PointCloud],
    labels: Any,
    class_names: Sequence[str] | None,
    probabilities: Any,
    config: AnalysisConfig,
) -> tuple[np.ndarray | None, list[str] | None, np.ndarray | None, int | None]:
    """Labels, class names, probabilities and the number of classes, checked before any work."""
    image_labels, names = check_class_labels(labels, class_names, _n_images(items))
    image_probabilities = _check_probabilities(probabilities, items)
    if config.mapper_lens == "probability" and image_probabilities is None:
        raise TopoLensError(
            "the Mapper lens 'probability' needs the model's class probabilities per image; "
            "pass probabilities= (predict_proba) or choose another lens"
        )
    n_classes = None
    if names is not None:
        names = [str(name) for name in names]
        n_classes = len(names)
    elif image_labels is not None and np.any(image_labels >= 0):
        n_classes = int(image_labels.max()) + 1
    return image_labels, names, image_probabilities, n_classes


def _capped(cloud: PointCloud, max_points: int, seed: int) -> PointCloud:
    """The cloud, or a random ``max_points`` of its points (recorded in its meta)."""
    if len(cloud) <= max_points:
        return cloud
    keep = np.sort(
        np.random.default_rng([seed, len(cloud)]).choice(len(cloud), max_points, replace=False)
    )
    capped = cloud.subset(
        keep,
        f"{max_points} of {len(cloud)} points, drawn at random (seed {seed}) "
        f"to keep within the max_points cap of {max_points}",
    )
    capped.meta["points_before_cap"] = len(cloud)
    return capped


def analysed_cloud(cloud: PointCloud, config: AnalysisConfig) -> PointCloud:
    """The cloud a layer's analysis works on (``LayerAnalysis.cloud``): the cloud, or
    ``config.max_points`` of its points drawn with ``config.seed``."""
    return _capped(cloud, config.max_points, int(config.seed))


def _phdim_or_nan(points: np.ndarray, config: AnalysisConfig) -> PHDimResult:
    """The PH dimension, or NaN with the reason when there are too few points for a fit."""
    from .phdim import PHDimResult, ph_dimension  # heavy: phdim imports scipy

    try:
        return ph_dimension(
            points,
            alpha=config.phdim_alpha,
            start=config.phdim_start,
            step=config.phdim_step,
            max_size=config.phdim_max_points,
            metric=config.metric,
            seed=int(config.seed),
            **config.metric_kw,
        )
    except EmptySelectionError as exc:  # too few points for a fit: undefined, say why
        return PHDimResult(
            dimension=math.nan,
            sizes=np.zeros(0, np.int64),
            energies=np.zeros(0),
            slope=math.nan,
            alpha=float(config.phdim_alpha),
            note=str(exc),
        )


def _persistence(points: np.ndarray, config: AnalysisConfig, device: Any) -> PersistenceResult:
    """H0 on the full cloud (on ``device``), H1 on the points chosen by cost."""
    from .persistence import compute_persistence  # heavy: persistence imports scipy

    return compute_persistence(
        points,
        max_dim=config.max_dim,
        metric=config.metric,
        max_points=config.h1_max_points,
        subsample=config.subsample,
        seed=int(config.seed),
        device=device,
        **config.metric_kw,
    )


def _mapper(
    points: np.ndarray,
    known: np.ndarray | None,
    probabilities: np.ndarray | None,
    config: AnalysisConfig,
    n_classes: int | None,
) -> MapperGraph:
    return mapper_graph(
        points,
        known,
        lens=config.mapper_lens,
        probabilities=probabilities if config.mapper_lens == "probability" else None,
        n_cubes=config.mapper_n_cubes,
        perc_overlap=config.mapper_perc_overlap,
        min_samples=config.mapper_min_samples,
        eps=config.mapper_eps,
        n_classes=n_classes,
        seed=int(config.seed),
    )


def _class_persistence(
    points: np.ndarray, known: np.ndarray, config: AnalysisConfig
) -> ClassPersistenceResult:
    from .phdim import class_total_persistence  # heavy: phdim imports scipy

    return class_total_persistence(
        points, known, max_per_class=config.class_max_per_class, seed=int(config.seed)
    )


def _dendrogram(points: np.ndarray, config: AnalysisConfig) -> Dendrogram:
    return heatmap_dendrogram(
        points,
        metric=config.metric,
        order=config.dendrogram_order,
        max_points=config.dendrogram_max_points,
        seed=int(config.seed),
        **config.metric_kw,
    )


def _quality(
    point_labels: np.ndarray, best: np.ndarray, points: np.ndarray, config: AnalysisConfig
) -> Quality:
    """Cluster quality of the best flow stage; without labels the label scores are NaN."""
    return cluster_quality(
        point_labels,
        best,
        points,
        metric=config.metric,
        silhouette_max_points=config.silhouette_max_points,
        seed=int(config.seed),
        **config.metric_kw,
    )


def _iter_layer(
    cloud: PointCloud,
    image_labels: np.ndarray | None,
    image_probabilities: np.ndarray | None,
    config: AnalysisConfig,
    n_classes: int | None,
    device: Any,
) -> Generator[Progress, None, LayerAnalysis]:
    """One layer's whole analysis from checked inputs; yields progress within the layer."""
    seed = int(config.seed)
    cloud = analysed_cloud(cloud, config)
    points = cloud.points
    point_labels = (
        image_labels[cloud.image_index]
        if image_labels is not None
        else np.full(len(cloud), -1, np.int64)
    )
    known = point_labels if np.any(point_labels >= 0) else None  # None: no label is known
    point_probabilities = (
        None if image_probabilities is None else image_probabilities[cloud.image_index]
    )
    steps = _LayerSteps()
    persistence = yield from steps.run(
        "persistence",
        "persistence (H0 full cloud, H1 by measured cost)",
        lambda: _persistence(points, config, device),
    )
    mapper = yield from steps.run(
        "mapper",
        "Mapper graph",
        lambda: _mapper(points, known, point_probabilities, config, n_classes),
    )
    with steps.timed("mapper layout"):  # laid out once, saved: napari and the report draw it
        node_positions = mapper_layout(mapper, seed=seed)
    with steps.timed("placement"):  # what placing other positions in this graph needs
        placement = placement_index(points, mapper, metric=config.metric)
    phdim = yield from steps.run("phdim", "PH dimension", lambda: _phdim_or_nan(points, config))
    class_persistence = None
    if known is None:
        steps.skip("class persistence")
    else:
        class_persistence = yield from steps.run(
            "class persistence",
            "total H0 persistence per class",
            lambda: _class_persistence(points, known, config),
        )
    flow = yield from steps.run(
        "cluster flow",
        "cluster flow",
        lambda: cluster_flow(persistence.linkage, known, noise_size=config.noise_size),
    )
    best = flow.memberships[flow.best_stage]
    blobs = yield from steps.run(
        "blob graph", "blob graph", lambda: blob_graph(points, best, known)
    )
    dendrogram = yield from steps.run(
        "dendrogram", "heatmap dendrogram", lambda: _dendrogram(points, config)
    )
    quality = yield from steps.run(
        "quality", "cluster quality", lambda: _quality(point_labels, best, points, config)
    )
    return LayerAnalysis(
        name=cloud.layer,
        cloud=cloud,
        point_labels=point_labels,
        persistence=persistence,
        mapper=mapper,
        phdim=phdim,
        class_persistence=class_persistence,
        flow=flow,
        blobs=blobs,
        dendrogram=dendrogram,
        quality=quality,
        seconds=steps.seconds,
        mapper_layout=node_positions,
        placement=placement,
    )


def analyze_layer(
    cloud: PointCloud,
    labels: Any = None,
    *,
    config: AnalysisConfig | None = None,
    class_names: Sequence[str] | None = None,
    probabilities: Any = None,
    device: Any = None,
) -> LayerAnalysis:
    """The analysis of one layer's cloud, exactly as :func:`iter_analyze` makes it.

    What a Dask worker runs for each layer (``scheduler=``). ``labels``,
    ``class_names`` and ``probabilities`` are per image, as for :func:`iter_analyze`;
    ``device`` is where the H0 tree's distance blocks run (checked here).
    """
    config = _checked_config(config)
    items = checked_clouds([cloud])
    image_labels, _names, image_probabilities, n_classes = _checked_inputs(
        items, labels, class_names, probabilities, config
    )
    steps = _iter_layer(
        items[0],
        image_labels,
        image_probabilities,
        config,
        n_classes,
        resolve_h0_device(device, None),
    )
    return drive(steps)


def _layer_task(
    cloud: PointCloud,
    labels: np.ndarray | None,
    probabilities: np.ndarray | None,
    config: AnalysisConfig,
    class_names: list[str] | None,
    device: Any,
) -> LayerAnalysis:
    """One layer's analysis on a Dask worker (its name is the task's name on the cluster)."""
    return analyze_layer(
        cloud,
        labels,
        config=config,
        class_names=class_names,
        probabilities=probabilities,
        device=device,
    )


def _checked_config(config: AnalysisConfig | None) -> AnalysisConfig:
    if config is not None and not isinstance(config, AnalysisConfig):
        raise TopoLensError(
            f"config must be an AnalysisConfig or None, got {type(config).__name__}"
        )
    return AnalysisConfig() if config is None else config


def _layer_distances(results: list[LayerAnalysis], config: AnalysisConfig) -> dict[str, np.ndarray]:
    """The ``(L, L)`` distances of every kind between the layers' H``distance_dim`` diagrams."""
    diagrams = [result.persistence.diagrams[config.distance_dim] for result in results]
    layer_distances: dict[str, np.ndarray] = {}
    for kind in _DISTANCE_KINDS:
        options: dict[str, Any] = {}
        if kind == "wasserstein":
            options["p"] = config.wasserstein_p
        elif kind == "sliced_wasserstein":
            options["n_directions"] = config.sw_n_directions
        layer_distances[kind] = np.asarray(
            diagram_distance_matrix(diagrams, kind, **options), dtype=np.float64
        )
    return layer_distances


def _cka(items: list[PointCloud]) -> tuple[np.ndarray, str]:
    """Linear CKA between the layers (NaN when undefined), and a note saying how."""
    features, common = _cka_features(items)
    if len(common) < 2:
        return (
            np.full((len(items), len(items)), np.nan),
            "linear CKA undefined: fewer than 2 images have points in every layer",
        )
    note = (
        f"linear CKA on per-image mean activation vectors, rows aligned by image index "
        f"over the {len(common)} images with points in every layer"
    )
    return np.asarray(cka_matrix(features), dtype=np.float64), note


def _iter_cross_layer(
    results: list[LayerAnalysis], items: list[PointCloud], config: AnalysisConfig, start: float
) -> Generator[Progress, None, tuple[dict[str, np.ndarray], str]]:
    """Diagram distances and CKA between the layers, once, after every layer's analysis."""
    share = (1.0 - start) / _CROSS_LAYER_WEIGHT
    yield Progress(
        min(start, 1.0), f"distances between the H{config.distance_dim} diagrams of the layers"
    )
    layer_distances = _layer_distances(results, config)
    yield Progress(min(start + share, 1.0), "linear CKA between the layers")
    layer_distances["cka"], cka_note = _cka(items)
    return layer_distances, cka_note


def _provenance(
    given: Mapping[str, Any] | None,
    config: AnalysisConfig,
    items: list[PointCloud],
    cka_note: str,
) -> dict[str, Any]:
    """What the caller gave, with seeds, library versions, time, caps and notes added."""
    seed = int(config.seed)
    record: dict[str, Any] = dict(given or {})
    record.setdefault("seed", seed)
    record["seeds"] = {"analysis": seed, **dict(record.get("seeds", {}))}
    record["libraries"] = _library_versions()
    record["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record["n_images"] = _n_images(items)
    record["caps"] = {**dict(record.get("caps", {})), **caps_applied(config, items)}
    # how the pixels were scaled for the model (extraction records it in each cloud)
    scales = sorted(
        {str(c.meta["input_scale_text"]) for c in items if "input_scale_text" in c.meta}
    )
    if scales:
        record.setdefault("input_scale", "; ".join(scales))
    scale_warnings = sorted({str(c.meta.get("input_scale_warning") or "") for c in items} - {""})
    record["notes"] = {
        **dict(record.get("notes", {})),
        "cka": cka_note,
        "layer_distances": (
            f"distances between the H{config.distance_dim} persistence diagrams (finite bars) "
            "of the layers"
        ),
        "h1": (
            f"H1 on at most {config.h1_max_points} points per layer ({config.subsample}: "
            "see each layer's persistence.h1_route for the points, landmarks and cut used); "
            "H0 on the full cloud"
        ),
    }
    if scale_warnings:
        record["notes"]["input_scale"] = " ".join(scale_warnings)
    return record


def _iter_layers(
    items: list[PointCloud],
    image_labels: np.ndarray | None,
    image_probabilities: np.ndarray | None,
    config: AnalysisConfig,
    n_classes: int | None,
    class_names: list[str] | None,
    h0_device: Any,
    scheduler: Any,
    stop: float,
) -> Generator[Progress, None, list[LayerAnalysis]]:
    """Every layer's analysis, here or as one Dask task per layer; progress in ``[0, stop]``."""
    if scheduler is not None:  # the same per-layer analysis, run by the workers
        remote = iter_remote_tasks(
            scheduler,
            _layer_task,
            items,
            shared=(image_labels, image_probabilities),
            constants=(config, class_names, h0_device),
            scatter_items=True,
            what="layer",
        )
        return (yield from scaled(remote, 0.0, stop))
    results = []
    for number, cloud in enumerate(items):
        steps = _iter_layer(cloud, image_labels, image_probabilities, config, n_classes, h0_device)
        prefix = f"layer {number + 1}/{len(items)} {cloud.layer}: "
        span = (number * stop / len(items), (number + 1) * stop / len(items))
        results.append((yield from scaled(steps, *span, prefix)))
    return results


def iter_analyze(
    clouds: Mapping[str, PointCloud] | Sequence[PointCloud],
    labels: Any = None,
    *,
    config: AnalysisConfig | None = None,
    class_names: Sequence[str] | None = None,
    probabilities: Any = None,
    predictions: Any = None,
    provenance: Mapping[str, Any] | None = None,
    images: Any = None,
    scheduler: Any = None,
    device: Any = None,
) -> Generator[Progress, None, Analysis]:
    """Analyse each layer's point cloud and compare the layers; yields progress.

    Parameters
    ----------
    clouds : dict of str to PointCloud, or list of PointCloud
        One cloud per layer, in forward order (as ``extract_activations`` returns).
    labels : array of int, shape (N,), optional
        Class per IMAGE (-1 unknown); each point gets ``labels[cloud.image_index]``.
        Whole numbers are the model's class indices and are kept as they are (so
        ``predictions`` compare with them); see :func:`check_class_labels`.
    config : AnalysisConfig, optional
        Parameters; the published defaults when omitted.
    class_names : list of str, optional
        Distinct names of the classes 0..K-1 (a list, not one comma-separated string).
    probabilities : array, shape (N, K), optional
        Softmax per image; needed only for ``config.mapper_lens == "probability"``.
    predictions : array of int, shape (N,), optional
        The model's predicted class per image (-1 unknown), kept in the analysis
        so that views can colour by predicted class and by correct/incorrect.
        ``argmax`` of ``predict_proba``; labels may be these predictions when a
        user's images have no true labels.
    provenance : dict, optional
        What the caller knows (model spec, sample name, image source); seeds,
        library versions and the creation time are added.
    images : array, shape (N, H, W) or (N, H, W, 3), optional
        The images ``cloud.image_index`` refers to, kept in the analysis (and its
        saved folder) so that links to pixels work without the original files.
    scheduler : str or distributed.Client, optional
        A dask.distributed scheduler: each layer's analysis (:func:`analyze_layer`)
        runs as one Dask task there (same code, same result); the cross-layer
        matrices run here, once.
    device : str or torch.device, optional
        Where the distance blocks of each layer's exact H0 tree run, through torch
        (``"cuda"``, ``"cuda:N"``, ``"mps"``); ``None`` or ``"cpu"``: numpy on the
        CPU. The diagrams are the same either way (see ``topology.mst``).

    Yields
    ------
    Progress
        Per layer and step; a consumer may stop between any two steps.

    Returns
    -------
    Analysis
    """
    config = _checked_config(config)
    h0_device = resolve_h0_device(device, scheduler)
    items = checked_clouds(clouds)
    image_labels, names, image_probabilities, n_classes = _checked_inputs(
        items, labels, class_names, probabilities, config
    )
    image_predictions = _check_predictions(predictions, items)
    image_stack = check_images(images, items)
    layer_share = _LAYER_WEIGHT * len(items)
    stop = layer_share / (layer_share + _CROSS_LAYER_WEIGHT)
    results = yield from _iter_layers(
        items,
        image_labels,
        image_probabilities,
        config,
        n_classes,
        names,
        h0_device,
        scheduler,
        stop,
    )
    layer_distances, cka_note = yield from _iter_cross_layer(results, items, config, stop)
    record = _provenance(provenance, config, items, cka_note)
    yield Progress(1.0, "analysis done")
    return Analysis(
        layer_results=results,
        layer_distances=layer_distances,
        config=config,
        provenance=record,
        labels=image_labels,
        class_names=names,
        probabilities=image_probabilities,
        predictions=image_predictions,
        images=image_stack,
    )


def check_images(images: Any, items: list[PointCloud]) -> np.ndarray | None:
    """The images as ``(N, H, W)`` or ``(N, H, W, 3)`` float32, in any layout extraction takes."""
    if images is None:
        return None
    batch = as_image_batch(images)  # (N, C, H, W)
    stack = batch[:, 0] if batch.shape[1] == 1 else np.moveaxis(batch, 1, -1)
    needed = _n_images(items)
    if len(stack) < needed:
        raise ImageError(
            f"{len(stack)} images were given, but the clouds refer to {needed}; pass the "
            "images the activations were extracted from"
        )
    if stack.shape[1:3] != tuple(items[0].image_shape):
        raise ImageError(
            f"images are {stack.shape[1]}x{stack.shape[2]} pixels but the clouds were made from "
            f"{items[0].image_shape[0]}x{items[0].image_shape[1]} images"
        )
    return stack


def analyze(
    clouds: Mapping[str, PointCloud] | Sequence[PointCloud],
    labels: Any = None,
    *,
    config: AnalysisConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    **kw: Any,
) -> Analysis:
    """Plain form of :func:`iter_analyze`: ``progress(fraction, message)`` callbacks and
    ``cancel()`` checked between steps (raises ``Cancelled``)."""
    return drive(iter_analyze(clouds, labels, config=config, **kw), progress, cancel)
