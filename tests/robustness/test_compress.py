"""Compression: exact global sparsity, the original untouched, hooks and layer names kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import napari_topolens as tl
from napari_topolens.errors import ModelError, TopoLensError
from napari_topolens.robustness.compression import compress, prunable_weights, sparsity


@pytest.fixture(scope="module")
def shapes():
    return tl.load_sample("shapes")


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_pruning_reaches_the_asked_sparsity_and_leaves_the_original(shapes, fraction):
    before = {k: v.clone() for k, v in shapes.model.state_dict().items()}
    pruned = compress(shapes.model, prune=fraction)
    total = sum(w.numel() for _, w in prunable_weights(pruned))
    assert sparsity(pruned) == pytest.approx(round(fraction * total) / total, abs=0)
    assert all(torch.equal(before[k], v) for k, v in shapes.model.state_dict().items())
    assert sparsity(shapes.model) == 0.0
    # the largest weights survive: every kept magnitude >= every dropped one
    original = np.concatenate(
        [w.detach().abs().numpy().ravel() for _, w in prunable_weights(shapes.model)]
    )
    kept = np.concatenate([w.detach().numpy().ravel() for _, w in prunable_weights(pruned)]) != 0
    if 0 < fraction < 1:
        assert original[kept].min() >= original[~kept].max()
    # biases and normalisation are not pruned
    assert torch.equal(pruned.fc1.bias, shapes.model.fc1.bias)
    assert torch.equal(pruned.bn1.weight, shapes.model.bn1.weight)


def test_int8_keeps_names_hooks_and_accuracy(shapes):
    before = {k: v.clone() for k, v in shapes.model.state_dict().items()}
    quantised = compress(shapes.model, prune=0.5, quantize="int8")
    assert type(shapes.model.fc1) is nn.Linear  # the original is untouched
    assert type(quantised.fc1) is not nn.Linear
    assert all(torch.equal(before[k], v) for k, v in shapes.model.state_dict().items())
    assert tl.list_layers(quantised) == tl.list_layers(shapes.model)
    index = shapes.test_index[:120]
    images, labels = shapes.images[index], shapes.labels[index]
    clouds = tl.extract_activations(quantised, images, ["pool2", "fc1"], sampling="top_norm")
    assert clouds["fc1"].points.shape == (120, 64) and clouds["pool2"].is_spatial
    accuracy = np.mean(tl.predict_proba(quantised, images).argmax(1) == labels)
    assert accuracy > 0.9


def test_compress_refuses_what_it_cannot_do(shapes):
    with pytest.raises(TopoLensError, match="prune=fraction"):
        compress(shapes.model)
    with pytest.raises(TopoLensError, match="between 0 and 1"):
        compress(shapes.model, prune=1.5)
    with pytest.raises(TopoLensError, match="unknown quantisation"):
        compress(shapes.model, quantize="int4")
    convs_only = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(ModelError, match="no nn.Linear"):
        compress(convs_only, quantize="int8")
    with pytest.raises(ModelError, match="no convolution or linear"):
        compress(nn.Sequential(nn.ReLU()), prune=0.5)


def test_int8_without_a_quantised_engine_is_one_clear_error(shapes, monkeypatch):
    from napari_topolens.robustness import compression as compress_module

    monkeypatch.setattr(compress_module, "quantized_engines", lambda: [])
    with pytest.raises(ModelError, match="not supported on this platform"):
        compress(shapes.model, quantize="int8")
