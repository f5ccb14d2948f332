"""A laptop screen (1280 x 800) holds the whole task: the window fits, controls and views are
seen together, every colour key is titled, and picking a view warns of nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_topolens import load_sample, run_variants
from napari_topolens.ui import view_data as vd
from napari_topolens.ui.canvas import EMPTY_HINT, READOUT_HINT, existing_canvas
from napari_topolens.ui.glyphs import viewer_warmer_of, warmer_of
from napari_topolens.ui.state import state_for
from napari_topolens.ui.views import show_analysis, show_variants

SCREEN = (1280, 800)


@pytest.fixture(scope="module")
def varied():
    """Digits with two variants and the model's predictions (for the correct colouring)."""
    import torch

    sample = load_sample("digits")
    index = sample.test_index[:120]
    images = sample.images[index]
    base = run_variants(
        sample.model,
        images,
        ["pool1", "pool2", "fc1"],
        ["gaussian:0.1", "prune:0.5"],
        labels=sample.labels[index],
        class_names=sample.class_names,
        sampling="top_norm",
        provenance={"sample": "digits"},
    )
    with torch.no_grad():
        base.predictions = sample.model(torch.from_numpy(images[:, None])).argmax(1).numpy()
    return images, base


def settle(qtbot, ms: int = 300) -> None:
    qtbot.wait(ms)


@pytest.fixture
def laptop(make_napari_viewer, varied, qtbot):
    """A 1280 x 800 window with the analysis widget docked from the Plugins menu (napari's
    door) and an analysis with variants shown, its form folded as after Run."""
    images, base = varied
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*SCREEN)
    image_layer = viewer.add_image(images, name="digits images")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-topolens", "Topology analysis")
    show_analysis(viewer, base, image_layer=image_layer)
    show_variants(viewer, base)
    widget.form_summary.set_full_text("digits · 3 layers · 120 images · 2 variants")
    widget.fold_form(True)  # what Run does (running it here would take minutes)
    settle(qtbot)
    canvas = existing_canvas(viewer)
    assert canvas is not None
    return viewer, widget, canvas


def fits(window) -> bool:
    hint = window.minimumSizeHint()
    return hint.width() <= SCREEN[0] and hint.height() <= SCREEN[1]


@pytest.mark.slow
def test_the_window_fits_a_laptop_screen_with_variants(laptop, qtbot):
    viewer, widget, _canvas = laptop
    window = widget.window()  # napari's main window, through Qt's own API
    assert fits(window), window.minimumSizeHint()
    assert (window.width(), window.height()) == SCREEN
    widget.fold_form(False)  # the form open again
    settle(qtbot)
    assert fits(window), window.minimumSizeHint()
    # the explorer from the Plugins menu as well
    viewer.window.add_plugin_dock_widget("napari-topolens", "Topology explorer")
    settle(qtbot)
    assert fits(window), window.minimumSizeHint()
    assert (window.width(), window.height()) == SCREEN
    # and the topology map's dock below the views, after Run (the form folded)
    widget.fold_form(True)
    viewer.window.add_plugin_dock_widget("napari-topolens", "Topology map")
    settle(qtbot)
    assert fits(window), window.minimumSizeHint()
    assert (window.width(), window.height()) == SCREEN


def test_the_views_dock_comes_with_the_analysis_widget_and_run_stays_in_sight(
    make_napari_viewer, qtbot
):
    # a canvas's first text (text shaders, glyph atlas: a few hundred ms of the main thread
    # in one paint) is drawn when the widget opens, not while a run computes; the form
    # scrolls above Run and the status, which stay in sight with the views dock below
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*SCREEN)
    viewer.open_sample("napari-topolens", "digits")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-topolens", "Topology analysis")
    assert existing_canvas(viewer) is None  # not inside napari's docking: after it
    qtbot.waitUntil(lambda: getattr(existing_canvas(viewer), "docked", False), timeout=20_000)
    canvas = existing_canvas(viewer)
    assert viewer.window.dock_widgets["Topology views"] is canvas
    qtbot.waitUntil(lambda: bool(getattr(warmer_of(canvas.model), "drawn", None)), timeout=20_000)
    qtbot.waitUntil(lambda: viewer_warmer_of(viewer) is not None, timeout=20_000)
    assert EMPTY_HINT in canvas.legend.text()
    assert len(state_for(viewer)) == 0 and widget.analysis is None
    settle(qtbot)
    window = widget.window()
    assert fits(window), window.minimumSizeHint()
    assert (window.width(), window.height()) == SCREEN
    for part in (widget.run_button.native, widget.status.native, canvas.qt_viewer, canvas.picker):
        assert part.isVisible() and not part.visibleRegion().isEmpty(), part
    assert not widget.parentWidget().geometry().intersects(canvas.parentWidget().geometry())


def test_an_analysis_widget_never_shown_makes_no_views_dock(make_napari_viewer, qtbot):
    from napari_topolens.ui import analysis_widget

    viewer = make_napari_viewer()
    widget = analysis_widget.AnalysisWidget(viewer)  # made in code, not docked: no dock below it
    qtbot.wait(2 * analysis_widget.CANVAS_AFTER_OPEN_MS)
    assert existing_canvas(viewer) is None
    widget.close()


@pytest.mark.slow
def test_the_canvas_and_the_analysis_controls_are_seen_together(laptop, qtbot):
    viewer, widget, canvas = laptop
    # neither is tabbed away: both are shown, side by side in the column, not overlapping
    for part in (widget, widget.run_button.native, canvas, canvas.qt_viewer, canvas.picker):
        assert part.isVisible() and not part.visibleRegion().isEmpty(), part
    analysis_dock, views_dock = widget.parentWidget(), canvas.parentWidget()
    assert not analysis_dock.geometry().intersects(views_dock.geometry())
    # the explorer's controls are a bar inside the views dock, also visible
    assert canvas.explorer.layer.native.isVisible()
    assert (
        canvas.explorer.layer.value
        == state_for(viewer).get(state_for(viewer).keys[0]).network_layer
    )
    # after Run the form is one line, so the canvas keeps most of the column's height
    assert widget.form.isHidden() and widget.form_summary.isVisible()
    assert canvas.qt_viewer.height() >= 300, canvas.qt_viewer.height()
    assert canvas.qt_viewer.height() > 2 * widget.height()


@pytest.mark.slow
def test_the_menu_explorer_points_to_the_bar(laptop, qtbot):
    viewer, _widget, _canvas = laptop
    from napari_topolens.ui.explorer_widget import ExplorerWidget

    # built directly with the real viewer: the door's proxy is another helper's part
    explorer = ExplorerWidget(viewer)
    viewer.window.add_dock_widget(explorer, name="Topology explorer")
    settle(qtbot)
    assert explorer.pointer.visible and not explorer.first_row.visible
    assert explorer.native.height() < 80


def titles_of(entry) -> list[str]:
    return entry.layers["panel_text"].features["text"].tolist()


def has_no_colour_bar(canvas) -> bool:
    """napari's own colour bars have no title: none is shown."""
    return not any(
        getattr(layer, "colorbar", None) is not None and layer.colorbar.visible
        for layer in canvas.model.layers
    )


@pytest.mark.slow
def test_every_continuous_colouring_has_a_titled_key_per_slot(laptop, qtbot):
    viewer, _widget, canvas = laptop
    entries = list(state_for(viewer))
    assert len(entries) == 2  # the base and its variant beside it
    for color_by in ("purity", "correct", "mean_lens", "size"):
        canvas.explorer.color_by.value = color_by
        settle(qtbot)
        for entry in entries:
            if vd.panel_key(entry.analysis, entry.network_layer, "mapper", color_by) is None:
                continue  # (correct share: a variant run without the model's predictions)
            key = entry.layers["color_key"]
            assert key.visible and key in canvas.model.layers, (color_by, entry.key)
            assert vd.KEY_TITLES[color_by] in titles_of(entry), (color_by, entry.key)
            assert key.metadata["topolens"]["title"] == vd.KEY_TITLES[color_by]
        assert has_no_colour_bar(canvas)
    canvas.explorer.color_by.value = "dominant_class"  # classes: the legend says them
    settle(qtbot)
    for entry in entries:
        assert not entry.layers["color_key"].visible
        assert not set(vd.KEY_TITLES.values()) & set(titles_of(entry))


@pytest.mark.slow
def test_every_heatmap_has_a_titled_key(laptop, qtbot):
    viewer, _widget, canvas = laptop
    for panel in ("layer_distances", "cka", "dendrogram"):
        canvas.show_panel(panel)
        settle(qtbot)
        for entry in state_for(viewer):
            title, _cmap, (_low, high) = vd.panel_key(entry.analysis, entry.network_layer, panel)
            assert entry.layers["color_key"].visible, panel
            text = titles_of(entry)
            assert title in text and vd.geo.format_value(high) in text and "0" in text, panel
        assert has_no_colour_bar(canvas)


@pytest.mark.slow
def test_picking_each_view_after_a_run_warns_of_nothing(make_napari_viewer, qtbot):
    """Through napari's door, as a user: the digits sample, the widget from the Plugins menu,
    Run, then every view picked (the matrices' values grow their text layer from empty)."""
    from conftest import wait_for

    from napari_topolens.ui.widget_parts import MARKED_IMAGES

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*SCREEN)
    viewer.open_sample("napari-topolens", "digits")
    marks = viewer.add_points([[i, 4.0, 4.0] for i in range(0, 240, 3)], name="marks")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-topolens", "Topology analysis")
    widget.load_model()
    widget.which.value = MARKED_IMAGES
    widget.marker_layer.value = marks
    wait_for(qtbot, widget.run())
    canvas = viewer.window.dock_widgets["Topology views"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for panel in ["layer_distances", "mapper", "cka", "drift", "layer_distances", *vd.PANELS]:
            canvas.picker.setCurrentIndex(canvas.picker.findData(panel))
            settle(qtbot, 50)
    shown = [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not shown, shown


def test_a_text_layer_grown_from_empty_warns_of_nothing():
    """napari fills the rows a growing points layer appends with its features' defaults, an
    empty table's being NaN: a colour read from a features column then fails ("Applying
    the encoding failed", shown for minutes over the gallery)."""
    from napari_topolens.ui.layer_update import create_layer, update_layer

    empty = vd.text_layer("panel_values", "k", "fc1", 0, [], [], [], 8, "values")
    grown = vd.text_layer(
        "panel_values",
        "k",
        "fc1",
        0,
        [(0.1, 0.1), (0.2, 0.2)],
        ["1", "2"],
        ["white", "black"],
        8,
        "values",
    )
    layer = create_layer(empty)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        update_layer(layer, grown)
        update_layer(layer, empty)
        update_layer(layer, grown)
    shown = [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not shown, shown
    assert layer.features["text_color"].tolist() == ["white", "black"]
    np.testing.assert_allclose(layer.text.color._values[1], [0.0, 0.0, 0.0, 1.0])


@pytest.mark.slow
def test_the_readout_and_the_class_message_go_when_cleared(laptop, qtbot):
    viewer, _widget, canvas = laptop
    from napari_topolens.ui.links import links_for

    key = next(e.key for e in state_for(viewer) if e.variant_of is None)
    nodes = state_for(viewer).get(key).layers["mapper_nodes"]
    canvas.readout.setText(canvas.hover_at(tuple(nodes.data_to_world(nodes.data[0]))))
    assert canvas.readout.text().startswith("node ")
    links_for(viewer).select_nodes(key, [0])
    links_for(viewer).clear_selection(key)
    assert canvas.readout.text() == READOUT_HINT
    bar = canvas.explorer
    bar.class_search.value = "zebra"
    assert "no class matches" in bar.status.value and bar.status.visible
    bar.class_search.value = ""
    assert bar.status.value == "" and not bar.status.visible


def test_plurals():
    assert vd.plural(1, "point") == "1 point" and vd.plural(2, "point") == "2 points"
    assert np.asarray(vd.plural(0, "node") == "0 nodes")
