"""Pull layer activations for images, as point clouds that remember their pixels."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .._progress import CancelCallback, Progress, ProgressCallback, drive, scaled
from ..errors import EmptySelectionError, ImageError, LayerError, ModelError, TopoLensError
from . import cache as activation_cache
from .device import on_device, resolve_device
from .hooks import capture_layers, check_layer_calls, check_layer_names
from .image_source import ImageSource, as_image_source, stack_image_list
from .input_scale import (
    WARNING_IMAGES,
    InputScale,
    as_input_scale,
    first_values,
    range_warning,
    scaled_source,
)
from .models import check_model
from .options import DEFAULT_MAX_POSITIONS, SAMPLING_MODES, layer_list, whole_number
from .pointcloud import PointCloud
from .receptive_field import (
    DEFAULT_MAX_PROBE_PIXELS,
    ClosedForm,
    LayerGeometry,
    layer_geometry,
    probe_cost,
    probe_reasons,
    receptive_fields,
)
from .remote import iter_remote_batches
from .running import (
    check_channels,
    eval_mode,
    model_accepts,
    model_device_dtype,
    model_images,
    torch_batch,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_POSITIONS",
    "SAMPLING_MODES",
    "as_image_batch",
    "extract_activations",
    "input_scale_warning",
    "iter_extract_activations",
    "model_accepts",
    "predict_proba",
    "receptive_field_centres",
]


def as_image_batch(images: Any) -> np.ndarray:
    """Check images and return them as a float32 ``(N, C, H, W)`` array.

    Accepts ``(N, H, W)`` grayscale, ``(N, H, W, C)`` or ``(N, C, H, W)`` with
    ``C`` in 1 or 3. Values are kept as they are (cast to float32); the input scale
    (:mod:`~.input_scale`) is applied where images enter the model.
    """
    array = np.asarray(stack_image_list(images))
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ImageError(f"images must be numeric arrays, got dtype {array.dtype}")
    if array.ndim == 0 or (array.ndim >= 1 and array.shape[0] == 0):
        raise EmptySelectionError("no images were selected; select at least one image")
    if array.ndim == 2:
        raise ImageError(
            f"got one {array.shape} image; pass a stack (N, H, W): use images[None] for a single image"
        )
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
            array = np.moveaxis(array, -1, 1)
        elif array.shape[1] not in (1, 3):
            raise ImageError(
                f"images of shape {array.shape} have neither 1 nor 3 channels on the first or "
                "last axis; pass (N, H, W), (N, H, W, 3) or (N, 3, H, W)"
            )
    else:
        raise ImageError(
            f"images must be (N, H, W), (N, H, W, 3) or (N, 3, H, W); got shape {array.shape}"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array).reshape(len(array), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ImageError(
            f"{len(bad)} image(s) contain NaN or infinite pixels (first: index {bad[0]}); "
            "fill or drop them before extracting activations"
        )
    return array


def predict_proba(
    model: torch.nn.Module,
    images: Any,
    *,
    batch_size: int = 64,
    input_scale: InputScale | str | None = None,
) -> np.ndarray:
    """Softmax of the model's output, ``(N, K)``, for the predicted-class lens and accuracies.

    ``input_scale`` is how stored pixels become the model's input, as for
    :func:`extract_activations` (default ``"dtype"``: integers to ``[0, 1]``).
    """
    import torch

    model = check_model(model)
    if whole_number("batch_size", batch_size) < 1:
        raise TopoLensError(f"batch_size must be at least 1, got {batch_size}")
    scale = as_input_scale(input_scale)
    source = as_image_source(images)
    check_channels(model, source.read([0]))
    source = scaled_source(source, scale)
    device, dtype = model_device_dtype(model)
    out: list[np.ndarray] = []
    with eval_mode(model), torch.no_grad():
        for _, batch in source.batches(batch_size):  # read batch by batch (lazy inputs)
            chunk = torch.from_numpy(batch).to(device=device, dtype=dtype)
            try:
                logits = model(chunk)
            except Exception as exc:
                raise ModelError(
                    f"the model raised {type(exc).__name__} on a batch of shape {tuple(chunk.shape)}: {exc}"
                ) from exc
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                raise ModelError(
                    "the model's output is not a (batch, classes) tensor of logits, so class "
                    "probabilities cannot be computed"
                )
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out)


def input_scale_warning(images: Any, input_scale: InputScale | str | None = None) -> str | None:
    """The warning of :func:`~.input_scale.range_warning` for ``images`` (its first 8 read).

    ``None`` when the values reaching the model look like a trained model's input.
    """
    scale = as_input_scale(input_scale)
    source = as_image_source(images)
    return range_warning(first_values(source, scale), scale, source.pixel_dtype)


def extract_activations(
    model: torch.nn.Module,
    images: Any,
    layers: Sequence[str] | str,
    *,
    sampling: str = "pooled",
    max_points: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    mask: Any = None,
    max_probe_pixels: int = DEFAULT_MAX_PROBE_PIXELS,
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    scheduler: Any = None,
    input_scale: InputScale | str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> dict[str, PointCloud]:
    """Activations of ``layers`` for ``images``, one :class:`PointCloud` per layer.

    Parameters
    ----------
    model : torch.nn.Module
        Any module; it is run in eval mode under ``torch.no_grad()`` and its
        training flag is restored afterwards.
    images : array-like or ImageSource
        ``(N, H, W)``, ``(N, H, W, 3)`` or ``(N, 3, H, W)``, finite: numpy, or
        lazy (dask, zarr, memory map, :class:`~.image_source.ImageSource`,
        :class:`~.image_source.MultiscaleImages`), read batch by batch.
    layers : sequence of str
        Names as in ``model.named_modules()`` (see :func:`list_layers`). A module the
        forward pass calls more than once is named per call, ``pool#1``, ``pool#2``
        (from 1, in call order), and each is analysed at its own call; its plain
        name is refused as ambiguous. Modules called once keep their plain names.
    sampling : {"pooled", "random_position", "top_norm", "all_positions", "foreground"}
        How a spatial layer becomes points (docs/methods.md §2): the spatial mean per
        image; one random position per image (border index 0 skipped); the
        position of largest L2 norm per image; every position, randomly
        subsampled to ``max_points`` (default 80,000); the position of largest
        L2 norm among those whose receptive-field centre lies inside ``mask``
        (Purvine et al.'s fourth mode). Token layers ``(B, T, C)`` treat tokens
        as positions; vector layers give one point per image.
    max_points : int, optional
        Cap on points per layer. One-point-per-image modes draw a random subset
        of images (the same for every layer).
    batch_size : int
        Images per forward pass; memory is bounded by the batch and the cap.
        What it can change is only float rounding: the images and positions
        sampled (``image_index``, ``position``, ``receptive_field``) are fixed
        before any forward pass and never depend on it (``top_norm`` positions
        follow the norms, so they could move only between positions whose norms
        tie to float rounding); for a given ``batch_size`` the values are
        bit-identical from run to run; across batch sizes they agree to float32
        rounding, because PyTorch's CPU kernels pick their blocking by batch size
        and a matrix product may then sum in another order (measured on the
        digits model: conv and pooling layers bit-identical for batch sizes 1, 7,
        64 and 600, its Linear layer within 4.8e-6 absolute).
    seed : int
        Seeds every random choice.
    mask : array of bool, shape (N, H, W) or (H, W), optional
        The object's pixels per image (non-zero = inside), for ``"foreground"``
        sampling only. An image whose mask is empty is refused; at a layer where
        no receptive-field centre of an image falls inside its mask, that image
        gets no point and ``meta["foreground_skipped"]`` lists it.
    max_probe_pixels : int
        Cap on the receptive-field probing work (probe passes x pixels); spatial
        sampling of images too big for it is refused before any work (see
        ``activations.receptive_field``). Pooled sampling and vector layers need
        no probing.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``: run the forward passes
        there (the model is moved back afterwards). Default: where the model is.
    cache_dir : str or path, optional
        Activation cache folder (:mod:`~.cache`): layers already extracted for
        this model, images, sampling, cap, mask and seed are read from it, the
        others are extracted and stored.
    scheduler : str or distributed.Client, optional
        A dask.distributed scheduler address (or client): the batches run as
        Dask tasks on its workers (``napari-topolens[distributed]``).
    input_scale : InputScale or str, optional
        How stored pixels become the model's input (:mod:`~.input_scale`):
        ``"dtype"`` (default: integer pixels divided by their dtype's maximum, as
        torchvision's ``ToTensor``; floats kept), ``"as-stored"``, ``"imagenet"``
        (``[0, 1]`` then ImageNet's mean/std) or ``"custom:MEAN/STD"``. Applied to
        every batch, on every worker, and part of the cache key; each cloud's
        ``meta["input_scale"]`` records it and ``meta["input_scale_warning"]`` says
        when the values look unlike a trained model's input.
    progress, cancel : callable, optional
        ``progress(fraction, message)``; ``cancel()`` returning true stops with
        :class:`~napari_topolens.errors.Cancelled`.

    Returns
    -------
    dict of str to PointCloud
        In the order the forward pass reaches the layers, whatever order they
        were asked in.
    """
    steps = iter_extract_activations(
        model,
        images,
        layers,
        sampling=sampling,
        max_points=max_points,
        batch_size=batch_size,
        seed=seed,
        mask=mask,
        max_probe_pixels=max_probe_pixels,
        device=device,
        cache_dir=cache_dir,
        scheduler=scheduler,
        input_scale=input_scale,
    )
    return drive(steps, progress, cancel)


def iter_extract_activations(
    model: torch.nn.Module,
    images: Any,
    layers: Sequence[str] | str,
    *,
    sampling: str = "pooled",
    max_points: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    mask: Any = None,
    max_probe_pixels: int = DEFAULT_MAX_PROBE_PIXELS,
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    scheduler: Any = None,
    input_scale: InputScale | str | None = None,
) -> Generator[Progress, None, dict[str, PointCloud]]:
    """Generator form of :func:`extract_activations`: yields progress, returns the clouds.

    The input is checked when this is called, before the generator is returned, so
    bad input fails at once on the caller's thread; the work runs as it is iterated.
    """
    options = dict(locals())  # every option: a new one joins the activation cache's key
    model = check_model(model)
    _check_options(sampling, max_points, batch_size, seed, max_probe_pixels)
    scale = as_input_scale(input_scale)
    modules = check_layer_names(model, layer_list(layers))
    source, scale_meta = _model_input(model, images, modules, scale)
    foreground = _check_mask(mask, source, sampling)
    geometry = _checked_geometry(model, modules, source, sampling, max_points, max_probe_pixels)
    target = None if device is None else resolve_device(device)

    def steps(todo: dict[str, torch.nn.Module]) -> Generator[Progress, None, dict[str, PointCloud]]:
        return _extraction_steps(
            model,
            source,
            todo,
            geometry,
            sampling,
            max_points,
            batch_size,
            seed,
            max_probe_pixels,
            foreground,
            target,
            scheduler,
            scale_meta,
        )

    if cache_dir is None:
        return steps(modules)
    # keyed another way (model, images, layers, device kind), or changing only float
    # rounding (batch_size, scheduler), or not the activations at all (cache_dir)
    for name in ("model", "images", "layers", "device", "batch_size", "scheduler", "cache_dir"):
        del options[name]
    options["mask"] = foreground  # the checked mask, not whatever object was passed
    options["input_scale"] = scale  # None and "dtype" are one scale, one entry
    model_device, dtype = model_device_dtype(model)
    return activation_cache.iter_cached_extraction(
        activation_cache.ActivationCache(cache_dir),  # a bad folder fails here, before any work
        model,
        source,
        modules,
        geometry,
        options=options,
        device_type=(target or model_device).type,
        dtype=dtype,
        forward_order=lambda: _forward_order(model, source, modules),
        extract=lambda todo: steps(dict(todo)),
    )


def _check_options(
    sampling: Any, max_points: Any, batch_size: Any, seed: Any, max_probe_pixels: Any
) -> None:
    """One clear error for an extraction option out of range, before any work."""
    if not isinstance(sampling, str) or sampling not in SAMPLING_MODES:
        raise LayerError(
            f"unknown sampling mode {sampling!r}; choose one of {', '.join(SAMPLING_MODES)}"
        )
    if max_points is not None and whole_number("max_points", max_points) < 1:
        raise EmptySelectionError(f"max_points must be at least 1, got {max_points}")
    if whole_number("batch_size", batch_size) < 1:
        raise TopoLensError(f"batch_size must be at least 1, got {batch_size}")
    if whole_number("seed", seed) < 0:
        raise TopoLensError(f"seed must be a non-negative integer, got {seed}")
    if whole_number("max_probe_pixels", max_probe_pixels) < 1:
        raise TopoLensError(f"max_probe_pixels must be at least 1, got {max_probe_pixels}")


def _model_input(
    model: torch.nn.Module,
    images: Any,
    modules: dict[str, torch.nn.Module],
    scale: InputScale,
) -> tuple[ImageSource, dict[str, str]]:
    """The images as the model sees them (scaled), checked on the first ones (channels, the
    layers' calls), and what the scaling was (each cloud's meta records it)."""
    source = model_images(model, images)
    stored = source.read(np.arange(min(len(source), WARNING_IMAGES)))  # one read of the first
    check_channels(model, stored[:1])
    pixel_dtype = source.pixel_dtype
    first = scale.apply(stored, pixel_dtype)
    scale_meta = {
        "input_scale": str(scale),
        "input_scale_text": scale.describe(pixel_dtype),
        "input_scale_warning": range_warning(first, scale, pixel_dtype) or "",
    }
    model_device, dtype = model_device_dtype(model)
    with eval_mode(model):
        check_layer_calls(model, modules, torch_batch(first[:1], model_device, dtype))
    return scaled_source(source, scale), scale_meta  # every read is what the model sees


def _checked_geometry(
    model: torch.nn.Module,
    modules: dict[str, torch.nn.Module],
    source: ImageSource,
    sampling: str,
    max_points: int | None,
    max_probe_pixels: int,
) -> dict[str, LayerGeometry]:
    """Each layer's output geometry; refused before any work when probing its receptive
    fields would cost more than ``max_probe_pixels``."""
    model_device, dtype = model_device_dtype(model)
    with eval_mode(model):
        geometry = layer_geometry(
            model, modules, source.sample_shape, dtype=dtype, device=model_device
        )
    cost = (sampling, len(source), max_points, source.sample_shape[1:], max_probe_pixels)
    try:
        _check_probe_cost(geometry, *cost)
    except ImageError:
        # too big to probe every field: the layers whose fields compose from the
        # architecture are never probed (tracing is looked at only here: its first
        # run imports parts of torch for ~2 s, which napari's Run must not wait for)
        with eval_mode(model):
            routes = probe_reasons(
                model, modules, geometry, source.sample_shape, dtype=dtype, device=model_device
            )
        composed = {name for name, route in routes.items() if isinstance(route, ClosedForm)}
        _check_probe_cost(
            {name: geo for name, geo in geometry.items() if name not in composed}, *cost
        )
    return geometry


def _forward_order(
    model: torch.nn.Module, source: ImageSource, modules: dict[str, torch.nn.Module]
) -> list[str]:
    """The order the forward pass reaches ``modules`` (one image's pass)."""
    import torch

    device, dtype = model_device_dtype(model)
    with eval_mode(model):
        sample = torch.from_numpy(source.read([0])).to(device=device, dtype=dtype)
        return list(capture_layers(model, sample, modules))


def _run_batch(
    model: torch.nn.Module,
    source: ImageSource,
    modules: dict[str, torch.nn.Module],
    plans: dict[str, _SamplingPlan],
    index: np.ndarray,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], list[str], dict[str, str]]:
    """One forward pass: each layer's points of the images ``index``, the order, notes."""
    import torch

    device, dtype = model_device_dtype(model)
    notes: dict[str, str] = {}
    chunk = torch.from_numpy(source.read(index)).to(device=device, dtype=dtype)
    outputs = capture_layers(model, chunk, modules, notes)
    parts = {name: plans[name].take(name, out, index) for name, out in outputs.items()}
    return parts, list(outputs), notes


def _check_mask(mask: Any, batch: ImageSource, sampling: str) -> np.ndarray | None:
    """The foreground mask as ``(N, H, W)`` bool; refused unless it fits ``batch``."""
    if sampling != "foreground":
        if mask is not None:
            raise TopoLensError(
                f"a mask was given but sampling is {sampling!r}; use sampling='foreground' "
                "to sample inside the mask"
            )
        return None
    if mask is None:
        raise EmptySelectionError(
            "foreground sampling needs a mask of the object's pixels per image "
            "(a boolean (N, H, W) array, a Labels layer or a folder of mask files)"
        )
    height, width = batch.sample_shape[1], batch.sample_shape[2]
    stack = as_mask_stack(mask, len(batch), height, width)
    empty = np.flatnonzero(~stack.reshape(len(stack), -1).any(axis=1))
    if len(empty):
        raise EmptySelectionError(
            f"the foreground mask is empty for {len(empty)} image(s) (first: index {empty[0]}); "
            "mark the object in every image, or leave those images out"
        )
    return stack


def as_mask_stack(
    mask: Any, n_images: int, height: int, width: int, what: str = "the mask"
) -> np.ndarray:
    """A per-image mask as read-only ``(N, H, W)`` bool (non-zero = inside); one 2-D mask serves all."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ImageError(f"{what} must be a boolean or numeric array, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (height, width) or len(array) not in (1, n_images):
        raise ImageError(
            f"{what} has shape {np.shape(mask)} but the images are {n_images} x {height}x{width}; "
            f"give one ({height}, {width}) mask per image, or one for all"
        )
    return np.broadcast_to(array != 0, (n_images, height, width))


def _check_probe_cost(
    geometry: dict[str, LayerGeometry],
    sampling: str,
    n_images: int,
    max_points: int | None,
    image_hw: tuple[int, ...],
    max_probe_pixels: int,
) -> None:
    """Refuse, before any work, images too big for the receptive fields a sampling needs."""
    if sampling == "pooled":
        return
    height, width = int(image_hw[0]), int(image_hw[1])
    positions = 0
    for geo in geometry.values():
        if geo.kind == "vector" or geo.nan_on_blank:
            continue
        if sampling == "foreground":  # every position's box, to find the centres in the mask
            positions += geo.n_positions
        elif sampling == "all_positions":
            cap = DEFAULT_MAX_POSITIONS if max_points is None else int(max_points)
            positions += min(geo.n_positions, cap, n_images * geo.n_positions)
        else:
            chosen = n_images if max_points is None else min(n_images, int(max_points))
            positions += min(geo.n_positions, chosen)
    if positions == 0:
        return
    _route, passes = probe_cost(height, width, positions)
    if passes * height * width > max_probe_pixels:
        raise ImageError(
            f"the images are too big for {sampling} sampling: the receptive fields of "
            f"{height}x{width}-pixel images need up to {passes:,} probe passes "
            f"({passes * height * width:.3g} pixel evaluations), over the limit of "
            f"{max_probe_pixels:.3g} (max_probe_pixels, --max-probe-pixels). Use sampling "
            "'pooled' (no receptive fields), top_norm or random_position on fewer images, or "
            "crop or downscale the images"
        )


def _extraction_steps(
    model: torch.nn.Module,
    source: ImageSource,
    modules: dict[str, torch.nn.Module],
    geometry: dict[str, LayerGeometry],
    sampling: str,
    max_points: int | None,
    batch_size: int,
    seed: int,
    max_probe_pixels: int,
    mask: np.ndarray | None = None,
    target: torch.device | None = None,
    scheduler: Any = None,
    scale_meta: dict[str, str] | None = None,
) -> Generator[Progress, None, dict[str, PointCloud]]:
    """Plan the sampling, run the batches (here or on Dask), probe the receptive fields of
    the points taken, and make the clouds."""
    with on_device(model, target), eval_mode(model):
        device, dtype = model_device_dtype(model)

        def probe(names: Sequence[str], positions: Callable[[str], np.ndarray]) -> dict[str, Any]:
            return receptive_fields(
                model,
                {name: modules[name] for name in names},
                {name: positions(name) for name in names},
                source.sample_shape,
                dtype=dtype,
                device=device,
                max_probe_pixels=max_probe_pixels,
            )

        all_boxes: dict[str, np.ndarray] = {}
        if sampling == "foreground":
            yield Progress(0.0, "probing receptive fields (foreground: every position)")
            spatial = [name for name in modules if geometry[name].kind != "vector"]
            everywhere = probe(spatial, lambda name: np.arange(geometry[name].n_positions))
            all_boxes = {name: everywhere[name].boxes for name in spatial}
        yield Progress(0.0, "extracting activations")
        plans = {
            name: _SamplingPlan.make(
                sampling,
                geometry[name],
                len(source),
                max_points,
                seed,
                name,
                mask,
                all_boxes.get(name),
            )
            for name in modules
        }
        batches = _batches(plans, batch_size)
        collected = _Collected(plans)
        if scheduler is None:
            for b, index in enumerate(batches):
                collected.add(_run_batch(model, source, modules, plans, index))
                yield Progress(0.9 * (b + 1) / len(batches), f"batch {b + 1}/{len(batches)}")
        else:  # the same batches, as Dask tasks on a cluster
            remote = iter_remote_batches(
                scheduler, _run_batch, model, source, modules, plans, batches, target
            )
            for result in (yield from scaled(remote, 0.0, 0.9)):
                collected.add(result)
        collected.check()
        flats = {name: collected.buffers[name].flat() for name in collected.forward_order}
        spatial_layers = [
            name
            for name in collected.forward_order
            if plans[name].mode != "pooled" and geometry[name].kind != "vector"
        ]
        fields = {}
        if spatial_layers:
            yield Progress(0.9, "probing receptive fields")
            fields = probe(spatial_layers, flats.__getitem__)
    run = _RunMeta(sampling, int(max_probe_pixels), len(source), int(seed), scale_meta or {})
    return {
        name: _cloud(
            name,
            geometry[name],
            plans[name],
            collected,
            fields.get(name),
            source.sample_shape[1:],
            run,
        )
        for name in collected.forward_order
    }


def _batches(plans: dict[str, _SamplingPlan], batch_size: int) -> list[np.ndarray]:
    """The images any layer samples, in sorted batches of ``batch_size``."""
    chosen = np.unique(np.concatenate([plan.images for plan in plans.values()])).astype(np.int64)
    n_batches = max(1, -(-len(chosen) // batch_size))
    return [chosen[b * batch_size : (b + 1) * batch_size] for b in range(n_batches)]


class _Collected:
    """Every layer's points, batch by batch, the order the forward pass reached the layers
    (from the first batch) and the layers' notes."""

    def __init__(self, plans: dict[str, _SamplingPlan]):
        self.buffers = {name: _PointBuffer(plan.n_points) for name, plan in plans.items()}
        self.forward_order: list[str] = list(plans)
        self.notes: dict[str, str] = {}
        self._batches = 0

    def add(self, result: tuple[dict[str, Any], list[str], dict[str, str]]) -> None:
        """One batch's points per layer, the order its forward pass reached them, its notes."""
        parts, order, notes = result
        if self._batches == 0:
            self.forward_order = order  # the order the forward pass reached them
        self._batches += 1
        self.notes.update(notes)
        for name in order:
            self.buffers[name].add(*parts[name])

    def check(self) -> None:
        for name in self.forward_order:
            buffer = self.buffers[name]
            if buffer.filled != buffer.size:  # the plan and take() disagree
                raise RuntimeError(
                    f"layer {name!r} gave {buffer.filled} points, planned {buffer.size}"
                )


class _RunMeta(NamedTuple):
    """What every cloud of one extraction records about it."""

    sampling: str  # as requested
    max_probe_pixels: int
    n_images: int
    seed: int
    scale_meta: dict[str, str]


def _cloud(
    name: str,
    geo: LayerGeometry,
    plan: _SamplingPlan,
    collected: _Collected,
    field: Any,
    image_hw: tuple[int, ...],
    run: _RunMeta,
) -> PointCloud:
    """One layer's cloud: its points, where they come from, and how they were sampled."""
    buffer = collected.buffers[name]
    points, image_index, flat = buffer.points(geo.channels), buffer.image_index(), buffer.flat()
    rf_method, rf_note, rf_passes = "whole-image", "", 0
    if field is not None:
        position = geo.positions(flat)
        boxes = field.of(flat)
        rf_method, rf_note, rf_passes = field.method, field.note, field.passes
    else:
        position = None
        boxes = np.tile(
            np.array([[0, 0, image_hw[0], image_hw[1]]], dtype=np.int64), (len(points), 1)
        )
        rf_note = "vector output" if geo.kind == "vector" else "pooled: the whole image"
    return PointCloud(
        layer=name,
        points=points,
        image_index=image_index,
        position=position,
        receptive_field=boxes,
        sampling=plan.mode,
        grid_shape=tuple(int(g) for g in geo.grid_shape),
        image_shape=(int(image_hw[0]), int(image_hw[1])),
        meta={
            "requested_sampling": run.sampling,
            "layer_kind": geo.kind,
            "receptive_field_method": rf_method,
            "receptive_field_note": rf_note,
            "receptive_field_probe_passes": int(rf_passes),
            "max_probe_pixels": run.max_probe_pixels,
            "n_images": run.n_images,
            "max_points": None if plan.cap is None else int(plan.cap),
            "seed": run.seed,
            "output_note": collected.notes.get(name, ""),
            **run.scale_meta,
            **plan.notes,
        },
    )


def receptive_field_centres(
    geo: LayerGeometry, boxes: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(P,) pixel row and column of the receptive-field centre of every position of a layer.

    ``boxes`` are the probed ``(P, 4)`` receptive fields of all the layer's positions.

    The probed boxes are clipped at the image border, so a border box's own centre
    drifts inward, and at a layer whose receptive field is larger than the image
    every box is the whole image and all centres coincide. On a spatial grid the
    centre is affine in the grid index: it is fitted on the boxes that touch no
    border (unclipped), or, when there are too few, taken as the centre of the
    position's cell of the image. Token and vector positions use their box's centre.
    """
    boxes = np.asarray(boxes, dtype=np.int64)
    if geo.kind != "spatial":
        return (boxes[:, 0] + boxes[:, 2] - 1) // 2, (boxes[:, 1] + boxes[:, 3] - 1) // 2
    rows, cols = np.divmod(np.arange(len(boxes)), geo.grid_shape[1])
    return (
        _axis_centres(boxes[:, 0], boxes[:, 2], rows, geo.grid_shape[0], height),
        _axis_centres(boxes[:, 1], boxes[:, 3], cols, geo.grid_shape[1], width),
    )


def _axis_centres(
    low: np.ndarray, high: np.ndarray, index: np.ndarray, n_cells: int, size: int
) -> np.ndarray:
    unclipped = (low > 0) & (high < size)
    if len(np.unique(index[unclipped])) >= 2:
        slope, offset = np.polyfit(index[unclipped], (low + high - 1)[unclipped] / 2.0, 1)
    else:
        slope = size / n_cells
        offset = (slope - 1.0) / 2.0
    centres = np.floor(slope * index + offset + 1e-6).astype(np.int64)
    return np.clip(centres, 0, size - 1)


class _PointBuffer:
    """One layer's points, image numbers and flat positions, written batch by batch.

    Sized once by the sampling plan: keeping each batch's small arrays until the end
    pinned the memory freed between them (peak RSS grew ~5 MiB per batch of 64).
    """

    def __init__(self, size: int):
        self.size, self.filled = int(size), 0
        self._points: np.ndarray | None = None  # (size, C) once the width is known
        self._image_index = np.empty(self.size, np.int64)
        self._flat = np.empty(self.size, np.int64)

    def add(self, points: np.ndarray, image_index: np.ndarray, flat: np.ndarray) -> None:
        end = self.filled + len(points)
        if end > self.size:
            raise RuntimeError(f"a batch gave more points than planned ({end} > {self.size})")
        if self._points is None:
            self._points = np.empty((self.size, points.shape[1]), np.float32)
        self._points[self.filled : end] = points
        self._image_index[self.filled : end] = image_index
        self._flat[self.filled : end] = flat
        self.filled = end

    def points(self, width: int) -> np.ndarray:
        if self._points is None:
            return np.empty((0, width), np.float32)
        return self._points[: self.filled]

    def image_index(self) -> np.ndarray:
        return self._image_index[: self.filled]

    def flat(self) -> np.ndarray:
        return self._flat[: self.filled]


class _SamplingPlan:
    """Which images and positions of one layer become points, fixed before any forward pass."""

    def __init__(
        self,
        mode: str,
        geo: LayerGeometry,
        images: np.ndarray,
        cap: int | None,
        rng: np.random.Generator,
        keep_flat: np.ndarray | None,
    ):
        self.mode, self.geo, self.images, self.cap, self.rng = mode, geo, images, cap, rng
        self.keep_flat = keep_flat  # all_positions: sorted global indices image * P + position
        self.mask: np.ndarray | None = None  # foreground: (N, H, W) bool
        self.all_boxes: np.ndarray | None = None  # foreground: (P, 4) box of every position
        self.centres: tuple[np.ndarray, np.ndarray] | None = None  # foreground: (P,) y and x
        self.notes: dict[str, Any] = {}

    @property
    def n_points(self) -> int:
        """Points this layer gives: one per kept position, or one per chosen image."""
        return len(self._keep_flat()) if self.mode == "all_positions" else len(self.images)

    def _keep_flat(self) -> np.ndarray:
        if self.keep_flat is None:
            raise RuntimeError(f"{self.mode} sampling keeps no flat position list")
        return self.keep_flat

    @classmethod
    def make(
        cls,
        sampling: str,
        geo: LayerGeometry,
        n_images: int,
        max_points: int | None,
        seed: int,
        layer: str,
        mask: np.ndarray | None = None,
        all_boxes: np.ndarray | None = None,
    ) -> _SamplingPlan:
        # seeded by the layer's name, so a layer samples the same way whatever else is asked for
        rng = np.random.default_rng([seed, zlib.crc32(layer.encode())])
        image_rng = np.random.default_rng([seed, 1_000_003])  # same image subset for every layer
        mode = "pooled" if geo.kind == "vector" else sampling
        n_positions = geo.n_positions
        if mode == "all_positions":
            position_cap = DEFAULT_MAX_POSITIONS if max_points is None else int(max_points)
            total = n_images * n_positions
            keep = (
                np.arange(total)
                if total <= position_cap
                else np.sort(rng.choice(total, size=position_cap, replace=False))
            )
            images = np.unique(keep // n_positions)
            return cls(mode, geo, images, position_cap, rng, keep)
        cap = None if max_points is None else int(max_points)
        if cap is not None and cap < n_images:
            images = np.sort(image_rng.choice(n_images, size=cap, replace=False))
        else:
            images = np.arange(n_images)
        if mode == "random_position":
            rows, cols = geo.grid_shape
            low_r, low_c = (1 if rows > 1 else 0), (1 if cols > 1 else 0)
            r = rng.integers(low_r, rows, size=n_images)
            c = rng.integers(low_c, cols, size=n_images)
            keep = r * cols + c  # per image, indexed by image number
            return cls(mode, geo, images, cap, rng, keep)
        plan = cls(mode, geo, images, cap, rng, None)
        if mode == "foreground" and mask is not None and all_boxes is not None:
            plan._restrict_to_mask(mask, all_boxes)
        return plan

    def _centres_inside(self, image_ids: np.ndarray) -> np.ndarray:
        """(B, P) bool: the receptive-field centre of position p lies inside image b's mask."""
        assert self.mask is not None and self.centres is not None  # set by _restrict_to_mask
        centre_y, centre_x = self.centres
        return self.mask[image_ids][:, centre_y, centre_x]

    def _restrict_to_mask(self, mask: np.ndarray, all_boxes: np.ndarray) -> None:
        """Keep the images with a position inside their mask; record the others as skipped."""
        self.mask, self.all_boxes = mask, all_boxes
        self.centres = receptive_field_centres(self.geo, all_boxes, mask.shape[1], mask.shape[2])
        has_position = np.concatenate(
            [
                self._centres_inside(self.images[i : i + 256]).any(axis=1)
                for i in range(0, len(self.images), 256)
            ]
        )
        skipped = self.images[~has_position]
        self.images = self.images[has_position]
        self.notes["foreground_skipped"] = skipped.astype(np.int64)
        if len(skipped):
            self.notes["foreground_note"] = (
                f"{len(skipped)} image(s) have no receptive-field centre of this layer inside "
                "their mask and give no point here"
            )

    def take(
        self, name: str, output: torch.Tensor, index: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points, their image numbers and flat positions from one batch's layer output."""
        import torch

        wanted = np.isin(index, self.images)
        rows = np.flatnonzero(wanted)
        out = output[torch.from_numpy(rows).to(output.device)]
        kind = self.geo.kind
        if kind == "spatial":
            per_position = out.flatten(2).transpose(1, 2)  # (B, P, C)
        elif kind == "tokens":
            per_position = out  # (B, T, C)
        else:
            per_position = out.reshape(len(rows), 1, -1)
        per_position = per_position.float()
        image_ids = index[rows]
        if self.mode == "pooled":
            points = per_position.mean(dim=1)
            flat = np.zeros(len(rows), dtype=np.int64)
            ids = image_ids
        elif self.mode in ("random_position", "top_norm", "foreground"):
            if self.mode == "random_position":
                flat = self._keep_flat()[image_ids]
            elif self.mode == "foreground" and self.mask is not None:
                inside = torch.from_numpy(self._centres_inside(image_ids))
                norms = per_position.norm(dim=2)
                norms = norms.masked_fill(~inside.to(norms.device), -1.0)  # norms are >= 0
                flat = norms.argmax(dim=1).cpu().numpy()
            else:
                flat = per_position.norm(dim=2).argmax(dim=1).cpu().numpy()
            pick = torch.from_numpy(flat).to(per_position.device)
            points = per_position[torch.arange(len(rows), device=per_position.device), pick]
            ids = image_ids
        else:  # all_positions
            n_pos = self.geo.n_positions
            lo = np.searchsorted(self._keep_flat(), image_ids.min() * n_pos) if len(rows) else 0
            hi = (
                np.searchsorted(self._keep_flat(), (image_ids.max() + 1) * n_pos)
                if len(rows)
                else 0
            )
            keep = self._keep_flat()[lo:hi]
            img, flat = np.divmod(keep, n_pos)
            local = np.searchsorted(image_ids, img)  # batches hold sorted image numbers
            points = per_position[torch.from_numpy(local), torch.from_numpy(flat)]
            ids = img
        array = points.cpu().numpy().astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise LayerError(
                f"layer {name!r} produced NaN or infinite activations; check the model and its input scaling"
            )
        return array, ids, flat
