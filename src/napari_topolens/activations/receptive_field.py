"""Receptive fields: in closed form from the architecture, else by NaN propagation.

**Closed form** (:func:`closed_form_fields`). The path from the image to a layer is
read from a ``torch.fx`` trace of the model, or, where the model does not trace,
from the chain of modules its forward pass calls (forward hooks; only a pure chain,
each call reading the previous call's output unmodified). Each step is, per axis,
the input indices every output index reads: convolutions and pools (kernel,
stride, padding, dilation, ``ceil_mode``), adaptive pools, padding modules,
elementwise steps (identity) and steps that mix a whole axis (group norm, layer
norm over space, a linear layer on the width). The index sets are composed
backwards exactly and clipped at every tensor's border, as padding reads no pixel,
so the box is the one probing finds; residual additions and channel
concatenations take the union of their branches (a join where a branch reads only
padding at some position is probed instead: the union of boxes is then not exact).
Anything else falls back to probing for that layer, and the result's ``note`` says
why. The sets are ``(rows, axis length)`` booleans, processed a chunk of rows at a
time under :data:`CLOSED_FORM_CHUNK_BYTES`.

**Probing.** An output position depends on an input row ``y`` exactly when a NaN in that row
reaches it: NaN survives every convolution (``NaN * 0`` is NaN), pooling (max
and average), normalisation and the usual elementwise activations. The receptive
field of a position is the bounding box of the rows and columns that reach it.
No table of layer types is used; this is exact for any stack of convolutions
(strided, dilated, padded), pooling and elementwise layers, and attention or
global pooling correctly give the whole image.

Only the positions a sampling keeps are resolved, and two exact routes are used,
whichever needs fewer forward passes:

* a **scan** runs one probe per input row and column (``H + W`` passes), each
  image with that row or column NaN, and keeps a running first/last reaching
  row and column per kept position;
* a **bisection** finds each kept position's first reaching row as the smallest
  ``t`` whose probe with rows ``[0, t)`` NaN reaches it (and likewise the last row
  with rows ``[t, H)``, and the columns), about ``4 log2(max(H, W))`` passes per
  group of positions that share their answers. ``top_norm`` and
  ``random_position`` keep one position per image, so on a big image this needs
  a few hundred passes instead of thousands.

Probe batches are sized so that one batch's layer outputs stay under
``PROBE_MEMORY_BYTES``, and only the kept positions' answers are stored, so
memory does not grow with the image beyond one forward pass. The work is ``passes
x H x W`` pixel evaluations; above ``max_probe_pixels`` the images are refused
as too big, naming the limit, before any work is done.

Other layers: a vector output ``(B, C)`` (linear layers, flattened global
pools) has the whole image as its receptive field and is never probed; pooled
sampling needs no receptive fields at all. 3-D outputs are read as tokens
``(B, T, C)`` and each token gets the box of the pixels that reach it. Outputs of
rank above 4 are flattened to vectors. An operation that drops NaN
(``torch.where(x > 0, x, 0)``, ``nan_to_num``) would shrink the probed box; a
position no probe reaches is given the whole image and noted in ``note``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ImageError
from .hooks import capture_layers, split_call

if TYPE_CHECKING:
    import torch

__all__ = [
    "CLOSED_FORM_CHUNK_BYTES",
    "DEFAULT_MAX_PROBE_PIXELS",
    "PROBE_MEMORY_BYTES",
    "ClosedForm",
    "LayerGeometry",
    "ReceptiveFields",
    "closed_form_fields",
    "layer_geometry",
    "probe_cost",
    "probing_only",
    "receptive_fields",
]

#: Default cap on receptive-field probing work (passes x pixels per pass), about
#: minutes on a laptop CPU for a small CNN: a 1024 x 1024 image scanned row by row
#: and column by column (2048 passes) fits, and so does one position per image of
#: a 4096 x 4096 image by bisection (~100 passes); all positions of a 2048 x 2048
#: image (4096 passes) do not.
DEFAULT_MAX_PROBE_PIXELS = 2**32
#: Probe batches are sized so that their layer outputs stay below this.
PROBE_MEMORY_BYTES = 256 * 1024**2

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LayerGeometry:
    """Kind and grid of a layer's output, from one forward pass of a blank image."""

    kind: str  # "spatial" (B, C, H', W'), "tokens" (B, T, C) or "vector" (B, C)
    grid_shape: tuple[int, ...]
    channels: int
    nan_on_blank: bool  # the layer is NaN on a zero image: NaN probing cannot be used
    bytes_per_image: int  # of this layer's output

    @property
    def n_positions(self) -> int:
        return int(np.prod(self.grid_shape)) if self.grid_shape else 1

    def positions(self, flat: np.ndarray) -> np.ndarray:
        """``(row, col)`` of flattened position indices (tokens: ``(token, 0)``)."""
        flat = np.asarray(flat, dtype=np.int64)
        if self.kind == "spatial":
            return np.stack(np.divmod(flat, self.grid_shape[1]), axis=1)
        return np.stack([flat, np.zeros_like(flat)], axis=1)


@dataclass(frozen=True)
class ReceptiveFields:
    """Boxes ``(y0, x0, y1, x1)`` of the positions ``flat`` of one layer."""

    flat: np.ndarray  # sorted unique flat positions
    boxes: np.ndarray  # (len(flat), 4) int64, end-exclusive
    method: str
    note: str
    passes: int

    def of(self, flat: np.ndarray) -> np.ndarray:
        """Boxes of any of the resolved positions, in the order asked."""
        return self.boxes[np.searchsorted(self.flat, np.asarray(flat, dtype=np.int64))]


def _kind_of(output: torch.Tensor) -> tuple[str, tuple[int, ...], int]:
    shape = tuple(output.shape[1:])
    if len(shape) == 3:
        return "spatial", (shape[1], shape[2]), shape[0]
    if len(shape) == 2:
        return "tokens", (shape[0], 1), shape[1]
    return "vector", (), int(np.prod(shape)) if shape else 1


def _nan_positions(output: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, P) bool: which positions of each probe turned NaN."""
    import torch

    bad = torch.isnan(output)
    if kind == "spatial":
        return bad.any(dim=1).flatten(1)
    if kind == "tokens":
        return bad.any(dim=2)
    return bad.flatten(1).any(dim=1, keepdim=True)


def layer_geometry(
    model: torch.nn.Module,
    modules: Mapping[str, torch.nn.Module],
    image_shape: tuple[int, int, int],
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, LayerGeometry]:
    """Kind and grid of each layer's output (one blank image forward; cached)."""
    import torch

    cache = _CACHE.setdefault(model, {})
    key_of = {name: ("geometry", tuple(image_shape), str(dtype), name) for name in modules}
    todo = {name: m for name, m in modules.items() if key_of[name] not in cache}
    if todo:
        blank = torch.zeros((1, *image_shape), dtype=dtype, device=device)
        for name, out in capture_layers(model, blank, todo).items():
            kind, grid, channels = _kind_of(out)
            cache[key_of[name]] = LayerGeometry(
                kind,
                grid,
                channels,
                bool(torch.isnan(out).any()),
                int(out.numel() * out.element_size()),
            )
    return {name: cache[key_of[name]] for name in modules}


def _rounds(extent: int) -> int:
    return max(1, math.ceil(math.log2(max(extent, 2))))


def probe_cost(height: int, width: int, n_positions: int) -> tuple[str, int]:
    """The cheaper exact route for ``n_positions`` positions, and its pass count (upper bound)."""
    scan = height + width
    bisection = 1 + 2 * n_positions * (_rounds(height) + _rounds(width))
    return ("bisection", bisection) if bisection < scan else ("scan", scan)


def _probe_batch(geometry: Mapping[str, LayerGeometry], image_shape: tuple[int, int, int]) -> int:
    channels, height, width = image_shape
    per_probe = 4 * channels * height * width + sum(g.bytes_per_image for g in geometry.values())
    return max(1, PROBE_MEMORY_BYTES // max(1, 2 * per_probe))


def probe_reasons(
    model: torch.nn.Module,
    modules: Mapping[str, torch.nn.Module],
    geometry: Mapping[str, LayerGeometry],
    image_shape: tuple[int, int, int],
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, ClosedForm | str]:
    """Per spatial or token layer, its :class:`ClosedForm`, or why it must be probed."""
    spatial = {n: m for n, m in modules.items() if geometry[n].kind == "spatial"}
    found: dict[str, ClosedForm | str] = {
        name: "token output (B, T, C): the tokens are not a grid the architecture maps"
        for name in modules
        if geometry[name].kind == "tokens"
    }
    if _PROBING_ONLY[-1]:
        return {**found, **{name: "closed form switched off (probing_only)" for name in spatial}}
    if spatial:
        found.update(closed_form_fields(model, spatial, image_shape, dtype=dtype, device=device))
    return found


def receptive_fields(
    model: torch.nn.Module,
    modules: Mapping[str, torch.nn.Module],
    wanted: Mapping[str, np.ndarray],
    image_shape: tuple[int, int, int],
    *,
    dtype: torch.dtype,
    device: torch.device,
    max_probe_pixels: int = DEFAULT_MAX_PROBE_PIXELS,
) -> dict[str, ReceptiveFields]:
    """Receptive fields of the flat positions ``wanted[name]`` of each layer.

    Layers that are vectors, or NaN on a blank image, get the whole image
    unprobed. Raises :class:`~napari_topolens.errors.ImageError` when the probing
    would exceed ``max_probe_pixels`` pixel evaluations.
    """
    _channels, height, width = image_shape
    geometry = layer_geometry(model, modules, image_shape, dtype=dtype, device=device)
    whole = np.array([0, 0, height, width], dtype=np.int64)
    cache = _CACHE.setdefault(model, {})
    results: dict[str, ReceptiveFields] = {}
    todo: dict[str, np.ndarray] = {}
    why_probed = probe_reasons(model, modules, geometry, image_shape, dtype=dtype, device=device)
    for name in modules:
        flat = np.unique(np.asarray(wanted.get(name, np.zeros(0)), dtype=np.int64))
        known = cache.get(("boxes", tuple(image_shape), str(dtype), name))
        unprobed = _unprobed_fields(geometry[name], flat, why_probed.get(name), known, whole)
        if unprobed is None:
            todo[name] = flat
        else:
            results[name] = unprobed
    if not todo:
        return results
    route, passes = probe_cost(height, width, sum(len(f) for f in todo.values()))
    if passes * height * width > max_probe_pixels:
        raise ImageError(
            f"the images are too big for receptive fields: {height}x{width} pixels need "
            f"{passes:,} probe passes ({passes * height * width:.3g} pixel evaluations) for "
            f"layer(s) {', '.join(todo)}, over the limit of {max_probe_pixels:.3g} "
            "(max_probe_pixels / --max-probe-pixels). Use sampling 'pooled' (no receptive "
            "fields), keep fewer positions (top_norm or random_position resolve one per "
            "image), or crop or downscale the images"
        )
    chunk = _probe_batch({n: geometry[n] for n in todo}, image_shape)
    probe_modules = {name: modules[name] for name in todo}
    run = _nan_reach(model, probe_modules, geometry, todo, image_shape, dtype, device, chunk)
    boxes = {name: np.tile(whole, (len(flat), 1)) for name, flat in todo.items()}
    reached = {name: np.ones(len(flat), bool) for name, flat in todo.items()}
    if route == "scan":
        passes = _scan(run, todo, boxes, reached, height, width, chunk)
    else:
        passes = _bisect(run, todo, boxes, reached, height, width)
    for name, flat in todo.items():
        box = boxes[name]
        box[~reached[name]] = whole
        note = f"probed: {why_probed[name]}"
        if not reached[name].all():
            note += (
                f"; {int((~reached[name]).sum())} of {len(flat)} positions were reached by no "
                "probe (an operation drops NaN); they were given the whole image"
            )
        results[name] = ReceptiveFields(flat, box, f"nan-probe ({route})", note, passes)
        _remember(cache, ("boxes", tuple(image_shape), str(dtype), name), results[name])
    return {name: results[name] for name in modules}


def _unprobed_fields(
    geo: LayerGeometry,
    flat: np.ndarray,
    closed: Any,
    known: ReceptiveFields | None,
    whole: np.ndarray,
) -> ReceptiveFields | None:
    """The fields of ``flat`` when no probe is needed (a vector or NaN-on-blank layer, a
    closed form, or positions probed before); ``None`` when they must be probed."""
    if geo.kind == "vector" or geo.nan_on_blank:
        note = (
            "vector output"
            if geo.kind == "vector"
            else ("the layer is NaN on a zero image, so NaN probing cannot be used")
        )
        return ReceptiveFields(flat, np.tile(whole, (len(flat), 1)), "whole-image", note, 0)
    if isinstance(closed, ClosedForm):
        box, hit = closed.boxes(geo.positions(flat))
        box[~hit] = whole
        note = ""
        if not hit.all():
            note = (
                f"{int((~hit).sum())} of {len(flat)} positions read only padding; "
                "they were given the whole image"
            )
        return ReceptiveFields(flat, box, f"closed form ({closed.route})", note, 0)
    if known is not None and np.isin(flat, known.flat).all():
        return ReceptiveFields(flat, known.of(flat), known.method, known.note, 0)
    return None


def _nan_reach(
    model: torch.nn.Module,
    probe_modules: dict[str, torch.nn.Module],
    geometry: Mapping[str, LayerGeometry],
    todo: dict[str, np.ndarray],
    image_shape: tuple[int, int, int],
    dtype: torch.dtype,
    device: torch.device,
    chunk: int,
) -> Callable[[list[tuple[str, int, int]]], dict[str, np.ndarray]]:
    """The probe runner of :func:`_scan` and :func:`_bisect`."""
    import torch

    def run(masks: list[tuple[str, int, int]]) -> dict[str, np.ndarray]:
        """NaN reach at the wanted positions for probes (axis, start, stop): rows/cols start:stop NaN."""
        reach = {name: np.zeros((len(masks), len(flat)), bool) for name, flat in todo.items()}
        for begin in range(0, len(masks), chunk):
            part = masks[begin : begin + chunk]
            probes = torch.zeros((len(part), *image_shape), dtype=dtype, device=device)
            for k, (axis, start, stop) in enumerate(part):
                if axis == "row":
                    probes[k, :, start:stop, :] = float("nan")
                else:
                    probes[k, :, :, start:stop] = float("nan")
            outputs = capture_layers(model, probes, probe_modules)
            for name, out in outputs.items():
                bad = _nan_positions(out, geometry[name].kind)
                index = torch.from_numpy(todo[name]).to(bad.device)
                reach[name][begin : begin + len(part)] = bad[:, index].cpu().numpy()
            del probes, outputs
        return reach

    return run


def _remember(cache: dict, key: tuple, found: ReceptiveFields) -> None:
    """Keep probed fields for the next call, merged with positions resolved before."""
    known = cache.get(key)
    if known is None:
        cache[key] = found
        return
    merged = np.union1d(known.flat, found.flat)
    merged_boxes = np.empty((len(merged), 4), np.int64)
    merged_boxes[np.searchsorted(merged, known.flat)] = known.boxes
    merged_boxes[np.searchsorted(merged, found.flat)] = found.boxes
    cache[key] = ReceptiveFields(merged, merged_boxes, found.method, found.note, 0)


def _scan(run, todo, boxes, reached, height: int, width: int, chunk: int) -> int:
    """One probe per row and column; running first/last reaching row and column."""
    for name in todo:
        boxes[name][:, :2] = np.iinfo(np.int64).max
        boxes[name][:, 2:] = -1
    for axis, extent, low, high in (("row", height, 0, 2), ("col", width, 1, 3)):
        for begin in range(0, extent, chunk):
            lines = list(range(begin, min(begin + chunk, extent)))
            reach = run([(axis, y, y + 1) for y in lines])
            for name in todo:
                hit = reach[name]  # (lines, positions)
                any_hit = hit.any(axis=0)
                first = begin + hit.argmax(axis=0)
                last = begin + len(lines) - hit[::-1].argmax(axis=0)
                box = boxes[name]
                box[any_hit, low] = np.minimum(box[any_hit, low], first[any_hit])
                box[any_hit, high] = np.maximum(box[any_hit, high], last[any_hit])
    for name in todo:
        box = boxes[name]
        reached[name] = (box[:, 2] >= 0) & (box[:, 3] >= 0)
    return height + width


def _bisect(run, todo, boxes, reached, height: int, width: int) -> int:
    """Per position, the first/last reaching row and column by bisection on prefix/suffix probes."""
    passes = 1
    everything = run([("row", 0, height)])
    for name in todo:
        reached[name] = everything[name][0]
    # searches[(name, axis, end)] = (lo, hi) arrays per position
    searches = {}
    for name, flat in todo.items():
        for axis, extent in (("row", height), ("col", width)):
            for end in ("first", "last"):
                lo = np.zeros(len(flat), np.int64)
                hi = np.full(len(flat), extent, np.int64)
                searches[(name, axis, end)] = (lo, hi)
    while True:
        probes: dict[tuple[str, int, int], int] = {}
        pending = {}
        for (name, axis, end), (lo, hi) in searches.items():
            active = np.flatnonzero((hi - lo > 1) & reached[name])
            if len(active) == 0:
                continue
            mid = (lo[active] + hi[active]) // 2
            extent = height if axis == "row" else width
            masks = []
            for t in mid.tolist():
                mask = (axis, 0, t) if end == "first" else (axis, t, extent)
                probes.setdefault(mask, len(probes))
                masks.append(probes[mask])
            pending[(name, axis, end)] = (active, mid, np.array(masks, np.int64))
        if not pending:
            break
        order = list(probes)  # insertion order = the indices handed out
        reach = run(order)
        passes += len(order)
        for (name, axis, end), (active, mid, rows) in pending.items():
            lo, hi = searches[(name, axis, end)]
            hit = reach[name][rows, active]
            if end == "first":  # prefix [0, t) reaches iff first < t
                hi[active[hit]] = mid[hit]
                lo[active[~hit]] = mid[~hit]
            else:  # suffix [t, extent) reaches iff last >= t
                lo[active[hit]] = mid[hit]
                hi[active[~hit]] = mid[~hit]
    for name in todo:
        box = boxes[name]
        box[:, 0] = searches[(name, "row", "first")][1] - 1
        box[:, 2] = searches[(name, "row", "last")][0] + 1
        box[:, 1] = searches[(name, "col", "first")][1] - 1
        box[:, 3] = searches[(name, "col", "last")][0] + 1
    return passes


# --------------------------------------------------------------------------------------
# Closed form: the fields composed from the architecture, no probing.
# --------------------------------------------------------------------------------------

#: ``(n_wanted, axis length)`` bool sets are processed in chunks of at most this many bytes.
CLOSED_FORM_CHUNK_BYTES = 64 * 1024**2
_PROBING_ONLY = [False]


@contextmanager
def probing_only() -> Iterator[None]:
    """Within this block every spatial layer is probed (the route before the closed form).

    For tests and benchmarks that compare the two routes; results are cached per route.
    """
    _PROBING_ONLY.append(True)
    try:
        yield
    finally:
        _PROBING_ONLY.pop()


class _NoClosedForm(Exception):
    """Why a layer's field cannot be composed from the architecture (it is probed instead)."""


#: One axis of one operation, read backwards: ``IDENTITY``, ``GLOBAL`` (every output
#: index depends on every input index) or an ``(out, k)`` int64 array of the input
#: indices each output index reads (-1: padding, reads nothing).
IDENTITY = "identity"
GLOBAL = "global"


def _conv_window(out: int, size: int, kernel: int, stride: int, pad: int, dilation: int):
    """Input indices read by each output index of a padded, strided, dilated window."""
    start = np.arange(out, dtype=np.int64)[:, None] * stride - pad
    source = start + np.arange(kernel, dtype=np.int64)[None, :] * dilation
    source[(source < 0) | (source >= size)] = -1
    return source


def _window_out(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    """torch's output length of a conv/pool window (ceil_mode: a last window starting in
    the input or the left padding)."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _adaptive_window(out: int, size: int):
    """torch's adaptive pooling windows: ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    index = np.arange(out, dtype=np.int64)
    start = (index * size) // out
    stop = -((-(index + 1) * size) // out)
    source = start[:, None] + np.arange(int((stop - start).max()), dtype=np.int64)[None, :]
    source[source >= stop[:, None]] = -1
    return source


def _pad_window(size: int, before: int, after: int, mode: str):
    """Input index each output index of a padded axis copies (-1: a constant)."""
    source = np.arange(size + before + after, dtype=np.int64) - before
    if mode in ("zeros", "constant"):
        source[(source < 0) | (source >= size)] = -1
    elif mode == "reflect":
        if before >= size or after >= size:
            raise _NoClosedForm("reflection padding wider than the input")
        source = np.abs(source)
        source = np.where(source >= size, 2 * (size - 1) - source, source)
    elif mode == "replicate":
        source = np.clip(source, 0, size - 1)
    elif mode == "circular":
        source = np.mod(source, size)
    else:
        raise _NoClosedForm(f"padding mode {mode!r}")
    return source[:, None]


def _pair(value: Any, n: int = 2) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise _NoClosedForm(f"a {len(value)}-element size where {n} were expected")
        return tuple(int(v) for v in value)
    return (int(value),) * n


def _check_out(kind: str, predicted: tuple[int, ...], observed: tuple[int, ...]) -> None:
    if tuple(predicted) != tuple(observed):
        raise _NoClosedForm(
            f"{kind}: the predicted output grid {predicted} is not the observed {observed}"
        )


def _elementwise_module_types() -> tuple[type, ...]:
    from torch import nn

    return (
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
        nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh,
        nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink, nn.LogSigmoid, nn.Identity,
        nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.LocalResponseNorm,
    )  # fmt: skip


def _module_windows(module: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """Row and column windows of a standard module on a ``(B, C, H, W)`` tensor.

    Only exact types (no subclasses, whose ``forward`` may differ); anything else
    raises :class:`_NoClosedForm` naming the module type.
    """
    from torch import nn

    kind = type(module)
    if len(in_shape) != 4 or len(out_shape) != 4:
        raise _NoClosedForm(f"{kind.__name__} on a {len(in_shape)}-d tensor")
    size, out = (in_shape[2], in_shape[3]), (out_shape[2], out_shape[3])
    if kind in _elementwise_module_types():
        _check_out(kind.__name__, size, out)
        return IDENTITY, IDENTITY
    if kind in (nn.Softmax, nn.LogSoftmax, nn.Softmin):
        dim = module.dim if module.dim is not None else 1
        dim = dim % 4
        return tuple(GLOBAL if dim == axis else IDENTITY for axis in (2, 3))
    if kind is nn.Softmax2d:
        return IDENTITY, IDENTITY
    if kind in (nn.BatchNorm2d, nn.SyncBatchNorm, nn.InstanceNorm2d):
        running = module.running_mean is not None and not module.training
        if kind is nn.InstanceNorm2d:
            running = running and module.track_running_stats
        # statistics of the batch or the image mix every position; running ones do not
        return (IDENTITY, IDENTITY) if running else (GLOBAL, GLOBAL)
    if kind is nn.GroupNorm:
        return GLOBAL, GLOBAL  # statistics over each group's whole image
    if kind is nn.LayerNorm:
        dims = len(module.normalized_shape)
        return (GLOBAL if dims >= 2 else IDENTITY), GLOBAL
    if kind is nn.Linear:  # on a 4-d tensor: mixes the last (width) axis
        return IDENTITY, GLOBAL
    if kind is nn.Conv2d:
        return _conv_windows(module, size, out)
    if kind in (nn.MaxPool2d, nn.AvgPool2d):
        return _pool_windows(module, size, out)
    if kind in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
        if kind is nn.AdaptiveMaxPool2d and module.return_indices:
            raise _NoClosedForm("AdaptiveMaxPool2d with return_indices")
        return tuple(_adaptive_window(out[axis], size[axis]) for axis in range(2))
    if kind in (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d):
        return _pad_windows(module, size, out)
    raise _NoClosedForm(f"module {kind.__name__} has no closed form")


def _conv_windows(module: Any, size: tuple[int, int], out: tuple[int, int]) -> tuple[Any, ...]:
    """Row and column windows of a ``Conv2d`` (zero padding only)."""
    if module.padding_mode != "zeros":
        raise _NoClosedForm(f"Conv2d with padding_mode={module.padding_mode!r}")
    kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
    if isinstance(module.padding, str):
        pad = (
            (0, 0)
            if module.padding == "valid"
            else tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        )
    else:
        pad = module.padding
    windows = []
    for axis in range(2):
        if module.padding == "same":
            predicted = size[axis]
        else:
            predicted = _window_out(
                size[axis], kernel[axis], stride[axis], pad[axis], dilation[axis], False
            )
        _check_out("Conv2d", (predicted,), (out[axis],))
        windows.append(
            _conv_window(
                out[axis], size[axis], kernel[axis], stride[axis], pad[axis], dilation[axis]
            )
        )
    return tuple(windows)


def _pool_windows(module: Any, size: tuple[int, int], out: tuple[int, int]) -> tuple[Any, ...]:
    """Row and column windows of a ``MaxPool2d`` or ``AvgPool2d``."""
    from torch import nn

    kind = type(module)
    kernel = _pair(module.kernel_size)
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    pad = _pair(module.padding)
    dilation = _pair(getattr(module, "dilation", 1))
    if kind is nn.MaxPool2d and module.return_indices:
        raise _NoClosedForm("MaxPool2d with return_indices")
    windows = []
    for axis in range(2):
        predicted = _window_out(
            size[axis], kernel[axis], stride[axis], pad[axis], dilation[axis],
            module.ceil_mode,
        )  # fmt: skip
        _check_out(kind.__name__, (predicted,), (out[axis],))
        windows.append(
            _conv_window(
                out[axis], size[axis], kernel[axis], stride[axis], pad[axis], dilation[axis]
            )
        )
    return tuple(windows)


def _pad_windows(module: Any, size: tuple[int, int], out: tuple[int, int]) -> tuple[Any, Any]:
    """Row and column windows of a padding module (a crop has no closed form)."""
    from torch import nn

    kind = type(module)
    left, right, top, bottom = _pair(module.padding, 4)
    if min(left, right, top, bottom) < 0:
        raise _NoClosedForm(f"{kind.__name__} with negative padding (a crop)")
    mode = {
        nn.ZeroPad2d: "zeros",
        nn.ConstantPad2d: "constant",
        nn.ReflectionPad2d: "reflect",
        nn.ReplicationPad2d: "replicate",
    }[kind]
    rows = _pad_window(size[0], top, bottom, mode)
    cols = _pad_window(size[1], left, right, mode)
    _check_out(kind.__name__, (len(rows), len(cols)), out)
    return rows, cols


class _Sets:
    """Per axis, ``(n, length)`` bool: the indices of a tensor's axis that reach each wanted
    row (or column) of the layer. ``emptied``: a non-empty set became empty (only padding)."""

    def __init__(self) -> None:
        self.emptied = False
        self.joined = False

    def pull(self, sets: np.ndarray, window: Any, in_size: int) -> np.ndarray:
        if isinstance(window, str) and window == IDENTITY:
            if sets.shape[1] != in_size:
                raise _NoClosedForm("an elementwise step changed a spatial size")
            return sets
        pulled = np.zeros((sets.shape[0], in_size), bool)
        if isinstance(window, str):  # GLOBAL
            pulled[sets.any(axis=1)] = True
            return pulled
        if window.shape[0] != sets.shape[1]:
            raise _NoClosedForm("a window's output length is not the tensor's")
        for k in range(window.shape[1]):
            column = window[:, k]
            valid = column >= 0
            index = column[valid]
            if len(np.unique(index)) == len(index):
                pulled[:, index] |= sets[:, valid]
            else:  # several outputs copy one input (replication, upsampling adaptive pools)
                np.logical_or.at(pulled.T, index, sets[:, valid].T)
        if (sets.any(axis=1) & ~pulled.any(axis=1)).any():
            self.emptied = True
        return pulled


def _broadcast_windows(operand: tuple[int, ...], out: tuple[int, ...]):
    """Windows of one operand of a broadcasting elementwise op."""
    spatial = (tuple(operand[-2:]) if len(operand) >= 2 else (1, *operand[-1:]))[-2:]
    spatial = (1,) * (2 - len(spatial)) + tuple(spatial)
    windows: list[Any] = []
    for axis, length in enumerate(spatial):
        if length == out[2 + axis]:
            windows.append(IDENTITY)
        elif length == 1:
            windows.append(np.zeros((out[2 + axis], 1), np.int64))
        else:
            raise _NoClosedForm(f"operands of shapes {operand} and {out} do not broadcast")
    return tuple(windows), spatial


def _fx_functions() -> tuple[set, set, set, set]:
    """(unary elementwise functions, binary elementwise functions, elementwise methods,
    binary methods) that keep a NaN where it was (checked against probing in the tests)."""
    import operator

    import torch
    import torch.nn.functional as F

    unary = {
        torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu,
        F.mish, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, F.dropout, F.dropout2d,
        torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, torch.exp, torch.abs, torch.neg,
        operator.neg, torch.square, operator.pos,
    }  # fmt: skip
    binary = {
        operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
        operator.isub, operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul,
        torch.div, torch.maximum, torch.minimum,
    }  # fmt: skip
    unary_methods = {
        "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "abs", "neg",
        "contiguous", "clone", "square",
    }  # fmt: skip
    binary_methods = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
    return unary, binary, unary_methods, binary_methods


class _Stop(Exception):
    """Raised by the shape run once every target is computed."""


def _plain_errors(interpreter: Any) -> Any:
    """``interpreter`` (a ``torch.fx.Interpreter``) with its errors passed on as raised.

    torch dresses an error in a node (:class:`_Stop` included, raised at every shape run)
    with the graph's printout and a structured-log record, whose first use imports
    ``torch._inductor`` and ``torch._dynamo``: 1.7 s of the GIL held by a run's worker
    while napari's main thread waits for it.
    """
    interpreter.extra_traceback = False
    return interpreter


def _fx_route(
    model: torch.nn.Module,
    calls: Mapping[str, tuple[str, int | None]],
    blank: torch.Tensor,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """Input sets of every row and column of each layer, through a torch.fx graph of the model.

    ``calls[name] = (module path, call)``. Raises :class:`_NoClosedForm` when the model
    does not trace; a layer the graph cannot explain gets its reason in the second dict.
    """
    import torch
    import torch.fx

    targets = {base for base, _ in calls.values()}

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
            return qualname in targets or super().is_leaf_module(m, qualname)

    try:
        graph = Tracer().trace(model)
        traced = torch.fx.GraphModule(model, graph)
    except Exception as exc:
        raise _NoClosedForm(f"torch.fx cannot trace the model ({type(exc).__name__})") from exc
    nodes = list(traced.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    target_nodes: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for node in nodes:
        if node.op == "call_module" and node.target in targets:
            seen[node.target] = seen.get(node.target, 0) + 1
            for name, (base, call) in calls.items():
                if base == node.target and (call or 1) == seen[node.target]:
                    target_nodes[name] = node
    missing = [name for name in calls if name not in target_nodes]
    if missing:
        raise _NoClosedForm(f"the torch.fx graph does not call {', '.join(missing)}")
    shapes: dict[Any, tuple[int, ...]] = {}
    remaining = set(target_nodes.values())

    class Shapes(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            value = super().run_node(n)
            if isinstance(value, torch.Tensor):
                shapes[n] = tuple(value.shape)
            remaining.discard(n)
            if not remaining:
                raise _Stop
            return value

    try:
        with torch.no_grad():
            _plain_errors(Shapes(traced)).run(blank, *([None] * (len(placeholders) - 1)))
    except _Stop:
        pass
    except Exception as exc:
        raise _NoClosedForm(f"the traced graph did not run ({type(exc).__name__})") from exc
    modules = dict(traced.named_modules())
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    reasons: dict[str, str] = {}
    for name, node in target_nodes.items():
        try:
            out = shapes.get(node)
            if out is None or len(out) != 4:
                raise _NoClosedForm("the layer's output is not a (B, C, H, W) tensor")
            state = _Sets()
            longest = max(max(shape[-2:]) for shape in shapes.values() if len(shape) >= 2)
            parts = []
            for start in _chunks(out[2], out[3], longest):
                parts.append(
                    _pull_graph(nodes, node, start, placeholders[0], shapes, modules, state, blank)
                )
            rows = np.concatenate([_boxes_of(p[0]) for p in parts])
            cols = np.concatenate([_boxes_of(p[1]) for p in parts])
            if state.joined and state.emptied:
                raise _NoClosedForm(
                    "a branch joined by an addition or concatenation reads only padding at "
                    "some position, so the union of the branches' boxes is not exact"
                )
            found[name] = (rows, cols)
        except _NoClosedForm as exc:
            reasons[name] = str(exc)
    return found, reasons


def _pull_graph(nodes, target, start, image, shapes, modules, state, like):
    """Sets of ``image``'s rows and columns that reach the sets ``start`` of ``target``'s
    output, through the graph backwards (a node's consumers all come after it)."""
    import torch

    pending: dict[Any, list[np.ndarray]] = {target: list(start)}
    order = nodes[: nodes.index(target) + 1]

    def send(node: Any, windows: tuple, rows: np.ndarray, cols: np.ndarray) -> None:
        if node.op == "get_attr":  # a parameter or buffer: reads no pixel
            return
        shape = shapes.get(node)
        if shape is None or len(shape) < 2:
            raise _NoClosedForm(f"{node.name} is not a tensor with spatial axes")
        size = (1,) * max(0, 4 - len(shape)) + tuple(shape)
        pulled = [state.pull(rows, windows[0], size[-2]), state.pull(cols, windows[1], size[-1])]
        if node in pending:
            pending[node][0] |= pulled[0]
            pending[node][1] |= pulled[1]
        else:
            pending[node] = pulled

    for node in reversed(order):
        if node not in pending:
            continue
        rows, cols = pending.pop(node)
        if node is image:
            return rows, cols
        here = shapes.get(node)
        if node.op in ("placeholder", "get_attr"):
            if node.op == "placeholder":
                raise _NoClosedForm(f"the layer depends on the model's extra input {node.name}")
            continue
        if here is None or len(here) != 4:
            raise _NoClosedForm(f"{_describe(node)} does not give a (B, C, H, W) tensor")
        tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        tensor_args += [a for a in node.kwargs.values() if isinstance(a, torch.fx.Node)]
        if node.op == "call_module":
            source, windows, rows, cols = _through_module(
                node, tensor_args, here, shapes, modules, rows, cols, state, like
            )
            send(source, windows, rows, cols)
            continue
        for operand, windows in _function_operands(node, tensor_args, here, shapes, state):
            send(operand, windows, rows, cols)
    raise _NoClosedForm("the layer does not depend on the model's input")


def _describe(node: Any) -> str:
    target = node.target
    return getattr(target, "__name__", str(target))


def _through_module(node, tensor_args, here, shapes, modules, rows, cols, state, like):
    """The input node of a module call, the module's windows, and the sets to pull through
    them (a user's own module is pulled through its own graph here)."""
    import torch

    module = modules[node.target]
    extra = [a for a in tensor_args[1:]] or node.kwargs
    if extra or len(node.args) != 1:
        raise _NoClosedForm(f"module {type(module).__name__} called with extra inputs")
    source = node.args[0]
    if not isinstance(source, torch.fx.Node) or source not in shapes:
        raise _NoClosedForm(f"module {type(module).__name__} of a non-tensor")
    if type(module) in _chain_types():
        return source, _module_windows(module, shapes[source], here), rows, cols
    if any(True for _ in module.children()) or not _is_torch_module(module):
        rows, cols = _pull_user_module(module, shapes[source], here, rows, cols, state, like)
        return source, (IDENTITY, IDENTITY), rows, cols
    raise _NoClosedForm(f"module {type(module).__name__} has no closed form")


def _function_operands(node, tensor_args, here, shapes, state) -> list[tuple[Any, tuple]]:
    """The computed inputs of a function or method call, each with the windows that lead
    back to it: a channel concatenation, an elementwise unary or binary operation."""
    import torch

    unary, binary, unary_methods, binary_methods = _fx_functions()
    is_unary = (node.op == "call_function" and node.target in unary) or (
        node.op == "call_method" and node.target in unary_methods
    )
    is_binary = (node.op == "call_function" and node.target in binary) or (
        node.op == "call_method" and node.target in binary_methods
    )
    if node.op == "call_function" and node.target is torch.cat:
        parts = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(dim, int) or dim % 4 != 1 or not isinstance(parts, (list, tuple)):
            raise _NoClosedForm("a concatenation along an axis other than the channels")
        state.joined = state.joined or len(parts) > 1
        if not all(isinstance(part, torch.fx.Node) for part in parts):
            raise _NoClosedForm("a concatenation of something other than tensors")
        return [(part, _broadcast_windows(shapes[part], here)[0]) for part in parts]
    if is_unary and len(tensor_args) == 1 and tensor_args[0] is node.args[0]:
        return [(tensor_args[0], (IDENTITY, IDENTITY))]
    if is_binary and 1 <= len(tensor_args) <= 2:
        computed = [a for a in tensor_args if a.op != "get_attr"]
        state.joined = state.joined or len(computed) > 1
        for operand in computed:
            if operand not in shapes:
                raise _NoClosedForm(f"{_describe(node)} of a non-tensor {operand.name}")
        return [(operand, _broadcast_windows(shapes[operand], here)[0]) for operand in computed]
    raise _NoClosedForm(f"operation {_describe(node)} ({node.op}) has no closed form")


def _chain_types() -> set[type]:
    from torch import nn

    return {
        *_elementwise_module_types(), nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d,
        nn.BatchNorm2d, nn.SyncBatchNorm, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm,
        nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
        nn.AdaptiveMaxPool2d, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d,
        nn.ReplicationPad2d,
    }  # fmt: skip


def _pull_user_module(module, in_shape, out_shape, rows, cols, state, like):
    """Sets through a layer that is a module of the user's own: its own traced graph."""
    import torch
    import torch.fx

    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as exc:
        raise _NoClosedForm(
            f"torch.fx cannot trace the layer's module {type(module).__name__}"
        ) from exc
    nodes = list(traced.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    result = nodes[-1].args[0] if nodes and nodes[-1].op == "output" else None
    if len(placeholders) < 1 or not isinstance(result, torch.fx.Node):
        raise _NoClosedForm(f"module {type(module).__name__} does not return one tensor")
    shapes: dict[Any, tuple[int, ...]] = {}

    class Shapes(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            value = super().run_node(n)
            if isinstance(value, torch.Tensor):
                shapes[n] = tuple(value.shape)
            return value

    try:
        with torch.no_grad():
            _plain_errors(Shapes(traced)).run(
                torch.zeros(in_shape, dtype=like.dtype, device=like.device)
            )
    except Exception as exc:
        raise _NoClosedForm(f"module {type(module).__name__} did not run alone") from exc
    if shapes.get(result) != tuple(out_shape):
        raise _NoClosedForm(f"module {type(module).__name__} gave another shape alone")
    return _pull_graph(
        nodes, result, [rows, cols], placeholders[0], shapes, dict(traced.named_modules()),
        state, like,
    )  # fmt: skip


def _is_torch_module(module: Any) -> bool:
    return type(module).__module__.startswith("torch.nn")


def _chunks(height: int, width: int, longest: int) -> Iterator[list[np.ndarray]]:
    """Start sets (each output row and column itself), a few rows at a time, so that one
    chunk's ``(n, length)`` sets stay under :data:`CLOSED_FORM_CHUNK_BYTES` per tensor."""
    step = max(1, CLOSED_FORM_CHUNK_BYTES // max(1, longest))
    for begin in range(0, max(height, width, 1), step):
        start = []
        for extent in (height, width):
            index = np.arange(begin, min(begin + step, extent))
            sets = np.zeros((len(index), extent), bool)
            sets[np.arange(len(index)), index] = True
            start.append(sets)
        yield start


def _boxes_of(sets: np.ndarray) -> np.ndarray:
    """``(n, 3)`` first index, end (exclusive) and reached flag of each set."""
    reached = sets.any(axis=1)
    first = sets.argmax(axis=1)
    end = sets.shape[1] - sets[:, ::-1].argmax(axis=1)
    return np.stack([first, end, reached.astype(np.int64)], axis=1).astype(np.int64)


def _chain_route(
    model: torch.nn.Module, calls: Mapping[str, tuple[str, int | None]], blank: torch.Tensor
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """Fields through the chain of standard modules the forward pass calls (forward hooks).

    Sound only for a pure chain: every module call before the layer reads exactly the
    tensor the previous call returned (same object, not modified in place since), the
    first reads the image, and the layer's output is the last call's. Anything else
    (functional operations, branches, an unused call) gives a reason instead.
    """
    import torch

    named = dict(model.named_modules())
    leaves = {n: m for n, m in named.items() if n and not any(True for _ in m.children())}
    if not any(True for _ in model.children()):
        leaves[""] = model
    records: list[list[Any]] = []
    outputs: dict[str, tuple[Any, int, int]] = {}
    counts: dict[str, int] = {}

    def before(name: str) -> Any:
        def hook(_m: Any, args: Any) -> None:
            first = args[0] if args else None
            version = first._version if isinstance(first, torch.Tensor) else -1
            records.append([name, first, version, len(args)])

        return hook

    def after(_m: Any, _args: Any, output: Any) -> None:
        version = output._version if isinstance(output, torch.Tensor) else -1
        records[-1] += [output, version]

    def at_target(base: str) -> Any:
        def hook(_m: Any, _args: Any, output: Any) -> None:
            counts[base] = counts.get(base, 0) + 1
            for name, (b, call) in calls.items():
                if b == base and (call or 1) == counts[base] and isinstance(output, torch.Tensor):
                    outputs[name] = (output, output._version, len(records))
            if len(outputs) == len(calls):
                raise _Stop

        return hook

    handles = []
    for name, module in leaves.items():
        handles.append(module.register_forward_pre_hook(before(name)))
        handles.append(module.register_forward_hook(after))
    for base in {b for b, _ in calls.values()}:
        handles.append(named[base].register_forward_hook(at_target(base)))
    try:
        with torch.no_grad():
            model(blank)
    except _Stop:
        pass
    except Exception as exc:
        raise _NoClosedForm(f"the model raised {type(exc).__name__} on a blank image") from exc
    finally:
        for handle in handles:
            handle.remove()
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    reasons: dict[str, str] = {}
    for name in calls:
        try:
            if name not in outputs:
                raise _NoClosedForm("the layer returned no tensor")
            found[name] = _pull_chain(records, outputs[name], blank, leaves)
        except _NoClosedForm as exc:
            reasons[name] = str(exc)
    return found, reasons


def _pull_chain(records, target, blank, leaves):
    output, version, n_calls = target
    chain = records[:n_calls]
    previous, previous_version = blank, blank._version
    steps = []
    for record in chain:
        if len(record) != 6:
            raise _NoClosedForm(f"module {record[0]!r} did not return")
        name, first, first_version, n_args, out, out_version = record
        if n_args != 1 or first is not previous or first_version != previous_version:
            raise _NoClosedForm(
                f"module {name!r} does not read the previous module's output unchanged "
                "(functional operations, branches or extra inputs in the forward pass)"
            )
        module = leaves[name]
        if type(module) not in _chain_types():
            raise _NoClosedForm(f"module {name!r} ({type(module).__name__}) has no closed form")
        steps.append((module, tuple(first.shape), tuple(out.shape)))
        previous, previous_version = out, out_version
    if output is not previous or version != previous_version:
        raise _NoClosedForm("the layer's output is not the last module call's output")
    if output.dim() != 4:
        raise _NoClosedForm("the layer's output is not a (B, C, H, W) tensor")
    state = _Sets()
    windows = [_module_windows(module, i, o) for module, i, o in steps]
    longest = max(max(i[-2:] + o[-2:]) for _, i, o in steps) if steps else 1
    row_parts, col_parts = [], []
    for rows, cols in _chunks(output.shape[2], output.shape[3], longest):
        for (row_window, col_window), (_, in_shape, _) in zip(windows[::-1], steps[::-1]):
            rows = state.pull(rows, row_window, in_shape[2])
            cols = state.pull(cols, col_window, in_shape[3])
        if rows.shape[1] != blank.shape[2] or cols.shape[1] != blank.shape[3]:
            raise _NoClosedForm("the chain's input is not the image")
        row_parts.append(_boxes_of(rows))
        col_parts.append(_boxes_of(cols))
    return np.concatenate(row_parts), np.concatenate(col_parts)


@dataclass(frozen=True)
class ClosedForm:
    """A layer's field per output row and column: ``(n, 3)`` first input index, end
    (exclusive) and reached (0/1), and the route (``torch.fx graph`` or ``module chain``)."""

    rows: np.ndarray
    cols: np.ndarray
    route: str

    def boxes(self, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n, 4)`` boxes of ``(row, col)`` positions and whether each is reached."""
        r, c = self.rows[position[:, 0]], self.cols[position[:, 1]]
        boxes = np.stack([r[:, 0], c[:, 0], r[:, 1], c[:, 1]], axis=1).astype(np.int64)
        return boxes, (r[:, 2] > 0) & (c[:, 2] > 0)


def closed_form_fields(
    model: torch.nn.Module,
    modules: Mapping[str, torch.nn.Module],
    image_shape: tuple[int, int, int],
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, ClosedForm | str]:
    """Each layer's field composed from the architecture, or why it cannot be (a reason).

    The path from the image to the layer is read from a torch.fx trace of the model,
    or, where the model does not trace, from the chain of modules its forward pass calls
    (forward hooks). Conv, pool, padding, normalisation and elementwise steps compose per
    axis exactly, clipping at each tensor's border as the padding does; residual
    additions and channel concatenations take the union of their branches. Cached per
    model and image shape; one forward pass of a blank image (up to the layers).
    """
    import torch

    cache = _CACHE.setdefault(model, {})
    key_of = {name: ("closed", tuple(image_shape), name) for name in modules}
    todo = [name for name in modules if key_of[name] not in cache]
    if todo:
        named = dict(model.named_modules())
        calls = {name: split_call(name, named) for name in todo}
        bases = {base for base, _ in calls.values()}
        nested = {
            name
            for name, (base, _) in calls.items()
            if any(base != other and base.startswith(other + ".") for other in bases if other)
        }
        groups = [{n: calls[n] for n in todo if n not in nested}] + [
            {n: calls[n]} for n in todo if n in nested
        ]
        blank = torch.zeros((1, *image_shape), dtype=dtype, device=device)
        for group in groups:
            if not group:
                continue
            route = "torch.fx graph"
            try:
                try:
                    found, reasons = _fx_route(model, group, blank)
                except _NoClosedForm as exc:
                    route = "module chain"
                    found, reasons = _chain_route(model, group, blank)
                    reasons = {n: f"{exc}; module chain: {why}" for n, why in reasons.items()}
            except Exception as exc:  # never worse than probing: the note says what failed
                found = {}
                reasons = {
                    n: f"the closed form failed ({type(exc).__name__}: {exc})" for n in group
                }
            for name in group:
                if name in found:
                    cache[key_of[name]] = ClosedForm(*found[name], route)
                else:
                    cache[key_of[name]] = reasons[name]
    return {name: cache[key_of[name]] for name in modules}
