"""Where the analysis widget takes class labels from (docs/methods.md §9).

The sources, in the order the widget offers them:

- ``model predictions``: the class the model predicts for each image (computed in
  the worker with ``predict_proba``); the default for a user's own images.
- a ``features`` column of a napari layer: for a Points or Shapes layer drawn on
  the image stack, each point or shape labels the image it sits on; any other
  layer whose table has one row per image labels image ``i`` with row ``i``.
- a CSV file chosen in the widget (``label_sources.read_labels_csv``).
- the true labels a shipped sample's layer carries in its metadata: offered only
  for such a layer, and named so in the list (never taken silently).
- none.

Reading happens on the main thread when Run is pressed; every problem is one
``TopoLensError`` naming the layer, column or file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImageError, TopoLensError
from ..label_sources import (
    ImageLabels,
    checked_class_names,
    labels_from_values,
    read_labels_csv,
)
from .widget_parts import item_stack_indices

__all__ = [
    "CSV_FILE",
    "LAYER_METADATA",
    "NO_LABELS",
    "PREDICTIONS",
    "LabelChoice",
    "default_label_choice",
    "label_choices",
    "read_label_choice",
]

#: The choice values (tuples, so a features column can carry its layer and column).
PREDICTIONS = ("predictions",)
LAYER_METADATA = ("metadata",)
CSV_FILE = ("csv",)
NO_LABELS = ("none",)


@dataclass
class LabelChoice:
    """Labels read from a choice; ``labels`` is None for "none" and for predictions."""

    labels: np.ndarray | None
    class_names: list[str] | None
    description: str
    from_predictions: bool = False
    coded_by_name: bool = False  # text labels numbered by their own names, not the model's


def _metadata_labels(image_layer: Any, n_stack: int) -> np.ndarray | None:
    labels = image_layer.metadata.get("labels") if image_layer is not None else None
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n_stack or not np.issubdtype(labels.dtype, np.integer):
        return None
    return labels


def _feature_layers(viewer: Any, image_layer: Any, n_stack: int) -> list[Any]:
    """Layers whose ``features`` can label the images of ``image_layer``."""
    from napari.layers import Points, Shapes

    found = []
    for layer in viewer.layers:
        if layer is image_layer or "topolens" in layer.metadata:
            continue
        features = getattr(layer, "features", None)
        if features is None or len(features.columns) == 0:
            continue
        if isinstance(layer, (Points, Shapes)):
            if layer.ndim >= 3 and len(features):
                found.append(layer)
        elif len(features) == n_stack:
            found.append(layer)
    return found


def label_choices(viewer: Any, image_layer: Any, n_stack: int) -> list[tuple[str, tuple]]:
    """``(text, value)`` pairs for the widget's Labels list."""
    choices: list[tuple[str, tuple]] = [("model predictions", PREDICTIONS)]
    for layer in _feature_layers(viewer, image_layer, n_stack):
        for column in layer.features.columns:
            choices.append(
                (f"features of {layer.name!r}: {column}", ("features", layer.name, str(column)))
            )
    choices.append(("CSV file...", CSV_FILE))
    if _metadata_labels(image_layer, n_stack) is not None:
        choices.append(("true labels (layer metadata)", LAYER_METADATA))
    choices.append(("none", NO_LABELS))
    return choices


def default_label_choice(choices: list[tuple[str, tuple]]) -> tuple:
    """A sample's true labels when its layer carries them, else the model's predictions."""
    values = [value for _, value in choices]
    return LAYER_METADATA if LAYER_METADATA in values else PREDICTIONS


def read_label_choice(
    choice: tuple,
    viewer: Any,
    image_layer: Any,
    n_stack: int,
    *,
    csv_path: Any = None,
    class_names: list[str] | None = None,
) -> LabelChoice:
    """The labels of ``choice`` for the ``n_stack`` images of ``image_layer``."""
    class_names = checked_class_names(class_names, "the model's class names")  # before any work
    if choice == PREDICTIONS:
        return LabelChoice(
            None, class_names, "the model's own predictions (no true labels)", from_predictions=True
        )
    if choice == NO_LABELS or choice is None:
        return LabelChoice(None, None, "none")
    if choice == LAYER_METADATA:
        labels = _metadata_labels(image_layer, n_stack)
        if labels is None:
            raise ImageError(
                f"layer {image_layer.name!r} carries no labels in its metadata; choose another "
                "label source"
            )
        names = image_layer.metadata.get("class_names")
        found = labels_from_values(
            labels,
            f"the metadata of {image_layer.name!r}",
            class_names=list(map(str, names)) if names is not None else class_names,
        )
        return LabelChoice(
            found.codes, found.class_names, f"true labels in the metadata of {image_layer.name!r}"
        )
    if choice == CSV_FILE:
        text = str(csv_path) if csv_path is not None else ""
        if text in ("", "."):
            raise TopoLensError("choose the labels CSV file (Labels: CSV file...)")
        found = read_labels_csv(text, n_stack, class_names=class_names)
        return LabelChoice(found.codes, found.class_names, found.source, False, found.coded_by_name)
    if isinstance(choice, tuple) and len(choice) == 3 and choice[0] == "features":
        found = _features_labels(viewer, image_layer, n_stack, choice[1], choice[2], class_names)
        return LabelChoice(found.codes, found.class_names, found.source, False, found.coded_by_name)
    raise TopoLensError(f"unknown label source {choice!r}")


def _features_labels(
    viewer: Any,
    image_layer: Any,
    n_stack: int,
    layer_name: str,
    column: str,
    class_names: list[str] | None,
) -> ImageLabels:
    from napari.layers import Points, Shapes

    if layer_name not in viewer.layers:
        raise TopoLensError(f"layer {layer_name!r} is gone; choose another label source")
    layer = viewer.layers[layer_name]
    features = layer.features
    if column not in features.columns:
        raise TopoLensError(
            f"layer {layer_name!r} has no features column {column!r} any more; choose another"
        )
    source = f"column {column!r} of the features of {layer_name!r}"
    values = features[column].to_numpy(copy=True)
    if not isinstance(layer, (Points, Shapes)):
        if len(values) != n_stack:
            raise ImageError(
                f"{source} has {len(values)} rows for {n_stack} images; give one row per image"
            )
        return labels_from_values(values, source, class_names=class_names)
    # one label per point or shape, for the image it sits on
    per_item = labels_from_values(values, source, class_names=class_names)
    image = item_stack_indices(image_layer, layer)
    on_stack = (image >= 0) & (per_item.codes >= 0)
    if not on_stack.any():
        raise ImageError(
            f"no point or shape of {layer_name!r} with a label in {column!r} sits on an image "
            f"of {image_layer.name!r}; place them while browsing the stack"
        )
    codes = np.full(n_stack, -1, dtype=np.int64)
    image, item_codes = image[on_stack], per_item.codes[on_stack]
    order = np.argsort(image, kind="stable")
    image, item_codes = image[order], item_codes[order]
    first = np.r_[True, image[1:] != image[:-1]]
    start = np.flatnonzero(first)
    conflict = np.maximum.reduceat(item_codes, start) != np.minimum.reduceat(item_codes, start)
    if conflict.any():
        raise ImageError(
            f"{source}: image {int(image[start[conflict][0]])} has marks with different labels; "
            "give each image one label"
        )
    codes[image[first]] = item_codes[first]
    return ImageLabels(codes, per_item.class_names, source, per_item.coded_by_name)
