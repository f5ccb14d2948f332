"""The selection gallery under an analysed image layer: member images, their heat, a title.

Each shown analysis has a gallery layer (the tiles, with their receptive-field
heat) and a gallery text layer (its title and one caption per tile) in the image
viewer. A selection fills it with its member images (:func:`gallery_of_images`),
a pixel click with the clicked image, a most-moved image with the image beside its
variant (:func:`draw_gallery` with given tiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..topology.results import Analysis
from . import view_data as vd
from .layer_update import update_layer
from .state import ShownAnalyses, ShownAnalysis

__all__ = ["GalleryTiles", "ImageLookup", "draw_gallery", "gallery_of_images", "gallery_spot"]


def gallery_spot(state: ShownAnalyses, entry: ShownAnalysis) -> tuple[vd.ImageGeometry | None, int]:
    """Where an analysis's selection gallery lies: the geometry it is placed by, and its index.

    Analyses of one image layer put theirs side by side below it; a variant shown
    beside its base (``ui.variants``) puts its own right of the base's.
    """
    of = entry.variant_of
    base = state.get(of) if of is not None and of in state else None
    if base is not None and base.image_layer is not None:
        return vd.variant_gallery_geometry(vd.ImageGeometry.of_layer(base.image_layer)), 0
    if entry.image_layer is None:
        return None, 0
    same = [e for e in state if e.image_layer is entry.image_layer and e.variant_of is None]
    return vd.ImageGeometry.of_layer(entry.image_layer), same.index(entry) if entry in same else 0


class ImageLookup:
    """Read-only ``images[i]`` over a dict (only the chosen images are read)."""

    def __init__(self, images: dict[int, np.ndarray]) -> None:
        self._images = images

    def __len__(self) -> int:
        return max(self._images, default=-1) + 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self._images[int(i)]


@dataclass
class GalleryTiles:
    """What a gallery shows: the tiles' images, heat ``(k, H, W)``, ids, classes and captions."""

    images: ImageLookup | None
    heat: np.ndarray
    chosen: np.ndarray
    classes: np.ndarray
    texts: list[str]
    title: str


def _tile_captions(analysis: Analysis, chosen: np.ndarray, classes: np.ndarray) -> list[str]:
    """``#i class`` per tile, ``→ predicted`` where the model got it wrong."""
    names = analysis.class_names
    predictions = vd.analysis_predictions(analysis)
    texts = []
    for k, image in enumerate(chosen):
        truth = vd.class_name(int(classes[k]), names)
        text = f"#{int(image)} {truth}"
        if predictions is not None and image < len(predictions) and predictions[image] >= 0:
            guess = vd.class_name(int(predictions[image]), names)
            if guess != truth:  # the model got it wrong: say what it said
                text += f" → {guess}"
        texts.append(text)
    return texts


def gallery_of_images(
    entry: ShownAnalysis, image_layer: Any, heat: np.ndarray, chosen: np.ndarray, title: str
) -> GalleryTiles:
    """The tiles of images ``chosen`` of ``image_layer`` (None: heat only), captioned."""
    images = None
    if image_layer is not None:
        data = image_layer.data
        stacked = data.ndim == (4 if image_layer.rgb else 3)
        images = {int(i): np.asarray(data[int(i)] if stacked else data) for i in chosen}
    labels = entry.analysis.labels
    classes = np.array(
        [int(labels[i]) if labels is not None and i < len(labels) else -1 for i in chosen],
        dtype=np.int64,
    )
    return GalleryTiles(
        ImageLookup(images) if images is not None else None,
        heat,
        chosen,
        classes,
        _tile_captions(entry.analysis, chosen, classes),
        title,
    )


def draw_gallery(
    viewer: Any, state: ShownAnalyses, entry: ShownAnalysis, tiles: GalleryTiles
) -> None:
    """Put ``tiles`` into ``entry``'s gallery and its title and captions into its text layer."""
    gallery = entry.layers.get("gallery")
    if gallery is None or gallery not in viewer.layers:
        return
    heat = tiles.heat
    mosaic = vd.gallery_mosaic(tiles.images, heat, tiles.chosen, tile_classes=tiles.classes)
    geometry, index = gallery_spot(state, entry)
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
    for k, text in enumerate(tiles.texts):
        (y, x), (th, tw) = vd.tile_box(k, heat.shape[1:])
        centres.append(
            (
                top + (y + th + vd.label_band(heat.shape[1]) / 2) * pixel,
                left + (x + tw / 2) * pixel,
            )
        )
        texts.append(text if len(text) <= cut else text[: cut - 1] + "…")  # fits its tile
    gallery_text = entry.layers.get("gallery_text")
    if gallery_text is not None and gallery_text in viewer.layers:
        update_layer(
            gallery_text,
            vd.gallery_text_data(
                entry.key, geometry, index, tiles.title, centres, texts, tile_pitch=pitch
            ),
        )
