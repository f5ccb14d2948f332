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
"""

from __future__ import annotations

import string
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["WARM_CHARS", "GlyphWarmer", "warm_glyphs", "warmer_of"]

#: The characters the views' text uses, the most common first.
WARM_CHARS = (
    string.digits
    + ".-e"
    + string.ascii_lowercase.replace("e", "")
    + string.ascii_uppercase
    + "·…→∞%,:()[]=+/×_'<>#"
)
#: Characters drawn per event-loop turn, and the wait between turns (ms): a turn takes
#: about 8 ms a character and an empty canvas's repaint.
CHUNK = 4
WAIT_MS = 30


class GlyphWarmer:
    """Draws :data:`WARM_CHARS` in a canvas's text overlay, ``CHUNK`` per turn.

    ``alive()`` says whether the canvas is still open. Nothing is left changed: the
    overlay is hidden again, with its text and colour, when done or stopped.
    """

    def __init__(
        self,
        model: Any,
        alive: Callable[[], bool],
        chars: str = WARM_CHARS,
        *,
        while_empty: bool = True,
    ) -> None:
        # weakly: the warmers outlive nothing (:data:`_WARMERS` is keyed by the model)
        self._model = weakref.ref(model)
        self._alive = alive
        self._while_empty = while_empty
        self._left = list(dict.fromkeys(chars))
        self._overlay: Any = None
        self._saved: tuple[Any, Any, Any] | None = None
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
        model = self._model()
        if (
            not self._left
            or model is None
            or not self._alive()
            or (self._while_empty and len(model.layers))
        ):
            self.stop()
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
        self._overlay.text = "".join(chunk)
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
    warmer = _WARMERS[model] = GlyphWarmer(model, alive, chars, while_empty=while_empty)
    return warmer.start()


def warmer_of(model: Any) -> GlyphWarmer | None:
    """The glyph warmer started for the canvas of ``model``, if any."""
    return _WARMERS.get(model)


_WARMERS: weakref.WeakKeyDictionary[Any, GlyphWarmer] = weakref.WeakKeyDictionary()
