"""One self-contained HTML page showing an :class:`~napari_topolens.topology.analysis.Analysis`.

The page has inline CSS and inline base64 PNG figures only (no scripts, no
external URL), so it can be mailed or archived as a single file. Beside it,
``analysis/`` holds the analysis itself in the lossless format of
``topology.store``, which ``load_analysis`` (and the napari plugin) read back.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import CancelCallback, Progress, ProgressCallback, drive, scaled
from .._signals import pause_point, signals_deferred
from ..errors import AnalysisFileError, ImageError
from ..label_sources import predicted_labels_note
from ..robustness.comparison import model_accuracy
from ..topology.store import is_analysis_dir
from . import figures
from .markup import escaped, figure_html, number_text, table_html
from .robustness import robustness_section

if TYPE_CHECKING:
    from ..activations.pointcloud import PointCloud
    from ..topology.analysis import Analysis, LayerAnalysis
    from ..topology.config import AnalysisConfig
    from ..topology.persistence import PersistenceResult

__all__ = [
    "ANALYSIS_DIR",
    "REPORT_NAME",
    "iter_render_report",
    "remove_report_debris",
    "render_report",
    "write_report",
]

REPORT_NAME = "report.html"
ANALYSIS_DIR = "analysis"
#: Marks a page as ours, so a later report may replace it (and nobody else's).
GENERATOR = "napari-topolens report"

_CSS = """
:root { --ink:#1d2330; --muted:#5d6678; --line:#e3e6ec; --card:#ffffff; --bg:#f4f6f9; --accent:#2f6fd6; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg); }
header { background:#182132; color:#f3f5f9; padding:28px 40px 22px; }
header h1 { margin:0 0 6px; font-size:26px; font-weight:650; }
header p { margin:2px 0; color:#c5cedd; }
nav { position:sticky; top:0; z-index:5; background:#ffffffee; border-bottom:1px solid var(--line); padding:8px 40px; font-size:14px; }
nav a { color:var(--accent); text-decoration:none; margin-right:16px; }
main { padding:20px 40px 60px; max-width:1320px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 22px; margin:18px 0; }
h2 { margin:0 0 4px; font-size:20px; }
h3 { margin:18px 0 6px; font-size:15px; color:var(--muted); font-weight:600; }
p.lead { color:var(--muted); margin:0 0 10px; }
table { border-collapse:collapse; font-size:13px; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { background:#f7f8fb; color:var(--muted); font-weight:600; }
td:first-child, th:first-child { text-align:left; }
table.kv td { text-align:left; white-space:normal; }
table.kv td:first-child { color:var(--muted); width:190px; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit,minmax(460px,1fr)); gap:10px 24px; align-items:start; }
figure { margin:6px 0; }
figure img { max-width:100%; height:auto; display:block; }
figcaption { font-size:12.5px; color:var(--muted); margin-top:2px; }
.numbers { display:flex; flex-wrap:wrap; gap:10px; margin:8px 0 4px; }
.num { background:#f7f8fb; border:1px solid var(--line); border-radius:8px; padding:6px 12px; min-width:112px; }
.num b { display:block; font-size:18px; }
.num span { font-size:12px; color:var(--muted); }
.legend { display:flex; flex-wrap:wrap; gap:6px 14px; font-size:13px; margin:6px 0; }
.swatch { display:inline-block; width:12px; height:12px; border-radius:3px; margin-right:5px; vertical-align:-1px; }
details { margin:8px 0; } summary { cursor:pointer; color:var(--accent); }
.scroll { overflow-x:auto; }
code { font-size:12.5px; }
"""


def _plain(value: Any) -> str:
    """A provenance value as short text (arrays by size, not by content)."""
    if isinstance(value, np.ndarray):
        return f"array of {value.size:,} {value.dtype} values" if value.ndim else str(value[()])
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(str(v) for v in value)  # layers, variants: as the command line wrote them
    return str(value)


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{escaped(k)}</td><td>{escaped(_plain(v))}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _class_names(analysis: Analysis) -> list[str] | None:
    if analysis.class_names is not None:
        return list(analysis.class_names)
    if analysis.n_classes:
        # codes without names run 0..k-1 (``check_class_labels``, and the loader checks
        # it): k is at most the number of labels, whatever the largest code says
        labels = analysis.labels
        count = min(analysis.n_classes, len(labels) if labels is not None else 0)
        return [str(i) for i in range(count)] or None
    return None


def _summary_rows(analysis: Analysis) -> list[list[str]]:
    rows = []
    for result in analysis.layer_results:
        cloud = result.cloud
        diagrams = result.persistence.diagrams
        flow = result.flow
        best = flow.memberships[flow.best_stage]
        n_best = len(np.unique(best[best >= 0]))
        total = result.persistence.total_persistence
        rows.append(
            [
                escaped(result.name),
                f"{len(cloud):,} × {cloud.points.shape[1]}",
                escaped(cloud.sampling),
                str(len(diagrams[0])),
                str(len(diagrams[1])) if len(diagrams) > 1 else "–",
                number_text(float(total[1])) if len(total) > 1 else "–",
                number_text(float(result.phdim.dimension)),
                f"{len(result.mapper.node_ids)} / {len(result.mapper.edges)}",
                str(n_best),
                number_text(float(result.quality.purity)),
                number_text(float(result.quality.ari)),
                number_text(float(result.quality.nmi)),
                number_text(float(result.quality.silhouette)),
                f"{sum(result.seconds.values()):.1f}",
            ]
        )
    return rows


def _legend_html(class_names: list[str] | None, colours: list[str]) -> str:
    if not class_names:
        return ""
    items = "".join(
        f'<span><i class="swatch" style="background:{c}"></i>{escaped(n)}</span>'
        for n, c in zip(class_names, colours)
    )
    items += f'<span><i class="swatch" style="background:{figures.UNKNOWN_COLOUR}"></i>noise / unknown</span>'
    return f'<div class="legend">{items}</div>'


def _accuracy_bits(analysis: Analysis) -> list[str]:
    """ "model accuracy 98.0 %" when the analysis holds predictions and true labels.

    The first check that the images reached the model as it was trained to see them
    (a wrong input scale shows here as a low accuracy).
    """
    accuracy = model_accuracy(analysis)
    if math.isnan(accuracy):
        return []
    return [f"model accuracy {100 * accuracy:.1f} % (predicted class vs label code)"]


def _provenance_html(analysis: Analysis) -> str:
    record = dict(analysis.provenance)
    nested = {k: record.pop(k) for k in list(record) if isinstance(record[k], dict)}
    rows = [(k, v) for k, v in record.items()]
    parts = [_kv_table(rows)]
    for key, value in nested.items():
        shown = " open" if key == "caps" else ""  # the caps qualify the numbers: show them
        parts.append(
            f"<details{shown}><summary>{escaped(key)}</summary>{_kv_table(list(value.items()))}</details>"
        )
    parts.append(
        "<details><summary>analysis parameters</summary>"
        + _kv_table(list(analysis.config.to_dict().items()))
        + "</details>"
    )
    return "".join(parts)


def _layer_section(
    number: int,
    result: LayerAnalysis,
    analysis: Analysis,
    colours: list[str],
    class_names: list[str] | None,
    images: np.ndarray | None,
    uris: dict[str, str] | None = None,
) -> Generator[Progress, None, str]:
    """One layer's section; ``uris``: its image-free figures, rendered elsewhere (or here)."""
    seed = int(analysis.config.seed)
    if uris is None:
        uris = {}
        for key, fraction, message, function, args in _figure_jobs(
            result, colours, class_names, seed
        ):
            yield Progress(fraction, message)
            uris[key] = function(*args)
    examples_uri = None
    if images is not None:
        yield Progress(0.85, "member images")
        flow = result.flow
        examples_uri = figures.examples_figure(
            images,
            result.cloud,
            flow.memberships[flow.best_stage],
            result.point_labels,
            colours,
            class_names,
            seed=seed,
        )
    page = _layer_html(number, result, analysis, {**uris, "examples": examples_uri})
    yield Progress(1.0, "layer done")
    return page


def _layer_numbers_html(result: LayerAnalysis, analysis: Analysis) -> str:
    """The layer's headline numbers, as boxes."""
    cloud = result.cloud
    persistence = result.persistence
    numbers = [
        (
            f"{len(cloud):,}",
            f"points ({cloud.points.shape[1]}-d, {cloud.sampling}"
            + (
                f"; a random {len(cloud):,} of {int(cloud.meta['points_before_cap']):,} "
                f"extracted, analysis cap max_points = {analysis.config.max_points:,})"
                if "points_before_cap" in cloud.meta
                else ")"
            ),
        ),
        (str(len(persistence.diagrams[0])), "H0 bars"),
    ]
    if len(persistence.diagrams) > 1:
        numbers.append((str(len(persistence.diagrams[1])), f"H1 bars on {_h1_points(persistence)}"))
        numbers.append(
            (number_text(float(persistence.total_persistence[1])), "H1 total persistence")
        )
    numbers.append((number_text(float(result.phdim.dimension)), "PH dimension"))
    if result.class_persistence is not None:
        numbers.append(
            (number_text(float(result.class_persistence.mean)), "mean class total H0 persistence")
        )
    for name in ("purity", "homogeneity", "ari", "nmi", "silhouette"):
        numbers.append(
            (
                number_text(float(getattr(result.quality, name))),
                name.upper() if len(name) == 3 else name,
            )
        )
    return "".join(
        f'<div class="num"><b>{v}</b><span>{escaped(k)}</span></div>' for v, k in numbers
    )


def _layer_html(
    number: int, result: LayerAnalysis, analysis: Analysis, uris: dict[str, str | None]
) -> str:
    """The layer's section from its figures (``uris`` by key; ``examples`` may be None)."""
    cloud = result.cloud
    persistence = result.persistence
    flow = result.flow
    phdim = result.phdim
    mapper_params = result.mapper.params
    phdim_note = f" {escaped(phdim.note)}" if getattr(phdim, "note", "") else ""
    best_name = flow.stage_names[flow.best_stage]
    threshold = flow.thresholds[flow.best_stage]
    parts = [
        f'<section class="layer" id="layer-{number}">',
        f"<h2>Layer {number}: <code>{escaped(result.name)}</code></h2>",
        f'<p class="lead">grid {escaped(tuple(cloud.grid_shape)) if cloud.grid_shape else "none (vector)"}, '
        f"{len(np.unique(cloud.image_index)):,} images</p>",
        f'<div class="numbers">{_layer_numbers_html(result, analysis)}</div>',
        "<h3>Persistence</h3>",
        figure_html(
            uris["persistence"],
            f"Vietoris–Rips persistence ({escaped(persistence.metric)} metric). H0 on "
            f"{escaped(_h0_points(persistence, cloud, analysis.config))} (single linkage); "
            f"H1 on {escaped(_h1_points(persistence))}. "
            "Triangles: the infinite H0 bar.",
        ),
        '<div class="grid2">',
        figure_html(
            uris["mapper"],
            f"Mapper graph (lens {escaped(mapper_params.get('lens'))}, {escaped(mapper_params.get('n_cubes'))} "
            f"intervals, overlap {escaped(mapper_params.get('perc_overlap'))}, DBSCAN eps "
            f"{number_text(mapper_params.get('eps'))} from {escaped(mapper_params.get('eps_source', '?'))}). "
            "Colour: dominant class (faded = mixed node); size: members; edge width: Jaccard overlap.",
        ),
        figure_html(
            uris["blob"],
            "Blob graph: the cloud's 2-D PCA coloured by true class, with a padded hull around "
            f"each cluster of the best H0 stage ({escaped(best_name)}, threshold {number_text(float(threshold))}).",
        ),
        "</div>",
        figure_html(
            uris["flow"],
            "Cluster flow: clusters of the H0 filtration (single linkage) at a few thresholds and how "
            f"points move between them; ★ marks the best stage; clusters of ≤ {analysis.config.noise_size} "
            "points are noise (grey). Cluster colour: its most frequent class.",
        ),
        '<div class="grid2">',
        figure_html(
            uris["dendrogram"],
            f"Heatmap dendrogram of {len(result.dendrogram.index):,} points: pairwise distances in "
            f"{escaped(result.dendrogram.ordering)} order; the strip shows each point's class.",
        ),
        figure_html(
            uris["examples"], "Images behind the clusters: a seeded random sample of members."
        )
        if uris["examples"]
        else "",
        "</div>",
        f'<p class="lead">PH dimension {number_text(float(phdim.dimension))} from the slope '
        f"{number_text(float(phdim.slope))} of log E<sub>α</sub> against log n over subsamples of "
        f"{escaped(', '.join(str(int(s)) for s in phdim.sizes))} points (α = {number_text(float(phdim.alpha))}; "
        f"cap phdim_max_points = {int(analysis.config.phdim_max_points):,}).{phdim_note}</p>",
        "</section>",
    ]
    return "\n".join(p for p in parts if p)


def _figure_jobs(
    result: LayerAnalysis, colours: list[str], class_names: list[str] | None, seed: int
) -> list[tuple[str, float, str, Any, tuple]]:
    """(key, progress, message, function, arguments) of a layer's figures that need no
    images: small picklable arguments, so a worker process can draw them."""
    positions = figures.report_mapper_positions(result, seed)
    labels = result.point_labels
    return [
        (
            "persistence",
            0.0,
            "persistence figure",
            figures.persistence_figure,
            (result.persistence,),
        ),
        (
            "mapper",
            0.2,
            "Mapper figure",
            functools.partial(figures.mapper_figure, positions=positions),
            (result.mapper, colours, class_names),
        ),
        (
            "flow",
            0.4,
            "cluster flow figure",
            figures.flow_figure,
            (result.flow, labels, colours, class_names),
        ),
        (
            "blob",
            0.55,
            "blob graph figure",
            figures.blob_figure,
            (result.blobs, colours, class_names),
        ),
        (
            "dendrogram",
            0.7,
            "heatmap dendrogram figure",
            figures.dendrogram_figure,
            (result.dendrogram, labels, colours),
        ),
    ]


def _draw_figures(jobs: list[tuple[str, float, str, Any, tuple]]) -> dict[str, str]:
    """Draw the figures of :func:`_figure_jobs` (in a worker process)."""
    return {key: function(*args) for key, _fraction, _message, function, args in jobs}


def _figure_pool(workers: int, n_layers: int) -> Any:
    """A one-process pool that draws half the layers' figures beside this process, or None.

    Matplotlib holds the GIL, so only a process runs beside it; "spawn" (a fresh
    interpreter, about a second to start) because forking a process with torch's
    and BLAS's threads running is unsafe.
    """
    if workers < 2 or n_layers < 2:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_leave_interrupts_to_the_parent,
    )


def _leave_interrupts_to_the_parent() -> None:
    """Ctrl-C reaches the worker too: the parent stops the pool, and the worker prints no
    traceback of its own."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _h0_points(persistence: PersistenceResult, cloud: PointCloud, config: AnalysisConfig) -> str:
    """Which points H0 was computed on, in words, with the cap that chose them."""
    n = int(persistence.n_points)
    before = cloud.meta.get("points_before_cap")
    if before is not None and int(before) > n:
        return (
            f"a random {n:,} of the {int(before):,} extracted points "
            f"(analysis cap max_points = {int(config.max_points):,}, seed {int(config.seed)})"
        )
    return f"all {n:,} points"


def _h1_points(persistence: PersistenceResult) -> str:
    """Which points H1 was computed on, in words."""
    n = len(persistence.h1_index)
    if persistence.subsample == "none" or n == persistence.n_points:
        return f"all {n:,} points"
    kind = "max-min landmarks" if persistence.subsample == "maxmin" else "random points"
    text = f"{n:,} {kind} of {persistence.n_points:,}"
    route = persistence.h1_route or {}
    closeness = route.get(f"pilot_bottleneck_{persistence.subsample}")
    if closeness is not None and np.isfinite(closeness):
        text += (
            f" (on a {int(route.get('pilot_points', 0)):,}-point pilot their diagram was "
            f"{float(closeness):.3g} from the full one in bottleneck distance)"
        )
    return text


def iter_render_report(
    analysis: Analysis,
    *,
    images: Any = None,
    title: str | None = None,
    extra_sections: Sequence[str] = (),
    workers: int = 1,
) -> Generator[Progress, None, str]:
    """Render the report page as a string; yields progress per layer and figure.

    ``images`` (the images the analysis was made from; default ``analysis.images``)
    adds a strip of member images per cluster, receptive fields outlined for
    spatial clouds. ``extra_sections`` are HTML sections placed after the
    robustness section (the topology maps, ``report.maps``, made where the model is).
    ``workers=2`` draws the later half of the layers' figures in a second process
    meanwhile (the page is the same; worth it with a free core).
    """
    if images is None:
        images = getattr(analysis, "images", None)
    if images is not None:
        images = np.asarray(images)
        needed = int(max(int(r.cloud.image_index.max()) for r in analysis.layer_results)) + 1
        if images.ndim not in (3, 4) or len(images) < needed:
            raise ImageError(
                f"the report's images have shape {images.shape}, but the analysis refers to "
                f"{needed} images; pass the same images the analysis was made from"
            )
    class_names = _class_names(analysis)
    colours = figures.class_colours(len(class_names) if class_names else 0)
    layers = analysis.layers
    n_layers = len(layers)
    if not title:
        sample = analysis.provenance.get("sample")
        model = analysis.provenance.get("model")
        title = (
            f"Topology of the {sample} sample model"
            if sample
            else f"Topology of {model}"
            if model
            else "Topology of a network's activations"
        )
    pool = _figure_pool(workers, n_layers)
    try:
        page = yield from _render_page(
            analysis, images, title, colours, class_names, layers, n_layers, pool, extra_sections
        )
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return page


def _render_page(
    analysis: Analysis,
    images: Any,
    title: str,
    colours: list[str],
    class_names: list[str] | None,
    layers: list[str],
    n_layers: int,
    pool: Any,
    extra_sections: Sequence[str] = (),
) -> Generator[Progress, None, str]:
    seed = int(analysis.config.seed)
    results = list(analysis.layer_results)
    # the pool draws the later layers' figures while this process draws the rest
    drawn_elsewhere = {
        number: pool.submit(_draw_figures, _figure_jobs(result, colours, class_names, seed))
        for number, result in enumerate(results, start=1)
        if pool is not None and number > n_layers // 2
    }
    sections: dict[int, str] = {}

    def section(
        number: int, uris: dict[str, str] | None, start: float, stop: float
    ) -> Generator[Progress, None, str]:
        result = results[number - 1]
        steps = _layer_section(number, result, analysis, colours, class_names, images, uris)
        return scaled(steps, start, stop, prefix=f"report: {result.name}: ")

    for number in range(1, n_layers + 1):
        if number not in drawn_elsewhere:
            start, stop = (number - 1) / (n_layers + 1), number / (n_layers + 1)
            sections[number] = yield from section(number, None, start, stop)
    at = n_layers / (n_layers + 1)
    robustness_html = ""
    if getattr(analysis, "variants", None):
        robustness_html = yield from scaled(robustness_section(analysis), at, at)
    yield Progress(at, "report: comparisons across layers")
    across_html = _across_layers_html(analysis, layers)
    for number, future in drawn_elsewhere.items():  # the progress does not go back
        sections[number] = yield from section(number, future.result(), at, at)
    page = [
        *_page_head(analysis, title, layers, bool(robustness_html), extra_sections),
        "<main>",
        _summary_html(analysis, colours, class_names),
        across_html,
        robustness_html,
        *extra_sections,
        *(sections[number] for number in sorted(sections)),
        "</main></body></html>",
    ]
    yield Progress(1.0, "report rendered")
    return "\n".join(p for p in page if p)


def _across_layers_html(analysis: Analysis, layers: list[str]) -> str:
    """The section comparing the layers: quality curves and diagram-distance matrices."""
    results = analysis.layer_results
    quality = {
        name: [float(getattr(r.quality, name)) for r in results]
        for name in ("purity", "homogeneity", "ari", "nmi", "silhouette")
    }
    curves_uri = figures.layer_curves_figure(
        layers,
        [float(r.phdim.dimension) for r in results],
        [
            float(r.class_persistence.mean) if r.class_persistence is not None else math.nan
            for r in results
        ],
        quality,
    )
    config = analysis.config
    dim = config.distance_dim
    titles = {
        "sliced_wasserstein": f"sliced Wasserstein (H{dim})",
        "bottleneck": f"bottleneck (H{dim})",
        "wasserstein": f"Wasserstein p={config.wasserstein_p:g} (H{dim})",
        "cka": "linear CKA (similarity)",
    }
    others = [
        k for k in ("sliced_wasserstein", "bottleneck", "wasserstein") if k != config.layer_distance
    ]
    order = [config.layer_distance, *others, "cka"]
    matrices = {k: analysis.layer_distances[k] for k in order if k in analysis.layer_distances}
    matrices_uri = figures.matrices_figure(layers, matrices, titles)
    notes = analysis.provenance.get("notes", {})
    parts = [
        '<section id="across"><h2>Across layers</h2>',
        figure_html(
            curves_uri,
            "PH dimension (with the per-class total H0 persistence) and the "
            "cluster-quality numbers of the best stage, layer by layer.",
        ),
        figure_html(
            matrices_uri,
            "Distances between the layers' persistence diagrams (finite bars), and linear CKA "
            f"between their representations. {escaped(notes.get('cka', ''))}",
        ),
        "</section>",
    ]
    return "\n".join(p for p in parts if p)


#: The summary table's columns (one row per layer: :func:`_summary_rows`).
_SUMMARY_HEADER = [
    "Layer",
    "Points × dims",
    "Sampling",
    "H0 bars",
    "H1 bars",
    "H1 total pers.",
    "PH dim",
    "Mapper nodes / edges",
    "Best-stage clusters",
    "Purity",
    "ARI",
    "NMI",
    "Silhouette",
    "Seconds",
]


def _summary_html(analysis: Analysis, colours: list[str], class_names: list[str] | None) -> str:
    """The summary section: one row per layer, the class legend and the provenance."""
    parts = [
        '<section id="summary"><h2>Summary</h2>',
        '<p class="lead">One row per layer, in forward order. Quality numbers compare the true '
        "classes with the clusters of the best H0 stage.</p>",
        table_html(_SUMMARY_HEADER, _summary_rows(analysis)),
        _legend_html(class_names, colours),
        "<h3>Provenance</h3>",
        _provenance_html(analysis),
        "</section>",
    ]
    return "\n".join(p for p in parts if p)


def _subtitle(analysis: Analysis, layers: list[str]) -> str:
    """The header's line under the title: layers, images, sample, accuracy, input, date."""
    provenance = analysis.provenance
    bits = [
        f"{len(layers)} layer{'s' if len(layers) != 1 else ''}",
        f"{provenance.get('n_images', '?')} images",
    ]
    if provenance.get("sample"):
        bits.insert(0, f"sample {provenance['sample']}")
    predicted = predicted_labels_note(provenance)  # purity then means agreement with the model
    if predicted:
        bits.append(predicted)
    else:
        bits.extend(_accuracy_bits(analysis))
    if provenance.get("input_scale"):
        bits.append(f"model input: {provenance['input_scale']}")
    if provenance.get("created"):
        bits.append(f"made {provenance['created']}")
    return " · ".join(bits)


def _page_head(
    analysis: Analysis,
    title: str,
    layers: list[str],
    robustness: bool,
    extra_sections: Sequence[str],
) -> list[str]:
    """The page's lines up to ``<main>``: head, header and the navigation bar."""
    provenance = analysis.provenance
    nav = " ".join(
        f'<a href="#layer-{i}">{escaped(name)}</a>' for i, name in enumerate(layers, start=1)
    )
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="{GENERATOR}">',
        f"<title>{escaped(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{escaped(title)}</h1><p>{escaped(_subtitle(analysis, layers))}</p>",
        f"<p>{escaped(provenance.get('description', ''))}</p></header>"
        if provenance.get("description")
        else "</header>",
        '<nav><a href="#summary">Summary</a><a href="#across">Across layers</a>'
        + ('<a href="#robustness">Robustness</a>' if robustness else "")
        + (
            '<a href="#maps">Topology maps</a>'
            if any('id="maps"' in x for x in extra_sections)
            else ""
        )
        + f"{nav}</nav>",
    ]


def render_report(
    analysis: Analysis,
    *,
    images: Any = None,
    title: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    extra_sections: Sequence[str] = (),
    workers: int = 1,
) -> str:
    """Plain form of :func:`iter_render_report`."""
    steps = iter_render_report(
        analysis, images=images, title=title, extra_sections=extra_sections, workers=workers
    )
    return drive(steps, progress, cancel)


def _is_our_report(path: Path) -> bool:
    """True for a report.html this package wrote (its generator tag in the head)."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">' in head


def check_report_folder(out_dir: str | os.PathLike) -> None:
    """Refuse, before any work, an output folder whose files are not ours to replace.

    ``out_dir`` may be new, or hold files of the user's; ``out_dir/analysis`` may
    be absent, empty or a saved analysis, and ``out_dir/report.html`` absent or a
    page written by napari-topolens (or beside a saved analysis, as reports were
    before the generator tag).
    """
    out = Path(out_dir).expanduser()
    analysis_path = out / ANALYSIS_DIR
    report_path = out / REPORT_NAME
    if out.exists() and not out.is_dir():
        raise AnalysisFileError(f"{out} is a file; give a folder for the report")
    if os.path.lexists(analysis_path) and not (
        not analysis_path.is_symlink()
        and analysis_path.is_dir()
        and (is_analysis_dir(analysis_path) or not any(analysis_path.iterdir()))
    ):
        raise AnalysisFileError(
            f"{analysis_path} exists and is not a saved analysis; choose another output folder"
        )
    if os.path.lexists(report_path) and not (
        _is_our_report(report_path)
        or (
            report_path.is_file()
            and not report_path.is_symlink()
            and is_analysis_dir(analysis_path)
        )
    ):
        raise AnalysisFileError(
            f"{report_path} exists and was not written by napari-topolens; choose another "
            "output folder (or move that file) so it is not overwritten"
        )


def write_report(
    analysis: Analysis,
    out_dir: str | os.PathLike,
    *,
    images: Any = None,
    title: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    extra_sections: Sequence[str] = (),
    seconds: dict[str, tuple[float, float]] | None = None,
    workers: int = 1,
) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/analysis/`` (the saved analysis).

    The page is rendered in memory first; then the analysis is saved (atomically,
    see ``topology.store``) and the page is written to a temporary file, and both
    are renamed into place. If anything fails or is interrupted (Ctrl-C, or
    SIGTERM in the command line), up to and including the last rename, what this
    call wrote is removed and a previous report in ``out_dir`` stays as it was; a signal
    during the renames is held until they (or their undo) are done, and the scratch of
    a run killed outright is finished or undone by the next write
    (:func:`remove_report_debris`). A ``report.html`` or ``analysis/`` that
    napari-topolens did not write is never replaced (see :func:`check_report_folder`).

    ``workers``: see :func:`iter_render_report`. ``seconds``, when given, receives the
    (wall, CPU) seconds of rendering the page (``"report page"``) and of saving the
    analysis and the page (``"saving"``).

    Returns
    -------
    Path
        The path of ``report.html``.
    """
    out = Path(out_dir).expanduser()
    remove_report_debris(out)
    check_report_folder(out)
    started, started_cpu = time.perf_counter(), time.process_time()
    page = render_report(
        analysis,
        images=images,
        title=title,
        progress=progress,
        cancel=cancel,
        extra_sections=extra_sections,
        workers=workers,
    )
    rendered, rendered_cpu = time.perf_counter(), time.process_time()
    report_path = _write_and_swap(analysis, page, out, progress)
    if seconds is not None:
        seconds["report page"] = (rendered - started, rendered_cpu - started_cpu)
        seconds["saving"] = (time.perf_counter() - rendered, time.process_time() - rendered_cpu)
    return report_path


def _write_and_swap(
    analysis: Analysis, page: str, out: Path, progress: ProgressCallback | None
) -> Path:
    """Save the analysis and the page beside ``out``'s, then rename both into place.

    Undone on any failure or signal (see :func:`write_report`); returns the page's path.
    """
    analysis_path = out / ANALYSIS_DIR
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / REPORT_NAME
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging, partial, retired = _scratch_names(out, token)
    _ACTIVE_TOKENS.add(token)
    try:
        try:
            if progress is not None:
                progress(1.0, "saving the analysis")
            analysis.save(staging)
            with open(partial, "w", encoding="utf-8") as handle:
                handle.write(page)
            pause_point("report-written")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if partial.exists():
                partial.unlink()
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
        # The swap and its undo finish whatever signal comes (it is delivered after them);
        # a run killed outright in here is finished or undone by the next one
        # (remove_report_debris).
        with signals_deferred():
            swapped = False
            try:
                if analysis_path.exists():
                    os.replace(analysis_path, retired)
                os.replace(staging, analysis_path)
                swapped = True
                pause_point("report-swap")
                os.replace(partial, report_path)
            except BaseException:
                if swapped:  # the new analysis is in place but its page is not: take it out
                    os.replace(analysis_path, staging)
                shutil.rmtree(staging, ignore_errors=True)
                if partial.exists():
                    partial.unlink()
                if retired.exists() and not analysis_path.exists():
                    os.replace(retired, analysis_path)
                if created:
                    shutil.rmtree(out, ignore_errors=True)
                raise
            shutil.rmtree(retired, ignore_errors=True)
    finally:
        _ACTIVE_TOKENS.discard(token)
    return report_path


#: Tokens of the report writes under way in this process (their scratch is not debris).
_ACTIVE_TOKENS: set[str] = set()
#: The scratch names write_report uses, and the saved analysis's own scratch inside them.
_DEBRIS = re.compile(
    r"^(?:\.analysis\.(?:report|old)-(?P<a>[0-9]+-[0-9a-f]{8}|[0-9a-f]{12})"
    r"|\.report\.html\.(?P<b>[0-9]+-[0-9a-f]{8}|[0-9a-f]{12})\.tmp"
    r"|\.\.analysis\.report-(?P<c>[0-9]+-[0-9a-f]{8}|[0-9a-f]{12})\.(?:saving|old)-[0-9a-f]{12})$"
)


def _scratch_names(out: Path, token: str) -> tuple[Path, Path, Path]:
    """The staged analysis, the partial page and the retired analysis of one write."""
    return (
        out / f".{ANALYSIS_DIR}.report-{token}",
        out / f".{REPORT_NAME}.{token}.tmp",
        out / f".{ANALYSIS_DIR}.old-{token}",
    )


def _writer_alive(token: str) -> bool:
    """Whether the process that wrote ``token``'s scratch may still be writing it."""
    if token in _ACTIVE_TOKENS:
        return True
    pid_text, dash, _ = token.partition("-")
    if not dash:
        return False  # tokens before the pid was part of them
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def _remove(path: Path) -> None:
    """Remove one scratch entry (never through a link: rmtree refuses a linked folder)."""
    if path.is_symlink() or not os.path.lexists(path):
        return
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_report_debris(out_dir: str | os.PathLike) -> list[str]:
    """Finish or undo the report writes of runs that were killed, and remove their scratch.

    Only names :func:`write_report` makes are touched, only directly inside ``out_dir``,
    never through a link, and never those of a writer still running. A write killed
    before its analysis was swapped in is undone (the previous analysis put back); one
    killed between the swap and the page's rename is finished (its page was complete
    before the swap began). Returns the names removed or restored.
    """
    out = Path(out_dir).expanduser()
    if out.is_symlink() or not out.is_dir():
        return []
    try:
        names = [entry.name for entry in os.scandir(out)]
    except OSError:
        return []
    tokens: dict[str, list[str]] = {}
    for name in names:
        match = _DEBRIS.match(name)
        if match is not None:
            token = match.group("a") or match.group("b") or match.group("c")
            tokens.setdefault(token, []).append(name)
    analysis_path, report_path = out / ANALYSIS_DIR, out / REPORT_NAME
    done: list[str] = []
    for token, found in sorted(tokens.items()):
        if _writer_alive(token) or any((out / name).is_symlink() for name in found):
            continue
        staging, partial, retired = _scratch_names(out, token)
        for name in found:
            if name.startswith(".."):  # the saved analysis's own scratch
                _remove(out / name)
        if staging.exists():  # killed before the swap: undo it
            _remove(staging)
            _remove(partial)
            if retired.exists() and not os.path.lexists(analysis_path):
                os.replace(retired, analysis_path)
        elif partial.exists():  # killed between the swap and the page: finish it
            if os.path.lexists(report_path) and not _is_our_report(report_path):
                _remove(partial)  # never replace a page that is not ours
            else:
                os.replace(partial, report_path)
        if retired.exists():
            if os.path.lexists(analysis_path):
                _remove(retired)
            else:
                os.replace(retired, analysis_path)
        done.extend(found)
    return sorted(done)
