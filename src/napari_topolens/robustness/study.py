"""Run an analysis together with perturbed and compressed variants, and compare them.

:func:`iter_run_variants` (a progress generator, usable from a napari worker) and
:func:`run_variants` (its plain form) analyse the base images with the model, then
each variant: a perturbed copy of the images through the same model (the receptive
fields, cached per model and image size, and the image preparation are shared), or
the same images through a compressed copy of the model. Each variant becomes a
:class:`Variant` holding its own :class:`~napari_topolens.topology.analysis.Analysis`
and its :class:`~napari_topolens.robustness.comparison.Comparison` with the base; the
variants are stored in the base analysis's ``variants`` list, so saving the base
analysis (same folder format, no pickle) saves them too.

Variant specs are short strings, as on the command line: ``"gaussian:0.1"``,
``"blur:1.0"``, ``"fgsm:0.03"`` (see :data:`~napari_topolens.robustness.perturbations.PERTURBATIONS`),
``"prune:0.5"``, ``"int8"``, and ``"prune:0.5+int8"`` for both in one model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import CancelCallback, Progress, ProgressCallback, drive, scaled
from ..errors import EmptySelectionError, LayerError, TopoLensError
from ..topology.config import AnalysisConfig
from ..topology.results import Analysis, Variant, VariantSpec
from .comparison import compare

if TYPE_CHECKING:
    import torch

__all__ = [
    "Variant",
    "VariantSpec",
    "iter_one_variant",
    "iter_run_variants",
    "parse_variants",
    "run_variants",
    "variant_inputs",
]


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
    from ..activations.options import whole_number

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


def _as_specs(variants: Any, seed: int) -> list[VariantSpec]:
    if isinstance(variants, (str, VariantSpec)):
        variants = [variants]
    if variants is not None and not isinstance(variants, (list, tuple)):
        raise TopoLensError(
            "variants must be a spec such as 'gaussian:0.1', a VariantSpec or a list of them, "
            f"got {type(variants).__name__}"
        )
    specs = []
    for item in variants or []:
        if isinstance(item, VariantSpec):
            specs.append(item)
        elif not isinstance(item, str):
            raise TopoLensError(
                f"variants: {item!r:.40} is not a spec such as 'gaussian:0.1' or a VariantSpec"
            )
        else:
            specs.extend(
                VariantSpec.parse(part, seed=seed) for part in str(item).split(",") if part.strip()
            )
    if not specs:
        raise EmptySelectionError(
            "no variants were given; add perturbations (gaussian:0.1) or compressions (prune:0.5)"
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise TopoLensError(f"a variant is asked for twice in {', '.join(names)}")
    return specs


def run_variants(
    model: torch.nn.Module,
    images: Any,
    layers: Sequence[str] | str,
    variants: Any,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    **kw: Any,
) -> Analysis:
    """Plain form of :func:`iter_run_variants` (``progress``/``cancel`` callbacks)."""
    return drive(iter_run_variants(model, images, layers, variants, **kw), progress, cancel)


def iter_run_variants(
    model: torch.nn.Module,
    images: Any,
    layers: Sequence[str] | str,
    variants: Any,
    *,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    config: AnalysisConfig | None = None,
    sampling: str = "pooled",
    max_points: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    mask: Any = None,
    occlusion_mask: Any = None,
    provenance: dict[str, Any] | None = None,
    base: Analysis | None = None,
    input_scale: Any = None,
) -> Generator[Progress, None, Analysis]:
    """Analyse ``images`` and each variant, compare each with the base; yields progress.

    Parameters
    ----------
    model, images, layers
        As for :func:`~napari_topolens.activations.extract.extract_activations`.
    variants : str, VariantSpec or list of them
        E.g. ``["gaussian:0.1", "blur:1.0", "fgsm:0.03", "prune:0.5", "int8"]``.
    labels, class_names, config
        As for :func:`~napari_topolens.topology.analysis.analyze`; ``labels`` also
        give accuracies and the FGSM targets.
    sampling, max_points, batch_size, seed, mask
        Extraction options, the same for the base and every variant (``mask``:
        the object's pixels, for ``sampling="foreground"``).
    occlusion_mask : array of bool, optional
        The pixels an ``occlusion`` variant greys out; a random square patch per
        image without it.
    provenance : dict, optional
        Recorded in every analysis.
    base : Analysis, optional
        An analysis of exactly these images, layers and options made before; it is
        reused instead of analysing the images again (its ``probabilities`` are
        computed if missing, for the accuracies).
    input_scale : InputScale or str, optional
        How stored pixels become the model's input, as for extraction (default
        ``"dtype"``). Perturbations act on the float pixels of its first step
        (``[0, 1]`` for integer images), before its mean/std (see
        ``activations.input_scale``).

    Returns
    -------
    generator
        Yields :class:`~napari_topolens._progress.Progress`; its return value
        (``result = yield from iter_run_variants(...)`` in a napari worker) is the
        base analysis (a copy when ``base`` was given) with ``variants`` filled.
        Bad input (images, layers, specs, labels, masks) raises here, before any work.
    """
    from ..activations.extract import as_image_batch, as_mask_stack
    from ..activations.hooks import check_layer_names
    from ..activations.input_scale import as_input_scale
    from ..activations.models import check_model
    from ..activations.options import SAMPLING_MODES, layer_list, whole_number
    from ..topology.analysis import Analysis, AnalysisConfig, check_class_labels
    from .perturbations import check_label_codes as _check_labels

    # bad input fails here, on the caller's thread, before the generator is returned
    check_model(model)
    whole_number("seed", seed)
    for argument, value, kind, what in (
        ("config", config, AnalysisConfig, "an AnalysisConfig"),
        ("base", base, Analysis, "an Analysis of these images"),
        ("provenance", provenance, dict, "a dict"),
    ):
        if value is not None and not isinstance(value, kind):
            raise TopoLensError(f"{argument} must be {what} or None, got {type(value).__name__}")
    specs = _as_specs(variants, seed)
    scale = as_input_scale(input_scale)
    config = AnalysisConfig(seed=seed) if config is None else config
    n_images = len(as_image_batch(images))
    check_layer_names(model, layer_list(layers))
    labels, class_names = check_class_labels(labels, class_names)  # types; the count below
    if sampling not in SAMPLING_MODES:
        raise LayerError(
            f"unknown sampling mode {sampling!r}; choose one of {', '.join(SAMPLING_MODES)}"
        )
    if labels is not None and len(labels) != n_images:
        raise TopoLensError(f"{len(labels)} labels for {n_images} images; give one per image")
    kinds = {spec.perturbation for spec in specs}
    if occlusion_mask is not None:
        if "occlusion" not in kinds:
            raise TopoLensError(
                "occlusion_mask is used by an occlusion variant only; add one (e.g. "
                "occlusion:1) or leave the mask out"
            )
        height, width = as_image_batch(np.asarray(images)[:1]).shape[2:]
        as_mask_stack(occlusion_mask, n_images, height, width, "the occlusion mask")
    if "fgsm" in kinds and labels is not None:
        _check_labels(labels, n_images)
    if base is not None and base.images is not None and len(base.images) != n_images:
        raise TopoLensError(
            f"the given base analysis is of {len(base.images)} images, not these {n_images}"
        )
    return _variant_steps(
        model,
        images,
        layers,
        specs,
        labels=labels,
        class_names=class_names,
        config=config,
        sampling=sampling,
        max_points=max_points,
        batch_size=batch_size,
        seed=seed,
        mask=mask,
        occlusion_mask=occlusion_mask,
        provenance=provenance,
        base=base,
        input_scale=scale,
    )


def _variant_steps(
    model: torch.nn.Module,
    images: Any,
    layers: Sequence[str] | str,
    specs: list[VariantSpec],
    *,
    labels: Any,
    class_names: Sequence[str] | None,
    config: AnalysisConfig,
    sampling: str,
    max_points: int | None,
    batch_size: int,
    seed: int,
    mask: Any,
    occlusion_mask: Any,
    provenance: dict[str, Any] | None,
    base: Analysis | None,
    input_scale: Any = None,
) -> Generator[Progress, None, Analysis]:
    from ..activations.extract import iter_extract_activations, predict_proba
    from ..topology.analysis import iter_analyze

    # what describes the run is kept; what an analysis records of itself is not copied over
    own = ("seconds", "created", "libraries", "notes", "variant", "variant_spec", "n_images")
    record = {k: v for k, v in dict(provenance or {}).items() if k not in own}
    # shares of the progress bar: the base (unless reused) and each variant alike
    n_runs = len(specs) + (0 if base is not None else 1)
    share = 1.0 / n_runs

    def extract_steps(run_model: Any, run_images: Any):
        return iter_extract_activations(
            run_model,
            run_images,
            layers,
            sampling=sampling,
            max_points=max_points,
            batch_size=batch_size,
            seed=seed,
            mask=mask,
            input_scale=input_scale,
        )

    def analysis_steps(clouds: Any, probabilities: Any, run_images: Any, notes: dict[str, Any]):
        return iter_analyze(
            clouds,
            labels,
            config=config,
            class_names=class_names,
            probabilities=probabilities,
            provenance={**record, **notes},
            images=run_images,
        )

    done = 0.0
    if base is None:
        started = time.perf_counter()
        clouds = yield from scaled(extract_steps(model, images), 0.0, 0.3 * share, "base: ")
        probabilities = predict_proba(model, images, batch_size=batch_size, input_scale=input_scale)
        base = yield from scaled(
            analysis_steps(clouds, probabilities, images, {"variant": "base"}),
            0.3 * share,
            share,
            "base: ",
        )
        base.provenance.setdefault("seconds", {})["base run"] = round(
            time.perf_counter() - started, 3
        )
        done = share
    else:
        known = base.probabilities
        base = dataclasses.replace(
            base,
            probabilities=(
                predict_proba(model, images, batch_size=batch_size, input_scale=input_scale)
                if known is None
                else known
            ),
            variants=[],
        )

    def variant_clouds(run_model: Any, run_images: Any):
        clouds = yield from extract_steps(run_model, run_images)
        return clouds, predict_proba(
            run_model, run_images, batch_size=batch_size, input_scale=input_scale
        )

    def variant_analysis(spec: VariantSpec, clouds: Any, probabilities: Any, run_images: Any):
        return analysis_steps(
            clouds,
            probabilities,
            run_images if spec.is_perturbation else None,  # a compressed model: the base's
            {"variant": spec.name, "variant_spec": dataclasses.asdict(spec)},
        )

    runs: list[Variant] = []
    for number, spec in enumerate(specs):
        variant = yield from iter_one_variant(
            spec,
            model,
            images,
            base,
            extract=variant_clouds,
            analyse=variant_analysis,
            labels=labels,
            occlusion_mask=occlusion_mask,
            batch_size=batch_size,
            input_scale=input_scale,
            start=done + number * share,
            share=share,
            prefix=f"variant {number + 1}/{len(specs)} {spec.name}: ",
        )
        runs.append(variant)
    base.variants = runs
    yield Progress(1.0, "variants done")
    return base


def _check_spec(spec: Any) -> None:
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
    from ..activations.extract import as_image_batch
    from ..activations.input_scale import as_input_scale, normalizing_model
    from .compression import compress
    from .perturbations import perturb

    _check_spec(spec)
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


def iter_one_variant(
    spec: VariantSpec,
    model: torch.nn.Module,
    images: Any,
    base: Analysis,
    *,
    extract: Callable[[Any, Any], Generator[Progress, None, tuple[Any, Any]]],
    analyse: Callable[[VariantSpec, Any, Any, Any], Generator[Progress, None, Analysis]],
    labels: Any = None,
    occlusion_mask: Any = None,
    batch_size: int = 64,
    input_scale: Any = None,
    start: float = 0.0,
    share: float = 1.0,
    prefix: str = "",
) -> Generator[Progress, None, Variant]:
    """One variant run, timed and compared with ``base``; yields progress in ``[start, start + share]``.

    The caller says how a run is extracted and analysed, so that the variant is
    made exactly like its base: ``extract(run_model, run_images)`` yields progress
    (0..1) and returns ``(clouds, probabilities)``; ``analyse(spec, clouds,
    probabilities, run_images)`` yields progress (0..1) and returns the variant's
    analysis. :func:`iter_run_variants` and the napari widget (whose clouds index
    an image layer's stack) both run their variants through here.
    """
    _check_spec(spec)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    yield Progress(
        start,
        prefix + ("perturbing the images" if spec.is_perturbation else "compressing the model"),
    )
    run_model, run_images = variant_inputs(
        spec,
        model,
        images,
        labels=labels,
        occlusion_mask=occlusion_mask,
        batch_size=batch_size,
        input_scale=input_scale,
    )
    seconds["variant"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clouds, probabilities = yield from scaled(
        extract(run_model, run_images), start, start + 0.3 * share, prefix
    )
    seconds["extraction"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    analysis = yield from scaled(
        analyse(spec, clouds, probabilities, run_images),
        start + 0.3 * share,
        start + 0.95 * share,
        prefix,
    )
    seconds["analysis"] = time.perf_counter() - t0
    yield Progress(start + 0.95 * share, prefix + "comparing with the base")
    t0 = time.perf_counter()
    comparison = compare(base, analysis, base_name="base", variant_name=spec.name)
    seconds["comparison"] = time.perf_counter() - t0
    return Variant(
        name=spec.name,
        spec=spec,
        analysis=analysis,
        comparison=comparison,
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )
