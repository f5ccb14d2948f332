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


def test_a_view_layer_added_leaves_no_layer_active_without_changing_the_active_one(
    make_napari_viewer,
):
    # napari makes an inserted layer active and the canvas clears that: each change is a
    # pass over every canvas layer (their highlights redone), twice per view layer added
    import numpy as np
    from napari.layers import Points

    viewer = make_napari_viewer()
    canvas = canvas_for(viewer)
    layers = canvas.model.layers
    changes: list[object] = []
    layers.selection.events.active.connect(lambda event: changes.append(event.value))
    made = []
    for i in range(3):
        layer = Points(np.zeros((1, 2)) + i, metadata={"topolens": {"view": "diagram"}})
        made.append(canvas.add_layer(layer, "diagram"))
    assert list(layers) == made
    assert changes == []
    assert layers.selection.active is None and not len(layers.selection)
    # told what napari tells a layer that is not the active one
    assert all(not layer._highlight_visible for layer in made)
    assert canvas.model.help == ""
    # a layer selected by someone (a script) is still cleared, as napari would
    layers.selection.active = made[0]
    changes.clear()
    made.append(canvas.add_layer(Points(np.ones((1, 2))), "diagram"))
    assert layers.selection.active is None and changes[-1] is None


def test_a_canvas_made_in_turns_is_docked_in_the_next_turn_and_at_once_when_asked_for(
    make_napari_viewer, qtbot
):
    """Making the canvas and docking it are each a few hundred ms of the main thread: a
    run makes it in one turn and docks it in the next; ``canvas_for`` never waits."""
    from napari_topolens.ui.canvas import existing_canvas, make_canvas_in_turns

    viewer = make_napari_viewer()
    docked: list[object] = []
    make_canvas_in_turns(viewer, then=docked.append)
    canvas = existing_canvas(viewer)
    assert canvas is not None and not canvas.docked and docked == []
    assert "Topology views" not in viewer.window.dock_widgets  # made, not docked yet
    qtbot.waitUntil(lambda: bool(docked))
    assert docked == [canvas] and canvas.docked
    assert viewer.window.dock_widgets["Topology views"] is canvas
    make_canvas_in_turns(viewer, then=docked.append)  # it has one: ``then`` at once
    assert docked == [canvas, canvas] and existing_canvas(viewer) is canvas

    other = make_napari_viewer()
    make_canvas_in_turns(other, then=docked.append)
    made = existing_canvas(other)
    assert canvas_for(other) is made and made.docked  # docked when asked for, not later
    assert other.window.dock_widgets["Topology views"] is made
    qtbot.wait(50)
    assert docked[-1] is made and len(docked) == 3  # ``then`` once, with the canvas
