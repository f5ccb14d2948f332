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

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psygnal import Signal

from ..errors import TopoLensError
from .view_data import ColorBy, Panel

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
    analysis: Any
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

    @property
    def result(self) -> Any:
        """The :class:`LayerAnalysis` of the shown network layer."""
        return self.analysis[self.network_layer]

    def layout(self, layer: str | None = None) -> np.ndarray:
        """Mapper node positions of a network layer (the saved layout; computed if missing)."""
        from ..layout.mapper import mapper_layout

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

    # ---- lookup -------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self):
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

    def key_of(self, analysis: Any) -> str | None:
        for key, entry in self._entries.items():
            if entry.analysis is analysis:
                return key
        return None

    def new_key(self, analysis: Any, base: str | None = None, taken: set[str] = frozenset()) -> str:  # type: ignore[assignment]
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

    # ---- changes ------------------------------------------------------------------------
    def add(self, entry: ShownAnalysis) -> ShownAnalysis:
        if entry.key in self._entries:
            raise TopoLensError(f"analysis {entry.key!r} is shown already")
        used = {e.slot for e in self._entries.values()}
        entry.slot = next(i for i in range(len(used) + 1) if i not in used)
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
        self.selection_changed.emit(key)

    def set_panel(self, panel: Panel) -> None:
        if panel != self.panel:
            self.panel = panel
            self.panel_changed.emit(panel)


class _ViewerAnchor:
    """Lives exactly as long as one viewer, and knows it (see :func:`same_viewer`).

    napari docks a plugin widget with a *proxy* of the viewer (its ``PublicOnlyProxy``),
    and every napari object read through it is another short-lived proxy: no identity
    test, ``WeakKeyDictionary`` or weak reference of ours sees the viewer through it. Two
    public facts do: ``ViewerModel.__hash__`` is the viewer's identity (``id``) and a
    proxy hashes as the object it wraps; and a plain callable connected to one of the
    viewer's events (through a proxy too) is held by the viewer's own emitter for as
    long as the viewer lives. The anchor is that callable: while it is alive its
    viewer is, so no other live viewer can have the same hash.
    """

    __slots__ = ("__weakref__", "_held")

    def __init__(self, viewer: Any, held_by_viewer: bool) -> None:
        # held by the viewer's emitter, the anchor may hold the viewer (a cycle the
        # collector frees); held by a finalizer, only weakly (else it would never die)
        self._held: Any = viewer if held_by_viewer else weakref.ref(viewer)

    @property
    def viewer(self) -> Any:
        """The viewer (or a proxy of it) that :func:`viewer_ref` hands back; None once gone."""
        return self._held() if isinstance(self._held, weakref.ref) else self._held

    def prefer(self, viewer: Any) -> None:
        """Hand back the viewer itself rather than a proxy of it, once it is seen."""
        held = self._held
        if not isinstance(held, weakref.ref) and _is_proxy(held) and not _is_proxy(viewer):
            self._held = viewer

    def __call__(self, event: Any = None) -> None:
        """Connected to the viewer's ``theme`` event only to be kept alive: does nothing."""


_ANCHORS: dict[int, weakref.ref] = {}


def _hash_of(viewer: Any) -> int:
    try:
        return hash(viewer)
    except TypeError:  # not hashable: only ever itself
        return id(viewer)


def _is_proxy(viewer: Any) -> bool:
    """A transparent proxy claims its target's class; ``type`` tells the truth."""
    return type(viewer) is not viewer.__class__


def viewer_anchor(viewer: Any) -> _ViewerAnchor:
    """The one anchor of ``viewer`` (the same for the viewer and every proxy of it)."""
    key = _hash_of(viewer)
    ref = _ANCHORS.get(key)
    anchor = ref() if ref is not None else None
    if anchor is not None:
        anchor.prefer(viewer)
        return anchor
    emitter = getattr(getattr(viewer, "events", None), "theme", None)
    if emitter is not None and callable(getattr(emitter, "connect", None)):
        anchor = _ViewerAnchor(viewer, held_by_viewer=True)
        emitter.connect(anchor)
    else:  # not a napari viewer (a script's stand-in): tied to the object itself
        anchor = _ViewerAnchor(viewer, held_by_viewer=False)
        weakref.finalize(viewer, anchor.__call__)

    def forget(dead: weakref.ref, key: int = key) -> None:
        if _ANCHORS.get(key) is dead:
            del _ANCHORS[key]

    _ANCHORS[key] = weakref.ref(anchor, forget)
    return anchor


def same_viewer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same viewer, each either the viewer or a napari proxy of it."""
    if a is None or b is None:
        return a is b
    return a is b or viewer_anchor(a) is viewer_anchor(b)


def viewer_ref(viewer: Any) -> Any:
    """A weak reference to ``viewer`` that a proxy of it cannot break.

    Calling it gives the viewer (itself once seen, else the proxy first seen), or None
    once the viewer is gone; a plain ``weakref.ref`` of a proxy dies with that proxy.
    """
    ref = weakref.ref(viewer_anchor(viewer))

    def get() -> Any:
        anchor = ref()
        return None if anchor is None else anchor.viewer

    return get


class PerViewer:
    """A registry of one object per viewer, the same through napari's viewer proxies.

    Keyed by the viewer's anchor (:func:`viewer_anchor`); napari viewers are evented
    models that compare equal by their fields, so they are never dictionary keys
    themselves. Entries go when their viewer is garbage-collected.
    """

    def __init__(self) -> None:
        self._items: weakref.WeakKeyDictionary[_ViewerAnchor, Any] = weakref.WeakKeyDictionary()

    def get(self, viewer: Any) -> Any:
        return self._items.get(viewer_anchor(viewer))

    def set(self, viewer: Any, value: Any) -> None:
        self._items[viewer_anchor(viewer)] = value

    def setdefault(self, viewer: Any, make: Any) -> Any:
        """The object of ``viewer``, made by ``make(viewer)`` and kept on first use."""
        found = self.get(viewer)
        if found is None:
            found = make(viewer)
            self.set(viewer, found)
        return found

    def pop(self, viewer: Any) -> Any:
        return self._items.pop(viewer_anchor(viewer), None)

    def values(self) -> list[Any]:
        return list(self._items.values())

    def items(self) -> list[tuple[Any, Any]]:
        found = [(anchor.viewer, value) for anchor, value in list(self._items.items())]
        return [(viewer, value) for viewer, value in found if viewer is not None]


_STATES = PerViewer()


def state_for(viewer: Any) -> ShownAnalyses:
    """The shown-analysis state of ``viewer``, made on first use."""
    return _STATES.setdefault(viewer, lambda _viewer: ShownAnalyses())


def viewer_showing(analysis: Any) -> tuple[Any, ShownAnalyses] | None:
    """The viewer that shows ``analysis`` and its state, or None.

    napari's writer is handed layer data, not a viewer, and the viewer that saves
    need not be napari's current one: the analysis itself says where it is shown.
    """
    for viewer, state in _STATES.items():
        if state.key_of(analysis) is not None:
            return viewer, state
    return None
