"""Links both ways between the topology layers and the images and their pixels.

One :class:`LinkController` per viewer (:func:`links_for`) watches the plugin's
layers (those with ``metadata["topolens"]``, see ``ui.views``):

- **selection -> pixels.** Selecting Mapper nodes or edges, diagram points,
  barcode bars, cluster-flow clusters or bands, blob points or hulls, or
  dendrogram branches (the layers' ``selected_data`` events, whether the user
  selected in napari's select mode, clicked the item in pan/zoom mode, or code set
  ``selected_data``) gathers their member points (rows of the shown layer's point
  cloud). The heat overlay then shows, for every member image, how many member
  receptive fields cover each pixel (pooled layers: the whole image); the gallery
  tiles the member images with the most member points; the image stack jumps to
  the top member image unless the current one is a member already; and the
  members are ringed in the blob graph.
- **pixel -> topology.** A click (press and release without dragging) on a pixel
  of the input stack finds the points of that image whose receptive field covers
  the pixel, and rings, in the shown layer's views, every Mapper node, persistence
  bar, flow cluster and band, blob point and hull and dendrogram branch that holds
  one of them. The click goes to the active layer if it is an analysed image
  layer, else to the topmost visible analysed image layer under the pointer; when
  several analyses were computed on that image layer, all of them are ringed.

Every link is keyed by the ids in the layers' ``features`` (``node``, ``dim``/
``bar``, ``stage``/``cluster``, ``point``, ``merge``), never by row order, so
thresholding edges or re-sorting a table cannot break it.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import EmptySelectionError, LayerError, TopoLensError
from .views import (
    GALLERY_TILES,
    Geometry,
    find_layers,
    gallery_mosaic,
    gallery_placement,
    mapper_layout,
    member_images,
    overlay_for_members,
)

__all__ = ["SELECTABLE_VIEWS", "LinkController", "links_for"]

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
_HIGHLIGHT = (1.0, 0.92, 0.0, 1.0)

_CONTROLLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def links_for(viewer: Any) -> LinkController:
    """The link controller of ``viewer``, installed on first use."""
    controller = _CONTROLLERS.get(viewer)
    if controller is None:
        controller = LinkController(viewer)
        _CONTROLLERS[viewer] = controller
    return controller


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
    """Selection -> overlay, gallery, image jump; pixel click -> views highlighted.

    Attributes
    ----------
    last_members : ndarray of int64
        Cloud rows (of the shown layer) of the last selection.
    last_key, last_source : str or None
        Analysis key and view name of the last selection.
    last_highlight : dict of str to ndarray
        What the last pixel click highlighted (see :meth:`pixel_clicked`).
    """

    def __init__(self, viewer: Any) -> None:
        self._viewer = weakref.ref(viewer)
        self._analyses: dict[str, Any] = {}
        self._image_layers: dict[str, Any] = {}
        self._bands: dict[str, float | None] = {}
        self._shown: dict[str, str] = {}
        self._layouts: dict[tuple[str, str], np.ndarray] = {}
        self._wired: weakref.WeakSet = weakref.WeakSet()
        self._quiet = False
        self.last_members = np.zeros(0, dtype=np.int64)
        self.last_key: str | None = None
        self.last_source: str | None = None
        self.last_highlight: dict[str, np.ndarray] = {}
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.mouse_drag_callbacks.append(self._on_mouse)
        for layer in list(viewer.layers):
            self.adopt(layer)

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
        return list(self._analyses)

    def key_for(self, analysis: Any, base: str | None = None) -> str:
        """The key of ``analysis`` here: its existing one, or a new short unique one."""
        for key, known in self._analyses.items():
            if known is analysis:
                return key
        if base is None:
            provenance = getattr(analysis, "provenance", None) or {}
            base = str(
                provenance.get("sample")
                or provenance.get("name")
                or provenance.get("image_layer")
                or "analysis"
            )
        taken = set(self._analyses) | {
            layer.metadata["topolens"].get("key") for layer in find_layers(self.viewer)
        }
        key, n = base, 1
        while key in taken:
            n += 1
            key = f"{base} {n}"
        self._analyses[key] = analysis
        return key

    def register(
        self, key: str, analysis: Any, image_layer: Any, band_top: float | None = None
    ) -> None:
        """Tie ``key`` to its analysis, the Image layer it was computed on and its band.

        ``band_top``: world row where the analysis's grid and gallery start (see
        ``views.Geometry``); None: level with the image layer.
        """
        self._analyses[key] = analysis
        self._image_layers[key] = image_layer
        self._bands[key] = band_top

    def band_of(self, key: str) -> float | None:
        """World row where the band of analysis ``key`` starts (None: level with its images)."""
        return self._bands.get(key)

    def image_layer_of(self, key: str) -> Any:
        layer = self._image_layers.get(key)
        if layer is not None and layer in self.viewer.layers:
            return layer
        return None

    def analysis(self, key: str) -> Any:
        try:
            return self._analyses[key]
        except KeyError:
            raise TopoLensError(
                f"no analysis {key!r} is shown in this viewer; shown: {', '.join(self._analyses) or 'none'}"
            ) from None

    def shown_layer(self, key: str) -> str:
        """The analysed network layer whose views are shown for ``key``."""
        if key in self._shown:
            return self._shown[key]
        return self.analysis(key).layers[-1]

    def show_layer(self, key: str, layer: str) -> None:
        self._shown[key] = layer

    def layout_for(self, key: str, layer: str) -> np.ndarray:
        """The Mapper node layout of one layer, computed once."""
        cached = self._layouts.get((key, layer))
        if cached is None:
            analysis = self.analysis(key)
            cached = mapper_layout(analysis[layer].mapper, seed=int(analysis.config.seed))
            self._layouts[(key, layer)] = cached
        return cached

    def set_layout(self, key: str, layer: str, layout: np.ndarray) -> None:
        """Use a Mapper node layout computed elsewhere (e.g. in the analysis worker)."""
        self._layouts[(key, layer)] = np.asarray(layout, dtype=np.float64)

    def _layer(self, key: str, view: str) -> Any:
        found = [
            layer
            for layer in find_layers(self.viewer, key, view)
            if layer.metadata["topolens"].get("layer", "") in ("", self.shown_layer(key))
        ]
        return found[-1] if found else None

    # ------------------------------------------------------------------ wiring
    def _on_inserted(self, event: Any) -> None:
        self.adopt(event.value)

    def adopt(self, layer: Any) -> None:
        """Wire a plugin layer: register its analysis and connect its selection."""
        meta = layer.metadata.get("topolens") if isinstance(layer.metadata, dict) else None
        if not isinstance(meta, dict) or "key" not in meta or layer in self._wired:
            return
        key, view = meta["key"], meta.get("view")
        analysis = meta.get("analysis")
        if analysis is not None and key not in self._analyses:
            self._analyses[key] = analysis
        if view == "images" and self.image_layer_of(key) is None:
            self._image_layers[key] = layer
        if meta.get("layer"):
            self._shown[key] = meta["layer"]
            if view == "mapper_nodes" and "layout" in meta:
                self._layouts.setdefault((key, meta["layer"]), np.asarray(meta["layout"]))
        if view in SELECTABLE_VIEWS:
            self._record_base(layer)
            layer.selected_data.events.items_changed.connect(
                functools.partial(self._on_selection, layer)
            )
        self._wired.add(layer)

    def refresh(self, layer: Any) -> None:
        """Re-read a wired layer whose data and metadata were replaced in place."""
        if layer not in self._wired:
            self.adopt(layer)
            return
        meta = layer.metadata["topolens"]
        if meta.get("layer") and meta.get("view") == "mapper_nodes" and "layout" in meta:
            self._layouts.setdefault((meta["key"], meta["layer"]), np.asarray(meta["layout"]))
        if meta.get("view") in SELECTABLE_VIEWS:
            self._record_base(layer)

    @staticmethod
    def _record_base(layer: Any) -> None:
        """Remember a Shapes layer's own edge colours and widths (rings are drawn over them)."""
        if type(layer).__name__.lower() == "shapes":  # public API only (no _type_string)
            meta = layer.metadata["topolens"]
            meta["base_edge_color"] = np.array(layer.edge_color, dtype=np.float64)
            meta["base_edge_width"] = np.array(layer.edge_width, dtype=np.float64)

    def _on_selection(self, layer: Any, *_: Any) -> None:
        if self._quiet:
            return
        meta = layer.metadata["topolens"]
        rows = sorted(int(i) for i in layer.selected_data if 0 <= int(i) < len(layer.features))
        table = layer.features.iloc[rows]
        _apply_ring(layer, np.isin(np.arange(len(layer.features)), rows))
        members = self.members_of(meta["key"], meta["view"], table)
        self._show_members(meta["key"], members, meta["view"])

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
        _apply_ring(layer, mask)
        self._quiet = True
        try:
            layer.selected_data = set(int(r) for r in rows)
        finally:
            self._quiet = False
        return layer

    def select_nodes(self, key: str, node_indices: Iterable[int]) -> np.ndarray:
        """Select Mapper nodes (``node`` ids) and show their members; returns the members."""
        nodes = np.asarray(list(node_indices), dtype=np.int64)
        graph = self.analysis(key)[self.shown_layer(key)].mapper
        if np.any((nodes < 0) | (nodes >= graph.n_nodes)):
            raise EmptySelectionError(
                f"node ids must lie in 0..{graph.n_nodes - 1}, got {nodes.tolist()}"
            )
        self._select_rows(key, "mapper_nodes", lambda f: np.isin(f["node"].to_numpy(), nodes))
        members = _csr_union(graph.members, graph.member_offsets, nodes)
        return self._show_members(key, members, "mapper_nodes")

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
        return self._show_members(key, self.bar_members(key, dim, bars), "diagram")

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
        return self._show_members(key, members, "flow_clusters")

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
            key, _csr_union(dendro.members, dendro.member_offsets, merges), "dendrogram_tree"
        )

    # ------------------------------------------------------------------ members -> pixels
    def _show_members(self, key: str, members: np.ndarray, source: str) -> np.ndarray:
        members = np.unique(np.asarray(members, dtype=np.int64))
        self.last_members, self.last_key, self.last_source = members, key, source
        cloud = self.analysis(key)[self.shown_layer(key)].cloud
        image_layer = self.image_layer_of(key)
        overlay = self._layer(key, "overlay")
        stack = int(cloud.image_index.max()) + 1
        if overlay is not None:
            stack = max(stack, overlay.data.shape[0] if overlay.data.ndim == 3 else 1)
        heat = overlay_for_members(cloud, members, stack)
        if overlay is not None:
            shown = heat[: overlay.data.shape[0]] if overlay.data.ndim == 3 else heat[0]
            overlay.data = shown
            top = float(shown.max())
            overlay.contrast_limits = (0.0, top if top > 0 else 1.0)
            overlay.visible = True
        chosen = member_images(cloud, members)
        self._update_gallery(key, image_layer, heat, chosen[:GALLERY_TILES])
        if len(chosen) and image_layer is not None:
            self._jump_to(image_layer, chosen)
        self._ring(key, "blob_points", "point", members)
        return members

    def _update_gallery(
        self, key: str, image_layer: Any, heat: np.ndarray, chosen: np.ndarray
    ) -> None:
        gallery = self._layer(key, "gallery")
        if gallery is None:
            return
        images = None
        if image_layer is not None:
            data = image_layer.data
            stacked = data.ndim == (4 if image_layer.rgb else 3)
            images = {int(i): np.asarray(data[int(i)] if stacked else data) for i in chosen}
        mosaic = gallery_mosaic(_Lookup(images) if images is not None else None, heat, chosen)
        geometry = (
            Geometry.of_layer(image_layer, self.band_of(key))
            if image_layer is not None
            else Geometry(*heat.shape[1:], band_top=self.band_of(key))
        )
        placement = gallery_placement(geometry, mosaic.shape)
        gallery.data = mosaic
        gallery.scale = placement["scale"]
        gallery.translate = placement["translate"]
        gallery.metadata["topolens"]["tiles"] = [int(i) for i in chosen]

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
        stage_clusters = sorted(
            {(s, int(c)) for s in range(len(memberships)) for c in memberships[s, points]}
        )
        bands = sorted(
            {
                (s, int(memberships[s, p]), int(memberships[s + 1, p]))
                for s in range(len(memberships) - 1)
                for p in points
            }
        )
        found: dict[str, np.ndarray] = {
            "points": points.astype(np.int64),
            "mapper_nodes": _csr_items_containing(
                graph.members, graph.member_offsets, points
            ).astype(np.int64),
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
        self._ring(key, "mapper_nodes", "node", found["mapper_nodes"])
        self._ring_pairs(key, "diagram", ("dim", "bar"), diagram_ids)
        barcode = self._ring_pairs(key, "barcode", ("dim", "bar"), diagram_ids)
        found["barcode"] = barcode if barcode is not None else np.zeros((0, 2), np.int64)
        self._ring_pairs(key, "flow_clusters", ("stage", "cluster"), found["flow_clusters"])
        self._ring_pairs(key, "flow", ("stage", "cluster", "next_cluster"), found["flow"])
        self._ring(key, "blob_points", "point", found["blob_points"])
        self._ring(key, "blob_hulls", "cluster", found["blob_hulls"])
        self._ring(key, "dendrogram_tree", "merge", found["dendrogram_tree"])
        self.last_highlight = found
        return found

    def _ring(self, key: str, view: str, column: str, ids: np.ndarray) -> np.ndarray | None:
        layer = self._layer(key, view)
        if layer is None:
            return None
        mask = np.isin(layer.features[column].to_numpy(), np.asarray(ids))
        _apply_ring(layer, mask)
        return layer.features[column].to_numpy()[mask]

    def _ring_pairs(
        self, key: str, view: str, columns: tuple[str, ...], ids: np.ndarray
    ) -> np.ndarray | None:
        layer = self._layer(key, view)
        if layer is None:
            return None
        table = layer.features[list(columns)].to_numpy().astype(np.int64)
        wanted = {tuple(int(v) for v in row) for row in np.asarray(ids).reshape(-1, len(columns))}
        mask = np.array([tuple(row) in wanted for row in table.tolist()], dtype=bool)
        _apply_ring(layer, mask)
        return table[mask]

    def clear_highlight(self, key: str) -> None:
        """Remove every ring drawn by a pixel click or selection."""
        for view in SELECTABLE_VIEWS:
            layer = self._layer(key, view)
            if layer is not None and "highlighted" in layer.features:
                _apply_ring(layer, np.zeros(len(layer.features), bool))
        self.last_highlight = {}

    # ------------------------------------------------------------------ mouse
    def _on_mouse(self, viewer: Any, event: Any):
        """Viewer drag callback: a click without drag is a pixel click or a view pick."""
        if event.type != "mouse_press" or getattr(event, "button", 1) != 1:
            return
        position = tuple(event.position)
        shift = "Shift" in {str(getattr(m, "name", m)) for m in (event.modifiers or ())}
        yield
        dragged = False
        while event.type == "mouse_move":
            dragged = True
            yield
        if not dragged:
            self.click_at(position, shift=shift)

    def image_layer_at(self, position: Iterable[float]) -> Any:
        """The analysed image layer a click at a world position goes to, or None.

        The active layer if it is an analysed image layer holding the position, else
        the topmost (last in ``viewer.layers``) visible analysed image layer holding
        it: the one the user sees there.
        """
        position = tuple(float(p) for p in position)
        analysed = {
            id(layer) for layer in map(self.image_layer_of, self._analyses) if layer is not None
        }
        layers = list(self.viewer.layers)
        active = self.viewer.layers.selection.active
        order = ([active] if active is not None and active in layers else []) + layers[::-1]
        for layer in order:
            if id(layer) in analysed and layer.visible and _pixel_at(layer, position) is not None:
                return layer
        return None

    def click_at(self, position: Iterable[float], *, shift: bool = False) -> dict[str, Any] | None:
        """Handle a click at a world position: pixel -> topology, or pick a view item."""
        position = tuple(float(p) for p in position)
        hit_layer = self.image_layer_at(position)
        if hit_layer is not None:
            hit = _pixel_at(hit_layer, position)
            keys = [key for key in self._analyses if self.image_layer_of(key) is hit_layer]
            found = {key: self.pixel_clicked(key, *hit) for key in keys}
            # every analysis of the clicked image is ringed; "key" is the latest one
            return {
                "key": keys[-1],
                "pixel": hit,
                "found": found[keys[-1]],
                "keys": keys,
                "found_by_key": found,
            }
        active = self.viewer.layers.selection.active
        for layer in reversed(list(self.viewer.layers)):
            meta = layer.metadata.get("topolens") if isinstance(layer.metadata, dict) else None
            if (
                not isinstance(meta, dict)
                or meta.get("view") not in SELECTABLE_VIEWS
                or not layer.visible
            ):
                continue
            value = layer.get_value(position, world=True)
            index = value[0] if isinstance(value, tuple) else value
            if index is None:
                continue
            if layer is active and layer.mode != "pan_zoom":
                return None  # napari's own select mode handles it
            current = set(layer.selected_data)
            index = int(index)
            layer.selected_data = (current ^ {index}) if shift else {index}
            return {"key": meta["key"], "view": meta["view"], "index": index}
        return None


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


def _apply_ring(layer: Any, mask: np.ndarray) -> None:
    """Ring the rows in ``mask`` (yellow border or outline) and record it in ``features``."""
    mask = np.asarray(mask, dtype=bool)
    meta = layer.metadata["topolens"]
    if len(mask) == 0:  # an empty view (e.g. a Mapper graph with no nodes): nothing to ring
        pass
    elif type(layer).__name__.lower() == "points":
        border = np.tile([0.1, 0.1, 0.1, 1.0], (len(mask), 1))
        border[mask] = _HIGHLIGHT
        layer.border_color = border
        layer.border_width = np.where(mask, 0.3, 0.08)
    else:
        colors = np.array(meta.get("base_edge_color", layer.edge_color), dtype=np.float64)
        widths = np.array(meta.get("base_edge_width", layer.edge_width), dtype=np.float64)
        if len(colors) == len(mask):
            colors[mask] = _HIGHLIGHT
            base = float(np.max(widths)) if len(widths) else 0.004
            widths = np.where(mask, np.maximum(widths * 1.8, max(base, 0.004)), widths)
            layer.edge_color = colors
            layer.edge_width = list(widths)
    features = layer.features.copy()
    features["highlighted"] = mask
    layer.features = features
