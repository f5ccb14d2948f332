"""Links both ways between the views in the topology canvas and the images and their pixels.

One :class:`LinkController` per image viewer (:func:`links_for`) works on the
shown analyses of ``ui.state`` (where the selection, the pixel hits and the rings
linked from a base or variant are kept):

- **selection -> pixels.** Selecting Mapper nodes or edges, diagram points,
  barcode bars, cluster-flow clusters or bands, blob points or hulls, or
  dendrogram branches (a click on the item in the topology canvas, or code
  setting a view layer's ``selected_data``) gathers their member points (rows of
  the shown layer's point cloud, ``ui.selection_members``). The heat overlay in
  the image viewer then shows, for every member image, how many member receptive
  fields cover each pixel; the gallery (``ui.selection_gallery``) tiles the member
  images with the most member points, each framed and labelled with its class,
  under a title naming the selection; the image stack jumps to the top member
  image unless the current one is a member; the selected items get a white ring
  (``ui.rings``).
- **pixel -> topology.** A click (press and release without dragging, in
  pan/zoom mode, so painting a Labels layer never fires it; ``ui.image_pixels``)
  on a pixel of an analysed image finds the points of that image whose receptive
  field covers the pixel, and rings in magenta every Mapper node, persistence bar,
  flow cluster and band, blob point and hull and dendrogram branch that holds one
  of them, in every analysis computed on that image layer; the gallery shows that
  image.
- **clearing.** Escape in the canvas, or a click on its empty space, clears the
  selection and the rings.

Every link is keyed by the ids in the layers' ``features`` (``node``, ``dim``/
``bar``, ``stage``/``cluster``, ``point``, ``merge``), never by row order.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Generator, Iterable
from typing import Any

import numpy as np
import pandas as pd
from psygnal import Signal

from ..activations.pointcloud import PointCloud
from ..errors import EmptySelectionError, TopoLensError
from ..topology.results import Analysis, LayerAnalysis
from . import view_data as vd
from .canvas import canvas_for
from .image_pixels import (
    current_image,
    jump_to_member_image,
    on_click_without_drag,
    pixel_at,
    pixel_press,
    show_image,
)
from .rings import ViewRings
from .selection_gallery import (
    GalleryTiles,
    ImageLookup,
    draw_gallery,
    gallery_of_images,
    gallery_spot,
)
from .selection_members import (
    SELECTABLE_VIEWS,
    bar_members,
    csr_union,
    describe_selection,
    drawn_bars,
    items_holding,
    members_of,
)
from .state import PerViewer, Selection, ShownAnalysis, state_for, viewer_ref

__all__ = [
    "PICKED_VIEWS",
    "PIXEL_ANSWERS",
    "SELECTABLE_VIEWS",
    "LinkController",
    "gallery_spot",
    "links_for",
    "on_click_without_drag",
    "pixel_press",
]

#: Canvas views whose items a click hands to :attr:`LinkController.item_picked` instead
#: of selecting them (the drift plot's points: ``ui.variants`` compares that variant).
PICKED_VIEWS = ("drift_points",)

_CONTROLLERS = PerViewer()

#: Called as ``answer(viewer, key, image, row, col)`` after a pixel click has ringed the
#: analysed points: ``ui.topology_maps`` selects the node of the position under the pixel
#: (a module above this one, so it registers itself here).
PIXEL_ANSWERS: list[Callable[[Any, str, int, int, int], Any]] = []

#: Per view: the ``features`` column(s) that a pixel's finds (``items_holding``) ring.
_RINGED_BY: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("mapper_nodes", ("node",), "mapper_nodes"),
    ("diagram", ("dim", "bar"), "diagram"),
    ("barcode", ("dim", "bar"), "diagram"),
    ("flow_clusters", ("stage", "cluster"), "flow_clusters"),
    ("flow", ("stage", "cluster", "next_cluster"), "flow"),
    ("blob_points", ("point",), "blob_points"),
    ("blob_hulls", ("cluster",), "blob_hulls"),
    ("dendrogram_tree", ("merge",), "dendrogram_tree"),
)


def links_for(viewer: Any) -> LinkController:
    """The link controller of ``viewer``, installed on first use."""
    return _CONTROLLERS.setdefault(viewer, LinkController)


class LinkController:
    """Selection -> overlay, gallery, image jump; pixel click -> views ringed.

    What is selected and ringed is kept in ``ui.state`` (each analysis's
    ``selection``, ``hits`` and ``linked``); the attributes below read it there.

    Attributes
    ----------
    last_members : ndarray of int64
        Cloud rows (of the shown layer) of the last selection.
    last_key, last_source : str or None
        Analysis key and view name of the last selection.
    last_highlight : dict of str to ndarray
        What the last pixel click ringed (see :meth:`pixel_clicked`).

    Signals
    -------
    item_picked(entry, view, index)
        A click picked row ``index`` of a view in :data:`PICKED_VIEWS`.
    """

    item_picked = Signal(ShownAnalysis, str, int)

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer_ref(viewer)
        self.state = state_for(viewer)
        self.canvas = canvas_for(viewer)
        self._wired: weakref.WeakSet[Any] = weakref.WeakSet()
        self.rings = ViewRings()
        self._quiet = False
        #: Per gallery layer, what its empty gallery (a cleared selection) was drawn for and
        #: the data array it got: clearing again leaves it alone while neither changed.
        self._empty_galleries: weakref.WeakKeyDictionary[Any, tuple[tuple, Any]] = (
            weakref.WeakKeyDictionary()
        )
        viewer.mouse_drag_callbacks.append(self._on_image_mouse)
        self.canvas.model.mouse_drag_callbacks.append(self._on_canvas_mouse)
        self.canvas.model.bind_key("Escape", self._on_escape, overwrite=True)
        self.state.changed.connect(self._on_state_changed)
        for entry in self.state:
            self.wire(entry)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def viewer(self) -> Any:
        viewer = self._viewer()
        if viewer is None:
            raise TopoLensError("the viewer of these links was closed")
        return viewer

    @property
    def keys(self) -> list[str]:
        """Keys of the analyses this viewer shows."""
        return self.state.keys

    @property
    def last_selection(self) -> Selection:
        """The last selection made (or cleared) in any shown analysis."""
        key = self.state.selected_key
        return (
            self.state.get(key).selection if key is not None and key in self.state else Selection()
        )

    @property
    def last_members(self) -> np.ndarray:
        return self.last_selection.members

    @property
    def last_key(self) -> str | None:
        key = self.state.selected_key
        return key if key in self.state else None

    @property
    def last_source(self) -> str | None:
        return self.last_selection.source

    @property
    def last_highlight(self) -> dict[str, np.ndarray]:
        key = self.state.hits_key
        return self.state.get(key).hits if key is not None and key in self.state else {}

    def entry(self, key: str) -> ShownAnalysis:
        return self.state.get(key)

    def analysis(self, key: str) -> Analysis:
        return self.state.get(key).analysis

    def shown_layer(self, key: str) -> str:
        """The analysed network layer whose views are shown for ``key``."""
        entry = self.state.get(key)
        return entry.network_layer or entry.analysis.layers[-1]

    def _result(self, key: str) -> LayerAnalysis:
        return self.analysis(key)[self.shown_layer(key)]

    def image_layer_of(self, key: str) -> Any:
        layer = self.state.get(key).image_layer if key in self.state else None
        if layer is not None and layer in self.viewer.layers:
            return layer
        return None

    def _layer(self, key: str, view: str) -> Any:
        return self.state.get(key).layers.get(view) if key in self.state else None

    # ------------------------------------------------------------------ wiring
    def wire(self, entry: ShownAnalysis) -> None:
        """Connect the selection of an analysis's view layers (once per layer)."""
        for view in SELECTABLE_VIEWS:
            layer = entry.layers.get(view)
            if layer is None:
                continue
            self.refresh(layer)
            if layer in self._wired:
                continue
            layer.selected_data.events.items_changed.connect(
                functools.partial(self._on_selection, layer)
            )
            self._wired.add(layer)

    def refresh(self, layer: Any) -> None:
        """Re-read a view layer whose data were replaced in place (its own colours, no rings)."""
        self.rings.refresh(layer)

    def ring_masks(self, layer: Any) -> tuple[np.ndarray, np.ndarray]:
        """(selected, holds the clicked pixel) masks over a view layer's rows."""
        return self.rings.masks(layer)

    def _on_state_changed(self, key: str, what: str) -> None:
        if what == "network_layer" and key in self.state:
            entry = self.state.get(key)
            self.state.set_hits(key, {})
            self.wire(entry)
            self.clear_selection(key)

    def _on_selection(self, layer: Any, *_: Any) -> None:
        if self._quiet:
            return
        found = self.state.entry_of_layer(layer)
        if found is None:
            return
        entry, view = found
        if not entry.network_layer:
            return  # being drawn (its layers taken over from another analysis)
        rows = sorted(int(i) for i in layer.selected_data if 0 <= int(i) < len(layer.features))
        table = layer.features.iloc[rows]
        self.rings.set(layer, np.isin(np.arange(len(layer.features)), rows), selected=True)
        members = self.members_of(entry.key, view, table)
        self._show_members(entry.key, members, view, table)

    # ------------------------------------------------------------------ ids -> members
    def members_of(self, key: str, view: str, table: pd.DataFrame) -> np.ndarray:
        """Cloud rows behind the rows of a view's ``features`` table (by their ids)."""
        return members_of(self._result(key), view, table)

    def bar_members(self, key: str, dim: int, bars: Iterable[int]) -> np.ndarray:
        """Cloud rows of persistence bars: H0 the dying component, H1 a representative cycle."""
        return bar_members(self._result(key), dim, bars)

    # ------------------------------------------------------------------ public selection API
    def _select_rows(
        self, key: str, view: str, mask_of: Callable[[pd.DataFrame], np.ndarray]
    ) -> Any:
        """Select, quietly, the rows of a view layer whose ids pass ``mask_of(features)``."""
        layer = self._layer(key, view)
        if layer is None:
            return None
        mask = np.asarray(mask_of(layer.features), dtype=bool)
        rows = np.flatnonzero(mask)
        self.rings.set(layer, mask, selected=True)
        self._quiet = True
        try:
            layer.selected_data = set(int(r) for r in rows)
        finally:
            self._quiet = False
        return layer

    def select_nodes(
        self, key: str, node_indices: Iterable[int], *, jump: bool = True
    ) -> np.ndarray:
        """Select Mapper nodes (``node`` ids) and show their members; returns the members.

        ``jump=False`` keeps the image on screen (a pixel's node, ``ui.topology_maps``)."""
        nodes = np.asarray(list(node_indices), dtype=np.int64)
        graph = self._result(key).mapper
        if np.any((nodes < 0) | (nodes >= graph.n_nodes)):
            raise EmptySelectionError(
                f"node ids must lie in 0..{graph.n_nodes - 1}, got {nodes.tolist()}"
            )
        self._select_rows(key, "mapper_nodes", lambda f: np.isin(f["node"].to_numpy(), nodes))
        members = csr_union(graph.members, graph.member_offsets, nodes)
        table = pd.DataFrame({"node": nodes})
        return self._show_members(key, members, "mapper_nodes", table, jump=jump)

    def select_bars(self, key: str, dim: int, bars: Iterable[int]) -> np.ndarray:
        """Select persistence bars of one dimension (``bar`` ids) and show their members."""
        ids = np.asarray(list(bars), dtype=np.int64)
        pers = self._result(key).persistence
        if not 0 <= dim < len(pers.diagrams) or np.any(
            (ids < 0) | (ids >= len(pers.diagrams[dim]))
        ):
            raise EmptySelectionError(f"no such bars of H{dim}: {ids.tolist()}")
        for view in ("diagram", "barcode"):
            self._select_rows(
                key,
                view,
                lambda f: (f["dim"].to_numpy() == dim) & np.isin(f["bar"].to_numpy(), ids),
            )
        table = pd.DataFrame({"dim": np.full(len(ids), dim), "bar": ids})
        return self._show_members(key, self.bar_members(key, dim, ids), "diagram", table)

    def select_clusters(self, key: str, stage: int, clusters: Iterable[int]) -> np.ndarray:
        """Select clusters of one cluster-flow stage and show their members."""
        ids = np.asarray(list(clusters), dtype=np.int64)
        memberships = np.asarray(self._result(key).flow.memberships)
        if not 0 <= stage < len(memberships):
            raise EmptySelectionError(f"stage must lie in 0..{len(memberships) - 1}, got {stage}")
        self._select_rows(
            key,
            "flow_clusters",
            lambda f: (f["stage"].to_numpy() == stage) & np.isin(f["cluster"].to_numpy(), ids),
        )
        members = np.flatnonzero(np.isin(memberships[stage], ids)).astype(np.int64)
        table = pd.DataFrame({"stage": np.full(len(ids), stage), "cluster": ids})
        return self._show_members(key, members, "flow_clusters", table)

    def select_merge(self, key: str, merge: int | Iterable[int]) -> np.ndarray:
        """Select dendrogram branches (``merge`` = linkage rows) and show their members."""
        ids = [merge] if isinstance(merge, (int, np.integer)) or np.isscalar(merge) else merge
        merges = np.atleast_1d(np.asarray(list(ids), dtype=np.int64))
        dendro = self._result(key).dendrogram
        if np.any((merges < 0) | (merges >= len(dendro.linkage))):
            raise EmptySelectionError(
                f"merge ids must lie in 0..{len(dendro.linkage) - 1}, got {merges.tolist()}"
            )
        self._select_rows(key, "dendrogram_tree", lambda f: np.isin(f["merge"].to_numpy(), merges))
        return self._show_members(
            key,
            csr_union(dendro.members, dendro.member_offsets, merges),
            "dendrogram_tree",
            pd.DataFrame({"merge": merges}),
        )

    # ------------------------------------------------------------------ members -> pixels
    def _show_members(
        self,
        key: str,
        members: np.ndarray,
        source: str,
        table: pd.DataFrame | None = None,
        jump: bool = True,
    ) -> np.ndarray:
        members = np.unique(np.asarray(members, dtype=np.int64))
        entry = self.state.get(key)
        cloud = entry.result.cloud
        image_layer = self.image_layer_of(key)
        heat = self._overlay_members(key, cloud, members)
        chosen = vd.member_images(cloud, members)[: vd.GALLERY_TILES]
        title = describe_selection(entry, source, table, members)
        self._fill_gallery(entry, image_layer, heat, chosen, title)
        if jump and len(chosen) and image_layer is not None:
            jump_to_member_image(self.viewer, image_layer, chosen)
        self._ring(key, "blob_points", ("point",), members, selected=True)
        self.state.set_selection(key, Selection(members, source, title, [int(i) for i in chosen]))
        return members

    def _overlay_members(self, key: str, cloud: PointCloud, members: np.ndarray) -> np.ndarray:
        """Show the members' receptive-field heat in the overlay; returns the whole heat."""
        overlay = self._layer(key, "overlay")
        stack = int(cloud.image_index.max()) + 1
        if overlay is not None:
            stack = max(stack, overlay.data.shape[0] if overlay.data.ndim == 3 else 1)
        heat = vd.overlay_for_members(cloud, members, stack, skip_whole=True)
        if overlay is not None and overlay in self.viewer.layers:
            shown = heat[: overlay.data.shape[0]] if overlay.data.ndim == 3 else heat[0]
            overlay.data = shown
            top = float(shown.max())
            overlay.contrast_limits = (0.0, top if top > 0 else 1.0)
            overlay.visible = True
        return heat

    def _fill_gallery(
        self,
        entry: ShownAnalysis,
        image_layer: Any,
        heat: np.ndarray,
        chosen: np.ndarray,
        title: str,
    ) -> None:
        """The gallery of ``entry``: images ``chosen`` of ``image_layer`` with their heat."""
        gallery = entry.layers.get("gallery")
        if gallery is None or gallery not in self.viewer.layers:
            return
        tiles = gallery_of_images(entry, image_layer, heat, chosen, title)
        draw_gallery(self.viewer, self.state, entry, tiles)

    def show_tiles(
        self,
        key: str,
        images: list[np.ndarray],
        heat: np.ndarray,
        tile_classes: np.ndarray,
        texts: list[str],
        title: str,
    ) -> None:
        """Put given images (with their receptive-field heat, ``(k, H, W)``) in ``key``'s gallery.

        E.g. a most-moved image beside its variant (``ui.variants``).
        """
        tiles = GalleryTiles(
            ImageLookup({k: np.asarray(image) for k, image in enumerate(images)}),
            np.asarray(heat, np.float32),
            np.arange(len(images), dtype=np.int64),
            np.asarray(tile_classes, np.int64),
            list(texts),
            title,
        )
        draw_gallery(self.viewer, self.state, self.state.get(key), tiles)

    def show_image(self, image_layer: Any, image: int) -> None:
        """Move the image viewer's stack to one image of a stack layer."""
        show_image(self.viewer, image_layer, image)

    def current_image(self, image_layer: Any) -> int | None:
        """Index of the image the viewer shows of a stack layer."""
        return current_image(self.viewer, image_layer)

    # ------------------------------------------------------------------ pixel -> topology
    def pixel_clicked(
        self, key: str, image_index: int, row: int, col: int
    ) -> dict[str, np.ndarray]:
        """Highlight what holds the points of ``image_index`` whose receptive field covers (row, col).

        Returns
        -------
        dict of str to ndarray
            ``"points"``: the covering cloud rows; ``"mapper_nodes"``: node ids;
            ``"diagram"``: ``(k, 2)`` rows ``(dim, bar)`` of every bar whose members
            hold a covering point; ``"barcode"``: those of the drawn bars;
            ``"flow_clusters"``: ``(k, 2)`` rows ``(stage, cluster)``; ``"flow"``:
            ``(k, 3)`` rows ``(stage, cluster, next_cluster)``; ``"blob_points"``:
            point ids; ``"blob_hulls"``: cluster ids; ``"dendrogram_tree"``: merge ids.
        """
        result = self._result(key)
        points = result.cloud.points_covering(int(image_index), int(row), int(col))
        found = self._ring_found(key, items_holding(result, points), selected=False)
        self.state.set_hits(key, found)
        self._show_pixel(self.state.get(key), int(image_index), int(row), int(col), points, found)
        for answer in PIXEL_ANSWERS:  # every pixel answers: the node under it (ui.topology_maps)
            answer(self.viewer, key, int(image_index), int(row), int(col))
        return found

    def ring_images(self, key: str, images: Iterable[int]) -> dict[str, np.ndarray]:
        """Ring (white, as selected) every item of ``key``'s views holding a point of ``images``.

        The link between a base and its variant: a selection in one rings the same
        images in the other (kept as ``key``'s ``linked``; no images: no link). Neither
        the selection, the overlay nor the gallery of ``key`` change. Returns what was
        ringed (keys as :meth:`pixel_clicked`).
        """
        result = self._result(key)
        wanted = np.unique(np.asarray(list(images), dtype=np.int64))
        points = np.flatnonzero(np.isin(result.cloud.image_index, wanted)).astype(np.int64)
        found = self._ring_found(key, items_holding(result, points), selected=True)
        self._ring(key, "blob_points", ("point",), points, selected=True)
        self.state.get(key).linked = found if len(wanted) else {}
        return found

    def _show_pixel(
        self,
        entry: ShownAnalysis,
        image: int,
        row: int,
        col: int,
        points: np.ndarray,
        found: dict[str, np.ndarray],
    ) -> None:
        """The gallery after a pixel click: the clicked image with the covering fields."""
        heat = vd.overlay_for_members(entry.result.cloud, points, image + 1)
        title = (
            f"pixel ({row}, {col}) of image {image}: {vd.plural(len(points), 'point')}, "
            f"{vd.plural(len(found['mapper_nodes']), 'node')}"
        )
        image_layer = self.image_layer_of(entry.key)
        self._fill_gallery(entry, image_layer, heat, np.array([image], np.int64), title)

    # ------------------------------------------------------------------ rings
    def _ring_found(
        self, key: str, found: dict[str, np.ndarray], *, selected: bool
    ) -> dict[str, np.ndarray]:
        """Ring what a pixel click (or :meth:`ring_images`) found in every drawn view;
        ``found`` with ``"barcode"``: the rows of the drawn bars."""
        barcode = None
        for view, columns, ids in _RINGED_BY:
            ringed = self._ring(key, view, columns, found[ids], selected=selected)
            if view == "barcode":
                barcode = ringed
        if barcode is None:
            barcode = drawn_bars(self._result(key).persistence, found["diagram"])
        return {**found, "barcode": barcode}

    def reapply_hits(self, entry: ShownAnalysis) -> None:
        """Ring the last pixel click's finds in views drawn after it (a panel picked later)."""
        if entry.hits:
            self._ring_found(entry.key, entry.hits, selected=False)
        if entry.linked:
            self._ring_found(entry.key, entry.linked, selected=True)
        if len(entry.selection.members):
            members = entry.selection.members
            self._ring(entry.key, "blob_points", ("point",), members, selected=True)

    def _ring(
        self, key: str, view: str, columns: tuple[str, ...], ids: np.ndarray, *, selected: bool
    ) -> np.ndarray | None:
        """Ring the rows of a view whose ids (one column, or rows of several) are in ``ids``."""
        layer = self._layer(key, view)
        if layer is None:
            return None
        if len(columns) == 1:
            return self.rings.ring_ids(layer, columns[0], ids, selected=selected)
        return self.rings.ring_pairs(layer, columns, ids, selected=selected)

    def clear_highlight(self, key: str) -> None:
        """Remove the rings of the last pixel click."""
        for view in SELECTABLE_VIEWS:
            layer = self._layer(key, view)
            if layer is not None:
                self.rings.set(layer, np.zeros(len(layer.features), bool))
        self.state.set_hits(key, {})

    def clear_selection(self, key: str | None = None) -> None:
        """Clear the selection, its rings, the overlay and gallery, and the pixel rings."""
        keys = [key] if key is not None else self.state.keys
        for k in keys:
            if k in self.state:
                self._clear_one(self.state.get(k))

    def _clear_one(self, entry: ShownAnalysis) -> None:
        for view in SELECTABLE_VIEWS:
            layer = entry.layers.get(view)
            if layer is None:
                continue
            self._quiet = True
            try:
                if len(layer.selected_data):
                    layer.selected_data = set()
            finally:
                self._quiet = False
            self.rings.set(layer, np.zeros(len(layer.features), bool), selected=True)
        self.clear_highlight(entry.key)
        entry.linked = {}
        overlay = entry.layers.get("overlay")
        if overlay is not None and overlay in self.viewer.layers:
            data = overlay.data
            if not isinstance(data, np.ndarray) or data.any():  # (a new array: a refresh)
                overlay.data = np.zeros_like(data)
        h, w = (int(v) for v in entry.result.cloud.image_shape)
        title = vd.gallery_title(entry.key, entry.variant_of)
        image_layer = self.image_layer_of(entry.key)
        gallery = entry.layers.get("gallery")
        empty = (title, h, w, image_layer is None, repr(gallery_spot(self.state, entry)))
        drawn = self._empty_galleries.get(gallery) if gallery is not None else None
        if gallery is None or drawn is None or drawn[0] != empty or drawn[1] is not gallery.data:
            heat = np.zeros((1, h, w), np.float32)
            self._fill_gallery(entry, image_layer, heat, np.zeros(0, np.int64), title)
            if gallery is not None and gallery in self.viewer.layers:
                self._empty_galleries[gallery] = (empty, gallery.data)  # (held: no id reuse)
        self.state.set_selection(entry.key, Selection())

    # ------------------------------------------------------------------ mouse and keys
    def _on_image_mouse(self, viewer: Any, event: Any) -> Generator[None, None, None]:
        """Image viewer drag callback: a click without drag on an analysed image's pixel."""
        if pixel_press(viewer, event):
            position = tuple(event.position)
            yield from on_click_without_drag(event, lambda: self.click_at(position))

    def _on_canvas_mouse(self, _model: Any, event: Any) -> Generator[None, None, None]:
        """Canvas drag callback: a click picks the view item under it; on nothing, clears."""
        if event.type != "mouse_press" or getattr(event, "button", 1) != 1:
            return
        position = tuple(event.position)
        shift = "Shift" in {str(getattr(m, "name", m)) for m in (event.modifiers or ())}
        yield from on_click_without_drag(event, lambda: self.pick_at(position, shift=shift))

    def _on_escape(self, _model: Any = None) -> None:
        self.clear_selection()

    def image_layer_at(self, position: Iterable[float]) -> Any:
        """The analysed image layer a click at a world position goes to, or None.

        The active layer if it is an analysed image layer holding the position, else
        the topmost visible analysed image layer holding it.
        """
        where = tuple(float(p) for p in position)
        analysed = {
            id(layer) for layer in map(self.image_layer_of, self.state.keys) if layer is not None
        }
        layers = list(self.viewer.layers)
        active = self.viewer.layers.selection.active  # through a viewer proxy: a layer proxy
        active = next((layer for layer in layers if layer == active), None)  # the layer itself
        order = ([active] if active is not None else []) + layers[::-1]
        for layer in order:
            if id(layer) in analysed and layer.visible and pixel_at(layer, where) is not None:
                return layer
        return None

    def click_at(self, position: Iterable[float]) -> dict[str, Any] | None:
        """A click at an image-viewer world position: pixel -> topology (None off the images)."""
        where = tuple(float(p) for p in position)
        hit_layer = self.image_layer_at(where)
        if hit_layer is None:
            return None
        hit = pixel_at(hit_layer, where)
        assert hit is not None
        keys = [key for key in self.state.keys if self.image_layer_of(key) is hit_layer]
        found = {key: self.pixel_clicked(key, *hit) for key in keys}
        return {
            "key": keys[-1],
            "pixel": hit,
            "found": found[keys[-1]],
            "keys": keys,
            "found_by_key": found,
        }

    def pick_at(self, position: Iterable[float], *, shift: bool = False) -> dict[str, Any] | None:
        """A click at a canvas world position: select the view item there, or clear on nothing."""
        where = tuple(float(p) for p in position)
        for layer in reversed(list(self.canvas.model.layers)):
            found = self.state.entry_of_layer(layer)
            if found is None or not layer.visible:
                continue
            entry, view = found
            if view not in SELECTABLE_VIEWS and view not in PICKED_VIEWS:
                continue
            value = layer.get_value(where, world=True)
            index = value[0] if isinstance(value, tuple) else value
            if index is None:
                continue
            index = int(index)
            if view in PICKED_VIEWS:
                self.item_picked.emit(entry, view, index)
            else:
                current = set(layer.selected_data)
                layer.selected_data = (current ^ {index}) if shift else {index}
            return {"key": entry.key, "view": view, "index": index}
        self.clear_selection()
        return None
