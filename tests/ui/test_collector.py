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
    collector._timer.clear()  # (the next test's timer calls the real check)
    assert gc.get_threshold() == (1000, 20, 30)


def test_a_holder_that_never_lets_go_holds_them_off_no_longer_than_the_longest_pause(
    qtbot, monkeypatch
):
    monkeypatch.setattr(collector, "LONGEST_PAUSE_S", 0.2)
    release = collector.pause()
    assert full_collections_held_off()
    qtbot.waitUntil(lambda: not full_collections_held_off(), timeout=5_000)
    release()


class _Cycle:
    """Garbage only the collector frees (it refers to itself)."""

    def __init__(self) -> None:
        self.me = self


def test_once_released_the_live_objects_are_frozen_and_a_removed_layer_thaws_them(
    make_napari_viewer, qtbot
):
    """Full collections then walk the young objects only; a layer removed gives the old
    ones back, so napari's collection on removal frees what became garbage meanwhile."""
    import weakref

    viewer = make_napari_viewer()
    layer = viewer.add_points([[0, 0]])
    collector.thaw_on_removal(viewer.layers)
    gc.unfreeze()
    old = _Cycle()
    old_ref = weakref.ref(old)
    collector.pause()()  # held and released: settles in a turn of its own
    qtbot.waitUntil(lambda: not collector.is_paused(), timeout=5_000)
    assert collector.collections_are_cheap() and gc.get_freeze_count() > 0
    del old
    gc.collect()
    assert old_ref() is not None  # frozen: the collector does not see it
    thawed = []
    viewer.layers.events.removed.connect(lambda _e: thawed.append(gc.get_freeze_count()))
    viewer.layers.remove(layer)
    assert thawed == [0]
    gc.collect()  # (napari's own on removal, whatever its version)
    assert old_ref() is None


def test_a_closed_canvas_thaws_the_frozen_objects(make_napari_viewer, qtbot):
    from napari_topolens.ui.canvas import canvas_for

    viewer = make_napari_viewer()
    canvas = canvas_for(viewer)
    gc.freeze()
    canvas.close_canvas()
    assert gc.get_freeze_count() == 0


def test_a_held_pause_is_not_looked_at_again_and_again(qtbot, monkeypatch):
    """While held, nothing polls it: a release or the longest pause looks again."""
    monkeypatch.setattr(collector, "RESUME_AFTER_MS", 0)
    checks: list[int] = []
    check = collector._check

    def counted() -> None:
        checks.append(1)
        check()

    monkeypatch.setattr(collector, "_check", counted)
    collector._timer.clear()  # (its timer calls the counted check)
    release = collector.pause()
    qtbot.wait(300)
    assert collector.is_paused() and len(checks) <= 2
    release()
    qtbot.waitUntil(lambda: not collector.is_paused(), timeout=5_000)
    collector._timer.clear()  # (the next test's timer calls the real check)


def test_whether_collections_are_cheap_is_known_without_counting_the_frozen_objects(
    qtbot, monkeypatch
):
    """``gc.get_freeze_count`` walks every frozen object (a million after a run: 80-450 ms
    of the main thread): a pick asks before each batched update, a removal thaws."""
    collector.pause()()
    qtbot.waitUntil(lambda: not collector.is_paused(), timeout=5_000)

    def counted() -> int:
        raise AssertionError("the frozen objects were counted")

    monkeypatch.setattr(gc, "get_freeze_count", counted)
    assert collector.collections_are_cheap()
    collector.thaw()
    assert not collector.collections_are_cheap()
    monkeypatch.undo()
    assert gc.get_freeze_count() == 0
    gc.freeze()  # (as the suite's start left it)
