"""Links both ways between the views in the topology canvas and the images and their pixels.

One :class:`LinkController` per image viewer (:func:`links_for`) works on the
shown analyses of ``ui.state``:

- **selection -> pixels.** Selecting Mapper nodes or edges, diagram points,
  barcode bars, cluster-flow clusters or bands, blob points or hulls, or
  dendrogram branches (a click on the item in the topology canvas, or code
  setting a view layer's ``selected_data``) gathers their member points (rows of
  the shown layer's point cloud). The heat overlay in the image viewer then
  shows, for every member image, how many member receptive fields cover each
  pixel; the gallery tiles the member images with the most member points, each
  framed and labelled with its class, under a title naming the selection; the
  image stack jumps to the top member image unless the current one is a member;
  the selected items get a white ring.
- **pixel -> topology.** A click (press and release without dragging, in
  pan/zoom mode, so painting a Labels layer never fires it) on a pixel of an
  analysed image finds the points of that image whose receptive field covers the
  pixel, and rings in magenta every Mapper node, persistence bar, flow cluster and
  band, blob point and hull and dendrogram branch that holds one of them, in
  every analysis computed on that image layer; the gallery shows that image.
- **clearing.** Escape in the canvas, or a click on its empty space, clears the
  selection and the rings.

Every link is keyed by the ids in the layers' ``features`` (``node``, ``dim``/
``bar``, ``stage``/``cluster``, ``point``, ``merge``), never by row order.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..errors import EmptySelectionError, LayerError, TopoLensError
from . import view_data as vd
from .canvas import canvas_for
from .layer_update import update_layer
from .state import PerViewer, Selection, ShownAnalysis, state_for, viewer_ref

__all__ = ["PIXEL_ANSWERS", "SELECTABLE_VIEWS", "LinkController", "gallery_spot", "links_for"]

#: Views whose selection drives the links (and that a click selects from).
SELECTABLE_VIEWS = (
    "mapper_nodes",
    "mapper_edges",
    "diagram",
    "barcode",
    "flow",
    "flow_clusters",
    "blob_points",
    "blob_hulls",
    "dendrogram_tree",
)

_CONTROLLERS = PerViewer()

#: Called as ``answer(viewer, key, image, row, col)`` after a pixel click has ringed the
#: analysed points: ``ui.topology_maps`` selects the node of the position under the pixel
#: (a module above this one, so it registers itself here).
PIXEL_ANSWERS: list[Callable[..., Any]] = []


def links_for(viewer: Any) -> LinkController:
    """The link controller of ``viewer``, installed on first use."""
    return _CONTROLLERS.setdefault(viewer, LinkController)


def gallery_spot(state: Any, entry: ShownAnalysis) -> tuple[vd.ImageGeometry | None, int]:
    """Where an analysis's selection gallery lies: the geometry it is placed by, and its index.

    Analyses of one image layer put theirs side by side below it; a variant shown
    beside its base (``ui.variants``) puts its own right of the base's.
    """
    base = state.get(entry.variant_of) if entry.variant_of in state else None
    if base is not None and base.image_layer is not None:
        return vd.variant_gallery_geometry(vd.ImageGeometry.of_layer(base.image_layer)), 0
    if entry.image_layer is None:
        return None, 0
    same = [e for e in state if e.image_layer is entry.image_layer and e.variant_of is None]
    return vd.ImageGeometry.of_layer(entry.image_layer), same.index(entry) if entry in same else 0


def _csr_owner(offsets: np.ndarray) -> np.ndarray:
    offsets = np.asarray(offsets, dtype=np.int64)
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def _csr_items_containing(
    members: np.ndarray, offsets: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """Items (CSR rows) that hold at least one of ``points``."""
    hit = np.isin(np.asarray(members, dtype=np.int64), points)
    return np.unique(_csr_owner(offsets)[hit])


def _csr_union(members: np.ndarray, offsets: np.ndarray, items: Iterable[int]) -> np.ndarray:
    parts = [members[offsets[i] : offsets[i + 1]] for i in items]
    return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


class LinkController:
    """Selection -> overlay, gallery, image jump; pixel click -> views ringed.

    Attributes
    ----------
    last_members : ndarray of int64
        Cloud rows (of the shown layer) of the last selection.
    last_key, last_source : str or None
        Analysis key and view name of the last selection.
    last_highlight : dict of str to ndarray
        What the last pixel click ringed (see :meth:`pixel_clicked`).
    """

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer_ref(viewer)
        self.state = state_for(viewer)
        self.canvas = canvas_for(viewer)
        self._wired: weakref.WeakSet = weakref.WeakSet()
        # per view layer: its own edge colours/widths or borders, and the two ring masks
        self._base: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._rings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._quiet = False
        self.last_members = np.zeros(0, dtype=np.int64)
        self.last_key: str | None = None
        self.last_source: str | None = None
        self.last_highlight: dict[str, np.ndarray] = {}
        #: Per analysis key: what :meth:`ring_images` ringed (redrawn in views drawn later).
        self.linked: dict[str, dict[str, np.ndarray]] = {}
        #: Canvas views whose items a click hands to a callback ``(entry, row)`` instead of
        #: selecting them (the drift plot's points; set by ``ui.variants``).
        self.item_pickers: dict[str, Any] = {}
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

    def entry(self, key: str) -> ShownAnalysis:
        return self.state.get(key)

    def analysis(self, key: str) -> Any:
        return self.state.get(key).analysis

    def shown_layer(self, key: str) -> str:
        """The analysed network layer whose views are shown for ``key``."""
        entry = self.state.get(key)
        return entry.network_layer or entry.analysis.layers[-1]

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
        if type(layer).__name__.lower() == "shapes":
            self._base[layer] = (
                np.array(layer.edge_color, dtype=np.float64),
                np.array(layer.edge_width, dtype=np.float64),
            )
        else:
            self._base[layer] = (
                np.array(layer.border_color, dtype=np.float64),
                np.asarray(layer.border_width, dtype=np.float64),
            )
        self._rings[layer] = (
            np.zeros(len(layer.features), bool),
            np.zeros(len(layer.features), bool),
        )

    def _on_state_changed(self, key: str, what: str) -> None:
        if what == "network_layer" and key in self.state:
            entry = self.state.get(key)
            entry.hits = {}
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
        self._set_ring(layer, np.isin(np.arange(len(layer.features)), rows), selected=True)
        members = self.members_of(entry.key, view, table)
        self._show_members(entry.key, members, view, table)

    # ------------------------------------------------------------------ ids -> members
    def members_of(self, key: str, view: str, table: Any) -> np.ndarray:
        """Cloud rows behind the rows of a view's ``features`` table (by their ids)."""
        result = self.analysis(key)[self.shown_layer(key)]
        if len(table) == 0:
            return np.zeros(0, dtype=np.int64)
        if view == "mapper_nodes":
            graph = result.mapper
            return _csr_union(graph.members, graph.member_offsets, table["node"].astype(int))
        if view == "mapper_edges":
            graph = result.mapper
            parts = [
                np.intersect1d(graph.node_members(int(a)), graph.node_members(int(b)))
                for a, b in zip(table["source"], table["target"])
            ]
            return np.unique(np.concatenate(parts)).astype(np.int64)
        if view in ("diagram", "barcode"):
            parts = [
                self.bar_members(key, int(d), [int(b)]) for d, b in zip(table["dim"], table["bar"])
            ]
            return np.unique(np.concatenate(parts)).astype(np.int64)
        memberships = np.asarray(result.flow.memberships)
        if view == "flow_clusters":
            hit = np.zeros(memberships.shape[1], bool)
            for s, c in zip(table["stage"], table["cluster"]):
                hit |= memberships[int(s)] == int(c)
            return np.flatnonzero(hit).astype(np.int64)
        if view == "flow":
            hit = np.zeros(memberships.shape[1], bool)
            for s, a, b in zip(table["stage"], table["cluster"], table["next_cluster"]):
                hit |= (memberships[int(s)] == int(a)) & (memberships[int(s) + 1] == int(b))
            return np.flatnonzero(hit).astype(np.int64)
        if view == "blob_points":
            return np.unique(table["point"].to_numpy().astype(np.int64))
        if view == "blob_hulls":
            cluster = np.asarray(result.blobs.cluster)
            return np.flatnonzero(np.isin(cluster, table["cluster"].to_numpy())).astype(np.int64)
        if view == "dendrogram_tree":
            dendro = result.dendrogram
            return _csr_union(dendro.members, dendro.member_offsets, table["merge"].astype(int))
        raise LayerError(f"the view {view!r} has no members to link")

    def bar_members(self, key: str, dim: int, bars: Iterable[int]) -> np.ndarray:
        """Cloud rows of persistence bars: H0 the dying component, H1 a representative cycle."""
        pers = self.analysis(key)[self.shown_layer(key)].persistence
        if dim == 0:
            return _csr_union(pers.h0_members, pers.h0_member_offsets, bars)
        if dim == 1:
            return _csr_union(pers.h1_members, pers.h1_member_offsets, bars)
        raise TopoLensError(f"bars of H{dim} have no member points; select H0 or H1 bars")

    # ------------------------------------------------------------------ public selection API
    def _select_rows(self, key: str, view: str, mask_of: Any) -> Any:
        """Select, quietly, the rows of a view layer whose ids pass ``mask_of(features)``."""
        layer = self._layer(key, view)
        if layer is None:
            return None
        mask = np.asarray(mask_of(layer.features), dtype=bool)
        rows = np.flatnonzero(mask)
        self._set_ring(layer, mask, selected=True)
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
        graph = self.analysis(key)[self.shown_layer(key)].mapper
        if np.any((nodes < 0) | (nodes >= graph.n_nodes)):
            raise EmptySelectionError(
                f"node ids must lie in 0..{graph.n_nodes - 1}, got {nodes.tolist()}"
            )
        self._select_rows(key, "mapper_nodes", lambda f: np.isin(f["node"].to_numpy(), nodes))
        members = _csr_union(graph.members, graph.member_offsets, nodes)
        table = pd.DataFrame({"node": nodes})
        return self._show_members(key, members, "mapper_nodes", table, jump=jump)

    def select_bars(self, key: str, dim: int, bars: Iterable[int]) -> np.ndarray:
        """Select persistence bars of one dimension (``bar`` ids) and show their members."""
        bars = np.asarray(list(bars), dtype=np.int64)
        pers = self.analysis(key)[self.shown_layer(key)].persistence
        if not 0 <= dim < len(pers.diagrams) or np.any(
            (bars < 0) | (bars >= len(pers.diagrams[dim]))
        ):
            raise EmptySelectionError(f"no such bars of H{dim}: {bars.tolist()}")
        for view in ("diagram", "barcode"):
            self._select_rows(
                key,
                view,
                lambda f: (f["dim"].to_numpy() == dim) & np.isin(f["bar"].to_numpy(), bars),
            )
        table = pd.DataFrame({"dim": np.full(len(bars), dim), "bar": bars})
        return self._show_members(key, self.bar_members(key, dim, bars), "diagram", table)

    def select_clusters(self, key: str, stage: int, clusters: Iterable[int]) -> np.ndarray:
        """Select clusters of one cluster-flow stage and show their members."""
        clusters = np.asarray(list(clusters), dtype=np.int64)
        flow = self.analysis(key)[self.shown_layer(key)].flow
        memberships = np.asarray(flow.memberships)
        if not 0 <= stage < len(memberships):
            raise EmptySelectionError(f"stage must lie in 0..{len(memberships) - 1}, got {stage}")
        self._select_rows(
            key,
            "flow_clusters",
            lambda f: (f["stage"].to_numpy() == stage) & np.isin(f["cluster"].to_numpy(), clusters),
        )
        members = np.flatnonzero(np.isin(memberships[stage], clusters)).astype(np.int64)
        table = pd.DataFrame({"stage": np.full(len(clusters), stage), "cluster": clusters})
        return self._show_members(key, members, "flow_clusters", table)

    def select_merge(self, key: str, merge: int | Iterable[int]) -> np.ndarray:
        """Select dendrogram branches (``merge`` = linkage rows) and show their members."""
        merges = np.atleast_1d(
            np.asarray(list(merge) if not np.isscalar(merge) else [merge], dtype=np.int64)
        )
        dendro = self.analysis(key)[self.shown_layer(key)].dendrogram
        if np.any((merges < 0) | (merges >= len(dendro.linkage))):
            raise EmptySelectionError(
                f"merge ids must lie in 0..{len(dendro.linkage) - 1}, got {merges.tolist()}"
            )
        self._select_rows(key, "dendrogram_tree", lambda f: np.isin(f["merge"].to_numpy(), merges))
        return self._show_members(
            key,
            _csr_union(dendro.members, dendro.member_offsets, merges),
            "dendrogram_tree",
            pd.DataFrame({"merge": merges}),
        )

    # ------------------------------------------------------------------ members -> pixels
    def _show_members(
        self, key: str, members: np.ndarray, source: str, table: Any = None, jump: bool = True
    ) -> np.ndarray:
        members = np.unique(np.asarray(members, dtype=np.int64))
        self.last_members, self.last_key, self.last_source = members, key, source
        entry = self.state.get(key)
        cloud = entry.result.cloud
        image_layer = self.image_layer_of(key)
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
        chosen = vd.member_images(cloud, members)[: vd.GALLERY_TILES]
        title = describe_selection(entry, source, table, members)
        self._update_gallery(entry, image_layer, heat, chosen, title)
        if jump and len(chosen) and image_layer is not None:
            self._jump_to(image_layer, chosen)
        self._ring(key, "blob_points", "point", members, selected=True)
        self.state.set_selection(key, Selection(members, source, title, [int(i) for i in chosen]))
        return members

    def _update_gallery(
        self,
        entry: ShownAnalysis,
        image_layer: Any,
        heat: np.ndarray,
        chosen: np.ndarray,
        title: str,
    ) -> None:
        gallery = entry.layers.get("gallery")
        if gallery is None or gallery not in self.viewer.layers:
            return
        images = None
        if image_layer is not None:
            data = image_layer.data
            stacked = data.ndim == (4 if image_layer.rgb else 3)
            images = {int(i): np.asarray(data[int(i)] if stacked else data) for i in chosen}
        labels = entry.analysis.labels
        names = entry.analysis.class_names
        predictions = vd.analysis_predictions(entry.analysis)
        tile_classes = np.array(
            [int(labels[i]) if labels is not None and i < len(labels) else -1 for i in chosen],
            dtype=np.int64,
        )
        texts = []
        for k, image in enumerate(chosen):
            truth = vd.class_name(int(tile_classes[k]), names)
            text = f"#{int(image)} {truth}"
            if predictions is not None and image < len(predictions) and predictions[image] >= 0:
                guess = vd.class_name(int(predictions[image]), names)
                if guess != truth:  # the model got it wrong: say what it said
                    text += f" → {guess}"
            texts.append(text)
        self._draw_gallery(
            entry,
            _Lookup(images) if images is not None else None,
            heat,
            chosen,
            tile_classes,
            texts,
            title,
            image_layer,
        )

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
        entry = self.state.get(key)
        chosen = np.arange(len(images), dtype=np.int64)
        lookup = _Lookup({k: np.asarray(image) for k, image in enumerate(images)})
        self._draw_gallery(
            entry,
            lookup,
            np.asarray(heat, np.float32),
            chosen,
            np.asarray(tile_classes, np.int64),
            list(texts),
            title,
            self.image_layer_of(key),
        )

    def _draw_gallery(
        self,
        entry: ShownAnalysis,
        lookup: Any,
        heat: np.ndarray,
        chosen: np.ndarray,
        tile_classes: np.ndarray,
        tile_texts: list[str],
        title: str,
        image_layer: Any,
    ) -> None:
        gallery = entry.layers.get("gallery")
        if gallery is None or gallery not in self.viewer.layers:
            return
        mosaic = vd.gallery_mosaic(lookup, heat, chosen, tile_classes=tile_classes)
        geometry, index = gallery_spot(self.state, entry)
        if geometry is None:
            geometry = vd.ImageGeometry(*heat.shape[1:])
        placement = vd.gallery_placement(geometry, index, mosaic.shape)
        gallery.data = mosaic
        gallery.scale = placement["scale"]
        gallery.translate = placement["translate"]
        centres, texts = [], []
        pixel = placement["scale"][0]
        top = placement["translate"][0] - pixel / 2
        left = placement["translate"][1] - pixel / 2
        (_, _), (_, tile_width) = vd.tile_box(0, heat.shape[1:])
        pitch = (tile_width + vd.column_gap(heat.shape[2])) * pixel
        cut = vd.caption_fit(geometry.gallery_box(index)[1], pitch)[1]
        for k, text in enumerate(tile_texts):
            (y, x), (th, tw) = vd.tile_box(k, heat.shape[1:])
            centres.append(
                (
                    top + (y + th + vd.label_band(heat.shape[1]) / 2) * pixel,
                    left + (x + tw / 2) * pixel,
                )
            )
            texts.append(text if len(text) <= cut else text[: cut - 1] + "…")  # fits its tile
        gallery_text = entry.layers.get("gallery_text")
        if gallery_text is not None and gallery_text in self.viewer.layers:
            update_layer(
                gallery_text,
                vd.gallery_text_data(
                    entry.key, geometry, index, title, centres, texts, tile_pitch=pitch
                ),
            )

    def _jump_to(self, image_layer: Any, member_image_ids: np.ndarray) -> None:
        data_ndim = image_layer.data.ndim - (1 if image_layer.rgb else 0)
        if data_ndim < 3:
            return
        viewer = self.viewer
        axis = viewer.dims.ndim - data_ndim  # the stack axis in world coordinates
        step = self.current_image(image_layer)
        if step is not None and step in set(int(i) for i in member_image_ids):
            return
        world = float(image_layer.translate[0] + int(member_image_ids[0]) * image_layer.scale[0])
        viewer.dims.set_point(axis, world)

    def show_image(self, image_layer: Any, image: int) -> None:
        """Move the image viewer's stack to one image of a stack layer."""
        data_ndim = image_layer.data.ndim - (1 if image_layer.rgb else 0)
        if data_ndim < 3:
            return
        axis = self.viewer.dims.ndim - data_ndim
        world = float(image_layer.translate[0] + int(image) * image_layer.scale[0])
        self.viewer.dims.set_point(axis, world)

    def current_image(self, image_layer: Any) -> int | None:
        """Index of the image the viewer shows of a stack layer."""
        data_ndim = image_layer.data.ndim - (1 if image_layer.rgb else 0)
        if data_ndim < 3:
            return 0
        viewer = self.viewer
        axis = viewer.dims.ndim - data_ndim
        world = viewer.dims.point[axis]
        return round((world - image_layer.translate[0]) / image_layer.scale[0])

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
        result = self.analysis(key)[self.shown_layer(key)]
        cloud = result.cloud
        points = cloud.points_covering(int(image_index), int(row), int(col))
        found = _items_holding(result, points)
        barcode_bars = self._ring_found(key, found)
        found["barcode"] = (
            barcode_bars
            if barcode_bars is not None
            else _drawn_bars(result.persistence, found["diagram"])
        )
        self.last_highlight = found
        entry = self.state.get(key)
        entry.hits = found
        self._show_pixel(entry, int(image_index), int(row), int(col), points, found)
        for answer in PIXEL_ANSWERS:  # every pixel answers: the node under it (ui.topology_maps)
            answer(self.viewer, key, int(image_index), int(row), int(col))
        return found

    def ring_images(self, key: str, images: Iterable[int]) -> dict[str, np.ndarray]:
        """Ring (white, as selected) every item of ``key``'s views holding a point of ``images``.

        The link between a base and its variant: a selection in one rings the same
        images in the other. Neither the selection, the overlay nor the gallery of
        ``key`` change. Returns what was ringed (keys as :meth:`pixel_clicked`).
        """
        result = self.analysis(key)[self.shown_layer(key)]
        wanted = np.unique(np.asarray(list(images), dtype=np.int64))
        points = np.flatnonzero(np.isin(result.cloud.image_index, wanted)).astype(np.int64)
        found = _items_holding(result, points)
        barcode = self._ring_found(key, found, selected=True)
        found["barcode"] = (
            barcode if barcode is not None else _drawn_bars(result.persistence, found["diagram"])
        )
        self._ring(key, "blob_points", "point", points, selected=True)
        self.linked[key] = found
        return found

    def _show_pixel(
        self, entry: ShownAnalysis, image: int, row: int, col: int, points: np.ndarray, found: dict
    ) -> None:
        """The gallery after a pixel click: the clicked image with the covering fields."""
        cloud = entry.result.cloud
        h, w = (int(v) for v in cloud.image_shape)
        heat = vd.overlay_for_members(cloud, points, image + 1)
        title = (
            f"pixel ({row}, {col}) of image {image}: {vd.plural(len(points), 'point')}, "
            f"{vd.plural(len(found['mapper_nodes']), 'node')}"
        )
        del h, w
        self._update_gallery(
            entry, self.image_layer_of(entry.key), heat, np.array([image], np.int64), title
        )

    # ------------------------------------------------------------------ rings
    def _ring_found(
        self, key: str, found: dict[str, np.ndarray], selected: bool = False
    ) -> np.ndarray | None:
        """Ring what a pixel click (or :meth:`ring_images`) found in every drawn view;
        returns the barcode's rows."""
        on = selected
        self._ring(key, "mapper_nodes", "node", found["mapper_nodes"], selected=on)
        self._ring_pairs(key, "diagram", ("dim", "bar"), found["diagram"], selected=on)
        barcode = self._ring_pairs(key, "barcode", ("dim", "bar"), found["diagram"], selected=on)
        pairs = found["flow_clusters"]
        self._ring_pairs(key, "flow_clusters", ("stage", "cluster"), pairs, selected=on)
        bands = found["flow"]
        self._ring_pairs(key, "flow", ("stage", "cluster", "next_cluster"), bands, selected=on)
        self._ring(key, "blob_points", "point", found["blob_points"], selected=on)
        self._ring(key, "blob_hulls", "cluster", found["blob_hulls"], selected=on)
        self._ring(key, "dendrogram_tree", "merge", found["dendrogram_tree"], selected=on)
        return barcode

    def reapply_hits(self, entry: ShownAnalysis) -> None:
        """Ring the last pixel click's finds in views drawn after it (a panel picked later)."""
        if entry.hits:
            self._ring_found(entry.key, entry.hits)
        if self.linked.get(entry.key):
            self._ring_found(entry.key, self.linked[entry.key], selected=True)
        if len(entry.selection.members):
            self._ring(entry.key, "blob_points", "point", entry.selection.members, selected=True)

    def _ring(
        self, key: str, view: str, column: str, ids: np.ndarray, selected: bool = False
    ) -> np.ndarray | None:
        layer = self._layer(key, view)
        if layer is None:
            return None
        mask = np.isin(layer.features[column].to_numpy(), np.asarray(ids))
        self._set_ring(layer, mask, selected=selected)
        return layer.features[column].to_numpy()[mask]

    def _ring_pairs(
        self,
        key: str,
        view: str,
        columns: tuple[str, ...],
        ids: np.ndarray,
        selected: bool = False,
    ) -> np.ndarray | None:
        layer = self._layer(key, view)
        if layer is None:
            return None
        table = layer.features[list(columns)].to_numpy().astype(np.int64)
        wanted = {tuple(int(v) for v in row) for row in np.asarray(ids).reshape(-1, len(columns))}
        mask = np.array([tuple(row) in wanted for row in table.tolist()], dtype=bool)
        self._set_ring(layer, mask, selected=selected)
        return table[mask]

    def _set_ring(self, layer: Any, mask: np.ndarray, *, selected: bool = False) -> None:
        """Record one ring mask of a layer (selection or pixel hits) and redraw its rings."""
        if layer not in self._base:
            self.refresh(layer)
        n = len(layer.features)
        mask = np.asarray(mask, dtype=bool)
        if len(mask) != n:
            return
        chosen, hits = self._rings.get(layer, (np.zeros(n, bool), np.zeros(n, bool)))
        if len(chosen) != n:
            chosen, hits = np.zeros(n, bool), np.zeros(n, bool)
        chosen, hits = (mask, hits) if selected else (chosen, mask)
        self._rings[layer] = (chosen, hits)
        _draw_rings(layer, self._base[layer], chosen, hits)

    def ring_masks(self, layer: Any) -> tuple[np.ndarray, np.ndarray]:
        """(selected, holds the clicked pixel) masks over a view layer's rows."""
        n = len(layer.features)
        return self._rings.get(layer, (np.zeros(n, bool), np.zeros(n, bool)))

    def clear_highlight(self, key: str) -> None:
        """Remove the rings of the last pixel click."""
        for view in SELECTABLE_VIEWS:
            layer = self._layer(key, view)
            if layer is not None:
                self._set_ring(layer, np.zeros(len(layer.features), bool))
        self.state.get(key).hits = {}
        self.last_highlight = {}

    def clear_selection(self, key: str | None = None) -> None:
        """Clear the selection, its rings, the overlay and gallery, and the pixel rings."""
        keys = [key] if key is not None else self.state.keys
        for k in keys:
            if k not in self.state:
                continue
            entry = self.state.get(k)
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
                self._set_ring(layer, np.zeros(len(layer.features), bool), selected=True)
            self.clear_highlight(k)
            self.linked.pop(k, None)
            overlay = entry.layers.get("overlay")
            if overlay is not None and overlay in self.viewer.layers:
                overlay.data = np.zeros_like(overlay.data)
            image_layer = self.image_layer_of(k)
            shape = vd.ImageGeometry.of_layer(image_layer) if image_layer is not None else None
            cloud = entry.result.cloud
            h, w = (int(v) for v in cloud.image_shape)
            heat = np.zeros((1, h, w), np.float32)
            self._update_gallery(
                entry,
                image_layer,
                heat,
                np.zeros(0, np.int64),
                vd.gallery_title(k, entry.variant_of),
            )
            del shape
            self.state.set_selection(k, Selection())
        self.last_members = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ mouse and keys
    def _on_image_mouse(self, viewer: Any, event: Any):
        """Image viewer drag callback: a click without drag on an analysed image's pixel."""
        if pixel_press(viewer, event):
            position = tuple(event.position)
            yield from on_click_without_drag(event, lambda: self.click_at(position))

    def _on_canvas_mouse(self, _model: Any, event: Any):
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
        position = tuple(float(p) for p in position)
        analysed = {
            id(layer) for layer in map(self.image_layer_of, self.state.keys) if layer is not None
        }
        layers = list(self.viewer.layers)
        active = self.viewer.layers.selection.active  # through a viewer proxy: a layer proxy
        active = next((layer for layer in layers if layer == active), None)  # the layer itself
        order = ([active] if active is not None else []) + layers[::-1]
        for layer in order:
            if id(layer) in analysed and layer.visible and _pixel_at(layer, position) is not None:
                return layer
        return None

    def click_at(self, position: Iterable[float]) -> dict[str, Any] | None:
        """A click at an image-viewer world position: pixel -> topology (None off the images)."""
        position = tuple(float(p) for p in position)
        hit_layer = self.image_layer_at(position)
        if hit_layer is None:
            return None
        hit = _pixel_at(hit_layer, position)
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
        position = tuple(float(p) for p in position)
        for layer in reversed(list(self.canvas.model.layers)):
            found = self.state.entry_of_layer(layer)
            if found is None or not layer.visible:
                continue
            entry, view = found
            if view not in SELECTABLE_VIEWS and view not in self.item_pickers:
                continue
            value = layer.get_value(position, world=True)
            index = value[0] if isinstance(value, tuple) else value
            if index is None:
                continue
            if view in self.item_pickers:
                self.item_pickers[view](entry, int(index))
                return {"key": entry.key, "view": view, "index": int(index)}
            current = set(layer.selected_data)
            index = int(index)
            layer.selected_data = (current ^ {index}) if shift else {index}
            return {"key": entry.key, "view": view, "index": index}
        self.clear_selection()
        return None


def _items_holding(result: Any, points: np.ndarray) -> dict[str, np.ndarray]:
    """Every view item of a layer result holding one of ``points`` (cloud rows)."""
    points = np.asarray(points, dtype=np.int64)
    graph, pers, flow, dendro = (
        result.mapper,
        result.persistence,
        result.flow,
        result.dendrogram,
    )
    h0 = _csr_items_containing(pers.h0_members, pers.h0_member_offsets, points)
    bars = [np.column_stack([np.zeros(len(h0), np.int64), h0])]
    if len(pers.diagrams) > 1:
        h1 = _csr_items_containing(pers.h1_members, pers.h1_member_offsets, points)
        bars.append(np.column_stack([np.ones(len(h1), np.int64), h1]))
    diagram_ids = np.vstack(bars).astype(np.int64)
    memberships = np.asarray(flow.memberships)
    stage_clusters = [
        (s, int(c)) for s in range(len(memberships)) for c in np.unique(memberships[s, points])
    ]
    bands = [
        (s, int(a), int(b))
        for s in range(len(memberships) - 1)
        for a, b in np.unique(
            np.column_stack([memberships[s, points], memberships[s + 1, points]]), axis=0
        ).reshape(-1, 2)
    ]
    found: dict[str, np.ndarray] = {
        "points": points.astype(np.int64),
        "mapper_nodes": _csr_items_containing(graph.members, graph.member_offsets, points).astype(
            np.int64
        ),
        "diagram": diagram_ids,
        "flow_clusters": np.array(stage_clusters, dtype=np.int64).reshape(-1, 2),
        "flow": np.array(bands, dtype=np.int64).reshape(-1, 3),
        "blob_points": points.astype(np.int64),
        "blob_hulls": np.unique(np.asarray(result.blobs.cluster)[points]).astype(np.int64),
        "dendrogram_tree": _csr_items_containing(
            dendro.members, dendro.member_offsets, points
        ).astype(np.int64),
    }
    found["blob_hulls"] = found["blob_hulls"][
        np.isin(found["blob_hulls"], result.blobs.hull_clusters)
    ]
    return found


def pixel_press(viewer: Any, event: Any) -> bool:
    """A left press in the image viewer that may be a pixel link (pan/zoom, not painting)."""
    if event.type != "mouse_press" or getattr(event, "button", 1) != 1:
        return False
    active = viewer.layers.selection.active
    # painting, drawing or picking in a layer: not a pixel link
    return active is None or getattr(active, "mode", "pan_zoom") == "pan_zoom"


def on_click_without_drag(event: Any, on_click: Callable[[], Any]):
    """The rest of a napari drag callback after its press: ``on_click()`` on a release
    without a move in between (a drag pans the camera instead)."""
    yield
    dragged = False
    while event.type == "mouse_move":
        dragged = True
        yield
    if not dragged:
        on_click()


def _drawn_bars(persistence: Any, diagram_ids: np.ndarray) -> np.ndarray:
    """The (dim, bar) rows of ``diagram_ids`` that the barcode draws (its most persistent)."""
    drawn = vd.geo.barcode_bars(persistence, vd.MAX_BARS)[["dim", "bar"]].to_numpy()
    wanted = {tuple(int(v) for v in row) for row in np.asarray(diagram_ids).reshape(-1, 2)}
    keep = [tuple(int(v) for v in row) in wanted for row in drawn]
    return drawn[np.asarray(keep, dtype=bool)].astype(np.int64).reshape(-1, 2)


def describe_selection(entry: ShownAnalysis, view: str, table: Any, members: np.ndarray) -> str:
    """The gallery title: what is selected, how many members, dominant class and purity."""
    names = entry.analysis.class_names
    labels = np.asarray(entry.result.point_labels, dtype=np.int64)[np.asarray(members, np.int64)]
    known = labels[labels >= 0]
    if known.size:
        counts = np.bincount(known)
        dominant = vd.class_name(int(counts.argmax()), names)
        tail = f", dominant {dominant}, purity {counts.max() / known.size:.2f}"
    else:
        tail = ""
    n = len(members)
    what = {"pixel": "pixel"}.get(view, view.replace("_", " "))
    if table is not None and len(table):
        ids = {
            "mapper_nodes": lambda t: "node " + ", ".join(str(int(v)) for v in t["node"][:4]),
            "mapper_edges": lambda t: (
                "edge "
                + ", ".join(f"{int(a)}–{int(b)}" for a, b in zip(t["source"][:3], t["target"][:3]))
            ),
            "diagram": lambda t: ", ".join(
                f"H{int(d)} bar {int(b)}" for d, b in zip(t["dim"][:3], t["bar"][:3])
            ),
            "barcode": lambda t: ", ".join(
                f"H{int(d)} bar {int(b)}" for d, b in zip(t["dim"][:3], t["bar"][:3])
            ),
            "flow_clusters": lambda t: ", ".join(
                f"stage {int(s)} cluster {int(c)}" for s, c in zip(t["stage"][:3], t["cluster"][:3])
            ),
            "flow": lambda t: ", ".join(
                f"stage {int(s)} {int(a)}→{int(b)}"
                for s, a, b in zip(t["stage"][:3], t["cluster"][:3], t["next_cluster"][:3])
            ),
            "blob_points": lambda t: "point " + ", ".join(str(int(v)) for v in t["point"][:4]),
            "blob_hulls": lambda t: "cluster " + ", ".join(str(int(v)) for v in t["cluster"][:4]),
            "dendrogram_tree": lambda t: "branch " + ", ".join(str(int(v)) for v in t["merge"][:4]),
        }.get(view)
        if ids is not None:
            what = ids(table) + ("…" if len(table) > 4 else "")
    return f"{what}: {n} member{'s' if n != 1 else ''}{tail}"


class _Lookup:
    """Read-only ``images[i]`` over a dict (only the chosen images are read)."""

    def __init__(self, images: dict[int, np.ndarray]) -> None:
        self._images = images

    def __len__(self) -> int:
        return max(self._images, default=-1) + 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self._images[int(i)]


def _pixel_at(image_layer: Any, position: tuple[float, ...]) -> tuple[int, int, int] | None:
    """(image, row, col) of a world position on a stack layer, or None outside it."""
    data = np.asarray(image_layer.world_to_data(position), dtype=np.float64)
    shape = image_layer.data.shape[:-1] if image_layer.rgb else image_layer.data.shape
    row, col = int(np.floor(data[-2] + 0.5)), int(np.floor(data[-1] + 0.5))
    if not (0 <= row < shape[-2] and 0 <= col < shape[-1]):
        return None
    image = round(data[-3]) if len(shape) >= 3 else 0
    if len(shape) >= 3 and not 0 <= image < shape[-3]:
        return None
    return image, row, col


def _draw_rings(
    layer: Any, base: tuple[np.ndarray, np.ndarray], chosen: np.ndarray, hits: np.ndarray
) -> None:
    """Selected rows get a white ring, rows holding the clicked pixel a magenta one."""
    if len(chosen) == 0:
        return
    colors, widths = np.array(base[0], dtype=np.float64), np.array(base[1], dtype=np.float64)
    if type(layer).__name__.lower() == "points":
        if colors.ndim == 1 or len(colors) != len(chosen):
            colors = np.tile(colors.reshape(-1, 4)[:1], (len(chosen), 1))
        if widths.ndim == 0 or len(widths) != len(chosen):
            widths = np.full(len(chosen), float(np.ravel(widths)[0]) if widths.size else 0.08)
        colors[hits] = vd.HIT_RGBA
        colors[chosen] = vd.SELECTED_RGBA
        widths = np.where(chosen | hits, 0.3, widths)
        layer.border_color = colors
        layer.border_width = widths
    else:
        if len(colors) != len(chosen):
            return
        ring = chosen | hits
        base_width = float(np.max(widths)) if len(widths) else 0.004
        colors[hits] = vd.HIT_RGBA
        colors[chosen] = vd.SELECTED_RGBA
        widths = np.where(ring, np.maximum(widths * 1.8, max(base_width, 0.004)), widths)
        layer.edge_color = colors
        layer.edge_width = list(widths)
    features = layer.features.copy()
    features["selected"] = chosen
    features["highlighted"] = hits
    layer.features = features
