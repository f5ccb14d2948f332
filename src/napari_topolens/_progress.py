"""One way to report progress that serves both callbacks and napari workers.

Long computations are written as generators that yield :class:`Progress` and
``return`` their result. The napari widgets run them inside a generator
``thread_worker`` (``result = yield from gen``) so every yield is a chance to
cancel; headless callers use :func:`drive`, which turns the yields into
``progress(fraction, message)`` calls and checks ``cancel()`` between steps.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import NamedTuple, TypeVar

from .errors import Cancelled

__all__ = ["CancelCallback", "Progress", "ProgressCallback", "drive", "scaled"]

T = TypeVar("T")


class Progress(NamedTuple):
    """Fraction of the work done (0..1) and what is being done now."""

    fraction: float
    message: str


ProgressCallback = Callable[[float, str], None]
CancelCallback = Callable[[], bool]


def drive(
    steps: Generator[Progress, None, T],
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> T:
    """Run a progress generator to its end and return its result.

    Raises :class:`~napari_topolens.errors.Cancelled` as soon as ``cancel()``
    returns true; the generator is closed so it can release what it holds.
    """
    try:
        while True:
            if cancel is not None and cancel():
                steps.close()
                raise Cancelled("stopped by the user")
            step = next(steps)
            if progress is not None:
                progress(float(step.fraction), step.message)
    except StopIteration as done:
        return done.value


def scaled(
    steps: Generator[Progress, None, T], start: float, stop: float, prefix: str = ""
) -> Generator[Progress, None, T]:
    """Map a sub-computation's 0..1 progress into ``[start, stop]`` of a larger one."""
    span = stop - start
    try:
        while True:
            step = next(steps)
            yield Progress(start + span * step.fraction, prefix + step.message)
    except StopIteration as done:
        return done.value
