"""The visible panel's text: title, subtitle, axis names, tick labels, matrix values.

A base and its variant sit side by side in the canvas: each view about half as wide,
the text as large, so notes are left out there (hover says them) and labels alternate
or shorten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..layout import geometry as geo
from ..topology.hole import ClusterFlow
from ..topology.results import Analysis
from .color_key import KEY_COLS, KEY_ROWS, panel_key
from .drift_view import drift_text, has_variants
from .layer_tuples import LayerDataTuple, layer_name, text_layer
from .palette import DIM_TEXT_COLOR, TEXT_COLOR
from .panels import ANALYSIS_VIEWS, MAX_BARS, MAX_VALUE_LABELS, PANEL_TITLES

#: Point size of a panel's titles, axis names and ticks (shrunk down to
#: ``MIN_PANEL_TEXT_SIZE`` by the canvas when slots sit side by side).
PANEL_TEXT_SIZE = 10.0
MIN_PANEL_TEXT_SIZE = 7.0
#: Screen pixels per character of napari text, per point of size (measured: about
#: 0.72 em per character, 96/72 pixels per point).
TEXT_PX_PER_CHAR_POINT = 0.96


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def best_stage_text(flow: ClusterFlow) -> str:
    """The cluster-flow stage the blob graph shows, with its cut and size."""
    stage = int(flow.best_stage)
    memberships = np.asarray(flow.memberships)
    clusters = np.unique(memberships[stage]) if memberships.size else np.zeros(0, np.int64)
    n_clusters = int(np.sum(clusters >= 0))
    cut = float(np.asarray(flow.thresholds, dtype=np.float64)[stage])
    where = f"cut {cut:.3g}" if np.isfinite(cut) else str(flow.stage_names[stage])
    return f"best stage: {where}, {n_clusters} cluster{'s' if n_clusters != 1 else ''}"


_TITLE_ROW, _SUBTITLE_ROW = -0.095, -0.04
#: The same with a base and its variant side by side: the canvas then draws each view
#: at about half the size, while the text keeps its screen size (a line apart still).
SIDE_BY_SIDE_ROWS = (-0.17, -0.075)


def side_by_side(analysis: Analysis, panel: str) -> bool:
    """A base with variants, or a variant: drawn beside the other in the canvas."""
    run = getattr(analysis, "provenance", None) or {}
    return panel != "drift" and (has_variants(analysis) or isinstance(run.get("variant"), str))


#: Longest subtitle kept whole when a base and its variant sit side by side.
SIDE_BY_SIDE_SUBTITLE_CHARS = 22


def short_subtitle(analysis: Analysis, layer: str, panel: str, subtitle: str) -> str:
    """A panel's subtitle in a few words, for a slot drawn beside another."""
    result = analysis[layer]
    if panel == "diagram":
        return (
            ", ".join(
                f"H{d} {len(diagram)}" for d, diagram in enumerate(result.persistence.diagrams)
            )
            + " bars"
        )
    if panel == "barcode":
        return "longest bars"
    if panel == "flow":
        return subtitle.replace("best stage: ", "best: ").replace(" clusters", " cl.")
    if panel == "blobs":
        return f"purity {result.quality.purity:.2f}"
    if panel == "dendrogram":
        return plural(len(result.dendrogram.index), "point")
    return subtitle if len(subtitle) <= 2 * SIDE_BY_SIDE_SUBTITLE_CHARS else subtitle[:21] + "…"


@dataclass
class PanelText:
    """The text items of a panel being written: the text layer's and the matrix values'."""

    pos: list[tuple[float, float]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    color: list[str] = field(default_factory=list)
    values_pos: list[tuple[float, float]] = field(default_factory=list)
    values_text: list[str] = field(default_factory=list)
    values_color: list[str] = field(default_factory=list)

    def put(self, row: float, col: float, words: str, shade: str = TEXT_COLOR) -> None:
        """Text at a point of the unit square."""
        self.pos.append((row, col))
        self.text.append(words)
        self.color.append(shade)

    def put_value(self, row: float, col: float, words: str, shade: str) -> None:
        """A matrix value (a smaller font, its own layer)."""
        self.values_pos.append((row, col))
        self.values_text.append(words)
        self.values_color.append(shade)

    def layers(self, key: str, layer: str, slot: int, size: float) -> list[LayerDataTuple]:
        """The panel's text layer and its matrix values' layer."""
        return [
            text_layer(
                "panel_text",
                key,
                layer,
                slot,
                self.pos,
                self.text,
                self.color,
                size,
                layer_name("view text", key),
            ),
            text_layer(
                "panel_values",
                key,
                layer,
                slot,
                self.values_pos,
                self.values_text,
                self.values_color,
                8,
                layer_name("matrix values", key),
            ),
        ]


def panel_text_data(
    analysis: Analysis,
    layer: str,
    key: str,
    slot: int,
    panel: str,
    *,
    color_by: str = "dominant_class",
) -> list[LayerDataTuple]:
    """The visible panel's title, subtitle, axis names and tick labels (text only), the
    colour key's title and end values, and the matrix values in a smaller font."""
    out = PanelText()
    if panel == "drift" and not has_variants(analysis):  # the plot is its base's: blank here
        # (one blank item, not none: the text is never empty in the other panels, and
        # napari's text of points added to an empty layer fails its colour encoding)
        out.put(0.5, 0.5, "")
        return out.layers(key, layer, slot, 10)
    # a base and its variant side by side: each view about half as wide, text as large,
    # so notes are left out (hover says them) and labels alternate or shorten
    beside = side_by_side(analysis, panel)
    run = variant_run(analysis)
    subtitle = _PANEL_TEXT.get(panel, _matrix_text)(out, analysis, layer, panel, beside, run)
    if beside and len(subtitle) > SIDE_BY_SIDE_SUBTITLE_CHARS:
        # two slots side by side: a long subtitle would run into the other's
        subtitle = short_subtitle(analysis, layer, panel, subtitle)
    title_row, subtitle_row = SIDE_BY_SIDE_ROWS if beside else (_TITLE_ROW, _SUBTITLE_ROW)
    out.put(title_row, 0.5, panel_title(analysis, layer, key, panel, run), TEXT_COLOR)
    if subtitle:
        out.put(subtitle_row, 0.5, subtitle, DIM_TEXT_COLOR)
    _key_text(out, analysis, layer, panel, color_by)
    return out.layers(key, layer, slot, PANEL_TEXT_SIZE)


def variant_run(analysis: Analysis) -> str | None:
    """``"base"`` for a base with variants, the variant's name for a variant, else None."""
    if has_variants(analysis):
        return "base"
    run = (getattr(analysis, "provenance", None) or {}).get("variant")
    return run if isinstance(run, str) else None


def panel_title(analysis: Analysis, layer: str, key: str, panel: str, run: str | None) -> str:
    """The panel's title: the view and where it is from (short beside another slot)."""
    if run is not None and panel != "drift":
        # base and variant side by side: short titles that never run into each other
        return f"{run} · {layer}" if panel not in ANALYSIS_VIEWS else run
    where = f"{key} · {layer}" if panel not in (*ANALYSIS_VIEWS, "drift") else key
    return f"{PANEL_TITLES[panel]} · {where}"


def _key_text(out: PanelText, analysis: Analysis, layer: str, panel: str, color_by: str) -> None:
    """The colour key's title and end values (every key is titled, its ends numbered)."""
    color_key = panel_key(analysis, layer, panel, color_by)
    if color_key is None:
        return
    key_title, _cmap, (low, high) = color_key
    middle = (KEY_COLS[0] + KEY_COLS[1]) / 2
    out.put(KEY_ROWS[0] - 0.11, middle - 0.09, key_title, TEXT_COLOR)
    out.put(KEY_ROWS[0] - 0.04, middle - 0.02, geo.format_value(float(high)), DIM_TEXT_COLOR)
    out.put(KEY_ROWS[1] + 0.04, middle - 0.02, geo.format_value(float(low)), DIM_TEXT_COLOR)


# Each panel's text: put its axis names and ticks, return its subtitle.


def _drift_text(
    out: PanelText, analysis: Analysis, layer: str, panel: str, beside: bool, run: str | None
) -> str:
    return drift_text(analysis, layer, out.put)


def _mapper_text(
    out: PanelText, analysis: Analysis, layer: str, panel: str, beside: bool, run: str | None
) -> str:
    result = analysis[layer]
    graph = result.mapper
    if not graph.n_nodes:
        return f"no nodes: {plural(len(result.cloud), 'point')}; try more images"
    if run is not None:
        return f"{graph.n_nodes} nodes, {len(graph.edges)} edges"
    return (
        f"{graph.n_nodes} nodes, {len(graph.edges)} edges, "
        f"{plural(int(np.max(graph.component)) + 1, 'component')}"
    )


def _diagram_text(
    out: PanelText, analysis: Analysis, layer: str, panel: str, beside: bool, run: str | None
) -> str:
    pers = analysis[layer].persistence
    top = geo.diagram_top(pers.diagrams)
    low, high = geo.DIAGRAM_AXES
    for tick in geo.nice_ticks(0.0, top, 5):
        frac = low + (high - low) * tick / top
        out.put(high + 0.035, frac, geo.format_value(float(tick)), DIM_TEXT_COLOR)
        out.put(
            high - (high - low) * tick / top,
            low - 0.05,
            geo.format_value(float(tick)),
            DIM_TEXT_COLOR,
        )
    out.put(geo.INF_ROW, low - 0.05, "∞", DIM_TEXT_COLOR)
    out.put(high + 0.075, (low + high) / 2, "birth", TEXT_COLOR)
    out.put(low - 0.055, low, "death", TEXT_COLOR)  # above its axis, below the ∞ line
    return ", ".join(
        f"H{d} {len(pers.diagrams[d])} bars ({('blue', 'orange', 'green')[min(d, 2)]})"
        for d in range(len(pers.diagrams))
    )


def _barcode_text(
    out: PanelText, analysis: Analysis, layer: str, panel: str, beside: bool, run: str | None
) -> str:
    pers = analysis[layer].persistence
    top = geo.diagram_top(pers.diagrams)
    bars = geo.barcode_bars(pers, MAX_BARS)
    shown = ", ".join(
        f"H{d} {int((bars['dim'] == d).sum())} of {len(pers.diagrams[d])}"
        for d in range(len(pers.diagrams))
    )
    rows, _pitch = geo.barcode_rows(bars["dim"].to_numpy())
    for d in sorted(set(bars["dim"].tolist())):
        mine = rows[bars["dim"].to_numpy() == d]
        out.put(float(mine.mean()), 0.045, f"H{d}", TEXT_COLOR)
    for tick in geo.nice_ticks(0.0, top, 5):
        out.put(
            geo.BARCODE_ROWS[1] + 0.06,
            geo.barcode_value_col(float(tick), top),
            geo.format_value(float(tick)),
            DIM_TEXT_COLOR,
        )
    out.put(geo.BARCODE_ROWS[1] + 0.06, geo.BARCODE_COLS[1] + 0.035, "∞", DIM_TEXT_COLOR)
    out.put(geo.BARCODE_ROWS[1] + 0.11, 0.5, "filtration value", TEXT_COLOR)
    return f"longest bars: {shown}"


def _flow_text(
    out: PanelText, analysis: Analysis, layer: str, panel: str, beside: bool, run: str | None
) -> str:
    flow = analysis[layer].flow
    _, cols, width = geo.flow_geometry(flow)
    for s, name in enumerate(flow.stage_names):
        out.put(
            0.92 + 0.04 * (s % 2 if len(cols) > 6 or beside else 0),
            cols[s] + width / 2,
            geo.STAGE_LABELS.get(name, geo.short_label(str(name), 8)),
            DIM_TEXT_COLOR,
        )
    if not beside:
        out.put(1.0, 0.5, "classes, then cuts fine → coarse", TEXT_COLOR)
    return best_stage_text(flow)


def _blobs_text(
    out: PanelText, analysis: Analysis, layer: str, panel: str, beside: bool, run: str | None
) -> str:
    q = analysis[layer].quality
    # in the frame's margins, clear of the points (``geometry.blob_unit_transform``
    # keeps them within 0.07-0.93): the left margin is too narrow for a word
    out.put(0.975, 0.5, "PC1 →", DIM_TEXT_COLOR)
    out.put(0.035, 0.15, "PC2 ↑", DIM_TEXT_COLOR)
    return f"vs labels: purity {q.purity:.2f}, ARI {q.ari:.2f}"


def _dendrogram_text(
    out: PanelText, analysis: Analysis, layer: str, panel: str, beside: bool, run: str | None
) -> str:
    if not beside:
        out.put(0.99, 0.5, "heatmap: pairwise distances", DIM_TEXT_COLOR)
    return f"{plural(len(analysis[layer].dendrogram.index), 'point')}, ordered by the tree"


def _matrix_text(
    out: PanelText, analysis: Analysis, layer: str, panel: str, beside: bool, run: str | None
) -> str:
    """The layer x layer matrices: layer names, numbers, and the values of small ones."""
    names = analysis.layers
    n = len(names)
    top, left, side = geo.MATRIX_BOX
    pixel = side / max(n, 1)
    for i, name in enumerate(names):
        label = str(i + 1) if beside else f"{i + 1} {geo.short_label(name, 12)}"
        out.put(top + (i + 0.5) * pixel, left / 2 if not beside else left - 0.04, label)
        out.put(top + side + 0.035, left + (i + 0.5) * pixel, str(i + 1))
    if n <= MAX_VALUE_LABELS and not beside:
        _matrix_values(out, analysis, panel)
        out.put(
            top + side + 0.1, left + side / 2, "hover a cell for its full value", DIM_TEXT_COLOR
        )
    if panel == "cka":
        return "of per-image mean activations"
    return f"H{analysis.config.distance_dim} {analysis.config.layer_distance.replace('_', ' ')}"


def _matrix_values(out: PanelText, analysis: Analysis, panel: str) -> None:
    """Each cell's value, black on the bright cells."""
    names = analysis.layers
    n = len(names)
    top, left, side = geo.MATRIX_BOX
    pixel = side / max(n, 1)
    matrix = np.asarray(
        analysis.layer_distances["cka" if panel == "cka" else analysis.config.layer_distance],
        dtype=np.float64,
    )
    finite = matrix[np.isfinite(matrix)]
    limits = (
        (0.0, 1.0)
        if panel == "cka"
        else (0.0, float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
    )
    for i in range(n):
        for j in range(n):
            value = matrix[i, j]
            bright = (
                np.isfinite(value) and (value - limits[0]) / ((limits[1] - limits[0]) or 1.0) > 0.6
            )
            out.put_value(
                top + (i + 0.5) * pixel,
                left + (j + 0.5) * pixel,
                geo.format_value(float(value)) if np.isfinite(value) else "",
                "black" if bright else "white",
            )


#: The text of each panel but the matrices (``_matrix_text``).
_PANEL_TEXT: dict[str, Callable[[PanelText, Any, str, str, bool, str | None], str]] = {
    "drift": _drift_text,
    "mapper": _mapper_text,
    "diagram": _diagram_text,
    "barcode": _barcode_text,
    "flow": _flow_text,
    "blobs": _blobs_text,
    "dendrogram": _dendrogram_text,
}
