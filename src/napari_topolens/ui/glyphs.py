"""The topology canvas's glyphs loaded ahead, a few per event-loop turn, while it is empty.

napari draws text with one glyph atlas per canvas: the first draw of a character
renders it on the main thread (Qt paints it at a high resolution, then a distance
field is computed on the CPU: about 8 ms a character with software OpenGL). A
panel's titles, ticks and values drawn for the first time need some 40-60
characters: 0.3-0.6 s of the main thread in the turn that first draws them (a run's
show, a reopened analysis). The canvas is empty for seconds before that (the run
computes; the saved arrays are read): :func:`warm_glyphs` draws the characters the
views use then, a few per turn, through the canvas's own text overlay (napari's
``canvas.overlays``, drawn with the same atlas), fully transparent. It stops once
a view layer is in the canvas (a repaint then costs far more than a glyph; the
show loads what is left) or the canvas is closed.

The image viewer has an atlas of its own, and text of the plugin's too (the
galleries' titles and captions, the variants' names): its first draw there took
0.25-0.35 s of one turn of a run's show. :func:`warm_viewer_glyphs` loads the same
characters there, through the image viewer's text overlay, layers or not (its
repaint is cheap: the images' slices), unless that overlay is shown; the analysis
widget starts it once it has made the views dock, when it is opened (or, if a run
was started before, while the run computes), until a show adds layers there (not the
reader: a reopen's show adds layers there meanwhile).
"""

from __future__ import annotations

import string
import weakref
from collections.abc import Callable
from typing import Any

from .viewer_key import PerViewer, viewer_ref

__all__ = [
    "WARM_CHARS",
    "GlyphWarmer",
    "viewer_warmer_of",
    "warm_glyphs",
    "warm_viewer_glyphs",
    "warmer_of",
]

#: The characters the views' text uses, the most common first.
WARM_CHARS = (
    string.digits
    + ".-e"
    + string.ascii_lowercase.replace("e", "")
    + string.ascii_uppercase
    + "·…→↑∞%,:()[]=+/×_'<>#"
)
#: Characters drawn per event-loop turn, and the wait between turns (ms): a turn takes
#: about 8 ms a character and an empty canvas's repaint.
CHUNK = 4
WAIT_MS = 30


class GlyphWarmer:
    """Draws :data:`WARM_CHARS` in a canvas's text overlay, ``CHUNK`` per turn.

    ``alive()`` says whether the canvas is still open; ``model_ref()`` gives its viewer
    model (None once gone), ``while_empty``: stop once the model has a layer;
    ``after``: a warmer to wait for (two first draws of text in one turn cost 0.4 s). Nothing
    is left changed: the overlay is hidden again, with its text and colour, when done
    or stopped; if someone else set its text or hid it meanwhile, that stays.
    """

    def __init__(
        self,
        model_ref: Callable[[], Any],
        alive: Callable[[], bool],
        chars: str = WARM_CHARS,
        *,
        while_empty: bool = True,
        after: GlyphWarmer | None = None,
    ) -> None:
        # weakly: the warmers outlive nothing (:data:`_WARMERS` is keyed by the model)
        self._model = model_ref
        self._alive = alive
        self._while_empty = while_empty
        self._after = after
        self._left = list(dict.fromkeys(chars))
        self._overlay: Any = None
        self._saved: tuple[Any, Any, Any] | None = None
        self._shown = ""  # the text it put in the overlay last
        self.done = False
        #: The characters drawn so far, in order.
        self.drawn: list[str] = []

    def start(self) -> GlyphWarmer:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(WAIT_MS, self._step)
        return self

    def _text_overlay(self) -> Any:
        overlays = getattr(getattr(self._model(), "canvas", None), "overlays", None)
        try:
            return overlays["text"] if overlays is not None else None
        except (KeyError, TypeError):
            return None

    def _step(self) -> None:
        from qtpy.QtCore import QTimer

        if self.done:
            return
        overlay = self._overlay
        if overlay is not None and (overlay.text != self._shown or not overlay.visible):
            # set by someone else meanwhile (the user's own text): left as they set it, in
            # its own colour again (and its own text, if only hidden)
            if self._saved is not None:
                overlay.color = self._saved[1]
                if overlay.text == self._shown:
                    overlay.text = self._saved[0]
            self.done = True
            self._overlay = self._saved = None
            return
        model = self._model()
        if (
            not self._left
            or model is None
            or not self._alive()
            or (self._while_empty and len(model.layers))
        ):
            self.stop()
            return
        if self._after is not None and not self._after.done:
            QTimer.singleShot(WAIT_MS, self._step)
            return
        if self._overlay is None:
            overlay = self._text_overlay()
            if overlay is None or overlay.visible:  # none, or shown for something else
                self.done = True
                return
            self._overlay = overlay
            self._saved = (overlay.text, overlay.color, overlay.visible)
            overlay.color = (0.0, 0.0, 0.0, 0.0)
            overlay.visible = True
        size = CHUNK if self.drawn else 1  # the first draw also builds the text's shaders
        chunk, self._left = self._left[:size], self._left[size:]
        self._shown = self._overlay.text = "".join(chunk)
        self.drawn += chunk
        QTimer.singleShot(WAIT_MS, self._step)

    def stop(self) -> None:
        """Stop, and put the overlay back as it was."""
        self.done = True
        overlay, saved = self._overlay, self._saved
        self._overlay = self._saved = None
        if overlay is not None and saved is not None:
            overlay.visible = saved[2]
            overlay.text = saved[0]
            overlay.color = saved[1]


def warm_glyphs(
    model: Any, alive: Callable[[], bool], chars: str = WARM_CHARS, *, while_empty: bool = True
) -> GlyphWarmer:
    """Start loading the glyphs of the canvas of ``model`` (see the module docstring).

    ``model``: the topology canvas's model, or a viewer (one a saved analysis is opened
    in: its gallery's title is drawn in its canvas); ``chars``: those to load, the most
    needed first; ``while_empty``: stop once a layer is in (else only when ``alive()``
    says so).
    """
    warmer = _WARMERS[model] = GlyphWarmer(
        weakref.ref(model), alive, chars, while_empty=while_empty
    )
    return warmer.start()


def warm_viewer_glyphs(
    viewer: Any, after: GlyphWarmer | None = None, while_: Callable[[], bool] | None = None
) -> GlyphWarmer:
    """Start loading the glyphs of the image viewer ``viewer`` once ``after`` is done,
    for as long as ``while_()`` says (once per viewer; see the module docstring).

    Each of its turns repaints the image viewer: cheap while a run computes (its images
    only), not while a show adds layers there (a reopen: 1.4 s more of the main thread).
    """
    known = _VIEWER_WARMERS.get(viewer)
    if known is not None:
        return known
    ref = viewer_ref(viewer)  # a proxy's own weakref dies with the widget holding it

    def alive() -> bool:
        return ref() is not None and (while_ is None or while_())

    warmer = GlyphWarmer(ref, alive, while_empty=False, after=after)
    _VIEWER_WARMERS.set(viewer, warmer)
    return warmer.start()


def viewer_warmer_of(viewer: Any) -> GlyphWarmer | None:
    """The glyph warmer started for the image viewer ``viewer``, if any."""
    warmer = _VIEWER_WARMERS.get(viewer)
    return warmer if isinstance(warmer, GlyphWarmer) else None


def warmer_of(model: Any) -> GlyphWarmer | None:
    """The glyph warmer started for the canvas of ``model``, if any."""
    return _WARMERS.get(model)


_WARMERS: weakref.WeakKeyDictionary[Any, GlyphWarmer] = weakref.WeakKeyDictionary()
_VIEWER_WARMERS = PerViewer()
