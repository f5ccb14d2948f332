"""Pieces the dock widgets share: image selection, workers, errors.

Kept apart from the widgets so that each widget stays a thin form: parameters
in, a generator worker out, layers back on the main thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EmptySelectionError, ImageError, TopoLensError

if TYPE_CHECKING:
    import napari

__all__ = [
    "ALL_IMAGES",
    "CURRENT_IMAGE",
    "MARKED_IMAGES",
    "WHICH_IMAGES",
    "ProgressWorker",
    "WorkFailed",
    "current_stack_index",
    "elided_label",
    "frame_shape",
    "image_stack",
    "item_stack_indices",
    "layer_mask",
    "marked_stack_indices",
    "raised_by_work",
    "read_frames",
    "relay_warnings",
    "report_error",
    "surfacing_runtime_errors",
]

ALL_IMAGES = "all images"
CURRENT_IMAGE = "current image"
MARKED_IMAGES = "images marked in a layer"
WHICH_IMAGES = (ALL_IMAGES, CURRENT_IMAGE, MARKED_IMAGES)


# ---- which images ------------------------------------------------------------------
def image_stack(layer: Any) -> np.ndarray:
    """The layer's images as one stack ``(N, H, W)`` or ``(N, H, W, 3)``.

    Extra leading axes (time, z, ...) are flattened into the stack axis, in C
    order, so stack index ``i`` is ``np.unravel_index(i, leading_shape)``.
    """
    data = np.asarray(layer.data)
    spatial_ndim = 3 if layer.rgb else 2
    if data.ndim < spatial_ndim:
        raise ImageError(f"layer {layer.name!r} has {data.ndim}-D data; it is not an image")
    if data.ndim == spatial_ndim:
        data = data[None]
    return data.reshape(-1, *data.shape[-spatial_ndim:])


def _leading_count(layer: Any) -> int:
    """How many images the layer's stack holds, without reading its pixels."""
    return int(np.prod(_leading_shape(layer), dtype=np.int64))


def check_one_stack_axis(layer: Any) -> None:
    """Refuse an image layer with more than one axis before the images (e.g. T, Z, H, W).

    Clicks, stack jumps and the overlay address one stack axis; with several,
    a flattened stack index would land on the wrong image, so such layers are
    refused up front rather than analysed half-right.
    """
    leading = _leading_shape(layer)
    if len(leading) > 1:
        raise ImageError(
            f"layer {layer.name!r} has {len(leading)} axes before the images (shape "
            f"{tuple(np.shape(layer.data))}); TopoLens analyses a stack with one such axis. "
            "Pick one time point or plane (e.g. layer.data[t]) into its own layer, or "
            "reshape it to (N, H, W), and analyse that"
        )


def _leading_shape(layer: Any) -> tuple[int, ...]:
    spatial_ndim = 3 if layer.rgb else 2
    return tuple(np.shape(layer.data)[: max(0, layer.data.ndim - spatial_ndim)])


def _world_to_stack(image_layer: Any, world: np.ndarray) -> np.ndarray:
    """Stack indices of world positions (rows), following the image layer's transform."""
    leading = _leading_shape(image_layer)
    if not leading:
        return np.zeros(len(world), dtype=np.int64)
    n_lead = len(leading)
    data = np.array([image_layer.world_to_data(tuple(p)) for p in world], dtype=float)
    lead = np.round(data[:, :n_lead]).astype(np.int64)
    inside = np.all((lead >= 0) & (lead < np.asarray(leading)), axis=1)
    index = np.full(len(world), -1, dtype=np.int64)
    if inside.any():
        index[inside] = np.ravel_multi_index(tuple(lead[inside].T), leading)
    return index


def current_stack_index(viewer: napari.Viewer, image_layer: Any) -> int:
    """Stack index of the image the viewer shows now."""
    leading = _leading_shape(image_layer)
    if not leading:
        return 0
    point = np.asarray(viewer.dims.point, dtype=float)[-image_layer.ndim :]
    (index,) = _world_to_stack(image_layer, point[None])
    if index < 0:
        raise EmptySelectionError(
            f"the viewer's current slice is outside {image_layer.name!r}; move the slider onto its images"
        )
    return int(index)


def item_stack_indices(image_layer: Any, marker: Any) -> np.ndarray:
    """Stack index of the image each point (or shape: its first vertex) sits on; -1 off it."""
    from napari.layers import Points, Shapes

    if not isinstance(marker, (Points, Shapes)) or marker.ndim < 3:
        raise EmptySelectionError(
            f"layer {getattr(marker, 'name', '?')!r} has no stack axis; draw its points or "
            "shapes while browsing the images, so each sits on one image of the stack"
        )
    if isinstance(marker, Points):
        vertices = np.asarray(marker.data, dtype=float).reshape(-1, marker.ndim)
    else:
        vertices = np.array(
            [np.asarray(shape, dtype=float)[0] for shape in marker.data], dtype=float
        ).reshape(-1, marker.ndim)
    if not len(vertices):
        return np.empty(0, np.int64)
    world = np.array([marker.data_to_world(v) for v in vertices]).reshape(-1, marker.ndim)
    return _world_to_stack(image_layer, world[:, -image_layer.ndim :])


def marked_stack_indices(image_layer: Any, marker: Any) -> np.ndarray:
    """Sorted stack indices of the images that ``marker`` marks.

    Points and Shapes mark the image their vertices sit on (the first, stack
    coordinate, read through both layers' transforms); Labels mark every image
    whose slice holds a non-zero label.
    """
    from napari.layers import Labels, Points, Shapes

    n_images = _leading_count(image_layer)
    name = getattr(marker, "name", "?")
    needs_stack = (
        f"layer {name!r} has no stack axis; draw its marks while browsing the images, "
        "so each mark sits on one image of the stack"
    )
    if isinstance(marker, Labels):
        data = np.asarray(marker.data)
        if data.ndim < 3:
            raise EmptySelectionError(needs_stack)
        flat = data.reshape(-1, *data.shape[-2:])
        if len(flat) != n_images:
            raise ImageError(
                f"Labels layer {name!r} has {len(flat)} slices but {image_layer.name!r} has "
                f"{n_images} images; make the labels the same size as the image stack"
            )
        index = np.flatnonzero(flat.reshape(len(flat), -1).any(axis=1))
    elif isinstance(marker, (Points, Shapes)):
        if marker.ndim < 3:
            raise EmptySelectionError(needs_stack)
        vertices = (
            np.asarray(marker.data, dtype=float)
            if isinstance(marker, Points)
            else np.concatenate([np.asarray(s, dtype=float) for s in marker.data])
            if len(marker.data)
            else np.empty((0, marker.ndim))
        )
        world = np.array([marker.data_to_world(v) for v in vertices]).reshape(-1, marker.ndim)
        index = (
            _world_to_stack(image_layer, world[:, -image_layer.ndim :])
            if len(world)
            else np.empty(0, np.int64)
        )
        index = np.unique(index[index >= 0])
    else:
        raise TopoLensError(
            f"layer {name!r} is a {type(marker).__name__}; mark images with a Points, Shapes or Labels layer"
        )
    if len(index) == 0:
        raise EmptySelectionError(
            f"layer {name!r} marks no image of {image_layer.name!r}; add a point, shape or "
            "label on the images to analyse"
        )
    return np.asarray(index, dtype=np.int64)


# ---- frames and masks --------------------------------------------------------------
def frame_shape(layer: Any) -> tuple[int, ...]:
    """``(H, W)`` or ``(H, W, 3)`` of one image of an image layer (from its shape only)."""
    shape = tuple(int(s) for s in np.shape(layer.data))
    return shape[-3:] if layer.rgb else shape[-2:]


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of consecutive values of a sorted index."""
    if not len(index):
        return []
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, len(index)]
    return [(int(index[a]), int(index[b - 1]) + 1) for a, b in zip(starts, stops)]


def read_frames(data: Any, index: np.ndarray, frame: tuple[int, ...]) -> np.ndarray:
    """The frames ``index`` (sorted, unique) of a stack ``data`` in its own dtype.

    ``data`` is one frame of shape ``frame`` or a stack of them (numpy, dask, zarr:
    only the runs asked for are read); the caller has checked the bytes it allocates.
    """
    dtype = np.dtype(getattr(data, "dtype", np.float32))
    out = np.empty((len(index), *frame), dtype=dtype)
    if np.ndim(data) == len(frame):  # one image, no stack axis
        out[:] = np.asarray(data)
        return out
    at = 0
    for start, stop in _runs(np.asarray(index, dtype=np.int64)):
        out[at : at + stop - start] = np.asarray(data[start:stop])
        at += stop - start
    return out


def layer_mask(
    mask_layer: Any, image_layer: Any, index: np.ndarray, *, max_bytes: int, what: str
) -> np.ndarray:
    """The pixels a Labels or Shapes layer covers on the images ``index`` of ``image_layer``.

    Returns ``(len(index), H, W)`` bool, or one ``(H, W)`` mask for every image when
    the layer has no stack axis (a 2-D Labels layer, shapes drawn on a 2-D canvas).
    A Labels layer must have the image stack's own grid (nonzero = inside); a
    Shapes layer is rasterised frame by frame on the image grid, each shape on the
    frame its first vertex sits on (through both layers' transforms). Refused with
    one ``ImageError`` when the mask would take more than ``max_bytes``.
    """
    from napari.layers import Labels, Shapes

    name = getattr(mask_layer, "name", "?")
    height, width = frame_shape(image_layer)[:2]
    n_stack = _leading_count(image_layer)
    index = np.asarray(index, dtype=np.int64)
    if isinstance(mask_layer, Labels):
        shape = tuple(int(s) for s in np.shape(mask_layer.data))
        if shape == (height, width):
            return np.asarray(mask_layer.data) != 0
        if shape != (n_stack, height, width):
            raise ImageError(
                f"{what} {name!r} has shape {shape}, but {image_layer.name!r} holds {n_stack} "
                f"image(s) of {height}x{width}; give a Labels layer of shape ({n_stack}, "
                f"{height}, {width}) or ({height}, {width}) for all"
            )
        _check_mask_bytes(len(index) * height * width, max_bytes, what, name)
        return read_frames(mask_layer.data, index, (height, width)) != 0
    if not isinstance(mask_layer, Shapes):
        raise TopoLensError(
            f"layer {name!r} is a {type(mask_layer).__name__}; {what} is a Labels or Shapes layer"
        )
    flat = mask_layer.ndim < 3
    _check_mask_bytes((1 if flat else len(index)) * height * width, max_bytes, what, name)
    out = np.zeros((1 if flat else len(index), height, width), dtype=bool)
    row_of = {int(i): k for k, i in enumerate(index.tolist())}
    by_frame: dict[int, list[tuple[np.ndarray, str]]] = {}
    for vertices, kind in zip(mask_layer.data, mask_layer.shape_type):
        points = np.asarray(vertices, dtype=float)
        world = np.array([mask_layer.data_to_world(v) for v in points]).reshape(len(points), -1)
        if flat:  # a 2-D shape over every image: its y, x on the image grid
            world = np.concatenate([np.zeros((len(world), image_layer.ndim - 2)), world], axis=1)
            row = 0
        else:
            (frame,) = _world_to_stack(image_layer, world[:1, -image_layer.ndim :])
            if int(frame) not in row_of:
                continue  # on an image that is not analysed, or off the stack
            row = row_of[int(frame)]
        data = np.array(
            [image_layer.world_to_data(tuple(p)) for p in world[:, -image_layer.ndim :]]
        )
        by_frame.setdefault(row, []).append((data[:, -2:], kind))
    for row, shapes in by_frame.items():
        flat_shapes = Shapes(
            [vertices for vertices, _ in shapes], shape_type=[kind for _, kind in shapes]
        )
        out[row] = flat_shapes.to_labels((height, width)) != 0  # one frame at a time
    return out[0] if flat else out


def _check_mask_bytes(n_bytes: int, max_bytes: int, what: str, name: str) -> None:
    if n_bytes > max_bytes:
        raise ImageError(
            f"{what} {name!r} over the selected images would take {n_bytes / 2**20:,.0f} MiB "
            f"(more than {max_bytes / 2**20:,.0f} MiB); select fewer images"
        )


# ---- workers' threads -----------------------------------------------------------------
_TORCH_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def a_core_left_for_the_viewer() -> Iterator[None]:
    """torch's intra-op threads one fewer than the machine's cores while a widget's run
    extracts: with one per core (torch's default), the viewer's main thread got a third
    of a core on two, and each repaint took three times its CPU. Entered in the worker
    thread that runs torch (with OpenMP, torch's count is the calling thread's); the
    count found is put back at the end unless someone changed it meanwhile."""
    import torch

    with _TORCH_THREADS_LOCK:
        found = torch.get_num_threads()
        wanted = max(1, min(found, (os.cpu_count() or 1) - 1))
        if wanted != found:
            torch.set_num_threads(wanted)
    try:
        yield
    finally:
        with _TORCH_THREADS_LOCK:
            if wanted != found and torch.get_num_threads() == wanted:
                torch.set_num_threads(found)


# ---- errors ------------------------------------------------------------------------
class WorkFailed(Exception):
    """A ``RuntimeError`` raised by a worker's work (torch's errors are), carried as its
    cause: napari's generator worker takes a ``RuntimeError`` for its own stop and emits
    neither ``errored`` nor ``finished`` for it, which left a widget running for good."""


def relay_warnings(worker: Any) -> None:
    """The warnings of ``worker``'s work as napari notifications (the child process's
    analysis's too: it sends them back, and they are warned again in the worker).

    napari's workers mean to (``_NotifyingMixin`` connects ``warned``), but in napari
    0.9 that mixin's ``__init__`` is never run: it comes after ``QRunnable`` in their
    classes' order, whose ``__init__`` does not pass on. Should napari mend that, the
    notification manager drops the second copy (it shows a warning once per place).
    """
    worker.warned.connect(_notify_warning)


def qt_alive(widget: Any) -> bool:
    """Whether Qt still has ``widget`` (a Qt or magicgui widget): a widget docked in
    napari is deleted with its window, while its Python object lives on."""
    try:  # (a deleted Qt widget raises on any attribute it lacks, ``native`` too)
        getattr(widget, "native", widget).objectName()
    except RuntimeError:  # "wrapped C/C++ object ... has been deleted"
        return False
    return True


def _notify_warning(show_warning_args: tuple) -> None:
    from napari.utils.notifications import notification_manager

    notification_manager.receive_warning(*show_warning_args)


def surfacing_runtime_errors(steps: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """``steps`` for a napari generator worker, a ``RuntimeError`` it raises carried in a
    :class:`WorkFailed` so that it reaches the worker's ``errored`` (see there)."""
    try:
        return (yield from steps)
    except RuntimeError as exc:
        raise WorkFailed(str(exc)) from exc


def raised_by_work(exc: BaseException) -> BaseException:
    """What a worker's work raised: the cause a :class:`WorkFailed` carries, or ``exc``."""
    if isinstance(exc, WorkFailed) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def report_error(exc: BaseException, status: Any = None) -> str:
    """Show one clear message: in the widget's status label and as a napari notification."""
    from napari.utils.notifications import show_error

    exc = raised_by_work(exc)
    message = str(exc) if isinstance(exc, TopoLensError) else f"{type(exc).__name__}: {exc}"
    if status is not None:
        status.value = f"Error: {message}"
        status.visible = True  # a status line hidden while empty (the explorer's)
    show_error(message)
    return message


# ---- workers -----------------------------------------------------------------------
class ProgressWorker:
    """A generator ``thread_worker`` whose ``Progress`` yields drive a napari progress bar.

    ``work`` runs off the main thread and must not touch layers; ``on_done``,
    ``on_error``, ``on_cancelled`` and ``on_finished`` run on the main thread
    (Qt delivers the worker's signals there).
    """

    STEPS = 1000
    #: The shortest wait between two updates of napari's progress bar (ms).
    BAR_UPDATE_MS = 250

    def __init__(
        self,
        work: Callable[[], Generator[Any, None, Any]],
        description: str,
        *,
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        on_cancelled: Callable[[], None],
        on_finished: Callable[[], None],
        on_progress: Callable[[float, str], None] | None = None,
        napari_bar: bool = True,
        owner: Any = None,
        on_abandoned: Callable[[], None] | None = None,
    ) -> None:
        from napari.qt.threading import create_worker

        self.description = description
        #: Whether napari's own progress bar (its activity dock) shows the work too. A
        #: widget with a bar of its own goes without: making napari's runs the event loop
        #: (its activity dialog processes events; a quarter second, and what is due then
        #: runs inside that turn) and so does each of its updates.
        self.napari_bar = napari_bar
        self.cancelled = False
        self.done = False
        self._on_progress_cb = on_progress
        #: napari's progress bar, made in the event-loop turn after :meth:`start` (making
        #: the first one builds napari's activity widgets: a quarter second of the main
        #: thread that pressing Run need not wait for).
        self._pbar: Any = None
        self._making_bar = False
        self._closed = False
        self._latest = (0.0, "")
        self._bar_update_due = False
        self._steps: Generator[Any, None, Any] | None = None
        #: The widget that shows the work is gone (see :meth:`abandon`).
        self.abandoned = False
        #: The Qt widget whose callbacks these are: once Qt has deleted it (its window
        #: closed), the work is abandoned at its next yield or signal, and
        #: ``on_abandoned`` (which must not touch the widget) tidies up.
        self._owner = owner
        self._on_abandoned = on_abandoned
        on_done, on_error = self._unless_abandoned(on_done), self._unless_abandoned(on_error)
        on_cancelled = self._unless_abandoned(on_cancelled)
        on_finished = self._unless_abandoned(on_finished)
        if on_progress is not None:
            self._on_progress_cb = self._unless_abandoned(on_progress)
        self.worker = create_worker(self._closable(work), _ignore_errors=True)
        relay_warnings(self.worker)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._returned(on_done, on_cancelled))
        self.worker.errored.connect(on_error)
        self.worker.aborted.connect(on_cancelled)
        self.worker.finished.connect(self._close)
        self.worker.finished.connect(on_finished)

    def _unless_abandoned(self, callback: Callable[..., None]) -> Callable[..., None]:
        def called(*args: Any) -> None:
            if not self._owner_gone():  # (True once abandoned, whatever the reason)
                callback(*args)

        return called

    def _owner_gone(self) -> bool:
        """Whether the owner widget was deleted by Qt; if so, the work is abandoned.

        Asked, not told: a handler of the widget's ``destroyed`` runs while Qt deletes
        it, and for a magicgui widget that Python collects, inside the collector (a
        segfault there in PyQt 6).
        """
        if self.abandoned:
            return True
        if self._owner is None or qt_alive(self._owner):
            return False
        self.abandon()
        if self._on_abandoned is not None:
            self._on_abandoned()
        return True

    def abandon(self) -> None:
        """The widget that shows this work is gone (its window closed, which deletes its
        docks' widgets): the work stops at its next step (its generator closed: a child
        process ends), and neither the widget's callbacks nor napari's progress bar run
        again (their Qt parts are deleted: each call raised in a Qt slot, napari's error
        dialog)."""
        self.abandoned = True
        self.quit()

    def _closable(
        self, work: Callable[[], Generator[Any, None, Any]]
    ) -> Callable[[], Generator[Any, None, Any]]:
        """``work`` whose generator this object keeps, to close it once the worker is done.

        An aborted napari worker stops iterating its generator but keeps it, suspended:
        what the work holds (a child process computing, files, hooks) is only released
        when the generator is closed (:meth:`_close`).
        """

        def steps() -> Generator[Any, None, Any]:
            self._steps = work()
            return (yield from surfacing_runtime_errors(self._steps))

        return steps

    def _returned(
        self, on_done: Callable[[Any], None], on_cancelled: Callable[[], None]
    ) -> Callable[[Any], None]:
        def returned(result: Any) -> None:
            self.done = True
            # a quit() that arrives after the last yield cannot stop the worker any
            # more; honour it here so a cancelled run still leaves nothing behind
            if self.cancelled:
                on_cancelled()
                return
            on_done(result)

        return returned

    def start(self) -> None:
        from qtpy.QtCore import QTimer

        self.worker.start()
        if self.napari_bar:
            QTimer.singleShot(0, self._make_bar)

    def _make_bar(self) -> None:
        from napari.utils import progress

        # making napari's bar can process pending Qt events, the worker's next yields
        # among them: those must not make a bar of their own (each one would recurse)
        if self._pbar is None and not self._closed and not self._making_bar and not self.abandoned:
            self._making_bar = True
            try:
                self._pbar = progress(total=self.STEPS, desc=self.description)
            finally:
                self._making_bar = False

    def quit(self) -> None:
        self.cancelled = True
        self.worker.quit()

    def _on_progress(self, step: Any) -> None:
        if self._owner_gone() or step is None or self.done or self._closed:
            return  # a late progress signal must not overwrite the final status
        fraction = float(getattr(step, "fraction", 0.0))
        message = str(getattr(step, "message", ""))
        if self._on_progress_cb is not None:
            self._on_progress_cb(fraction, message)
        # napari's bar runs the event loop (QApplication.processEvents) on each change of
        # its value and of its text: the window's pending paints ran inside this callback,
        # two or three full repaints in one turn. It shows the latest progress, in a turn
        # of its own, at most every BAR_UPDATE_MS.
        self._latest = (fraction, message)
        if self.napari_bar and not self._bar_update_due:
            from qtpy.QtCore import QTimer

            self._bar_update_due = True
            QTimer.singleShot(self.BAR_UPDATE_MS, self._update_bar)

    def _update_bar(self) -> None:
        self._bar_update_due = False
        if self.done or self._closed or self.abandoned:
            return
        self._make_bar()  # (its turn may not have come yet)
        pbar = self._pbar
        if pbar is None or self.done or self._closed:
            return
        fraction, message = self._latest
        target = round(self.STEPS * min(max(fraction, 0.0), 1.0))
        if target > pbar.n:
            pbar.set_description(f"{self.description}: {message}" if message else self.description)
            pbar.update(target - pbar.n)

    def _close(self) -> None:
        self._closed = True
        steps, self._steps = self._steps, None
        try:
            if steps is not None:  # the worker has left it: a cancelled run's work ends here
                steps.close()
        finally:
            if self._pbar is not None:
                self._pbar.close()
                self._pbar = None


# ---- text --------------------------------------------------------------------------
def elided_label(text: str = "") -> Any:
    """A one-line QLabel that cuts its text with "…" to its width (whole text in its tooltip).

    A laptop-screen dock has no room for a wrapped summary, and a plain label would
    widen the dock or be clipped mid-letter.
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QLabel, QSizePolicy

    class ElidedLabel(QLabel):
        def __init__(self, text: str) -> None:
            super().__init__()
            self._full = ""
            self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            self.setMinimumWidth(1)
            self.set_full_text(text)

        def full_text(self) -> str:
            return self._full

        def set_full_text(self, text: str) -> None:
            self._full = text
            self.setToolTip(text)
            self._elide()

        def resizeEvent(self, event: Any) -> None:
            super().resizeEvent(event)
            self._elide()

        def _elide(self) -> None:
            width = max(self.width(), 1)
            shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, width)
            if shown != self.text():
                self.setText(shown)

    return ElidedLabel(text)
