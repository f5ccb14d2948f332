"""An :class:`~napari_topolens.topology.analysis.Analysis` as napari layers.

Every view is a real napari layer (Points, Shapes or Image) with a ``features``
table holding explicit ids, placed beside the input images with
``translate``/``scale``, so it pans, zooms, selects, hides and saves like any layer.

Bookkeeping
-----------
Every layer made here carries ``layer.metadata["topolens"]``, a dict with

- ``"view"``: the view name (``VIEW_NAMES``),
- ``"layer"``: the analysed network layer (``""`` for cross-layer views),
- ``"key"``: the short string that names the shown analysis in this viewer,
- ``"analysis"``: the :class:`Analysis` object itself (the same object in every
  layer of one analysis; the writer saves it from there and the link controller
  finds it there, so nothing is recomputed after reading a saved analysis).

The layer builders (``*_layer_data``) are pure functions from an analysis to napari
layer-data tuples ``(data, kwargs, layer_type)``; :func:`show_analysis` adds them to
a viewer and hands them to the link controller (``ui.links``), and the reader
(``ui.io``) returns the same tuples, so read and shown layers are identical.

Layout
------
The input images sit at their own place (the world origin for a stack made here);
the views fill a grid of equal square cells to its right, two rows of four, each
cell ``CELL_FACTOR`` times the image's size, with a title above it. The gallery of
the current selection sits below the images. Each analysis key has its own band:
the first is level with its images, a later one starts below every other
analysis's layers (:func:`band_below`), so several analyses never overlap. Each view draws in a unit square
(rows down, columns right) that ``scale``/``translate`` map onto its cell.

Not layers
----------
Every view of the issue is expressed as layers; no dock plot is needed. Axis tick
values are the one thing layers express poorly, so numbers that matter (ranges,
counts) are written into the titles and the ``features`` tables instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import LayerError, TopoLensError

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ..topology.analysis import Analysis

__all__ = [
    "CELL_FACTOR",
    "COLOR_BY",
    "VIEW_NAMES",
    "Geometry",
    "IncrementalShow",
    "LayerDataTuple",
    "analysis_layer_data",
    "find_layers",
    "gallery_mosaic",
    "highlight_class",
    "mapper_layout",
    "mapper_layouts",
    "node_colors",
    "overlay_for_members",
    "recolor_nodes",
    "set_edge_threshold",
    "show_analysis",
    "show_analysis_incrementally",
    "topolens_meta",
    "update_layer",
    "view_layer_data",
]

LayerDataTuple = tuple[Any, dict[str, Any], str]

#: Every view name a layer made by the plugin can carry.
VIEW_NAMES = (
    "images",
    "overlay",
    "gallery",
    "titles",
    "axes",
    "mapper_nodes",
    "mapper_edges",
    "diagram",
    "barcode",
    "layer_distances",
    "cka",
    "matrix_labels",
    "flow",
    "flow_clusters",
    "blob_points",
    "blob_hulls",
    "dendrogram_heatmap",
    "dendrogram_tree",
)
#: Views drawn for one analysed network layer (replaced when another layer is shown).
LAYER_VIEWS = (
    "titles",
    "axes",
    "mapper_edges",
    "mapper_nodes",
    "diagram",
    "barcode",
    "flow",
    "flow_clusters",
    "blob_hulls",
    "blob_points",
    "dendrogram_heatmap",
    "dendrogram_tree",
)
#: Node features the Mapper nodes can be coloured by.
COLOR_BY = ("dominant_class", "purity", "mean_lens", "size", "component", "community")
#: Cell side as a multiple of the image's larger side.
CELL_FACTOR = 3.0
#: Gap between cells (room for titles), as a fraction of the cell.
CELL_GAP = 0.3
#: Bars per homology dimension drawn in the barcode (the most persistent ones).
MAX_BARS = 60
#: Images tiled in the selection gallery.
GALLERY_TILES = 16

# A colour-blind-aware categorical palette (Okabe-Ito, then Tableau) for classes and
# clusters; unknown (-1) is grey.
_PALETTE = np.array(
    [
        (0.902, 0.624, 0.000),
        (0.337, 0.706, 0.914),
        (0.000, 0.620, 0.451),
        (0.941, 0.894, 0.259),
        (0.000, 0.447, 0.698),
        (0.835, 0.369, 0.000),
        (0.800, 0.475, 0.655),
        (0.600, 0.600, 0.950),
        (0.737, 0.741, 0.133),
        (0.090, 0.745, 0.812),
        (0.890, 0.467, 0.761),
        (0.549, 0.337, 0.294),
        (0.580, 0.404, 0.741),
        (0.173, 0.627, 0.173),
        (0.839, 0.153, 0.157),
        (1.000, 0.733, 0.471),
        (0.682, 0.780, 0.910),
        (0.596, 0.875, 0.541),
        (1.000, 0.596, 0.588),
        (0.769, 0.612, 0.580),
    ]
)
_UNKNOWN = np.array([0.55, 0.55, 0.55])
_DIM_COLORS = np.array([(0.337, 0.706, 0.914), (0.902, 0.624, 0.000), (0.0, 0.62, 0.451)])
_TEXT = "white"
_BORDER = np.array([0.1, 0.1, 0.1, 1.0])
_UNKNOWN_RGBA = np.array([0.55, 0.55, 0.55, 1.0])
_EDGE_RGBA = np.array([0.85, 0.85, 0.85, 1.0])


def categorical_colors(codes: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """RGBA per code from the palette (code -1 and below: grey)."""
    codes = np.asarray(codes, dtype=np.int64)
    rgb = np.where((codes >= 0)[:, None], _PALETTE[np.maximum(codes, 0) % len(_PALETTE)], _UNKNOWN)
    return np.column_stack([rgb, np.full(len(codes), alpha)])


def continuous_colors(values: np.ndarray, colormap: str = "viridis") -> np.ndarray:
    """RGBA per value through a napari colormap, min-max scaled (nan: grey)."""
    from napari.utils.colormaps import ensure_colormap

    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    out = np.tile(np.append(_UNKNOWN, 1.0), (len(values), 1))
    if finite.any():
        lo, hi = float(values[finite].min()), float(values[finite].max())
        scaled = (values[finite] - lo) / (hi - lo) if hi > lo else np.full(finite.sum(), 0.5)
        out[finite] = ensure_colormap(colormap).map(scaled)
    return out


def per_item(values: Any, fallback: Any) -> Any:
    """Per-item colours/sizes, or one ``fallback`` value for a layer with no items.

    napari rejects an empty ``(0, 4)`` colour array (it takes the minimum of it), so
    a view with no items (a Mapper graph with no nodes, no H1 bars) gets a single
    colour, which napari keeps as the default for items added later.
    """
    return values if len(values) else fallback


# --------------------------------------------------------------------------- geometry


@dataclass
class Geometry:
    """Where the input images lie in world coordinates (their two displayed axes).

    Attributes
    ----------
    height, width : float
        World size of one image (pixels times the layer's scale).
    origin : tuple of float
        World ``(row, col)`` of the image's top-left corner.
    band_top : float or None
        World row where this analysis's band (its grid and gallery) starts; None:
        level with the images. A second analysis in the same viewer gets a band
        below the first so their views never overlap (:func:`band_below`).
    """

    height: float
    width: float
    origin: tuple[float, float] = (0.0, 0.0)
    band_top: float | None = None

    @property
    def top(self) -> float:
        """World row where the grid's band starts."""
        return self.origin[0] if self.band_top is None else float(self.band_top)

    @property
    def cell(self) -> float:
        """World side of one view cell."""
        return CELL_FACTOR * max(self.height, self.width)

    @property
    def gap(self) -> float:
        return CELL_GAP * self.cell

    def cell_origin(self, row: int, col: int) -> tuple[float, float]:
        """World top-left corner of grid cell (row, col); col 0 is right of the images."""
        left = self.origin[1] + max(self.width, self.cell) + self.gap
        top = self.top + self.gap
        return (top + row * (self.cell + self.gap), left + col * (self.cell + self.gap))

    def gallery_origin(self) -> tuple[float, float]:
        """World top-left of the gallery cell, below the images."""
        return (self.top + self.height + self.gap, self.origin[1])

    @classmethod
    def of_layer(cls, layer: Any, band_top: float | None = None) -> Geometry:
        """Geometry of an Image layer's last two (displayed) axes."""
        shape = layer.data.shape[:-1] if getattr(layer, "rgb", False) else layer.data.shape
        scale = np.asarray(layer.scale)[-2:]
        translate = np.asarray(layer.translate)[-2:]
        # napari centres pixel k at translate + k * scale: the corner is half a pixel off
        return cls(
            float(shape[-2] * scale[0]),
            float(shape[-1] * scale[1]),
            (float(translate[0] - scale[0] / 2), float(translate[1] - scale[1] / 2)),
            band_top,
        )


def band_below(viewer: Any, key: str, geometry: Geometry) -> float | None:
    """World row for a new analysis's band: below every other analysis's layers.

    None when ``key`` is the only analysis in the viewer (its grid then sits level
    with the images). Computed from the layers' world extents, so analyses of
    images of any size, and analyses read from files, are all cleared.
    """
    bottoms = [
        float(layer.extent.world[1][-2])
        for layer in find_layers(viewer)
        if layer.metadata["topolens"].get("key") != key and layer.ndim >= 2
    ]
    if not bottoms:
        return None
    # room for the next band's header and titles, which sit above its first row
    return max(bottoms) + geometry.gap


#: Grid cell (row, col) of each per-layer view and cross-layer matrix.
CELLS = {
    "mapper": (0, 0),
    "diagram": (0, 1),
    "barcode": (0, 2),
    "flow": (0, 3),
    "blobs": (1, 0),
    "dendrogram": (1, 1),
    "layer_distances": (1, 2),
    "cka": (1, 3),
}


def _place(geometry: Geometry, cell: str) -> dict[str, Any]:
    """scale/translate that map a unit square onto a grid cell."""
    side = geometry.cell
    return {"scale": (side, side), "translate": geometry.cell_origin(*CELLS[cell])}


def topolens_meta(view: str, key: str, analysis: Any, layer: str = "", **extra: Any) -> dict:
    """The ``metadata`` of a plugin layer (see the module docstring)."""
    return {"topolens": {"view": view, "layer": layer, "key": key, "analysis": analysis, **extra}}


def _name(view_title: str, key: str, layer: str = "") -> str:
    return f"{view_title} · {layer} · {key}" if layer else f"{view_title} · {key}"


# --------------------------------------------------------------------------- mapper


def mapper_layout(graph: Any, seed: int = 0) -> np.ndarray:
    """Node positions ``(n, 2)`` (row, col) in the unit square, computed once per graph.

    Each connected component is laid out on its own (Kamada-Kawai up to 60 nodes,
    seeded spring layout above, both on the Jaccard-weighted graph), then the
    components are shelf-packed by decreasing size in boxes whose side grows with
    the square root of their node count. A single force layout of the whole graph
    would fling small components and isolated nodes to the edges.
    """
    import networkx as nx

    n = graph.n_nodes
    if n == 0:
        return np.zeros((0, 2))
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for (a, b), w in zip(np.asarray(graph.edges).reshape(-1, 2), graph.edge_weight):
        g.add_edge(int(a), int(b), weight=float(w))
    components = sorted(
        (sorted(c) for c in nx.connected_components(g)), key=lambda c: (-len(c), c[0])
    )
    local: list[np.ndarray] = []
    for comp in components:
        if len(comp) == 1:
            local.append(np.zeros((1, 2)))
            continue
        sub = g.subgraph(comp)
        if len(comp) <= 2:
            pos = {comp[0]: (0.0, 0.0), comp[1]: (1.0, 0.0)}
        elif len(comp) <= 60:
            pos = nx.kamada_kawai_layout(sub)
        else:
            pos = nx.spring_layout(sub, seed=seed, weight="weight", iterations=100)
        xy = np.array([pos[v] for v in comp], dtype=np.float64)
        xy -= xy.min(axis=0)
        span = xy.max()
        local.append(xy / span if span > 0 else xy)
    sides = np.array([math.sqrt(len(c)) for c in components])
    total_width = max(sides[0], math.sqrt(float(np.sum(sides**2))) * 1.15)
    out = np.zeros((n, 2))
    x = y = shelf = 0.0
    for comp, xy, side in zip(components, local, sides):
        if x > 0 and x + side > total_width + 1e-9:
            x, y, shelf = 0.0, y + shelf, 0.0
        inner = 0.8 * side if len(comp) > 1 else 0.0
        box = xy * inner + (side - inner) / 2
        out[comp, 1] = x + box[:, 0]
        out[comp, 0] = y + box[:, 1]
        x += side
        shelf = max(shelf, side)
    height = y + shelf
    extent = max(total_width, height)
    out /= extent
    out[:, 0] += (1 - height / extent) / 2
    return 0.06 + 0.88 * out


def node_colors(graph: Any, color_by: str, class_names: Sequence[str] | None = None) -> np.ndarray:
    """RGBA per Mapper node for one of :data:`COLOR_BY`."""
    if color_by not in COLOR_BY:
        raise TopoLensError(
            f"cannot colour nodes by {color_by!r}; choose one of {', '.join(COLOR_BY)}"
        )
    if color_by in ("dominant_class", "component", "community"):
        return categorical_colors(np.asarray(getattr(graph, color_by)))
    values = np.asarray(getattr(graph, color_by), dtype=np.float64)
    if color_by == "size":
        values = np.log1p(values)
    return continuous_colors(values, "viridis")


def _class_name(code: int, class_names: Sequence[str] | None) -> str:
    if code < 0:
        return "unknown"
    if class_names is not None and code < len(class_names):
        return str(class_names[code])
    return str(code)


def node_sizes(graph: Any) -> np.ndarray:
    """Unit-square diameters growing with the square root of the member count."""
    size = np.asarray(graph.size, dtype=np.float64)
    top = size.max() if len(size) else 1.0
    crowd = max(1.0, math.sqrt(max(graph.n_nodes, 1) / 30.0))
    return (0.018 + 0.05 * np.sqrt(size / top)) / crowd


def edge_widths(weight: np.ndarray, n_nodes: int) -> np.ndarray:
    """Unit-square widths growing with the Jaccard weight."""
    crowd = max(1.0, math.sqrt(max(n_nodes, 1) / 30.0))
    return (0.002 + 0.012 * np.asarray(weight, dtype=np.float64)) / crowd


def mapper_layer_data(
    analysis: Any,
    layer: str,
    key: str,
    geometry: Geometry,
    *,
    layout: np.ndarray | None = None,
    color_by: str = "dominant_class",
    edge_threshold: float = 0.0,
) -> list[LayerDataTuple]:
    """Mapper nodes (Points) and edges (Shapes lines) of one layer."""
    result = analysis[layer]
    graph = result.mapper
    pos = mapper_layout(graph, seed=int(analysis.config.seed)) if layout is None else layout
    names = analysis.class_names
    features = pd.DataFrame(
        {
            "node": np.arange(graph.n_nodes, dtype=np.int64),
            "node_id": list(graph.node_ids),
            "size": np.asarray(graph.size, dtype=np.int64),
            "purity": np.asarray(graph.purity, dtype=np.float64),
            "dominant_class": [_class_name(int(c), names) for c in graph.dominant_class],
            "mean_lens": np.asarray(graph.mean_lens, dtype=np.float64),
            "component": np.asarray(graph.component, dtype=np.int64),
            "community": np.asarray(graph.community, dtype=np.int64),
            "x": pos[:, 1],
            "y": pos[:, 0],
        }
    )
    place = _place(geometry, "mapper")
    nodes = (
        pos.copy(),
        {
            "name": _name("mapper nodes", key, layer),
            "features": features,
            "size": per_item(node_sizes(graph), 0.05),
            "face_color": per_item(node_colors(graph, color_by, names), _UNKNOWN_RGBA),
            "border_color": per_item(np.tile(_BORDER, (graph.n_nodes, 1)), _BORDER),
            "border_width": 0.08,
            "metadata": topolens_meta(
                "mapper_nodes", key, analysis, layer, color_by=color_by, layout=pos
            ),
            **place,
        },
        "points",
    )
    edges_idx = np.asarray(graph.edges, dtype=np.int64).reshape(-1, 2)
    weight = np.asarray(graph.edge_weight, dtype=np.float64)
    keep = weight >= edge_threshold
    edges = _edge_tuple(
        analysis,
        layer,
        key,
        geometry,
        pos,
        edges_idx[keep],
        weight[keep],
        np.flatnonzero(keep),
        graph.n_nodes,
        edge_threshold,
    )
    return [edges, nodes]


def _edge_tuple(analysis, layer, key, geometry, pos, idx, weight, edge_ids, n_nodes, threshold):
    lines = [np.array([pos[a], pos[b]]) for a, b in idx]
    features = pd.DataFrame(
        {
            "edge": np.asarray(edge_ids, dtype=np.int64),
            "source": idx[:, 0] if len(idx) else np.zeros(0, np.int64),
            "target": idx[:, 1] if len(idx) else np.zeros(0, np.int64),
            "jaccard": weight,
        }
    )
    alpha = 0.45 + 0.5 * weight
    colors = (
        np.column_stack([np.full((len(weight), 3), 0.85), alpha]) if len(weight) else _EDGE_RGBA
    )
    kwargs: dict[str, Any] = {
        "name": _name("mapper edges", key, layer),
        "shape_type": "line",
        "features": features,
        "edge_width": list(edge_widths(weight, n_nodes)),
        "edge_color": colors,
        "metadata": topolens_meta(
            "mapper_edges", key, analysis, layer, edge_threshold=float(threshold)
        ),
        **_place(geometry, "mapper"),
    }
    return (lines, kwargs, "shapes")


# --------------------------------------------------------------------------- persistence


def _diagram_frame(diagrams: Sequence[np.ndarray]) -> float:
    finite = [d[np.isfinite(d).all(axis=1)] for d in diagrams]
    values = np.concatenate([f.ravel() for f in finite]) if finite else np.zeros(0)
    top = float(values.max()) if len(values) else 1.0
    return top if top > 0 else 1.0


_D0, _D1 = 0.1, 0.9  # the diagram's axes in the unit square
_INF_ROW = 0.04


def _diagram_rc(birth: np.ndarray, death: np.ndarray, top: float) -> np.ndarray:
    col = _D0 + (_D1 - _D0) * birth / top
    row = np.where(
        np.isfinite(death), _D1 - (_D1 - _D0) * np.nan_to_num(death, posinf=top) / top, _INF_ROW
    )
    return np.column_stack([row, col])


def diagram_layer_data(
    analysis: Any, layer: str, key: str, geometry: Geometry
) -> list[LayerDataTuple]:
    """Persistence diagram: one point per bar of every dimension."""
    pers = analysis[layer].persistence
    top = _diagram_frame(pers.diagrams)
    dims, bars, births, deaths = [], [], [], []
    for dim, diagram in enumerate(pers.diagrams):
        diagram = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
        dims.append(np.full(len(diagram), dim))
        bars.append(np.arange(len(diagram)))
        births.append(diagram[:, 0])
        deaths.append(diagram[:, 1])
    dim_a, bar_a = np.concatenate(dims).astype(np.int64), np.concatenate(bars).astype(np.int64)
    birth, death = np.concatenate(births), np.concatenate(deaths)
    features = pd.DataFrame(
        {"dim": dim_a, "bar": bar_a, "birth": birth, "death": death, "persistence": death - birth}
    )
    colors = np.column_stack([_DIM_COLORS[np.minimum(dim_a, 2)], np.full(len(dim_a), 0.85)])
    return [
        (
            _diagram_rc(birth, death, top),
            {
                "name": _name("persistence diagram", key, layer),
                "features": features,
                "size": 0.022,
                "face_color": per_item(colors, _UNKNOWN_RGBA),
                "border_color": per_item(np.tile(_BORDER, (len(dim_a), 1)), _BORDER),
                "border_width": 0.08,
                "metadata": topolens_meta("diagram", key, analysis, layer, top=top),
                **_place(geometry, "diagram"),
            },
            "points",
        )
    ]


def barcode_bars(pers: Any, max_bars: int = MAX_BARS) -> pd.DataFrame:
    """The bars the barcode draws: per dimension the ``max_bars`` most persistent."""
    rows = []
    for dim, diagram in enumerate(pers.diagrams):
        diagram = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
        length = diagram[:, 1] - diagram[:, 0]
        order = np.lexsort(
            (np.arange(len(diagram)), -np.nan_to_num(length, posinf=np.finfo(float).max))
        )
        for bar in order[:max_bars]:
            rows.append(
                (dim, int(bar), diagram[bar, 0], diagram[bar, 1], length[bar], len(diagram))
            )
    return pd.DataFrame(rows, columns=["dim", "bar", "birth", "death", "persistence", "of_bars"])


def barcode_layer_data(
    analysis: Any, layer: str, key: str, geometry: Geometry
) -> list[LayerDataTuple]:
    """Barcode: one Shapes line per shown bar, H0 above H1, longest first."""
    pers = analysis[layer].persistence
    top = _diagram_frame(pers.diagrams)
    table = barcode_bars(pers)
    n = len(table)
    n_dims = int(table["dim"].nunique()) if n else 1
    slots = n + 2 * max(n_dims - 1, 0)
    pitch = 0.86 / max(slots, 1)
    rows = np.zeros(n)
    slot = 0
    last_dim = None
    for i, dim in enumerate(table["dim"].to_numpy()):
        if last_dim is not None and dim != last_dim:
            slot += 2
        rows[i] = 0.07 + (slot + 0.5) * pitch
        slot += 1
        last_dim = dim
    birth = table["birth"].to_numpy()
    death = np.nan_to_num(table["death"].to_numpy(), posinf=top * 1.06)
    col0 = 0.05 + 0.9 * birth / (top * 1.06)
    col1 = 0.05 + 0.9 * death / (top * 1.06)
    col1 = np.maximum(col1, col0 + 0.003)
    lines = [np.array([[r, a], [r, b]]) for r, a, b in zip(rows, col0, col1)]
    dims = table["dim"].to_numpy().astype(np.int64)
    width = float(min(0.7 * pitch, 0.012))
    return [
        (
            lines,
            {
                "name": _name("barcode", key, layer),
                "shape_type": "line",
                "features": table,
                "edge_width": [width] * n,
                "edge_color": np.column_stack([_DIM_COLORS[np.minimum(dims, 2)], np.ones(n)])
                if n
                else _EDGE_RGBA,
                "metadata": topolens_meta(
                    "barcode", key, analysis, layer, top=top, bar_width=width
                ),
                **_place(geometry, "barcode"),
            },
            "shapes",
        )
    ]


# --------------------------------------------------------------------------- matrices


def _matrix_box(n: int) -> tuple[float, float, float]:
    """(top, left, pixel) of an n x n heatmap in the unit square, room left for labels."""
    left, top, side = 0.30, 0.16, 0.66
    return top, left, side / max(n, 1)


#: Matrices up to this many layers print their values in the cells (more would not fit).
MAX_VALUE_LABELS = 6


def _short_label(name: str, width: int = 9) -> str:
    """A network layer name cut to ``width`` characters (the end kept: it says most)."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _short_number(value: float) -> str:
    """At most three characters for a heatmap cell: 0.6, 5.3, 20, 815, 1e3."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:.0e}".replace("e+0", "e")
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}"


def matrix_layer_data(analysis: Any, key: str, geometry: Geometry) -> list[LayerDataTuple]:
    """Layer x layer diagram-distance and linear-CKA heatmaps, with text labels."""
    kind = analysis.config.layer_distance
    names = analysis.layers
    n = len(names)
    out: list[LayerDataTuple] = []
    label_pos, label_text, label_anchor, label_color = [], [], [], []
    cell = geometry.cell
    for view, matrix_key, cmap, limits in (
        ("layer_distances", kind, "magma", None),
        ("cka", "cka", "viridis", (0.0, 1.0)),
    ):
        matrix = np.asarray(analysis.layer_distances[matrix_key], dtype=np.float32)
        finite = matrix[np.isfinite(matrix)]
        if limits is None:
            hi = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            limits = (0.0, hi)
        top, left, pixel = _matrix_box(n)
        origin = geometry.cell_origin(*CELLS[view])
        title = (
            f"H{analysis.config.distance_dim} {kind.replace('_', ' ')} distance"
            if view == "layer_distances"
            else "linear CKA"
        )
        out.append(
            (
                np.nan_to_num(matrix, nan=0.0),
                {
                    "name": _name(title, key),
                    "colormap": cmap,
                    "contrast_limits": limits,
                    "interpolation2d": "nearest",
                    "scale": (pixel * cell, pixel * cell),
                    "translate": (
                        origin[0] + (top + pixel / 2) * cell,
                        origin[1] + (left + pixel / 2) * cell,
                    ),
                    "metadata": topolens_meta(
                        view, key, analysis, "", kind=matrix_key, layers=list(names)
                    ),
                },
                "image",
            )
        )
        # text keeps its screen size while the cells shrink at the whole-grid zoom, so
        # the columns are numbered and only the rows carry the (shortened) names
        for i, name in enumerate(names):
            label_pos.append(
                (origin[0] + (top + (i + 0.5) * pixel) * cell, origin[1] + 0.14 * cell)
            )
            label_text.append(f"{i + 1} {_short_label(name, 6)}")
            label_anchor.append("row")
            label_color.append("white")
            label_pos.append(
                (origin[0] + (top - 0.04) * cell, origin[1] + (left + (i + 0.5) * pixel) * cell)
            )
            label_text.append(str(i + 1))
            label_anchor.append("column")
            label_color.append("white")
        values = [_short_number(float(v)) for v in matrix.ravel() if np.isfinite(v)]
        # three digits side by side run into the next cell: leave those to the hover readout
        fits = n <= MAX_VALUE_LABELS and all(sum(c.isdigit() for c in v) <= 2 for v in values)
        for i in range(n if fits else 0):
            for j in range(n):
                label_pos.append(
                    (
                        origin[0] + (top + (i + 0.5) * pixel) * cell,
                        origin[1] + (left + (j + 0.5) * pixel) * cell,
                    )
                )
                value = matrix[i, j]
                label_text.append("" if not np.isfinite(value) else _short_number(float(value)))
                label_anchor.append("value")
                bright = (
                    np.isfinite(value)
                    and (value - limits[0]) / ((limits[1] - limits[0]) or 1.0) > 0.6
                )
                label_color.append("black" if bright else "white")
    features = pd.DataFrame({"text": label_text, "role": label_anchor, "text_color": label_color})
    out.append(
        (
            np.array(label_pos),
            {
                "name": _name("matrix labels", key),
                "features": features,
                "size": 0.0,
                "face_color": "transparent",
                "border_color": "transparent",  # text only: no dot under the text
                "border_width": 0,
                "text": {
                    "string": "{text}",
                    "size": 7,
                    "color": {"feature": "text_color"},
                    "anchor": "center",
                },
                "metadata": topolens_meta("matrix_labels", key, analysis, ""),
            },
            "points",
        )
    )
    return out


# --------------------------------------------------------------------------- HOLE views


def flow_geometry(
    flow: Any,
) -> tuple[dict[tuple[int, int], tuple[float, float]], np.ndarray, float]:
    """Sankey blocks: {(stage, cluster): (top row, height)}, stage columns, block width."""
    memberships = np.asarray(flow.memberships)
    n_stages, m = memberships.shape
    cols = 0.06 + 0.84 * np.arange(n_stages) / max(n_stages - 1, 1)
    blocks: dict[tuple[int, int], tuple[float, float]] = {}
    for s in range(n_stages):
        ids, counts = np.unique(memberships[s], return_counts=True)
        order = np.argsort(np.where(ids < 0, np.iinfo(np.int64).max, ids), kind="stable")
        ids, counts = ids[order], counts[order]
        gap = min(0.012, 0.2 / max(len(ids) - 1, 1))
        per_point = (0.84 - gap * (len(ids) - 1)) / m
        row = 0.1
        for c, k in zip(ids, counts):
            blocks[(s, int(c))] = (row, k * per_point)
            row += k * per_point + gap
    return blocks, cols, 0.035


def _band(
    x0: float, x1: float, top0: float, bot0: float, top1: float, bot1: float, k: int = 8
) -> np.ndarray:
    """A Sankey band: two eased curves of k points (Shapes triangulation grows steeply with k)."""
    t = np.linspace(0.0, 1.0, k)
    ease = 3 * t**2 - 2 * t**3
    col = x0 + (x1 - x0) * t
    upper = np.column_stack([top0 + (top1 - top0) * ease, col])
    lower = np.column_stack([bot0 + (bot1 - bot0) * ease, col])[::-1]
    return np.vstack([upper, lower])


def flow_layer_data(
    analysis: Any, layer: str, key: str, geometry: Geometry
) -> list[LayerDataTuple]:
    """Cluster flow: cluster blocks (Shapes rectangles) and Sankey bands (polygons)."""
    result = analysis[layer]
    flow = result.flow
    memberships = np.asarray(flow.memberships)
    labels = np.asarray(result.point_labels)
    blocks, cols, width = flow_geometry(flow)
    per_point = {}
    for (s, c), (_row, h) in blocks.items():
        per_point[(s, c)] = h / max(int(np.sum(memberships[s] == c)), 1)
    out_cursor = {k: v[0] for k, v in blocks.items()}
    in_cursor = dict(out_cursor)
    bands, rows, band_colors = [], [], []
    flows = np.asarray(flow.flows, dtype=np.int64).reshape(-1, 4)
    # stack bands inside each block in the order of their other end
    order = np.lexsort((flows[:, 2], flows[:, 1], flows[:, 0])) if len(flows) else np.zeros(0, int)
    for f in order:
        s, a, b, count = (int(v) for v in flows[f])
        h0 = count * per_point[(s, a)]
        h1 = count * per_point[(s + 1, b)]
        t0, t1 = out_cursor[(s, a)], in_cursor[(s + 1, b)]
        out_cursor[(s, a)] += h0
        in_cursor[(s + 1, b)] += h1
        bands.append(_band(cols[s] + width, cols[s + 1], t0, t0 + h0, t1, t1 + h1))
        inside = (memberships[s] == a) & (memberships[s + 1] == b)
        known = labels[inside]
        known = known[known >= 0]
        colour_code = int(np.bincount(known).argmax()) if known.size else (a if a >= 0 else -1)
        band_colors.append(colour_code)
        rows.append((s, a, b, count))
    band_features = pd.DataFrame(rows, columns=["stage", "cluster", "next_cluster", "count"])
    band_rgba = (
        categorical_colors(np.array(band_colors, dtype=np.int64), alpha=0.55)
        if rows
        else _EDGE_RGBA
    )
    place = _place(geometry, "flow")
    block_rows, rects, block_colors = [], [], []
    for (s, c), (row, h) in sorted(blocks.items()):
        rects.append(np.array([[row, cols[s]], [row + max(h, 0.002), cols[s] + width]]))
        block_rows.append((s, flow.stage_names[s], c, int(np.sum(memberships[s] == c))))
        block_colors.append((0.35, 0.35, 0.35, 1.0) if c < 0 else (0.92, 0.92, 0.92, 1.0))
    block_features = pd.DataFrame(block_rows, columns=["stage", "stage_name", "cluster", "count"])
    return [
        (
            bands,
            {
                "name": _name("cluster flow", key, layer),
                "shape_type": "polygon",
                "features": band_features,
                "face_color": band_rgba,
                "edge_color": band_rgba,
                "edge_width": [0.0] * len(bands),
                "metadata": topolens_meta("flow", key, analysis, layer),
                **place,
            },
            "shapes",
        ),
        (
            rects,
            {
                "name": _name("flow clusters", key, layer),
                "shape_type": "rectangle",
                "features": block_features,
                "face_color": per_item(np.array(block_colors), _EDGE_RGBA),
                "edge_color": per_item(np.tile(_BORDER, (len(rects), 1)), _BORDER),
                "edge_width": [0.002] * len(rects),
                "metadata": topolens_meta("flow_clusters", key, analysis, layer),
                **place,
            },
            "shapes",
        ),
    ]


def _unit_box(coords: np.ndarray) -> tuple[np.ndarray, float]:
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = float(max(hi - lo)) or 1.0
    centre = (lo + hi) / 2
    return centre, span


def blob_layer_data(
    analysis: Any, layer: str, key: str, geometry: Geometry
) -> list[LayerDataTuple]:
    """Blob graph: PCA points coloured by label and padded hulls of the best clusters."""
    result = analysis[layer]
    blobs = result.blobs
    coords = np.asarray(blobs.coords, dtype=np.float64)
    shapes = [np.asarray(h, dtype=np.float64) for h in blobs.hulls]
    everything = np.vstack([coords, *shapes]) if shapes else coords
    centre, span = _unit_box(everything)

    def to_unit(xy: np.ndarray) -> np.ndarray:  # PC1 right, PC2 up
        u = (xy - centre) / span
        return np.column_stack([0.5 - 0.86 * u[:, 1], 0.5 + 0.86 * u[:, 0]])

    labels = np.asarray(blobs.labels, dtype=np.int64)
    names = analysis.class_names
    point_features = pd.DataFrame(
        {
            "point": np.arange(len(coords), dtype=np.int64),
            "cluster": np.asarray(blobs.cluster, dtype=np.int64),
            "label": labels,
            "class_name": [_class_name(int(c), names) for c in labels],
            "image": np.asarray(result.cloud.image_index, dtype=np.int64),
        }
    )
    hull_ids = np.asarray(blobs.hull_clusters, dtype=np.int64)
    hull_rgba = categorical_colors(hull_ids, alpha=0.22)
    hull_edge = categorical_colors(hull_ids, alpha=0.9)
    place = _place(geometry, "blobs")
    crowd = max(1.0, math.sqrt(len(coords) / 200.0))
    return [
        (
            [to_unit(h[:-1] if len(h) > 3 and np.allclose(h[0], h[-1]) else h) for h in shapes],
            {
                "name": _name("blob hulls", key, layer),
                "shape_type": "polygon",
                "features": pd.DataFrame({"cluster": hull_ids}),
                "face_color": per_item(hull_rgba, _EDGE_RGBA),
                "edge_color": per_item(hull_edge, _EDGE_RGBA),
                "edge_width": [0.004] * len(hull_ids),
                "metadata": topolens_meta(
                    "blob_hulls", key, analysis, layer, stage=int(result.flow.best_stage)
                ),
                **place,
            },
            "shapes",
        ),
        (
            to_unit(coords),
            {
                "name": _name("blob points", key, layer),
                "features": point_features,
                "size": 0.018 / crowd,
                "face_color": per_item(categorical_colors(labels, alpha=0.9), _UNKNOWN_RGBA),
                "border_color": per_item(np.tile(_BORDER, (len(coords), 1)), _BORDER),
                "border_width": 0.1,
                "metadata": topolens_meta("blob_points", key, analysis, layer),
                **place,
            },
            "points",
        ),
    ]


_TREE_TOP, _TREE_BOTTOM = 0.02, 0.26
_HEAT_TOP, _HEAT_LEFT, _HEAT_SIDE = 0.28, 0.14, 0.7


def dendrogram_layer_data(
    analysis: Any, layer: str, key: str, geometry: Geometry
) -> list[LayerDataTuple]:
    """Heatmap dendrogram: the distance heatmap (Image) under the tree (Shapes paths)."""
    dendro = analysis[layer].dendrogram
    n = len(dendro.index)
    cell = geometry.cell
    origin = geometry.cell_origin(*CELLS["dendrogram"])
    distances = np.asarray(dendro.distances, dtype=np.float32)
    hi = float(distances.max()) if distances.size and distances.max() > 0 else 1.0
    pixel = _HEAT_SIDE / max(n, 1)
    heat = (
        distances,
        {
            "name": _name("dendrogram heatmap", key, layer),
            "colormap": "magma",
            "contrast_limits": (0.0, hi),
            "interpolation2d": "nearest",
            "scale": (pixel * cell, pixel * cell),
            "translate": (
                origin[0] + (_HEAT_TOP + pixel / 2) * cell,
                origin[1] + (_HEAT_LEFT + pixel / 2) * cell,
            ),
            "metadata": topolens_meta(
                "dendrogram_heatmap",
                key,
                analysis,
                layer,
                rows=np.asarray(dendro.index)[np.asarray(dendro.order)],
            ),
        },
        "image",
    )
    icoord = np.asarray(dendro.icoord, dtype=np.float64).reshape(-1, 4)
    dcoord = np.asarray(dendro.dcoord, dtype=np.float64).reshape(-1, 4)
    top = float(dcoord.max()) if dcoord.size and dcoord.max() > 0 else 1.0
    col = _HEAT_LEFT + _HEAT_SIDE * icoord / (10.0 * max(n, 1))
    row = _TREE_BOTTOM - (_TREE_BOTTOM - _TREE_TOP) * dcoord / top
    paths = [np.column_stack([r, c]) for r, c in zip(row, col)]
    sizes = np.diff(np.asarray(dendro.member_offsets))
    features = pd.DataFrame(
        {
            "merge": np.arange(len(paths), dtype=np.int64),
            "height": np.asarray(dendro.linkage, dtype=np.float64).reshape(-1, 4)[:, 2]
            if len(paths)
            else np.zeros(0),
            "size": sizes.astype(np.int64),
        }
    )
    width = max(0.0015, min(0.004, 0.5 / max(n, 1)))
    tree = (
        paths,
        {
            "name": _name("dendrogram tree", key, layer),
            "shape_type": "path",
            "features": features,
            "edge_color": np.tile([0.85, 0.85, 0.85, 1.0], (len(paths), 1))
            if paths
            else _EDGE_RGBA,
            "edge_width": [width] * len(paths),
            "metadata": topolens_meta("dendrogram_tree", key, analysis, layer, width=width),
            **_place(geometry, "dendrogram"),
        },
        "shapes",
    )
    return [heat, tree]


# --------------------------------------------------------------------------- titles, axes


#: Short names of the cluster-flow stages, drawn under the columns at any zoom.
_STAGE_LABELS = {
    "labels": "class",
    "smallest": "fine",
    "best": "best",
    "intermediate": "mid",
    "merged": "coarse",
}


def mapper_title(n_nodes: int) -> str:
    """The Mapper cell's title; an empty graph says so instead of showing a blank cell."""
    return f"Mapper graph: {n_nodes} nodes" if n_nodes else "Mapper graph: no nodes"


def best_stage_text(flow: Any) -> str:
    """Subtitle naming the cluster-flow stage the blob graph shows, with its cut and size."""
    stage = int(flow.best_stage)
    memberships = np.asarray(flow.memberships)
    clusters = np.unique(memberships[stage]) if memberships.size else np.zeros(0, np.int64)
    n_clusters = int(np.sum(clusters >= 0))
    cut = float(np.asarray(flow.thresholds, dtype=np.float64)[stage])
    # short: the subtitle shares the row with the barcode's at the whole-grid zoom
    where = f"t = {cut:.3g}" if np.isfinite(cut) else str(flow.stage_names[stage])
    return f"best: {where}, {n_clusters} cluster{'s' if n_clusters != 1 else ''}"


def titles_layer_data(
    analysis: Any, layer: str, key: str, geometry: Geometry
) -> list[LayerDataTuple]:
    """Titles above every cell and axis names, as text of an invisible Points layer."""
    result = analysis[layer]
    cell = geometry.cell
    pers = result.persistence
    bars = barcode_bars(pers)
    counts = ", ".join(
        f"H{d} {int((bars['dim'] == d).sum())}/{len(pers.diagrams[d])}"
        for d in range(len(pers.diagrams))
    )
    top = _diagram_frame(pers.diagrams)
    q = result.quality
    kind = analysis.config.layer_distance.replace("_", " ")
    flow = result.flow
    # short titles: text keeps its screen size while the cells shrink when the whole
    # grid is in view, so long ones ran into their neighbours; the network layer is
    # named once, in a header above the grid
    titles = {
        "mapper": mapper_title(result.mapper.n_nodes),
        "diagram": "persistence diagram",
        "barcode": "barcode",
        "flow": "cluster flow",
        "blobs": "blob graph (PCA)",
        "dendrogram": "heatmap dendrogram",
        "layer_distances": f"H{analysis.config.distance_dim} {kind} dist.",
        "cka": "linear CKA",
    }
    subtitles = {
        "diagram": f"0 to {top:.3g}; top: inf",
        "barcode": counts,
        "flow": best_stage_text(flow),
        "blobs": f"purity {q.purity:.2f}, ARI {q.ari:.2f}",
        "dendrogram": f"{len(result.dendrogram.index)} points",
        "mapper": (
            f"{len(result.mapper.edges)} edges"
            if result.mapper.n_nodes
            else f"{len(result.cloud)} points; try more images"
        ),
        "layer_distances": "between layers",
        "cka": "between layers",
    }
    pos, text, role = [], [], []
    for cell_name, title in titles.items():
        r0, c0 = geometry.cell_origin(*CELLS[cell_name])
        pos.append((r0 - 0.15 * cell, c0 + 0.5 * cell))
        text.append(title)
        role.append("title")
        pos.append((r0 - 0.06 * cell, c0 + 0.5 * cell))
        text.append(subtitles[cell_name])
        role.append("subtitle")
    r0, c0 = geometry.cell_origin(*CELLS["mapper"])
    pos.append((r0 - 0.25 * cell, c0 + 2 * cell + 1.5 * geometry.gap))  # centred over the grid
    text.append(f"{key}: network layer {layer}")
    role.append("header")
    r0, c0 = geometry.cell_origin(*CELLS["diagram"])
    pos += [(r0 + (_D1 + 0.05) * cell, c0 + 0.5 * cell), (r0 + 0.5 * cell, c0 + 0.05 * cell)]
    text += ["birth", "death"]
    role += ["axis", "axis"]
    r0, c0 = geometry.cell_origin(*CELLS["flow"])
    _, cols, width = flow_geometry(flow)
    for s, name in enumerate(flow.stage_names):  # short names under the columns, two rows
        pos.append((r0 + (0.975 + 0.07 * (s % 2)) * cell, c0 + (cols[s] + width / 2) * cell))
        text.append(_STAGE_LABELS.get(name, _short_label(name, 6)))
        role.append("axis")
    g0 = geometry.gallery_origin()
    pos.append((g0[0] - 0.15 * cell, g0[1] + 0.5 * cell))
    text.append("selection gallery")
    role.append("title")
    pos.append((g0[0] - 0.06 * cell, g0[1] + 0.5 * cell))
    text.append("click a view item")
    role.append("subtitle")
    return [
        (
            np.array(pos),
            {
                "name": _name("titles", key, layer),
                "features": pd.DataFrame({"text": text, "role": role}),
                "size": 0.0,
                "face_color": "transparent",
                "border_color": "transparent",  # text only: no dot under the text
                "border_width": 0,
                "text": {"string": "{text}", "size": 8, "color": _TEXT, "anchor": "center"},
                "metadata": topolens_meta("titles", key, analysis, layer),
            },
            "points",
        )
    ]


def axes_layer_data(
    analysis: Any, layer: str, key: str, geometry: Geometry
) -> list[LayerDataTuple]:
    """Cell frames, and the persistence diagram's diagonal and infinity line."""
    cell = geometry.cell
    shapes, kinds, types, colors, widths = [], [], [], [], []
    for name in CELLS:
        r0, c0 = geometry.cell_origin(*CELLS[name])
        shapes.append(np.array([[r0, c0], [r0 + cell, c0 + cell]]))
        kinds.append(f"frame:{name}")
        types.append("rectangle")
        colors.append((0.3, 0.3, 0.3, 1.0))
        widths.append(0.004 * cell)
    g0 = geometry.gallery_origin()
    shapes.append(np.array([[g0[0], g0[1]], [g0[0] + cell, g0[1] + cell]]))
    kinds.append("frame:gallery")
    types.append("rectangle")
    colors.append((0.3, 0.3, 0.3, 1.0))
    widths.append(0.004 * cell)
    r0, c0 = geometry.cell_origin(*CELLS["diagram"])

    def at(r: float, c: float) -> list[float]:
        return [r0 + r * cell, c0 + c * cell]

    shapes += [
        np.array([at(_D1, _D0), at(_D0, _D1)]),  # the diagonal
        np.array([at(_INF_ROW, _D0), at(_INF_ROW, _D1)]),  # infinite deaths
        np.array([at(_D1, _D0), at(_D1, _D1)]),  # birth axis
        np.array([at(_D1, _D0), at(_D0, _D0)]),  # death axis
    ]
    kinds += ["diagonal", "infinity", "birth_axis", "death_axis"]
    types += ["line"] * 4
    colors += [
        (0.8, 0.8, 0.8, 1.0),
        (0.6, 0.6, 0.6, 1.0),
        (0.6, 0.6, 0.6, 1.0),
        (0.6, 0.6, 0.6, 1.0),
    ]
    widths += [0.004 * cell, 0.002 * cell, 0.003 * cell, 0.003 * cell]
    return [
        (
            shapes,
            {
                "name": _name("axes", key, layer),
                "shape_type": types,
                "features": pd.DataFrame({"what": kinds}),
                # frames only: a filled face would dim the heatmaps drawn beneath
                "face_color": np.zeros((len(shapes), 4)),
                "edge_color": np.array(colors),
                "edge_width": widths,
                "metadata": topolens_meta("axes", key, analysis, layer),
            },
            "shapes",
        )
    ]


# --------------------------------------------------------------------------- overlay & gallery


def overlay_for_members(cloud: Any, members: np.ndarray, n_images: int) -> np.ndarray:
    """Heat ``(N, H, W)``: for each image, how many member points' receptive fields cover each pixel.

    Pooled and non-spatial layers have the whole image as field, so a member image
    lights up entirely.
    """
    height, width = (int(v) for v in cloud.image_shape)
    heat = np.zeros((n_images, height, width), dtype=np.float32)
    members = np.asarray(members, dtype=np.int64)
    for image, (y0, x0, y1, x1) in zip(cloud.image_index[members], cloud.receptive_field[members]):
        if 0 <= image < n_images:
            heat[image, y0:y1, x0:x1] += 1.0
    return heat


def member_images(cloud: Any, members: np.ndarray) -> np.ndarray:
    """Member images, most member points first (ties: lower index first)."""
    images, counts = np.unique(
        np.asarray(cloud.image_index)[np.asarray(members, dtype=np.int64)], return_counts=True
    )
    return images[np.lexsort((images, -counts))]


def gallery_mosaic(
    images: np.ndarray | None, heat: np.ndarray, chosen: np.ndarray, columns: int = 4
) -> np.ndarray:
    """RGB tiles of ``chosen`` images, grey with the heat overlaid in red; 1-pixel gaps."""
    _, h, w = heat.shape
    n = len(chosen)
    if n == 0:
        return np.zeros((h, w, 3), dtype=np.float32)
    rows = math.ceil(n / columns)
    cols = min(n, columns)
    mosaic = np.zeros((rows * (h + 1) - 1, cols * (w + 1) - 1, 3), dtype=np.float32)
    for k, image in enumerate(chosen):
        if images is not None and image < len(images):
            gray = np.asarray(images[image], dtype=np.float32)
            if gray.ndim == 3:
                gray = gray.mean(axis=-1)
            lo, hi = float(gray.min()), float(gray.max())
            gray = (gray - lo) / (hi - lo) if hi > lo else np.zeros_like(gray)
        else:
            gray = np.zeros((h, w), dtype=np.float32)
        tile_heat = heat[image]
        top = float(tile_heat.max())
        alpha = 0.6 * tile_heat / top if top > 0 else np.zeros_like(tile_heat)
        rgb = np.stack(
            [gray * (1 - alpha) + alpha, gray * (1 - alpha) + 0.25 * alpha, gray * (1 - alpha)], -1
        )
        r, c = divmod(k, columns)
        mosaic[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = rgb
    return np.clip(mosaic, 0.0, 1.0)


def gallery_placement(geometry: Geometry, mosaic_shape: tuple[int, ...]) -> dict[str, Any]:
    """scale/translate fitting a mosaic into the gallery cell."""
    side = geometry.cell
    pixel = side / max(mosaic_shape[0], mosaic_shape[1], 1)
    r0, c0 = geometry.gallery_origin()
    # napari puts pixel centres at translate + k * scale
    return {"scale": (pixel, pixel), "translate": (r0 + pixel / 2, c0 + pixel / 2)}


def _n_images(analysis: Any) -> int:
    images = getattr(analysis, "images", None)
    if images is not None:
        return len(images)
    n = int((analysis.provenance or {}).get("n_images", 0) or 0)
    for result in analysis:
        n = max(n, int(np.max(result.cloud.image_index)) + 1)
    return n


def images_layer_data(analysis: Any, key: str) -> LayerDataTuple:
    """The input stack from ``analysis.images``, or a blank stand-in of the right shape."""
    images = getattr(analysis, "images", None)
    meta_extra: dict[str, Any] = {}
    if images is None:
        h, w = analysis[analysis.layers[-1]].cloud.image_shape
        images = np.zeros((_n_images(analysis), int(h), int(w)), dtype=np.float32)
        meta_extra["placeholder"] = True
        name = _name("images (not stored in the analysis)", key)
    else:
        images = np.asarray(images)
        name = _name("images", key)
    rgb = images.ndim == 4 and images.shape[-1] in (3, 4)
    kwargs: dict[str, Any] = {
        "name": name,
        "metadata": topolens_meta("images", key, analysis, "", **meta_extra),
        "rgb": rgb,
    }
    if not rgb:
        kwargs["colormap"] = "gray"
    return (images, kwargs, "image")


def overlay_layer_data(
    analysis: Any,
    key: str,
    image_shape: tuple[int, ...],
    scale: Sequence[float],
    translate: Sequence[float],
) -> LayerDataTuple:
    """An empty heat overlay aligned with the input stack."""
    return (
        np.zeros(image_shape, dtype=np.float32),
        {
            "name": _name("receptive-field overlay", key),
            "colormap": "red",
            "blending": "additive",
            "opacity": 0.6,
            "contrast_limits": (0.0, 1.0),
            "scale": tuple(scale),
            "translate": tuple(translate),
            "metadata": topolens_meta("overlay", key, analysis, ""),
        },
        "image",
    )


def gallery_layer_data(
    analysis: Any, key: str, geometry: Geometry, h: int, w: int
) -> LayerDataTuple:
    """An empty gallery (a black tile) in the gallery cell."""
    mosaic = np.zeros((h, w, 3), dtype=np.float32)
    return (
        mosaic,
        {
            "name": _name("selection gallery", key),
            "rgb": True,
            "metadata": topolens_meta("gallery", key, analysis, "", tiles=[]),
            **gallery_placement(geometry, mosaic.shape),
        },
        "image",
    )


# --------------------------------------------------------------------------- assembly


def view_layer_data(
    analysis: Any,
    layer: str,
    key: str,
    geometry: Geometry,
    *,
    color_by: str = "dominant_class",
    edge_threshold: float = 0.0,
    layout: np.ndarray | None = None,
) -> list[LayerDataTuple]:
    """Every per-layer view of one analysed network layer, bottom layer first."""
    if layer not in analysis:
        raise LayerError(
            f"layer {layer!r} is not in this analysis; analysed layers: {', '.join(analysis.layers)}"
        )
    return [
        *axes_layer_data(analysis, layer, key, geometry),
        *titles_layer_data(analysis, layer, key, geometry),
        *mapper_layer_data(
            analysis,
            layer,
            key,
            geometry,
            layout=layout,
            color_by=color_by,
            edge_threshold=edge_threshold,
        ),
        *diagram_layer_data(analysis, layer, key, geometry),
        *barcode_layer_data(analysis, layer, key, geometry),
        *flow_layer_data(analysis, layer, key, geometry),
        *blob_layer_data(analysis, layer, key, geometry),
        *dendrogram_layer_data(analysis, layer, key, geometry),
    ]


def analysis_layer_data(
    analysis: Any,
    layer_name: str | None = None,
    *,
    key: str = "analysis",
    color_by: str = "dominant_class",
    edge_threshold: float = 0.0,
    band_top: float | None = None,
) -> list[LayerDataTuple]:
    """All layers of a shown analysis, images included (what the reader returns).

    ``band_top``: world row of the band the images and views start at (None: 0),
    so an analysis read into a viewer that shows others lands below them.
    """
    layer_name = analysis.layers[-1] if layer_name is None else layer_name
    images = images_layer_data(analysis, key)
    data = images[0]
    rgb = images[1]["rgb"]
    shape = data.shape[:-1] if rgb else data.shape
    top = 0.0 if band_top is None else float(band_top) + 0.5
    geometry = Geometry(float(shape[-2]), float(shape[-1]), (top - 0.5, -0.5))
    ones = (1.0,) * len(shape)
    zeros = (0.0,) * (len(shape) - 2) + (top, 0.0)
    images[1]["translate"] = zeros
    h, w = int(shape[-2]), int(shape[-1])
    return [
        images,
        overlay_layer_data(analysis, key, tuple(shape), ones, zeros),
        gallery_layer_data(analysis, key, geometry, h, w),
        *matrix_layer_data(analysis, key, geometry),
        *view_layer_data(
            analysis, layer_name, key, geometry, color_by=color_by, edge_threshold=edge_threshold
        ),
    ]


def find_layers(viewer: Any, key: str | None = None, view: str | None = None) -> list[Any]:
    """Plugin layers of ``viewer``, optionally of one analysis key and/or view."""
    found = []
    for layer in viewer.layers:
        meta = layer.metadata.get("topolens") if isinstance(layer.metadata, dict) else None
        if not isinstance(meta, dict) or "view" not in meta:
            continue
        if key is not None and meta.get("key") != key:
            continue
        if view is not None and meta.get("view") != view:
            continue
        found.append(layer)
    return found


def show_analysis(
    viewer: napari.Viewer,
    analysis: Analysis,
    layer_name: str | None = None,
    *,
    image_layer: Any = None,
    color_by: str = "dominant_class",
    edge_threshold: float = 0.0,
    layouts: dict[str, np.ndarray] | None = None,
) -> list[Any]:
    """Show every view of one analysed network layer (default: the last) and link them, at once.

    The synchronous path (tests, scripts, the reader's callers): it returns when
    every layer is in. Calling it again for the same analysis updates that
    analysis's per-layer views in place (new ``data``, ``features``, colours, text,
    ``scale``/``translate`` on the same layers, e.g. to show another network
    layer); the images, overlay, gallery and layer x layer
    heatmaps are kept. The widgets use :func:`show_analysis_incrementally`, which
    runs the same steps one per event-loop turn so the viewer stays responsive.

    Parameters
    ----------
    layouts : dict of str to ndarray, optional
        Mapper node layouts per network layer computed beforehand (e.g. in a
        worker thread by :func:`mapper_layouts`); missing ones are computed here.

    Returns
    -------
    list of napari.layers.Layer
        The layers now showing the views: those added and those updated in place.
    """
    shown: list[Any] = []
    for _ in _show_steps(
        viewer, analysis, layer_name, image_layer, color_by, edge_threshold, layouts, shown
    ):
        pass
    return shown


def mapper_layouts(analysis: Any) -> dict[str, np.ndarray]:
    """Mapper node layout of every analysed layer (pure; worker threads call it)."""
    seed = int(analysis.config.seed)
    return {result.name: mapper_layout(result.mapper, seed=seed) for result in analysis}


class IncrementalShow:
    """A :func:`show_analysis` run one layer per event-loop turn (Qt main thread).

    Adding a napari layer costs 0.1-0.5 s (vispy visuals, Shapes triangulation,
    layer controls); adding a dozen in one call froze the viewer for seconds. Each
    step here adds or updates one layer and then returns to the event loop
    (``QTimer.singleShot(1, ...)``), so paints, mouse events and timers run in
    between; the links are complete when the last layer is in.

    Attributes
    ----------
    layers : list of napari.layers.Layer
        The layers added or updated so far (all of them once :attr:`done`).
    done : bool
        True once every layer is in (or the show failed or was cancelled).
    error : BaseException or None
        What stopped the show, if anything failed.
    """

    _running: ClassVar[set[IncrementalShow]] = set()  # keeps pending shows alive between turns

    def __init__(
        self,
        viewer: Any,
        analysis: Any,
        layer_name: str | None = None,
        *,
        image_layer: Any = None,
        color_by: str = "dominant_class",
        edge_threshold: float = 0.0,
        layouts: dict[str, np.ndarray] | None = None,
        on_done: Any = None,
        on_error: Any = None,
    ) -> None:
        self.layers: list[Any] = []
        self.done = False
        self.cancelled = False
        self.error: BaseException | None = None
        self._viewer = viewer
        self._existing = set(map(id, viewer.layers))
        self._on_done, self._on_error = on_done, on_error
        self._stand_ins: list[Any] = []  # added in place of a view removed by this show
        self._steps = _show_steps(
            viewer,
            analysis,
            layer_name,
            image_layer,
            color_by,
            edge_threshold,
            layouts,
            self.layers,
            self._stand_ins,
        )

    def start(self) -> IncrementalShow:
        """Schedule the first step; returns ``self``."""
        IncrementalShow._running.add(self)
        self._schedule()
        return self

    def _schedule(self) -> None:
        from qtpy.QtCore import QTimer

        # 1 ms, not 0: a zero timeout is a posted event, which Qt may process before
        # due timers (the step would then starve other timers); a real timer takes
        # its turn with them
        QTimer.singleShot(1, self._step)

    def _step(self) -> None:
        if self.done:
            return
        try:
            next(self._steps)
        except StopIteration:
            self._finish()
            if self._on_done is not None:
                self._on_done(list(self.layers))
            return
        except Exception as exc:
            self.error = exc
            self._finish()
            if self._on_error is not None:
                self._on_error(exc)
            else:
                raise
            return
        self._schedule()

    def _finish(self) -> None:
        self.done = True
        IncrementalShow._running.discard(self)

    def cancel(self) -> None:
        """Stop, and remove the layers this show added.

        Layers updated in place stay, and so do layers added in place of a view
        this show removed (its kind changed): removing those would leave that view
        missing. A cancelled switch can thus leave some views showing the new
        network layer and some the old one, but never a view missing or doubled;
        the next show of the analysis updates every one of them.
        """
        if not self.done:
            self._steps.close()
        self.cancelled = True
        self._finish()
        stand_ins = set(map(id, self._stand_ins))
        for layer in list(self.layers):
            if (
                id(layer) not in self._existing
                and id(layer) not in stand_ins
                and layer in self._viewer.layers
            ):
                self._viewer.layers.remove(layer)
        self.layers.clear()


def show_analysis_incrementally(
    viewer: napari.Viewer,
    analysis: Analysis,
    layer_name: str | None = None,
    *,
    image_layer: Any = None,
    color_by: str = "dominant_class",
    edge_threshold: float = 0.0,
    layouts: dict[str, np.ndarray] | None = None,
    on_done: Any = None,
    on_error: Any = None,
) -> IncrementalShow:
    """:func:`show_analysis`, one layer per event-loop turn (the widgets' path).

    Returns at once with the running :class:`IncrementalShow`; ``on_done(layers)``
    runs on the main thread when the last layer is in and linked, ``on_error(exc)``
    if a step fails. Argument checks happen in the first step.
    """
    return IncrementalShow(
        viewer,
        analysis,
        layer_name,
        image_layer=image_layer,
        color_by=color_by,
        edge_threshold=edge_threshold,
        layouts=layouts,
        on_done=on_done,
        on_error=on_error,
    ).start()


def _show_steps(
    viewer: Any,
    analysis: Any,
    layer_name: str | None,
    image_layer: Any,
    color_by: str,
    edge_threshold: float,
    layouts: dict[str, np.ndarray] | None,
    shown: list[Any],
    stand_ins: list[Any] | None = None,
):
    """The work of a show, as a generator that yields after each layer added or updated.

    ``shown`` collects the layers added or updated; ``stand_ins`` those of them
    added in place of a per-layer view removed here (so a cancel keeps them).
    """
    from napari.layers import Layer

    from .links import links_for

    if color_by not in COLOR_BY:
        raise TopoLensError(
            f"cannot colour nodes by {color_by!r}; choose one of {', '.join(COLOR_BY)}"
        )
    layer_name = analysis.layers[-1] if layer_name is None else layer_name
    if layer_name not in analysis:
        raise LayerError(
            f"layer {layer_name!r} is not in this analysis; analysed layers: {', '.join(analysis.layers)}"
        )
    links = links_for(viewer)
    key = links.key_for(analysis)
    for name, layout in (layouts or {}).items():
        links.set_layout(key, name, layout)
    active = viewer.layers.selection.active

    def add(item: LayerDataTuple) -> Any:
        layer = Layer.create(item[0], item[1], item[2])
        viewer.add_layer(layer)
        shown.append(layer)
        return layer

    per_layer: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    for old in find_layers(viewer, key):
        view = old.metadata["topolens"]["view"]
        target = per_layer if view in LAYER_VIEWS else kept
        if view in target:  # a duplicate (e.g. copied by the user): the last one is used
            viewer.layers.remove(target[view])
        target[view] = old
    first_show = not per_layer and not kept
    if image_layer is None:
        image_layer = kept.get("images") or links.image_layer_of(key)
    band_top = links.band_of(key)
    if first_show:
        h, w = analysis[layer_name].cloud.image_shape
        band_top = band_below(viewer, key, Geometry(float(h), float(w)))
    if image_layer is None:
        item = images_layer_data(analysis, key)
        if band_top is not None:  # a stack made here sits at the top of its own band
            ndim = item[0].ndim - (1 if item[1]["rgb"] else 0)
            item[1]["translate"] = (0.0,) * (ndim - 2) + (band_top + 0.5, 0.0)
            band_top = None
        image_layer = add(item)
        yield
    links.register(key, analysis, image_layer, band_top=band_top)
    geometry = Geometry.of_layer(image_layer, band_top)
    rgb = bool(getattr(image_layer, "rgb", False))
    shape = image_layer.data.shape[:-1] if rgb else image_layer.data.shape
    if "overlay" not in kept:
        add(
            overlay_layer_data(
                analysis, key, tuple(shape), image_layer.scale, image_layer.translate
            )
        )
        yield
    if "gallery" not in kept:
        add(gallery_layer_data(analysis, key, geometry, int(shape[-2]), int(shape[-1])))
        yield
    if "layer_distances" not in kept:
        for item in matrix_layer_data(analysis, key, geometry):
            add(item)
            yield
    layout = links.layout_for(key, layer_name)
    for item in view_layer_data(
        analysis,
        layer_name,
        key,
        geometry,
        color_by=color_by,
        edge_threshold=edge_threshold,
        layout=layout,
    ):
        old = per_layer.pop(item[1]["metadata"]["topolens"]["view"], None)
        if old is not None and update_layer(old, item):
            links.refresh(old)
            shown.append(old)
        else:
            if old is not None:
                viewer.layers.remove(old)
            new = add(item)
            if old is not None and stand_ins is not None:
                stand_ins.append(new)
        yield
    for old in per_layer.values():  # views this layer does not have
        viewer.layers.remove(old)
    links.show_layer(key, layer_name)
    # keep the user's layer active (napari activates each added layer)
    viewer.layers.selection.active = active if active in viewer.layers else image_layer
    if first_show:  # the views lie beside the images, off the canvas until the user zooms out
        viewer.reset_view()


def update_layer(layer: Any, item: LayerDataTuple) -> bool:
    """Put a layer-data tuple into an existing layer of the same kind, in place.

    Removing and re-adding a layer costs its vispy visual and napari's
    ``gc.collect()`` on removal (about 0.35 s each); setting ``data``, ``features``,
    colours, text and ``scale``/``translate`` costs only the new geometry. Returns
    False (nothing changed) when the kinds differ.
    """
    data, kwargs, kind = item
    if type(layer).__name__.lower() != kind:  # public API only (no _type_string)
        return False
    if kind in ("points", "shapes") and len(layer.selected_data):
        layer.selected_data = set()
    if kind == "points":
        layer.data = np.asarray(data, dtype=np.float64).reshape(-1, 2)
        layer.features = kwargs["features"]
        for name in ("size", "face_color", "border_color", "border_width"):
            if name in kwargs:
                setattr(layer, name, kwargs[name])
        if "text" in kwargs:
            layer.text = kwargs["text"]
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
    else:
        layer.data = data
        if "contrast_limits" in kwargs:
            layer.contrast_limits = kwargs["contrast_limits"]
    for name in ("scale", "translate"):  # each change re-computes the viewer's extent
        if name in kwargs and not np.allclose(getattr(layer, name)[-2:], kwargs[name]):
            setattr(layer, name, kwargs[name])
    layer.metadata = kwargs["metadata"]
    layer.name = kwargs["name"]
    return True


def _state_layers(viewer: Any, key: str, view: str) -> list[Any]:
    layers = find_layers(viewer, key, view)
    if not layers:
        raise TopoLensError(
            f"no {view.replace('_', ' ')} layer of analysis {key!r} in this viewer; show the analysis first"
        )
    return layers


def recolor_nodes(viewer: Any, key: str, color_by: str) -> None:
    """Colour the Mapper nodes of analysis ``key`` by a node feature (:data:`COLOR_BY`)."""
    for layer in _state_layers(viewer, key, "mapper_nodes"):
        meta = layer.metadata["topolens"]
        graph = meta["analysis"][meta["layer"]].mapper
        colors = node_colors(graph, color_by, meta["analysis"].class_names)
        nodes = layer.features["node"].to_numpy()
        layer.face_color = colors[nodes]
        meta["color_by"] = color_by
        meta.pop("faded_class", None)


def set_edge_threshold(viewer: Any, key: str, threshold: float) -> None:
    """Show only the Mapper edges whose Jaccard weight is at least ``threshold``."""
    for layer in _state_layers(viewer, key, "mapper_edges"):
        meta = layer.metadata["topolens"]
        analysis = meta["analysis"]
        graph = analysis[meta["layer"]].mapper
        nodes_layer = find_layers(viewer, key, "mapper_nodes")
        pos = (
            nodes_layer[0].metadata["topolens"]["layout"]
            if nodes_layer
            else mapper_layout(graph, seed=int(analysis.config.seed))
        )
        weight = np.asarray(graph.edge_weight, dtype=np.float64)
        keep = weight >= threshold
        idx = np.asarray(graph.edges, dtype=np.int64).reshape(-1, 2)
        lines = [np.array([pos[a], pos[b]]) for a, b in idx[keep]]
        w = weight[keep]
        layer.selected_data = set()
        layer.data = []
        if lines:
            alpha = 0.45 + 0.5 * w
            layer.add_lines(
                lines,
                edge_width=list(edge_widths(w, graph.n_nodes)),
                edge_color=np.column_stack([np.full((len(w), 3), 0.85), alpha]),
            )
        layer.features = pd.DataFrame(
            {
                "edge": np.flatnonzero(keep).astype(np.int64),
                "source": idx[keep, 0],
                "target": idx[keep, 1],
                "jaccard": w,
            }
        )
        meta["edge_threshold"] = float(threshold)


def highlight_class(viewer: Any, key: str, class_name: str | None) -> None:
    """Fade every Mapper node whose dominant class is not ``class_name`` (None: none faded)."""
    for layer in _state_layers(viewer, key, "mapper_nodes"):
        meta = layer.metadata["topolens"]
        analysis = meta["analysis"]
        if (
            class_name is not None
            and analysis.class_names is not None
            and str(class_name) not in analysis.class_names
        ):
            raise TopoLensError(
                f"class {class_name!r} is unknown; classes: {', '.join(analysis.class_names)}"
            )
        colors = np.array(layer.face_color, dtype=np.float64)
        keep = (
            np.ones(len(colors), bool)
            if class_name is None
            else layer.features["dominant_class"].astype(str).to_numpy() == str(class_name)
        )
        colors[:, 3] = np.where(keep, 1.0, 0.15)
        layer.face_color = colors
        meta["faded_class"] = class_name
