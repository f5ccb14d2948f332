"""Text layers updated in place: new strings and colours, a new size, a new style."""

from __future__ import annotations

import numpy as np
from napari.layers import Layer

from napari_topolens.ui.layer_tuples import text_layer
from napari_topolens.ui.layer_update import drawn_as_is, set_visible, track_drawing, update_layer


def _texts(texts, colors, size, pos=None):
    pos = [(float(i), 0.0) for i in range(len(texts))] if pos is None else pos
    return text_layer("panel_text", "k", "fc1", 0, pos, texts, colors, size, "titles")


def test_a_text_layer_takes_new_strings_colours_and_size_in_place():
    layer = Layer.create(*_texts(["a", "b"], ["white", "red"], 10.0))
    item = _texts(["one", "two", "three"], ["blue", "white", "lime"], 7.5)
    assert update_layer(layer, item)
    assert list(layer.text.values) == ["one", "two", "three"]
    assert layer.text.color.feature == "text_color"
    assert list(layer.features["text_color"]) == ["blue", "white", "lime"]
    assert float(layer.text.size) == 7.5
    assert len(layer.data) == 3


def test_a_text_layer_takes_a_new_style():
    layer = Layer.create(*_texts(["a", "b"], ["white", "red"], 10.0))
    data, kwargs, kind = _texts(["x", "y"], ["white", "red"], 10.0)
    kwargs["text"] = {**kwargs["text"], "string": "[{text}]", "anchor": "upper_left"}
    assert update_layer(layer, (data, kwargs, kind))
    assert list(layer.text.values) == ["[x]", "[y]"]
    assert str(layer.text.anchor.value) == "upper_left"
    kwargs["text"] = {"string": "{text}", "size": 9, "color": "white", "anchor": "center"}
    assert update_layer(layer, (data, kwargs, kind))
    assert list(layer.text.values) == ["x", "y"]
    np.testing.assert_allclose(np.asarray(layer.text.color.constant), [1, 1, 1, 1])
    assert float(layer.text.size) == 9


def _strip(high, cmap="viridis"):
    data = np.linspace(high, 0.0, 16, dtype=np.float32)[:, None]
    kwargs = {"colormap": cmap, "contrast_limits": (0.0, high), "name": "key", "metadata": {}}
    return (data, kwargs, "image")


def test_an_image_is_put_in_only_where_it_changed():
    layer = Layer.create(*_strip(1.0))
    changed = []
    for name in ("data", "colormap", "contrast_limits"):
        getattr(layer.events, name).connect(lambda _e, name=name: changed.append(name))
    assert update_layer(layer, _strip(1.0))
    assert changed == []  # the same strip: nothing set, nothing redrawn
    assert update_layer(layer, _strip(2.0, "magma"))
    assert {"data", "colormap", "contrast_limits"} <= set(changed)
    assert layer.colormap.name == "magma"
    assert float(layer.data[0, 0]) == 2.0
    assert list(layer.contrast_limits) == [0.0, 2.0]


def _counted_set_data(layer):
    sent = []
    layer.events.set_data.connect(lambda _e: sent.append(1))
    return sent


def test_a_layer_shown_again_unchanged_is_not_sent_to_its_visual_again():
    layer = Layer.create(np.array([[0.0, 0.0], [1.0, 1.0]]), {"face_color": "red"}, "points")
    track_drawing(layer)
    sent = _counted_set_data(layer)
    set_visible(layer, False)
    assert drawn_as_is(layer)
    set_visible(layer, True)
    assert layer.visible
    assert sent == []  # its visual still holds it: no refresh sent


def test_a_layer_changed_while_hidden_is_sent_when_shown():
    layer = Layer.create(np.array([[0.0, 0.0], [1.0, 1.0]]), {"face_color": "red"}, "points")
    track_drawing(layer)
    sent = _counted_set_data(layer)
    set_visible(layer, False)
    layer.face_color = "blue"  # napari sends nothing to a hidden layer's visual
    assert not drawn_as_is(layer)
    set_visible(layer, True)
    assert sent  # refreshed when shown
    assert drawn_as_is(layer)


def test_a_hidden_layer_updated_in_place_is_sent_when_shown():
    # (vectors are updated with their events blocked: the update itself forgets the drawing)
    def vectors(length):
        data = np.array([[[0.0, 0.0], [length, 0.0]]])
        kwargs = {"features": {"k": [0]}, "edge_color": "white", "name": "v", "metadata": {}}
        return (data, kwargs, "vectors")

    layer = Layer.create(*vectors(1.0))
    track_drawing(layer)
    set_visible(layer, False)
    assert update_layer(layer, vectors(2.0))
    assert not drawn_as_is(layer)
    sent = _counted_set_data(layer)
    set_visible(layer, True)
    assert sent


def test_a_layer_never_shown_in_the_canvas_is_sent_when_shown():
    layer = Layer.create(np.array([[0.0, 0.0]]), {"visible": False}, "points")
    track_drawing(layer)
    sent = _counted_set_data(layer)
    set_visible(layer, True)
    assert sent


def test_a_shown_layer_keeps_what_it_draws_in_the_canvas(make_napari_viewer, qtbot):
    """The visual of a layer hidden and shown again unchanged still draws it; one
    changed while hidden draws the change."""
    viewer = make_napari_viewer(show=True)
    square = np.array([[10.0, 10.0], [10.0, 90.0], [90.0, 90.0], [90.0, 10.0]])
    layer = viewer.add_shapes([square], face_color="red", edge_width=0, opacity=1.0)
    viewer.reset_view()
    track_drawing(layer)

    def colour_in_middle():
        shot = viewer.screenshot(canvas_only=True, flash=False)
        h, w = shot.shape[:2]
        return shot[h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5, :3].reshape(-1, 3).mean(0)

    assert colour_in_middle()[0] > 200
    set_visible(layer, False)
    assert colour_in_middle()[0] < 50
    set_visible(layer, True)
    red = colour_in_middle()
    assert red[0] > 200 and red[2] < 50
    set_visible(layer, False)
    layer.data = [square + 200.0]  # moved away from the middle while hidden
    set_visible(layer, True)
    assert colour_in_middle()[0] < 50


def test_a_text_layers_unchanged_style_is_not_set_again_and_new_points_get_it(monkeypatch):
    from napari.layers import Points

    layer = Layer.create(*_texts(["a", "b"], ["white", "red"], 10.0))
    set_names = []
    for name in ("size", "border_width", "face_color", "border_color"):
        prop = getattr(Points, name)

        def setter(self, value, prop=prop, name=name):
            set_names.append(name)
            prop.fset(self, value)

        monkeypatch.setattr(Points, name, property(prop.fget, setter))
    assert update_layer(layer, _texts(["x", "y"], ["white", "red"], 10.0))
    assert set_names == []  # size 0, no border, transparent dots: already so
    # dots before (another style): set
    data, kwargs, kind = _texts(["a"], ["white"], 10.0)
    dots = Layer.create(
        data, {**kwargs, "size": 4.0, "face_color": "red", "border_width": 0.1}, kind
    )
    set_names.clear()
    assert update_layer(dots, _texts(["x", "y", "z"], ["white", "red", "blue"], 10.0))
    assert {"size", "face_color", "border_width"} <= set(set_names)
    assert np.all(np.asarray(dots.size) == 0.0)
    assert np.all(np.asarray(dots.border_width) == 0.0)
    assert np.all(np.asarray(dots.face_color) == 0.0)
