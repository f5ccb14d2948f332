"""Perturbed and compressed variants of a run, and how their topology drifts.

Headless (no napari or Qt; torch imported lazily): :func:`perturb`,
:func:`compress`, :func:`compare`, :class:`VariantSpec` and :func:`variant_inputs`.
Running variants with their base is the run pipeline's work:
``napari_topolens.run_variants`` (``napari_topolens.pipeline.variants``).
"""

from __future__ import annotations

from .comparison import Comparison, LayerDrift, compare, receptive_field_heat
from .compression import compress, sparsity
from .perturbations import PERTURBATIONS, perturb
from .study import Variant, VariantSpec, missing_name, parse_variants, variant_inputs

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


def __getattr__(name: str) -> object:
    raise missing_name(__name__, name)
