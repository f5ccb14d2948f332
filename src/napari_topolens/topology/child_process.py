"""The topology computed in a spawned child process, its progress relayed here.

A napari run computes in a worker thread of the viewer's own process. The topology
is Python and many small numpy calls that hold the GIL most of the time, so each Qt
or OpenGL call of the viewer's main thread waits for the worker's next switch: while
a run computed, a repaint of 0.1-0.3 s of CPU froze the viewer for 0.5-1.2 s
(``benchmarks/README.md``, responsiveness). A child process has a GIL of its own; the
main thread then waits only for its own work. The result is the same analysis: the
child runs :func:`~napari_topolens.topology.analysis.iter_analyze` itself.

The child is spawned (never forked: a forked copy of a process with Qt, OpenGL and
torch threads is unsafe), imports the topology's libraries as soon as it starts (the
caller starts one ahead, while activations are extracted), and is kept for the next
analysis once it has answered. A cancelled or failed analysis ends its child. The
clouds go one message each (this process never holds a second copy of them all);
the analysis comes back in one message, without the images, which stay here.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
import traceback
import weakref
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from .._progress import Progress
from ..activations.pointcloud import PointCloud
from ..errors import TopoLensError
from .analysis import check_images, checked_clouds, iter_analyze, resolve_h0_device, warm_imports
from .results import Analysis

__all__ = ["NAME", "AnalysisProcess", "iter_analyze_in_child", "start_analysis_process"]

#: Seconds between two looks at the child's answers (each look is a chance to cancel).
POLL_S = 0.2
#: The children's process name.
NAME = "napari-topolens analysis"
#: Children kept started and idle for the next analysis (one is what a viewer needs).
MAX_IDLE = 1

_IDLE: list[AnalysisProcess] = []
_IDLE_LOCK = threading.Lock()


def _serve(connection: Any) -> None:
    """The child's loop: clouds in, then an analysis request; progress and the analysis out."""
    # a library that fails to import fails the analysis later, with its own message
    with contextlib.suppress(Exception):
        warm_imports()
    clouds: list[PointCloud] = []
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the parent has gone
            return
        kind = message[0]
        if kind == "cloud":
            clouds.append(message[1])
        elif kind == "analyse":
            _answer(connection, clouds, message[1], message[2])
            clouds = []
        else:  # "stop"
            return


def _answer(connection: Any, clouds: list[PointCloud], labels: Any, options: dict) -> None:
    try:
        steps = iter_analyze(clouds, labels, **options)
        while True:
            try:
                step = next(steps)
            except StopIteration as done:
                connection.send(("done", done.value))
                return
            connection.send(("progress", float(step.fraction), str(step.message)))
    except Exception as exc:
        connection.send(("error", _portable(exc), traceback.format_exc()))


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (the project's errors do), else a plain error naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _end(process: Any, connection: Any) -> None:
    """End a child (whatever it is doing) and close its pipe; safe to call twice."""
    connection.close()
    if process.is_alive():
        process.terminate()
        process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join(2.0)


class AnalysisProcess:
    """One spawned child that runs analyses, one at a time (see the module docstring)."""

    def __init__(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe(duplex=True)
        self._process: Any = context.Process(
            target=_serve, args=(child_end,), name=NAME, daemon=True
        )
        self._process.start()
        child_end.close()
        # a process nobody closed (a generator dropped unfinished) ends with this object
        self._finalizer = weakref.finalize(self, _end, self._process, self._connection)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def close(self) -> None:
        """End the child now."""
        self._finalizer()

    def iter_analyze(
        self,
        clouds: Mapping[str, PointCloud] | Sequence[PointCloud],
        labels: Any = None,
        *,
        images: Any = None,
        device: Any = None,
        **options: Any,
    ) -> Generator[Progress, None, Analysis]:
        """:func:`~napari_topolens.topology.analysis.iter_analyze` in the child (no ``scheduler``).

        The clouds, images and device are checked here first, so that bad input raises
        before anything is sent. The child is ended if this generator is closed before
        its answer (a cancel) or the analysis fails.
        """
        items = checked_clouds(clouds)
        image_stack = check_images(images, items)
        device_here = resolve_h0_device(device, None)  # checked where torch already is: here
        try:
            try:
                for cloud in items:
                    self._connection.send(("cloud", cloud))
                self._connection.send(("analyse", labels, {**options, "device": device_here}))
            except OSError as exc:  # a broken pipe: the child has gone
                self._process.join(1.0)
                raise self._ended() from exc
            analysis = yield from self._answers()
        except BaseException:
            self.close()
            raise
        analysis.images = image_stack
        return analysis

    def _ended(self) -> TopoLensError:
        code = self._process.exitcode
        why = (
            f"it was stopped by signal {-code} (out of memory, or ended from outside): analyse "
            "fewer points (max points) or fewer layers"
            if code is not None and code < 0
            else f"exit code {code}; its error is printed where napari was started"
        )
        return TopoLensError(f"the analysis process ended without an answer ({why})")

    def _answers(self) -> Generator[Progress, None, Analysis]:
        last = Progress(0.0, "computing in the analysis process")
        while True:
            try:
                ready = self._connection.poll(POLL_S)
                message = self._connection.recv() if ready else None
            except (EOFError, OSError):
                message = None
            if message is None:
                if not self._process.is_alive():
                    raise self._ended()
                yield last  # nothing new: still a chance to cancel
                continue
            if message[0] == "progress":
                last = Progress(message[1], message[2])
                yield last
            elif message[0] == "done":
                return message[1]
            else:
                error = message[1]
                error.add_note(f"in the analysis process:\n{message[2]}")
                raise error


def start_analysis_process() -> None:
    """Start a child ahead (its imports take a few seconds), unless one is idle already."""
    with _IDLE_LOCK:
        _IDLE[:] = [process for process in _IDLE if process.alive]
        if _IDLE:
            return
    started = AnalysisProcess()
    with _IDLE_LOCK:
        _IDLE.append(started)


def _take() -> AnalysisProcess:
    with _IDLE_LOCK:
        while _IDLE:
            process = _IDLE.pop()
            if process.alive:
                return process
    return AnalysisProcess()


def _give_back(process: AnalysisProcess) -> None:
    with _IDLE_LOCK:
        if process.alive and len(_IDLE) < MAX_IDLE:
            _IDLE.append(process)
            return
    process.close()


def iter_analyze_in_child(
    clouds: Mapping[str, PointCloud] | Sequence[PointCloud],
    labels: Any = None,
    **options: Any,
) -> Generator[Progress, None, Analysis]:
    """:func:`~napari_topolens.topology.analysis.iter_analyze` (same arguments, no
    ``scheduler``) computed in a child process: an idle one, or one started now."""
    try:
        process = _take()
    except OSError:  # no process can be started here (a sandbox's limits): the same work here
        return (yield from iter_analyze(clouds, labels, **options))
    analysis = yield from process.iter_analyze(clouds, labels, **options)
    _give_back(process)
    return analysis
