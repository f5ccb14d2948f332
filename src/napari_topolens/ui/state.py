"""The one owner of what every shown analysis shows, with events for the widgets and links.

One :class:`ShownAnalyses` per image viewer (:func:`state_for`) holds, per shown
analysis key, a :class:`ShownAnalysis`: the analysis, the image layer it was
computed on, the network layer shown, the Mapper colouring, edge threshold and
faded class, the layouts, the layers that draw it, the current selection and the
last pixel hits. The explorer, the canvas and the links read it here and listen
to its psygnal events; nothing else keeps a copy (layers' ``metadata`` only name
their view and key, so the writer and ``find_layers`` can recognise them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psygnal import Signal

from ..errors import TopoLensError
from ..layout.mapper import mapper_layout
from ..topology.results import Analysis, LayerAnalysis
from .view_data import ColorBy, Panel
from .viewer_key import PerViewer, same_viewer, viewer_anchor, viewer_ref, window_closed

__all__ = [
    "PerViewer",
    "Selection",
    "ShownAnalyses",
    "ShownAnalysis",
    "same_viewer",
    "state_for",
    "viewer_anchor",
    "viewer_ref",
    "viewer_showing",
    "window_closed",
]


@dataclass
class Selection:
    """What the user selected in the views: cloud rows and how to say it."""

    members: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    source: str | None = None
    title: str = ""
    tiles: list[int] = field(default_factory=list)


@dataclass
class ShownAnalysis:
    """Everything about one analysis shown in a viewer (see the module docstring)."""

    key: str
    analysis: Analysis
    image_layer: Any = None
    slot: int = 0
    network_layer: str = ""
    color_by: ColorBy = "dominant_class"
    edge_threshold: float = 0.0
    faded_class: str | None = None
    layouts: dict[str, np.ndarray] = field(default_factory=dict)
    layers: dict[str, Any] = field(default_factory=dict)
    selection: Selection = field(default_factory=Selection)
    hits: dict[str, np.ndarray] = field(default_factory=dict)
    #: The key of the base analysis this one is a variant of (shown beside it), or None.
    variant_of: str | None = None
    #: What a selection in the analysis linked to this one (its base or compared variant)
    #: rings here, keyed like ``hits`` (``ui.links.LinkController.ring_images``).
    linked: dict[str, np.ndarray] = field(default_factory=dict)
    #: Whether the reader's wish to show this analysis's variants (its images layer's
    #: saved settings) was answered (``ui.variants``): once per shown analysis.
    reader_variants_answered: bool = False

    @property
    def result(self) -> LayerAnalysis:
        """The :class:`LayerAnalysis` of the shown network layer."""
        return self.analysis[self.network_layer]

    def layout(self, layer: str | None = None) -> np.ndarray:
        """Mapper node positions of a network layer (the saved layout; computed if missing)."""
        name = self.network_layer if layer is None else layer
        found = self.layouts.get(name)
        if found is None:
            saved = getattr(self.analysis[name], "mapper_layout", None)
            graph = self.analysis[name].mapper
            found = (
                np.asarray(saved, dtype=np.float64).reshape(-1, 2)
                if saved is not None
                and np.shape(saved) == (graph.n_nodes, 2)
                and bool(np.all(np.isfinite(saved)))  # a saved file is untrusted
                else mapper_layout(graph, seed=int(self.analysis.config.seed))
            )
            self.layouts[name] = found
        return found


class ShownAnalyses:
    """The shown analyses of one viewer, keyed by a short unique string, with events.

    Signals
    -------
    added(key), removed(key)
        An analysis began or stopped being shown.
    changed(key, what)
        ``what`` is ``"network_layer"``, ``"color_by"``, ``"edge_threshold"`` or
        ``"faded_class"``: that setting of ``key`` changed (its layers already show it).
    selection_changed(key)
        The selection of ``key`` changed (``entry.selection``).
    panel_changed(panel)
        The canvas shows another view.
    shown(key)
        A show of ``key`` finished: every layer is in and linked.

    Attributes
    ----------
    panel : str
        The view the canvas shows (``view_data.PANELS``).
    selected_key : str or None
        The analysis whose selection was made or cleared last.
    hits_key : str or None
        The analysis whose pixel hits were set or cleared last.
    """

    added = Signal(str)
    shown = Signal(str)
    removed = Signal(str)
    changed = Signal(str, str)
    selection_changed = Signal(str)
    panel_changed = Signal(str)

    def __init__(self) -> None:
        self._entries: dict[str, ShownAnalysis] = {}
        self.panel: Panel = "mapper"
        self.selected_key: str | None = None
        self.hits_key: str | None = None

    # ---- lookup -------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[ShownAnalysis]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> ShownAnalysis:
        try:
            return self._entries[key]
        except KeyError:
            raise TopoLensError(
                f"no analysis {key!r} is shown in this viewer; shown: {', '.join(self._entries) or 'none'}"
            ) from None

    def key_of(self, analysis: Analysis) -> str | None:
        for key, entry in self._entries.items():
            if entry.analysis is analysis:
                return key
        return None

    def new_key(
        self, analysis: Analysis, base: str | None = None, taken: Iterable[str] = ()
    ) -> str:
        """A short key not used yet, from ``base`` or the analysis's provenance."""
        if base is None:
            provenance = getattr(analysis, "provenance", None) or {}
            base = str(
                provenance.get("sample")
                or provenance.get("name")
                or provenance.get("image_layer")
                or "analysis"
            )
        used = set(self._entries) | set(taken)
        key, n = base, 1
        while key in used:
            n += 1
            key = f"{base} {n}"
        return key

    def entry_of_layer(self, layer: Any) -> tuple[ShownAnalysis, str] | None:
        """The analysis a layer draws and its view name, or None."""
        for entry in self._entries.values():
            for view, known in entry.layers.items():
                if known is layer:
                    return entry, view
        return None

    def free_slot(self) -> int:
        """The canvas slot the next analysis added gets: the lowest one not in use."""
        used = {e.slot for e in self._entries.values()}
        return next(i for i in range(len(used) + 1) if i not in used)

    # ---- changes ------------------------------------------------------------------------
    def add(self, entry: ShownAnalysis) -> ShownAnalysis:
        if entry.key in self._entries:
            raise TopoLensError(f"analysis {entry.key!r} is shown already")
        entry.slot = self.free_slot()
        self._entries[entry.key] = entry
        self.added.emit(entry.key)
        return entry

    def remove(self, key: str) -> None:
        if self._entries.pop(key, None) is not None:
            self.removed.emit(key)

    def set(self, key: str, what: str, value: Any) -> None:
        """Record a changed setting of ``key`` and tell the listeners."""
        entry = self.get(key)
        if getattr(entry, what) == value:
            return
        setattr(entry, what, value)
        self.changed.emit(key, what)

    def set_selection(self, key: str, selection: Selection) -> None:
        self.get(key).selection = selection
        self.selected_key = key
        self.selection_changed.emit(key)

    def set_hits(self, key: str, hits: dict[str, np.ndarray]) -> None:
        """Record what a pixel click on ``key``'s images ringed (``{}``: the rings cleared)."""
        self.get(key).hits = hits
        self.hits_key = key

    def variant_beside(self, base_key: str) -> ShownAnalysis | None:
        """The variant shown beside the base ``base_key`` (``ui.variants``), or None."""
        return next((e for e in self._entries.values() if e.variant_of == base_key), None)

    def set_panel(self, panel: Panel) -> None:
        if panel != self.panel:
            self.panel = panel
            self.panel_changed.emit(panel)


_STATES = PerViewer()


def state_for(viewer: Any) -> ShownAnalyses:
    """The shown-analysis state of ``viewer``, made on first use."""
    return _STATES.setdefault(viewer, lambda _viewer: ShownAnalyses())


def viewer_showing(analysis: Analysis) -> tuple[Any, ShownAnalyses] | None:
    """The viewer that shows ``analysis`` and its state, or None.

    napari's writer is handed layer data, not a viewer, and the viewer that saves
    need not be napari's current one: the analysis itself says where it is shown.
    """
    for viewer, state in _STATES.items():
        if state.key_of(analysis) is not None:
            return viewer, state
    return None
