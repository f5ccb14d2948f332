"""Receptive fields derived from the model itself, by NaN propagation.

For each input row ``y`` the model is run on an image whose row ``y`` is NaN (and
likewise for each column). NaN survives every convolution (``NaN * 0`` is NaN),
pooling (max and average), normalisation and the usual elementwise activations,
so the output positions that turn NaN are exactly those whose value depends on
that row. The receptive field of a position is then the bounding box of the rows
and columns that reach it. This needs ``H + W`` probe images, no table of layer
types, and is exact for any stack of convolutions (strided, dilated, padded),
pooling and elementwise layers; attention or global pooling correctly give the
whole image.

Other layers: a layer whose output is a vector ``(B, C)`` (linear layers, global
pools flattened) has the whole image as its receptive field. 3-D outputs are read
as tokens ``(B, T, C)`` and each token gets the box of the pixels that reach it.
Outputs of rank above 4 are flattened to vectors. An operation that drops NaN
(``torch.where(x > 0, x, 0)``, ``nan_to_num``) would shrink the probed box; a
position no probe reaches is given the whole image and noted in ``note``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .hooks import capture_layers

if TYPE_CHECKING:
    import torch

__all__ = ["LayerGeometry", "layer_geometry"]

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LayerGeometry:
    """Shape of a layer's output and the input box behind each of its positions."""

    kind: str  # "spatial" (B, C, H', W'), "tokens" (B, T, C) or "vector" (B, C)
    grid_shape: tuple[int, ...]
    channels: int
    boxes: np.ndarray  # (P, 4) int64 (y0, x0, y1, x1), P = prod(grid_shape); (1, 4) for vectors
    method: str
    note: str

    @property
    def n_positions(self) -> int:
        return int(np.prod(self.grid_shape)) if self.grid_shape else 1

    def positions(self, flat: np.ndarray) -> np.ndarray:
        """``(row, col)`` of flattened position indices (tokens: ``(token, 0)``)."""
        flat = np.asarray(flat, dtype=np.int64)
        if self.kind == "spatial":
            return np.stack(np.divmod(flat, self.grid_shape[1]), axis=1)
        return np.stack([flat, np.zeros_like(flat)], axis=1)


def _kind_of(output: torch.Tensor) -> tuple[str, tuple[int, ...], int]:
    shape = tuple(output.shape[1:])
    if len(shape) == 3:
        return "spatial", (shape[1], shape[2]), shape[0]
    if len(shape) == 2:
        return "tokens", (shape[0], 1), shape[1]
    return "vector", (), int(np.prod(shape)) if shape else 1


def _nan_positions(output: torch.Tensor, kind: str) -> np.ndarray:
    """(B, P) bool: which positions of each probe turned NaN."""
    import torch

    bad = torch.isnan(output)
    if kind == "spatial":
        bad = bad.any(dim=1).flatten(1)
    elif kind == "tokens":
        bad = bad.any(dim=2)
    else:
        bad = bad.flatten(1).any(dim=1, keepdim=True)
    return bad.cpu().numpy()


def layer_geometry(
    model: torch.nn.Module,
    modules: Mapping[str, torch.nn.Module],
    image_shape: tuple[int, int, int],
    *,
    dtype: torch.dtype,
    device: torch.device,
    batch_size: int = 64,
) -> dict[str, LayerGeometry]:
    """Output kind, grid and per-position receptive-field boxes of each layer.

    ``image_shape`` is ``(C, H, W)``. Results are cached per model and image shape.
    """
    import torch

    channels, height, width = image_shape
    cache = _CACHE.setdefault(model, {})
    key_of = {name: (tuple(image_shape), str(dtype), name) for name in modules}
    todo = {name: m for name, m in modules.items() if key_of[name] not in cache}
    if todo:
        base = torch.zeros((1, channels, height, width), dtype=dtype, device=device)
        outputs = capture_layers(model, base, todo)
        kinds = {name: _kind_of(out) for name, out in outputs.items()}
        zero_nan = {name: bool(torch.isnan(out).any()) for name, out in outputs.items()}
        spatial = [n for n, (kind, _, _) in kinds.items() if kind != "vector" and not zero_nan[n]]
        reached: dict[str, np.ndarray] = {}
        if spatial:
            reached = _probe(
                model, {n: todo[n] for n in spatial}, kinds, image_shape, dtype, device, batch_size
            )
        whole = np.array([[0, 0, height, width]], dtype=np.int64)
        for name in todo:
            kind, grid, n_channels = kinds[name]
            if kind == "vector":
                geometry = LayerGeometry(
                    kind, grid, n_channels, whole, "whole-image", "vector output"
                )
            elif zero_nan[name]:
                n = int(np.prod(grid))
                geometry = LayerGeometry(
                    kind,
                    grid,
                    n_channels,
                    np.repeat(whole, n, axis=0),
                    "whole-image",
                    "the layer is NaN on a zero image, so NaN probing cannot be used",
                )
            else:
                geometry = _boxes_from_reach(kind, grid, n_channels, reached[name], height, width)
            cache[key_of[name]] = geometry
    return {name: cache[key_of[name]] for name in modules}


def _probe(
    model: torch.nn.Module,
    modules: Mapping[str, torch.nn.Module],
    kinds: Mapping[str, tuple[str, tuple[int, ...], int]],
    image_shape: tuple[int, int, int],
    dtype: torch.dtype,
    device: torch.device,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """(H + W, P) bool per layer: probe k (rows first, then columns) reaches position p."""
    import torch

    channels, height, width = image_shape
    n_probes = height + width
    reach = {n: np.zeros((n_probes, int(np.prod(kinds[n][1]))), dtype=bool) for n in modules}
    for start in range(0, n_probes, batch_size):
        stop = min(start + batch_size, n_probes)
        probes = torch.zeros((stop - start, channels, height, width), dtype=dtype, device=device)
        for k in range(start, stop):
            if k < height:
                probes[k - start, :, k, :] = float("nan")
            else:
                probes[k - start, :, :, k - height] = float("nan")
        outputs = capture_layers(model, probes, modules)
        for name, out in outputs.items():
            reach[name][start:stop] = _nan_positions(out, kinds[name][0])
    return reach


def _boxes_from_reach(
    kind: str, grid: tuple[int, ...], channels: int, reach: np.ndarray, height: int, width: int
) -> LayerGeometry:
    rows, cols = reach[:height], reach[height:]
    n = reach.shape[1]
    boxes = np.empty((n, 4), dtype=np.int64)
    unreached = ~(rows.any(axis=0) & cols.any(axis=0))
    boxes[:, 0] = rows.argmax(axis=0)
    boxes[:, 2] = height - rows[::-1].argmax(axis=0)
    boxes[:, 1] = cols.argmax(axis=0)
    boxes[:, 3] = width - cols[::-1].argmax(axis=0)
    boxes[unreached] = (0, 0, height, width)
    note = ""
    if unreached.any():
        note = (
            f"{int(unreached.sum())} of {n} positions were reached by no probe "
            "(an operation drops NaN); they were given the whole image"
        )
    return LayerGeometry(kind, grid, channels, boxes, "nan-probe", note)
