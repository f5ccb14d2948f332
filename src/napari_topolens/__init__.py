"""napari-topolens: the shape of a network's activations, linked back to pixels.

The public API is importable from here without loading torch, gudhi or kmapper;
each name is imported on first use so that napari starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_LAZY = {
    # activations
    "PointCloud": "napari_topolens.activations.pointcloud",
    "extract_activations": "napari_topolens.activations.extract",
    "iter_extract_activations": "napari_topolens.activations.extract",
    "predict_proba": "napari_topolens.activations.extract",
    "SAMPLING_MODES": "napari_topolens.activations.extract",
    "InputScale": "napari_topolens.activations.input_scale",
    "list_layers": "napari_topolens.activations.models",
    "load_model": "napari_topolens.activations.models",
    # samples
    "Sample": "napari_topolens.samples",
    "load_sample": "napari_topolens.samples",
    "SAMPLE_NAMES": "napari_topolens.samples",
    # topology
    "Analysis": "napari_topolens.topology.results",
    "AnalysisConfig": "napari_topolens.topology.config",
    "LayerAnalysis": "napari_topolens.topology.results",
    "analyze": "napari_topolens.topology.analysis",
    "iter_analyze": "napari_topolens.topology.analysis",
    "load_analysis": "napari_topolens.topology.store",
    "persistence_diagrams": "napari_topolens.topology.persistence",
    "compute_persistence": "napari_topolens.topology.persistence",
    "mapper_graph": "napari_topolens.topology.mapper",
    "ph_dimension": "napari_topolens.topology.phdim",
    # placement: any position of any image, placed in a saved analysis
    "Placement": "napari_topolens.topology.placement",
    "place": "napari_topolens.topology.placement",
    "TopologyMap": "napari_topolens.maps",
    "MapDrift": "napari_topolens.maps",
    "topology_map": "napari_topolens.maps",
    "iter_topology_map": "napari_topolens.maps",
    "map_drift": "napari_topolens.maps",
    # robustness: perturbed and compressed variants
    "PERTURBATIONS": "napari_topolens.topology.variant_kinds",
    "STRENGTH_RANGES": "napari_topolens.topology.variant_kinds",
    "perturb": "napari_topolens.robustness.perturbations",
    "compress": "napari_topolens.robustness.compression",
    "Comparison": "napari_topolens.topology.results",
    "LayerDrift": "napari_topolens.topology.results",
    "compare": "napari_topolens.robustness.comparison",
    "Variant": "napari_topolens.topology.results",
    "VariantSpec": "napari_topolens.topology.results",
    "parse_variants": "napari_topolens.robustness.study",
    # the run pipeline: one job, one run, used by the command, the widget and run_variants
    "RunJob": "napari_topolens.pipeline.job",
    "Provenance": "napari_topolens.pipeline.provenance",
    "iter_run": "napari_topolens.pipeline.run",
    "run_variants": "napari_topolens.pipeline.variants",
    "iter_run_variants": "napari_topolens.pipeline.variants",
    # report
    "write_report": "napari_topolens.report.html",
    # napari: hand a model built in Python to the analysis widget (imports no napari)
    "add_model": "napari_topolens.ui.model_registry",
    "remove_model": "napari_topolens.ui.model_registry",
    # errors (cheap, but kept lazy for symmetry)
    "TopoLensError": "napari_topolens.errors",
    "Cancelled": "napari_topolens.errors",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_topolens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs only
    from .activations.extract import extract_activations, iter_extract_activations, predict_proba
    from .activations.input_scale import InputScale
    from .activations.models import list_layers, load_model
    from .activations.pointcloud import PointCloud
    from .errors import Cancelled, TopoLensError
    from .maps import MapDrift, TopologyMap, iter_topology_map, map_drift, topology_map
    from .pipeline.job import RunJob
    from .pipeline.provenance import Provenance
    from .pipeline.run import iter_run
    from .pipeline.variants import iter_run_variants, run_variants
    from .robustness.comparison import compare
    from .robustness.compression import compress
    from .robustness.perturbations import perturb
    from .robustness.study import parse_variants
    from .topology.results import Comparison, LayerDrift, Variant, VariantSpec
    from .topology.variant_kinds import PERTURBATIONS, STRENGTH_RANGES
    from .ui.model_registry import add_model, remove_model
