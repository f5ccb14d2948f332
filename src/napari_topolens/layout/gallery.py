"""Geometry of the selection gallery and of the image stacks it sits under (pure numbers).

Tiles of a gallery mosaic (frame, label band, column gap), where a stack lies in the
image viewer's world and where each analysis's gallery goes below it, and the size of
its captions. No napari, no Qt: the napari layers are made in ``ui.image_layers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Images tiled in the selection gallery.
GALLERY_TILES = 16
#: Pixels of the class-coloured frame around each gallery tile.
TILE_BORDER = 2
GALLERY_COLUMNS = 4
#: Longest tile caption (longer ones are cut with an ellipsis).
CAPTION_CHARS = 11


def label_band(height: int) -> int:
    """Rows of the black band under each gallery tile that holds its class label."""
    return max(4, round(0.4 * height))


def column_gap(width: int) -> int:
    """Columns between gallery tiles: room for the labels under them."""
    return max(1, round(0.7 * width))


def tile_box(
    k: int, image_shape: tuple[int, ...], columns: int = GALLERY_COLUMNS
) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, left), (height, width)) of gallery tile ``k`` in mosaic pixels (frame included)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    th, tw = h + 2 * TILE_BORDER, w + 2 * TILE_BORDER
    r, c = divmod(k, columns)
    return (r * (th + label_band(h)), c * (tw + column_gap(w))), (th, tw)


@dataclass
class ImageGeometry:
    """Where an input stack lies in the image viewer's world (its two displayed axes)."""

    height: float
    width: float
    origin: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def of_layer(cls, layer: Any) -> ImageGeometry:
        """The geometry of an image layer (anything with ``data``, ``scale``, ``translate``
        and, for colour images, ``rgb``: read as numbers, napari is not imported)."""
        shape = layer.data.shape[:-1] if getattr(layer, "rgb", False) else layer.data.shape
        scale = np.asarray(layer.scale)[-2:]
        translate = np.asarray(layer.translate)[-2:]
        # napari centres pixel k at translate + k * scale: the corner is half a pixel off
        return cls(
            float(shape[-2] * scale[0]),
            float(shape[-1] * scale[1]),
            (float(translate[0] - scale[0] / 2), float(translate[1] - scale[1] / 2)),
        )

    def gallery_box(self, index: int = 0) -> tuple[tuple[float, float], float]:
        """Top-left and side of the gallery of the ``index``-th analysis of these images.

        Below the images, side by side; room above each for its title.
        """
        side = 2.0 * max(self.height, self.width)
        gap = 0.25 * side
        return (
            (self.origin[0] + self.height + gap, self.origin[1] + index * (side + 0.1 * side)),
            side,
        )


def variant_gallery_geometry(base: ImageGeometry) -> ImageGeometry:
    """The geometry a variant's gallery is placed by: its base's, moved below the base's
    gallery (side by side, the titles would run into each other on a laptop screen)."""
    (_r0, _c0), side = base.gallery_box(0)
    return ImageGeometry(base.height, base.width, (base.origin[0] + 1.3 * side, base.origin[1]))


def gallery_placement(
    geometry: ImageGeometry, index: int, mosaic_shape: tuple[int, ...]
) -> dict[str, Any]:
    """scale/translate fitting a mosaic into the gallery box."""
    (r0, c0), side = geometry.gallery_box(index)
    pixel = side / max(mosaic_shape[0], mosaic_shape[1], 1)
    return {"scale": (pixel, pixel), "translate": (r0 + pixel / 2, c0 + pixel / 2)}


def caption_fit(side: float, tile_pitch: float | None = None) -> tuple[float, int]:
    """Text size (world units, napari's text ``scaling`` on) and longest caption of a gallery.

    ``side``: the gallery box's; ``tile_pitch``: world units from one tile's left
    edge to the next's (default: a full row of :data:`GALLERY_COLUMNS`). The size
    is the one of a full gallery at most (the title shares it), and a caption of
    the returned length fills at most 90 % of the pitch: neighbours never touch.
    """
    full = side / GALLERY_COLUMNS  # a full gallery's pitch is about a quarter of its side
    pitch = full if tile_pitch is None else float(tile_pitch)
    # napari draws text of size s about 0.72 s wide per character (measured), an
    # ellipsis as wide as three characters
    size = min(pitch, full) / (0.8 * (CAPTION_CHARS + 1))
    return size, max(CAPTION_CHARS, int(0.9 * pitch / (0.72 * size)) - 2)
