"""What a variant of a run is, and the model and images it runs.

A :class:`VariantSpec` says what changes (a perturbation of the images, or a
compression of the model); :func:`variant_inputs` makes the perturbed images or
the compressed model; a :class:`Variant` holds a variant's own
:class:`~napari_topolens.topology.analysis.Analysis` and its
:class:`~napari_topolens.robustness.comparison.Comparison` with the base. Running
them (extract, analyse, compare, with the base's options) is the run pipeline's
work: ``napari_topolens.pipeline.run_variants`` / ``iter_run_variants``.

Variant specs are short strings, as on the command line: ``"gaussian:0.1"``,
``"blur:1.0"``, ``"fgsm:0.03"`` (see :data:`~napari_topolens.robustness.perturbations.PERTURBATIONS`),
``"prune:0.5"``, ``"int8"``, and ``"prune:0.5+int8"`` for both in one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..activations.extract import _whole_number, as_image_batch
from ..activations.input_scale import as_input_scale, normalizing_model
from ..errors import TopoLensError
from .comparison import Comparison
from .compression import QUANTIZATIONS, compress
from .perturbations import PERTURBATIONS, check_strength, perturb, strength_range_text

if TYPE_CHECKING:
    import torch


__all__ = ["Variant", "VariantSpec", "check_variant_spec", "parse_variants", "variant_inputs"]


@dataclass
class VariantSpec:
    """What makes a variant: a perturbation of the images, or a compression of the model.

    Attributes
    ----------
    perturbation : str or None
        A kind of :data:`~napari_topolens.robustness.perturbations.PERTURBATIONS`.
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
        from ..activations.extract import _whole_number

        for argument, name in (("perturbation", self.perturbation), ("quantize", self.quantize)):
            if name is not None and not isinstance(name, str):
                raise TopoLensError(f"{argument} must be a name (text), got {name!r:.40}")
        for argument, number in (("strength", self.strength), ("prune", self.prune)):
            if number is not None and (
                isinstance(number, (bool, np.bool_))
                or not isinstance(number, (int, float, np.number))
            ):
                raise TopoLensError(f"{argument} must be a number, got {number!r:.40}")
        _whole_number("seed", self.seed)
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


def parse_variants(
    perturb: str | Sequence[str] | None = None,
    compress: str | Sequence[str] | None = None,
    *,
    seed: int = 0,
) -> list[VariantSpec]:
    """Variant specs from comma-separated text (or lists of it), perturbations first.

    ``parse_variants("gaussian:0.1,blur:1.0,fgsm:0.03", "prune:0.5,int8")`` gives
    five variants; ``"prune:0.5+int8"`` is one model both pruned and quantised.
    """
    _whole_number("seed", seed)
    specs: list[VariantSpec] = []
    for text, must_perturb in ((perturb, True), (compress, False)):
        if text is None:
            continue
        items = [text] if isinstance(text, str) else text
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise TopoLensError(
                f"{'perturb' if must_perturb else 'compress'} must be text such as "
                f"'gaussian:0.1,blur:1' or a list of it, got {text!r:.40}"
            )
        for item in items:
            for part in str(item).split(","):
                if not part.strip():
                    continue
                spec = VariantSpec.parse(part, seed=seed)
                if spec.is_perturbation != must_perturb:
                    where = "--perturb / perturb=" if must_perturb else "--compress / compress="
                    raise TopoLensError(f"{part.strip()!r} does not belong in {where}")
                specs.append(spec)
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TopoLensError(f"variant(s) {', '.join(repeated)} are asked for twice")
    return specs


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
    analysis: Any
    comparison: Comparison
    seconds: dict[str, float] = field(default_factory=dict)

    def images(self, base: Any) -> np.ndarray | None:
        """The images this variant's clouds index: its perturbed set, else ``base.images``."""
        return self.analysis.images if self.analysis.images is not None else base.images


def check_variant_spec(spec: Any) -> None:
    """Refuse anything but a :class:`VariantSpec`, with a message saying how to make one."""
    if not isinstance(spec, VariantSpec):
        raise TopoLensError(
            f"spec must be a VariantSpec (e.g. VariantSpec.parse('gaussian:0.1')), got "
            f"{type(spec).__name__}"
        )


def variant_inputs(
    spec: VariantSpec,
    model: torch.nn.Module,
    images: Any,
    *,
    labels: Any = None,
    occlusion_mask: Any = None,
    batch_size: int = 64,
    input_scale: Any = None,
) -> tuple[torch.nn.Module, Any]:
    """The model and images a variant runs: perturbed images, or a compressed model.

    ``labels`` are the FGSM targets (-1 or ``None``: the model's own prediction);
    ``occlusion_mask`` the pixels an occlusion greys (a random patch without it).
    Both are used by those kinds only. A perturbation acts on the float32 pixels of
    the input scale's first step (integer images divided by their dtype's maximum,
    never rounded back), so the perturbed images go through the same input scale
    as the originals; FGSM's gradient passes through the scale's mean/std step.
    """
    check_variant_spec(spec)
    if not spec.is_perturbation:
        return compress(model, prune=spec.prune, quantize=spec.quantize), images
    assert spec.perturbation is not None and spec.strength is not None
    scale = as_input_scale(input_scale)
    pixels = scale.stack_pixels(images)
    attacked = model
    if spec.perturbation == "fgsm":
        attacked = normalizing_model(model, scale, as_image_batch(pixels[:1]).shape[1])
    return model, perturb(
        pixels,
        spec.perturbation,
        spec.strength,
        seed=spec.seed,
        model=attacked if spec.perturbation == "fgsm" else None,
        labels=labels if spec.perturbation == "fgsm" else None,
        mask=occlusion_mask if spec.perturbation == "occlusion" else None,
        batch_size=batch_size,
    )
