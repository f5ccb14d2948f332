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
from .study import Variant, VariantSpec, parse_variants, variant_inputs

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

#: Names this package had before the run pipeline took them over (issue 17).
MOVED_TO_THE_PIPELINE = ("run_variants", "iter_run_variants", "iter_one_variant")


def __getattr__(name: str) -> object:
    if name in MOVED_TO_THE_PIPELINE:
        # an ImportError (not AttributeError) so that `from ... import` keeps this message
        raise ImportError(
            f"{name} moved to the run pipeline: use napari_topolens.{name} "
            f"(or napari_topolens.pipeline.{name})"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
