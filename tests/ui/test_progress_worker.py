"""The analysis worker's napari progress bar: one bar, whatever the event loop does."""

from __future__ import annotations

from types import SimpleNamespace

import napari.utils

from napari_topolens.ui.widget_parts import ProgressWorker


def test_progress_that_arrives_while_the_bar_is_made_makes_no_second_bar(qtbot, monkeypatch):
    # making napari's first bar builds its activity widgets and can process pending
    # Qt events, the worker's next progress among them: that progress must not make
    # (and recurse into making) a bar of its own
    def work():
        yield None

    seen: list[tuple[float, str]] = []
    runner = ProgressWorker(
        work,
        "analysing",
        on_done=lambda result: None,
        on_error=lambda error: None,
        on_cancelled=lambda: None,
        on_finished=lambda: None,
        on_progress=lambda fraction, message: seen.append((fraction, message)),
    )
    made: list[object] = []

    class Bar:
        n = 0

        def __init__(self, **kwargs):
            made.append(self)
            if len(made) < 50:  # a re-entered call, as from processed events
                runner._on_progress(SimpleNamespace(fraction=0.2, message="nested"))

        def set_description(self, text):
            self.text = text

        def update(self, steps):
            self.n += steps

        def close(self):
            pass

    monkeypatch.setattr(napari.utils, "progress", Bar)
    runner._on_progress(SimpleNamespace(fraction=0.5, message="extracting"))
    assert len(made) == 1
    assert seen == [(0.5, "extracting"), (0.2, "nested")]
    assert made[0].n == 500
    runner._close()
