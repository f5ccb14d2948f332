"""Show an analysis: its inputs, overlay and gallery in the image viewer, its views in the canvas.

:func:`show_analysis` does it at once (scripts, tests); :class:`IncrementalShow`
(:func:`show_analysis_incrementally`, the widgets' path) adds or updates one
layer per event-loop turn so the viewer stays responsive. Showing an analysis
again (e.g. another network layer) updates its canvas layers in place. The state
of what is shown lives in ``ui.state``; the links are wired at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, ClassVar

import numpy as np

from ..errors import LayerError, TopoLensError
from . import view_data as vd
from .canvas import canvas_for, existing_canvas
from .layer_update import create_layer, update_layer
from .links import gallery_spot, links_for
from .state import PerViewer, ShownAnalysis, state_for, viewer_ref

__all__ = [
    "IncrementalShow",
    "remove_analyses_on",
    "remove_analysis",
    "show_analysis",
    "show_analysis_incrementally",
    "watch_viewer",
]


def _check(analysis: Any, layer_name: str | None, color_by: str) -> str:
    if color_by not in vd.COLOR_BY:
        raise TopoLensError(
            f"cannot colour nodes by {color_by!r}; choose one of {', '.join(vd.COLOR_BY)}"
        )
    if color_by in vd.NEEDS_PREDICTIONS and vd.analysis_predictions(analysis) is None:
        raise TopoLensError(
            f"colouring by {vd.COLOR_BY_LABELS[color_by]} needs the model's predictions, "
            "which this analysis does not hold"
        )
    name = analysis.layers[-1] if layer_name is None else layer_name
    if name not in analysis:
        raise LayerError(
            f"layer {name!r} is not in this analysis; analysed layers: {', '.join(analysis.layers)}"
        )
    return name


def _images_layer_of(viewer: Any, analysis: Any) -> Any:
    """A plugin images layer in ``viewer`` that holds ``analysis`` (e.g. added by the reader)."""
    for layer in viewer.layers:
        meta = layer.metadata.get("topolens") if isinstance(layer.metadata, dict) else None
        if (
            isinstance(meta, dict)
            and meta.get("view") == "images"
            and meta.get("analysis") is analysis
        ):
            return layer
    return None


def _show_steps(
    viewer: Any,
    analysis: Any,
    layer_name: str | None,
    image_layer: Any,
    color_by: str,
    edge_threshold: float,
    layouts: dict[str, np.ndarray] | None,
    added: list[tuple[Any, Any]],
    shown: list[Any],
    key_hint: str | None = None,
    variant_of: str | None = None,
    reuse: dict[str, Any] | None = None,
) -> Generator[None, None, ShownAnalysis]:
    """The work of a show, yielding after each layer added or updated.

    ``added`` collects ``(viewer model, layer)`` of the layers added (a cancel
    removes them); ``shown`` every layer added or updated. ``reuse``: the layers of
    an analysis no longer shown (another variant, ``ui.variants``), which a new
    analysis takes over and updates in place (a removed layer costs napari a
    garbage collection, about 0.35 s each).
    """
    layer_name = _check(analysis, layer_name, color_by)
    state = state_for(viewer)
    canvas = canvas_for(viewer)
    links = links_for(viewer)
    key = state.key_of(analysis)
    first = key is None
    if key is None:
        key = state.new_key(analysis, key_hint)
        if image_layer is None:
            image_layer = _images_layer_of(viewer, analysis)
        if image_layer is None:
            item = vd.images_layer_data(analysis, key)
            bottoms = [
                float(layer.extent.world[1][-2]) for layer in viewer.layers if layer.ndim >= 2
            ]
            if bottoms:  # below what the viewer shows (and its galleries), not on top of it
                ndim = item[0].ndim - (1 if item[1]["rgb"] else 0)
                gap = 0.5 * max(item[0].shape[-3 if item[1]["rgb"] else -2], 1)
                item[1]["translate"] = (0.0,) * (ndim - 2) + (max(bottoms) + gap, 0.0)
            image_layer = create_layer(item)
            viewer.add_layer(image_layer)
            added.append((viewer, image_layer))
            shown.append(image_layer)
            yield
        watch_viewer(viewer)  # its layers removed by the user take it off the canvas
        entry = ShownAnalysis(key, analysis, image_layer, variant_of=variant_of)
        entry.layers.update(reuse or {})
        entry = state.add(entry)
    else:
        entry = state.get(key)
        if image_layer is not None:
            entry.image_layer = image_layer
    entry.layouts.update({k: np.asarray(v, dtype=np.float64) for k, v in (layouts or {}).items()})
    active = viewer.layers.selection.active
    if entry.image_layer is not None:
        geometry, index = gallery_spot(state, entry)
        assert geometry is not None
        rgb = bool(getattr(entry.image_layer, "rgb", False))
        shape = entry.image_layer.data.shape[:-1] if rgb else entry.image_layer.data.shape
        items = []
        if "overlay" not in entry.layers or reuse:
            items.append(vd.overlay_layer_data(analysis, key, entry.image_layer))
        if "gallery" not in entry.layers or reuse:
            items += vd.gallery_layer_data(
                analysis, key, geometry, index, int(shape[-2]), int(shape[-1]), entry.variant_of
            )
        for item in items:
            known = entry.layers.get(item[1]["metadata"]["topolens"]["view"])
            if known is not None and known in viewer.layers:  # taken over: in place
                if item[1]["metadata"]["topolens"]["view"] == "overlay":  # a stack: all axes
                    known.data = item[0]
                    for name in ("scale", "translate", "metadata", "name"):
                        setattr(known, name, item[1][name])
                else:
                    update_layer(known, item)
                shown.append(known)
                yield
                continue
            layer = create_layer(item)
            viewer.add_layer(layer)
            entry.layers[item[1]["metadata"]["topolens"]["view"]] = layer
            added.append((viewer, layer))
            shown.append(layer)
            yield
    canvas.panel_builder = _panel_builder(viewer)
    layout = entry.layout(layer_name)
    # the visible panel's layers, and those of panels shown before (updated in place);
    # the others are made when their panel is first picked
    built = {vd.group_of_view(view) for view in entry.layers if view not in IMAGE_SIDE}
    groups = ["frame", vd.panel_group(state.panel)]
    groups += sorted(built - set(groups) - ({"matrices"} if not first else set()))
    for group in groups:
        if group == "matrices" and "cka" in entry.layers:
            continue  # layer x layer: the same for every network layer
        for item in vd.group_layer_data(
            group,
            analysis,
            layer_name,
            key,
            entry.slot,
            layout,
            state.panel,
            color_by=color_by,
            edge_threshold=edge_threshold,
        ):
            _put(canvas, entry, item, added, shown)
            yield
    state.set(key, "color_by", color_by)
    state.set(key, "edge_threshold", float(edge_threshold))
    state.set(key, "faded_class", None)
    state.set(key, "network_layer", layer_name)  # the links reset the selection
    yield
    links.wire(entry)
    yield
    # the frame and text were drawn for the current panel above: only visibility, legend
    # and (first time) the camera are left
    canvas.sync_visibility(entry)
    canvas.update_legend()
    if first:
        canvas.fit()
    else:  # its text was redrawn at full size
        canvas.fit_text()
    if active is not None and active in viewer.layers:  # napari activates each added layer
        viewer.layers.selection.active = active
    elif entry.image_layer is not None and entry.image_layer in viewer.layers:
        viewer.layers.selection.active = entry.image_layer
    if first and not reuse:
        viewer.reset_view()  # the gallery lies below the images
    state.shown.emit(key)
    return entry


IMAGE_SIDE = ("images", "overlay", "gallery", "gallery_text")


def _put(canvas: Any, entry: ShownAnalysis, item: Any, added: list, shown: list) -> None:
    """Update a canvas view layer in place, or make and add it."""
    view = item[1]["metadata"]["topolens"]["view"]
    old = entry.layers.get(view)
    if old is not None and old in canvas.model.layers and update_layer(old, item):
        shown.append(old)
        return
    if old is not None:
        canvas.remove_layer(old)
    layer = create_layer(item)
    entry.layers[view] = layer
    canvas.add_layer(layer, view)
    if old is None:  # a stand-in for a removed view stays on cancel: no view goes missing
        added.append((canvas.model, layer))
    shown.append(layer)


def build_panel(viewer: Any, entry: ShownAnalysis, panel: str) -> list[Any]:
    """Make the layers of a panel not drawn yet for an analysis (first time it is picked)."""
    group = vd.panel_group(panel)
    if not entry.network_layer or any(
        vd.group_of_view(view) == group for view in entry.layers if view not in IMAGE_SIDE
    ):
        return []
    canvas = canvas_for(viewer)
    added: list[tuple[Any, Any]] = []
    shown: list[Any] = []
    for item in vd.group_layer_data(
        group,
        entry.analysis,
        entry.network_layer,
        entry.key,
        entry.slot,
        entry.layout(),
        panel,
        color_by=entry.color_by,
        edge_threshold=entry.edge_threshold,
    ):
        _put(canvas, entry, item, added, shown)
    links = links_for(viewer)
    links.wire(entry)
    links.reapply_hits(entry)
    return shown


def _panel_builder(viewer: Any) -> Callable[[ShownAnalysis, str], Any]:
    ref = viewer_ref(viewer)  # a proxy's weakref dies with the widget that holds it

    def build(entry: ShownAnalysis, panel: str) -> Any:
        v = ref()
        return build_panel(v, entry, panel) if v is not None else None

    return build


def show_analysis(
    viewer: Any,
    analysis: Any,
    layer_name: str | None = None,
    *,
    image_layer: Any = None,
    color_by: str = "dominant_class",
    edge_threshold: float = 0.0,
    layouts: dict[str, np.ndarray] | None = None,
    key: str | None = None,
) -> list[Any]:
    """Show every view of one analysed network layer (default: the last) and link them, at once.

    Calling it again for the same analysis updates its canvas layers in place
    (e.g. to show another network layer). ``key`` names a new analysis here
    (default: from its provenance). Returns the layers added or updated.
    """
    shown: list[Any] = []
    steps = _show_steps(
        viewer, analysis, layer_name, image_layer, color_by, edge_threshold, layouts, [], shown, key
    )
    for _ in steps:
        pass
    return shown


class IncrementalShow:
    """A :func:`show_analysis` run one layer per event-loop turn (Qt main thread).

    Attributes
    ----------
    layers : list of napari.layers.Layer
        The layers added or updated so far.
    done, cancelled : bool
    error : BaseException or None
    """

    _running: ClassVar[set[IncrementalShow]] = set()  # keeps pending shows alive between turns

    def __init__(
        self,
        viewer: Any,
        analysis: Any,
        layer_name: str | None = None,
        *,
        image_layer: Any = None,
        color_by: str = "dominant_class",
        edge_threshold: float = 0.0,
        layouts: dict[str, np.ndarray] | None = None,
        key: str | None = None,
        on_done: Callable[[list[Any]], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        steps: Callable[[list, list], Generator[None, None, Any]] | None = None,
    ) -> None:
        """``steps(added, shown)``, if given, replaces the show's own steps (e.g. the
        variants' show, ``ui.variants``): a generator that yields after each layer,
        collecting ``(viewer model, layer)`` of the layers it adds in ``added``."""
        self.layers: list[Any] = []
        self.done = False
        self.cancelled = False
        self.error: BaseException | None = None
        self._viewer = viewer
        self._analysis = analysis
        self._was_shown = state_for(viewer).key_of(analysis) is not None
        self._added: list[tuple[Any, Any]] = []
        self._on_done, self._on_error = on_done, on_error
        if steps is not None:
            self._steps = steps(self._added, self.layers)
            return
        self._steps = _show_steps(
            viewer,
            analysis,
            layer_name,
            image_layer,
            color_by,
            edge_threshold,
            layouts,
            self._added,
            self.layers,
            key,
        )

    def start(self) -> IncrementalShow:
        IncrementalShow._running.add(self)
        self._schedule()
        return self

    def _schedule(self) -> None:
        from qtpy.QtCore import QTimer

        # 1 ms, not 0: a zero timeout is a posted event that Qt may run before due
        # timers; a real timer takes its turn with them
        QTimer.singleShot(1, self._step)

    def _step(self) -> None:
        if self.done:
            return
        try:
            next(self._steps)
        except StopIteration:
            self._finish()
            if self._on_done is not None:
                self._on_done(list(self.layers))
            return
        except Exception as exc:
            self.error = exc
            self._finish()
            if self._on_error is not None:
                self._on_error(exc)
            else:
                raise
            return
        self._schedule()

    def _finish(self) -> None:
        self.done = True
        IncrementalShow._running.discard(self)

    def cancel(self) -> None:
        """Stop. A first show removes what it added; a switch keeps its in-place updates.

        A cancelled switch can leave some views showing the new network layer and
        some the old; the next show of the analysis updates every one of them.
        """
        if not self.done:
            self._steps.close()
        self.cancelled = True
        self._finish()
        state = state_for(self._viewer)
        key = state.key_of(self._analysis)
        if not self._was_shown and key is not None:
            remove_analysis(self._viewer, key)
        for model, layer in self._added:
            if layer in model.layers:
                model.layers.remove(layer)
        self.layers.clear()


def show_analysis_incrementally(
    viewer: Any,
    analysis: Any,
    layer_name: str | None = None,
    *,
    image_layer: Any = None,
    color_by: str = "dominant_class",
    edge_threshold: float = 0.0,
    layouts: dict[str, np.ndarray] | None = None,
    key: str | None = None,
    on_done: Callable[[list[Any]], Any] | None = None,
    on_error: Callable[[BaseException], Any] | None = None,
) -> IncrementalShow:
    """:func:`show_analysis`, one layer per event-loop turn; returns the running show.

    ``on_done(layers)`` runs on the main thread when the last layer is in and
    linked, ``on_error(exc)`` if a step fails.
    """
    return IncrementalShow(
        viewer,
        analysis,
        layer_name,
        image_layer=image_layer,
        color_by=color_by,
        edge_threshold=edge_threshold,
        layouts=layouts,
        key=key,
        on_done=on_done,
        on_error=on_error,
    ).start()


def remove_analysis(viewer: Any, key: str) -> None:
    """Stop showing an analysis: its canvas layers, overlay and gallery go (its images stay)."""
    state = state_for(viewer)
    if key not in state:
        return
    entry = state.get(key)
    canvas = existing_canvas(viewer)  # none when the viewer is closing: make none
    for view, layer in list(entry.layers.items()):
        entry.layers.pop(view, None)  # first: the removal watcher must not see it as ours
        if canvas is not None and layer in canvas.model.layers:
            canvas.model.layers.remove(layer)
        elif layer in viewer.layers:
            viewer.layers.remove(layer)
    state.remove(key)
    if canvas is not None:
        canvas.apply_panel()


def remove_analyses_on(viewer: Any, image_layer: Any) -> list[str]:
    """Stop showing the analyses of ``image_layer`` (and their variants); their keys.

    A new run on an image layer replaces what was shown of it: one analysis per
    image layer, so the canvas, legend and gallery describe the run on screen.
    """
    if image_layer is None:
        return []
    state = state_for(viewer)
    gone = [e.key for e in state if e.variant_of is None and e.image_layer is image_layer]
    for key in gone:
        remove_analysis(viewer, key)
    return gone


def _on_inserted(viewer: Any, event: Any) -> None:
    """A layer with a saved analysis came in (the reader's images): show its views."""
    layer = event.value
    meta = layer.metadata.get("topolens") if isinstance(layer.metadata, dict) else None
    if not isinstance(meta, dict) or meta.get("view") != "images":
        return
    if not isinstance(meta.get("show"), dict):
        return  # a show's own images layer, not the reader's
    analysis = meta.get("analysis")
    if analysis is None or state_for(viewer).key_of(analysis) is not None:
        return
    settings = dict(meta.get("show") or {})
    panel = settings.get("panel")
    if panel in vd.ALL_PANELS and len(state_for(viewer)) == 0:
        # the view shown when it was saved (a viewer showing others keeps its own)
        canvas_for(viewer).show_panel(panel)
    show_analysis_incrementally(
        viewer,
        analysis,
        settings.get("layer_name"),
        image_layer=layer,
        color_by=settings.get("color_by", "dominant_class"),
        edge_threshold=float(settings.get("edge_threshold", 0.0)),
        key=meta.get("key"),
    )


def _on_removed(viewer: Any, event: Any) -> None:
    """The image layer of an analysis, or its overlay or gallery, was removed: its views go.

    Deleting the overlay or gallery layer is how a user takes an analysis off the
    canvas in napari's own terms; its image layer stays.
    """
    state = state_for(viewer)
    for entry in state:
        ours = entry.image_layer is event.value or any(
            layer is event.value for view, layer in entry.layers.items() if view in IMAGE_SIDE
        )
        if ours and entry.key in state:
            remove_analysis(viewer, entry.key)


_WATCHED = PerViewer()


def watch_viewer(viewer: Any) -> None:
    """Show the analyses of layers added to ``viewer`` (the reader's path), once per viewer."""
    if _WATCHED.get(viewer) is not None:
        return
    _WATCHED.set(viewer, True)
    ref = viewer_ref(viewer)  # a proxy's weakref dies with the widget that holds it

    def inserted(event: Any) -> None:
        v = ref()
        if v is not None:
            _on_inserted(v, event)

    def removed(event: Any) -> None:
        v = ref()
        if v is not None:
            _on_removed(v, event)

    viewer.layers.events.inserted.connect(inserted)
    viewer.layers.events.removed.connect(removed)
