"""One self-contained HTML page showing an :class:`~napari_topolens.topology.analysis.Analysis`.

The page has inline CSS and inline base64 PNG figures only (no scripts, no
external URL), so it can be mailed or archived as a single file. Beside it,
``analysis/`` holds the analysis itself in the lossless format of
``topology.store``, which ``load_analysis`` (and the napari plugin) read back.
"""

from __future__ import annotations

import functools
import html
import math
import os
import re
import shutil
import uuid
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import CancelCallback, Progress, ProgressCallback, drive, scaled
from ..errors import ImageError
from ..label_sources import predicted_labels_note

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


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}g}"
    return _e(value)


def _figure_html(uri: str | None, caption: str) -> str:
    if uri is None:
        return ""
    return (
        f'<figure><img alt="{_e(caption)}" src="{uri}"><figcaption>{caption}</figcaption></figure>'
    )


def _plain(value: Any) -> str:
    """A provenance value as short text (arrays by size, not by content)."""
    if isinstance(value, np.ndarray):
        return f"array of {value.size:,} {value.dtype} values" if value.ndim else str(value[()])
    if value is None:
        return "–"
    return str(value)


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_plain(v))}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _class_names(analysis: Any) -> list[str] | None:
    if analysis.class_names is not None:
        return list(analysis.class_names)
    if analysis.n_classes:
        # codes without names run 0..k-1 (``check_class_labels``, and the loader checks
        # it): k is at most the number of labels, whatever the largest code says
        labels = analysis.labels
        count = min(analysis.n_classes, len(labels) if labels is not None else 0)
        return [str(i) for i in range(count)] or None
    return None


def _summary_rows(analysis: Any) -> list[list[str]]:
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
                _e(result.name),
                f"{len(cloud):,} × {cloud.points.shape[1]}",
                _e(cloud.sampling),
                str(len(diagrams[0])),
                str(len(diagrams[1])) if len(diagrams) > 1 else "–",
                _fmt(float(total[1])) if len(total) > 1 else "–",
                _fmt(float(result.phdim.dimension)),
                f"{len(result.mapper.node_ids)} / {len(result.mapper.edges)}",
                str(n_best),
                _fmt(float(result.quality.purity)),
                _fmt(float(result.quality.ari)),
                _fmt(float(result.quality.nmi)),
                _fmt(float(result.quality.silhouette)),
                f"{sum(result.seconds.values()):.1f}",
            ]
        )
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _legend_html(class_names: list[str] | None, colours: list[str]) -> str:
    if not class_names:
        return ""
    from .figures import UNKNOWN_COLOUR

    items = "".join(
        f'<span><i class="swatch" style="background:{c}"></i>{_e(n)}</span>'
        for n, c in zip(class_names, colours)
    )
    items += (
        f'<span><i class="swatch" style="background:{UNKNOWN_COLOUR}"></i>noise / unknown</span>'
    )
    return f'<div class="legend">{items}</div>'


def _accuracy_bits(analysis: Any) -> list[str]:
    """ "model accuracy 98.0 %" when the analysis holds predictions and true labels.

    The first check that the images reached the model as it was trained to see them
    (a wrong input scale shows here as a low accuracy).
    """
    import math

    from ..robustness.comparison import _accuracy

    accuracy = _accuracy(analysis)
    if math.isnan(accuracy):
        return []
    return [f"model accuracy {100 * accuracy:.1f} % (predicted class vs label code)"]


def _provenance_html(analysis: Any) -> str:
    record = dict(analysis.provenance)
    nested = {k: record.pop(k) for k in list(record) if isinstance(record[k], dict)}
    rows = [(k, v) for k, v in record.items()]
    parts = [_kv_table(rows)]
    for key, value in nested.items():
        shown = " open" if key == "caps" else ""  # the caps qualify the numbers: show them
        parts.append(
            f"<details{shown}><summary>{_e(key)}</summary>{_kv_table(list(value.items()))}</details>"
        )
    parts.append(
        "<details><summary>analysis parameters</summary>"
        + _kv_table(list(analysis.config.to_dict().items()))
        + "</details>"
    )
    return "".join(parts)


def _layer_section(
    number: int,
    result: Any,
    analysis: Any,
    colours: list[str],
    class_names: list[str] | None,
    images: np.ndarray | None,
    uris: dict[str, str] | None = None,
) -> Generator[Progress, None, str]:
    """One layer's section; ``uris``: its image-free figures, rendered elsewhere (or here)."""
    from . import figures

    seed = int(analysis.config.seed)
    cloud = result.cloud
    persistence = result.persistence
    flow = result.flow
    best = flow.memberships[flow.best_stage]
    quality = result.quality
    phdim = result.phdim
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
        numbers.append((_fmt(float(persistence.total_persistence[1])), "H1 total persistence"))
    numbers.append((_fmt(float(phdim.dimension)), "PH dimension"))
    if result.class_persistence is not None:
        numbers.append(
            (_fmt(float(result.class_persistence.mean)), "mean class total H0 persistence")
        )
    for name in ("purity", "homogeneity", "ari", "nmi", "silhouette"):
        numbers.append(
            (_fmt(float(getattr(quality, name))), name.upper() if len(name) == 3 else name)
        )
    number_html = "".join(
        f'<div class="num"><b>{v}</b><span>{_e(k)}</span></div>' for v, k in numbers
    )

    if uris is None:
        uris = {}
        for key, fraction, message, function, args in _figure_jobs(
            result, colours, class_names, seed
        ):
            yield Progress(fraction, message)
            uris[key] = function(*args)
    persistence_uri, mapper_uri, flow_uri, blob_uri, dendrogram_uri = (
        uris[key] for key in ("persistence", "mapper", "flow", "blob", "dendrogram")
    )
    examples_uri = None
    if images is not None:
        yield Progress(0.85, "member images")
        examples_uri = figures.examples_figure(
            images, cloud, best, result.point_labels, colours, class_names, seed=seed
        )
    mapper_params = result.mapper.params
    phdim_note = f" {_e(phdim.note)}" if getattr(phdim, "note", "") else ""
    best_name = flow.stage_names[flow.best_stage]
    threshold = flow.thresholds[flow.best_stage]
    parts = [
        f'<section class="layer" id="layer-{number}">',
        f"<h2>Layer {number}: <code>{_e(result.name)}</code></h2>",
        f'<p class="lead">grid {_e(tuple(cloud.grid_shape)) if cloud.grid_shape else "none (vector)"}, '
        f"{len(np.unique(cloud.image_index)):,} images</p>",
        f'<div class="numbers">{number_html}</div>',
        "<h3>Persistence</h3>",
        _figure_html(
            persistence_uri,
            f"Vietoris–Rips persistence ({_e(persistence.metric)} metric). H0 on "
            f"{_e(_h0_points(persistence, cloud, analysis.config))} (single linkage); "
            f"H1 on {_e(_h1_points(persistence))}. "
            "Triangles: the infinite H0 bar.",
        ),
        '<div class="grid2">',
        _figure_html(
            mapper_uri,
            f"Mapper graph (lens {_e(mapper_params.get('lens'))}, {_e(mapper_params.get('n_cubes'))} "
            f"intervals, overlap {_e(mapper_params.get('perc_overlap'))}, DBSCAN eps "
            f"{_fmt(mapper_params.get('eps'))} from {_e(mapper_params.get('eps_source', '?'))}). "
            "Colour: dominant class (faded = mixed node); size: members; edge width: Jaccard overlap.",
        ),
        _figure_html(
            blob_uri,
            "Blob graph: the cloud's 2-D PCA coloured by true class, with a padded hull around "
            f"each cluster of the best H0 stage ({_e(best_name)}, threshold {_fmt(float(threshold))}).",
        ),
        "</div>",
        _figure_html(
            flow_uri,
            "Cluster flow: clusters of the H0 filtration (single linkage) at a few thresholds and how "
            f"points move between them; ★ marks the best stage; clusters of ≤ {analysis.config.noise_size} "
            "points are noise (grey). Cluster colour: its most frequent class.",
        ),
        '<div class="grid2">',
        _figure_html(
            dendrogram_uri,
            f"Heatmap dendrogram of {len(result.dendrogram.index):,} points: pairwise distances in "
            f"{_e(result.dendrogram.ordering)} order; the strip shows each point's class.",
        ),
        _figure_html(examples_uri, "Images behind the clusters: a seeded random sample of members.")
        if examples_uri
        else "",
        "</div>",
        f'<p class="lead">PH dimension {_fmt(float(phdim.dimension))} from the slope '
        f"{_fmt(float(phdim.slope))} of log E<sub>α</sub> against log n over subsamples of "
        f"{_e(', '.join(str(int(s)) for s in phdim.sizes))} points (α = {_fmt(float(phdim.alpha))}; "
        f"cap phdim_max_points = {int(analysis.config.phdim_max_points):,}).{phdim_note}</p>",
        "</section>",
    ]
    yield Progress(1.0, "layer done")
    return "\n".join(p for p in parts if p)


def _figure_jobs(
    result: Any, colours: list[str], class_names: list[str] | None, seed: int
) -> list[tuple[str, float, str, Any, tuple]]:
    """(key, progress, message, function, arguments) of a layer's figures that need no
    images: small picklable arguments, so a worker process can draw them."""
    from . import figures

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


def _h0_points(persistence: Any, cloud: Any, config: Any) -> str:
    """Which points H0 was computed on, in words, with the cap that chose them."""
    n = int(persistence.n_points)
    before = cloud.meta.get("points_before_cap")
    if before is not None and int(before) > n:
        return (
            f"a random {n:,} of the {int(before):,} extracted points "
            f"(analysis cap max_points = {int(config.max_points):,}, seed {int(config.seed)})"
        )
    return f"all {n:,} points"


def _h1_points(persistence: Any) -> str:
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
    analysis: Any,
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
    from . import figures

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
    analysis: Any,
    images: Any,
    title: str,
    colours: list[str],
    class_names: list[str] | None,
    layers: list[str],
    n_layers: int,
    pool: Any,
    extra_sections: Sequence[str] = (),
) -> Generator[Progress, None, str]:
    from . import figures

    seed = int(analysis.config.seed)
    results = list(analysis.layer_results)
    # the pool draws the later layers' figures while this process draws the rest
    drawn_elsewhere = {
        number: pool.submit(_draw_figures, _figure_jobs(result, colours, class_names, seed))
        for number, result in enumerate(results, start=1)
        if pool is not None and number > n_layers // 2
    }
    sections: dict[int, str] = {}

    def section(number: int, result: Any, uris: dict[str, str] | None, start: float, stop: float):
        steps = _layer_section(number, result, analysis, colours, class_names, images, uris)
        try:
            while True:
                step = next(steps)
                yield Progress(
                    start + (stop - start) * step.fraction, f"report: {result.name}: {step.message}"
                )
        except StopIteration as done:
            sections[number] = done.value

    for number, result in enumerate(results, start=1):
        if number not in drawn_elsewhere:
            yield from section(
                number, result, None, (number - 1) / (n_layers + 1), number / (n_layers + 1)
            )

    robustness_html = ""
    if getattr(analysis, "variants", None):
        from .robustness import robustness_section

        robustness_html = yield from scaled(
            robustness_section(analysis), n_layers / (n_layers + 1), n_layers / (n_layers + 1)
        )
    yield Progress(n_layers / (n_layers + 1), "report: comparisons across layers")
    quality: dict[str, Sequence[float]] = {
        name: [float(getattr(r.quality, name)) for r in analysis.layer_results]
        for name in ("purity", "homogeneity", "ari", "nmi", "silhouette")
    }
    curves_uri = figures.layer_curves_figure(
        layers,
        [float(r.phdim.dimension) for r in analysis.layer_results],
        [
            float(r.class_persistence.mean) if r.class_persistence is not None else math.nan
            for r in analysis.layer_results
        ],
        quality,
    )
    dim = analysis.config.distance_dim
    titles = {
        "sliced_wasserstein": f"sliced Wasserstein (H{dim})",
        "bottleneck": f"bottleneck (H{dim})",
        "wasserstein": f"Wasserstein p={analysis.config.wasserstein_p:g} (H{dim})",
        "cka": "linear CKA (similarity)",
    }
    order = (
        [analysis.config.layer_distance]
        + [
            k
            for k in ("sliced_wasserstein", "bottleneck", "wasserstein")
            if k != analysis.config.layer_distance
        ]
        + ["cka"]
    )
    matrices = {k: analysis.layer_distances[k] for k in order if k in analysis.layer_distances}
    matrices_uri = figures.matrices_figure(layers, matrices, titles)
    for number, future in drawn_elsewhere.items():  # the progress does not go back
        at = n_layers / (n_layers + 1)
        yield from section(number, results[number - 1], future.result(), at, at)
    notes = analysis.provenance.get("notes", {})

    header = [
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
    nav = " ".join(f'<a href="#layer-{i}">{_e(name)}</a>' for i, name in enumerate(layers, start=1))
    provenance = analysis.provenance
    subtitle_bits = [
        f"{len(layers)} layer{'s' if len(layers) != 1 else ''}",
        f"{provenance.get('n_images', '?')} images",
    ]
    if provenance.get("sample"):
        subtitle_bits.insert(0, f"sample {provenance['sample']}")
    predicted = predicted_labels_note(provenance)  # purity then means agreement with the model
    if predicted:
        subtitle_bits.append(predicted)
    else:
        subtitle_bits.extend(_accuracy_bits(analysis))
    if provenance.get("input_scale"):
        subtitle_bits.append(f"model input: {provenance['input_scale']}")
    if provenance.get("created"):
        subtitle_bits.append(f"made {provenance['created']}")
    page = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="{GENERATOR}">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1><p>{_e(' · '.join(subtitle_bits))}</p>",
        f"<p>{_e(provenance.get('description', ''))}</p></header>"
        if provenance.get("description")
        else "</header>",
        '<nav><a href="#summary">Summary</a><a href="#across">Across layers</a>'
        + ('<a href="#robustness">Robustness</a>' if robustness_html else "")
        + (
            '<a href="#maps">Topology maps</a>'
            if any('id="maps"' in x for x in extra_sections)
            else ""
        )
        + f"{nav}</nav>",
        "<main>",
        '<section id="summary"><h2>Summary</h2>',
        '<p class="lead">One row per layer, in forward order. Quality numbers compare the true '
        "classes with the clusters of the best H0 stage.</p>",
        _table(header, _summary_rows(analysis)),
        _legend_html(class_names, colours),
        "<h3>Provenance</h3>",
        _provenance_html(analysis),
        "</section>",
        '<section id="across"><h2>Across layers</h2>',
        _figure_html(
            curves_uri,
            "PH dimension (with the per-class total H0 persistence) and the "
            "cluster-quality numbers of the best stage, layer by layer.",
        ),
        _figure_html(
            matrices_uri,
            "Distances between the layers' persistence diagrams (finite bars), and linear CKA "
            f"between their representations. {_e(notes.get('cka', ''))}",
        ),
        "</section>",
        robustness_html,
        *extra_sections,
        *(sections[number] for number in sorted(sections)),
        "</main></body></html>",
    ]
    yield Progress(1.0, "report rendered")
    return "\n".join(p for p in page if p)


def render_report(
    analysis: Any,
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
    from ..errors import AnalysisFileError
    from ..topology.store import is_analysis_dir

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
    analysis: Any,
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
    import time

    from .._signals import pause_point, signals_deferred

    out = Path(out_dir).expanduser()
    analysis_path = out / ANALYSIS_DIR
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
    if seconds is not None:
        seconds["report page"] = (rendered - started, rendered_cpu - started_cpu)
        seconds["saving"] = (time.perf_counter() - rendered, time.process_time() - rendered_cpu)
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
