"""npe2 reader and writer for saved analyses (the folders of ``Analysis.save``).

The writer saves the analysis behind the selected TopoLens layers with
``Analysis.save`` and records, in a small ``napari_view.json`` beside the saved
files, which network layer was shown and how (Mapper colouring, edge threshold).
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

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import AnalysisFileError, TopoLensError
from ..topology.store import is_analysis_dir, load_analysis
from . import explorer_widget  # noqa: F401  (a reopened analysis's views get the explorer bar)
from .views import COLOR_BY, LayerDataTuple, reader_layer_data, saved_view_settings

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


def _view_settings(folder: Path, analysis: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "layer_name": None,
        "color_by": "dominant_class",
        "edge_threshold": 0.0,
    }
    record = folder / VIEW_FILE
    # untrusted like the rest of the folder: never through a link, never a large file
    if record.is_symlink() or not record.is_file() or record.stat().st_size > MAX_VIEW_FILE_BYTES:
        return settings
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return settings  # the view record is a convenience; the analysis itself is intact
    if not isinstance(saved, dict):
        return settings
    if saved.get("layer") in analysis:
        settings["layer_name"] = saved["layer"]
    if saved.get("color_by") in COLOR_BY:
        settings["color_by"] = saved["color_by"]
    if isinstance(saved.get("edge_threshold"), (int, float)):
        settings["edge_threshold"] = float(saved["edge_threshold"])
    names = [str(v.name) for v in getattr(analysis, "variants", None) or []]
    if isinstance(saved.get("compare"), str) and saved["compare"] in names:
        settings["compare"] = saved["compare"]
    return settings


def read_analysis(path: str | Sequence[str]) -> list[LayerDataTuple]:
    """Load a saved analysis as the layers of ``show_analysis`` (no recomputation)."""
    single = _one_path(path)
    if single is None:
        raise AnalysisFileError("open one saved analysis folder at a time")
    folder = Path(single)
    analysis = load_analysis(folder)
    base = folder.name.removesuffix(".topolens") or "analysis"
    key = base
    viewer = _current_viewer()
    if viewer is not None:
        from .state import state_for
        from .views import watch_viewer

        key = state_for(viewer).new_key(analysis, base)
        watch_viewer(viewer)  # the views appear in the topology canvas once napari adds the images
    return reader_layer_data(analysis, key, **_view_settings(folder, analysis))


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
    settings = {**saved_view_settings(analysis), **settings}
    target = Path(os.fspath(path)).expanduser()
    saved = analysis.save(target)
    saved = Path(saved) if saved is not None else target
    (saved / VIEW_FILE).write_text(json.dumps(settings, indent=1), encoding="utf-8")
    return [str(saved)]
