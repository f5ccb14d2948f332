"""The views' layer data under one name, for the modules that draw them (``vd``).

The layer data is made by role, each in its own module:

- ``ui.panels``: the names of the panels, views and node colourings (``Literal`` types);
- ``ui.palette``: colours (class palette, colourmaps, frame and text colours);
- ``ui.layer_tuples``: the canvas slots and the ``(data, kwargs, layer_type)`` tuples' labels;
- ``ui.mapper_nodes``: the Mapper nodes' colours, sizes and feature table;
- ``ui.panel_layers``: the panels' layer data (Mapper, persistence, matrices, HOLE views)
  and :func:`group_layer_data`, which makes any group of the canvas's layers;
- ``ui.drift_view``: the drift plot of a base with variants;
- ``ui.panel_text``, ``ui.panel_axes``, ``ui.color_key``: the visible panel's text, frame
  and colour key;
- ``ui.image_layers``: the image viewer's side (input stack, receptive-field overlay,
  selection gallery), placed by the pure geometry of ``layout.gallery``.

This module only gathers their names: ``from . import view_data as vd`` then
``vd.group_layer_data(...)``, ``vd.PANELS``; new code may import from the homes.
"""

from __future__ import annotations

from ..layout import geometry as geo
from ..layout.gallery import (
    CAPTION_CHARS,
    GALLERY_COLUMNS,
    GALLERY_TILES,
    TILE_BORDER,
    ImageGeometry,
    caption_fit,
    column_gap,
    gallery_placement,
    label_band,
    tile_box,
    variant_gallery_geometry,
)
from .color_key import (
    KEY_COLS,
    KEY_ROWS,
    KEY_TITLES,
    color_key_data,
    panel_key,
    panel_key_data,
)
from .drift_view import (
    DRIFT_SYMBOLS,
    drift_dim,
    drift_layer_data,
    has_variants,
)
from .image_layers import (
    gallery_layer_data,
    gallery_mosaic,
    gallery_text_data,
    gallery_title,
    images_layer_data,
    member_images,
    overlay_for_members,
    overlay_layer_data,
    variant_labels_layer_data,
)
from .layer_tuples import (
    SIDE,
    SLOT_GAP,
    LayerDataTuple,
    layer_name,
    slot_origin,
    slot_placement,
    text_layer,
    topolens_meta,
)
from .mapper_nodes import (
    analysis_predictions,
    class_name,
    edge_widths,
    node_colors,
    node_correct_share,
    node_features,
    node_predicted_class,
    node_sizes,
)
from .palette import (
    HIT_RGBA,
    PALETTE,
    SELECTED_RGBA,
    UNKNOWN_RGB,
    categorical_colors,
    colormap_for,
    continuous_colors,
    drift_colors,
    per_item,
)
from .panel_axes import (
    FRAME_WIDTH,
    PANEL_BOX,
    panel_axes_data,
)
from .panel_layers import (
    barcode_layer_data,
    blob_layer_data,
    dendrogram_layer_data,
    diagram_layer_data,
    edge_layer_data,
    flow_layer_data,
    group_layer_data,
    mapper_layer_data,
    matrix_layer_data,
    matrix_title,
)
from .panel_text import (
    MIN_PANEL_TEXT_SIZE,
    PANEL_TEXT_SIZE,
    SIDE_BY_SIDE_SUBTITLE_CHARS,
    TEXT_PX_PER_CHAR_POINT,
    best_stage_text,
    panel_text_data,
    plural,
    short_subtitle,
)
from .panels import (
    ALL_PANELS,
    ANALYSIS_VIEWS,
    COLOR_BY,
    COLOR_BY_LABELS,
    LAYER_VIEWS,
    MAX_BARS,
    MAX_VALUE_LABELS,
    NEEDS_PREDICTIONS,
    PANEL_LAYERS,
    PANEL_TITLES,
    PANEL_VIEWS,
    PANELS,
    VARIANT_PANELS,
    VIEW_NAMES,
    ColorBy,
    Panel,
    ViewName,
    group_of_view,
    panel_group,
)

__all__ = [
    "ALL_PANELS",
    "ANALYSIS_VIEWS",
    "CAPTION_CHARS",
    "COLOR_BY",
    "COLOR_BY_LABELS",
    "DRIFT_SYMBOLS",
    "FRAME_WIDTH",
    "GALLERY_COLUMNS",
    "GALLERY_TILES",
    "HIT_RGBA",
    "KEY_COLS",
    "KEY_ROWS",
    "KEY_TITLES",
    "LAYER_VIEWS",
    "MAX_BARS",
    "MAX_VALUE_LABELS",
    "MIN_PANEL_TEXT_SIZE",
    "NEEDS_PREDICTIONS",
    "PALETTE",
    "PANELS",
    "PANEL_BOX",
    "PANEL_LAYERS",
    "PANEL_TEXT_SIZE",
    "PANEL_TITLES",
    "PANEL_VIEWS",
    "SELECTED_RGBA",
    "SIDE",
    "SIDE_BY_SIDE_SUBTITLE_CHARS",
    "SLOT_GAP",
    "TEXT_PX_PER_CHAR_POINT",
    "TILE_BORDER",
    "UNKNOWN_RGB",
    "VARIANT_PANELS",
    "VIEW_NAMES",
    "ColorBy",
    "ImageGeometry",
    "LayerDataTuple",
    "Panel",
    "ViewName",
    "analysis_predictions",
    "barcode_layer_data",
    "best_stage_text",
    "blob_layer_data",
    "caption_fit",
    "categorical_colors",
    "class_name",
    "color_key_data",
    "colormap_for",
    "column_gap",
    "continuous_colors",
    "dendrogram_layer_data",
    "diagram_layer_data",
    "drift_colors",
    "drift_dim",
    "drift_layer_data",
    "edge_layer_data",
    "edge_widths",
    "flow_layer_data",
    "gallery_layer_data",
    "gallery_mosaic",
    "gallery_placement",
    "gallery_text_data",
    "gallery_title",
    "geo",
    "group_layer_data",
    "group_of_view",
    "has_variants",
    "images_layer_data",
    "label_band",
    "layer_name",
    "mapper_layer_data",
    "matrix_layer_data",
    "matrix_title",
    "member_images",
    "node_colors",
    "node_correct_share",
    "node_features",
    "node_predicted_class",
    "node_sizes",
    "overlay_for_members",
    "overlay_layer_data",
    "panel_axes_data",
    "panel_group",
    "panel_key",
    "panel_key_data",
    "panel_text_data",
    "per_item",
    "plural",
    "short_subtitle",
    "slot_origin",
    "slot_placement",
    "text_layer",
    "tile_box",
    "topolens_meta",
    "variant_gallery_geometry",
    "variant_labels_layer_data",
]
