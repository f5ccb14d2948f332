"""The report's topology maps: whole images placed in the analysis, and pixel-level drift.

Separate from ``report.html`` so that the page is unchanged without ``--maps``: the
command line (which holds the model) renders this section and hands it to
``write_report(..., extra_sections=[...])``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import Progress
from ..maps import MapDrift, TopologyMap, map_drift, topology_map
from .figures import channels_last, new_figure, png_data_uri
from .markup import escaped

if TYPE_CHECKING:
    from ..activations.input_scale import InputScale
    from ..robustness.study import Variant
    from ..topology.analysis import Analysis

__all__ = ["map_colours", "maps_section", "pick_images"]

_NOISE = np.array([0.78, 0.78, 0.78])  # in the cover, in no node (DBSCAN noise)
_OUTSIDE = np.array([1.0, 1.0, 1.0])  # lens value outside the cover


def pick_images(labels: Any, per_class: int, n_images: int) -> np.ndarray:
    """The first ``per_class`` images of each class (or the first images without labels)."""
    if per_class < 1 or n_images < 1:
        return np.zeros(0, dtype=np.int64)
    if labels is None or not np.any(np.asarray(labels) >= 0):
        return np.arange(min(per_class, n_images), dtype=np.int64)
    codes = np.asarray(labels)[:n_images]
    picks = [np.flatnonzero(codes == c)[:per_class] for c in np.unique(codes[codes >= 0])]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def map_colours(nodes: np.ndarray, outside: np.ndarray, n_nodes: int) -> np.ndarray:
    """RGB of a pixel map: a colour per node (tab20, cycling), grey for noise, white outside."""
    from matplotlib import colormaps

    table = np.asarray(colormaps["tab20"](np.arange(max(n_nodes, 1)) % 20))[:, :3]
    rgb = np.empty((*nodes.shape, 3))
    rgb[:] = _NOISE
    rgb[outside] = _OUTSIDE
    placed = nodes >= 0
    rgb[placed] = table[nodes[placed] % len(table)]
    return rgb


def _take(images: Any, index: np.ndarray) -> np.ndarray:
    """Images ``index`` as an array: read from a lazy source, or taken from an array."""
    if hasattr(images, "read") and not isinstance(images, np.ndarray):
        return np.asarray(images.read(index))
    return np.asarray(images)[index]


def _grey(image: np.ndarray) -> np.ndarray:
    array = channels_last(np.asarray(image)[None])[0].astype(np.float64)
    lo, hi = float(array.min()), float(array.max())
    array = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    return array if array.ndim == 2 else array[..., :3].mean(axis=-1)


def _axes_off(axes: Any) -> None:
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)


def _maps_figure(
    images: np.ndarray,
    picks: np.ndarray,
    maps: dict[str, TopologyMap],
    n_nodes: dict[str, int],
    names: Any,
) -> str:
    layers = list(maps)
    rows, columns = len(picks), 1 + len(layers)
    figure = new_figure(min(1.4 + 1.5 * columns, 12.5), 0.6 + 1.45 * rows)
    grid = figure.subplots(rows, columns, squeeze=False)
    for r, image in enumerate(picks):
        grid[r, 0].imshow(_grey(images[r]), cmap="gray", interpolation="nearest")
        label = f"#{int(image)}" + (f" {names[r]}" if names is not None else "")
        grid[r, 0].set_ylabel(label, fontsize=7)
        for c, layer in enumerate(layers, start=1):
            one = maps[layer]
            pixels = one.pixel_map(r)
            outside = one.outside[r].reshape(-1)[one.pixels]
            grid[r, c].imshow(map_colours(pixels, outside, n_nodes[layer]), interpolation="nearest")
            if r == 0:
                grid[r, c].set_title(layer, fontsize=8)
        for c in range(columns):
            _axes_off(grid[r, c])
    figure.suptitle(
        "pixel colour: Mapper node of the position whose receptive field is centred "
        "nearest\n(grey: DBSCAN noise; white: outside the cover)",
        fontsize=8,
    )
    return png_data_uri(figure)


def _drift_figure(
    drift: MapDrift, images: np.ndarray, order: np.ndarray, n_nodes: int, label: str
) -> str:
    figure = new_figure(7.6, 0.6 + 1.5 * len(order))
    grid = figure.subplots(len(order), 4, squeeze=False)
    for r, k in enumerate(order):
        base, variant = drift.base, drift.variant
        panels = [
            (_grey(images[r]), "gray"),
            (
                map_colours(base.pixel_map(k), base.outside[k].reshape(-1)[base.pixels], n_nodes),
                None,
            ),
            (
                map_colours(
                    variant.pixel_map(k), variant.outside[k].reshape(-1)[variant.pixels], n_nodes
                ),
                None,
            ),
            (drift.changed_pixels(k).astype(float), "Reds"),
        ]
        for c, (picture, cmap) in enumerate(panels):
            grid[r, c].imshow(picture, cmap=cmap, interpolation="nearest", vmin=0, vmax=1)
            _axes_off(grid[r, c])
        grid[r, 0].set_ylabel(f"{100 * drift.share[k]:.0f}% changed", fontsize=7)
    for c, title in enumerate(("variant image", "base map", "variant map", "changed")):
        grid[0, c].set_title(title, fontsize=8)
    figure.suptitle(label, fontsize=8)
    return png_data_uri(figure)


def maps_section(
    analysis: Analysis,
    model: Any,
    images: Any,
    *,
    per_class: int = 2,
    input_scale: InputScale | str | None = None,
    most_moved: int = 3,
) -> Generator[Progress, None, str]:
    """The HTML of the topology-map section (and, with variants, its pixel-level drift).

    Maps ``per_class`` images of each class at every spatial layer analysed; for each
    perturbation variant whose images the analysis keeps, the ``most_moved`` images
    with the largest share of changed positions (among the variant's most-moved
    images and the mapped ones): variant image, base map, variant map (placed in the
    base graph) and the changed positions.
    """
    # layers with a grid of positions (whatever the sampling that made the analysis)
    spatial = [r.name for r in analysis.layer_results if len(r.cloud.grid_shape) == 2]
    picks = pick_images(analysis.labels, per_class, len(images))
    if not spatial or not len(picks):
        return ""
    yield Progress(0.0, "topology maps of the chosen images")
    chosen = _take(images, picks)
    maps = topology_map(analysis, chosen, model, layer=spatial, input_scale=input_scale)
    n_nodes = {name: analysis[name].mapper.n_nodes for name in spatial}
    class_names = analysis.class_names
    names = None
    if analysis.labels is not None and class_names:
        names = [
            class_names[c] if 0 <= c < len(class_names) else "?" for c in analysis.labels[picks]
        ]
    notes = [f"{name}: {m.note}" for name, m in maps.items() if m.note]
    parts = [
        '<section id="maps"><h2>Topology maps</h2>',
        '<p class="lead">Every position of each image, placed in the analysis\'s Mapper graph '
        "(out-of-sample placement: the cubes whose interval holds its lens value, and in each "
        "the lowest-numbered cluster with a core point within eps; docs/methods.md §8).</p>",
        f'<figure><img src="{_maps_figure(chosen, picks, maps, n_nodes, names)}" '
        'alt="topology maps"></figure>',
    ]
    parts += [f"<p>{escaped(note)}</p>" for note in notes]
    variants = [
        v
        for v in getattr(analysis, "variants", [])
        if v.spec.perturbation is not None and v.analysis.images is not None
    ]
    for number, variant in enumerate(variants, start=1):
        yield Progress(number / (len(variants) + 1), f"pixel drift: {variant.name}")
        parts += _variant_drift_html(
            analysis, model, images, variant, picks, spatial, input_scale, most_moved
        )
    skipped = [v.name for v in getattr(analysis, "variants", []) if v not in variants]
    if skipped:
        parts.append(
            "<p>No pixel-level drift for "
            + escaped(", ".join(skipped))
            + " (a compressed model, or images not kept).</p>"
        )
    parts.append("</section>")
    yield Progress(1.0, "topology maps done")
    return "\n".join(parts)


def _variant_drift_html(
    analysis: Analysis,
    model: Any,
    images: Any,
    variant: Variant,
    picks: np.ndarray,
    spatial: list[str],
    input_scale: InputScale | str | None,
    most_moved: int,
) -> list[str]:
    """One perturbation variant's pixel drift at each spatial layer: a heading and a figure.

    Among the variant's most-moved images and the mapped ones (``picks``), the
    ``most_moved`` with the largest share of changed positions.
    """
    variant_images = variant.analysis.images
    if variant_images is None:  # a compressed model: the base's images, no pixel drift
        return []
    moved = [image for _, image, _ in variant.comparison.most_moved(8)]
    candidates = np.unique(np.r_[picks, np.asarray(moved, dtype=np.int64)])
    candidates = candidates[candidates < min(len(images), len(variant_images))]
    if not len(candidates):
        return []
    perturbed = np.asarray(variant_images)[candidates]
    base_maps = topology_map(
        analysis, _take(images, candidates), model, layer=spatial, input_scale=input_scale
    )
    variant_maps = topology_map(analysis, perturbed, model, layer=spatial, input_scale=input_scale)
    rows = []
    for layer in spatial:
        drift = map_drift(base_maps[layer], variant_maps[layer])
        order = np.argsort(-drift.share, kind="stable")[:most_moved]
        uri = _drift_figure(
            drift,
            perturbed[order],
            order,
            analysis[layer].mapper.n_nodes,
            f"{variant.name} at {layer}: images "
            + ", ".join(f"#{int(candidates[k])}" for k in order),
        )
        rows.append(
            f"<h3>{escaped(variant.name)} · {escaped(layer)}: "
            f"{100 * drift.mean_share:.1f}% of positions changed node (mean over "
            f"{len(candidates)} images)</h3>"
            f'<figure><img src="{uri}" alt="pixel drift"></figure>'
        )
    return rows
