"""Matplotlib figures of an analysis, rendered off-screen to inline PNG data URIs.

Every function takes plain result objects and returns a ``data:image/png;base64``
string, so the report page needs no files and no network. Figures are built on
``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state, no GUI).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..layout.mapper import mapper_layout
from ..robustness.perturbations import channel_axis

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..activations.pointcloud import PointCloud
    from ..topology.hole import BlobGraph, ClusterFlow, Dendrogram
    from ..topology.mapper import MapperGraph
    from ..topology.persistence import PersistenceResult
    from ..topology.results import LayerAnalysis

__all__ = [
    "UNKNOWN_COLOUR",
    "blob_figure",
    "channels_last",
    "class_colours",
    "dendrogram_figure",
    "examples_figure",
    "flow_figure",
    "layer_curves_figure",
    "mapper_figure",
    "matrices_figure",
    "new_figure",
    "persistence_figure",
    "png_data_uri",
]

UNKNOWN_COLOUR = "#9e9e9e"
_DPI = 90


def class_colours(n_classes: int) -> list[str]:
    """One distinct colour per class, the same in every figure of the report."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if n_classes <= 10:
        cmap = colormaps["tab10"]
        return [to_hex(cmap(i)) for i in range(n_classes)]
    if n_classes <= 20:
        cmap = colormaps["tab20"]
        return [to_hex(cmap(i)) for i in range(n_classes)]
    cmap = colormaps["hsv"]
    return [to_hex(cmap(i / n_classes)) for i in range(n_classes)]


def _most_common(codes: np.ndarray) -> int:
    """The most frequent code (the smallest on ties), sized by the codes present, not by
    the largest (as ``np.bincount`` would be)."""
    values, counts = np.unique(np.asarray(codes, dtype=np.int64), return_counts=True)
    return int(values[np.argmax(counts)])


def _colour_of(labels: np.ndarray, colours: Sequence[str]) -> list[str]:
    return [colours[c] if 0 <= c < len(colours) else UNKNOWN_COLOUR for c in labels.tolist()]


def new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    """A figure of the report's resolution on the Agg canvas (no pyplot); ``constrained=False`` for figures that place their
    axes themselves (constrained layout measures every text once more before the
    draw: about a third of a figure's time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(
        figsize=(width, height), dpi=_DPI, layout="constrained" if constrained else None
    )
    FigureCanvasAgg(figure)
    return figure


def channels_last(images: Any) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, C)``, from any layout extraction takes (``(N, C, H, W)`` too)."""
    array = np.asarray(images)
    if array.ndim == 4 and channel_axis(array) == 1:
        array = np.moveaxis(array, 1, -1)
    return array[..., 0] if array.ndim == 4 and array.shape[-1] == 1 else array


def png_data_uri(figure: Figure) -> str:
    """Render ``figure`` to a base64 PNG data URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _legend(
    axes: Any,
    class_names: Sequence[str] | None,
    colours: Sequence[str],
    *,
    unknown: bool = False,
    **kw: Any,
) -> None:
    from matplotlib.patches import Patch

    if not class_names:
        return
    handles = [Patch(color=c, label=name) for c, name in zip(colours, class_names)]
    if unknown:
        handles.append(Patch(color=UNKNOWN_COLOUR, label="noise / unknown"))
    axes.legend(handles=handles, fontsize=7, frameon=False, **kw)


# ----------------------------------------------------------------------------- persistence


def persistence_figure(persistence: PersistenceResult) -> str:
    """Persistence diagram, barcode (longest bars) and Betti curves of one layer."""
    from matplotlib.ticker import FuncFormatter

    # fixed axes (the margins constrained layout chose, with room for wider tick labels)
    figure = new_figure(11.5, 3.6, constrained=False)
    ax_diagram, ax_bars, ax_betti = (
        figure.add_axes((left, 0.136, width, 0.796))
        for left, width in ((0.06, 0.25), (0.38, 0.30), (0.725, 0.265))
    )
    dim_colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    finite_max = 0.0
    for diagram in persistence.diagrams:
        finite = diagram[np.isfinite(diagram).all(axis=1)] if len(diagram) else diagram
        if len(finite):
            finite_max = max(finite_max, float(finite.max()))
    top = finite_max * 1.1 if finite_max > 0 else 1.0
    for dim, diagram in enumerate(persistence.diagrams):
        if len(diagram) == 0:
            continue
        birth, death = diagram[:, 0], diagram[:, 1].copy()
        infinite = ~np.isfinite(death)
        death[infinite] = top
        ax_diagram.scatter(
            birth[~infinite],
            death[~infinite],
            s=9,
            alpha=0.7,
            color=dim_colours[dim % 4],
            label=f"H{dim} ({len(diagram)})",
        )
        if infinite.any():
            ax_diagram.scatter(
                birth[infinite], death[infinite], s=30, marker="^", color=dim_colours[dim % 4]
            )
    ax_diagram.plot([0, top], [0, top], color="#555", lw=0.8)
    ax_diagram.axhline(top, color="#bbb", lw=0.6, ls="--")
    ax_diagram.text(0, top, " ∞", va="bottom", fontsize=8, color="#555")
    ax_diagram.set_xlabel("birth")
    ax_diagram.set_ylabel("death")
    ax_diagram.set_title("persistence diagram", fontsize=10)
    ax_diagram.legend(fontsize=7, frameon=False, loc="lower right")

    # barcode: the longest bars of each dimension, longest first within a dimension
    row = 0
    ticks = []
    for dim, diagram in enumerate(persistence.diagrams):
        if len(diagram) == 0:
            continue
        death = np.where(np.isfinite(diagram[:, 1]), diagram[:, 1], top)
        length = death - diagram[:, 0]
        keep = np.argsort(-length, kind="stable")[:60]
        y = row + np.arange(len(keep))
        ax_bars.hlines(y, diagram[keep, 0], death[keep], color=dim_colours[dim % 4], lw=1.6)
        ticks.append((row + len(keep) / 2, f"H{dim}\n{len(keep)} of {len(diagram)}"))
        row += len(keep) + 4
    ax_bars.set_yticks([t for t, _ in ticks], [label for _, label in ticks], fontsize=7)
    ax_bars.invert_yaxis()
    ax_bars.set_xlabel("filtration value")
    ax_bars.set_title("barcode (longest bars)", fontsize=10)

    grid = persistence.betti_grid
    for dim, curve in enumerate(persistence.betti_curves):
        ax_betti.plot(grid, curve, color=dim_colours[dim % 4], label=f"β{dim}")
    ax_betti.set_yscale("symlog", linthresh=1)
    # plain numbers (1000, not mathtext 10^3: its parsing was a tenth of the figure's time)
    ax_betti.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax_betti.set_xlabel("filtration value")
    ax_betti.set_title("Betti curves", fontsize=10)
    ax_betti.legend(fontsize=7, frameon=False)
    return png_data_uri(figure)


# ----------------------------------------------------------------------------- Mapper


def report_mapper_positions(result: LayerAnalysis, seed: int = 0) -> np.ndarray:
    """Mapper node positions ``(n, 2)`` as (x, y) for matplotlib: the analysis's own layout.

    The same ``LayerAnalysis.mapper_layout`` (row, col in the unit square) that
    napari draws, with rows turned into an upward y, so both show one picture.
    """
    layout = getattr(result, "mapper_layout", None)
    if layout is None or len(layout) != result.mapper.n_nodes:
        layout = mapper_layout(result.mapper, seed=seed)
    layout = np.asarray(layout, dtype=np.float64).reshape(-1, 2)
    return np.column_stack([layout[:, 1], 1.0 - layout[:, 0]])


def mapper_figure(
    mapper: MapperGraph,
    colours: Sequence[str],
    class_names: Sequence[str] | None,
    *,
    positions: np.ndarray | None = None,
    seed: int = 0,
) -> str:
    """Mapper graph: nodes coloured by dominant class and sized by members, edges by Jaccard.

    ``positions``: node (x, y) from :func:`report_mapper_positions`; None lays the
    graph out here with ``layout.mapper_layout``.
    """
    figure = new_figure(6.2, 5.0)
    axes = figure.add_subplot()
    axes.set_axis_off()
    n_nodes = len(mapper.node_ids)
    if n_nodes == 0:
        note = mapper.params.get("note", "no clusters in any cover interval")
        axes.text(
            0.5, 0.5, f"empty Mapper graph\n{note}", ha="center", va="center", fontsize=9, wrap=True
        )
        return png_data_uri(figure)
    if positions is None:
        layout = mapper_layout(mapper, seed=seed)
        positions = np.column_stack([layout[:, 1], 1.0 - layout[:, 0]])
    xy = np.asarray(positions, dtype=np.float64)
    axes.set_aspect("equal")
    if len(mapper.edges):
        from matplotlib.collections import LineCollection

        segments = xy[mapper.edges]
        widths = 0.4 + 3.0 * mapper.edge_weight
        axes.add_collection(
            LineCollection(segments, linewidths=widths, colors="#777", alpha=0.6, zorder=1)
        )
    size = mapper.size.astype(float)
    marker = 20 + 380 * np.sqrt(size / size.max())
    colour = _colour_of(mapper.dominant_class, colours)
    purity = np.nan_to_num(mapper.purity, nan=1.0)
    axes.scatter(
        xy[:, 0],
        xy[:, 1],
        s=marker,
        c=colour,
        edgecolors="#333",
        linewidths=0.5,
        alpha=(0.35 + 0.65 * purity).clip(0, 1),
        zorder=2,
    )
    n_components = int(mapper.component.max()) + 1
    axes.set_title(
        f"Mapper graph: {n_nodes} nodes, {len(mapper.edges)} edges, "
        f"{n_components} component{'' if n_components == 1 else 's'}",
        fontsize=10,
    )
    axes.autoscale_view()
    _legend(axes, class_names, colours, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png_data_uri(figure)


# ----------------------------------------------------------------------------- cluster flow


def _cluster_colours(
    stage_members: np.ndarray,
    point_labels: np.ndarray,
    colours: Sequence[str],
    is_label_stage: bool,
) -> dict[int, str]:
    """Colour of every cluster of a stage: its class, or its most frequent class."""
    ids = np.unique(stage_members)
    if is_label_stage:
        return {int(c): (colours[c] if 0 <= c < len(colours) else UNKNOWN_COLOUR) for c in ids}
    result = {int(c): "#5b7fa6" for c in ids}
    result.update({int(c): UNKNOWN_COLOUR for c in ids if c < 0})
    known = (point_labels >= 0) & (stage_members >= 0)
    if known.any() and len(colours):
        present, cluster_pos = np.unique(stage_members[known], return_inverse=True)
        # columns: the classes present, not every code up to the largest
        classes, class_pos = np.unique(point_labels[known], return_inverse=True)
        table = np.zeros((len(present), len(classes)), dtype=np.int64)
        np.add.at(table, (cluster_pos, class_pos), 1)
        for cluster, main in zip(present.tolist(), classes[table.argmax(axis=1)].tolist()):
            result[cluster] = colours[main % len(colours)]
    return result


def flow_figure(
    flow: ClusterFlow,
    point_labels: np.ndarray,
    colours: Sequence[str],
    class_names: Sequence[str] | None,
) -> str:
    """Sankey of the cluster flow: stacked cluster bars per stage joined by bands."""
    figure = new_figure(11.5, 4.6)
    axes = figure.add_subplot()
    axes.set_axis_off()
    n_stages = flow.memberships.shape[0]
    bars = [
        _flow_stage_bars(axes, flow, s, point_labels, colours, class_names) for s in range(n_stages)
    ]
    _flow_bands(axes, flow, bars)
    axes.set_xlim(-0.3, n_stages - 0.55)
    axes.set_ylim(-0.02, 1.22)
    _legend(axes, class_names, colours, unknown=True, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png_data_uri(figure)


_FLOW_BAR_WIDTH = 0.06
_FLOW_GAPS = 0.18  # the height all gaps between one stage's bars take together


def _flow_stage_bars(
    axes: Any,
    flow: ClusterFlow,
    s: int,
    point_labels: np.ndarray,
    colours: Sequence[str],
    class_names: Sequence[str] | None,
) -> tuple[dict[int, tuple[float, float]], float, dict[int, str]]:
    """Draw stage ``s``'s stacked cluster bars and caption.

    Returns each cluster's (bottom, top), the bar height per point, and each cluster's colour.
    """
    from matplotlib.patches import Rectangle

    m = flow.memberships.shape[1]
    stage = flow.memberships[s]
    ids, counts = np.unique(stage, return_counts=True)
    is_label = flow.stage_names[s] == "labels"
    # real clusters by size (labels by class), noise last
    real = [(int(c), int(n)) for c, n in zip(ids, counts) if c >= 0]
    real.sort(key=(lambda t: t[0]) if is_label else (lambda t: (-t[1], t[0])))
    order = real + [(int(c), int(n)) for c, n in zip(ids, counts) if c < 0]
    gap = _FLOW_GAPS / max(len(order) - 1, 1) if len(order) > 1 else 0.0
    scale = (1.0 - _FLOW_GAPS) / m if len(order) > 1 else 1.0 / m
    top = 1.0
    spans: dict[int, tuple[float, float]] = {}
    cluster_colours = _cluster_colours(stage, point_labels, colours, is_label)
    for cluster, count in order:
        height = count * scale
        spans[cluster] = (top - height, top)
        axes.add_patch(
            Rectangle(
                (s - _FLOW_BAR_WIDTH / 2, top - height),
                _FLOW_BAR_WIDTH,
                height,
                facecolor=cluster_colours[cluster],
                edgecolor="white",
                lw=0.3,
                zorder=3,
            )
        )
        if height > 0.035 and len(order) <= 40:
            name = (
                "noise"
                if cluster < 0
                else (
                    class_names[cluster]
                    if is_label and class_names and cluster < len(class_names)
                    else str(cluster)
                )
            )
            axes.text(
                s + _FLOW_BAR_WIDTH / 2 + 0.01,
                top - height / 2,
                f"{name} ({count})",
                fontsize=6.5,
                va="center",
                zorder=4,
            )
        top -= height + gap
    threshold = flow.thresholds[s]
    caption = flow.stage_names[s] + ("" if not np.isfinite(threshold) else f"\nt = {threshold:.3g}")
    n_real = sum(1 for c, _ in order if c >= 0)
    noun = "class" if is_label else "cluster"
    caption += (
        f"\n{n_real} {noun}{'es' if is_label and n_real != 1 else ('s' if n_real != 1 else '')}"
    )
    if s == flow.best_stage:
        caption = "★ " + caption
    axes.text(s, 1.03, caption, ha="center", va="bottom", fontsize=8)
    return spans, scale, cluster_colours


def _flow_bands(
    axes: Any,
    flow: ClusterFlow,
    bars: list[tuple[dict[int, tuple[float, float]], float, dict[int, str]]],
) -> None:
    """Draw the bands between stages, stacked inside each source and target bar in the
    bars' own order."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    spans = [stage_spans for stage_spans, _, _ in bars]
    out_cursor = [{c: span[1] for c, span in stage.items()} for stage in spans]
    in_cursor = [{c: span[1] for c, span in stage.items()} for stage in spans]
    target_rank = [{c: i for i, c in enumerate(stage)} for stage in spans]
    rows = sorted(
        flow.flows.tolist(),
        key=lambda r: (r[0], target_rank[r[0]][r[1]], target_rank[r[0] + 1][r[2]]),
    )
    codes = [MplPath.MOVETO, *[MplPath.CURVE4] * 3, MplPath.LINETO]
    codes += [*[MplPath.CURVE4] * 3, MplPath.CLOSEPOLY]
    for s, a, b, count in rows:
        height_out, height_in = count * bars[s][1], count * bars[s + 1][1]
        y0_top = out_cursor[s][a]
        out_cursor[s][a] -= height_out
        y1_top = in_cursor[s + 1][b]
        in_cursor[s + 1][b] -= height_in
        x0, x1 = s + _FLOW_BAR_WIDTH / 2, s + 1 - _FLOW_BAR_WIDTH / 2
        mid = (x0 + x1) / 2
        verts = [
            (x0, y0_top),
            (mid, y0_top),
            (mid, y1_top),
            (x1, y1_top),
            (x1, y1_top - height_in),
            (mid, y1_top - height_in),
            (mid, y0_top - height_out),
            (x0, y0_top - height_out),
            (x0, y0_top),
        ]
        axes.add_patch(
            PathPatch(
                MplPath(verts, codes),
                facecolor=bars[s][2][a],
                edgecolor="none",
                alpha=0.35,
                zorder=2,
            )
        )


# ----------------------------------------------------------------------------- blob graph


def blob_figure(blobs: BlobGraph, colours: Sequence[str], class_names: Sequence[str] | None) -> str:
    """2-D PCA of the cloud, points by true class, padded hulls around the best clusters."""
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Polygon

    figure = new_figure(6.2, 5.0)
    axes = figure.add_subplot()
    for cluster, hull in zip(blobs.hull_clusters.tolist(), blobs.hulls):
        inside = blobs.labels[(blobs.cluster == cluster) & (blobs.labels >= 0)]
        edge = (
            colours[_most_common(inside) % len(colours)] if len(inside) and colours else "#5b7fa6"
        )
        axes.add_patch(
            Polygon(
                hull,
                closed=True,
                facecolor=to_rgba(edge, 0.10),
                edgecolor=to_rgba(edge, 0.8),
                lw=1.0,
                zorder=1,
            )
        )
    point_colour = _colour_of(blobs.labels, colours)
    size = 14 if len(blobs.coords) < 2000 else 4
    axes.scatter(
        blobs.coords[:, 0],
        blobs.coords[:, 1],
        s=size,
        c=point_colour,
        linewidths=0,
        alpha=0.8,
        zorder=2,
    )
    ev = blobs.explained_variance
    axes.set_xlabel(f"PC1 ({100 * ev[0]:.0f} % variance)")
    axes.set_ylabel(f"PC2 ({100 * ev[1]:.0f} % variance)")
    axes.set_title(f"blob graph: {len(blobs.hulls)} clusters of the best stage", fontsize=10)
    axes.set_aspect("equal", adjustable="datalim")
    _legend(axes, class_names, colours, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png_data_uri(figure)


# ----------------------------------------------------------------------------- dendrogram


def dendrogram_figure(
    dendrogram: Dendrogram, point_labels: np.ndarray, colours: Sequence[str]
) -> str:
    """Single-linkage dendrogram above the distance heatmap in display order."""
    from matplotlib.collections import LineCollection

    # fixed axes (the margins constrained layout chose, with room for wider tick labels):
    # tree, class strip and heatmap share one column; the colour bar stands beside it
    figure = new_figure(6.2, 6.4, constrained=False)
    n = len(dendrogram.index)
    aligned = dendrogram.ordering == "dendrogram"
    left, width, top, bottom = 0.09, 0.77, 0.961, 0.033
    tree_height = 0.187 if aligned else 0.001
    strip_top = top - tree_height - (0.027 if aligned else 0.0)
    ax_tree = figure.add_axes((left, top - tree_height, width, tree_height))
    ax_strip = figure.add_axes((left, strip_top - 0.02, width, 0.02))
    ax_heat = figure.add_axes((left, bottom, width, strip_top - 0.033 - bottom))
    ax_bar = figure.add_axes((0.885, 0.265, 0.024, 0.464))
    if aligned and n > 1:
        segments = [
            np.column_stack([(ic - 5.0) / 10.0, dc])
            for ic, dc in zip(dendrogram.icoord, dendrogram.dcoord)
        ]
        ax_tree.add_collection(LineCollection(segments, colors="#333", linewidths=0.6))
        ax_tree.set_xlim(-0.5, n - 0.5)
        ax_tree.set_ylim(0, float(dendrogram.dcoord.max()) * 1.05 if dendrogram.dcoord.size else 1)
        ax_tree.set_xticks([])
        ax_tree.set_ylabel("merge", fontsize=8)
        ax_tree.spines[["top", "right", "bottom"]].set_visible(False)
    else:
        ax_tree.set_axis_off()
    shown = dendrogram.index[dendrogram.order]
    strip_labels = point_labels[shown]
    from matplotlib.colors import to_rgb

    strip = np.array([[to_rgb(c) for c in _colour_of(strip_labels, colours)]])
    ax_strip.imshow(strip, aspect="auto", interpolation="nearest", extent=(-0.5, n - 0.5, 0, 1))
    ax_strip.set_axis_off()
    image = ax_heat.imshow(
        dendrogram.distances,
        cmap="viridis_r",
        interpolation="nearest",
        extent=(-0.5, n - 0.5, n - 0.5, -0.5),
        aspect="auto",
    )
    ax_heat.set_xticks([])
    ax_heat.set_yticks([])
    ax_heat.set_xlabel(
        f"{n} points in {dendrogram.ordering} order ({dendrogram.metric} distance)", fontsize=8
    )
    figure.colorbar(image, cax=ax_bar, label="distance")
    ax_tree.set_title("heatmap dendrogram", fontsize=10)
    return png_data_uri(figure)


# ----------------------------------------------------------------------------- examples


def examples_figure(
    images: np.ndarray,
    cloud: PointCloud,
    clusters: np.ndarray,
    point_labels: np.ndarray,
    colours: Sequence[str],
    class_names: Sequence[str] | None,
    *,
    per_cluster: int = 10,
    max_clusters: int = 6,
    seed: int = 0,
) -> str | None:
    """Member images of the largest best-stage clusters, one row per cluster.

    For spatial clouds each image shows the receptive field of the member point.
    """
    from matplotlib.patches import Rectangle

    ids, counts = np.unique(clusters[clusters >= 0], return_counts=True)
    if len(ids) == 0:
        return None
    top_clusters = ids[np.argsort(-counts, kind="stable")][:max_clusters]
    rng = np.random.default_rng(seed)
    rows = []
    for cluster in top_clusters:
        members = np.flatnonzero(clusters == cluster)
        pick = np.sort(rng.choice(members, size=min(per_cluster, len(members)), replace=False))
        rows.append((int(cluster), len(members), pick))
    height, width = images.shape[1:3]
    pad = max(1, height // 12)
    colour_images = images.ndim == 4
    canvas_h = len(rows) * (height + pad) + pad
    canvas_w = per_cluster * (width + pad) + pad
    canvas = np.ones((canvas_h, canvas_w, 3), dtype=np.float32)
    boxes = []
    for r, (_, _, pick) in enumerate(rows):
        for c, point in enumerate(pick):
            image = images[int(cloud.image_index[point])]
            lo, hi = float(image.min()), float(image.max())
            image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
            if not colour_images:
                image = np.repeat(image[..., None], 3, axis=-1)
            image = image[..., :3]  # RGBA: the colours
            y0 = pad + r * (height + pad)
            x0 = pad + c * (width + pad)
            canvas[y0 : y0 + height, x0 : x0 + width] = image
            if cloud.position is not None:
                ry0, rx0, ry1, rx1 = cloud.receptive_field[point].tolist()
                boxes.append((x0 + rx0 - 0.5, y0 + ry0 - 0.5, rx1 - rx0, ry1 - ry0))
    figure = new_figure(min(1.0 + 0.75 * per_cluster, 11.5), 0.8 + 0.75 * len(rows))
    axes = figure.add_subplot()
    axes.imshow(canvas, interpolation="nearest")
    for x, y, w, h in boxes:
        axes.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="#ff2d55", lw=1.0))
    axes.set_xticks([])
    tick_y = [pad + r * (height + pad) + height / 2 for r in range(len(rows))]
    tick_labels = []
    for cluster, n_members, _pick in rows:
        members = point_labels[clusters == cluster]
        known = members[members >= 0]
        text = f"cluster {cluster}\n{n_members} points"
        if len(known):
            main = _most_common(known)
            name = class_names[main] if class_names and main < len(class_names) else str(main)
            text += f"\n{100 * np.mean(known == main):.0f} % {name}"
        tick_labels.append(text)
    axes.set_yticks(tick_y, tick_labels, fontsize=7)
    axes.set_title(
        "member images of the largest clusters (best stage)"
        + (", receptive fields outlined" if boxes else ""),
        fontsize=10,
    )
    return png_data_uri(figure)


# ----------------------------------------------------------------------------- across layers


def layer_curves_figure(
    layers: Sequence[str],
    phdims: Sequence[float],
    class_means: Sequence[float],
    quality: Mapping[str, Sequence[float]],
) -> str:
    """PH dimension and cluster-quality numbers along the layers."""
    figure = new_figure(11.5, 3.8)
    ax_dim, ax_quality = figure.subplots(1, 2)
    x = np.arange(len(layers))
    ax_dim.plot(x, phdims, "o-", color="#1f77b4", label="PH dimension")
    ax_dim.set_ylabel("PH dimension", color="#1f77b4")
    if np.any(np.isfinite(np.asarray(class_means, dtype=float))):
        twin = ax_dim.twinx()
        twin.plot(x, class_means, "s--", color="#d62728", label="mean class total H0 persistence")
        twin.set_ylabel(
            "class total H0 persistence\n(min-max scaled, mean)", color="#d62728", fontsize=8
        )
    ax_dim.set_title("PH dimension per layer", fontsize=10)
    for name, values in quality.items():
        ax_quality.plot(x, values, "o-", label=name)
    ax_quality.set_ylim(-0.05, 1.05)
    ax_quality.set_title("cluster quality of the best stage", fontsize=10)
    ax_quality.legend(fontsize=7, frameon=False, ncols=3, loc="lower left")
    for axes in (ax_dim, ax_quality):
        axes.set_xticks(x, layers, rotation=30, ha="right", fontsize=8)
    return png_data_uri(figure)


def matrices_figure(
    layers: Sequence[str], matrices: dict[str, np.ndarray], titles: dict[str, str]
) -> str:
    """Layer x layer heatmaps side by side, annotated when small enough to read."""
    figure = new_figure(3.2 * len(matrices) + 0.6, 3.6 + 0.08 * max(len(s) for s in layers))
    axes_list = np.atleast_1d(figure.subplots(1, len(matrices)))
    n = len(layers)
    for axes, (key, matrix) in zip(axes_list, matrices.items()):
        cmap = "magma" if key == "cka" else "viridis"
        finite = matrix[np.isfinite(matrix)]
        image = axes.imshow(
            matrix,
            cmap=cmap,
            vmin=0 if finite.size else None,
            vmax=(1 if key == "cka" else (finite.max() if finite.size and finite.max() > 0 else 1)),
        )
        axes.set_xticks(range(n), layers, rotation=45, ha="right", fontsize=7)
        axes.set_yticks(range(n), layers, fontsize=7)
        axes.set_title(titles.get(key, key), fontsize=9)
        if n <= 8:
            scale = finite.max() if finite.size and finite.max() > 0 else 1.0
            for i in range(n):
                for j in range(n):
                    value = matrix[i, j]
                    text = (
                        "nan"
                        if not np.isfinite(value)
                        else f"{value:.0f}"
                        if abs(value) >= 100
                        else f"{value:.2g}"
                    )
                    level = value / (1.0 if key == "cka" else scale) if np.isfinite(value) else 0
                    dark = level < 0.55  # both colour maps are dark at the low end
                    axes.text(
                        j,
                        i,
                        text,
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
        figure.colorbar(image, ax=axes, shrink=0.7)
    return png_data_uri(figure)
