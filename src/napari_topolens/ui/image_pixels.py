"""Where a click in the image viewer lands, and which image of a stack layer is shown.

The pixel links (``ui.links``, ``ui.variants``) read a click through these: a left
press in pan/zoom mode (never while painting), released without a drag, at the
pixel ``(image, row, col)`` of a stack layer under it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

import numpy as np

__all__ = [
    "current_image",
    "jump_to_member_image",
    "on_click_without_drag",
    "pixel_at",
    "pixel_press",
    "show_image",
]


def pixel_at(image_layer: Any, position: tuple[float, ...]) -> tuple[int, int, int] | None:
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


def pixel_press(viewer: Any, event: Any) -> bool:
    """A left press in the image viewer that may be a pixel link (pan/zoom, not painting)."""
    if event.type != "mouse_press" or getattr(event, "button", 1) != 1:
        return False
    active = viewer.layers.selection.active
    # painting, drawing or picking in a layer: not a pixel link
    return active is None or getattr(active, "mode", "pan_zoom") == "pan_zoom"


def on_click_without_drag(event: Any, on_click: Callable[[], Any]) -> Generator[None, None, None]:
    """The rest of a napari drag callback after its press: ``on_click()`` on a release
    without a move in between (a drag pans the camera instead)."""
    yield
    dragged = False
    while event.type == "mouse_move":
        dragged = True
        yield
    if not dragged:
        on_click()


def _stack_axis(viewer: Any, image_layer: Any) -> int | None:
    """The world axis of a stack layer's images (None: a single image)."""
    data_ndim = image_layer.data.ndim - (1 if image_layer.rgb else 0)
    if data_ndim < 3:
        return None
    return int(viewer.dims.ndim - data_ndim)


def show_image(viewer: Any, image_layer: Any, image: int) -> None:
    """Move the image viewer's stack to one image of a stack layer."""
    axis = _stack_axis(viewer, image_layer)
    if axis is None:
        return
    world = float(image_layer.translate[0] + int(image) * image_layer.scale[0])
    viewer.dims.set_point(axis, world)


def current_image(viewer: Any, image_layer: Any) -> int | None:
    """Index of the image the viewer shows of a stack layer."""
    axis = _stack_axis(viewer, image_layer)
    if axis is None:
        return 0
    world = viewer.dims.point[axis]
    return round((world - image_layer.translate[0]) / image_layer.scale[0])


def jump_to_member_image(viewer: Any, image_layer: Any, member_images: Iterable[int]) -> None:
    """Show the first of ``member_images`` unless the image shown is one of them."""
    images = [int(i) for i in member_images]
    if _stack_axis(viewer, image_layer) is None or not images:
        return
    if current_image(viewer, image_layer) in set(images):
        return
    show_image(viewer, image_layer, images[0])
