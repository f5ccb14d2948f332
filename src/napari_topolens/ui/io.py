"""npe2 reader and writer for saved analyses (the folders of ``Analysis.save``).

The writer saves the analysis behind the selected TopoLens layers with
``Analysis.save`` and records, in a small ``napari_view.json`` beside the saved
files, what was on screen: the network layer, the view (panel), the Mapper
colouring, the edge threshold and the compared variant (from the viewer that shows
the analysis, whichever it is). The reader checks every value of that record and
restores it.
The reader loads the analysis with ``load_analysis`` -- nothing is recomputed --
and returns the same layers ``show_analysis`` makes; the viewer's link controller
wires them again as they are inserted (``ui.links``); an analysis with variants
shows them beside it too (``ui.variants``), the one compared when saved first.

Good citizenship: the manifest offers the reader for ``*.topolens`` folders only,
so napari never proposes it for a PNG; ``get_reader`` also returns None for
anything that is not a saved analysis. The writer's errors must reach the user:
napari and npe2 swallow a ``ValueError`` raised by a writer (npe2's writer lookup
catches it and napari then says no writer was found), and every ``TopoLensError``
is a ``ValueError``. So the writer raises :class:`AnalysisSaveError`, an
``OSError`` that napari lets through: from File > Save it reaches napari's error
handler, which shows the message as a notification; a script gets it from
``viewer.layers.save``. (Showing it here as well would show it twice.)
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from ..errors import AnalysisFileError, TopoLensError
from ..topology.results import Analysis
from ..topology.store import is_analysis_dir, load_analysis, open_plain_file
from . import explorer_widget  # noqa: F401  (a reopened analysis's views get the explorer bar)
from .canvas import TopologyCanvas, existing_canvas, make_canvas_in_turns
from .drift_view import has_variants
from .glyphs import GlyphWarmer, warm_glyphs, warmer_of
from .image_layers import gallery_title
from .layer_update import create_layer
from .mapper_nodes import analysis_predictions
from .panels import ALL_PANELS, NEEDS_PREDICTIONS, PANELS
from .show import ViewsAhead, prepare_views_ahead, show_read
from .state import PerViewer, state_for, viewer_ref, window_closed
from .views import (
    COLOR_BY,
    LayerDataTuple,
    find_layers,
    reader_layer_data,
    saved_view_settings,
    watch_viewer,
)
from .widget_parts import relay_warnings

__all__ = ["VIEW_FILE", "AnalysisSaveError", "get_reader", "read_analysis", "write_analysis"]

#: How the analysis was shown when saved; optional, absent in folders saved by scripts.
VIEW_FILE = "napari_view.json"
MAX_VIEW_FILE_BYTES = 64 * 1024


class AnalysisSaveError(OSError):
    """The analysis could not be saved; the message says why (not a ValueError, see above)."""


def _one_path(path: str | Sequence[str]) -> str | None:
    if isinstance(path, (list, tuple)):
        return str(path[0]) if len(path) == 1 else None
    return str(path)


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerDataTuple]] | None:
    """The reader for a saved-analysis folder; None for anything else (napari tries others)."""
    single = _one_path(path)
    if single is None or not is_analysis_dir(single):
        return None
    return read_analysis


def _view_settings(folder: Path, analysis: Analysis) -> dict[str, Any]:
    """What was on screen when the analysis was saved, each value checked; defaults otherwise.

    The record is untrusted like the rest of the folder (read as a plain file inside
    it, never through a link, size checked first): a value of the wrong type, a layer
    or variant the analysis does not hold, a view it cannot show or a colouring it
    lacks the data for falls back to the default, and the analysis still opens.
    """
    settings: dict[str, Any] = dict(_DEFAULT_VIEW)
    try:
        with open_plain_file(folder, VIEW_FILE) as (handle, size):
            if size > MAX_VIEW_FILE_BYTES:
                return settings
            saved = json.loads(handle.read(MAX_VIEW_FILE_BYTES).decode("utf-8"))
    except (AnalysisFileError, OSError, ValueError, RecursionError):
        return settings  # the view record is a convenience; the analysis itself is intact
    if not isinstance(saved, dict):
        return settings
    layer = saved.get("layer")
    if isinstance(layer, str) and layer in analysis.layers:
        settings["layer_name"] = layer
    names = [str(v.name) for v in getattr(analysis, "variants", None) or []]
    panel = saved.get("panel")
    if isinstance(panel, str) and (
        panel in PANELS or (panel in ALL_PANELS and has_variants(analysis))
    ):
        settings["panel"] = panel
    color_by = saved.get("color_by")
    if (
        isinstance(color_by, str)
        and color_by in COLOR_BY
        and (color_by not in NEEDS_PREDICTIONS or analysis_predictions(analysis) is not None)
    ):
        settings["color_by"] = color_by
    threshold = saved.get("edge_threshold")
    if (
        isinstance(threshold, (int, float))
        and not isinstance(threshold, bool)
        and math.isfinite(threshold)
        and 0.0 <= threshold <= 1.0  # a Jaccard overlap
    ):
        settings["edge_threshold"] = float(threshold)
    compare = saved.get("compare")
    if isinstance(compare, str) and compare in names:
        settings["compare"] = compare
    return settings


#: How a reopened analysis is shown when its view record is missing or says otherwise.
_DEFAULT_VIEW: dict[str, Any] = {
    "layer_name": None,
    "panel": None,
    "color_by": "dominant_class",
    "edge_threshold": 0.0,
}


def read_analysis(path: str | Sequence[str]) -> list[LayerDataTuple]:
    """Load a saved analysis as the layers of ``show_analysis`` (no recomputation).

    In a running napari (a current viewer, called on the Qt main thread, as napari
    calls readers) the saved arrays are read and checked in a worker thread: this
    returns napari's "no layers now" value ``[(None,)]`` at once, and the analysis
    is shown when loaded: its views in the canvas first, then its images layer, overlay
    and gallery (``show.show_read``); a file that cannot be read is reported then, as a
    napari error notification. Without a viewer (scripts) it loads here and returns
    the layer data.
    """
    single = _one_path(path)
    if single is None:
        raise AnalysisFileError("open one saved analysis folder at a time")
    folder = Path(single)
    viewer = _current_viewer()
    if viewer is not None and _on_main_thread():
        _read_in_worker(viewer, folder)
        return [(None,)]  # type: ignore[list-item]
    analysis = load_analysis(folder)
    base = folder.name.removesuffix(".topolens") or "analysis"
    key = base
    viewer = _current_viewer()
    if viewer is not None:
        key = state_for(viewer).new_key(analysis, base)
        watch_viewer(viewer)  # the views appear in the topology canvas once napari adds the images
    return _shown_as_saved(analysis, key, _view_settings(folder, analysis))


def _shown_as_saved(analysis: Analysis, key: str, settings: dict[str, Any]) -> list[LayerDataTuple]:
    """The reader's layer data of ``analysis``, to be shown as the view record says."""
    settings = dict(settings)
    panel = settings.pop("panel")
    data = reader_layer_data(analysis, key, **settings)
    data[0][1]["metadata"]["topolens"]["show"]["panel"] = panel  # the view shown when saved
    return data


def _on_main_thread() -> bool:
    from qtpy.QtCore import QCoreApplication, QThread

    app = QCoreApplication.instance()
    return app is not None and QThread.currentThread() is app.thread()


#: What the reader's worker hands the main thread: the analysis, its saved view
#: settings, its images layer (in no viewer yet) and its first views made ahead.
_Loaded = tuple[Analysis, dict[str, Any], list[Any], ViewsAhead | None]


def _load_for_show(
    folder: Path, likely_key: str, likely_slot: int, panel_now: str, first_shown: bool
) -> _Loaded:
    """The reader's worker: ``folder`` loaded, and what its show needs first made under
    the key, slot and panel it will most likely get (see :func:`_read_in_worker`)."""
    analysis = load_analysis(folder)
    settings = _view_settings(folder, analysis)
    layers = [create_layer(item) for item in _shown_as_saved(analysis, likely_key, settings)]
    saved_panel = settings["panel"]
    panel = saved_panel if first_shown and saved_panel in ALL_PANELS else panel_now
    try:  # the views the show draws first, made here too (the show checks they fit)
        ahead: ViewsAhead | None = prepare_views_ahead(
            analysis,
            settings["layer_name"],
            likely_key,
            likely_slot,
            panel,
            settings["color_by"],
            settings["edge_threshold"],
        )
    except Exception:  # the show makes them again and says what is wrong, if anything
        ahead = None
    return analysis, settings, layers, ahead


def _show_loaded(
    ref: Callable[[], Any], result: _Loaded, base: str, likely_key: str, empty_at_read: bool
) -> None:
    """The main thread, once the reader's worker is done: the analysis shown in the
    viewer ``ref()`` under a key of its own (see :func:`_read_in_worker`)."""
    from qtpy.QtCore import QTimer

    target = ref()
    if target is None or window_closed(target):
        return  # the viewer went (or its window closed) while the file was read
    analysis, settings, layers, ahead = result
    # (an analysis read just before may be in the viewer and not shown yet, or its
    # show not started yet)
    opened = [layer.metadata["topolens"]["key"] for layer in find_layers(target, view="images")]
    showing = _SHOWING.setdefault(target, lambda _v: [])
    showing[:] = [item for item in showing if _reserves(target, *item)]
    key = state_for(target).new_key(analysis, base, taken=[*opened, *(k for k, _ in showing)])
    if key != likely_key:  # taken meanwhile: the layer again, named by its own key
        layers = [create_layer(item) for item in _shown_as_saved(analysis, key, settings)]
    watch_viewer(target)  # (its layers removed later take it off the canvas)

    reserved: list[Any] = [key, None]  # the key, and its show once started
    showing.append(reserved)

    def show() -> None:
        if ref() is not target or window_closed(target):
            return
        (images,) = layers
        # its views first; the show adds the images layer once they are drawn (adding
        # it is a long stretch of napari's main-thread work, and so is drawing it)
        # the gallery's title is the first text an empty viewer draws: its glyphs
        # loaded once the views are drawn and the images are in (before, each of its
        # turns repainted the viewer inside napari's ``open`` and beside the views' first
        # paints; started with the images' add, its first text shared their turn)
        warm = (lambda: _warm_gallery_title(target, key)) if empty_at_read else None
        reserved[1] = show_read(target, images, ahead, views_shown=warm)
        if reserved[1] is None:  # its analysis shown meanwhile: the layer only
            showing.remove(reserved)
            if images not in target.layers:
                target.add_layer(images)

    def show_after_first_text(canvas: TopologyCanvas) -> None:
        # in a turn of its own: the canvas is a long stretch of napari's main-thread
        # work (made just now, or docked in the turn that calls this); and after its
        # first text (see _after_first_text)
        QTimer.singleShot(1, lambda: _after_first_text(canvas, lambda: after_open(show)))

    def canvas_then_show() -> None:
        if ref() is target:
            # (made by the reader already, unless it was closed meanwhile)
            make_canvas_in_turns(target, show_after_first_text, defer=after_open)

    after_open(canvas_then_show)


def _read_in_worker(viewer: Any, folder: Path) -> Any:
    """Load ``folder`` in a napari worker; show it in ``viewer`` when loaded.

    The worker also makes the images layer (napari's layer object, not in any viewer
    yet: a quarter of a second of work), under the key the analysis will most likely
    get; the main thread starts the show with it, which adds it once the canvas's views
    are drawn.

    The topology canvas is made first, once napari's ``open`` has returned, in two
    turns, and the worker reads only once the canvas's first text is drawn (or after
    :data:`READ_HOLD_S`). The worker and the main thread share one GIL: a canvas made
    while the file was read (its QtViewer, then its first text: 0.2-0.3 s of the main
    thread each) took twice as long, in the hand-offs of the worker's many short
    reads. Read first and the canvas after, its glyph warmer had no time to draw ahead
    of the show, whose first text then drew them in its turns. Now the read overlaps
    only the warmer's short turns. A file that cannot be read takes the canvas made for
    it away again (the viewer is left as it was).
    """
    from napari.qt.threading import create_worker
    from napari.utils.notifications import show_error

    ref = viewer_ref(viewer)
    base = folder.name.removesuffix(".topolens") or "analysis"
    # the key the analysis gets unless another one takes it while the file is read (from
    # the folder's name: the analysis, not read yet, is not asked)
    state = state_for(viewer)
    likely_key = state.new_key(cast(Analysis, None), base)
    # and the slot and panel it will most likely be shown in (see ``show.show_read``)
    likely_slot = state.free_slot()
    first_shown, panel_now = len(state) == 0, state.panel
    empty_at_read = not len(viewer.layers)
    may_read = threading.Event()  # set once the canvas's first text is drawn

    def load() -> _Loaded:
        may_read.wait(READ_HOLD_S)
        return _load_for_show(folder, likely_key, likely_slot, panel_now, first_shown)

    def loaded(result: _Loaded) -> None:
        _show_loaded(ref, result, base, likely_key, empty_at_read)

    made_here: list[TopologyCanvas] = []

    def canvas_first() -> None:
        target = ref()
        if (
            target is None
            or window_closed(target)
            or existing_canvas(target) is not None
            or worker not in _READS
        ):
            may_read.set()  # (a canvas made before is docked by the show)
            return

        def made(canvas: TopologyCanvas) -> None:
            made_here.append(canvas)
            _after_first_text(canvas, may_read.set)

        # (closed before it is docked: the read goes on at once, and its show stops)
        make_canvas_in_turns(target, made, defer=after_open, gone=may_read.set)

    def failed(exc: BaseException) -> None:
        target = ref()
        for made in made_here:  # an unreadable file leaves the viewer as it was
            if target is not None and existing_canvas(target) is made and len(made.state) == 0:
                _drop_canvas(target, made)
        if isinstance(exc, TopoLensError):
            show_error(f"TopoLens could not open {folder.name!r}: {exc}")
        else:  # not ours: napari's handler shows it with its traceback
            raise exc

    worker = create_worker(
        load, _start_thread=False, _connect={"returned": loaded, "errored": failed}
    )
    relay_warnings(worker)
    worker.start()
    _READS.add(worker)
    worker.finished.connect(lambda: _READS.discard(worker))
    # (not inside napari's ``open``, whose progress bar runs the event loop: after it)
    after_open(canvas_first)
    return worker


#: The longest the reader's worker waits for the canvas's first text before it reads
#: (s): the canvas comes first (see :func:`_read_in_worker`), but never holds the read
#: up for longer than this (a main thread that does not turn, a canvas closed meanwhile).
READ_HOLD_S = 5.0


def _drop_canvas(viewer: Any, canvas: TopologyCanvas) -> None:
    """Take a canvas made for a file that could not be read off the viewer again."""
    window = getattr(viewer, "window", None)
    if window is not None:
        with contextlib.suppress(LookupError, RuntimeError):  # gone already
            window.remove_dock_widget(canvas)
    canvas.close_canvas()


def inside_napari_open() -> bool:
    """Whether this runs inside napari's ``viewer.open`` (Python's frames, no napari API).

    ``open`` shows a progress bar whose updates run the event loop
    (``processEvents``) after the reader has returned, first painting the viewer: a
    timer or worker result of the reader's can come due in there, and what it does then
    lengthens ``open``'s own long turn (a canvas made there: a stall of 0.4-0.6 s).
    """
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "open" and str(frame.f_globals.get("__name__", "")).startswith(
            "napari.components"
        ):
            return True
        frame = frame.f_back
    return False


def after_open(fn: Callable[[], Any]) -> None:
    """Run ``fn`` now, or once napari's ``open`` has returned (see
    :func:`inside_napari_open`): tried again every :data:`OPEN_RETRY_MS`."""
    from qtpy.QtCore import QTimer

    if inside_napari_open():
        QTimer.singleShot(OPEN_RETRY_MS, lambda: after_open(fn))
    else:
        fn()


#: How often a step the reader deferred out of napari's ``open`` is tried again (ms).
OPEN_RETRY_MS = 10


def _after_first_text(canvas: TopologyCanvas, go: Callable[[], Any]) -> None:
    """Run ``go`` once the canvas's first text is drawn: its glyph warmer's first
    character, or none to wait for (the warmer done, or never started).

    A canvas's first text builds the text's shaders and loads the glyphs its layout
    measures with (0.2-0.35 s of the main thread in one turn). The warmer draws it soon
    after the canvas is made; the reader's worker reads the file after it (see
    :func:`_read_in_worker`), and the show's first views, drawn in the same turn as that
    text, made a stall of both. The warmer's second step comes a turn after that text's
    repaint: the show starts then.
    """
    from qtpy.QtCore import QTimer

    warmer = warmer_of(canvas.model)
    if warmer is None or warmer.done or len(warmer.drawn) > 1 or not canvas.is_open():
        go()
    else:
        QTimer.singleShot(FIRST_TEXT_POLL_MS, lambda: _after_first_text(canvas, go))


#: How often the reader's show looks whether the canvas's first text is drawn (ms).
FIRST_TEXT_POLL_MS = 10


def _warm_gallery_title(viewer: Any, key: str) -> GlyphWarmer:
    """The first text an empty viewer draws is the gallery's title: its characters
    loaded a few per turn once the views are shown and the images are in, before the
    show adds the gallery (it waits for the warmer returned), not all in the turn that
    adds the gallery's text (about 10 ms each)."""
    ref = viewer_ref(viewer)
    return warm_glyphs(
        viewer, lambda: _no_gallery_text_yet(ref()), gallery_title(key), while_empty=False
    )


def _no_gallery_text_yet(viewer: Any) -> bool:
    return viewer is not None and not find_layers(viewer, view="gallery_text")


#: The saved analyses being read (kept alive until their worker finishes).
_READS: set[Any] = set()
#: Per viewer, ``[key, show]`` of the analyses read whose show has not taken its key
#: yet (``show`` None until started): the next one read gets another key.
_SHOWING = PerViewer()


def _reserves(viewer: Any, key: str, show: Any) -> bool:
    """Whether a read analysis's show still holds ``key`` for it (not yet in the state)."""
    return key not in state_for(viewer) and (show is None or not show.done)


def _current_viewer() -> Any:
    try:
        import napari

        return napari.current_viewer()
    except Exception:  # no Qt application, or napari not started
        return None


def write_analysis(path: str, layer_data: list[LayerDataTuple]) -> list[str]:
    """Save the analysis behind the given TopoLens layers to the folder ``path``.

    Raises
    ------
    AnalysisSaveError
        With the reason: no or several analyses among the layers, a folder that
        is not a saved analysis, a disk error.
    """
    try:
        return _write_analysis(path, layer_data)
    except AnalysisSaveError:
        raise
    except (TopoLensError, OSError) as exc:
        message = f"TopoLens could not save {Path(os.fspath(path)).name!r}: {exc}"
        raise AnalysisSaveError(message) from exc


def _write_analysis(path: str, layer_data: list[LayerDataTuple]) -> list[str]:
    analyses: dict[int, Any] = {}
    settings: dict[str, Any] = {}
    for _, meta, _ in layer_data:
        info = (meta.get("metadata") or {}).get("topolens")
        if not isinstance(info, dict) or info.get("analysis") is None:
            continue
        analyses[id(info["analysis"])] = info["analysis"]
        if info.get("layer"):
            settings["layer"] = info["layer"]
        if info.get("view") == "mapper_nodes" and info.get("color_by"):
            settings["color_by"] = info["color_by"]
        if info.get("view") == "mapper_edges":
            settings["edge_threshold"] = float(info.get("edge_threshold", 0.0))
    if not analyses:
        raise TopoLensError(
            "none of the layers to save belongs to a TopoLens analysis; select the "
            "analysis's images, receptive-field overlay or gallery layer and save again"
        )
    if len(analyses) > 1:
        raise TopoLensError(
            f"the layers to save belong to {len(analyses)} different analyses; select the "
            "layers of one analysis and save it on its own"
        )
    (analysis,) = analyses.values()
    # what the viewer shows now wins over what the layers recorded when they were made
    settings = {**settings, **saved_view_settings(analysis)}
    target = Path(os.fspath(path)).expanduser()
    saved = analysis.save(target)
    saved = Path(saved) if saved is not None else target
    (saved / VIEW_FILE).write_text(json.dumps(settings, indent=1), encoding="utf-8")
    return [str(saved)]
