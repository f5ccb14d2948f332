"""``ui.state`` is the one owner of what is shown and selected: the links, the variants and
the canvas read it there and keep no copy of their own (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

import napari_topolens as tl
from napari_topolens import load_sample
from napari_topolens.ui.layer_update import create_layer
from napari_topolens.ui.links import links_for
from napari_topolens.ui.state import state_for
from napari_topolens.ui.variants import variant_views_for
from napari_topolens.ui.views import (
    canvas_for,
    reader_layer_data,
    remove_analysis,
    show_analysis,
    show_variants,
    watch_viewer,
)

NAMES = ["gaussian:0.3", "prune:0.5"]


@pytest.fixture(scope="module")
def varied():
    """A small digits base (60 images, pool1) with one perturbation and a pruned model."""
    sample = load_sample("digits")
    index = sample.test_index[:60]
    return tl.run_variants(
        sample.model,
        sample.images[index],
        ["pool1"],
        NAMES,
        labels=sample.labels[index],
        class_names=sample.class_names,
        sampling="top_norm",
        provenance={"sample": "digits"},
    )


def shown_with_variants(make_napari_viewer, base):
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(np.asarray(base.images), name="digits", contrast_limits=(0, 16))
    show_analysis(viewer, base, "pool1", image_layer=image_layer)
    show_variants(viewer, base)
    state = state_for(viewer)
    return viewer, image_layer, state, state.key_of(base)


def test_the_links_read_the_selection_hits_and_linked_rings_from_the_state(
    make_napari_viewer, varied
):
    viewer, _image_layer, state, key = shown_with_variants(make_napari_viewer, varied)
    links = links_for(viewer)
    variant_key = f"{key} · {NAMES[0]}"
    graph = varied["pool1"].mapper
    node = int(np.argmax(graph.size))
    members = links.select_nodes(key, [node])
    assert state.selected_key == key
    assert links.last_members is state.get(key).selection.members
    assert np.array_equal(members, graph.node_members(node))
    # the base's selection rings its images in the compared variant: kept in the variant's entry
    linked = state.get(variant_key).linked
    assert len(linked["mapper_nodes"]) and linked["points"].size
    found = links.pixel_clicked(key, 0, 4, 4)
    assert state.hits_key == key and links.last_highlight is state.get(key).hits
    assert state.get(key).hits is found
    links.clear_selection(key)
    assert not len(links.last_members) and links.last_highlight == {}
    assert state.get(variant_key).linked == {}  # no selection, no link
    for copy in ("linked", "item_pickers"):
        assert not hasattr(links, copy)


@pytest.mark.slow
def test_the_compared_variant_is_the_one_the_state_shows_beside_the_base(
    make_napari_viewer, varied
):
    viewer, _image_layer, state, key = shown_with_variants(make_napari_viewer, varied)
    record = variant_views_for(viewer).bases[key]
    assert record.compared == NAMES[0]
    assert state.variant_beside(key) is state.get(f"{key} · {NAMES[0]}")
    show_variants(viewer, varied, NAMES[1])
    assert record.compared == NAMES[1] and f"{key} · {NAMES[0]}" not in state
    # nothing else remembers it: the variant's views gone, none is compared
    remove_analysis(viewer, f"{key} · {NAMES[1]}")
    assert record.compared is None and state.variant_beside(key) is None
    assert canvas_for(viewer).compare.isHidden() is False  # the choices stay offered


def test_the_canvas_says_its_choices_with_signals(make_napari_viewer, varied, qtbot):
    viewer, _image_layer, _state, key = shown_with_variants(make_napari_viewer, varied)
    canvas = canvas_for(viewer)
    picked: list[str] = []
    canvas.compare_picked.connect(picked.append)
    canvas.compare.setCurrentIndex(1)
    assert picked == [NAMES[1]]
    qtbot.waitUntil(lambda: variant_views_for(viewer).pending.done, timeout=30_000)
    assert variant_views_for(viewer).bases[key].compared == NAMES[1]


def test_the_readers_variants_are_shown_once_without_writing_the_layers_metadata(
    make_napari_viewer, varied, qtbot
):
    viewer = make_napari_viewer()
    watch_viewer(viewer)
    (item,) = reader_layer_data(varied, "read", layer_name="pool1", compare=NAMES[1])
    layer = create_layer(item)
    viewer.add_layer(layer)
    state = state_for(viewer)
    qtbot.waitUntil(
        lambda: (
            f"read · {NAMES[1]}" in state
            and bool(state.get(f"read · {NAMES[1]}").network_layer)
            and variant_views_for(viewer).pending.done
        ),
        timeout=60_000,
    )
    assert layer.metadata["topolens"]["show"]["variants"] is True  # untouched
    assert state.get("read").reader_variants_answered
    pending = variant_views_for(viewer).pending
    state.shown.emit("read")  # e.g. another show of the base: the request was answered
    assert variant_views_for(viewer).pending is pending
