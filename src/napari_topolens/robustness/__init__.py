"""Perturbed and compressed variants of a run, and how their topology drifts.

Headless (no napari or Qt; torch imported lazily): :func:`perturb`,
:func:`compress`, :func:`compare`, :class:`VariantSpec` and :func:`variant_inputs`.
Running variants with their base is the run pipeline's work:
``napari_topolens.run_variants`` (``napari_topolens.pipeline.variants``).
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
    "parse_variants",
    "perturb",
    "receptive_field_heat",
    "sparsity",
    "variant_inputs",
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
    "parse_variants": ".study",
    "variant_inputs": ".study",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
