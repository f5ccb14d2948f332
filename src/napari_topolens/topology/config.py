"""The parameters of an analysis (:class:`AnalysisConfig`), checked when it is made."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import TopoLensError
from .store_types import field_hints, type_problem

__all__ = ["DISTANCE_KINDS", "LENSES", "METRICS", "AnalysisConfig"]

#: The Mapper lenses an analysis can use.
LENSES = ("l2norm", "pca1", "pca2", "probability")
#: The metrics a point cloud can be measured with (``topology.metrics``; named here, where
#: a form or a config can list them without importing scipy).
METRICS = ("euclidean", "cosine", "mahalanobis", "geodesic", "density")
#: The diagram distances computed between layers.
DISTANCE_KINDS = ("sliced_wasserstein", "bottleneck", "wasserstein")


@dataclass
class AnalysisConfig:
    """Every parameter of an analysis, with the published defaults (docs/methods.md).

    Attributes
    ----------
    metric : str
        Point-cloud metric for persistence, PH dimension, the dendrogram and the
        silhouette (one of :data:`METRICS`).
    max_points : int
        Points per layer the analysis uses (default 100,000). A larger cloud is
        subsampled at random with ``seed`` first, and the subset is recorded in the
        cloud's ``meta["subset_note"]``. The default is sized by memory: every
        step holds O(points x features) (exact H0 by an O(N·d) Borůvka tree, Mapper's
        DBSCAN on bounded blocks of pairs), and 100,000 points x 64 features
        analyse in under 2 GB peak (``benchmarks/README.md``).
    max_dim : int
        Highest homology dimension (1: H0 and H1).
    h1_max_points : int
        H1 is computed on at most this many landmarks, because its cost grows
        steeply with N (~10 s at 1,000 points for a noisy circle); H0 always uses
        the full cloud.
    subsample : str
        How the H1 points are chosen: ``"auto"`` (default: the whole cloud up to
        ``h1_max_points``, above that random or max-min landmarks by measured
        cost and closeness, with a certified cut of the filtration; see
        ``topology.persistence``), ``"maxmin"``, ``"random"`` or ``"full"``.
    pca_dims, n_neighbors, density_k : int
        Options of the mahalanobis, geodesic and density metrics.
    mapper_lens : str
        ``"l2norm"`` (default), ``"pca1"``, ``"pca2"`` or ``"probability"`` (the
        model's top predicted-class probability; needs probabilities).
    mapper_n_cubes, mapper_perc_overlap, mapper_min_samples, mapper_eps
        The Mapper cover and DBSCAN clusterer; ``mapper_eps=None`` takes the knee
        of the sorted nearest-neighbour distances.
    noise_size : int
        Cluster-flow clusters of at most this many points are shown as noise.
    layer_distance : str
        The diagram distance shown first across layers (Purvine's choice:
        sliced Wasserstein); all three kinds are always computed.
    distance_dim : int
        Homology dimension compared across layers (1: H1, as Purvine et al.).
    wasserstein_p : float
        Order of the Wasserstein distance.
    sw_n_directions : int
        Directions of the sliced Wasserstein approximation.
    phdim_alpha, phdim_start, phdim_step : float, int, int
        PH dimension: E_alpha over random subsamples of sizes start, start+step, ...
    phdim_max_points : int
        Largest PH-dimension subsample (not in the publications: each size costs a
        quadratic single linkage, and the fit needs only the trend).
    class_max_per_class : int
        Points per class for the per-class total H0 persistence.
    dendrogram_max_points : int
        Points shown in the heatmap dendrogram (a heatmap of more is unreadable).
    dendrogram_order : str
        ``"dendrogram"`` or ``"rcm"`` (reverse Cuthill-McKee) heatmap order.
    silhouette_max_points : int
        Silhouette is computed on at most this many points (it is quadratic).
    seed : int
        Seed of every random step (subsamples, Mapper, layouts).
    """

    metric: str = "euclidean"
    max_points: int = 100_000
    max_dim: int = 1
    h1_max_points: int = 1000
    subsample: str = "auto"
    pca_dims: int = 50
    n_neighbors: int = 10
    density_k: int = 5
    mapper_lens: str = "l2norm"
    mapper_n_cubes: int = 10
    mapper_perc_overlap: float = 0.5
    mapper_min_samples: int = 5
    mapper_eps: float | None = None
    noise_size: int = 3
    layer_distance: str = "sliced_wasserstein"
    distance_dim: int = 1
    wasserstein_p: float = 1.0
    sw_n_directions: int = 50
    phdim_alpha: float = 1.0
    phdim_start: int = 500
    phdim_step: int = 350
    phdim_max_points: int = 2000
    class_max_per_class: int = 250
    dendrogram_max_points: int = 300
    dendrogram_order: str = "dendrogram"
    silhouette_max_points: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # types first, from the annotations
            problem = type_problem(getattr(self, f.name), field_hints(type(self))[f.name])
            if problem:
                raise TopoLensError(f"AnalysisConfig.{f.name} got {problem}")
        choices = {
            "metric": METRICS,
            "subsample": ("auto", "maxmin", "random", "full"),
            "dendrogram_order": ("dendrogram", "rcm"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise TopoLensError(
                    f"{name} {getattr(self, name)!r} is unknown; choose one of {', '.join(allowed)}"
                )
        if not 0.0 < float(self.mapper_perc_overlap) < 1.0:
            raise TopoLensError(
                f"mapper_perc_overlap must lie strictly between 0 and 1, got {self.mapper_perc_overlap}"
            )
        for name in ("max_dim", "noise_size", "seed", "distance_dim"):
            if int(getattr(self, name)) < 0:
                raise TopoLensError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.mapper_lens not in LENSES:
            raise TopoLensError(
                f"mapper_lens {self.mapper_lens!r} is unknown; choose one of {', '.join(LENSES)}"
            )
        if self.layer_distance not in DISTANCE_KINDS:
            raise TopoLensError(
                f"layer_distance {self.layer_distance!r} is unknown; choose one of "
                f"{', '.join(DISTANCE_KINDS)}"
            )
        if self.distance_dim > self.max_dim:
            raise TopoLensError(
                f"distance_dim={self.distance_dim} needs max_dim >= {self.distance_dim} "
                f"(max_dim is {self.max_dim})"
            )
        for name in (
            "max_points",
            "h1_max_points",
            "mapper_n_cubes",
            "mapper_min_samples",
            "phdim_start",
            "phdim_step",
            "phdim_max_points",
            "class_max_per_class",
            "dendrogram_max_points",
            "silhouette_max_points",
            "pca_dims",
            "n_neighbors",
            "density_k",
            "sw_n_directions",
        ):
            if int(getattr(self, name)) < 1:
                raise TopoLensError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("mapper_eps", "phdim_alpha"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise TopoLensError(f"{name} must be a positive finite number, got {value}")
        if not (math.isfinite(self.wasserstein_p) and self.wasserstein_p >= 1):
            raise TopoLensError(f"wasserstein_p must be at least 1, got {self.wasserstein_p}")

    @property
    def metric_kw(self) -> dict[str, int]:
        """The metric options passed on to ``distance_matrix``."""
        return {
            "pca_dims": self.pca_dims,
            "n_neighbors": self.n_neighbors,
            "density_k": self.density_k,
        }

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (JSON-able)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AnalysisConfig:
        """Build a config from a dict, refusing unknown keys (they are likely typos)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TopoLensError(
                f"unknown analysis parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**dict(values))
