"""The science: persistence, Mapper, HOLE views and their analysis object.

Plain numpy/scipy/gudhi/kmapper; never imports torch, napari or Qt. Names are
re-exported lazily so that importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "METRICS": ".config",
    "distance_matrix": ".metrics",
    "single_linkage": ".metrics",
    "PersistenceResult": ".persistence",
    "compute_persistence": ".persistence",
    "persistence_diagrams": ".persistence",
    "DIAGRAM_DISTANCES": ".distances",
    "diagram_distance": ".distances",
    "diagram_distance_matrix": ".distances",
    "linear_cka": ".distances",
    "cka_matrix": ".distances",
    "PHDimResult": ".phdim",
    "ph_dimension": ".phdim",
    "class_total_persistence": ".phdim",
    "MapperGraph": ".mapper",
    "mapper_graph": ".mapper",
    "knee_eps": ".mapper",
    "ClusterFlow": ".hole",
    "cluster_flow": ".hole",
    "BlobGraph": ".hole",
    "blob_graph": ".hole",
    "Dendrogram": ".hole",
    "heatmap_dendrogram": ".hole",
    "Quality": ".quality",
    "cluster_quality": ".quality",
    "AnalysisConfig": ".config",
    "LayerAnalysis": ".results",
    "Analysis": ".results",
    "analyze": ".analysis",
    "iter_analyze": ".analysis",
    "load_analysis": ".store",
    "Placement": ".placement",
    "PlacementIndex": ".results",
    "place": ".placement",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return list(__all__)
