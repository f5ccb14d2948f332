"""Python's automatic garbage collection is off while views are added, and on again after."""

from __future__ import annotations

import gc

import pytest

from napari_topolens.ui import collector


@pytest.fixture(autouse=True)
def collector_on_again(qtbot, monkeypatch):
    monkeypatch.setattr(collector, "RESUME_AFTER_MS", 50)
    assert gc.isenabled()
    yield
    qtbot.waitUntil(lambda: not collector.is_paused(), timeout=10_000)
    gc.enable()


def test_off_while_held_and_on_again_once_nothing_held_it_a_while(qtbot):
    first, second = collector.pause(), collector.pause()
    assert not gc.isenabled() and collector.is_paused()
    first()
    first()  # twice: harmless, the second holder still holds it
    qtbot.wait(200)
    assert not gc.isenabled()
    second()
    assert not gc.isenabled()  # not at once: when nothing held it for a while
    qtbot.waitUntil(gc.isenabled, timeout=5_000)
    assert not collector.is_paused()


def test_off_by_someone_else_stays_off(qtbot):
    gc.disable()
    try:
        release = collector.pause()
        assert not collector.is_paused()
        release()
        qtbot.wait(200)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_holder_that_never_lets_go_keeps_it_off_no_longer_than_the_longest_pause(
    qtbot, monkeypatch
):
    monkeypatch.setattr(collector, "LONGEST_PAUSE_S", 0.2)
    release = collector.pause()
    assert not gc.isenabled()
    qtbot.waitUntil(gc.isenabled, timeout=5_000)
    release()
