"""Receptive fields derived from the model itself, by NaN propagation.

An output position depends on an input row ``y`` exactly when a NaN in that row
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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ImageError
from .hooks import capture_layers

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_PROBE_PIXELS",
    "PROBE_MEMORY_BYTES",
    "LayerGeometry",
    "ReceptiveFields",
    "layer_geometry",
    "probe_cost",
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
    import torch

    _channels, height, width = image_shape
    geometry = layer_geometry(model, modules, image_shape, dtype=dtype, device=device)
    whole = np.array([0, 0, height, width], dtype=np.int64)
    cache = _CACHE.setdefault(model, {})
    results: dict[str, ReceptiveFields] = {}
    todo: dict[str, np.ndarray] = {}
    for name in modules:
        geo = geometry[name]
        flat = np.unique(np.asarray(wanted.get(name, np.zeros(0)), dtype=np.int64))
        if geo.kind == "vector" or geo.nan_on_blank:
            note = (
                "vector output"
                if geo.kind == "vector"
                else ("the layer is NaN on a zero image, so NaN probing cannot be used")
            )
            results[name] = ReceptiveFields(
                flat, np.tile(whole, (len(flat), 1)), "whole-image", note, 0
            )
            continue
        known = cache.get(("boxes", tuple(image_shape), str(dtype), name))
        if known is not None and np.isin(flat, known.flat).all():
            results[name] = ReceptiveFields(flat, known.of(flat), known.method, known.note, 0)
            continue
        todo[name] = flat
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
    probe_modules = {name: modules[name] for name in todo}
    chunk = _probe_batch({n: geometry[n] for n in todo}, image_shape)

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

    boxes = {name: np.tile(whole, (len(flat), 1)) for name, flat in todo.items()}
    reached = {name: np.ones(len(flat), bool) for name, flat in todo.items()}
    if route == "scan":
        passes = _scan(run, todo, boxes, reached, height, width, chunk)
    else:
        passes = _bisect(run, todo, boxes, reached, height, width)
    for name, flat in todo.items():
        box = boxes[name]
        box[~reached[name]] = whole
        note = ""
        if not reached[name].all():
            note = (
                f"{int((~reached[name]).sum())} of {len(flat)} positions were reached by no "
                "probe (an operation drops NaN); they were given the whole image"
            )
        found = ReceptiveFields(flat, box, f"nan-probe ({route})", note, passes)
        key = ("boxes", tuple(image_shape), str(dtype), name)
        known = cache.get(key)
        if known is not None:  # merge with positions resolved before
            merged = np.union1d(known.flat, flat)
            merged_boxes = np.empty((len(merged), 4), np.int64)
            merged_boxes[np.searchsorted(merged, known.flat)] = known.boxes
            merged_boxes[np.searchsorted(merged, flat)] = box
            cache[key] = ReceptiveFields(merged, merged_boxes, found.method, note, 0)
        else:
            cache[key] = found
        results[name] = found
    return {name: results[name] for name in modules}


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
