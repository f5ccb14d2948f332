"""Python's automatic garbage collection paused while views are added, resumed when idle.

A full collection walks every object the process holds (napari, vispy, torch and the
modules a run imports, the analyses: about 0.9 million objects after a run and its
views) in one go: 0.25-0.45 s, holding the GIL, so the main thread stalls whichever
thread triggers it. Adding views allocates enough to trigger several during a run's
show and the views made ahead after it. While a show runs (:func:`pause`, held by
``ui.show.IncrementalShow``), the automatic collector is off; reference counting still
frees everything not in a cycle, and napari's own explicit ``gc.collect()`` (on a layer
removed) still runs. It is on again once nothing has held it for
:data:`RESUME_AFTER_MS`, and at the latest :data:`LONGEST_PAUSE_S` after it went off
(a show left hanging must not keep cycles from being freed): the cycles left meanwhile
are freed by the next collection then, one instead of several, when the views are in.
The collector is left alone when something else turned it off.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LONGEST_PAUSE_S", "RESUME_AFTER_MS", "is_paused", "pause"]

#: How long nothing holds the pause before the collector is on again (ms): the views of
#: the panels not picked yet are made one after another, 200 ms apart (``ui.show``).
RESUME_AFTER_MS = 1000
#: The longest the collector stays off, whatever holds it (seconds).
LONGEST_PAUSE_S = 120.0

_holders: set[int] = set()
_next_id = [0]
#: When this module turned the collector off (``time.monotonic``), or None.
_paused_since: list[float | None] = [None]
_timer: list[Any] = []


def is_paused() -> bool:
    """Whether this module has the automatic collector off now."""
    return _paused_since[0] is not None


def pause() -> Callable[[], None]:
    """Turn the automatic collector off until the returned release is called and
    nothing held it for :data:`RESUME_AFTER_MS`; releasing twice is harmless."""
    _next_id[0] += 1
    token = _next_id[0]
    _holders.add(token)
    if _paused_since[0] is None and gc.isenabled():
        gc.disable()
        _paused_since[0] = time.monotonic()
        _check_later()

    def release() -> None:
        if token in _holders:
            _holders.discard(token)
            _check_later()

    return release


def _check_later() -> None:
    """Look again :data:`RESUME_AFTER_MS` from now (a release restarts the wait)."""
    from qtpy.QtCore import QTimer

    if _paused_since[0] is None:
        return
    if not _timer:
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(_check)
        _timer.append(timer)
    _timer[0].start(RESUME_AFTER_MS)


def _check() -> None:
    since = _paused_since[0]
    if since is None:
        return
    if not _holders or time.monotonic() - since > LONGEST_PAUSE_S:
        _paused_since[0] = None
        gc.enable()
    else:  # still held: again later (at the latest after the longest pause)
        _check_later()
