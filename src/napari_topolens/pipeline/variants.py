"""Run an analysis together with perturbed and compressed variants, and compare them.

:func:`iter_run_variants` (a progress generator, usable from a napari worker) and
:func:`run_variants` (its plain form) describe the run as a
:class:`~napari_topolens.pipeline.job.RunJob` and run it through
:func:`~napari_topolens.pipeline.run.iter_run`, the run the command line and the
widget make too: the base images through the model, then each variant, a
perturbed copy of the images through the same model (the receptive fields,
cached per model and image size, and the image preparation are shared) or the
same images through a compressed copy of the model. Each variant becomes a
:class:`~napari_topolens.robustness.study.Variant` holding its own analysis and its
comparison with the base; they are stored in the base analysis's ``variants``
list, so saving the base analysis (same folder format, no pickle) saves them too.

Variant specs are short strings, as on the command line: ``"gaussian:0.1"``,
``"blur:1.0"``, ``"fgsm:0.03"``, ``"prune:0.5"``, ``"int8"``, and
``"prune:0.5+int8"`` for both in one model.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from .._progress import CancelCallback, Progress, ProgressCallback, drive
from ..activations.models import check_model
from ..activations.options import whole_number
from ..activations.receptive_field import DEFAULT_MAX_PROBE_PIXELS
from ..errors import EmptySelectionError, TopoLensError
from ..topology.config import AnalysisConfig
from ..topology.results import Analysis, VariantSpec
from .job import DEFAULT_SAMPLING, RunJob
from .run import iter_run

if TYPE_CHECKING:
    import torch

__all__ = ["FRONT_END", "iter_run_variants", "run_variants", "variant_specs"]

#: The provenance's ``source`` of a run made through this API.
FRONT_END = "napari_topolens.run_variants"


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
    sampling: str | None = None,
    max_points: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    mask: Any = None,
    occlusion_mask: Any = None,
    provenance: dict[str, Any] | None = None,
    base: Analysis | None = None,
    input_scale: Any = None,
    device: str | None = None,
    scheduler: Any = None,
    cache_dir: str | os.PathLike | None = None,
    max_probe_pixels: int = DEFAULT_MAX_PROBE_PIXELS,
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
    sampling, max_points, batch_size, seed, mask, input_scale, max_probe_pixels
        Extraction options, the same for the base and every variant (``mask``:
        the object's pixels, for ``sampling="foreground"``; ``input_scale``: how
        stored pixels become the model's input, default ``"dtype"``; perturbations
        act on the float pixels of its first step). Default sampling ``top_norm``,
        as the command line's and the widget's; with ``base``, the base's sampling
        and ``max_points`` (a different one is refused).
    occlusion_mask : array of bool, optional
        The pixels an ``occlusion`` variant greys out; a random square patch per
        image without it.
    provenance : dict, optional
        What the caller knows of its inputs, recorded in every analysis.
    base : Analysis, optional
        An analysis of exactly these images, layers and options made before; it is
        reused instead of analysing the images again (its predictions are computed
        if missing, for the accuracies).
    device, scheduler, cache_dir
        Where the base and every variant run (torch device; a Dask scheduler; the
        activation cache folder), as for extraction.

    Returns
    -------
    generator
        Yields :class:`~napari_topolens._progress.Progress`; its return value
        (``result = yield from iter_run_variants(...)`` in a napari worker) is the
        base analysis (a copy when ``base`` was given) with ``variants`` filled.
        Bad input (images, layers, specs, labels, masks) raises here, before any work.
    """
    check_model(model)  # bad input fails in this order, before any work
    whole_number("seed", seed)
    if provenance is not None and not isinstance(provenance, dict):
        raise TopoLensError(f"provenance must be a dict or None, got {type(provenance).__name__}")
    if config is not None and not isinstance(config, AnalysisConfig):
        raise TopoLensError(
            f"config must be an AnalysisConfig or None, got {type(config).__name__}"
        )
    if base is not None and isinstance(base, Analysis):  # its variants are extracted alike
        sampling = sampling if sampling is not None else base.provenance.get("sampling")
        if max_points is None:
            max_points = base.provenance.get("max_points")
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TopoLensError(f"cache_dir must be a folder path, got {type(cache_dir).__name__}")
    job = RunJob(
        model=model,
        images=images,
        layers=layers,  # type: ignore[arg-type]  # checked (and listed) by iter_run
        labels=labels,
        class_names=None if class_names is None else class_names,  # type: ignore[arg-type]
        config=AnalysisConfig(seed=seed) if config is None else config,
        sampling=DEFAULT_SAMPLING if sampling is None else sampling,
        max_points=max_points,
        batch_size=batch_size,
        seed=seed,
        mask=mask,
        input_scale=input_scale,
        max_probe_pixels=max_probe_pixels,
        device=device,
        scheduler=scheduler,
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        variants=variant_specs(variants, seed),
        occlusion_mask=occlusion_mask,
        kept_images=images,
        base=base,
        front_end=FRONT_END,
        origin=dict(provenance or {}),
    )
    return iter_run(job)


def variant_specs(variants: Any, seed: int) -> list[VariantSpec]:
    """Specs from a spec, a :class:`VariantSpec` or a list of them (refused when none)."""
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
