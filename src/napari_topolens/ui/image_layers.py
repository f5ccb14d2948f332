"""Layer data of the image viewer's side: the input stack, the receptive-field overlay,
the selection gallery and the variants' names.

Where these sit is pure geometry (``layout.gallery``); this module makes the pixels
and the napari layer-data tuples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..activations.pointcloud import PointCloud
from ..layout.gallery import (
    GALLERY_COLUMNS,
    TILE_BORDER,
    ImageGeometry,
    caption_fit,
    column_gap,
    gallery_placement,
    label_band,
    tile_box,
)
from ..topology.results import Analysis
from .layer_tuples import LayerDataTuple, layer_name, topolens_meta
from .palette import UNKNOWN_RGB, categorical_colors


def overlay_for_members(
    cloud: PointCloud, members: np.ndarray, n_images: int, *, skip_whole: bool = False
) -> np.ndarray:
    """Heat ``(N, H, W)``: per image, how many member points' receptive fields cover each pixel.

    With ``skip_whole``, fields covering the whole image (pooled or dense layers) are
    left out: they say nothing per pixel, and tinting the whole input would hide it.
    """
    height, width = (int(v) for v in cloud.image_shape)
    heat = np.zeros((n_images, height, width), dtype=np.float32)
    members = np.asarray(members, dtype=np.int64)
    for image, (y0, x0, y1, x1) in zip(cloud.image_index[members], cloud.receptive_field[members]):
        if skip_whole and y0 <= 0 and x0 <= 0 and y1 >= height and x1 >= width:
            continue
        if 0 <= image < n_images:
            heat[image, y0:y1, x0:x1] += 1.0
    return heat


def member_images(cloud: PointCloud, members: np.ndarray) -> np.ndarray:
    """Member images, most member points first (ties: lower index first)."""
    images, counts = np.unique(
        np.asarray(cloud.image_index)[np.asarray(members, dtype=np.int64)], return_counts=True
    )
    return images[np.lexsort((images, -counts))]


def gallery_mosaic(
    images: Any,
    heat: np.ndarray,
    chosen: np.ndarray,
    columns: int = GALLERY_COLUMNS,
    tile_classes: np.ndarray | None = None,
) -> np.ndarray:
    """RGB tiles of ``chosen`` images with the heat in red, each framed in its class colour.

    Grey images stay grey, RGB images keep their colours (the heat tints the
    covered pixels red); under each tile a black band holds its label (drawn as
    text by the caller, at :func:`tile_box` + :func:`label_band`).
    """
    _, h, w = heat.shape
    n = len(chosen)
    b = TILE_BORDER
    if n == 0:
        return np.zeros((h + 2 * b, w + 2 * b, 3), dtype=np.float32)
    rows = math.ceil(n / columns)
    cols = min(n, columns)
    (_, _), (th, tw) = tile_box(0, (h, w), columns)
    mosaic = np.zeros(
        (rows * (th + label_band(h)), cols * (tw + column_gap(w)) - column_gap(w), 3),
        dtype=np.float32,
    )
    frame_colors = (
        categorical_colors(np.asarray(tile_classes))[:, :3]
        if tile_classes is not None
        else np.tile(UNKNOWN_RGB, (n, 1))
    )
    red = np.array([1.0, 0.15, 0.1], dtype=np.float32)
    for k, image in enumerate(chosen):
        if images is not None and image < len(images):
            pixels = np.asarray(images[image], dtype=np.float32)
            if pixels.ndim == 3 and pixels.shape[-1] == 4:
                pixels = pixels[..., :3]
            lo, hi = float(pixels.min()), float(pixels.max())
            pixels = (pixels - lo) / (hi - lo) if hi > lo else np.zeros_like(pixels)
            rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)
        else:
            rgb = np.zeros((h, w, 3), dtype=np.float32)
        tile_heat = heat[image] if image < len(heat) else np.zeros((h, w), np.float32)
        top = float(tile_heat.max())
        # a field covering the whole image (pooled, dense layers) says nothing per pixel:
        # no tint, so the image keeps its own colours
        partial = top > 0 and float(tile_heat.min()) < top
        alpha = (0.5 * tile_heat / top if partial else np.zeros_like(tile_heat))[..., None]
        rgb = rgb * (1 - alpha) + alpha * red
        (y, x), _ = tile_box(k, (h, w), columns)
        mosaic[y : y + th, x : x + tw] = frame_colors[k]
        mosaic[y + b : y + b + h, x + b : x + b + w] = rgb
    return np.clip(mosaic, 0.0, 1.0)


def gallery_title(key: str, variant_of: str | None = None) -> str:
    """The title of an empty selection gallery (short for a variant: it sits under its base's)."""
    if variant_of is not None and key.startswith(f"{variant_of} · "):
        return f"gallery · {key[len(variant_of) + 3 :]}: click a view item"
    return f"selection gallery · {key}: click a view item"


def variant_labels_layer_data(
    key: str, names: Sequence[str], boxes: Sequence[tuple[float, float, float, float]]
) -> LayerDataTuple:
    """Names above the base's images and each variant's (``boxes``: top, left, bottom, right)."""
    pos = [
        ((top - 0.08 * (bottom - top)), (left + right) / 2) for top, left, bottom, right in boxes
    ]
    return (
        np.asarray(pos, dtype=np.float64).reshape(-1, 2),
        {
            "name": layer_name("variant names", key),
            "features": pd.DataFrame({"text": list(names)}),
            "size": 0.0,
            "face_color": "transparent",
            "border_color": "transparent",
            "border_width": 0,
            "text": {"string": "{text}", "size": 9, "color": "white", "anchor": "center"},
            "metadata": topolens_meta("variant_labels", key, ""),
        },
        "points",
    )


def images_layer_data(analysis: Analysis, key: str) -> LayerDataTuple:
    """The input stack from ``analysis.images``, or a blank stand-in of the right shape."""
    images = getattr(analysis, "images", None)
    extra: dict[str, Any] = {}
    extra_kwargs: dict[str, Any] = {}
    if images is None:
        h, w = analysis[analysis.layers[-1]].cloud.image_shape
        # the images the clouds refer to (checked when loaded), not a count the file
        # declares; a read-only view of one blank image: no memory per image
        n = max((int(np.max(r.cloud.image_index)) + 1 for r in analysis if len(r.cloud)), default=1)
        images = np.broadcast_to(np.zeros((1, int(h), int(w)), np.float32), (n, int(h), int(w)))
        extra["placeholder"] = True
        extra_kwargs["contrast_limits"] = (0.0, 1.0)
        name = layer_name("images (not stored in the analysis)", key)
    else:
        images = np.asarray(images)
        name = layer_name("images", key)
    rgb = images.ndim == 4 and images.shape[-1] in (3, 4)
    kwargs: dict[str, Any] = {
        "name": name,
        "metadata": topolens_meta("images", key, "", analysis=analysis, **extra),
        "rgb": rgb,
    }
    if not rgb:
        kwargs["colormap"] = "gray"
    return (images, {**kwargs, **extra_kwargs}, "image")


def overlay_layer_data(analysis: Analysis, key: str, image_layer: Any) -> LayerDataTuple:
    """An empty receptive-field heat overlay aligned with the input stack."""
    rgb = bool(getattr(image_layer, "rgb", False))
    shape = image_layer.data.shape[:-1] if rgb else image_layer.data.shape
    return (
        # read-only and blank until a selection: no memory per image of the stack
        np.broadcast_to(np.zeros((), dtype=np.float32), tuple(shape)),
        {
            "name": layer_name("receptive-field overlay", key),
            "colormap": "red",
            "blending": "additive",
            "opacity": 0.6,
            "contrast_limits": (0.0, 1.0),
            "scale": tuple(image_layer.scale),
            "translate": tuple(image_layer.translate),
            "metadata": topolens_meta("overlay", key, "", analysis=analysis),
        },
        "image",
    )


def gallery_layer_data(
    analysis: Analysis,
    key: str,
    geometry: ImageGeometry,
    index: int,
    h: int,
    w: int,
    variant_of: str | None = None,
) -> list[LayerDataTuple]:
    """An empty gallery (a black tile) and its text (title, tile classes)."""
    mosaic = np.zeros((h, w, 3), dtype=np.float32)
    return [
        (
            mosaic,
            {
                "name": layer_name("selection gallery", key),
                "rgb": True,
                "metadata": topolens_meta("gallery", key, "", analysis=analysis),
                **gallery_placement(geometry, index, mosaic.shape),
            },
            "image",
        ),
        gallery_text_data(key, geometry, index, gallery_title(key, variant_of), [], []),
    ]


def gallery_text_data(
    key: str,
    geometry: ImageGeometry,
    index: int,
    title: str,
    tile_centres: Sequence[tuple[float, float]],
    tile_labels: Sequence[str],
    tile_pitch: float | None = None,
) -> LayerDataTuple:
    """The gallery's title (what is selected) and each tile's class, as text.

    The text is sized in world units and zooms with the tiles (napari's text
    ``scaling``): a caption of :data:`CAPTION_CHARS` characters stays within its
    tile's pitch (``tile_pitch``, world units from one tile's left edge to the
    next's) at any zoom, so neighbours never run into each other.
    """
    (r0, c0), side = geometry.gallery_box(index)
    size, _ = caption_fit(side, tile_pitch)
    pos = [(r0 - 0.06 * side, c0 + 0.5 * side), *tile_centres]
    text = [title, *tile_labels]
    features = pd.DataFrame({"text": text})
    return (
        np.asarray(pos, dtype=np.float64).reshape(-1, 2),
        {
            "name": layer_name("gallery text", key),
            "features": features,
            "size": 0.0,
            "face_color": "transparent",
            "border_color": "transparent",
            "border_width": 0,
            "text": {
                "string": "{text}",
                "size": size,
                "scaling": True,
                "color": "white",
                "anchor": "center",
            },
            "metadata": topolens_meta("gallery_text", key, ""),
        },
        "points",
    )
