"""What a run's show does in each event-loop turn: no turn both adds a layer and draws it
first, and the viewer's selection is left alone while layers go in.

Turns are counted, never timed (``benchmarks/bench_responsiveness.py`` measures the stalls).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import digits_analysis

import napari_topolens as tl
from napari_topolens import load_sample
from napari_topolens.ui import show as show_module
from napari_topolens.ui.state import state_for
from napari_topolens.ui.views import (
    canvas_for,
    find_layers,
    show_analysis,
    show_analysis_incrementally,
    show_variants_incrementally,
)


@pytest.fixture(scope="module")
def digits():
    return digits_analysis(60, layers=("pool1", "fc1"), with_images=True)


class Turns:
    """Counts the show's turns (each call of ``IncrementalShow._step`` is one; the event
    loop, and so a repaint, runs between two) and notes, for every layer put into
    ``models``, the turn that added it and the turn it was first visible in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *models) -> None:
        self.now = 0
        self.added: dict[int, int] = {}
        self.shown: dict[int, int] = {}
        self.names: dict[int, str] = {}
        step = show_module.IncrementalShow._step

        def counted(show) -> None:
            self.now += 1
            step(show)

        monkeypatch.setattr(show_module.IncrementalShow, "_step", counted)
        for model in models:
            model.layers.events.inserted.connect(self._inserted)

    def _inserted(self, event) -> None:
        layer = event.value
        self.added[id(layer)] = self.now
        self.names[id(layer)] = layer.name
        if layer.visible:
            self.shown[id(layer)] = self.now
        layer.events.visible.connect(lambda _e, layer=layer: self._visible(layer))

    def _visible(self, layer) -> None:
        if layer.visible:
            self.shown.setdefault(id(layer), self.now)


def test_a_run_shows_each_layer_it_adds_a_turn_after_adding_it(
    make_napari_viewer, qtbot, digits, monkeypatch
):
    # napari's add (the layer's visual, its controls) and the layer's first draw (its
    # shader programs compiled) each take a good part of a turn: never both in one
    images, analysis = digits
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="digits")
    monkeypatch.setattr(show_module, "PREBUILD", False)  # the show only
    canvas = canvas_for(viewer)
    turns = Turns(monkeypatch, viewer, canvas.model)
    show = show_analysis_incrementally(viewer, analysis, "fc1", image_layer=image_layer)
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    assert show.error is None
    (key,) = state_for(viewer).keys
    entry = state_for(viewer).get(key)
    visible = [layer for layer in entry.layers.values() if layer.visible]
    assert {"overlay", "gallery", "mapper_nodes", "mapper_edges", "panel_text"} <= {
        view for view, layer in entry.layers.items() if layer.visible
    }
    for layer in visible:
        assert turns.shown[id(layer)] > turns.added[id(layer)], layer.name
    # and no turn shows two new layers: one first draw per repaint at most
    first_shown = [turns.shown[id(layer)] for layer in visible]
    assert len(first_shown) == len(set(first_shown))


def test_a_show_leaves_the_viewers_selection_as_it_was(
    make_napari_viewer, qtbot, digits, monkeypatch
):
    # napari makes each added layer the active one (a pass over every layer, the layer
    # controls and buttons redone), and the show selected the user's layer again at its
    # end: the selection now never changes
    images, analysis = digits
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(images, name="digits")
    assert viewer.layers.selection.active is image_layer
    monkeypatch.setattr(show_module, "PREBUILD", False)
    changes: list[object] = []
    viewer.layers.selection.events.active.connect(lambda event: changes.append(event.value))
    viewer.layers.selection.events.changed.connect(lambda _event: changes.append("changed"))
    show = show_analysis_incrementally(viewer, analysis, "fc1", image_layer=image_layer)
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    assert show.error is None
    (key,) = state_for(viewer).keys
    entry = state_for(viewer).get(key)
    assert entry.layers["overlay"] in viewer.layers and entry.layers["gallery"] in viewer.layers
    assert changes == []
    assert viewer.layers.selection.active is image_layer
    assert set(viewer.layers.selection) == {image_layer}
    # told what napari tells a layer that is not the active one
    assert not entry.layers["overlay"]._highlight_visible


def test_a_variants_show_adds_its_image_layers_keeping_the_selection_and_shows_them_later(
    make_napari_viewer, qtbot, monkeypatch
):
    # the variants' images and names, and the compared variant's overlay and gallery,
    # go into the image viewer the same way: selection kept, shown a turn after added
    sample = load_sample("digits")
    index = sample.test_index[:60]
    images, labels = sample.images[index], sample.labels[index]
    base = tl.run_variants(sample.model, images, ["fc1"], ["gaussian:0.3"], labels=labels)
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(np.asarray(base.images), name="digits", contrast_limits=(0, 16))
    monkeypatch.setattr(show_module, "PREBUILD", False)
    show_analysis(viewer, base, "fc1", image_layer=image_layer)
    viewer.layers.selection.active = image_layer
    changes: list[object] = []
    viewer.layers.selection.events.changed.connect(lambda _event: changes.append("changed"))
    turns = Turns(monkeypatch, viewer, canvas_for(viewer).model)
    show = show_variants_incrementally(viewer, base)
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    assert show.error is None
    key = state_for(viewer).key_of(base)
    made = find_layers(viewer, key, "variant_images") + find_layers(viewer, key, "variant_labels")
    assert len(made) == 2
    new = [layer for layer in viewer.layers if id(layer) in turns.added]
    assert set(made) < set(new)  # (the compared variant's overlay and gallery too)
    for layer in new:
        assert layer.visible and turns.shown[id(layer)] > turns.added[id(layer)], layer.name
    assert changes == [] and viewer.layers.selection.active is image_layer
