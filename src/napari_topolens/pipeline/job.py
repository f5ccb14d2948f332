"""The description of one run: what the CLI, the widget and ``run_variants`` all fill in.

A :class:`RunJob` holds the model, the images, the layers, the labels, the
extraction options, the :class:`~napari_topolens.topology.analysis.AnalysisConfig`,
the variants and where the work runs (device, Dask scheduler, activation cache).
:func:`~napari_topolens.pipeline.run.iter_run` runs it; every option reaches every
stage, the variants' included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..activations.extract import as_image_batch, as_mask_stack
from ..activations.hooks import check_layer_names
from ..activations.image_source import ImageSource
from ..activations.input_scale import InputScale, as_input_scale
from ..activations.models import check_model
from ..activations.options import SAMPLING_MODES, layer_list, whole_number
from ..activations.receptive_field import DEFAULT_MAX_PROBE_PIXELS
from ..errors import LayerError, TopoLensError
from ..robustness.perturbations import check_label_codes
from ..topology.analysis import check_class_labels
from ..topology.config import AnalysisConfig
from ..topology.results import Analysis, VariantSpec

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_SAMPLING", "RunJob", "StackIndex", "check_job"]

#: One spatial position per image (the strongest): receptive fields stay local, so the
#: pixel link means something (``pooled`` makes every field the whole image). The
#: default of the command, the widget and ``run_variants`` alike.
DEFAULT_SAMPLING = "top_norm"


@dataclass
class StackIndex:
    """The job's images are the rows ``index`` of a stack of ``n_stack`` images.

    The widget analyses a selection of an image layer; its analysis indexes the
    layer's stack (image number == frame number), so clouds, labels, predictions
    and a perturbed variant's images are stack-indexed (-1 / NaN / zeros at the
    frames not analysed).
    """

    index: np.ndarray
    n_stack: int

    def rows(self, per_image: np.ndarray, fill: Any) -> np.ndarray:
        """``per_image`` (one row per selected image) spread over the stack, ``fill`` elsewhere."""
        out = np.full((self.n_stack, *per_image.shape[1:]), fill, dtype=per_image.dtype)
        out[self.index] = per_image
        return out


@dataclass
class RunJob:
    """One run: extract, predict, analyse, then each variant, with the same options.

    Attributes
    ----------
    model : torch.nn.Module
    images : array or ImageSource
        The images, in any layout extraction takes (an ``ImageSource`` is read
        batch by batch).
    layers : list of str
    labels : array of int, optional
        Class per image of the analysis (stack-sized when ``stack`` is given).
    class_names : list of str, optional
        Names of the classes (for labels from predictions: the model's classes).
    labels_from_predictions : bool
        The labels are the model's own predicted classes (no true labels).
    labels_coded_by_name : bool
        The labels are codes of sorted text names, not the model's class indices.
    config : AnalysisConfig
    sampling, max_points, batch_size, seed, mask, input_scale, max_probe_pixels
        Extraction options (as ``iter_extract_activations``), the same for the base
        and every variant.
    device : str, optional
        Where extraction, predictions and the exact H0 tree run (an INT8 variant
        runs on the CPU).
    scheduler : str or distributed.Client, optional
        A Dask scheduler for extraction batches and per-layer topology.
    topology_in_child : bool
        Compute the topology (without a scheduler) in a child process
        (``topology.child_process``): the napari widget's runs, so that the viewer's
        main thread never waits for this work's GIL. The same analysis either way.
    cache_dir : str, optional
        The activation cache.
    variants : list of VariantSpec
    variant_images : array, optional
        The images perturbations act on (default: ``images``, read whole).
    occlusion_mask : array of bool, optional
        Pixels an occlusion variant greys out (a random patch without it).
    stack : StackIndex, optional
        The images are a selection of a stack the analysis indexes (the widget).
    kept_images : array, optional
        The images kept in the analysis (``cloud.image_index`` indexes them).
    base : Analysis, optional
        An analysis of exactly this job made before: reused, only the variants run.
    front_end : str
        Who runs the job (recorded as the provenance's ``source``).
    origin : dict
        The front end's description of its inputs, for the provenance.
    notes : dict of str to str
        Notes recorded in the provenance.
    """

    model: torch.nn.Module
    images: Any
    layers: list[str]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    labels_from_predictions: bool = False
    labels_coded_by_name: bool = False
    config: AnalysisConfig = field(default_factory=AnalysisConfig)
    sampling: str = DEFAULT_SAMPLING
    max_points: int | None = None
    batch_size: int = 64
    seed: int = 0
    mask: np.ndarray | None = None
    input_scale: InputScale | str | None = None
    max_probe_pixels: int = DEFAULT_MAX_PROBE_PIXELS
    device: str | None = None
    scheduler: Any = None
    topology_in_child: bool = False
    cache_dir: str | None = None
    variants: list[VariantSpec] = field(default_factory=list)
    variant_images: np.ndarray | None = None
    occlusion_mask: np.ndarray | None = None
    stack: StackIndex | None = None
    kept_images: np.ndarray | None = None
    base: Analysis | None = None
    front_end: str = "napari_topolens.pipeline"
    origin: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def scale(self) -> InputScale:
        """The input scale as an :class:`InputScale`."""
        return as_input_scale(self.input_scale)

    @property
    def scheduler_address(self) -> str | None:
        """The scheduler as text for the provenance (its address for a client)."""
        if self.scheduler is None or isinstance(self.scheduler, str):
            return self.scheduler
        scheduler = getattr(self.scheduler, "scheduler", None)  # a distributed.Client
        return str(getattr(scheduler, "address", self.scheduler))

    @property
    def fgsm_labels(self) -> np.ndarray | None:
        """FGSM's targets per job image: the true labels (none: the model's own predictions)."""
        if self.labels is None or self.labels_from_predictions:
            return None
        labels = np.asarray(self.labels, dtype=np.int64)
        return labels[self.stack.index] if self.stack is not None else labels

    def pixel_dtype(self) -> np.dtype:
        """The stored pixel type of the images (what ``input_scale="dtype"`` divides by)."""
        if isinstance(self.images, ImageSource):
            return self.images.pixel_dtype
        return np.asarray(self.images[:1]).dtype


def check_job(job: RunJob) -> RunJob:
    """Refuse bad input before any work (one clear message); returns the job, labels checked."""
    if not isinstance(job, RunJob):
        raise TopoLensError(f"job must be a RunJob, got {type(job).__name__}")
    check_model(job.model)
    whole_number("seed", job.seed)
    whole_number("batch_size", job.batch_size)
    if whole_number("max_probe_pixels", job.max_probe_pixels) < 1:
        raise TopoLensError(f"max_probe_pixels must be at least 1, got {job.max_probe_pixels}")
    if job.max_points is not None and whole_number("max_points", job.max_points) < 1:
        raise TopoLensError(f"max_points must be at least 1 or None, got {job.max_points}")
    if job.cache_dir is not None and not isinstance(job.cache_dir, str):
        raise TopoLensError(
            f"cache_dir must be a folder path or None, got {type(job.cache_dir).__name__}"
        )
    for argument, value, kind, what in (
        ("config", job.config, AnalysisConfig, "an AnalysisConfig"),
        ("base", job.base, Analysis, "an Analysis of these images"),
        ("origin", job.origin, dict, "a dict"),
    ):
        if value is not None and not isinstance(value, kind):
            raise TopoLensError(f"{argument} must be {what} or None, got {type(value).__name__}")
    _check_notes(job.origin.get("notes") if job.origin is not None else None)
    _check_notes(job.notes)
    for spec in job.variants:
        if not isinstance(spec, VariantSpec):
            raise TopoLensError(f"variants must be VariantSpecs, got {type(spec).__name__}")
    as_input_scale(job.input_scale)
    if job.sampling not in SAMPLING_MODES:
        raise LayerError(
            f"unknown sampling mode {job.sampling!r}; choose one of {', '.join(SAMPLING_MODES)}"
        )
    job.layers = layer_list(job.layers)
    check_layer_names(job.model, job.layers)
    n_images = (
        len(job.images) if isinstance(job.images, ImageSource) else len(as_image_batch(job.images))
    )
    n_labelled = job.stack.n_stack if job.stack is not None else n_images
    labels, class_names = check_class_labels(job.labels, job.class_names)
    if labels is not None and len(labels) != n_labelled:
        raise TopoLensError(f"{len(labels)} labels for {n_labelled} images; give one per image")
    job.labels, job.class_names = labels, class_names
    _check_variant_inputs(job, n_images)
    if job.base is not None:
        _check_base_matches(job, job.base)
    return job


def _check_notes(notes: Any) -> None:
    if notes is not None and not (
        isinstance(notes, dict) and all(isinstance(k, str) for k in notes)
    ):
        raise TopoLensError(
            f"provenance notes must be a dict of text to text, got {type(notes).__name__}"
        )


def _check_base_matches(job: RunJob, base: Analysis) -> None:
    """A reused base must be of the job's layers, sampling and cap, or its variants'
    drift would mix that difference into the perturbation's."""
    analysed = sorted(result.name for result in base.layer_results)
    if analysed != sorted(job.layers):
        raise LayerError(
            f"the given base analysis is of layers {', '.join(analysed)}, not "
            f"{', '.join(job.layers)}; pass the base's layers"
        )
    record = base.provenance
    for key, wanted in (("sampling", job.sampling), ("max_points", job.max_points)):
        if key in record and record[key] != wanted:
            raise TopoLensError(
                f"the given base analysis was extracted with {key}={record[key]!r}, not "
                f"{wanted!r}; pass {key}={record[key]!r} so that its variants are extracted alike"
            )


def _check_variant_inputs(job: RunJob, n_images: int) -> None:
    kinds = {spec.perturbation for spec in job.variants}
    if job.occlusion_mask is not None:
        if "occlusion" not in kinds:
            raise TopoLensError(
                "occlusion_mask is used by an occlusion variant only; add one (e.g. "
                "occlusion:1) or leave the mask out"
            )
        height, width = as_image_batch(np.asarray(_first(job))).shape[2:]
        as_mask_stack(job.occlusion_mask, n_images, height, width, "the occlusion mask")
    fgsm_labels = job.fgsm_labels
    if "fgsm" in kinds and fgsm_labels is not None:
        check_label_codes(fgsm_labels, n_images)
    base = job.base
    if base is not None and base.images is not None:
        expected = job.stack.n_stack if job.stack is not None else n_images
        if len(base.images) != expected:
            raise TopoLensError(
                f"the given base analysis is of {len(base.images)} images, not these {expected}"
            )


def _first(job: RunJob) -> Any:
    """The first image, read (one image of a lazy source)."""
    if job.variant_images is not None:
        return np.asarray(job.variant_images)[:1]
    if isinstance(job.images, ImageSource):
        return job.images.read(np.arange(1))
    return np.asarray(job.images)[:1]
