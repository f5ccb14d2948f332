"""The report's robustness section: how the topology drifts under each variant.

Shown when the analysis carries ``variants`` (``napari_topolens.run_variants``, or
``napari-topolens report --perturb ... --compress ...``): a drift table (accuracy,
predictions changed, mean diagram distance and moved fraction per variant), a
per-layer table, the per-layer drift plot (diagram distance and moved fraction per
layer, one line per variant) and the images that moved most, each shown as the
original beside its variant with the receptive-field heat of the activation that
moved.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._progress import Progress
from ..robustness.comparison import receptive_field_heat
from .figures import channels_last, new_figure, png_data_uri
from .markup import escaped, figure_html, number_text, table_html

if TYPE_CHECKING:
    from ..activations.pointcloud import PointCloud
    from ..robustness.comparison import LayerDrift
    from ..robustness.study import Variant
    from ..topology.analysis import Analysis

__all__ = ["drift_figure", "moved_images_figure", "robustness_section"]

_OUTLINED = 3  # up to this many activations per image are outlined; more become a heat map


def _percent(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f} %"


def drift_figure(layers: Sequence[str], variants: Sequence[Variant], dim: int = 1) -> str:
    """Per layer: the relative H``dim`` sliced Wasserstein distance and the moved fraction.

    One line per variant. The distance is divided by the base diagram's distance from
    the empty diagram, so layers with larger activations do not dwarf the others.
    """
    figure = new_figure(11.5, 3.9)
    ax_distance, ax_moved = figure.subplots(1, 2)
    x = np.arange(len(layers))
    markers = "osD^v<>ph*"
    for number, variant in enumerate(variants):
        comparison = variant.comparison
        style = dict(marker=markers[number % len(markers)], lw=1.6, ms=5, label=variant.name)
        distances = [
            comparison[name].distance("sliced_wasserstein", dim, relative=True)
            if name in comparison.layers
            else math.nan
            for name in layers
        ]
        moved = [
            comparison[name].moved_fraction if name in comparison.layers else math.nan
            for name in layers
        ]
        ax_distance.plot(x, distances, **style)
        ax_moved.plot(x, moved, **style)
    ax_distance.set_title(
        f"diagram distance to the base, H{dim} (relative to the base's own scale)", fontsize=10
    )
    ax_distance.set_ylabel("SW(base, variant) / SW(base, empty)", fontsize=8)
    ax_moved.set_title("images that moved (Mapper node set or cluster changed)", fontsize=10)
    ax_moved.set_ylabel("fraction of images")
    ax_moved.set_ylim(-0.03, 1.03)
    for axes in (ax_distance, ax_moved):
        axes.set_xticks(x, layers, rotation=30, ha="right", fontsize=8)
        axes.grid(alpha=0.3)
    ax_moved.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return png_data_uri(figure)


def _boxes(cloud: PointCloud, image: int) -> np.ndarray:
    """(k, 4) receptive fields of an image's points in a cloud."""
    return cloud.receptive_field[cloud.image_index == image]


def _rgb(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (
        (np.asarray(image, dtype=np.float32) - lo) / (hi - lo)
        if hi > lo
        else np.zeros_like(image, dtype=np.float32)
    )
    scaled = np.clip(scaled, 0.0, 1.0)
    return np.repeat(scaled[..., None], 3, axis=-1) if scaled.ndim == 2 else scaled


def moved_images_figure(
    analysis: Analysis, variants: Sequence[Variant], *, per_variant: int = 6
) -> str | None:
    """Per variant, its most-moved images: original | variant with the moved activation's receptive-field heat."""
    from matplotlib.patches import Rectangle

    if analysis.images is None:
        return None
    rows = [(v, v.comparison.most_moved(per_variant)) for v in variants]
    rows = [(v, moved) for v, moved in rows if moved]
    if not rows:
        return None
    base_images = channels_last(analysis.images)
    lo, hi = float(base_images.min()), float(base_images.max())
    height, width = base_images.shape[1:3]
    columns = max(len(moved) for _, moved in rows)
    figure = new_figure(min(1.6 + 1.9 * columns, 12.5), 0.5 + 1.25 * len(rows))
    grid = figure.subplots(len(rows), columns, squeeze=False)
    for r, (variant, moved) in enumerate(rows):
        variant_images = (
            base_images
            if variant.analysis.images is None
            else channels_last(variant.analysis.images)
        )
        for c in range(columns):
            axes = grid[r, c]
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_visible(False)
            if c >= len(moved):
                continue
            layer, image, score = moved[c]
            original = _rgb(base_images[image], lo, hi)
            changed = _rgb(variant_images[image], lo, hi)
            base_boxes = _boxes(analysis[layer].cloud, image)
            variant_boxes = _boxes(variant.analysis[layer].cloud, image)
            offset = width + max(1, width // 10)
            if len(variant_boxes) > _OUTLINED:  # many activations: their receptive-field heat
                alpha = 0.5 * receptive_field_heat(variant.analysis[layer].cloud, image)[..., None]
                changed = (1 - alpha) * changed + alpha * np.array([1.0, 0.0, 0.0])
            gap = np.ones((height, offset - width, 3), dtype=np.float32)
            axes.imshow(np.concatenate([original, gap, changed], axis=1), interpolation="nearest")
            for boxes, shift, colour in (
                (base_boxes, 0, "#00c8ff"),
                (variant_boxes, offset, "#ff2d55"),
            ):
                if len(boxes) > _OUTLINED:
                    continue
                for y0, x0, y1, x1 in boxes.tolist():
                    axes.add_patch(
                        Rectangle(
                            (shift + x0 - 0.5, y0 - 0.5),
                            x1 - x0,
                            y1 - y0,
                            fill=False,
                            edgecolor=colour,
                            lw=1.2,
                        )
                    )
            axes.set_title(f"#{image} · {layer} · {score:.2f}", fontsize=7)
        grid[r, 0].set_ylabel(variant.name, fontsize=8, rotation=0, ha="right", va="center")
    figure.suptitle(
        "most-moved images: original | variant; receptive field of the activation in the base "
        "(cyan) and in the variant (red; a heat map when an image has many)",
        fontsize=9,
    )
    return png_data_uri(figure)


def robustness_section(analysis: Analysis) -> Generator[Progress, None, str]:
    """The HTML of the robustness section (empty without variants)."""
    variants = list(getattr(analysis, "variants", None) or [])
    if not variants:
        return ""
    dim = min(int(analysis.config.distance_dim), 1)
    yield Progress(0.1, "robustness: drift plot")
    drift_uri = drift_figure(analysis.layers, variants, dim)
    yield Progress(0.5, "robustness: most-moved images")
    moved_uri = moved_images_figure(analysis, variants)
    note = variants[0].comparison.notes.get("moved", "")
    parts = [
        '<section id="robustness"><h2>Robustness</h2>',
        '<p class="lead">Each variant is analysed like the base (same layers, sampling, '
        "parameters and seed) and compared with it layer by layer. Perturbation strengths "
        "are fractions of the images' value range (blur: pixels). Accuracy is top-1 on "
        f"the labelled images. Moved images: {escaped(note)}.</p>",
        table_html(_variant_header(dim), [_variant_row(variant, dim) for variant in variants]),
        figure_html(
            drift_uri,
            f"Per layer: sliced Wasserstein (SW) distance between the base's and the variant's "
            f"H{dim} diagrams, divided by the base diagram's SW distance from the empty diagram "
            "(raw distances grow with a layer's activation scale; the tables give both), and the "
            "fraction of images that moved; one line per variant.",
        ),
        figure_html(
            moved_uri,
            "The images that moved most (score: Jaccard distance of their matched Mapper-node and "
            "cluster sets, averaged), each at the layer where it moved most.",
        )
        if moved_uri
        else "",
        "<details><summary>per layer</summary>",
        table_html(
            _LAYER_HEADER,
            [
                _layer_row(variant, drift)
                for variant in variants
                for drift in variant.comparison.drifts
            ],
        ),
        "</details>",
        "</section>",
    ]
    yield Progress(1.0, "robustness section done")
    return "\n".join(p for p in parts if p)


def _variant_header(dim: int) -> list[str]:
    """The drift table's columns (one row per variant: :func:`_variant_row`)."""
    return [
        "Variant",
        "Kind",
        "Accuracy base",
        "Accuracy variant",
        "Δ accuracy (points)",
        "Predictions changed",
        f"Mean SW distance H{dim}",
        f"Mean relative SW H{dim}",
        "Mean bottleneck H0",
        "Mean moved",
        "Seconds",
    ]


def _variant_row(variant: Variant, dim: int) -> list[str]:
    c = variant.comparison
    delta = c.accuracy_variant - c.accuracy_base
    return [
        f"<code>{escaped(variant.name)}</code>",
        "perturbed images" if variant.spec.perturbation is not None else "compressed model",
        _percent(c.accuracy_base),
        _percent(c.accuracy_variant),
        "–" if not math.isfinite(delta) else f"{100 * delta:+.1f}",
        _percent(c.prediction_changed),
        number_text(c.mean_drift("sliced_wasserstein", dim)),
        number_text(c.mean_drift("sliced_wasserstein", dim, relative=True)),
        number_text(c.mean_drift("bottleneck", 0)),
        _percent(float(np.nanmean(c.moved_fraction)) if len(c.drifts) else math.nan),
        f"{sum(variant.seconds.values()):.1f}",
    ]


#: The per-layer table's columns (one row per variant and layer: :func:`_layer_row`).
_LAYER_HEADER = [
    "Variant",
    "Layer",
    "Bottleneck H0",
    "Bottleneck H1",
    "SW H0",
    "SW H1",
    "SW H1 relative",
    "Moved",
    "Δ purity",
    "Δ ARI",
    "Δ PH dim",
    "Δ Mapper nodes",
]


def _layer_row(variant: Variant, drift: LayerDrift) -> list[str]:
    change = drift.quality_change
    return [
        f"<code>{escaped(variant.name)}</code>",
        escaped(drift.layer),
        number_text(drift.distance("bottleneck", 0)),
        number_text(drift.distance("bottleneck", 1)),
        number_text(drift.distance("sliced_wasserstein", 0)),
        number_text(drift.distance("sliced_wasserstein", 1)),
        number_text(drift.distance("sliced_wasserstein", 1, relative=True)),
        _percent(drift.moved_fraction),
        number_text(change["purity"], 2),
        number_text(change["ari"], 2),
        number_text(change["ph_dimension"], 2),
        number_text(change["mapper_nodes"], 3),
    ]
