"""Put new layer data into an existing napari layer in place, and lock view layers."""

from __future__ import annotations

import weakref
from contextlib import ExitStack
from typing import Any

import numpy as np

from .view_data import LayerDataTuple

__all__ = [
    "add_keeping_selection",
    "create_layer",
    "drawn_as_is",
    "insert_quietly",
    "lock_layer",
    "set_visible",
    "track_drawing",
    "update_layer",
]

#: Layer events after which the drawing napari last sent to the canvas still shows the
#: layer: napari applies them to its visual at once, visible or not, or they draw
#: nothing. Any other event (data, features, colours, text, size, transforms...) may
#: have changed what a hidden layer would draw.
DRAWING_KEPT_EVENTS = frozenset(
    {
        "visible",
        "opacity",
        "blending",
        "thumbnail",
        "mode",
        "editable",
        "name",
        "metadata",
        "highlight",
        "scale_factor",
        "loaded",
        "cursor",
        "cursor_size",
        "help",
        "interactive",
        "status",
    }
)
#: Layers whose visual holds their data as they are now: napari sent it (``set_data``)
#: and nothing drawn changed since (:func:`track_drawing`).
_DRAWN_AS_IS: weakref.WeakSet[Any] = weakref.WeakSet()


def _on_layer_event(event: Any) -> None:
    layer = event.source
    if layer.visible:
        # napari keeps a visible layer's visual up to date: refreshed when shown and when
        # its data, colours or text change
        if event.type in ("set_data", "visible"):
            _DRAWN_AS_IS.add(layer)
    elif event.type not in DRAWING_KEPT_EVENTS:
        _DRAWN_AS_IS.discard(layer)  # hidden: napari sent the change nowhere


def track_drawing(layer: Any) -> Any:
    """Follow whether a canvas layer's visual still holds what it would draw now
    (:func:`drawn_as_is`), from now on; call it once the layer is in the canvas (a
    visible layer's visual was made from it)."""
    if layer.visible:
        _DRAWN_AS_IS.add(layer)
    else:
        _DRAWN_AS_IS.discard(layer)
    layer.events.connect(_on_layer_event)
    return layer


def forget_drawing(layer: Any) -> None:
    """The layer's visual may no longer show it (changed while hidden: napari sent nothing)."""
    _DRAWN_AS_IS.discard(layer)


def drawn_as_is(layer: Any) -> bool:
    """Whether napari sent the layer's data to its visual and nothing drawn changed since
    (only for layers given to :func:`track_drawing`)."""
    return layer in _DRAWN_AS_IS


def set_visible(layer: Any, visible: bool) -> None:
    """Show or hide a layer; one shown again as it was last drawn is not sent again.

    napari refreshes a layer that becomes visible: it sends its data (and highlight) to
    its visual again, and a Shapes visual then builds its shader programs again on the
    next paint (vispy's mesh makes a new colour transform with new data), about 5 ms
    each, with its buffers uploaded again. Made-ahead views are drawn once while hidden
    (``ui.show``): shown unchanged, they keep what their visual has. A layer changed
    while hidden (napari sent the change nowhere) is refreshed as napari does.
    """
    if bool(layer.visible) == bool(visible):
        return
    if visible and drawn_as_is(layer):
        # its highlight too: napari sends a hidden layer's highlight at once, and a new
        # one (even empty) makes a Shapes visual build its programs again
        with ExitStack() as blocked:
            for name in ("set_data", "highlight"):
                if hasattr(layer.events, name):
                    blocked.enter_context(getattr(layer.events, name).blocker())
            layer.visible = True
        return
    layer.visible = visible


def insert_quietly(layers: Any, index: int, layer: Any, active: Any) -> None:
    """Insert ``layer`` into a layer list whose selection is ``active`` alone (or empty,
    ``active`` None), the selection's events held back, and put that selection back.

    napari makes an inserted layer the active one: each change of the active layer is a
    pass of napari's over every layer of the viewer (their highlights redone), the layer
    controls shown anew and the viewer's buttons restyled, twice per layer added when the
    caller then selects again what was selected (60-100 ms of the main thread per layer
    in a viewer showing an analysis). What listens to the selection sees the same one
    after as before, and the new layer is told what the viewer model tells every layer
    that is not the active one.
    """
    selection = layers.selection
    with selection.events.blocker_all():
        layers.insert(index, layer)
        if active is None:
            selection.clear()
        else:
            selection.active = active
    layer.update_transform_box_visibility(False)
    layer.update_highlight_visibility(False)


def add_keeping_selection(viewer: Any, layer: Any) -> Any:
    """``viewer.add_layer(layer)`` leaving the selection as it was (napari's add makes
    the new layer the active one, see :func:`insert_quietly`); several layers selected:
    napari's add."""
    layers = viewer.layers
    if len(layers.selection) > 1:
        return viewer.add_layer(layer)
    insert_quietly(layers, len(layers), layer, layers.selection.active)
    return layer


def create_layer(item: LayerDataTuple) -> Any:
    """A napari layer from a layer-data tuple (not added to any viewer)."""
    from napari.layers import Layer  # heavy: napari.layers imports napari

    return Layer.create(item[0], item[1], item[2])


def _keep_pan_zoom(event: Any) -> None:
    layer = event.source
    if layer.mode != "pan_zoom":
        layer.mode = "pan_zoom"


def _keep_locked(event: Any) -> None:
    layer = event.source
    if layer.editable:  # napari re-enables editing when it re-slices a layer
        layer.editable = False


def lock_layer(layer: Any) -> Any:
    """Lock a view layer against edits: not editable, and held in pan/zoom mode.

    Points and Shapes in pan/zoom mode cannot add, move or delete items; clicks
    still select (the canvas picks items itself, see ``ui.links``).
    """
    layer.editable = False
    layer.events.editable.connect(_keep_locked)
    if hasattr(layer, "mode") and type(layer).__name__.lower() in ("points", "shapes"):
        layer.mode = "pan_zoom"
        layer.events.mode.connect(_keep_pan_zoom)
    return layer


#: Text style keys :func:`_same_text_style` compares (any other key: the style is set anew).
_TEXT_STYLE_KEYS = frozenset({"string", "size", "color", "anchor", "scaling"})


def _same_text_style(text: Any, spec: Any) -> bool:
    """Whether a layer's text manager already has the style ``spec`` asks for, but its size.

    A format string and a colour read from a feature are the only ones compared; any
    other spec is set anew.
    """
    if not isinstance(spec, dict) or set(spec) - _TEXT_STYLE_KEYS:
        return False
    color = spec.get("color")
    if not isinstance(spec.get("string"), str) or not (
        isinstance(color, dict) and set(color) == {"feature"}
    ):
        return False
    anchor = getattr(text.anchor, "value", text.anchor)
    return (
        type(text.string).__name__ == "FormatStringEncoding"
        and text.string.format == spec["string"]
        and type(text.color).__name__ == "DirectColorEncoding"
        and text.color.feature == color["feature"]
        and str(anchor) == str(spec.get("anchor", "center"))
        and bool(text.scaling) == bool(spec.get("scaling", False))
    )


def _put_text_style(layer: Any, spec: Any) -> None:
    """Set a Points layer's text style, after its new features.

    The features setter has already re-encoded the strings and colours from the new
    table; setting the same style again (napari's ``TextManager`` rebuilt from a dict)
    costs about 20 ms per layer on the main thread, so an unchanged style only gets
    its size.
    """
    if _same_text_style(layer.text, spec):
        if "size" in spec and float(layer.text.size) != float(spec["size"]):
            layer.text.size = float(spec["size"])
        return
    layer.text = spec


#: Image data up to this many values is compared with the layer's before it is put in
#: (the canvas's colour keys and matrices; a large image is simply put in).
COMPARED_IMAGE_SIZE = 1_000_000


def _same_colormap(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, str):
        return bool(current.name == wanted)
    colors = getattr(wanted, "colors", None)
    controls = getattr(wanted, "controls", None)
    return bool(
        getattr(wanted, "name", None) == current.name
        and colors is not None
        and np.array_equal(np.asarray(colors), np.asarray(current.colors))
        and controls is not None
        and np.array_equal(np.asarray(controls), np.asarray(current.controls))
        and getattr(wanted, "interpolation", None) == getattr(current, "interpolation", None)
    )


def _put_image(layer: Any, data: Any, kwargs: dict[str, Any]) -> None:
    """An Image layer's new colormap, data and contrast limits, each only when it changed.

    Each one set costs napari a refresh (the thumbnail, the texture uploaded again)
    and vispy a new shader program for a new colormap; a pick puts the same colour
    key strip into most panels.
    """
    if "colormap" in kwargs and not _same_colormap(layer.colormap, kwargs["colormap"]):
        layer.colormap = kwargs["colormap"]
    current = layer.data
    if not (
        isinstance(current, np.ndarray)
        and isinstance(data, np.ndarray)
        and data.size <= COMPARED_IMAGE_SIZE
        and current.shape == data.shape
        and current.dtype == data.dtype
        and np.array_equal(current, data, equal_nan=data.dtype.kind == "f")
    ):
        layer.data = data
    if "contrast_limits" in kwargs and not np.allclose(
        layer.contrast_limits, kwargs["contrast_limits"]
    ):
        layer.contrast_limits = kwargs["contrast_limits"]


def _points_have(layer: Any, name: str, wanted: Any) -> bool:
    """Whether every point of a Points layer already has a scalar ``size`` or
    ``border_width``, or a ``"transparent"`` colour (the text layers' constant style).

    Each of these setters refreshes the layer (a slice and a thumbnail) even with its
    events blocked; a pick puts the same style into the frame's text layers.
    """
    current = np.asarray(getattr(layer, name))
    if len(current) != len(layer.data):
        return False
    if name in ("size", "border_width"):
        return np.ndim(wanted) == 0 and bool(np.all(current == float(wanted)))
    return (
        isinstance(wanted, str)
        and wanted == "transparent"
        and current.ndim == 2
        and bool(np.all(current == 0.0))
    )


def update_layer(layer: Any, item: LayerDataTuple) -> bool:
    """Put a layer-data tuple into an existing layer of the same kind, in place.

    Removing and re-adding a layer costs its vispy visual and napari's
    ``gc.collect()`` on removal (about 0.35 s each); setting ``data``, ``features``,
    colours, text and ``scale``/``translate`` costs only the new geometry. Returns
    False (nothing changed) when the kinds differ.
    """
    data, kwargs, kind = item
    if type(layer).__name__.lower() != kind:
        return False
    locked = not layer.editable
    if kind == "points" and not len(layer.data) and not len(data):
        # empty before and after (the matrices' values under another view): nothing to
        # draw, so no refresh, nor the two visibility changes a hidden layer costs below
        layer.metadata = kwargs["metadata"]
        layer.name = kwargs["name"]
        return True
    if kind in ("points", "shapes") and len(layer.selected_data):
        layer.selected_data = set()
    hidden = kind == "points" and not layer.visible
    if hidden:
        # napari re-slices a hidden Points layer with its old point indices when its
        # colours change (an IndexError with fewer points): shown while updated
        layer.visible = True
    if not layer.visible:  # napari sends nothing to a hidden layer's visual
        forget_drawing(layer)
    if kind == "points":
        # quietly: the drawing must not see new points with the old features' text
        with layer.events.blocker_all():
            features = kwargs["features"]
            if len(features) and list(features.columns) == list(layer.features.columns):
                # the rows napari appends while the data grows take these defaults: an empty
                # table's (None) fails a colour encoding ("Applying the encoding failed")
                if not len(layer.data):
                    layer.features = features.iloc[:0]  # the new columns' types
                layer.feature_defaults = {c: features[c].iloc[0] for c in features.columns}
            layer.data = np.asarray(data, dtype=np.float64).reshape(-1, 2)
            layer.features = kwargs["features"]
            for name in ("size", "face_color", "border_color", "border_width"):
                if name in kwargs and not _points_have(layer, name, kwargs[name]):
                    setattr(layer, name, kwargs[name])
            if "text" in kwargs:
                _put_text_style(layer, kwargs["text"])
        layer.set_view_slice()  # a hidden layer is not refreshed, but must know its new points
        layer.refresh()
    elif kind == "shapes":
        layer.data = []
        if len(data):
            extra = {
                name: kwargs[name]
                for name in ("edge_width", "edge_color", "face_color")
                if name in kwargs
            }
            layer.add(list(data), shape_type=kwargs.get("shape_type", "rectangle"), **extra)
        layer.features = kwargs["features"]
    elif kind == "vectors":
        # one refresh: the data, colours and features together (their lengths agree)
        with layer.events.blocker_all():
            layer.data = data
            layer.features = kwargs["features"]
            layer.edge_color = kwargs["edge_color"]
        layer.refresh()
    else:
        _put_image(layer, data, kwargs)
    for name in ("scale", "translate"):  # each change re-computes the viewer's extent
        if name in kwargs and not np.allclose(getattr(layer, name)[-2:], kwargs[name]):
            setattr(layer, name, kwargs[name])
    layer.metadata = kwargs["metadata"]
    layer.name = kwargs["name"]
    if locked and layer.editable:  # re-slicing under blocked events unlocked it silently
        layer.editable = False
    if hidden:
        layer.visible = False
    return True
