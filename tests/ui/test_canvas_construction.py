"""Making the topology canvas: what it costs the rest of the application."""

from __future__ import annotations

from napari_topolens.ui.canvas import canvas_for


def test_making_the_canvas_tells_no_one_of_shortcut_changes_and_keeps_the_shortcuts(
    make_napari_viewer,
):
    # a napari QtViewer binds every shortcut of the settings again, each announced to every
    # welcome screen and tooltip of the application (most of the time a canvas takes to
    # make); the canvas's makes them the same as before, so nothing is announced
    from napari.utils.action_manager import action_manager

    viewer = make_napari_viewer()
    # (napari has no public read of the bound keys: a test may reach in, the product not)
    before = {name: list(keys) for name, keys in action_manager._shortcuts.items()}
    announced: list[object] = []
    action_manager.events.shortcut_changed.connect(announced.append)
    try:
        canvas_for(viewer)
    finally:
        action_manager.events.shortcut_changed.disconnect(announced.append)
    assert announced == []
    after = {name: list(keys) for name, keys in action_manager._shortcuts.items()}
    assert after == before and after
