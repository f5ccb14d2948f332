"""Topology maps of whole images: every position of a layer, placed in a saved analysis.

An analysis holds a sample of positions (often one per image), so most pixels of
an image have no point in it. :func:`topology_map` runs the model once per image,
takes the layer's output at **every** position, and places each in the analysis's
Mapper graph and cluster flow (``topology.placement``, exact for analysed points).
The answer is a grid per image (node and flow cluster per position) and, from the
receptive fields, a pixel-space map: each pixel takes the position whose
receptive field is centred nearest to it (docs/methods.md §8).

:func:`map_drift` compares the map of a perturbed image, placed in the BASE
analysis's graph, with the base image's map: which positions changed node, and
the share of changed positions per image.

Work memory is bounded by the batch (one forward pass and its placement); the
result holds a few small integers per position, and pixel maps are drawn one
image at a time (:meth:`TopologyMap.pixel_map`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._progress import CancelCallback, Progress, ProgressCallback, drive
from .activations.extract import predict_proba, receptive_field_centres
from .activations.hooks import capture_layers, check_layer_names
from .activations.image_source import ImageSource
from .activations.input_scale import InputScale, as_input_scale, scaled_source
from .activations.models import check_model
from .activations.receptive_field import (
    DEFAULT_MAX_PROBE_PIXELS,
    LayerGeometry,
    layer_geometry,
    receptive_fields,
)
from .activations.running import eval_mode, model_device_dtype, model_images
from .errors import ImageError, LayerError, TopoLensError
from .topology.placement import Placer

if TYPE_CHECKING:
    import torch

    from .topology.analysis import Analysis

__all__ = [
    "MapDrift",
    "TopologyMap",
    "iter_topology_map",
    "map_drift",
    "pixel_index",
    "topology_map",
]

#: Positions placed at once (vectors of one batch of images), to bound memory.
_POSITIONS_PER_STEP = 65_536


@dataclass
class TopologyMap:
    """One layer's topology map of ``N`` images.

    Attributes
    ----------
    layer : str
    kind : str
        ``"spatial"`` (a grid of positions), ``"tokens"`` (``(T, 1)``) or
        ``"vector"`` (one answer per image: ``grid_shape == (1, 1)``).
    grid_shape : tuple of int
        ``(H', W')`` of the layer's positions.
    image_shape : tuple of int
        ``(H, W)`` of the images.
    node : ndarray (N, H', W') int32
        The lowest-numbered Mapper node of each position, -1 for none.
    node_last : ndarray (N, H', W') int32
        The highest-numbered one (a position lies in up to two nodes per lens
        dimension where cubes overlap); equal to ``node`` when it is in one.
    node_count : ndarray (N, H', W') int8
        How many nodes hold the position.
    outside : ndarray (N, H', W') bool
        The position's lens value lies outside the Mapper cover (the analysed
        range), so it is in no node for that reason rather than as DBSCAN noise.
    stage_names : list of str
        Cluster-flow stages placed (``Placement.stage_names``).
    flow : ndarray (S, N, H', W') int32
        Flow cluster of each position at each stage, -1 for noise or too far.
    centres : ndarray (P, 2) int64
        Pixel ``(row, col)`` of each position's receptive-field centre.
    pixels : ndarray (H, W) int64
        The position each pixel takes (:func:`pixel_index`).
    note : str
        What could not be placed, and that a vector layer gives one answer per image.
    """

    layer: str
    kind: str
    grid_shape: tuple[int, int]
    image_shape: tuple[int, int]
    node: np.ndarray
    node_last: np.ndarray
    node_count: np.ndarray
    outside: np.ndarray
    stage_names: list[str]
    flow: np.ndarray
    centres: np.ndarray
    pixels: np.ndarray
    note: str = ""

    def __len__(self) -> int:
        return len(self.node)

    def pixel_map(self, image: int, stage: str | None = None) -> np.ndarray:
        """``(H, W)`` int map of image number ``image``: node per pixel (or flow cluster
        at ``stage``), -1 where the position is in none."""
        grid = self.node[image] if stage is None else self.flow[self._stage(stage), image]
        return grid.reshape(-1)[self.pixels]

    def _stage(self, stage: str) -> int:
        if stage not in self.stage_names:
            raise TopoLensError(
                f"stage {stage!r} is not placed in this map; placed stages: "
                f"{', '.join(self.stage_names) or 'none'}"
            )
        return self.stage_names.index(stage)


@dataclass
class MapDrift:
    """Where a perturbed image's map (in the base graph) differs from the base image's.

    Attributes
    ----------
    layer : str
    changed : ndarray (N, H', W') bool
        Positions whose node set changed (first or last node differs).
    share : ndarray (N,) float64
        Share of each image's positions that changed.
    base, variant : TopologyMap
        The two maps (the variant's placed in the base analysis's graph).
    """

    layer: str
    changed: np.ndarray
    share: np.ndarray
    base: TopologyMap
    variant: TopologyMap

    def changed_pixels(self, image: int) -> np.ndarray:
        """``(H, W)`` bool: the pixels whose position changed."""
        return self.changed[image].reshape(-1)[self.base.pixels]

    @property
    def mean_share(self) -> float:
        """Share of changed positions over all images."""
        return float(self.share.mean()) if len(self.share) else float("nan")


def pixel_index(
    centres: np.ndarray, grid_shape: tuple[int, int], height: int, width: int
) -> np.ndarray:
    """``(H, W)`` position index per pixel: the position whose centre is nearest.

    Distances are Euclidean in pixels; ties go to the lowest position. On a spatial
    grid the centres are a product of a row and a column sequence, so the nearest
    centre is the nearest row centre and the nearest column centre, found per axis.
    """
    centres = np.asarray(centres, dtype=np.int64)
    rows_c = centres[:, 0].reshape(grid_shape)[:, 0]
    cols_c = centres[:, 1].reshape(grid_shape)[0, :]
    separable = np.array_equal(
        centres[:, 0].reshape(grid_shape), np.repeat(rows_c[:, None], grid_shape[1], axis=1)
    ) and np.array_equal(
        centres[:, 1].reshape(grid_shape), np.repeat(cols_c[None, :], grid_shape[0], axis=0)
    )
    if separable:
        row_of = _nearest_1d(rows_c, height)
        col_of = _nearest_1d(cols_c, width)
        return row_of[:, None] * grid_shape[1] + col_of[None, :]
    # general centres (tokens): a block of pixels at a time
    out = np.empty(height * width, dtype=np.int64)
    yy, xx = np.divmod(np.arange(height * width), width)
    step = max(1, 4_000_000 // max(len(centres), 1))
    for start in range(0, height * width, step):
        sl = slice(start, start + step)
        d = (yy[sl, None] - centres[None, :, 0]) ** 2 + (xx[sl, None] - centres[None, :, 1]) ** 2
        out[sl] = d.argmin(axis=1)
    return out.reshape(height, width)


def _nearest_1d(centres: np.ndarray, size: int) -> np.ndarray:
    """Per pixel 0..size-1, the index of the nearest centre (ties: lowest index)."""
    pixels = np.arange(size)
    d = np.abs(pixels[:, None] - centres[None, :])
    return d.argmin(axis=1).astype(np.int64)


def _layer_names(analysis: Analysis, layer: str | Sequence[str] | None) -> list[str]:
    if layer is None:
        return list(analysis.layers)
    names = [layer] if isinstance(layer, str) else list(layer)
    if not names:
        raise LayerError("no layer asked for; name one of the analysed layers")
    for name in names:
        analysis[name]  # raises LayerError naming the analysed layers
    return names


def iter_topology_map(
    analysis: Analysis,
    images: Any,
    model: Any,
    *,
    layer: str | Sequence[str] | None = None,
    input_scale: InputScale | str | None = None,
    batch_size: int = 16,
    max_probe_pixels: int | None = None,
) -> Generator[Progress, None, dict[str, TopologyMap]]:
    """Generator form of :func:`topology_map`: yields progress, returns the maps."""
    run = _MapRun.prepare(analysis, images, model, layer, input_scale, batch_size)
    yield Progress(0.0, "receptive fields of every position")
    maps = run.empty_maps(max_probe_pixels)
    yield from run.place_images(maps)
    for one in maps.values():
        one.note = _with_outside_note(one)
    yield Progress(1.0, "topology maps done")
    return maps


@dataclass
class _MapRun:
    """What one :func:`iter_topology_map` call works with, checked before any work."""

    analysis: Analysis
    names: list[str]
    model: torch.nn.Module
    modules: dict[str, torch.nn.Module]
    raw: ImageSource  # the images as given (for the model's predictions)
    source: ImageSource  # scaled as the analysis's clouds were extracted
    scale: InputScale
    batch_size: int
    device: torch.device
    dtype: torch.dtype
    geometry: dict[str, LayerGeometry]
    placers: dict[str, Placer]

    @classmethod
    def prepare(
        cls,
        analysis: Analysis,
        images: Any,
        model: Any,
        layer: str | Sequence[str] | None,
        input_scale: InputScale | str | None,
        batch_size: int,
    ) -> _MapRun:
        model = check_model(model)
        names = _layer_names(analysis, layer)
        if int(batch_size) < 1:
            raise TopoLensError(f"batch_size must be at least 1, got {batch_size}")
        if input_scale is None:  # as the analysis's clouds were extracted
            input_scale = analysis[names[0]].cloud.meta.get("input_scale")
        scale = as_input_scale(input_scale)
        modules = check_layer_names(model, names)
        raw = model_images(model, images)
        source = scaled_source(raw, scale)
        if len(source) == 0:
            raise ImageError("no images to map; pass at least one image")
        device, dtype = model_device_dtype(model)
        with eval_mode(model):
            geometry = layer_geometry(
                model, modules, source.sample_shape, dtype=dtype, device=device
            )
        placers: dict[str, Placer] = {}
        for name in names:
            placers[name] = Placer.of(analysis[name])
            if geometry[name].channels != placers[name].dims:
                raise LayerError(
                    f"layer {name!r} gives {geometry[name].channels} values per position on "
                    f"these images, but the analysis has {placers[name].dims}: this is not the "
                    "model the analysis was made with"
                )
        return cls(
            analysis=analysis,
            names=names,
            model=model,
            modules=modules,
            raw=raw,
            source=source,
            scale=scale,
            batch_size=int(batch_size),
            device=device,
            dtype=dtype,
            geometry=geometry,
            placers=placers,
        )

    def empty_maps(self, max_probe_pixels: int | None) -> dict[str, TopologyMap]:
        """A map per layer with nothing placed yet, and the pixel each position stands for."""
        wanted = {name: np.arange(self.geometry[name].n_positions) for name in self.names}
        with eval_mode(self.model):
            fields = receptive_fields(
                self.model,
                self.modules,
                wanted,
                self.source.sample_shape,
                dtype=self.dtype,
                device=self.device,
                max_probe_pixels=int(max_probe_pixels or DEFAULT_MAX_PROBE_PIXELS),
            )
        return {name: self._empty_map(name, fields[name].boxes) for name in self.names}

    def _empty_map(self, name: str, boxes: np.ndarray) -> TopologyMap:
        n_images = len(self.source)
        _channels, height, width = self.source.sample_shape
        geo = self.geometry[name]
        placer = self.placers[name]
        grid = (geo.grid_shape[0], geo.grid_shape[1]) if geo.kind != "vector" else (1, 1)
        rows, cols = receptive_field_centres(geo, boxes, height, width)
        centres = np.stack([rows, cols], axis=1).astype(np.int64)
        if geo.kind == "vector":
            centres = centres[:1]
        n_stages = len(placer.stage_names)
        notes = list(placer.notes)
        if self.analysis[name].cloud.sampling == "pooled" and geo.kind != "vector":
            notes.append(
                "the analysis holds one spatial mean per image (pooled sampling), so single "
                "positions are placed among image means; an analysis of positions (top_norm, "
                "all_positions) describes them better"
            )
        if geo.kind == "vector":
            notes.append("a vector layer: one answer per image (every pixel shares it)")
        return TopologyMap(
            layer=name,
            kind=geo.kind,
            grid_shape=grid,
            image_shape=(height, width),
            node=np.full((n_images, *grid), -1, dtype=np.int32),
            node_last=np.full((n_images, *grid), -1, dtype=np.int32),
            node_count=np.zeros((n_images, *grid), dtype=np.int8),
            outside=np.zeros((n_images, *grid), dtype=bool),
            stage_names=list(placer.stage_names),
            flow=np.full((n_stages, n_images, *grid), -1, dtype=np.int32),
            centres=centres,
            pixels=pixel_index(centres, grid, height, width),
            note="; ".join(n for n in notes if n),
        )

    def place_images(self, maps: dict[str, TopologyMap]) -> Generator[Progress, None, None]:
        """Run the model on a batch of images at a time and place every position in ``maps``."""
        import torch

        n_images = len(self.source)
        needs_probability = any(p.index.lens == "probability" for p in self.placers.values())
        per_image = max(self.geometry[name].n_positions for name in self.names)
        step = int(max(1, min(self.batch_size, _POSITIONS_PER_STEP // max(per_image, 1))))
        for start in range(0, n_images, step):
            index = np.arange(start, min(start + step, n_images))
            yield Progress(start / n_images, f"topology map: images {start + 1}-{index[-1] + 1}")
            batch = torch.from_numpy(self.source.read(index)).to(
                device=self.device, dtype=self.dtype
            )
            probabilities = None
            if needs_probability:
                probabilities = predict_proba(
                    self.model, self.raw.read(index), input_scale=self.scale
                )
            with eval_mode(self.model):
                outputs = capture_layers(self.model, batch, self.modules)
            for name in self.names:
                out = outputs[name].float().cpu().numpy()
                self._place(maps[name], index, out, probabilities)

    def _place(
        self,
        target: TopologyMap,
        index: np.ndarray,
        out: np.ndarray,
        probabilities: np.ndarray | None,
    ) -> None:
        """Place one batch's layer output ``out`` (images ``index``) into its map."""
        kind = self.geometry[target.layer].kind
        if kind == "spatial":
            vectors = np.moveaxis(out, 1, -1).reshape(-1, out.shape[1])
        elif kind == "tokens":
            vectors = out.reshape(-1, out.shape[-1])
        else:
            vectors = out.reshape(len(out), -1)
        positions = len(vectors) // len(index)
        point_probabilities = (
            None if probabilities is None else np.repeat(probabilities, positions, axis=0)
        )
        placed = self.placers[target.layer].place(vectors, point_probabilities)
        shape = (len(index), *target.grid_shape)
        counts = np.diff(placed.node_offsets)
        last = np.full(len(counts), -1, dtype=np.int64)
        held = counts > 0
        last[held] = placed.nodes[placed.node_offsets[1:][held] - 1]
        target.node[index] = placed.node.reshape(shape)
        target.node_last[index] = last.reshape(shape)
        target.node_count[index] = np.minimum(counts, 127).reshape(shape)
        target.outside[index] = placed.outside.reshape(shape)
        if n_stages := len(placed.stage_names):
            target.flow[:, index] = placed.flow.reshape(n_stages, *shape)


def _with_outside_note(one: TopologyMap) -> str:
    """The map's note, saying so when most positions lie outside the Mapper cover."""
    share = float(one.outside.mean())
    if share <= 0.5:
        return one.note
    return "; ".join(
        n
        for n in (
            one.note,
            f"{100 * share:.0f}% of the positions lie outside the Mapper cover (their "
            "lens values are outside the analysed range, e.g. background positions "
            "when the analysis sampled top_norm positions); an analysis of "
            "all_positions covers them",
        )
        if n
    )


def topology_map(
    analysis: Analysis,
    images: Any,
    model: Any,
    *,
    layer: str | Sequence[str] | None = None,
    input_scale: InputScale | str | None = None,
    batch_size: int = 16,
    max_probe_pixels: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> dict[str, TopologyMap]:
    """Topology maps of whole images: every position of ``layer``, placed in ``analysis``.

    Parameters
    ----------
    analysis : Analysis
        A saved or fresh analysis (it does not hold the model).
    images : array-like or ImageSource
        ``(N, H, W)``, ``(N, H, W, 3)`` or ``(N, C, H, W)`` as for extraction; any
        images, not only the analysed ones.
    model : torch.nn.Module
        The model the analysis was made with.
    layer : str or list of str, optional
        Analysed layer(s); default every analysed layer.
    input_scale : InputScale or str, optional
        Default: the one the analysis's clouds were extracted with.
    batch_size : int
        Images per forward pass (the work memory).
    progress, cancel : callable, optional
        As for :func:`~napari_topolens.analyze`.

    Returns
    -------
    dict of str to TopologyMap
        One map per layer, in the order asked.
    """
    steps = iter_topology_map(
        analysis,
        images,
        model,
        layer=layer,
        input_scale=input_scale,
        batch_size=batch_size,
        max_probe_pixels=max_probe_pixels,
    )
    return drive(steps, progress, cancel)


def map_drift(base: TopologyMap, variant: TopologyMap) -> MapDrift:
    """Positions whose node changed between a base map and a variant's map.

    Both maps must be of the same images at the same layer, the variant's placed in
    the base analysis's graph (``topology_map(base_analysis, perturbed_images, ...)``),
    so that node numbers mean the same nodes.
    """
    if base.layer != variant.layer or base.node.shape != variant.node.shape:
        raise TopoLensError(
            f"the maps differ: layer {base.layer!r} {base.node.shape} and layer "
            f"{variant.layer!r} {variant.node.shape}; map the same images at the same layer"
        )
    changed = (base.node != variant.node) | (base.node_last != variant.node_last)
    n = len(changed)
    share = changed.reshape(n, -1).mean(axis=1) if n else np.zeros(0)
    return MapDrift(
        layer=base.layer,
        changed=changed,
        share=np.asarray(share, dtype=np.float64),
        base=base,
        variant=variant,
    )
