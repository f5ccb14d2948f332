"""Show an analysis: its inputs, overlay and gallery in the image viewer, its views in the canvas.

:func:`show_analysis` does it at once (scripts, tests); :class:`IncrementalShow`
(:func:`show_analysis_incrementally`, the widgets' path) adds or updates a few
layers per event-loop turn so the viewer stays responsive. Showing an analysis
again (e.g. another network layer) updates its canvas layers in place. The state
of what is shown lives in ``ui.state``; the links are wired at the end.

Off the main thread: a show's steps yield an :class:`Offload` for their pure work
(the layer-data tuples of ``ui.view_data`` and the napari layer objects made from
them, not yet in any viewer: a Shapes layer triangulates its polygons when it is
made). :class:`IncrementalShow` runs it in a napari worker thread and resumes the
steps with its result on the main thread, which only adds layers or swaps data into
them, a few per event-loop turn (:data:`TURN_BUDGET_S`); a cancelled show drops
the result. The views picked in the canvas are made the same way
(:class:`PanelBuilder`; the newest pick wins), and, once the viewer is idle after a
show, those of the panels not picked yet are made ahead, hidden, and drawn once
(:meth:`PanelBuilder.prebuild_soon`), so that a pick only shows them.
:func:`show_analysis` runs the same steps at once, the work inline. While an
:class:`IncrementalShow` runs, Python's full garbage collections are held off
(``ui.collector``): one would stall the main thread 0.25-0.45 s in one turn.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Generator
from functools import partial
from typing import Any, ClassVar

import numpy as np
from qtpy.QtCore import QThreadPool, QTimer

from ..errors import LayerError, TopoLensError
from ..topology.results import Analysis
from . import collector
from . import view_data as vd
from .canvas import TopologyCanvas, canvas_for, existing_canvas, insert_unselected
from .layer_update import add_keeping_selection, create_layer, set_visible, update_layer
from .links import links_for
from .selection_gallery import gallery_spot
from .state import PerViewer, ShownAnalysis, state_for, viewer_ref
from .widget_parts import relay_warnings

__all__ = [
    "IncrementalShow",
    "Offload",
    "PanelBuilder",
    "ViewsAhead",
    "add_to_viewer_steps",
    "offloaded",
    "prepare_views_ahead",
    "remove_analyses_on",
    "remove_analysis",
    "show_analysis",
    "show_analysis_incrementally",
    "show_read",
    "show_steps",
    "watch_viewer",
]


def _make_room_in_the_thread_pool() -> None:
    """Let one more napari worker start at once, whatever the number of cores.

    The analysis widget's worker waits, inside Qt's global thread pool, for the show
    it asked for, and the show's work runs in another worker of that pool. Qt sizes
    the pool by the cores it may use: on one core (a small VM, ``taskset -c 0``) the
    waiting worker holds the only thread and the show never starts (a deadlock).
    """
    pool = QThreadPool.globalInstance()
    if pool is not None and pool.activeThreadCount() >= pool.maxThreadCount():
        pool.setMaxThreadCount(pool.activeThreadCount() + 1)


class Offload:
    """Pure work a show's step hands to a worker thread: no viewer, no layer in a viewer.

    Yielded by the steps; the driver runs :meth:`run` (in a worker thread, or inline)
    and resumes the steps, which read :attr:`result`. A driver that only iterates
    the steps (``for _ in steps``) leaves it to :func:`offloaded`, which runs it
    inline then.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args = fn, args
        self.done = False
        self.result: Any = None

    def run(self) -> Any:
        self.result = self.fn(*self.args)
        self.done = True
        return self.result


def offloaded(fn: Callable[..., Any], *args: Any) -> Generator[Offload, Any, Any]:
    """``result = yield from offloaded(fn, ...)`` inside a show's steps."""
    request = Offload(fn, *args)
    yield request
    return request.result if request.done else request.run()


def _nothing() -> None:
    pass


def _create_layers(items: list[Any]) -> list[Any]:
    """New napari layers (in no viewer yet) from layer-data tuples; worker-safe."""
    return [create_layer(item) for item in items]


def _view_of(item: Any) -> str:
    return str(item[1]["metadata"]["topolens"]["view"])


def _prepare_groups(
    groups: list[str],
    kinds: dict[str, str],
    analysis: Analysis,
    layer_name: str,
    key: str,
    slot: int,
    layout: np.ndarray,
    panel: str,
    color_by: str,
    edge_threshold: float,
) -> list[tuple[Any, Any]]:
    """The layer data of canvas groups, with a new layer made for each view that has
    none of its kind yet (``kinds``: view -> kind of the layer shown now). Pure: runs
    in a worker thread."""
    prepared: list[tuple[Any, Any]] = []
    for group in groups:
        for item in vd.group_layer_data(
            group,
            analysis,
            layer_name,
            key,
            slot,
            layout,
            panel,
            color_by=color_by,
            edge_threshold=edge_threshold,
        ):
            made = None if kinds.get(_view_of(item)) == item[2] else create_layer(item)
            prepared.append((item, made))
    return prepared


def _canvas_kinds(canvas: Any, entry: ShownAnalysis) -> dict[str, str]:
    return {
        view: type(layer).__name__.lower()
        for view, layer in entry.layers.items()
        if layer in canvas.model.layers
    }


def _check(analysis: Analysis, layer_name: str | None, color_by: str) -> str:
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


def _images_layer_of(viewer: Any, analysis: Analysis) -> Any:
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


class ViewsAhead:
    """The layer data and layers of a shown panel's views (the frame's and the panel's
    groups) made before the show starts, e.g. in the reader's worker right after the file
    is read (:func:`prepare_views_ahead`). A show whose first canvas step asks for exactly
    these uses them; otherwise it makes its own (see :meth:`fits`)."""

    def __init__(
        self, args: tuple[Any, ...], layout: np.ndarray, prepared: list[tuple[Any, Any]]
    ) -> None:
        self.args, self.layout, self.prepared = args, layout, prepared

    def fits(self, *args: Any) -> bool:
        """Whether these were made for ``(groups, analysis, network layer, key, slot,
        panel, colouring, edge threshold)``, with no view layer there before."""
        ours = self.args
        return len(ours) == len(args) and all(
            a is b if i == 1 else a == b for i, (a, b) in enumerate(zip(ours, args, strict=True))
        )


def prepare_views_ahead(
    analysis: Analysis,
    layer_name: str | None,
    key: str,
    slot: int,
    panel: str,
    color_by: str,
    edge_threshold: float,
) -> ViewsAhead:
    """Make the views a first show of ``analysis`` draws first, ahead. Pure: runs in a
    worker thread (the layout too, if the analysis has none saved)."""
    name = _check(analysis, layer_name, color_by)
    layout = ShownAnalysis(key, analysis).layout(name)
    groups = list(dict.fromkeys(["frame", vd.panel_group(panel)]))
    args = (groups, analysis, name, key, slot, panel, color_by, float(edge_threshold))
    prepared = _prepare_groups(
        groups, {}, analysis, name, key, slot, layout, panel, color_by, float(edge_threshold)
    )
    return ViewsAhead(args, layout, prepared)


def show_steps(
    viewer: Any,
    analysis: Analysis,
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
    views_first: bool = False,
    ahead: ViewsAhead | None = None,
    views_shown: Callable[[], Any] | None = None,
) -> Generator[Offload | None, Any, ShownAnalysis]:
    """The work of a show, yielding after each layer added or updated.

    ``added`` collects ``(viewer model, layer)`` of the layers added (a cancel
    removes them); ``shown`` every layer added or updated. ``reuse``: the layers of
    an analysis no longer shown (another variant, ``ui.variants``), which a new
    analysis takes over and updates in place (a removed layer costs napari a
    garbage collection, about 0.35 s each). Run it with :class:`IncrementalShow`
    (the pure work in a worker thread) or :func:`show_analysis` (inline).

    ``views_first`` (a reopened analysis, :func:`show_read`): the canvas's views
    first, shown, framed and drawn, then the image viewer's side -- the images
    layer itself when it is not in the viewer yet, the overlay and the gallery.
    Otherwise the image side comes first (a run's images are on screen already).
    ``ahead``: the first views made already (:func:`prepare_views_ahead`), used if
    they fit. ``views_shown()``: called once the views are drawn and the images layer is
    in (``views_first``), in a turn of its own.
    """
    layer_name = _check(analysis, layer_name, color_by)
    state = state_for(viewer)
    canvas = canvas_for(viewer)
    links = links_for(viewer)
    first = state.key_of(analysis) is None
    entry = yield from _entry_steps(
        viewer, analysis, image_layer, key_hint, variant_of, reuse, added, shown
    )
    entry.layouts.update({k: np.asarray(v, dtype=np.float64) for k, v in (layouts or {}).items()})
    active = viewer.layers.selection.active
    if entry.image_layer is not None and not views_first:
        yield from _image_side_steps(viewer, entry, bool(reuse), added, shown)
    yield from _canvas_steps(
        viewer, entry, layer_name, first, color_by, edge_threshold, added, shown, ahead, views_first
    )
    state.set(entry.key, "color_by", color_by)
    state.set(entry.key, "edge_threshold", float(edge_threshold))
    state.set(entry.key, "faded_class", None)
    state.set(entry.key, "network_layer", layer_name)  # the links reset the selection
    yield None
    if views_first:
        yield from _views_shown_steps(canvas, entry, first)
        yield from _after_views_steps(viewer, entry.image_layer, shown, views_shown)
        if entry.image_layer is not None:
            yield from _image_side_steps(viewer, entry, bool(reuse), added, shown)
    links.wire(entry)
    yield None
    _finish_show(viewer, canvas, entry, active, first=first, reused=bool(reuse))
    state.shown.emit(entry.key)
    return entry


def _entry_steps(
    viewer: Any,
    analysis: Analysis,
    image_layer: Any,
    key_hint: str | None,
    variant_of: str | None,
    reuse: dict[str, Any] | None,
    added: list[tuple[Any, Any]],
    shown: list[Any],
) -> Generator[Offload | None, Any, ShownAnalysis]:
    """The state's entry of ``analysis``: the one shown, or a new one (its images
    layer made when neither given nor added by the reader)."""
    state = state_for(viewer)
    key = state.key_of(analysis)
    if key is not None:
        entry = state.get(key)
        if image_layer is not None:
            entry.image_layer = image_layer
        return entry
    key = state.new_key(analysis, key_hint)
    if image_layer is None:
        image_layer = _images_layer_of(viewer, analysis)
    if image_layer is None:
        image_layer = yield from _add_images_layer(viewer, analysis, key, added, shown)
    watch_viewer(viewer)  # its layers removed by the user take it off the canvas
    entry = ShownAnalysis(key, analysis, image_layer, variant_of=variant_of)
    entry.layers.update(reuse or {})
    return state.add(entry)


def _add_images_layer(
    viewer: Any, analysis: Analysis, key: str, added: list[tuple[Any, Any]], shown: list[Any]
) -> Generator[Offload | None, Any, Any]:
    """The analysis's own images as a layer, below what the viewer shows."""
    item = vd.images_layer_data(analysis, key)
    bottoms = [float(layer.extent.world[1][-2]) for layer in viewer.layers if layer.ndim >= 2]
    if bottoms:  # below what the viewer shows (and its galleries), not on top of it
        ndim = item[0].ndim - (1 if item[1]["rgb"] else 0)
        gap = 0.5 * max(item[0].shape[-3 if item[1]["rgb"] else -2], 1)
        item[1]["translate"] = (0.0,) * (ndim - 2) + (max(bottoms) + gap, 0.0)
    (image_layer,) = yield from offloaded(_create_layers, [item])
    viewer.add_layer(image_layer)
    added.append((viewer, image_layer))
    shown.append(image_layer)
    yield None
    return image_layer


def _after_views_steps(
    viewer: Any, images: Any, shown: list[Any], views_shown: Callable[[], Any] | None
) -> Generator[Any, Any, None]:
    """A reopen's show once its views are drawn: the reader's images layer (made in its
    worker) added, then ``views_shown()`` called, each in a turn of its own. What it
    returns, if it has a ``done`` flag (``io``: the gallery title's glyph warmer, a few
    characters a turn), is waited for: the gallery's text, added next, then draws no
    new glyph in the turn that adds it."""
    if images is not None and images not in viewer.layers:
        yield from _add_reader_images(viewer, images)
        shown.append(images)  # (not in ``added``: a cancel keeps it)
        yield PAINT
    if views_shown is not None:
        started = views_shown()
        yield PAINT
        while not getattr(started, "done", True):
            yield PAINT


def _add_reader_images(viewer: Any, layer: Any) -> Generator[Any, Any, None]:
    """Add the reader's images layer in two turns (a reopen's show, after its views).

    Added to an empty viewer, it is one long stretch of napari's main-thread work: the
    sliders of its axes made and shown (which resizes and repaints the image canvas at
    once), its layer controls, and those controls shown as the active layer's. In an
    empty viewer the sliders come first, in a turn of their own: napari's dims given the
    layer's axes, ranges and middle step, as adding it sets them; the layer then comes
    in unselected, like the canvas's views (the show makes it the active layer in its
    last step, ``_finish_show``, as before). A viewer with layers: napari's own add.
    """
    layers = viewer.layers
    if len(layers):
        viewer.add_layer(layer)
        return
    dims, extent = viewer.dims, layer.extent
    dims.ndim = int(layer.ndim)
    for axis in range(int(layer.ndim) - 2):  # (the displayed two have no slider)
        dims.set_range(
            axis, (float(extent.world[0][axis]), float(extent.world[1][axis]), extent.step[axis])
        )
    dims.current_step = tuple(int((steps - 1) / 2) for steps in dims.nsteps)
    yield PAINT
    if layer in layers:  # (added meanwhile)
        return
    if len(layers.selection) or layers.selection.active is not None:
        viewer.add_layer(layer)  # (a layer selected meanwhile: napari's own add)
    else:
        insert_unselected(layers, len(layers), layer)


def _image_side_steps(
    viewer: Any,
    entry: ShownAnalysis,
    reused: bool,
    added: list[tuple[Any, Any]],
    shown: list[Any],
) -> Generator[Offload | None, Any, None]:
    """The overlay and the gallery in the image viewer: made in a worker, added one per
    step; those of a shown analysis (or taken over, ``reused``) updated in place."""
    geometry, index = gallery_spot(state_for(viewer), entry)
    assert geometry is not None
    rgb = bool(getattr(entry.image_layer, "rgb", False))
    shape = entry.image_layer.data.shape[:-1] if rgb else entry.image_layer.data.shape
    analysis, key = entry.analysis, entry.key
    items = []
    if "overlay" not in entry.layers or reused:
        items.append(vd.overlay_layer_data(analysis, key, entry.image_layer))
    if "gallery" not in entry.layers or reused:
        items += vd.gallery_layer_data(
            analysis, key, geometry, index, int(shape[-2]), int(shape[-1]), entry.variant_of
        )
    fresh = [
        item
        for item in items
        if entry.layers.get(_view_of(item)) is None
        or entry.layers[_view_of(item)] not in viewer.layers
    ]
    made = iter((yield from offloaded(_create_layers, fresh)) if fresh else [])
    for item in items:
        view = _view_of(item)
        known = entry.layers.get(view)
        if known is not None and known in viewer.layers:  # taken over: in place
            if view == "overlay":  # a stack: all axes
                known.data = item[0]
                for name in ("scale", "translate", "metadata", "name"):
                    setattr(known, name, item[1][name])
            else:
                update_layer(known, item)
            shown.append(known)
            yield None
            continue
        layer = next(made)
        entry.layers[view] = layer
        yield from add_to_viewer_steps(viewer, layer, added, shown)


def add_to_viewer_steps(
    viewer: Any, layer: Any, added: list[tuple[Any, Any]], shown: list[Any] | None = None
) -> Generator[Any, Any, None]:
    """A show's steps that add a new layer to the image viewer: the viewer's selection
    left as it is (``layer_update.add_keeping_selection``), and a visible layer added
    hidden and shown in the next event-loop turn (:func:`_shown_next_turn`)."""
    visible = bool(layer.visible)
    layer.visible = False
    add_keeping_selection(viewer, layer)
    added.append((viewer, layer))
    if shown is not None:
        shown.append(layer)
    if visible:
        yield from _shown_next_turn(partial(_show_in, viewer, layer))
    else:
        yield None


def _show_in(viewer: Any, layer: Any) -> None:
    if layer in viewer.layers:
        layer.visible = True


def _shown_next_turn(show: Callable[[], Any]) -> Generator[Any, Any, None]:
    """The steps after a layer added hidden: ``show()`` it in the next event-loop turn,
    which then ends (also shown if the steps stop meanwhile).

    A layer's first draw compiles its shader programs and uploads its data (0.1-0.2 s
    of the main thread with software OpenGL), and napari's add makes its visual and
    layer controls (0.1-0.2 s): in the turn that adds it, the repaint at its end would
    draw it too, one stall for both.
    """
    try:
        yield TURN
    finally:
        show()
    yield TURN


def _next_groups(
    entry: ShownAnalysis, panel: str, first: bool, builder: PanelBuilder, done: set[str]
) -> list[str]:
    """The canvas groups a show draws next: the frame, the visible panel's, and (first
    show) every one drawn before or (a switch) the kept ones; a switch parks the views
    of the hidden panels, which wait for their next pick."""
    built = {vd.group_of_view(view) for view in entry.layers if view not in IMAGE_SIDE}
    groups = ["frame", vd.panel_group(panel)]
    if first:  # (a variant taking another's layers over updates them all)
        groups += sorted(built - set(groups))
    else:
        groups += sorted(built & KEPT_GROUPS - set(groups) - {"matrices"})
        builder.park(entry, built - set(groups) - KEPT_GROUPS)
    return [
        group
        for group in dict.fromkeys(groups)
        if group not in done and not (group == "matrices" and "cka" in entry.layers)
    ]  # (the matrices are layer x layer: the same for every network layer)


def _canvas_steps(
    viewer: Any,
    entry: ShownAnalysis,
    layer_name: str,
    first: bool,
    color_by: str,
    edge_threshold: float,
    added: list[tuple[Any, Any]],
    shown: list[Any],
    ahead: ViewsAhead | None = None,
    views_first: bool = False,
) -> Generator[Offload | None, Any, None]:
    """The visible panel's layers in the canvas, and those of panels shown before
    (updated in place); the others are made when their panel is first picked
    (``ahead``: made already, see :func:`show_steps`). A new layer shown is shown in
    the turn after the one that adds it (:func:`_shown_next_turn`), but for the views
    drawn first of a reopen (``views_first``), framed and drawn all at once."""
    state = state_for(viewer)
    canvas = canvas_for(viewer)
    builder = canvas.panel_builder
    if not isinstance(builder, PanelBuilder):
        builder = canvas.panel_builder = PanelBuilder(viewer)
    builder.drop(entry.key)  # a pick still being made would put the old layer's views
    if ahead is not None and layer_name not in entry.layouts:
        entry.layouts[layer_name] = ahead.layout  # (the same: saved, or computed alike)
    layout = entry.layouts.get(layer_name)
    if layout is None:  # (not given nor saved: Kamada-Kawai, off the main thread too)
        layout = yield from offloaded(entry.layout, layer_name)
    done: set[str] = set()
    while True:  # again if another panel was picked meanwhile
        groups = _next_groups(entry, state.panel, first, builder, done)
        if not groups:
            break
        kinds = {**_canvas_kinds(canvas, entry), **builder.parked_kinds(entry, groups)}
        args = (
            groups,
            entry.analysis,
            layer_name,
            entry.key,
            entry.slot,
            state.panel,
            color_by,
            float(edge_threshold),
        )
        if ahead is not None and not kinds and ahead.fits(*args):
            prepared, ahead = ahead.prepared, None
        else:
            prepared = yield from offloaded(
                _prepare_groups, groups, kinds, *args[1:5], layout, *args[5:]
            )
        replaced = builder.unpark(entry, groups)
        for item, layer in prepared:
            put = _put(canvas, entry, item, added, shown, layer, show_later=not views_first)
            if canvas.waits_to_be_shown(put):
                yield from _shown_next_turn(partial(canvas.show_added, put, _view_of(item)))
            else:
                yield None
        for layer in replaced:
            canvas.remove_layer(layer)
            yield None
        done.update(groups)


def _views_shown_steps(
    canvas: TopologyCanvas, entry: ShownAnalysis, first: bool
) -> Generator[Any, Any, None]:
    """The views just made, shown and framed, then drawn in a repaint of their own before
    the show goes on (:func:`show_steps`' ``views_first``)."""
    _show_and_frame(canvas, entry, first)
    yield PAINT


def _show_and_frame(canvas: TopologyCanvas, entry: ShownAnalysis, first: bool) -> None:
    """The current panel's views of ``entry`` visible, the legend, and (first time) the
    camera on the frame, else the text at the zoom (redrawn at full size)."""
    canvas.sync_visibility(entry)
    canvas.update_legend()
    if first:
        canvas.fit()
    else:
        canvas.fit_text()


def _finish_show(
    viewer: Any,
    canvas: TopologyCanvas,
    entry: ShownAnalysis,
    active: Any,
    *,
    first: bool,
    reused: bool,
) -> None:
    """The frame and text were drawn for the current panel: visibility, legend, (first
    time) the camera, and the active layer napari changed with each layer added."""
    _show_and_frame(canvas, entry, first)
    if active is not None and active in viewer.layers:  # napari activates each added layer
        viewer.layers.selection.active = active
    elif entry.image_layer is not None and entry.image_layer in viewer.layers:
        viewer.layers.selection.active = entry.image_layer
    if first and not reused:
        viewer.reset_view()  # the gallery lies below the images


IMAGE_SIDE = ("images", "overlay", "gallery", "gallery_text")
#: Canvas groups a layer switch always updates: the frame, the Mapper graph (the links,
#: edits and the explorer read it) and the layer x layer matrices (never change). The
#: views of the other panels, hidden, are parked and updated when next picked.
KEPT_GROUPS = frozenset({"frame", "mapper", "matrices"})


def _put(
    canvas: Any,
    entry: ShownAnalysis,
    item: Any,
    added: list,
    shown: list,
    made: Any = None,
    *,
    show_later: bool = False,
) -> Any:
    """Update a canvas view layer in place, or add ``made`` (made here when None;
    ``show_later``: see :meth:`TopologyCanvas.add_layer`); returns the layer."""
    view = item[1]["metadata"]["topolens"]["view"]
    old = entry.layers.get(view)
    if old is not None and old in canvas.model.layers and update_layer(old, item):
        shown.append(old)
        return old
    if old is not None:
        canvas.remove_layer(old)
    layer = made if made is not None else create_layer(item)
    entry.layers[view] = layer
    canvas.add_layer(layer, view, show_later=show_later)
    if old is None:  # a stand-in for a removed view stays on cancel: no view goes missing
        added.append((canvas.model, layer))
    shown.append(layer)
    return layer


def _group_built(entry: ShownAnalysis, group: str) -> bool:
    return any(vd.group_of_view(view) == group for view in entry.layers if view not in IMAGE_SIDE)


#: Yielded by a show's steps: end this event-loop turn and let the canvas repaint.
PAINT = object()
#: Yielded by a show's steps: end this event-loop turn (its repaint then), whatever is
#: left of its budget; the next step in the next turn, as soon as it can.
TURN = object()


def _draw_once_hidden(canvas: Any, layers: list[Any]) -> Generator[Any, Any, None]:
    """Draw hidden new layers once, fully transparent, then hide them again.

    A visual's first draw compiles its shader programs and uploads its buffers (with
    software OpenGL, 0.1-0.5 s of the main thread per panel): done here, for views
    made ahead, it is not paid when their panel is picked. One layer per repaint, so
    that no event-loop turn draws a whole panel for the first time. The layer drawn
    last is hidden and the next shown in one napari batch where cheap
    (``TopologyCanvas.visibility_batch``): one pass of napari's over every canvas layer
    for both, in the turn that also repaints.
    """
    drawn: tuple[Any, float] | None = None  # the layer drawn transparent, its opacity
    try:
        for layer in layers:
            if layer not in canvas.model.layers or layer.visible:
                continue  # gone, or shown meanwhile (its panel picked): drawn by then
            with canvas.visibility_batch(2 if drawn is not None else 1):
                _hide_drawn(canvas, drawn)
                drawn = (layer, layer.opacity)
                layer.opacity = 0.0
                layer.visible = True
            yield PAINT
    finally:
        _hide_drawn(canvas, drawn)


def _hide_drawn(canvas: Any, drawn: tuple[Any, float] | None) -> None:
    """Hide a layer :func:`_draw_once_hidden` drew, its opacity back; the views of the
    panel shown now (picked meanwhile) visible."""
    if drawn is None:
        return
    layer, opacity = drawn
    layer.visible = False
    layer.opacity = opacity
    for other, visible in canvas.visibility_changes(*canvas.state):
        set_visible(other, visible)


def _panel_steps(
    viewer: Any,
    entry: ShownAnalysis,
    panel: str,
    added: list,
    shown: list,
    *,
    warm: bool = False,
) -> Generator[Any, Any, None]:
    """Make the layers of a panel not drawn yet for an analysis: data and layers in a
    worker, then one layer added per event-loop turn (``warm``: made ahead, each drawn
    once while hidden, see :func:`_draw_once_hidden`)."""
    group = vd.panel_group(panel)
    if not entry.network_layer or _group_built(entry, group):
        return
    canvas = canvas_for(viewer)
    layer_name = entry.network_layer
    builder = canvas.panel_builder
    if not isinstance(builder, PanelBuilder):
        builder = canvas.panel_builder = PanelBuilder(viewer)
    prepared = yield from offloaded(
        _prepare_groups,
        [group],
        {**_canvas_kinds(canvas, entry), **builder.parked_kinds(entry, [group])},
        entry.analysis,
        layer_name,
        entry.key,
        entry.slot,
        entry.layout(),
        panel,
        entry.color_by,
        float(entry.edge_threshold),
    )
    if entry.network_layer != layer_name or _group_built(entry, group):
        return  # stale: another network layer now, or made meanwhile
    replaced = builder.unpark(entry, [group])
    for item, layer in prepared:
        _put(canvas, entry, item, added, shown, layer)
        yield
    for layer in replaced:  # parked Shapes: new ones were made in the worker
        canvas.remove_layer(layer)
        yield
    if warm:
        yield from _draw_once_hidden(
            canvas, [layer for model, layer in added if model is canvas.model]
        )
    links = links_for(viewer)
    links.wire(entry)
    links.reapply_hits(entry)
    canvas.sync_visibility(entry)
    canvas.update_legend()


def _glyph_steps(canvas: TopologyCanvas) -> Generator[Any, Any, None]:
    """Draw the characters of the panels' text not drawn yet, a few per repaint, in
    transparent text (see :meth:`TopologyCanvas.unseen_glyphs`); made ahead, like the views."""
    while True:
        entry = canvas.put_unseen_glyphs()
        if entry is None:
            return
        try:
            yield PAINT
        finally:  # (also when a user's show or pick cancels this one)
            canvas.restore_values(entry)
        yield


def build_panel(viewer: Any, entry: ShownAnalysis, panel: str) -> list[Any]:
    """Make the layers of a panel not drawn yet for an analysis, at once (the work inline)."""
    shown: list[Any] = []
    for _ in _panel_steps(viewer, entry, panel, [], shown):
        pass
    return shown


class PanelBuilder:
    """The canvas's maker of the views of a panel picked for the first time.

    Each pick starts an :class:`IncrementalShow` of :func:`_panel_steps`: the layer
    data and layers are made in a worker thread, then added one per event-loop
    turn. The newest pick of an analysis wins: a pick still waiting for its worker
    is dropped (its result with it) when another panel is picked; one already
    adding its layers finishes (they are hidden with their panel). A pick made
    while another show of the same analysis runs (a layer switch) is left to that
    show, which draws the panel visible at its end.
    """

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer_ref(viewer)  # a proxy's weakref dies with the widget holding it
        #: The running (or last) pick per analysis key.
        self.pending: dict[str, IncrementalShow] = {}
        #: Per analysis key, the hidden view layers a layer switch left showing the
        #: previous network layer (in the canvas, hidden; not in ``entry.layers``, so
        #: no link or edit reads them), by view.
        self.parked: dict[str, dict[str, Any]] = {}
        #: The panel being made ahead of its pick (:meth:`prebuild_soon`), if any.
        self.prebuilding: IncrementalShow | None = None
        self._prebuild_waiting = False
        self._prebuilding_panel = ""
        #: (key, network layer, group) made ahead already, or tried.
        self._tried: set[tuple[str, str, str]] = set()
        self._prebuilding_tried = ("", "", "")

    def park(self, entry: ShownAnalysis, groups: set[str]) -> None:
        """Take the layers of ``groups`` (hidden panels) out of ``entry.layers``."""
        parked = self.parked.setdefault(entry.key, {})
        for view in [v for v in entry.layers if v not in IMAGE_SIDE]:
            if vd.group_of_view(view) in groups:
                layer = entry.layers.pop(view)
                if layer.visible:
                    layer.visible = False
                parked[view] = layer

    def parked_kinds(self, entry: ShownAnalysis, groups: list[str]) -> dict[str, str]:
        """view -> kind of the parked layers of ``groups`` that :meth:`unpark` gives back."""
        kinds = {
            view: type(layer).__name__.lower()
            for view, layer in self.parked.get(entry.key, {}).items()
            if vd.group_of_view(view) in groups and view not in entry.layers
        }
        return {view: kind for view, kind in kinds.items() if kind != "shapes"}

    def unpark(self, entry: ShownAnalysis, groups: list[str]) -> list[Any]:
        """Give the parked layers of ``groups`` back to ``entry`` to be updated in place;
        returns the parked Shapes, which are made anew in the worker instead (a Shapes
        layer updated in place triangulates on the main thread) and go once replaced."""
        parked = self.parked.get(entry.key, {})
        replaced = []
        for view in [v for v in parked if vd.group_of_view(v) in groups]:
            layer = parked.pop(view)
            if type(layer).__name__.lower() == "shapes" or view in entry.layers:
                replaced.append(layer)
            else:
                entry.layers[view] = layer
        return replaced

    def forget(self, key: str) -> list[Any]:
        """Drop the record of ``key``'s parked layers; returns them (to remove)."""
        return list(self.parked.pop(key, {}).values())

    def __call__(
        self, entry: ShownAnalysis, panel: str, *, at_once: bool = False
    ) -> IncrementalShow | None:
        """Make the views of ``panel`` for ``entry`` if they are not made yet (``at_once``:
        here and now, the work inline, as scripts expect)."""
        viewer = self._viewer()
        if viewer is None:
            return None
        self.drop(entry.key, waiting_only=True)
        if _group_built(entry, vd.panel_group(panel)) or not entry.network_layer:
            return None
        if at_once:
            self.drop(entry.key)
            build_panel(viewer, entry, panel)
            return None
        if any(
            not show.done and show.analysis is entry.analysis and show.kind == "show"
            for show in IncrementalShow.running()
        ):
            # a switch of this analysis runs: after it, if this panel is still the one shown
            def retry() -> None:
                state = state_for(viewer)
                if state.panel == panel and state.key_of(entry.analysis) == entry.key:
                    self(entry, panel)

            QTimer.singleShot(50, retry)
            return None

        def steps(added: list, shown: list) -> Generator[Offload | None, Any, None]:
            return _panel_steps(viewer, entry, panel, added, shown)

        show = IncrementalShow(viewer, entry.analysis, steps=steps, kind="pick")
        self.pending[entry.key] = show
        return show.start()

    def drop(self, key: str, *, waiting_only: bool = False) -> None:
        """Cancel the pick of ``key`` still running (only one waiting for its worker).

        One already adding its layers stops, and the layers it added are parked
        (hidden; brought up to date at the next pick): removing a layer costs napari a
        garbage collection on the main thread (1.2 s each on a loaded machine).
        """
        show = self.pending.get(key)
        if show is None or show.done:
            return
        if not show.layers:
            show.cancel()
            return
        if waiting_only:
            return  # already adding: it finishes
        added = {id(layer) for _, layer in show.stop()}
        viewer = self._viewer()
        state = state_for(viewer) if viewer is not None else None
        if state is None or key not in state:
            return
        entry = state.get(key)
        parked = self.parked.setdefault(key, {})
        for view, layer in list(entry.layers.items()):
            if id(layer) in added and view not in IMAGE_SIDE:
                entry.layers.pop(view)
                if layer.visible:
                    layer.visible = False
                parked[view] = layer

    def busy(self) -> bool:
        """Whether a pick is still being made (or the shown panel, ahead of its pick)."""
        ahead = self.prebuilding
        viewer = self._viewer()
        return any(not show.done for show in self.pending.values()) or bool(
            ahead is not None
            and not ahead.done
            and viewer is not None
            and self._prebuilding_panel == state_for(viewer).panel
        )

    def making_ahead(self) -> bool:
        """Whether views of panels not picked yet are being made, or wait to be."""
        ahead = self.prebuilding
        return self._prebuild_waiting or (ahead is not None and not ahead.done)

    def prebuild_soon(self) -> None:
        """Make the views of the panels not drawn yet, hidden, once the viewer is idle.

        One panel of one analysis at a time, each like a pick (layer data and layers
        in a worker, one layer added per event-loop turn), so that picking it later
        only shows it. It waits while any show or pick runs; a show or pick started
        while it waits for its worker drops it (see :meth:`IncrementalShow.start`);
        the views of panels parked by a layer switch wait for their pick.
        """
        if self._prebuild_waiting:
            return
        self._prebuild_waiting = True
        QTimer.singleShot(PREBUILD_IDLE_MS, self._prebuild_next)

    def _prebuild_next(self) -> None:
        self._prebuild_waiting = False
        if self.prebuilding is not None and self.prebuilding.cancelled:
            self._tried.discard(self._prebuilding_tried)  # dropped for a pick: again later
            self.prebuilding = None
        viewer = self._viewer()
        canvas = existing_canvas(viewer) if viewer is not None else None
        if canvas is None or canvas.panel_builder is not self:
            return  # closed, or its window closed (no canvas then) since this was queued
        if any(not show.done for show in IncrementalShow.running()) or canvas.busy():
            self.prebuild_soon()  # later, when idle
            return
        offered = [canvas.picker.itemData(i) for i in range(canvas.picker.count())]
        for entry in state_for(viewer):
            if not entry.network_layer or not PREBUILD:
                continue
            parked = {vd.group_of_view(view) for view in self.parked.get(entry.key, {})}
            for panel in offered:
                group = vd.panel_group(panel)
                tried = (entry.key, entry.network_layer, group)
                if group in parked or tried in self._tried or _group_built(entry, group):
                    continue
                self._tried.add(tried)  # once (a panel with no views for it stays unbuilt)

                def steps(
                    added: list, shown: list, entry: ShownAnalysis = entry, panel: str = panel
                ) -> Generator[Offload | None, Any, None]:
                    return _panel_steps(viewer, entry, panel, added, shown, warm=True)

                self._prebuilding_panel, self._prebuilding_tried = panel, tried
                self.prebuilding = IncrementalShow(
                    viewer, entry.analysis, steps=steps, kind="prebuild"
                ).start()
                return  # the next one when this one is done (its end calls back)
        entries = [entry for entry in state_for(viewer) if entry.network_layer]
        if PREBUILD and entries and canvas.unseen_glyphs():  # every view made: their text
            self._prebuilding_panel, self._prebuilding_tried = "", ("", "", "")
            self.prebuilding = IncrementalShow(
                viewer, entries[0].analysis, steps=lambda *_: _glyph_steps(canvas), kind="prebuild"
            ).start()


def show_analysis(
    viewer: Any,
    analysis: Analysis,
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
    steps = show_steps(
        viewer, analysis, layer_name, image_layer, color_by, edge_threshold, layouts, [], shown, key
    )
    for step in steps:
        if isinstance(step, Offload):
            step.run()
    return shown


#: Whether the views of the panels not picked yet are made ahead, hidden, once the viewer
#: is idle after a show (:meth:`PanelBuilder.prebuild_soon`), and after how long idle.
PREBUILD = True
PREBUILD_IDLE_MS = 200

#: Main-thread time one event-loop turn of a show may take before it lets the event
#: loop run (a step started within it runs to its end: adding a layer takes longer).
TURN_BUDGET_S = 0.04
#: How long a show waits for a repaint it asked for (``PAINT``).
PAINT_MS = 30


class IncrementalShow:
    """A :func:`show_analysis` run a few layers per event-loop turn (Qt main thread).

    A step that yields an :class:`Offload` has it run in a napari worker thread
    (``napari.qt.threading.create_worker``); the steps go on, on the main thread,
    when it returns. A show cancelled meanwhile drops its result.

    Attributes
    ----------
    layers : list of napari.layers.Layer
        The layers added or updated so far.
    done, cancelled : bool
    error : BaseException or None
    kind : str
        ``"show"`` (an analysis shown or switched), ``"pick"`` (a panel's views, see
        :class:`PanelBuilder`) or what a caller of ``steps`` names.
    worker : napari worker or None
        The worker running the show's current :class:`Offload`, if any.
    """

    _running: ClassVar[set[IncrementalShow]] = set()  # keeps pending shows alive between turns

    @classmethod
    def running(cls) -> list[IncrementalShow]:
        """The shows started and not done (a copy: showing may start or end others)."""
        return list(cls._running)

    def __init__(
        self,
        viewer: Any,
        analysis: Analysis,
        layer_name: str | None = None,
        *,
        image_layer: Any = None,
        color_by: str = "dominant_class",
        edge_threshold: float = 0.0,
        layouts: dict[str, np.ndarray] | None = None,
        key: str | None = None,
        on_done: Callable[[list[Any]], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        steps: Callable[[list, list], Generator[Any, Any, Any]] | None = None,
        kind: str = "show",
        views_first: bool = False,
        ahead: ViewsAhead | None = None,
        views_shown: Callable[[], Any] | None = None,
    ) -> None:
        """``steps(added, shown)``, if given, replaces the show's own steps (e.g. the
        variants' show, ``ui.variants``): a generator that yields after each layer
        (or an :class:`Offload`), collecting ``(viewer model, layer)`` of the layers
        it adds in ``added``. ``views_first``, ``ahead``, ``views_shown``: see
        :func:`show_steps`."""
        self.layers: list[Any] = []
        self.done = False
        self.cancelled = False
        self.error: BaseException | None = None
        self.kind = kind
        self.worker: Any = None
        self._failed: BaseException | None = None
        self._viewer = viewer
        self._analysis = analysis
        self._was_shown = state_for(viewer).key_of(analysis) is not None
        self._added: list[tuple[Any, Any]] = []
        self._on_done, self._on_error = on_done, on_error
        self._resume_collector: Callable[[], None] = _nothing
        #: The reader's images layer a ``views_first`` show adds after the views: a
        #: cancel adds it still (the user's images stay, as when they came first).
        self._images_to_keep = image_layer if views_first else None
        if steps is not None:
            self._steps = steps(self._added, self.layers)
            return
        self._steps = show_steps(
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
            views_first=views_first,
            ahead=ahead,
            views_shown=views_shown,
        )

    @property
    def analysis(self) -> Analysis:
        return self._analysis

    def start(self) -> IncrementalShow:
        if self.kind != "prebuild":  # the user's show or pick first: a view made ahead waits
            for show in IncrementalShow.running():
                if show.kind == "prebuild" and not show.done and not show.layers:
                    show.cancel()
        IncrementalShow._running.add(self)
        # no full garbage collection (0.25-0.45 s at once) while layers are added
        self._resume_collector = collector.pause()
        self._schedule()
        return self

    def _schedule(self) -> None:
        # 1 ms, not 0: a zero timeout is a posted event that Qt may run before due
        # timers; a real timer takes its turn with them
        QTimer.singleShot(1, self._step)

    def _step(self) -> None:
        """Run steps until one hands work to a worker, the steps end or the turn's
        budget is spent (then the next turn goes on): cheap in-place updates share a
        turn, and so one repaint, where each would cost a repaint of its own."""
        began = time.perf_counter()
        while not self.done:
            try:
                if self._failed is not None:
                    failed, self._failed = self._failed, None
                    step = self._steps.throw(failed)
                else:
                    step = next(self._steps)
            except StopIteration:
                self._finish()
                if self._on_done is not None:
                    self._on_done(list(self.layers))
                self._prebuild_after()
                return
            except Exception as exc:
                self.error = exc
                self._finish()
                if self._on_error is not None:
                    self._on_error(exc)
                else:
                    raise
                return
            if isinstance(step, Offload):
                self._offload(step)
                return
            if step is PAINT:
                QTimer.singleShot(PAINT_MS, self._step)
                return
            if step is TURN:
                self._schedule()
                return
            if time.perf_counter() - began >= TURN_BUDGET_S:
                self._schedule()
                return

    def _offload(self, request: Offload) -> None:
        """Run ``request`` in a worker thread; go on with the steps when it is done."""
        from napari.qt.threading import create_worker  # heavy: napari.qt imports napari's Qt side

        worker = create_worker(request.run, _start_thread=False, _ignore_errors=True)

        def returned(_result: Any) -> None:
            if worker is self.worker and not self.done:  # else stale: dropped
                self.worker = None
                self._schedule()

        def errored(exc: BaseException) -> None:
            if worker is self.worker and not self.done:
                self.worker = None
                self._failed = exc  # raised in the steps, where the work was asked for
                self._schedule()

        worker.returned.connect(returned)
        worker.errored.connect(errored)
        relay_warnings(worker)
        self.worker = worker
        _make_room_in_the_thread_pool()
        worker.start()

    def _finish(self) -> None:
        self.done = True
        IncrementalShow._running.discard(self)
        self._resume_collector()

    def _prebuild_after(self) -> None:
        """After a show, pick or prebuilt panel: make the next panel not drawn yet."""
        viewer = self._viewer
        canvas = existing_canvas(viewer) if viewer is not None else None
        if canvas is not None and isinstance(canvas.panel_builder, PanelBuilder):
            canvas.panel_builder.prebuild_soon()

    def stop(self) -> list[tuple[Any, Any]]:
        """Stop here, keeping what was added; returns ``(viewer model, layer)`` of those."""
        if not self.done:
            self._steps.close()
        self.cancelled = True
        self.worker = None
        self._finish()
        return list(self._added)

    def cancel(self) -> None:
        """Stop. A first show removes what it added; a switch keeps its in-place updates.

        A cancelled switch can leave some views showing the new network layer and
        some the old; the next show of the analysis updates every one of them.
        """
        if not self.done:
            self._steps.close()
        self.cancelled = True
        self.worker = None  # its result, if it comes, is dropped
        self._finish()
        state = state_for(self._viewer)
        key = state.key_of(self._analysis)
        if not self._was_shown and key is not None:
            remove_analysis(self._viewer, key)
        for model, layer in self._added:
            if layer in model.layers:
                model.layers.remove(layer)
        self.layers.clear()
        images = self._images_to_keep
        if images is not None and images not in self._viewer.layers:
            _SHOW_DECLINED.add(images)  # in without its views: they were just taken off
            self._viewer.add_layer(images)


def show_analysis_incrementally(
    viewer: Any,
    analysis: Analysis,
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
    for show in IncrementalShow.running():  # in flight: its result would come back
        if not show.done and show.analysis is entry.analysis:
            show.cancel()
    if canvas is not None and isinstance(canvas.panel_builder, PanelBuilder):
        canvas.panel_builder.drop(key)
        for layer in canvas.panel_builder.forget(key):
            canvas.remove_layer(layer)
    if key not in state:  # (a first show's cancel removes it)
        return
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
    show_read(viewer, event.value)


#: The reader's images layers whose show was cancelled before they were added: added
#: then, they are not shown again (:meth:`IncrementalShow.cancel`).
_SHOW_DECLINED: weakref.WeakSet[Any] = weakref.WeakSet()


def show_read(
    viewer: Any,
    layer: Any,
    ahead: ViewsAhead | None = None,
    views_shown: Callable[[], Any] | None = None,
) -> IncrementalShow | None:
    """Show the analysis of the reader's images ``layer`` as it was saved; None if it
    is not such a layer, its analysis is shown already, or its show was cancelled
    before it was added (see :meth:`IncrementalShow.cancel`).

    Its views first (:func:`show_steps`' ``views_first``): the canvas's view is what a
    reopen waits for. ``layer`` need not be in the viewer yet: the show adds it once the
    views are drawn (the reader's worker made it), then the overlay and gallery.
    ``ahead``: its first views, made in the reader's worker too (used if they fit);
    ``views_shown()``: called once they are drawn.
    """
    if layer in _SHOW_DECLINED:
        _SHOW_DECLINED.discard(layer)
        return None
    meta = layer.metadata.get("topolens") if isinstance(layer.metadata, dict) else None
    if not isinstance(meta, dict) or meta.get("view") != "images":
        return None
    if not isinstance(meta.get("show"), dict):
        return None  # a show's own images layer, not the reader's
    analysis = meta.get("analysis")
    if analysis is None or state_for(viewer).key_of(analysis) is not None:
        return None
    settings = dict(meta.get("show") or {})
    panel = settings.get("panel")
    if panel in vd.ALL_PANELS and len(state_for(viewer)) == 0:
        # the view shown when it was saved (a viewer showing others keeps its own)
        canvas_for(viewer).show_panel(panel)

    def failed(exc: BaseException) -> None:
        if layer not in viewer.layers:  # the images stay, as when they came first
            viewer.add_layer(layer)
        raise exc  # (napari's handler shows it)

    return IncrementalShow(
        viewer,
        analysis,
        settings.get("layer_name"),
        image_layer=layer,
        color_by=settings.get("color_by", "dominant_class"),
        edge_threshold=float(settings.get("edge_threshold", 0.0)),
        key=meta.get("key"),
        views_first=True,
        ahead=ahead,
        views_shown=views_shown,
        on_error=failed,
    ).start()


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
