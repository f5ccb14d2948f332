"""What a variant of a run is, and the model and images it runs.

A ``VariantSpec`` says what changes (a perturbation of the images, or a
compression of the model); :func:`variant_inputs` makes the perturbed images or
the compressed model; a ``Variant`` holds a variant's own analysis and its
comparison with the base (both types live in ``topology.results``, re-exported
here). Running them (extract, analyse, compare, with the base's options) is the
run pipeline's work: ``napari_topolens.pipeline.run_variants`` / ``iter_run_variants``.

Variant specs are short strings, as on the command line: ``"gaussian:0.1"``,
``"blur:1.0"``, ``"fgsm:0.03"`` (see :data:`~napari_topolens.robustness.perturbations.PERTURBATIONS`),
``"prune:0.5"``, ``"int8"``, and ``"prune:0.5+int8"`` for both in one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..activations.extract import as_image_batch
from ..activations.input_scale import as_input_scale, normalizing_model
from ..activations.options import whole_number
from ..errors import TopoLensError
from ..topology.results import Variant, VariantSpec
from .compression import compress
from .perturbations import perturb

if TYPE_CHECKING:
    import torch

__all__ = ["Variant", "VariantSpec", "check_variant_spec", "parse_variants", "variant_inputs"]


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
    whole_number("seed", seed)
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


def check_variant_spec(spec: Any) -> None:
    """Refuse anything but a ``VariantSpec``, with a message saying how to make one."""
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


#: Names this module (and its package) had before the run pipeline took them over.
MOVED_TO_THE_PIPELINE = ("run_variants", "iter_run_variants", "iter_one_variant")


def missing_name(module: str, name: str) -> ImportError | AttributeError:
    """What asking ``module`` for ``name`` raises: where a name moved to, else the usual error.

    An ImportError (not AttributeError) for a moved name, so that ``from ... import``
    keeps the message.
    """
    if name in MOVED_TO_THE_PIPELINE:
        return ImportError(
            f"{name} moved to the run pipeline: use napari_topolens.{name} "
            f"(or napari_topolens.pipeline.{name})"
        )
    return AttributeError(f"module {module!r} has no attribute {name!r}")


def __getattr__(name: str) -> object:
    raise missing_name(__name__, name)
