"""What a variant can change: the perturbation kinds with their strength ranges, and the
quantisations.

Plain data and its checks, below the result types that validate against it
(``topology.results.VariantSpec``); ``robustness`` re-exports the names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import TopoLensError

__all__ = [
    "PERTURBATIONS",
    "QUANTIZATIONS",
    "STRENGTH_RANGES",
    "check_strength",
    "strength_range_text",
]

#: Model compressions by quantisation a variant can apply.
QUANTIZATIONS = ("int8",)

#: Perturbation kinds and what their strength means.
PERTURBATIONS: dict[str, str] = {
    "gaussian": "standard deviation, as a fraction of the images' value range",
    "salt_pepper": "fraction of pixels set to the minimum or maximum (half each)",
    "speckle": "standard deviation of multiplicative noise x + x*n (x above the minimum)",
    "poisson": "shot noise whose standard deviation at full brightness is this fraction of the range",
    "uniform": "half-width of additive uniform noise, as a fraction of the value range",
    "blur": "Gaussian blur sigma in pixels",
    "occlusion": "a square patch of this fraction of the image area (with a mask: its opacity 0..1)",
    "fgsm": "step epsilon of the fast gradient sign attack, as a fraction of the value range",
}

#: The strengths each kind accepts, inclusive. Beyond them a variant says nothing more (noise
#: of ten value ranges already saturates every pixel at the clip; a blur of 100 pixels flattens
#: any image a classifier takes) and the arithmetic would overflow or run out of memory.
STRENGTH_RANGES: dict[str, tuple[float, float]] = {
    "gaussian": (0.0, 10.0),
    "salt_pepper": (0.0, 1.0),
    "speckle": (0.0, 10.0),
    "poisson": (0.0, 10.0),
    "uniform": (0.0, 10.0),
    "blur": (0.0, 100.0),
    "occlusion": (0.0, 1.0),
    "fgsm": (0.0, 1.0),
}
assert set(STRENGTH_RANGES) == set(PERTURBATIONS)


def strength_range_text(kind: str) -> str:
    """``"0..10"``: the strengths ``kind`` accepts, as the messages and ``--help`` write them."""
    low, high = STRENGTH_RANGES[kind]
    return f"{low:g}..{high:g}"


def check_strength(kind: str, strength: Any) -> float:
    """``strength`` as a float inside ``kind``'s range; a project error naming the variant,
    its range and what the strength means otherwise."""
    if not isinstance(kind, str) or kind not in PERTURBATIONS:
        raise TopoLensError(
            f"unknown perturbation {kind!r:.60}; choose one of {', '.join(PERTURBATIONS)}"
        )
    if isinstance(strength, bool):
        raise TopoLensError(f"the strength of {kind} must be a number, got {strength!r}")
    try:
        value = float(strength)
    except (TypeError, ValueError, OverflowError):
        raise TopoLensError(f"the strength of {kind} must be a number, got {strength!r}") from None
    low, high = STRENGTH_RANGES[kind]
    if not (np.isfinite(value) and low <= value <= high):
        raise TopoLensError(
            f"the strength of {kind} must be within {strength_range_text(kind)} "
            f"({PERTURBATIONS[kind]}), got {kind}:{value:g}"
        )
    return value
