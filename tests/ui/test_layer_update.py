"""Text layers updated in place: new strings and colours, a new size, a new style."""

from __future__ import annotations

import numpy as np
from napari.layers import Layer

from napari_topolens.ui.layer_tuples import text_layer
from napari_topolens.ui.layer_update import update_layer


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
