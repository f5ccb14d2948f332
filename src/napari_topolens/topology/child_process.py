"""The topology computed in a child process, its progress relayed here.

A napari run computes in a worker thread of the viewer's own process. The topology
is Python and many small numpy calls that hold the GIL most of the time, so each Qt
or OpenGL call of the viewer's main thread waits for the worker's next switch: while
a run computed, a repaint of 0.1-0.3 s of CPU froze the viewer for 0.5-1.2 s
(``benchmarks/README.md``, responsiveness). A child process has a GIL of its own; the
main thread then waits only for its own work. The result is the same analysis: the
child runs :func:`~napari_topolens.topology.analysis.iter_analyze` itself.

The child is a fresh interpreter (``python -c``, this interpreter and ``sys.path``),
never a fork (a forked copy of a process with Qt, OpenGL and torch threads is
unsafe), and never ``multiprocessing``'s spawn, which runs the user's main script
again in the child (a launcher script without a ``__main__`` guard would open a
second viewer there). Messages are pickles over its stdin and stdout (its own prints
go to stderr; its warnings come back as messages and are warned again here). It
imports the topology's libraries as soon as it starts (the caller starts one ahead,
while activations are extracted) and is kept for the next analysis once it has
answered; a cancelled or failed analysis ends it. The clouds go one
message each; the analysis comes back without the images and without the analysed
clouds, which are made again here from the clouds this process still holds (the same
draw, the same seed), so no second copy of them is sent or kept.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
import warnings
import weakref
from collections.abc import Generator, Mapping, Sequence
from typing import IO, Any

from .._progress import Progress
from ..activations.pointcloud import PointCloud
from ..errors import TopoLensError
from .analysis import (
    analysed_cloud,
    check_images,
    checked_clouds,
    iter_analyze,
    resolve_h0_device,
    warm_imports,
)
from .results import Analysis

__all__ = [
    "AnalysisProcess",
    "AnalysisProcessError",
    "iter_analyze_in_child",
    "live_children",
    "start_analysis_process",
]

#: Seconds between two looks at the child's answers (each look is a chance to cancel).
POLL_S = 0.2
#: Children kept started and idle for the next analysis (one is what a viewer needs).
MAX_IDLE = 1
#: How much lower the child's priority is than this process's (POSIX ``nice``): the child
#: starts while activations are extracted and then computes beside the viewer; where
#: they want the same core, the viewer's repaints go first. On an idle core it changes
#: nothing.
CHILD_NICENESS = 5
#: What the child runs.
CHILD_CODE = "from napari_topolens.topology.child_process import serve; serve()"

_IDLE: list[AnalysisProcess] = []
_IDLE_LOCK = threading.Lock()
_STARTED: weakref.WeakSet[AnalysisProcess] = weakref.WeakSet()


class AnalysisProcessError(Exception):
    """An error of the child that cannot travel as itself (it does not pickle)."""


# ---- the child ------------------------------------------------------------------------
def serve() -> None:
    """The child's loop: clouds in, then an analysis request; progress and the analysis out."""
    if hasattr(os, "nice"):  # the viewer's threads first, where both want a core
        with contextlib.suppress(OSError):
            os.nice(CHILD_NICENESS)
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    try:
        errors = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no stderr (a windowed interpreter)
        errors = os.open(os.devnull, os.O_WRONLY)
    os.dup2(errors, sys.stdout.fileno())  # stray prints: not into the answers
    # a library that fails to import fails the analysis later, with its own message
    with contextlib.suppress(Exception):
        warm_imports()
    clouds: list[PointCloud] = []
    while True:
        try:
            message = pickle.load(requests)
        except EOFError:  # the parent has gone
            return
        if message[0] == "cloud":
            clouds.append(message[1])
        elif message[0] == "analyse":
            _answer(answers, clouds, message[1], message[2])
            clouds = []


def _send(stream: IO[bytes], message: tuple) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def _answer(answers: IO[bytes], clouds: list[PointCloud], labels: Any, options: dict) -> None:
    # the analysis's warnings go to the parent, which warns them again where the analysis
    # was asked for (a napari worker shows them as notifications): here they would reach
    # only the stderr of the process that started napari
    with warnings.catch_warnings(record=True) as caught:
        # once per place per analysis (a new filter forgets where warnings were shown):
        # a warning raised in a loop is not kept a million times until its step ends
        warnings.simplefilter("default")
        relayed: set[tuple[str, str, str]] = set()

        def relay_warnings() -> None:
            for caught_warning in caught:
                category = caught_warning.category
                key = (category.__module__, category.__qualname__, str(caught_warning.message))
                if key not in relayed:  # once per analysis
                    relayed.add(key)
                    _send(answers, ("warning", key[:2], key[2]))
            caught.clear()

        try:
            steps = iter_analyze(clouds, labels, **options)
            while True:
                try:
                    step = next(steps)
                except StopIteration as done:
                    relay_warnings()
                    analysis: Analysis = done.value
                    for layer in analysis.layer_results:  # made again there (module docstring)
                        layer.cloud = None  # type: ignore[assignment]
                    _send(answers, ("done", analysis))
                    return
                relay_warnings()
                _send(answers, ("progress", float(step.fraction), str(step.message)))
        except Exception as exc:
            relay_warnings()
            _send(answers, ("error", _portable(exc), traceback.format_exc()))


def _warning_here(module: str, qualname: str, message: str) -> tuple[type[Warning], str]:
    """The category and message to warn here for a warning of the child's: its own
    category where this process has it already (its module imported), else a
    ``UserWarning`` naming it. Names only travel: nothing is imported or unpickled."""
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Warning):
        return found, message
    return UserWarning, f"{qualname}: {message}"


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (the project's errors do), else one naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return AnalysisProcessError(f"{type(exc).__name__}: {exc}")


# ---- this side ------------------------------------------------------------------------
def _read_answers(stream: IO[bytes], answers: queue.Queue) -> None:
    """The reader thread: the child's answers into ``answers``; None once it has gone."""
    try:
        while True:
            answers.put(pickle.load(stream))
    except Exception:  # EOF, a closed pipe, a cut message: the child has gone
        answers.put(None)


def _end(process: subprocess.Popen) -> None:
    """End a child, whatever it is doing; safe to call twice.

    Ended before its pipes are closed: closing the answers' pipe waits for the reader
    thread's read, which a computing child would answer only at its next step.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(2.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(2.0)
    for stream in (process.stdin, process.stdout):
        with contextlib.suppress(OSError, ValueError):
            if stream is not None:
                stream.close()


class AnalysisProcess:
    """One child process that runs analyses, one at a time (see the module docstring)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
        self._process = subprocess.Popen(
            [sys.executable, "-c", CHILD_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._answers: queue.Queue = queue.Queue()
        threading.Thread(
            target=_read_answers,
            args=(self._process.stdout, self._answers),
            name="napari-topolens analysis answers",
            daemon=True,
        ).start()
        # a child nobody closed (a generator dropped unfinished, the interpreter leaving)
        # ends with this object
        self._finalizer = weakref.finalize(self, _end, self._process)
        _STARTED.add(self)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and self._process.poll() is None

    @property
    def pid(self) -> int:
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
        before anything is sent (the child stays as it was). The child is ended if this
        generator is closed before its answer (a cancel) or the analysis fails.
        """
        items = checked_clouds(clouds)
        image_stack = check_images(images, items)
        device_here = resolve_h0_device(device, None)  # checked where torch already is: here
        try:
            try:
                stream = self._process.stdin
                assert stream is not None
                for cloud in items:
                    _send(stream, ("cloud", cloud))
                _send(stream, ("analyse", labels, {**options, "device": device_here}))
            except OSError as exc:  # a broken pipe: the child has gone
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(1.0)
                raise self._ended() from exc
            analysis = yield from self._answered()
        except BaseException:
            self.close()
            raise
        analysis.images = image_stack
        for layer, cloud in zip(analysis.layer_results, items):
            layer.cloud = analysed_cloud(cloud, analysis.config)
        return analysis

    def _ended(self) -> TopoLensError:
        code = self._process.poll()
        why = (
            f"it was stopped by signal {-code} (out of memory, or ended from outside): analyse "
            "fewer points (max points) or fewer layers"
            if code is not None and code < 0
            else f"exit code {code}; its error is printed where napari was started"
        )
        return TopoLensError(f"the analysis process ended without an answer ({why})")

    def _answered(self) -> Generator[Progress, None, Analysis]:
        last = Progress(0.0, "computing in the analysis process")
        while True:
            try:
                message = self._answers.get(timeout=POLL_S)
            except queue.Empty:
                yield last  # nothing new: still a chance to cancel
                continue
            if message is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(1.0)
                raise self._ended()
            if message[0] == "warning":  # warned here again: where the caller sees it
                module, qualname = message[1]
                category, text = _warning_here(module, qualname, message[2])
                warnings.warn(text, category, stacklevel=2)
            elif message[0] == "progress":
                last = Progress(message[1], message[2])
                yield last
            elif message[0] == "done":
                return message[1]
            else:
                error = message[1]
                if hasattr(error, "add_note"):  # Python 3.11+
                    error.add_note(f"in the analysis process:\n{message[2]}")
                raise error


# ---- the pool -------------------------------------------------------------------------
def live_children() -> list[AnalysisProcess]:
    """The children of this process that are running, idle or computing."""
    return [process for process in list(_STARTED) if process.alive]


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
    """Keep a live child for the next analysis (a failed one was ended already)."""
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
    try:
        return (yield from process.iter_analyze(clouds, labels, **options))
    finally:  # kept if it lives: bad input refused before anything was sent, or done
        _give_back(process)
