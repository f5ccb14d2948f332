"""Topology maps in napari: every pixel of the image on screen answers with its Mapper node.

An analysis holds a sample of positions; ``napari_topolens.maps`` places every
position of an image in its graph. Here, per image viewer (:func:`maps_for`):

- **the map overlay.** :meth:`TopologyMaps.show_map` adds a Labels layer on an
  analysis's image layer: each pixel takes the Mapper node of the position whose
  receptive field is centred nearest (label = node + 1, 0 = in no node), coloured
  as the canvas colours the node, with the node id, size and dominant class on
  hover (the layer's ``features``). Moving the stack's slider maps the new image
  in a worker thread (``thread_worker``; layers are only touched on the main
  thread), the newest request first; maps are cached per (analysis, network
  layer, image), a bounded number of them.
- **pixel -> node.** A click on a pixel (``ui.links``) selects the node of the
  position under it, whether or not the image has analysed points, without
  leaving the image; the analysed points of the image covering the pixel are
  ringed as before.
- **node -> regions.** Selecting Mapper nodes shows, on the image on screen, the
  pixels whose position falls in one of them (a second Labels layer).
- **pixel-level drift.** :meth:`TopologyMaps.show_drift` maps a perturbed
  variant's image in the BASE analysis's graph, beside the base image's map, and
  marks the pixels whose node changed; :meth:`TopologyMaps.drift_shares` gives,
  per image and network layer, the share of positions that changed.

The model is the one the analysis was made with: recorded by the analysis widget
(``model_registry.remember_model``), a shipped sample's model, or a model still
given to the viewer (``add_model``) or in the console under the recorded name.
For an analysis without a model in reach, the status says so once and the rest
keeps working (clicks ring analysed points as before).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import TopoLensError
from ..maps import TopologyMap, map_drift, topology_map
from ..topology.results import Analysis
from . import view_data as vd
from .layer_update import create_layer, lock_layer
from .links import PIXEL_ANSWERS, links_for
from .model_registry import model_of_analysis
from .state import PerViewer, ShownAnalysis, state_for, viewer_ref, window_closed
from .variants import variant_views_for
from .widget_parts import WorkFailed, raised_by_work, relay_warnings, surfacing_runtime_errors

__all__ = ["MAX_CACHED_MAPS", "TopologyMaps", "maps_for"]

#: Maps kept per viewer (each holds a few small integers per position of one image).
MAX_CACHED_MAPS = 256
#: Label colours: fully opaque node colours; the layer's opacity blends them.
_MAP_OPACITY = 0.55
_REGION_RGBA = (1.0, 1.0, 1.0, 1.0)
_CHANGED_RGBA = (1.0, 0.0, 1.0, 1.0)

_MAPS = PerViewer()

Key = tuple[str, str, int]  # (analysis key, network layer, image)


def maps_for(viewer: Any) -> TopologyMaps:
    """The topology maps of ``viewer``, made on first use."""
    return _MAPS.setdefault(viewer, TopologyMaps)


def _one_image(data: Any, rgb: bool, image: int) -> np.ndarray:
    """One image of a layer's data as a 1-image stack (read in the worker for lazy data)."""
    stacked = np.ndim(data) == (4 if rgb else 3)
    return np.asarray(data[int(image)] if stacked else data)[None]


#: One map at a time (a worker and a drift on the main thread share the model copies).
_MAP_LOCK = threading.Lock()
#: Per model (by id, with the model kept alive): a private copy the maps run. Capturing a
#: layer hooks the model's modules; an analysis running the same model in another thread
#: would catch the other pass's outputs, so the maps never run the user's own object.
_PRIVATE_MODELS: dict[int, tuple[Any, Any]] = {}


def _private_model(model: Any) -> Any:
    import copy

    found = _PRIVATE_MODELS.get(id(model))
    if found is not None and found[0] is model:
        return found[1]
    private = copy.deepcopy(model)
    for module in private.modules():  # hooks copied from a pass running right now
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
    _PRIVATE_MODELS[id(model)] = (model, private)
    while len(_PRIVATE_MODELS) > 4:
        _PRIVATE_MODELS.pop(next(iter(_PRIVATE_MODELS)))
    return private


def _map_work(
    analysis: Analysis, model: Any, data: Any, rgb: bool, image: int, layer: str
) -> tuple[TopologyMap, float]:
    """Worker body: the topology map of one image at one network layer."""
    with _MAP_LOCK:
        started = time.perf_counter()
        private = _private_model(model)
        maps = topology_map(analysis, _one_image(data, rgb, image), private, layer=layer)
        return maps[layer], time.perf_counter() - started


#: Images mapped at once when ranking by changed pixels. The maps' lock is let go
#: between chunks, and "Pixel drift" takes it on the main thread: one image at a time
#: keeps that wait to one image's two maps.
RANK_CHUNK = 1


def _images(data: Any, rgb: bool, index: np.ndarray) -> np.ndarray:
    """Images ``index`` of a layer's data as a stack (read one by one: lazy data too)."""
    return np.concatenate([_one_image(data, rgb, int(i)) for i in index])


def _rank_work_surfacing(*args: Any) -> Generator[tuple[int, int], None, dict[str, np.ndarray]]:
    """:func:`_rank_work` for napari's generator worker: a ``RuntimeError`` of torch's (a
    model that does not take these images) reaches ``errored``; napari's worker takes
    one for its own stop and the ranking stayed "running" for good."""
    return (yield from surfacing_runtime_errors(_rank_work(*args)))


def _rank_work(
    analysis: Analysis,
    model: Any,
    base_data: Any,
    variant_data: Any,
    rgb: bool,
    images: np.ndarray,
    layers: list[str],
) -> Generator[tuple[int, int], None, dict[str, np.ndarray]]:
    """Worker body: per network layer, the share of each image's positions whose node
    changed under the variant (its image placed in the base's graph). Yields
    ``(done, total)``; cancellable between chunks; the lock is let go between chunks
    so that the slider's maps are not held up."""
    shares = {name: np.zeros(len(images)) for name in layers}
    for start in range(0, len(images), RANK_CHUNK):
        index = images[start : start + RANK_CHUNK]
        base_images = _images(base_data, rgb, index)
        variant_images = _images(variant_data, rgb, index)
        with _MAP_LOCK:
            private = _private_model(model)
            base = topology_map(analysis, base_images, private, layer=layers)
            moved = topology_map(analysis, variant_images, private, layer=layers)
        for name in layers:
            shares[name][start : start + len(index)] = map_drift(base[name], moved[name]).share
        yield start + len(index), len(images)
    return shares


def pixel_drift_ranking(
    images: np.ndarray, shares: dict[str, np.ndarray]
) -> list[tuple[str, int, float]]:
    """``(layer, image, share)`` of every image whose pixels changed node, most first.

    Ranked by the share summed over the layers (as the most-moved list sums its
    scores), each given with the layer of its largest share (the earliest on ties).
    """
    names = list(shares)
    if not names or not len(images):
        return []
    grid = np.stack([np.asarray(shares[name], dtype=np.float64) for name in names])
    total = grid.sum(axis=0)
    best = grid.argmax(axis=0)
    order = sorted(
        (i for i in range(len(images)) if total[i] > 0), key=lambda i: (-total[i], images[i])
    )
    return [(names[best[i]], int(images[i]), float(grid[best[i], i])) for i in order]


class TopologyMaps:
    """Map overlays, pixel answers, node regions and pixel drift of one image viewer.

    Attributes
    ----------
    cache : OrderedDict
        ``(key, network layer, image) -> TopologyMap`` of one image, newest last.
    shown : set of str
        Analysis keys whose map overlay is on.
    message : str
        The last thing said (also put in the viewer's status bar).
    timings : list of float
        Seconds each map took in its worker (for the benchmark).
    """

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer_ref(viewer)
        self.state = state_for(viewer)
        self.cache: OrderedDict[Key, Any] = OrderedDict()
        self.shown: set[str] = set()
        self.map_layers: dict[str, Any] = {}
        self.region_layers: dict[str, Any] = {}
        self.gallery_layers: dict[str, Any] = {}
        self._gallery_tiles: dict[str, list[int]] = {}  # what each gallery map shows
        self.drift_layers: dict[str, list[Any]] = {}
        self.message = ""
        self.timings: list[float] = []
        self.last_answer: dict[str, Any] = {}
        #: Called with each message (the map widget's status line).
        self.listeners: list[Callable[[str], None]] = []
        self._said_no_model: set[str] = set()
        self._models: dict[str, Any] = {}
        self._ranking: Any = None  # the running ranking by changed pixels
        self._ranking_key: str | None = None  # the base it ranks
        self._waiting: OrderedDict[Key, list[Callable[[Any], None]]] = OrderedDict()
        self._worker: Any = None
        self._running: Key | None = None
        viewer.dims.events.current_step.connect(self._on_step)
        self.state.selection_changed.connect(self._on_selection)
        self.state.changed.connect(self._on_changed)
        self.state.removed.connect(self._on_removed)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def viewer(self) -> Any:
        viewer = self._viewer()
        if viewer is None:
            raise TopoLensError("the viewer of these maps was closed")
        return viewer

    def closed(self) -> bool:
        """Whether the image viewer is gone or its window closed: no map is computed for
        it any more, and what was computing is dropped. (napari's window asks its running
        workers to quit as it closes; a map's worker is a function, and ends its map.)"""
        viewer = self._viewer()
        return viewer is None or window_closed(viewer)

    @property
    def busy(self) -> bool:
        """A map is being computed or waits for the worker."""
        return self._running is not None or bool(self._waiting)

    def _say(self, text: str) -> None:
        self.message = text
        viewer = self._viewer()
        if viewer is not None:
            viewer.status = text
        for listener in list(self.listeners):
            listener(text)

    def model(self, key: str) -> Any:
        """The model ``key``'s analysis was made with, or None (said once)."""
        if key in self._models:
            return self._models[key]
        entry = self.state.get(key)
        model = model_of_analysis(self.viewer, entry.analysis)
        if model is None:
            if key not in self._said_no_model:
                self._said_no_model.add(key)
                self._say(
                    f"No topology map for {key!r}: the model it was made with is not in reach "
                    "(give it with napari_topolens.add_model(viewer, model, name=...)); "
                    "pixel clicks ring its analysed points only."
                )
            return None
        self._models[key] = model
        return model

    def current_image(self, key: str) -> int | None:
        """The image of ``key``'s image layer on screen."""
        layer = links_for(self.viewer).image_layer_of(key)
        return None if layer is None else links_for(self.viewer).current_image(layer)

    # ------------------------------------------------------------------ computing
    def cached(self, key: str, image: int, layer: str | None = None) -> Any:
        """The cached map of one image, or None."""
        name = layer or self.state.get(key).network_layer
        found = self.cache.get((key, name, int(image)))
        if found is not None:
            self.cache.move_to_end((key, name, int(image)))
        return found

    def request(
        self,
        key: str,
        image: int,
        on_ready: Callable[[Any], None] | None = None,
        layer: str | None = None,
    ) -> bool:
        """Get the map of one image of ``key`` (cached, or computed in a worker).

        ``on_ready(map)`` runs on the main thread once it is there (at once when
        cached). Returns False when there is no model or no image layer, or the
        viewer's window closed.
        """
        if self.closed():
            return False
        entry = self.state.get(key)
        name = layer or entry.network_layer
        found = self.cached(key, image, name)
        if found is not None:
            if on_ready is not None:
                on_ready(found)
            return True
        if self.model(key) is None or entry.image_layer is None:
            return False
        wanted: Key = (key, name, int(image))
        callbacks = self._waiting.pop(wanted, [])
        if on_ready is not None:
            callbacks.append(on_ready)
        self._waiting[wanted] = callbacks  # newest last: it is computed next
        self._next()
        return True

    def _next(self) -> None:
        if self._running is not None or not self._waiting:
            return
        if self.closed():
            self._waiting.clear()
            return
        from napari.qt.threading import thread_worker

        wanted = next(reversed(self._waiting))  # the newest request first
        key, name, image = wanted
        if key not in self.state or self.state.get(key).image_layer is None:
            self._waiting.pop(wanted, None)
            self._next()
            return
        entry = self.state.get(key)
        layer = entry.image_layer
        worker = thread_worker(_map_work, start_thread=False)(
            entry.analysis, self._models[key], layer.data, bool(layer.rgb), image, name
        )
        worker.returned.connect(lambda result, w=wanted: self._on_map(w, result))
        worker.errored.connect(lambda exc, w=wanted: self._on_failed(w, exc))
        worker.finished.connect(self._on_finished)
        relay_warnings(worker)
        self._running, self._worker = wanted, worker
        worker.start()

    def _on_map(self, wanted: Key, result: tuple[TopologyMap, float]) -> None:
        one, seconds = result
        self.timings.append(float(seconds))
        self.cache[wanted] = one
        while len(self.cache) > MAX_CACHED_MAPS:
            self.cache.popitem(last=False)
        callbacks = self._waiting.pop(wanted, [])
        if self.closed() or wanted[0] not in self.state:
            return
        if one.note:
            self._say(f"topology map of {wanted[0]!r} at {wanted[1]}: {one.note}")
        self._draw(wanted[0])
        for callback in callbacks:
            callback(one)

    def _on_failed(self, wanted: Key, exc: BaseException) -> None:
        self._waiting.pop(wanted, None)
        self._say(f"No topology map of image {wanted[2]} for {wanted[0]!r}: {exc}")

    def _on_finished(self) -> None:
        self._running = self._worker = None
        self._next()

    def map_now(self, key: str, image: int, layer: str | None = None) -> Any:
        """The map of one image, computed here if not cached (scripts, tests, benchmarks)."""
        entry = self.state.get(key)
        name = layer or entry.network_layer
        found = self.cached(key, image, name)
        if found is not None:
            return found
        model = self.model(key)
        if model is None or entry.image_layer is None:
            raise TopoLensError(
                f"no topology map for {key!r}: its model or its image layer is not in reach"
            )
        found, seconds = _map_work(
            entry.analysis, model, entry.image_layer.data, bool(entry.image_layer.rgb), image, name
        )
        self.timings.append(float(seconds))
        self.cache[(key, name, int(image))] = found
        while len(self.cache) > MAX_CACHED_MAPS:
            self.cache.popitem(last=False)
        return found

    # ------------------------------------------------------------------ the overlay
    def show_map(self, key: str, on: bool = True) -> Any:
        """Turn ``key``'s map overlay on (added on its image layer) or off; returns the layer."""
        entry = self.state.get(key)
        if not on:
            self.shown.discard(key)
            self._gallery_tiles.pop(key, None)
            for layers in (self.map_layers, self.region_layers, self.gallery_layers):
                layer = layers.pop(key, None)
                if layer is not None and layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
            return None
        if entry.image_layer is None:
            raise TopoLensError(f"{key!r} has no image layer on screen to map")
        self.shown.add(key)
        if self.model(key) is None:
            return None
        image = self.current_image(key) or 0
        self.request(key, image)
        self._draw(key)
        return self.map_layers.get(key)

    def _on_step(self, _event: Any = None) -> None:
        """The slider moved: map the image now on screen (cached: at once)."""
        for key in list(self.shown):
            if key not in self.state:
                continue
            image = self.current_image(key)
            if image is not None:
                self.request(key, image)
            self._draw(key)

    def _draw(self, key: str) -> None:
        """Put the current image's map (or nothing yet) into ``key``'s overlay layers."""
        if key not in self.shown or key not in self.state:
            return
        entry = self.state.get(key)
        image_layer = entry.image_layer
        if image_layer is None or image_layer not in self.viewer.layers:
            return
        image = self.current_image(key)
        one = None if image is None else self.cached(key, image)
        h, w = _image_hw(image_layer)
        labels = np.zeros((h, w), np.int32)
        if one is not None:
            labels = one.pixel_map(0).astype(np.int32) + 1
        layer = self.map_layers.get(key)
        if layer is None or layer not in self.viewer.layers:
            layer = _add_labels(
                self.viewer,
                labels,
                name=f"{key} · topology map",
                opacity=_MAP_OPACITY,
                metadata={"topolens": {"key": key, "view": "topology_map"}},
                **_placed_like(image_layer),
            )
            layer.editable = False
            self.map_layers[key] = layer
        else:
            layer.data = labels
        self._color(layer, entry)
        self._draw_regions(key)
        if self._gallery_tiles.get(key):
            self._draw_gallery(key)

    def _color(self, layer: Any, entry: ShownAnalysis) -> None:
        """Node colours of the canvas, and the node's id and class on hover."""
        from napari.utils.colormaps import DirectLabelColormap

        analysis, name = entry.analysis, entry.network_layer
        try:
            colors, _ = vd.node_colors(analysis, name, entry.color_by)
        except TopoLensError:
            colors, _ = vd.node_colors(analysis, name, "dominant_class")
        graph = analysis[name].mapper
        stamp = (id(analysis), name, entry.color_by, graph.n_nodes)
        if layer.metadata.get("topolens", {}).get("colored") == stamp:
            return
        color_dict: dict[int | None, Any] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
        for node in range(graph.n_nodes):
            color_dict[node + 1] = tuple(float(v) for v in np.asarray(colors[node])[:4])
        layer.colormap = DirectLabelColormap(color_dict=color_dict)
        names = analysis.class_names
        import pandas as pd

        layer.features = pd.DataFrame(
            {
                "index": np.arange(graph.n_nodes + 1, dtype=np.int64),
                "node": np.arange(-1, graph.n_nodes, dtype=np.int64),
                "size": np.concatenate([[0], np.asarray(graph.size, np.int64)]),
                "dominant_class": ["none"]
                + [vd.class_name(int(c), names) for c in graph.dominant_class],
            }
        )
        layer.metadata = {
            **layer.metadata,
            "topolens": {**layer.metadata["topolens"], "colored": stamp},
        }

    # ------------------------------------------------------------------ node -> regions
    def selected_nodes(self, key: str) -> np.ndarray:
        """Mapper node ids selected in ``key``'s canvas view."""
        nodes_layer = self.state.get(key).layers.get("mapper_nodes")
        if nodes_layer is None or not len(nodes_layer.selected_data):
            return np.zeros(0, np.int64)
        rows = sorted(
            int(i) for i in nodes_layer.selected_data if int(i) < len(nodes_layer.features)
        )
        return nodes_layer.features["node"].to_numpy()[rows].astype(np.int64)

    def region_mask(self, key: str, image: int, nodes: ArrayLike) -> np.ndarray | None:
        """``(H, W)`` bool: pixels of ``image`` whose position falls in one of ``nodes``
        (None when the map is not there yet)."""
        one = self.cached(key, image)
        if one is None:
            return None
        nodes = np.asarray(nodes, np.int64)
        inside = np.isin(one.node[0], nodes) | np.isin(one.node_last[0], nodes)
        return inside.reshape(-1)[one.pixels]

    def _on_selection(self, key: str) -> None:
        if key not in self.shown or key not in self.state:
            return
        self._draw_regions(key, say=True)
        entry = self.state.get(key)
        tiles = [int(t) for t in entry.selection.tiles]
        self._gallery_tiles[key] = tiles
        current = self.current_image(key)
        for tile in tiles[::-1]:  # the first tile is mapped first, after the image on screen
            if tile != current:
                self.request(key, tile)
        self._draw_gallery(key)

    # ------------------------------------------------------------------ the gallery's tiles
    def _draw_gallery(self, key: str) -> None:
        """The maps of the selection gallery's tiles, over the tiles (those mapped so far)."""
        entry = self.state.get(key)
        gallery = entry.layers.get("gallery")
        layer = self.gallery_layers.get(key)
        tiles = self._gallery_tiles.get(key, [])
        if gallery is None or gallery not in self.viewer.layers or not tiles:
            if layer is not None and layer in self.viewer.layers:
                layer.visible = False
            return
        h, w = _image_hw(entry.image_layer)
        b = vd.TILE_BORDER
        data = np.zeros(np.shape(gallery.data)[:2], np.int32)
        for k, tile in enumerate(tiles):
            one = self.cached(key, tile)
            (y, x), _ = vd.tile_box(k, (h, w))
            if one is None or y + b + h > data.shape[0] or x + b + w > data.shape[1]:
                continue
            data[y + b : y + b + h, x + b : x + b + w] = one.pixel_map(0) + 1
        placed = {"scale": tuple(gallery.scale), "translate": tuple(gallery.translate)}
        if layer is None or layer not in self.viewer.layers:
            layer = _add_labels(
                self.viewer,
                data,
                name=f"{key} · gallery maps",
                opacity=_MAP_OPACITY,
                metadata={"topolens": {"key": key, "view": "gallery_maps"}},
                **placed,
            )
            self.gallery_layers[key] = layer
            # another gallery (a pixel click's, a most-moved pair) hides the tiles' maps
            gallery.events.data.connect(lambda _e, k=key: self._on_gallery_data(k))
        else:
            layer.data = data
            layer.scale, layer.translate = placed["scale"], placed["translate"]
            layer.visible = True
        self._color(layer, entry)

    def _on_gallery_data(self, key: str) -> None:
        self._gallery_tiles.pop(key, None)
        layer = self.gallery_layers.get(key)
        if layer is not None:
            layer.visible = False

    def _draw_regions(self, key: str, say: bool = False) -> None:
        entry = self.state.get(key)
        image = self.current_image(key)
        nodes = (
            self.selected_nodes(key)
            if entry.selection.source == "mapper_nodes"
            else np.zeros(0, dtype=np.int64)
        )
        layer = self.region_layers.get(key)
        if image is None or not len(nodes):
            if layer is not None and layer in self.viewer.layers:
                layer.visible = False
            return
        mask = self.region_mask(key, image, nodes)
        if mask is None:  # on its way: drawn when the map arrives
            return
        data = mask.astype(np.uint8)
        if layer is None or layer not in self.viewer.layers:
            from napari.utils.colormaps import DirectLabelColormap

            layer = _add_labels(
                self.viewer,
                data,
                name=f"{key} · node regions",
                opacity=0.9,
                metadata={"topolens": {"key": key, "view": "node_regions"}},
                colormap=DirectLabelColormap(
                    color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: _REGION_RGBA}
                ),
                **_placed_like(entry.image_layer),
            )
            layer.contour = max(1, round(max(data.shape) / 24))  # a visible outline
            layer.editable = False
            self.region_layers[key] = layer
        else:
            layer.data = data
            layer.visible = True
        mapped = self.map_layers.get(key)
        if mapped is not None and mapped in self.viewer.layers:  # the regions stay on top
            top = self.viewer.layers.index(mapped)
            if self.viewer.layers.index(layer) < top:
                self.viewer.layers.move(self.viewer.layers.index(layer), top + 1)
        if say:  # once per selection, not per map that arrives later
            self._say(
                f"{key}: node(s) {', '.join(map(str, np.asarray(nodes)[:6]))} hold "
                f"{100 * float(mask.mean()):.0f}% of image {image}'s pixels"
            )

    # ------------------------------------------------------------------ pixel -> node
    def answer_pixel(self, key: str, image: int, row: int, col: int) -> bool:
        """Select the node of the position under a pixel (once its map is there).

        Returns False when there is no model to map with (nothing is selected)."""

        def answer(one: TopologyMap) -> None:
            if key not in self.state:
                return
            position = int(one.pixels[int(row), int(col)])
            node = int(one.node[0].reshape(-1)[position])
            last = int(one.node_last[0].reshape(-1)[position])
            nodes = [n for n in dict.fromkeys((node, last)) if n >= 0]
            self.last_answer = {
                "key": key,
                "image": int(image),
                "pixel": (int(row), int(col)),
                "position": position,
                "nodes": nodes,
                "outside": bool(one.outside[0].reshape(-1)[position]),
            }
            links = links_for(self.viewer)
            if nodes:
                links.select_nodes(key, nodes, jump=False)
                graph = self.state.get(key).result.mapper
                names = self.state.get(key).analysis.class_names
                self._say(
                    f"pixel ({row}, {col}) of image {image}: node "
                    + ", ".join(
                        f"{n} ({vd.class_name(int(graph.dominant_class[n]), names)})" for n in nodes
                    )
                )
            else:  # the analysed points' rings stay; nothing to select
                why = (
                    "outside the analysed range of the lens"
                    if self.last_answer["outside"]
                    else "noise in its cube (no cluster)"
                )
                self._say(f"pixel ({row}, {col}) of image {image}: in no node ({why})")

        return self.request(key, int(image), answer)

    # ------------------------------------------------------------------ pixel drift
    def _perturbed(self, base_key: str, variant: str) -> tuple[Any, Any]:
        """The viewer's variant views and the shown base ``base_key`` with ``variant``'s
        perturbed images, or one project error saying there are none."""
        views = variant_views_for(self.viewer)
        bv = views.bases.get(base_key)
        if bv is None or variant not in bv.image_layers:
            raise TopoLensError(
                f"no perturbed image set {variant!r} is shown for {base_key!r}; pixel drift "
                "compares a perturbed variant's images (a compressed model has none)"
            )
        return views, bv

    def rank_by_pixel_drift(self, base_key: str, variant: str) -> Any:
        """Rank the analysed images by how many of their pixels changed node under
        ``variant``, in a worker; the views' most-moved list then lists them so.

        Every analysed image of the base is mapped at every analysed layer, as it is
        and as the variant perturbed it, in the base's graph
        (:func:`~napari_topolens.maps.map_drift`). Returns the started worker.
        """
        from napari.qt.threading import thread_worker

        views, bv = self._perturbed(base_key, variant)
        entry = self.state.get(base_key)
        model = self.model(base_key)
        if model is None:
            raise TopoLensError(f"no model in reach for {base_key!r}: no ranking by pixels")
        if self._ranking is not None:
            self._ranking.quit()
        analysis = entry.analysis
        images = np.unique(
            np.concatenate([np.asarray(r.cloud.image_index) for r in analysis.layer_results])
        ).astype(np.int64)
        layers = list(analysis.layers)
        base_layer, variant_layer = entry.image_layer, bv.image_layers[variant]
        worker = thread_worker(_rank_work_surfacing, start_thread=False, ignore_errors=True)(
            analysis,
            model,
            base_layer.data,
            variant_layer.data,
            bool(base_layer.rgb),
            images,
            layers,
        )

        def progress(done: tuple[int, int]) -> None:
            if self.closed():
                return
            self._say(f"ranking by changed pixels under {variant}: {done[0]} of {done[1]} images")

        def ranked(shares: dict[str, np.ndarray]) -> None:
            if (
                self.closed()
                or base_key not in self.state
                or self.state.get(base_key).analysis is not analysis  # the key reused
            ):
                return
            ranking = pixel_drift_ranking(images, shares)
            views.pixel_ranked[(base_key, variant)] = ranking
            views.update_controls()
            self._say(
                f"{len(ranking)} of {vd.plural(len(images), 'image')} changed pixels under "
                f"{variant}: ranked in the views' most-moved list"
            )

        def failed(exc: BaseException) -> None:
            expected = isinstance(exc, (TopoLensError, WorkFailed))
            if expected and self.closed():
                return
            self._say(f"No ranking by changed pixels under {variant}: {raised_by_work(exc)}")
            if not expected:  # not ours: napari's handler shows it with its traceback
                raise exc

        def finished() -> None:
            if self._ranking is worker:
                self._ranking = None

        worker.yielded.connect(progress)
        worker.returned.connect(ranked)
        worker.errored.connect(failed)
        worker.finished.connect(finished)
        relay_warnings(worker)
        self._ranking, self._ranking_key = worker, base_key
        self._say(f"ranking by changed pixels under {variant}: 0 of {len(images)} images")
        worker.start()
        return worker

    def show_drift(self, base_key: str, variant: str, image: int | None = None) -> Any:
        """Base map | variant map (in the base's graph) | changed pixels, for one image.

        Returns the :class:`~napari_topolens.maps.MapDrift` of that image; its
        maps are drawn as Labels layers on the base's and the variant's image layers.
        """
        _views, bv = self._perturbed(base_key, variant)
        entry = self.state.get(base_key)
        base_layer, variant_layer = entry.image_layer, bv.image_layers[variant]
        if image is None:
            image = self.current_image(base_key) or 0
        model = self.model(base_key)
        if model is None:
            raise TopoLensError(f"no model in reach for {base_key!r}: no drift map")
        name = entry.network_layer
        base_map = self.map_now(base_key, int(image))
        variant_map, seconds = _map_work(
            entry.analysis, model, variant_layer.data, bool(variant_layer.rgb), int(image), name
        )
        self.timings.append(float(seconds))
        drift = map_drift(base_map, variant_map)
        for layer in self.drift_layers.pop(base_key, []):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        made = []
        for one, on, label in (
            (base_map, base_layer, "base"),
            (variant_map, variant_layer, variant),
        ):
            layer = _add_labels(
                self.viewer,
                one.pixel_map(0).astype(np.int32) + 1,
                name=f"{base_key} · map of {label} #{image}",
                opacity=_MAP_OPACITY,
                metadata={"topolens": {"key": base_key, "view": "drift_map"}},
                **_placed_like(on),
            )
            self._color(layer, entry)
            made.append(layer)
        changed = _add_labels(
            self.viewer,
            drift.changed_pixels(0).astype(np.uint8),
            name=f"{base_key} · changed node ({variant}) #{image}",
            opacity=0.8,
            metadata={"topolens": {"key": base_key, "view": "drift_changed"}},
            **_placed_like(variant_layer, right_of=True),
        )
        from napari.utils.colormaps import DirectLabelColormap

        changed.colormap = DirectLabelColormap(
            color_dict={None: (0, 0, 0, 0), 0: (0.15, 0.15, 0.15, 1.0), 1: _CHANGED_RGBA}
        )
        made.append(changed)
        g = vd.ImageGeometry.of_layer(variant_layer)
        left = changed.translate[-1] - changed.scale[-1] / 2
        title = create_layer(
            vd.variant_labels_layer_data(
                f"{base_key} · drift",
                [f"changed ({100 * float(drift.share[0]):.0f}%)"],
                [(g.origin[0], left, g.origin[0] + g.height, left + g.width)],
            )
        )
        active = self.viewer.layers.selection.active
        self.viewer.add_layer(title)
        if active is not None:
            self.viewer.layers.selection.active = active
        made.append(title)
        self.drift_layers[base_key] = made
        self._say(
            f"{variant} #{image} at {name}: {100 * float(drift.share[0]):.0f}% of the "
            "positions changed node (magenta)"
        )
        return drift

    def drift_shares(
        self, base_key: str, variant: str, images: Any, layers: Any = None
    ) -> dict[str, np.ndarray]:
        """Per network layer, the share of each image's positions whose node changed."""
        _views, bv = self._perturbed(base_key, variant)
        entry = self.state.get(base_key)
        model = self.model(base_key)
        if model is None:
            raise TopoLensError(f"no model in reach for {base_key!r}: no drift shares")
        names = list(layers) if layers is not None else list(entry.analysis.layers)
        index = np.asarray(list(images), np.int64)
        base_data, variant_data = entry.image_layer.data, bv.image_layers[variant].data
        with _MAP_LOCK:
            private = _private_model(model)
            base = topology_map(entry.analysis, np.asarray(base_data[index]), private, layer=names)
            moved = topology_map(
                entry.analysis, np.asarray(variant_data[index]), private, layer=names
            )
        return {name: map_drift(base[name], moved[name]).share for name in names}

    # ------------------------------------------------------------------ following the state
    def _on_changed(self, key: str, what: str) -> None:
        if key in self.shown and what in ("network_layer", "color_by"):
            if what == "network_layer":
                self._on_step()
            layer = self.map_layers.get(key)
            if layer is not None and layer in self.viewer.layers:
                self._color(layer, self.state.get(key))

    def _on_removed(self, key: str) -> None:
        if self._ranking is not None and self._ranking_key == key:
            self._ranking.quit()
        viewer = self._viewer()
        self.shown.discard(key)
        self._models.pop(key, None)
        self._said_no_model.discard(key)
        for stale in [k for k in self.cache if k[0] == key]:
            del self.cache[stale]
        for stale in [k for k in self._waiting if k[0] == key]:
            del self._waiting[stale]
        self._gallery_tiles.pop(key, None)
        layers = [
            self.map_layers.pop(key, None),
            self.region_layers.pop(key, None),
            self.gallery_layers.pop(key, None),
        ]
        layers += self.drift_layers.pop(key, [])
        if viewer is None:
            return
        for layer in layers:
            if layer is not None and layer in viewer.layers:
                viewer.layers.remove(layer)


def _add_labels(viewer: Any, data: np.ndarray, **kwargs: Any) -> Any:
    """A locked Labels overlay, added without taking the active layer from the user."""
    active = viewer.layers.selection.active
    layer = viewer.add_labels(data, **kwargs)
    lock_layer(layer)
    if active is not None:
        viewer.layers.selection.active = active
    return layer


def _image_hw(layer: Any) -> tuple[int, int]:
    shape = layer.data.shape[:-1] if layer.rgb else layer.data.shape
    return int(shape[-2]), int(shape[-1])


def _placed_like(layer: Any, right_of: bool = False) -> dict[str, Any]:
    """Scale and translate of the last two axes of an image layer (optionally one image
    width further right), for a 2D overlay that follows its stack."""
    scale = tuple(float(v) for v in np.asarray(layer.scale)[-2:])
    translate = [float(v) for v in np.asarray(layer.translate)[-2:]]
    if right_of:
        translate[1] += 1.5 * _image_hw(layer)[1] * scale[1]  # room for the titles
    return {"scale": scale, "translate": tuple(translate)}


def _answer_pixel(viewer: Any, key: str, image: int, row: int, col: int) -> None:
    maps_for(viewer).answer_pixel(key, image, row, col)


PIXEL_ANSWERS.append(_answer_pixel)
