"""Python's full garbage collections are held off while views are added, and allowed after."""

from __future__ import annotations

import gc

import pytest

from napari_topolens.ui import collector


def full_collections_held_off() -> bool:
    return gc.get_threshold()[2] == collector.OUT_OF_REACH


@pytest.fixture(autouse=True)
def collector_on_again(qtbot, monkeypatch):
    monkeypatch.setattr(collector, "RESUME_AFTER_MS", 50)
    assert gc.isenabled() and not full_collections_held_off()
    before = gc.get_threshold()
    yield
    qtbot.waitUntil(lambda: not collector.is_paused(), timeout=10_000)
    gc.enable()
    gc.set_threshold(*before)


def test_held_off_while_held_and_allowed_once_nothing_held_them_a_while(qtbot):
    before = gc.get_threshold()
    first, second = collector.pause(), collector.pause()
    assert full_collections_held_off() and collector.is_paused()
    assert gc.isenabled() and gc.get_threshold()[:2] == before[:2]  # the young ones go on
    first()
    first()  # twice: harmless, the second holder still holds it
    qtbot.wait(200)
    assert full_collections_held_off()
    second()
    assert full_collections_held_off()  # not at once: when nothing held it for a while
    qtbot.waitUntil(lambda: not full_collections_held_off(), timeout=5_000)
    assert gc.get_threshold() == before and not collector.is_paused()


def test_a_collector_turned_off_by_someone_else_is_left_alone(qtbot):
    gc.disable()
    try:
        before = gc.get_threshold()
        release = collector.pause()
        assert not collector.is_paused() and gc.get_threshold() == before
        release()
        qtbot.wait(200)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_thresholds_someone_else_set_meanwhile_stay_theirs(qtbot):
    release = collector.pause()
    gc.set_threshold(1000, 20, 30)
    release()
    qtbot.waitUntil(lambda: not collector.is_paused(), timeout=5_000)
    assert gc.get_threshold() == (1000, 20, 30)


def test_a_holder_that_never_lets_go_holds_them_off_no_longer_than_the_longest_pause(
    qtbot, monkeypatch
):
    monkeypatch.setattr(collector, "LONGEST_PAUSE_S", 0.2)
    release = collector.pause()
    assert full_collections_held_off()
    qtbot.waitUntil(lambda: not full_collections_held_off(), timeout=5_000)
    release()
