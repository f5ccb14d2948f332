"""Put new layer data into an existing napari layer in place, and lock view layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from .view_data import LayerDataTuple

__all__ = ["create_layer", "lock_layer", "update_layer"]


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
                if name in kwargs:
                    setattr(layer, name, kwargs[name])
            if "text" in kwargs:
                layer.text = kwargs["text"]
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
        if "colormap" in kwargs:
            layer.colormap = kwargs["colormap"]
        layer.data = data
        if "contrast_limits" in kwargs:
            layer.contrast_limits = kwargs["contrast_limits"]
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
