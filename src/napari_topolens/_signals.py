"""Ctrl-C and SIGTERM held back while files are swapped, and a pause point for tests.

A signal that arrives inside :func:`signals_deferred` is remembered and delivered (its
previous handler called, or the default action taken) when the block ends, so a
sequence of renames and its undo always finish: the previous report stays, or the new
one is complete, whatever moment the signal comes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeAlias

__all__ = ["PAUSE_ENV", "pause_point", "signals_deferred"]

#: Environment variable naming a :func:`pause_point` where the process stops until a
#: signal comes (for tests that signal a run at a known moment, without sleeps).
PAUSE_ENV = "NAPARI_TOPOLENS_PAUSE_AT"

_HELD = (signal.SIGINT, signal.SIGTERM)
#: What ``signal.signal`` returns: a handler, SIG_DFL/SIG_IGN, or None (set outside Python).
_Handler: TypeAlias = "Callable[[int, FrameType | None], Any] | int | signal.Handlers | None"
#: Signals held by :func:`signals_deferred` so far (what :func:`pause_point` waits for).
_held_count = [0]


def pause_point(name: str) -> None:
    """With ``NAPARI_TOPOLENS_PAUSE_AT=name``, say so on stderr and wait for a signal."""
    if os.environ.get(PAUSE_ENV) != name:
        return
    held = _held_count[0]
    sys.stderr.write(f"\npaused at {name} (pid {os.getpid()})\n")
    sys.stderr.flush()
    # Wait until a signal comes: a raising handler ends the wait with its exception, a held
    # one counts (polled, not signal.pause(): a signal sent before it would be missed).
    while _held_count[0] == held:
        time.sleep(0.01)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM during the block (main thread only), then deliver them.

    A delivered signal raises from the end of the block; when the block itself finished,
    the exception carries ``block_completed = True`` so a caller can say the work is done.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous: dict[int, _Handler] = {}

    def hold(signum: int, _frame: FrameType | None) -> None:
        pending.append(signum)
        _held_count[0] += 1

    for signum in _HELD:
        previous[signum] = signal.signal(signum, hold)
    completed = False
    try:
        yield
        completed = True
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        if pending:
            _deliver(pending[0], previous[pending[0]], completed)


def _deliver(signum: int, handler: _Handler, completed: bool) -> None:
    """Act on a held signal as its handler would have when it came."""
    if handler is signal.SIG_IGN:
        return
    if callable(handler):
        try:
            handler(signum, None)
        except BaseException as exc:
            exc.block_completed = completed  # type: ignore[attr-defined]
            raise
        return
    signal.raise_signal(signum)  # the default action (SIGTERM ends the process)
