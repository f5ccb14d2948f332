"""The level of a multiscale image layer that the model takes, as its own image layer.

A multiscale layer's world coordinates are its finest level's, while the model may
only run on a coarser level. The analysis reads that level, and its views link
receptive fields, clicks and stack jumps to an image layer in that layer's own
pixels. So the level is added as a plain image layer whose ``scale`` is the
layer's times the level's downsampling factor: napari draws it exactly where it
draws that level of the multiscale layer (pixel ``j`` of the level at pixel
``factor * j`` of the finest, as napari's own multiscale rendering places it), and
every link is made in the pixels the analysis used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..activations.extract import model_accepts
from ..activations.image_source import layer_level

__all__ = ["LEVEL_KEY", "analysed_level_layer"]

#: Metadata key of a level layer: ``{"layer": name of the multiscale layer, "level": k}``.
LEVEL_KEY = "topolens_level_of"


def analysed_level_layer(viewer: Any, layer: Any, model: Any) -> Any:
    """The image layer an analysis of ``layer`` reads and links to.

    A plain layer is returned as it is. For a multiscale layer, the finest level
    ``model`` runs on (``image_source.layer_level``) is added as its own image layer
    overlaying the multiscale one (or the one added for it before is reused) and
    returned. Raises ``ImageError`` when no level fits the model.
    """
    if layer is None or not getattr(layer, "multiscale", False):
        return layer
    levels = list(layer.data)
    level, _source = layer_level(levels, model_accepts(model), rgb=bool(layer.rgb))
    data = levels[level]
    for existing in viewer.layers:
        mark = existing.metadata.get(LEVEL_KEY)
        if (
            isinstance(mark, dict)
            and mark.get("layer") == layer.name
            and mark.get("level") == level
            and existing.data is data
        ):
            return existing
    dims = layer.ndim  # without the colour axis of an RGB layer
    finest = np.asarray(np.shape(levels[0])[:dims], dtype=np.float64)
    chosen = np.asarray(np.shape(data)[:dims], dtype=np.float64)
    factor = finest / chosen
    factor[:-2] = 1.0  # the stack axis is never downsampled (layer_level checks it)
    kwargs: dict[str, Any] = {
        "name": f"{layer.name} (level {level}, analysed)",
        "scale": tuple(np.asarray(layer.scale, dtype=np.float64) * factor),
        "translate": tuple(np.asarray(layer.translate, dtype=np.float64)),
        "rgb": bool(layer.rgb),
        "metadata": {**layer.metadata, LEVEL_KEY: {"layer": layer.name, "level": int(level)}},
    }
    if not layer.rgb:
        kwargs["colormap"] = layer.colormap.name
        kwargs["contrast_limits"] = tuple(layer.contrast_limits)
    from napari.layers import Image  # heavy: napari.layers imports napari

    made = Image(data, **kwargs)
    viewer.add_layer(made)
    return made  # the layer itself: through a docked widget's viewer proxy, add_image gives a proxy
