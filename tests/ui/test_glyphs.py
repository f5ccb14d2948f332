"""The canvas's glyphs are drawn ahead while it is empty, and nothing is left changed."""

from __future__ import annotations

import numpy as np

from napari_topolens.ui.canvas import canvas_for
from napari_topolens.ui.glyphs import WARM_CHARS, warmer_of


def test_an_empty_canvas_draws_every_glyph_ahead_and_puts_its_overlay_back(
    make_napari_viewer, qtbot
):
    viewer = make_napari_viewer()
    canvas = canvas_for(viewer)
    warmer = warmer_of(canvas.model)
    assert warmer is not None
    overlay = canvas.model.canvas.overlays["text"]
    seen: list[str] = []
    overlay.events.text.connect(lambda text: seen.append(str(text)))
    qtbot.waitUntil(lambda: warmer.done, timeout=60_000)
    assert warmer.drawn == list(dict.fromkeys(WARM_CHARS))  # every one, in order
    assert "".join(seen[:-1]) == "".join(warmer.drawn)  # drawn in the overlay, a few at a time
    assert all(len(text) <= 4 for text in seen)
    assert not overlay.visible and overlay.text == "" and overlay.color is None  # as it was


def test_a_view_layer_in_the_canvas_stops_it(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    canvas = canvas_for(viewer)
    warmer = warmer_of(canvas.model)
    assert warmer is not None
    canvas.model.add_points(np.zeros((1, 2)))  # as a show's first layer
    qtbot.waitUntil(lambda: warmer.done, timeout=60_000)
    assert len(warmer.drawn) < len(set(WARM_CHARS))
    assert not canvas.model.canvas.overlays["text"].visible


def test_an_overlay_shown_for_something_else_is_left_alone(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    canvas = canvas_for(viewer)
    warmer = warmer_of(canvas.model)
    assert warmer is not None
    overlay = canvas.model.canvas.overlays["text"]
    overlay.text, overlay.visible = "mine", True  # before the warmer's first turn
    qtbot.waitUntil(lambda: warmer.done, timeout=60_000)
    assert warmer.drawn == [] and overlay.text == "mine" and overlay.visible


def test_a_closed_viewers_canvas_is_not_kept_alive_by_its_warmer(make_napari_viewer, qtbot):
    # the viewer is closed inside the test (napari's fixture allows it)
    import gc
    import weakref

    from napari_topolens.ui.canvas import close_canvases

    viewer = make_napari_viewer()
    canvas = canvas_for(viewer)
    warmer = warmer_of(canvas.model)
    assert warmer is not None
    model = weakref.ref(canvas.model)
    qtbot.wait(100)  # closed mid-way, a few characters drawn
    close_canvases()
    viewer.close()
    del canvas, viewer
    qtbot.waitUntil(lambda: warmer.done, timeout=60_000)
    for _ in range(3):
        qtbot.wait(10)
        gc.collect()
    assert model() is None


def test_then_the_image_viewers_own_glyphs_layers_or_not_and_its_overlay_put_back(
    make_napari_viewer, qtbot
):
    from napari_topolens.ui.glyphs import viewer_warmer_of, warm_viewer_glyphs

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 8, 8)), name="images")  # the user's layers stay
    canvas = canvas_for(viewer)
    assert viewer_warmer_of(viewer) is None  # (the analysis widget starts it, when opened)
    first = warmer_of(canvas.model)
    warmer = warm_viewer_glyphs(viewer, after=first)
    assert first is not None and warmer is not None
    overlay = viewer.canvas.overlays["text"]
    seen: list[tuple[str, bool]] = []
    overlay.events.text.connect(lambda text: seen.append((str(text), first.done)))
    qtbot.waitUntil(lambda: warmer.done, timeout=60_000)
    assert warmer.drawn == list(dict.fromkeys(WARM_CHARS))
    assert "".join(text for text, _ in seen[:-1]) == "".join(warmer.drawn)
    assert all(done for _, done in seen)  # after the canvas's: one first text draw a turn
    assert not overlay.visible and overlay.text == "" and overlay.color is None
    assert viewer_warmer_of(viewer) is warmer  # once per viewer


def test_the_image_viewers_overlay_set_by_the_user_meanwhile_is_left_as_they_set_it(
    make_napari_viewer, qtbot
):
    from napari_topolens.ui.glyphs import warm_viewer_glyphs

    viewer = make_napari_viewer()
    canvas = canvas_for(viewer)
    first = warmer_of(canvas.model)
    warmer = warm_viewer_glyphs(viewer, after=first)
    assert first is not None and warmer is not None
    qtbot.waitUntil(lambda: len(warmer.drawn) > 0, timeout=60_000)  # mid-way
    overlay = viewer.canvas.overlays["text"]
    overlay.text = "mine"  # the user's own text, on the shown overlay
    qtbot.waitUntil(lambda: warmer.done, timeout=60_000)
    assert overlay.text == "mine" and overlay.visible
    assert overlay.color is None  # its own colour again (the warmer's was transparent)
    assert len(warmer.drawn) < len(set(WARM_CHARS))


def test_the_image_viewers_glyphs_stop_when_what_they_wait_for_ends(make_napari_viewer, qtbot):
    """The analysis widget warms them only while its worker computes: a show adding
    layers meanwhile would repaint the viewer with every turn."""
    from napari_topolens.ui.glyphs import warm_viewer_glyphs

    viewer = make_napari_viewer()
    running = [True]
    warmer = warm_viewer_glyphs(viewer, while_=lambda: running[0])
    qtbot.waitUntil(lambda: len(warmer.drawn) > 0, timeout=60_000)
    running[0] = False
    qtbot.waitUntil(lambda: warmer.done, timeout=60_000)
    assert len(warmer.drawn) < len(set(WARM_CHARS))
    assert not viewer.canvas.overlays["text"].visible  # put back
