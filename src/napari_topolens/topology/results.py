"""The result types of an analysis, of its variants and of their comparison.

Plain data (numpy arrays, numbers, text and other result types), saved and loaded
losslessly by ``topology.store``, which checks every saved value against the
annotations here: they name the real types so that nested results (a variant's
own analysis) are checked like the top one. The code that computes them lives in
``topology.analysis``, ``topology.placement``, ``robustness.study`` and
``robustness.comparison``, which re-export the names.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..activations.pointcloud import PointCloud
from ..errors import LayerError, TopoLensError
from .config import AnalysisConfig
from .hole import BlobGraph, ClusterFlow, Dendrogram
from .mapper import MapperGraph
from .quality import Quality
from .store_files import save_analysis
from .store_types import type_problem
from .variant_kinds import PERTURBATIONS, QUANTIZATIONS, check_strength, strength_range_text

if TYPE_CHECKING:  # heavy: persistence and phdim import scipy (via metrics); the loader
    # resolves these names through its registry of result classes
    from .persistence import PersistenceResult
    from .phdim import ClassPersistenceResult, PHDimResult

__all__ = [
    "Analysis",
    "Comparison",
    "LayerAnalysis",
    "LayerDrift",
    "PlacementIndex",
    "Variant",
    "VariantSpec",
]


@dataclass
class PlacementIndex:
    """What a layer's analysis keeps so that new vectors can be placed in it.

    Attributes
    ----------
    lens : str
        The Mapper lens (``"custom"`` lenses cannot be placed).
    lens_mean : ndarray (D,) float64
        PCA lenses: the cloud's mean; empty otherwise.
    lens_axes : ndarray (D, L) float64
        PCA lenses: the signed principal axes (lens = ``(x - mean) @ axes``);
        ``(0, 0)`` otherwise.
    cube_lower, cube_upper : ndarray (C, L) float64
        The closed interval of every cube kmapper kept (the non-empty ones, in its
        order: node ``cube{i}_...`` belongs to row ``i``).
    eps : float
        DBSCAN's eps (nan when no node could form).
    min_samples : int
    member_core : ndarray (len(mapper.members),) bool
        Whether each member entry of the Mapper graph (CSR order) is a core point
        of its node's cube.
    node_cube, node_cluster : ndarray (n_nodes,) int64
        Cube row and DBSCAN cluster number of every node.
    metric : str
        The cluster flow's metric (only ``"euclidean"`` places the flow).
    note : str
        Why something cannot be placed, when it cannot.
    """

    lens: str
    lens_mean: np.ndarray
    lens_axes: np.ndarray
    cube_lower: np.ndarray
    cube_upper: np.ndarray
    eps: float
    min_samples: int
    member_core: np.ndarray
    node_cube: np.ndarray
    node_cluster: np.ndarray
    metric: str = "euclidean"
    note: str = ""

    @property
    def n_lens(self) -> int:
        return int(self.cube_lower.shape[1]) if self.cube_lower.ndim == 2 else 0


@dataclass
class LayerAnalysis:
    """Everything computed for one layer; member indices are rows of ``cloud``.

    ``class_persistence`` is ``None`` without labels. ``quality`` compares the
    true labels with the clusters of the best cluster-flow stage (all NaN without
    labels). ``mapper_layout`` holds the Mapper node positions ``(n_nodes, 2)``
    (row, col in the unit square, ``layout.mapper_layout``) that napari and the
    report both draw; None only in analyses saved before it was recorded.
    ``placement`` holds what placing new vectors in this layer's Mapper graph and
    cluster flow needs (``topology.placement``); None only in analyses saved before
    it was recorded (placement then rebuilds it from the saved graph).
    """

    name: str
    cloud: PointCloud
    point_labels: np.ndarray
    persistence: PersistenceResult
    mapper: MapperGraph
    phdim: PHDimResult
    class_persistence: ClassPersistenceResult | None
    flow: ClusterFlow
    blobs: BlobGraph
    dendrogram: Dendrogram
    quality: Quality
    seconds: dict[str, float] = field(default_factory=dict)
    mapper_layout: np.ndarray | None = None
    placement: PlacementIndex | None = None

    @property
    def best_clusters(self) -> np.ndarray:
        """Cluster of every point at the best cluster-flow stage (-1: noise)."""
        return self.flow.memberships[self.flow.best_stage]


@dataclass
class Analysis:
    """The topology of several layers of one model on one image set.

    Attributes
    ----------
    layer_results : list of LayerAnalysis
        In the model's forward order; ``analysis[name]`` picks one by name.
    layer_distances : dict of str to ndarray
        ``(L, L)`` matrices over ``layers``: ``"sliced_wasserstein"``,
        ``"bottleneck"``, ``"wasserstein"`` between the H``distance_dim``
        diagrams (finite bars), and ``"cka"``, linear CKA between per-image mean
        activation vectors, rows aligned by image index over the images present
        in every layer.
    config : AnalysisConfig
    provenance : dict
        Model spec, sample or image description, seeds, library versions,
        creation time, and notes on what was done (e.g. the CKA alignment).
    labels : ndarray or None
        Class label per image (-1 unknown).
    class_names : list of str or None
    probabilities : ndarray or None
        ``(N, K)`` softmax per image when the caller gave it.
    predictions : ndarray or None
        The model's predicted class per image (int64, the index of its largest
        output; -1 for images it was not run on), when the caller gave it. It is
        comparable with ``labels`` when the label codes are the model's class
        indices (the samples, or integer labels of a user's model).
    images : ndarray or None
        The images the clouds' ``image_index`` refers to, when the caller gave them.
    variants : list of Variant
        Perturbed or compressed runs of the same images, each a :class:`Variant`
        holding its own analysis and its :class:`Comparison` with this one (see
        ``napari_topolens.run_variants``); saved and loaded with the analysis. Empty for
        a plain analysis.
    """

    layer_results: list[LayerAnalysis]
    layer_distances: dict[str, np.ndarray]
    config: AnalysisConfig
    provenance: dict[str, Any]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    probabilities: np.ndarray | None = None
    predictions: np.ndarray | None = None
    images: np.ndarray | None = None
    variants: list[Variant] = field(default_factory=list)

    @property
    def layers(self) -> list[str]:
        """Layer names in forward order."""
        return [result.name for result in self.layer_results]

    def __getitem__(self, name: str) -> LayerAnalysis:
        for result in self.layer_results:
            if result.name == name:
                return result
        raise LayerError(
            f"layer {name!r} is not in this analysis; analysed layers: {', '.join(self.layers)}"
        )

    def __contains__(self, name: object) -> bool:
        return any(result.name == name for result in self.layer_results)

    def __len__(self) -> int:
        return len(self.layer_results)

    def __iter__(self) -> Iterator[LayerAnalysis]:
        return iter(self.layer_results)

    @property
    def n_classes(self) -> int:
        """Number of classes (0 without labels)."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is None or not np.any(self.labels >= 0):
            return 0
        return int(self.labels.max()) + 1

    def save(self, path: str | os.PathLike) -> Path:
        """Save losslessly to the folder ``path`` (see ``topology.store``)."""
        return save_analysis(self, path)


@dataclass
class VariantSpec:
    """What makes a variant: a perturbation of the images, or a compression of the model.

    Attributes
    ----------
    perturbation : str or None
        A kind of :data:`~napari_topolens.topology.variant_kinds.PERTURBATIONS`.
    strength : float or None
        The perturbation's strength.
    prune : float or None
        Fraction of conv/linear weights pruned (global magnitude).
    quantize : str or None
        ``"int8"``: dynamic INT8 quantisation of the linear layers.
    seed : int
        Seed of the perturbation.
    """

    perturbation: str | None = None
    strength: float | None = None
    prune: float | None = None
    quantize: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for argument, name in (("perturbation", self.perturbation), ("quantize", self.quantize)):
            if name is not None and not isinstance(name, str):
                raise TopoLensError(f"{argument} must be a name (text), got {name!r:.40}")
        for argument, number in (("strength", self.strength), ("prune", self.prune)):
            if number is not None and (
                isinstance(number, (bool, np.bool_))
                or not isinstance(number, (int, float, np.number))
            ):
                raise TopoLensError(f"{argument} must be a number, got {number!r:.40}")
        if type_problem(self.seed, int) is not None:
            raise TopoLensError(f"seed must be a whole number, got {self.seed!r:.40}")
        perturbs = self.perturbation is not None
        compresses = self.prune is not None or self.quantize is not None
        if perturbs == compresses:
            raise TopoLensError(
                "a variant either perturbs the images (perturbation + strength) or "
                "compresses the model (prune and/or quantize), not both or neither"
            )
        if perturbs:
            if self.perturbation not in PERTURBATIONS:
                raise TopoLensError(
                    f"unknown perturbation {self.perturbation!r}; choose one of "
                    f"{', '.join(PERTURBATIONS)}"
                )
            if self.strength is None:
                raise TopoLensError(
                    f"perturbation {self.perturbation} needs a strength within "
                    f"{strength_range_text(self.perturbation)}"
                )
            self.strength = check_strength(self.perturbation, self.strength)
        if self.prune is not None:
            self.prune = float(self.prune)
            if not 0.0 <= self.prune <= 1.0:
                raise TopoLensError(f"prune must be a fraction between 0 and 1, got {self.prune}")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise TopoLensError(
                f"unknown quantisation {self.quantize!r}; choose one of {', '.join(QUANTIZATIONS)}"
            )
        if int(self.seed) < 0:
            raise TopoLensError(f"seed must be a non-negative integer, got {self.seed}")

    @property
    def name(self) -> str:
        """The spec as written on the command line, e.g. ``gaussian:0.1`` or ``prune:0.5+int8``."""
        if self.perturbation is not None:
            return f"{self.perturbation}:{self.strength:g}"
        parts = []
        if self.prune is not None:
            parts.append(f"prune:{self.prune:g}")
        if self.quantize is not None:
            parts.append(self.quantize)
        return "+".join(parts)

    @property
    def is_perturbation(self) -> bool:
        return self.perturbation is not None

    @classmethod
    def parse(cls, text: str, *, seed: int = 0) -> VariantSpec:
        """One spec from text: ``kind:strength``, ``prune:fraction``, ``int8`` or a ``+`` of both."""
        text = str(text).strip()
        if not text:
            raise TopoLensError("an empty variant spec; write e.g. gaussian:0.1 or prune:0.5")
        prune: float | None = None
        quantize: str | None = None
        for part in text.split("+"):
            head, sep, value = part.strip().partition(":")
            head = head.strip().lower()
            if head in QUANTIZATIONS and not sep:
                if quantize is not None:
                    raise TopoLensError(f"variant {text!r} quantises twice; give {head} once")
                quantize = head
                continue
            if not sep:
                raise TopoLensError(
                    f"variant {part!r} needs a strength: write {head}:VALUE (e.g. {head}:0.1)"
                    if head in PERTURBATIONS or head == "prune"
                    else f"unknown variant {part!r}; use one of {', '.join(PERTURBATIONS)}, "
                    "prune:FRACTION or int8"
                )
            try:
                number = float(value)
            except ValueError:
                raise TopoLensError(f"variant {part!r}: {value!r} is not a number") from None
            if head == "prune":
                if prune is not None:
                    raise TopoLensError(
                        f"variant {text!r} prunes twice; give one prune:FRACTION per model"
                    )
                prune = number
            elif head in PERTURBATIONS:
                if "+" in text:
                    raise TopoLensError(
                        f"variant {text!r}: only prune and int8 combine with '+'; give "
                        "perturbations as separate variants"
                    )
                return cls(perturbation=head, strength=number, seed=seed)
            else:
                raise TopoLensError(
                    f"unknown variant {part!r}; use one of {', '.join(PERTURBATIONS)}, "
                    "prune:FRACTION or int8"
                )
        return cls(prune=prune, quantize=quantize, seed=seed)


@dataclass
class Variant:
    """One variant run: what was changed, its analysis and its comparison with the base.

    Attributes
    ----------
    name : str
        The spec as text (``gaussian:0.1``, ``prune:0.5+int8``).
    spec : VariantSpec
    analysis : Analysis
        Of the perturbed images (kept in ``analysis.images``), or of the base images
        through the compressed model (``analysis.images`` is ``None``: they are the
        base's).
    comparison : Comparison
        Base versus this variant.
    seconds : dict of str to float
        Time spent perturbing or compressing, extracting and analysing.
    """

    name: str
    spec: VariantSpec
    analysis: Analysis
    comparison: Comparison
    seconds: dict[str, float] = field(default_factory=dict)

    def images(self, base: Analysis) -> np.ndarray | None:
        """The images this variant's clouds index: its perturbed set, else ``base.images``."""
        return self.analysis.images if self.analysis.images is not None else base.images


@dataclass
class LayerDrift:
    """How one layer's topology changed from the base to the variant.

    Attributes
    ----------
    layer : str
    bottleneck, sliced_wasserstein : ndarray (max_dim + 1,) float64
        Distance between the base's and the variant's diagram of each homology
        dimension (index 0: H0, 1: H1), finite bars.
    quality_base, quality_variant : dict of str to float
        The numbers of :data:`~napari_topolens.robustness.comparison.QUALITY_NUMBERS` in
        each analysis.
    image_score : ndarray (N,) float64
        Per image, the mean of its Mapper-node and its cluster Jaccard distance
        (after matching); nan for an image without points in either analysis.
    mapper_moved, cluster_moved : ndarray (N,) bool
        The image's matched Mapper node set / best-stage cluster set changed.
    bottleneck_scale, sliced_wasserstein_scale : ndarray (max_dim + 1,) float64
        The same distances from the base's diagram to the empty diagram: the
        scale of the base's topology at this layer. A distance divided by it
        (``distance(..., relative=True)``) compares across layers whose
        activations differ in scale.
    """

    layer: str
    bottleneck: np.ndarray
    sliced_wasserstein: np.ndarray
    quality_base: dict[str, float]
    quality_variant: dict[str, float]
    image_score: np.ndarray
    mapper_moved: np.ndarray
    cluster_moved: np.ndarray
    bottleneck_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sliced_wasserstein_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def moved(self) -> np.ndarray:
        """(N,) bool: the image's Mapper node set or its best-stage cluster changed."""
        return self.mapper_moved | self.cluster_moved

    @property
    def compared(self) -> np.ndarray:
        """(N,) bool: the image has points in both analyses of this layer."""
        return np.isfinite(self.image_score)

    @property
    def moved_fraction(self) -> float:
        """Fraction of the compared images that moved (nan when none was compared)."""
        n = int(self.compared.sum())
        return float(self.moved[self.compared].sum() / n) if n else math.nan

    @property
    def quality_change(self) -> dict[str, float]:
        """Variant minus base for each quality number."""
        return {k: self.quality_variant[k] - self.quality_base[k] for k in self.quality_base}

    def distance(
        self, kind: str = "sliced_wasserstein", dim: int = 1, *, relative: bool = False
    ) -> float:
        """The ``kind`` distance between the H``dim`` diagrams (nan if not computed).

        ``relative``: divided by the base diagram's distance from the empty diagram
        (0 when both are 0, nan when only the scale is).
        """
        values = {"sliced_wasserstein": self.sliced_wasserstein, "bottleneck": self.bottleneck}
        scales = {
            "sliced_wasserstein": self.sliced_wasserstein_scale,
            "bottleneck": self.bottleneck_scale,
        }
        if kind not in values:
            raise TopoLensError(f"unknown distance {kind!r}; use sliced_wasserstein or bottleneck")
        array = values[kind]
        value = float(array[dim]) if 0 <= dim < len(array) else math.nan
        if not relative:
            return value
        scale = float(scales[kind][dim]) if 0 <= dim < len(scales[kind]) else math.nan
        if value == 0.0:
            return 0.0
        return value / scale if scale > 0 else math.nan


@dataclass
class Comparison:
    """Drift of a variant's topology from its base's, layer by layer.

    Attributes
    ----------
    base_name, variant_name : str
    drifts : list of LayerDrift
        One per layer both analyses have, in the base's forward order.
    n_images : int
    accuracy_base, accuracy_variant : float
        Top-1 accuracy of the model's predictions (``Analysis.predictions``, else
        the argmax of ``Analysis.probabilities``) on the labelled images it was run
        on (images of a stack that were not analysed are left out); nan without
        labels or predictions, and for text labels numbered by their own names
        (not the model's class indices).
    prediction_changed : float
        Fraction of the images both were run on whose predicted class differs; nan
        without predictions.
    notes : dict of str to str
    """

    base_name: str
    variant_name: str
    drifts: list[LayerDrift]
    n_images: int
    accuracy_base: float
    accuracy_variant: float
    prediction_changed: float
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return [d.layer for d in self.drifts]

    def __getitem__(self, layer: str) -> LayerDrift:
        for drift in self.drifts:
            if drift.layer == layer:
                return drift
        raise LayerError(f"layer {layer!r} was not compared; compared: {', '.join(self.layers)}")

    @property
    def moved_fraction(self) -> np.ndarray:
        """(L,) fraction of images that moved, per layer."""
        return np.array([d.moved_fraction for d in self.drifts])

    def distances(
        self, kind: str = "sliced_wasserstein", dim: int = 1, *, relative: bool = False
    ) -> np.ndarray:
        """(L,) diagram distance per layer (``relative``: see :meth:`LayerDrift.distance`)."""
        return np.array([d.distance(kind, dim, relative=relative) for d in self.drifts])

    def mean_drift(
        self, kind: str = "sliced_wasserstein", dim: int = 1, *, relative: bool = False
    ) -> float:
        """Mean over layers of the H``dim`` diagram distance (the headline drift number).

        Raw distances are on each layer's own activation scale, so the layer with the
        largest activations dominates the mean; ``relative=True`` weighs layers alike.
        """
        values = self.distances(kind, dim, relative=relative)
        values = values[np.isfinite(values)]
        return float(values.mean()) if len(values) else math.nan

    def most_moved(self, n: int = 8) -> list[tuple[str, int, float]]:
        """The ``n`` images that moved most, as (layer, image, score), most moved first.

        Images are ranked by their score summed over the layers where they moved
        (a score saturates at 1, so this separates an image that moved at one layer
        from one that moved at all); each is given with the layer of its highest
        score (the earliest on ties).
        """
        total: dict[int, float] = {}
        best: dict[int, tuple[str, float]] = {}
        for drift in self.drifts:
            scores = np.nan_to_num(drift.image_score, nan=0.0)
            for image in np.flatnonzero(drift.moved).tolist():
                score = float(scores[image])
                total[image] = total.get(image, 0.0) + score
                if image not in best or score > best[image][1]:
                    best[image] = (drift.layer, score)
        ranked = sorted(total, key=lambda image: (-total[image], image))[: int(n)]
        return [(best[image][0], image, best[image][1]) for image in ranked]
