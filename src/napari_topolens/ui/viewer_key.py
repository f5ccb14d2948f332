"""One viewer, whether napari hands us the viewer or its proxy (see :class:`_ViewerAnchor`).

:class:`PerViewer` keeps one object per viewer for the shown-analysis state, the
canvas, the links, the variants and the models handed over with ``add_model``;
:func:`same_viewer` and :func:`viewer_ref` compare and weakly hold viewers the same
way. Plain Python: it imports neither napari nor Qt (``add_model`` is headless-safe).
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["PerViewer", "same_viewer", "viewer_anchor", "viewer_ref", "window_closed"]


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
        """The viewer (or the proxy of it first seen) for :func:`viewer_ref`; None once gone."""
        return self._held() if isinstance(self._held, weakref.ref) else self._held

    def __call__(self, event: Any = None) -> None:
        """Connected to the viewer's ``theme`` event only to be kept alive: does nothing."""


#: Anchors of napari viewers by hash (a viewer's id; a proxy's is its viewer's) and of
#: other objects by id: two tables, so an object's hash can never meet a viewer's id.
_ANCHORS: dict[int, weakref.ref] = {}
_OTHER_ANCHORS: dict[int, weakref.ref] = {}


def viewer_anchor(viewer: Any) -> _ViewerAnchor:
    """The one anchor of ``viewer`` (the same for the viewer and every proxy of it)."""
    emitter = getattr(getattr(viewer, "events", None), "theme", None)
    napari_viewer = emitter is not None and callable(getattr(emitter, "connect", None))
    table, key = (_ANCHORS, hash(viewer)) if napari_viewer else (_OTHER_ANCHORS, id(viewer))
    ref = table.get(key)
    anchor = ref() if ref is not None else None
    if anchor is not None:
        return anchor
    if napari_viewer and emitter is not None:
        anchor = _ViewerAnchor(viewer, held_by_viewer=True)
        emitter.connect(anchor)
    else:  # not a napari viewer (a script's stand-in): tied to the object itself
        anchor = _ViewerAnchor(viewer, held_by_viewer=False)
        weakref.finalize(viewer, anchor.__call__)

    def forget(dead: weakref.ref, key: int = key) -> None:
        if table.get(key) is dead:
            del table[key]

    table[key] = weakref.ref(anchor, forget)
    return anchor


def same_viewer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same viewer, each either the viewer or a napari proxy of it."""
    if a is None or b is None:
        return a is b
    return a is b or viewer_anchor(a) is viewer_anchor(b)


def viewer_ref(viewer: Any) -> Any:
    """A weak reference to ``viewer`` that a proxy of it cannot break.

    Calling it gives the viewer (or the proxy of it first seen), or None once the
    viewer is gone; a plain ``weakref.ref`` of a proxy dies with that proxy.
    """
    ref = weakref.ref(viewer_anchor(viewer))

    def get() -> Any:
        anchor = ref()
        return None if anchor is None else anchor.viewer

    return get


def window_closed(viewer: Any) -> bool:
    """Whether ``viewer``'s window was closed (``viewer.close()``, its window's close
    button): the viewer object lives on until it is collected, but its window takes no
    dock and no layer is shown in it any more.

    napari has no public flag for it. Its window's public ``geometry()`` reads the Qt
    window, which napari drops on ``close()`` and Qt deletes after its close button: it
    raises then (``AttributeError`` in napari 0.9, ``RuntimeError`` once the Qt object is
    deleted but still referenced). Between the close button and that deletion (the next
    event-loop turn) the window still answers. A viewer without a window (a plain
    ``ViewerModel``) is never closed.
    """
    window = getattr(viewer, "window", None)
    if window is None or not hasattr(window, "geometry"):
        return False
    try:
        window.geometry()
    except (AttributeError, RuntimeError):
        return True
    return False


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
