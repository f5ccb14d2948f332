"""The one run: extract, predict, analyse, then each variant, as a progress generator.

:func:`iter_run` is what the command line, the napari widget's worker and
:func:`~napari_topolens.pipeline.variants.run_variants` all run, so a job gives the
same analysis from each of them. It follows the project's ``iter_*`` convention
(``_progress``): it yields :class:`~napari_topolens._progress.Progress` and returns
the :class:`~napari_topolens.topology.analysis.Analysis`; a napari worker runs it
with ``result = yield from iter_run(job)`` (every yield can cancel), headless
callers with :func:`run_job` (``progress``/``cancel`` callbacks).

Every option of the job reaches every stage, the variants' included: the device
(extraction, predictions, the exact H0 tree; an INT8 model runs on the CPU), the
Dask scheduler, the activation cache, the probe limit and the input scale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import CancelCallback, Progress, ProgressCallback, drive, scaled
from ..activations.device import on_device, resolve_device
from ..activations.extract import iter_extract_activations, predict_proba
from ..activations.image_source import ImageSource
from ..activations.pointcloud import PointCloud
from ..errors import EmptySelectionError, ModelError, TopoLensError
from ..robustness.comparison import compare
from ..robustness.study import variant_inputs
from ..topology.analysis import iter_analyze
from ..topology.child_process import iter_analyze_in_child, start_analysis_process
from ..topology.results import Analysis, Variant, VariantSpec
from .job import RunJob, check_job
from .provenance import TIMING_KEYS, Provenance

if TYPE_CHECKING:
    import torch

__all__ = ["iter_one_variant", "iter_run", "run_job", "run_provenance"]

#: Share of one run's progress given to pulling activations (the rest: predictions, topology).
EXTRACT_SHARE = 0.25
#: Images per ``predict_proba`` call (each call is a chance to cancel).
PREDICT_CHUNK = 512

Clouds = dict[str, PointCloud]


def run_job(
    job: RunJob,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    stages: dict[str, tuple[float, float]] | None = None,
) -> Analysis:
    """Plain form of :func:`iter_run` (``progress``/``cancel`` callbacks)."""
    return drive(iter_run(job, stages=stages), progress, cancel)


def iter_run(
    job: RunJob, *, stages: dict[str, tuple[float, float]] | None = None
) -> Generator[Progress, None, Analysis]:
    """Run ``job``: extract, predict, analyse, then each variant; yields progress.

    Bad input raises here, before the generator is returned. ``stages``, when
    given, receives the (wall, CPU) seconds of each stage in order.

    Returns
    -------
    generator
        Its return value is the analysis, with ``variants`` filled (a copy of
        ``job.base`` when one was given). Predictions are recorded whenever the
        model gives class scores; probabilities only for the probability lens.
    """
    check_job(job)
    # made here: extraction checks its input (masks, images, options) before any work
    extraction = (
        None if job.base is not None else _extraction(job, job.model, job.images, job.device)
    )
    return _run_steps(job, extraction, {} if stages is None else stages)


def run_provenance(job: RunJob) -> Provenance:
    """The job's provenance before any work (the analysis adds its own keys later)."""
    return Provenance(
        front_end=job.front_end,
        layers=list(job.layers),
        sampling=job.sampling,
        max_points=job.max_points,
        batch_size=int(job.batch_size),
        max_probe_pixels=int(job.max_probe_pixels),
        seed=int(job.seed),
        input_scale=job.scale.describe(job.pixel_dtype()),
        device=job.device,
        scheduler=job.scheduler_address,
        activation_cache=None if job.cache_dir is None else str(job.cache_dir),
        labels_from_predictions=job.labels_from_predictions,
        labels_coded_by_name=job.labels_coded_by_name,
        variants=[spec.name for spec in job.variants],
        origin=dict(job.origin),
        notes=dict(job.notes),
    )


class _Clock:
    """Wall and CPU seconds of each stage, into ``stages`` and the provenance's seconds."""

    def __init__(self, stages: dict[str, tuple[float, float]]) -> None:
        self.stages = stages
        self.seconds: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.stages[name] = (wall - self._wall, cpu - self._cpu)
        self.seconds[name] = round(wall - self._wall, 3)
        self._wall, self._cpu = wall, cpu


def _run_steps(
    job: RunJob,
    extraction: Generator[Progress, None, Clouds] | None,
    stages: dict[str, tuple[float, float]],
) -> Generator[Progress, None, Analysis]:
    if _analyses_in_child(job):  # here, in the caller's worker: starting takes a while
        # its imports run while the activations are extracted; where no process can be
        # started, the analysis runs here (``iter_analyze_in_child``)
        with contextlib.suppress(OSError):
            start_analysis_process()
    provenance = run_provenance(job)
    clock = _Clock(stages)
    n_runs = len(job.variants) + (1 if job.base is None else 0)
    share = 1.0 / max(n_runs, 1)
    if extraction is not None:
        prefix = "base: " if job.variants else ""
        base, provenance = yield from scaled(
            _iter_base(job, extraction, provenance, clock), 0.0, share, prefix
        )
        done = share
    else:
        base = yield from _reused_base(job)
        provenance = _provenance_of(base, provenance)
        done = 0.0
    if job.variants:
        perturbed = any(spec.is_perturbation for spec in job.variants)
        pixels = _variant_images(job) if perturbed else None  # read once for them all
        runs = []
        for number, spec in enumerate(job.variants):
            variant = yield from iter_one_variant(
                spec,
                job.model,
                pixels if spec.is_perturbation else job.images,
                base,
                extract=_variant_extraction(job, spec),
                analyse=_variant_analysis(job, base, provenance),
                labels=job.fgsm_labels,
                occlusion_mask=job.occlusion_mask,
                batch_size=job.batch_size,
                input_scale=job.scale,
                # the attack runs here: on the job's device, unless the work runs on a cluster
                device=None if job.scheduler is not None else _variant_device(job, spec),
                start=done + number * share,
                share=share,
                prefix=f"variant {number + 1}/{len(job.variants)} {spec.name}: ",
            )
            runs.append(variant)
        base.variants = runs
        clock.lap("variants")
        base.provenance["seconds"] = {**dict(base.provenance.get("seconds", {})), **clock.seconds}
    yield Progress(1.0, "done")
    return base


#: What a reused base's record says of itself, not of the run (not copied to its variants).
_OWN_KEYS = (*TIMING_KEYS, "notes", "n_images", "caps", "seed", "seeds", "variant", "variant_spec")


def _provenance_of(base: Analysis, job_record: Provenance) -> Provenance:
    """The run a reused base belongs to: its record's description of its inputs, then the job's."""
    kept = {k: v for k, v in base.provenance.items() if k not in _OWN_KEYS}
    return job_record.replace(origin={**kept, **job_record.origin})


def _iter_base(
    job: RunJob,
    extraction: Generator[Progress, None, Clouds],
    provenance: Provenance,
    clock: _Clock,
) -> Generator[Progress, None, tuple[Analysis, Provenance]]:
    """The base run: activations, predictions, topology (yields 0..1); the analysis and
    its run's record (what its variants record too)."""
    clouds = yield from scaled(extraction, 0.0, EXTRACT_SHARE, "activations: ")
    _check_enough_points(clouds, len(job.images))
    clouds = _stack_indexed(job, clouds)
    clock.lap("extraction")
    if job.stack is not None:
        used = np.unique(np.concatenate([cloud.image_index for cloud in clouds.values()]))
        provenance = provenance.replace(image_index=[int(i) for i in used])
        if len(used) != len(job.stack.index):  # max_points drew a subset of the selection
            provenance = provenance.replace(selected_index=[int(i) for i in job.stack.index])
    analysed, note = yield from _predictions(job, job.model, job.images, job.device, EXTRACT_SHARE)
    if note:
        provenance = provenance.replace(notes={**provenance.notes, "predictions": note})
    clock.lap("predictions")
    predictions, probabilities = _prediction_rows(job, analysed)
    labels, class_names = _labels(job, predictions, analysed)
    analysis = yield from scaled(
        _analysis_steps(job)(
            clouds,
            labels,
            config=job.config,
            class_names=class_names,
            probabilities=probabilities,
            predictions=predictions,
            provenance=provenance.as_dict(),
            images=job.kept_images,
            scheduler=job.scheduler,
            device=job.device,  # the exact H0 tree's blocks run there too
        ),
        EXTRACT_SHARE,
        1.0,
        "topology: ",
    )
    clock.lap("analysis")
    analysis.provenance["seconds"] = dict(clock.seconds)
    return analysis, provenance


def _reused_base(job: RunJob) -> Generator[Progress, None, Analysis]:
    """A copy of ``job.base`` with its predictions (computed if missing) and no variants."""
    base = job.base
    assert base is not None
    predictions = base.predictions
    if predictions is None and base.probabilities is None:
        analysed, _ = yield from _predictions(job, job.model, job.images, job.device, 0.0)
        predictions, _ = _prediction_rows(job, analysed)
    # the copy's record is its own: the run's times go there, not into the caller's base
    provenance = {**base.provenance, "seconds": dict(base.provenance.get("seconds", {}))}
    return dataclasses.replace(base, predictions=predictions, variants=[], provenance=provenance)


def _extraction(
    job: RunJob, model: torch.nn.Module, images: Any, device: str | None
) -> Generator[Progress, None, Clouds]:
    """The job's extraction of ``images`` through ``model`` on ``device`` (0..1)."""
    return iter_extract_activations(
        model,
        images,
        job.layers,
        sampling=job.sampling,
        max_points=job.max_points,
        batch_size=job.batch_size,
        seed=job.seed,
        mask=job.mask,
        max_probe_pixels=job.max_probe_pixels,
        device=device,
        cache_dir=job.cache_dir,
        scheduler=job.scheduler,
        input_scale=job.scale,
    )


def _analyses_in_child(job: RunJob) -> bool:
    return job.topology_in_child and job.scheduler is None


def _analysis_steps(job: RunJob) -> Callable[..., Generator[Progress, None, Analysis]]:
    """:func:`iter_analyze` here, or in a child process (``job.topology_in_child``)."""
    return iter_analyze_in_child if _analyses_in_child(job) else iter_analyze


def _check_enough_points(clouds: Clouds, n_images: int) -> None:
    few = [name for name, cloud in clouds.items() if len(cloud) < 3]
    if few:
        them = "it" if len(few) == 1 else "them"
        images = "one image gives" if n_images == 1 else f"{n_images} images give"
        raise EmptySelectionError(
            f"{images} {', '.join(few)} too few points for a shape (at least 3; a layer "
            f"without a spatial grid gives one point per image); untick {them} (leave {them} "
            "out of the layers) or analyse more images"
        )


def _stack_indexed(job: RunJob, clouds: Clouds) -> Clouds:
    """Clouds of a selection -> indexed by the stack it was selected from."""
    if job.stack is None:
        return clouds
    index = job.stack.index
    return {
        name: dataclasses.replace(cloud, image_index=index[cloud.image_index])
        for name, cloud in clouds.items()
    }


def _predictions(
    job: RunJob, model: torch.nn.Module, images: Any, device: str | None, at: float
) -> Generator[Progress, None, tuple[np.ndarray | None, str]]:
    """The model's class probabilities per job image (None and a note when it gives none).

    On ``device`` (where extraction ran; with a scheduler, here where the model is),
    a chunk per step. Without class scores there are no predictions, unless the
    labels were to be the predictions or the lens needs them: then it is an error.
    """
    target = None if device is None or job.scheduler is not None else resolve_device(device)
    chunks = []
    try:
        with on_device(model, target):
            for start in range(0, len(images), PREDICT_CHUNK):
                yield Progress(at, f"the model's predictions ({start}/{len(images)} images)")
                chunk = images[start : start + PREDICT_CHUNK]
                chunks.append(
                    predict_proba(model, chunk, batch_size=job.batch_size, input_scale=job.scale)
                )
    except ModelError as exc:
        if job.labels_from_predictions:
            raise ModelError(
                f"{exc}. The labels were to be the model's predictions: choose another "
                "label source (a features column, a CSV file or none)"
            ) from exc
        if job.config.mapper_lens == "probability":
            raise
        return None, f"none: {exc}"
    return np.concatenate(chunks), ""


def _prediction_rows(
    job: RunJob, analysed: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Predicted class per image (-1: not analysed), and the probabilities only for the
    probability lens: accuracies and changed predictions need the classes alone (and a
    stack x classes float64 array is sized by the stack, not by the selection)."""
    if analysed is None:
        return None, None
    predictions = np.argmax(analysed, axis=1).astype(np.int64)
    probabilities = analysed if job.config.mapper_lens == "probability" else None
    if job.stack is not None:
        predictions = job.stack.rows(predictions, -1)
        if probabilities is not None:
            probabilities = job.stack.rows(probabilities.astype(np.float64), np.nan)
    return predictions, probabilities


def _labels(
    job: RunJob, predictions: np.ndarray | None, analysed: np.ndarray | None
) -> tuple[np.ndarray | None, list[str] | None]:
    """The labels of the analysis: the job's, or the model's predictions with its class names."""
    if not job.labels_from_predictions:
        return job.labels, job.class_names
    assert analysed is not None and predictions is not None  # a failure was raised
    n_classes = analysed.shape[1]
    names = job.class_names
    if names is None or len(names) != n_classes:
        names = [f"class {k}" for k in range(n_classes)]
    return predictions, list(names)


def _variant_images(job: RunJob) -> Any:
    """The images perturbations act on: the given ones, else the job's read whole."""
    if job.variant_images is not None:
        return job.variant_images
    if isinstance(job.images, ImageSource):  # perturbations take whole arrays
        return job.images.to_stack()
    return job.images


def _variant_device(job: RunJob, spec: VariantSpec) -> str | None:
    """INT8 (dynamically quantised) models run on the CPU only."""
    return "cpu" if spec.quantize is not None else job.device


def _variant_extraction(
    job: RunJob, spec: VariantSpec
) -> Callable[[Any, Any], Generator[Progress, None, tuple[Clouds, np.ndarray | None]]]:
    """How a variant's clouds and class probabilities are made: as the base's."""
    device = _variant_device(job, spec)

    def steps(run_model: Any, run_images: Any) -> Generator[Progress, None, Any]:
        clouds = yield from _extraction(job, run_model, run_images, device)
        analysed, _ = yield from _predictions(job, run_model, run_images, device, 1.0)
        return _stack_indexed(job, clouds), analysed

    return steps


def _variant_analysis(
    job: RunJob, base: Analysis, provenance: Provenance
) -> Callable[[VariantSpec, Any, Any, Any], Generator[Progress, None, Analysis]]:
    """How a variant is analysed: the base's labels, config and options, its own record."""
    labels, class_names = base.labels, base.class_names

    def steps(
        spec: VariantSpec, clouds: Clouds, analysed: Any, run_images: Any
    ) -> Generator[Progress, None, Analysis]:
        predictions, probabilities = _prediction_rows(job, analysed)
        analysis = yield from _analysis_steps(job)(
            clouds,
            labels,
            config=job.config,
            class_names=class_names,
            probabilities=probabilities,
            predictions=predictions,
            provenance=provenance.of_variant(spec, _variant_device(job, spec)),
            images=_variant_kept_images(job, spec, run_images),
            scheduler=job.scheduler,
            device=_variant_device(job, spec),
        )
        return analysis

    return steps


def _variant_kept_images(job: RunJob, spec: VariantSpec, run_images: Any) -> Any:
    """A perturbation's images (at their stack positions); a compressed model's: the base's."""
    if not spec.is_perturbation:
        return None
    if job.stack is None:
        return run_images
    pixels = np.asarray(run_images)  # float32 pixels; image number == frame number
    return job.stack.rows(pixels, 0)


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
    device: str | None = None,
    start: float = 0.0,
    share: float = 1.0,
    prefix: str = "",
) -> Generator[Progress, None, Variant]:
    """One variant run, timed and compared with ``base``; yields progress in ``[start, start + share]``.

    The caller says how a run is extracted and analysed, so that the variant is
    made exactly like its base: ``extract(run_model, run_images)`` yields progress
    (0..1) and returns ``(clouds, probabilities)``; ``analyse(spec, clouds,
    probabilities, run_images)`` yields progress (0..1) and returns the variant's
    analysis. :func:`iter_run` runs every variant through here. ``device``: where an
    FGSM attack computes its gradients (the model's own device without it).
    """
    if not isinstance(spec, VariantSpec):
        raise TopoLensError(
            f"spec must be a VariantSpec (e.g. VariantSpec.parse('gaussian:0.1')), got "
            f"{type(spec).__name__}"
        )
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    yield Progress(
        start,
        prefix + ("perturbing the images" if spec.is_perturbation else "compressing the model"),
    )
    attack_device = None if device is None or spec.perturbation != "fgsm" else device
    with on_device(model, None if attack_device is None else resolve_device(attack_device)):
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
