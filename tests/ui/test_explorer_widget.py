"""The explorer widget drives the shown layers: layer, colours, edges, class search."""

from __future__ import annotations

import numpy as np
import pytest

from napari_topolens.ui.explorer_widget import ExplorerWidget, resolve_class
from napari_topolens.ui.views import find_layers, node_colors, show_analysis


@pytest.fixture(scope="module")
def digits_analysis():
    from napari_topolens.activations.extract import extract_activations
    from napari_topolens.samples import load_sample
    from napari_topolens.topology.analysis import analyze

    sample = load_sample("digits")
    index = np.arange(0, 1797, 10)[:160]
    clouds = extract_activations(sample.model, sample.images[index], ["pool2", "fc1"])
    for cloud in clouds.values():
        cloud.image_index = index[cloud.image_index]
    analysis = analyze(clouds, sample.labels, class_names=sample.class_names,
                       provenance={"sample": "digits"})
    return sample, analysis


@pytest.fixture
def explorer(make_napari_viewer, digits_analysis):
    sample, analysis = digits_analysis
    viewer = make_napari_viewer()
    images = viewer.add_image(sample.images, name="digits images")
    show_analysis(viewer, analysis, image_layer=images)
    widget = ExplorerWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Topology explorer")
    return viewer, widget, analysis


def nodes_layer(viewer, key):
    (layer,) = find_layers(viewer, key, "mapper_nodes")
    return layer


def edges_layer(viewer, key):
    (layer,) = find_layers(viewer, key, "mapper_edges")
    return layer


def test_explorer_follows_the_analysis_and_drives_its_layers(explorer):
    viewer, widget, analysis = explorer
    key = widget.analysis_key.value
    assert key is not None and widget.analysis is analysis
    assert list(widget.layer.choices) == [None, "pool2", "fc1"] or list(widget.layer.choices) == ["pool2", "fc1"]
    assert widget.layer.value == "fc1"  # show_analysis's default: the last layer
    graph = analysis["fc1"].mapper
    assert f"fc1: {len(graph.node_ids)} nodes" in widget.summary.value
    assert "purity" in widget.summary.value and "PH dim" in widget.summary.value

    # colour by
    nodes = nodes_layer(viewer, key)
    before = np.array(nodes.face_color)

    widget.color_by.value = "purity"
    nodes = nodes_layer(viewer, key)
    expected = node_colors(graph, "purity", analysis.class_names)[nodes.features["node"].to_numpy()]
    np.testing.assert_allclose(nodes.face_color, expected, atol=1e-6)
    assert not np.allclose(nodes.face_color, before)

    weights = np.asarray(graph.edge_weight)
    assert len(edges_layer(viewer, key).data) == len(weights)
    threshold = float(np.round(np.median(weights), 2))
    widget.edge_threshold.value = threshold
    edges = edges_layer(viewer, key)
    assert len(edges.data) == int((weights >= threshold).sum()) < len(weights)
    assert (edges.features["jaccard"] >= threshold).all()
    assert f"{int((weights >= threshold).sum())} of {len(weights)} edges shown" in widget.summary.value
    widget.edge_threshold.value = 0.0
    assert len(edges_layer(viewer, key).data) == len(weights)

    # class search
    nodes = nodes_layer(viewer, key)
    dominant = nodes.features["dominant_class"].astype(str).to_numpy()
    target = str(dominant[np.argmax(nodes.features["size"].to_numpy())])

    widget.class_search.value = target
    alpha = np.array(nodes.face_color)[:, 3]
    assert np.all(alpha[dominant == target] == 1.0) and np.all(alpha[dominant != target] < 0.5)
    assert (dominant != target).any()
    assert f"Class {target!r}: {(dominant == target).sum()} of {len(dominant)} nodes kept" in widget.status.value

    widget.color_by.value = "mean_lens"  # recolouring keeps the search applied
    alpha = np.array(nodes_layer(viewer, key).face_color)[:, 3]
    assert np.all(alpha[dominant != target] < 0.5)

    widget.class_search.value = "no such class"
    assert "no class matches" in widget.status.value
    assert np.all(np.array(nodes_layer(viewer, key).face_color)[:, 3] == 1.0)
    widget.class_search.value = ""
    assert np.all(np.array(nodes_layer(viewer, key).face_color)[:, 3] == 1.0)


def test_switching_the_network_layer_keeps_the_settings(explorer):
    viewer, widget, analysis = explorer
    key = widget.analysis_key.value
    widget.color_by.value = "community"
    widget.edge_threshold.value = 0.2
    widget.class_search.value = "7"
    widget.layer.value = "pool2"

    nodes = nodes_layer(viewer, key)
    assert nodes.metadata["topolens"]["layer"] == "pool2"
    graph = analysis["pool2"].mapper
    assert len(nodes.features) == len(graph.node_ids)
    assert nodes.metadata["topolens"]["color_by"] == "community"
    weights = np.asarray(graph.edge_weight)
    assert len(edges_layer(viewer, key).data) == int((weights >= 0.2).sum())
    dominant = nodes.features["dominant_class"].astype(str).to_numpy()
    alpha = np.array(nodes.face_color)[:, 3]
    assert np.all(alpha[dominant != "7"] < 0.5) and np.all(alpha[dominant == "7"] == 1.0)
    assert widget.summary.value.startswith("pool2:")

    # a second analysis of the same sample gets its own key and becomes the chosen one
    first = key
    from napari_topolens.topology.analysis import Analysis

    other = Analysis(analysis.layer_results[:1], {k: v[:1, :1] for k, v in analysis.layer_distances.items()},
                     analysis.config, {"sample": "digits"}, analysis.labels, analysis.class_names)
    show_analysis(viewer, other, image_layer=viewer.layers["digits images"])
    keys = [k for k in widget.analysis_key.choices if k is not None]
    assert len(keys) == 2 and widget.analysis_key.value != first
    assert widget.analysis is other and widget.layer.value == "pool2"
    widget.analysis_key.value = first
    assert widget.analysis is analysis and widget.layer.value == "pool2"
    assert widget.color_by.value == "community" and widget.edge_threshold.value == pytest.approx(0.2)
    assert widget.class_search.value == "7"  # the controls show that analysis's state


def test_resolve_class():
    names = ["disk", "ring", "two disks", "cross"]
    assert resolve_class("", names) is None
    assert resolve_class("Ring", names) == "ring"
    assert resolve_class("cr", names) == "cross"
    assert resolve_class("two", names) == "two disks"
    with pytest.raises(ValueError, match="several classes"):
        resolve_class("d", ["disk", "dot"])
    with pytest.raises(ValueError, match="no class matches"):
        resolve_class("square", names)
    with pytest.raises(ValueError, match="no class labels"):
        resolve_class("x", None)
