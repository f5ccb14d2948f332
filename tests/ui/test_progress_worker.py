"""The analysis worker's napari progress bar: one bar, whatever the event loop does."""

from __future__ import annotations

from types import SimpleNamespace

import napari.utils

from napari_topolens.ui.widget_parts import ProgressWorker


def _runner(seen: list[tuple[float, str]]) -> ProgressWorker:
    """A worker of one step whose dock callback records each progress it hears."""

    def work():
        yield None

    return ProgressWorker(
        work,
        "analysing",
        on_done=lambda result: None,
        on_error=lambda error: None,
        on_cancelled=lambda: None,
        on_finished=lambda: None,
        on_progress=lambda fraction, message: seen.append((fraction, message)),
    )


def test_progress_that_arrives_while_the_bar_is_made_makes_no_second_bar(qtbot, monkeypatch):
    # making napari's first bar builds its activity widgets and can process pending
    # Qt events, the worker's next progress among them: that progress must not make
    # (and recurse into making) a bar of its own
    seen: list[tuple[float, str]] = []
    runner = _runner(seen)
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
    qtbot.waitUntil(lambda: bool(made) and made[0].n > 0)
    qtbot.wait(2 * ProgressWorker.BAR_UPDATE_MS)  # the nested progress's own update too
    assert len(made) == 1
    assert seen == [(0.5, "extracting"), (0.2, "nested")]
    assert made[0].n == 200  # the latest progress, when the bar was made
    runner._close()


def test_napari_bar_shows_the_latest_of_many_progress_steps_in_one_turn_of_its_own(
    qtbot, monkeypatch
):
    """napari's bar runs the event loop on each change: its updates are coalesced (at most
    one per BAR_UPDATE_MS), outside the worker's progress signal; the dock's own callback
    hears every step at once."""

    seen: list[tuple[float, str]] = []
    runner = _runner(seen)
    updates: list[tuple[str, int]] = []

    class Bar:
        n = 0

        def __init__(self, **kwargs):
            self.text = ""

        def set_description(self, text):
            self.text = text

        def update(self, steps):
            self.n += steps
            updates.append((self.text, self.n))

        def close(self):
            pass

    monkeypatch.setattr(napari.utils, "progress", Bar)
    for step in range(1, 11):
        runner._on_progress(SimpleNamespace(fraction=step / 20, message=f"step {step}"))
    assert len(seen) == 10 and updates == []  # nothing of napari's bar inside the signal
    qtbot.waitUntil(lambda: bool(updates))
    qtbot.wait(2 * ProgressWorker.BAR_UPDATE_MS)
    assert updates == [("analysing: step 10", 500)]
    runner._close()


def test_a_runtime_error_of_the_work_reaches_on_error_and_on_finished(qtbot):
    """napari's generator worker takes a RuntimeError (torch's errors are) for its own
    stop and emits neither errored nor finished: the widget would stay running."""
    from napari_topolens.ui.widget_parts import WorkFailed, report_error

    def work():
        yield None
        raise RuntimeError("CUDA out of memory")

    errors: list[BaseException] = []
    finished: list[bool] = []
    runner = ProgressWorker(
        work,
        "analysing",
        on_done=lambda result: None,
        on_error=errors.append,
        on_cancelled=lambda: None,
        on_finished=lambda: finished.append(True),
        napari_bar=False,
    )
    runner.start()
    qtbot.waitUntil(lambda: bool(finished), timeout=10_000)
    assert len(errors) == 1 and isinstance(errors[0], WorkFailed)
    assert isinstance(errors[0].__cause__, RuntimeError)
    assert report_error(errors[0]) == "RuntimeError: CUDA out of memory"


def test_torch_threads_are_put_back_unless_changed_meanwhile(monkeypatch):
    """A run leaves a core for the viewer; its end puts the count back, but not over a
    count someone set meanwhile (the user in the console, another run's end)."""
    import os

    import torch

    from napari_topolens.ui.widget_parts import a_core_left_for_the_viewer

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with a_core_left_for_the_viewer():
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 4
        with a_core_left_for_the_viewer():
            torch.set_num_threads(2)  # the user's own choice, while the run works
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
