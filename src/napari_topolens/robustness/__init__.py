"""Perturbed and compressed variants of a run, and how their topology drifts.

Headless (no napari or Qt; torch imported lazily): :func:`perturb`,
:func:`compress`, :func:`compare` and :func:`run_variants` / :func:`iter_run_variants`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PERTURBATIONS",
    "Comparison",
    "LayerDrift",
    "Variant",
    "VariantSpec",
    "compare",
    "compress",
    "iter_run_variants",
    "parse_variants",
    "perturb",
    "receptive_field_heat",
    "run_variants",
    "sparsity",
]

_LAZY = {
    "PERTURBATIONS": ".perturbations",
    "perturb": ".perturbations",
    "compress": ".compression",
    "sparsity": ".compression",
    "Comparison": ".comparison",
    "LayerDrift": ".comparison",
    "compare": ".comparison",
    "receptive_field_heat": ".comparison",
    "Variant": ".study",
    "VariantSpec": ".study",
    "iter_run_variants": ".study",
    "parse_variants": ".study",
    "run_variants": ".study",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
