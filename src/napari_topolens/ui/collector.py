"""Python's full garbage collections held off while views are added, resumed when idle.

A full collection walks every object the process holds (napari, vispy, torch and the
modules a run imports, the analyses: about 0.9 million objects after a run and its
views) in one go: 0.25-0.45 s, holding the GIL, so the main thread stalls whichever
thread triggers it. Adding views allocates enough to trigger several during a run's
show and the views made ahead after it. While a run computes and a show runs
(:func:`pause`, held by ``ui.show.IncrementalShow`` and the analysis widget), the
oldest generation's threshold is out of reach: the young generations are still
collected as usual (each a few ms: what they hold is young), reference counting frees
all but cycles, and napari's own explicit ``gc.collect()`` (on a layer removed) still
runs. The threshold is put back once nothing has held it for :data:`RESUME_AFTER_MS`,
and at the latest :data:`LONGEST_PAUSE_S` after (a show left hanging must not keep
old cycles from being freed): the next full collection then frees what was left
meanwhile, one instead of several, when the views are in. Left alone when the
collector is off or someone else changed its thresholds meanwhile.

What a full collection walks is kept small too: once nothing holds the pause, what
came since it began is collected (one collection of the run's imports, its analysis
and views: a fraction of the whole) and every object alive then is frozen out of the
collector (``gc.freeze``), as are those alive when a pause begins. napari's own
``gc.collect()`` (at a batched layer update's end: :func:`collections_are_cheap`) then
walks the young objects only. Frozen objects are never freed by the collector, so a
layer about to be removed from a watched layer list (:func:`thaw_on_removal`: the image
viewer's and the canvas's) and a canvas closed unfreeze them (:func:`thaw`): napari's
collection on removal frees the removed layers' cycles as before.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable
from typing import Any

__all__ = [
    "LONGEST_PAUSE_S",
    "OUT_OF_REACH",
    "RESUME_AFTER_MS",
    "collections_are_cheap",
    "is_paused",
    "pause",
    "thaw",
    "thaw_on_removal",
]

#: How long nothing holds the pause before full collections may run again (ms): at once
#: (the next event-loop turn), a turn of its own.
RESUME_AFTER_MS = 0
#: The longest full collections are held off, whatever holds them (seconds).
LONGEST_PAUSE_S = 120.0

_holders: set[int] = set()
_next_id = [0]
#: When this module put the oldest threshold out of reach (``time.monotonic``), or None.
_paused_since: list[float | None] = [None]
_timer: list[Any] = []
#: The thresholds found when the pause began.
_saved: list[int] = [700, 10, 10]
#: Whether this module froze the live objects and nothing thawed them since. Kept here:
#: ``gc.get_freeze_count()`` walks every frozen object (CPython 3.11: a linked list of
#: about a million objects spread over the heap, 80-450 ms of the main thread in a pick).
_frozen = [False]
#: The oldest generation's threshold while paused: more collections of the middle one
#: than a session makes.
OUT_OF_REACH = 1 << 30


def is_paused() -> bool:
    """Whether this module holds the full collections off now."""
    return _paused_since[0] is not None


def pause() -> Callable[[], None]:
    """Hold the automatic full collections off until the returned release is called
    and nothing held them for :data:`RESUME_AFTER_MS`; releasing twice is harmless."""
    _next_id[0] += 1
    token = _next_id[0]
    _holders.add(token)
    if _paused_since[0] is None and gc.isenabled():
        young, middle, oldest = gc.get_threshold()
        if 0 < oldest < OUT_OF_REACH:
            _saved[:] = [young, middle, oldest]
            gc.set_threshold(young, middle, OUT_OF_REACH)
            _paused_since[0] = time.monotonic()
            _freeze()  # what is alive now is not walked by the collections to come
            _check_later()

    def release() -> None:
        if token in _holders:
            _holders.discard(token)
            _check_later()

    return release


def _check_later(delay_ms: int | None = None) -> None:
    """Look again :data:`RESUME_AFTER_MS` (or ``delay_ms``) from now (a release restarts
    the wait)."""
    from qtpy.QtCore import QTimer

    if _paused_since[0] is None:
        return
    if not _timer:
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(_check)
        _timer.append(timer)
    _timer[0].start(RESUME_AFTER_MS if delay_ms is None else delay_ms)


def _check() -> None:
    since = _paused_since[0]
    if since is None:
        return
    if not _holders or time.monotonic() - since > LONGEST_PAUSE_S:
        _paused_since[0] = None
        young, middle, oldest = gc.get_threshold()
        if oldest == OUT_OF_REACH:  # (else set by someone else meanwhile: theirs)
            gc.set_threshold(young, middle, _saved[2])
        # what came since the pause began, once (the older objects are frozen); then
        # what is alive is frozen too
        gc.collect()
        _freeze()
    else:  # still held: a release looks again; else once the longest pause is over
        left_s = LONGEST_PAUSE_S - (time.monotonic() - since)
        _check_later(max(RESUME_AFTER_MS, int(1000 * left_s) + 1))


def _freeze() -> None:
    gc.freeze()
    _frozen[0] = True


def collections_are_cheap() -> bool:
    """Whether a full collection now walks only what came since this module's last freeze
    (not thawed since). Constant time: it does not count the frozen objects."""
    return _frozen[0]


def thaw(_event: Any = None) -> None:
    """Give the frozen objects back to the collector (the next collection frees their
    cycles: layers removed, a canvas closed). Constant time (``gc.unfreeze`` merges two
    lists; counting the frozen objects first would walk them all)."""
    gc.unfreeze()
    _frozen[0] = False


def thaw_on_removal(layers: Any) -> None:
    """:func:`thaw` when a layer is about to be removed from the napari layer list
    ``layers`` (napari then collects the removed layer's cycles); once per layer list."""
    _WATCHED_LISTS[:] = [ref for ref in _WATCHED_LISTS if ref() is not None]
    if any(ref() is layers for ref in _WATCHED_LISTS):
        return
    _WATCHED_LISTS.append(weakref.ref(layers))
    layers.events.removing.connect(thaw)


_WATCHED_LISTS: list[weakref.ReferenceType[Any]] = []
