"""Foreground sampling: the top-norm position whose receptive-field centre lies in the mask."""

from __future__ import annotations

import numpy as np
import pytest

import napari_topolens as tl
from napari_topolens.errors import EmptySelectionError, ImageError, TopoLensError


@pytest.fixture(scope="module")
def shapes():
    sample = tl.load_sample("shapes")
    index = sample.test_index[:40]
    return sample.model, sample.images[index]


def _centres(cloud):
    rf = cloud.receptive_field
    return (rf[:, 0] + rf[:, 2] - 1) // 2, (rf[:, 1] + rf[:, 3] - 1) // 2


def test_foreground_points_lie_in_the_mask_and_are_the_top_norm_there(shapes):
    model, images = shapes
    mask = np.zeros(images.shape, dtype=bool)
    mask[:, 30:46, 4:20] = True  # bottom-left corner, away from most shapes' brightest part
    clouds = tl.extract_activations(
        model, images, ["pool1", "pool2", "fc1"], sampling="foreground", mask=mask
    )
    everything = tl.extract_activations(model, images, ["pool1", "pool2"], sampling="all_positions")
    for name in ("pool1", "pool2"):
        cloud = clouds[name]
        assert cloud.sampling == "foreground" and cloud.is_spatial
        assert len(cloud) == len(images)
        cy, cx = _centres(cloud)
        assert mask[cloud.image_index, cy, cx].all()
        # the largest norm among all positions whose centre is in the mask
        full = everything[name]
        fy, fx = _centres(full)
        inside = mask[full.image_index, fy, fx]
        norms = np.linalg.norm(full.points, axis=1)
        for row, image in enumerate(cloud.image_index):
            candidates = inside & (full.image_index == image)
            assert np.isclose(np.linalg.norm(cloud.points[row]), norms[candidates].max(), rtol=1e-5)
    top = tl.extract_activations(model, images, ["pool2"], sampling="top_norm")["pool2"]
    assert not np.array_equal(top.position, clouds["pool2"].position)
    assert clouds["fc1"].sampling == "pooled"  # a vector layer has one point per image anyway


def test_a_layer_without_a_centre_in_a_tiny_mask_skips_the_image_and_says_so(shapes):
    model, images = shapes
    mask = np.zeros(images.shape[1:], dtype=bool)
    mask[0, 0] = (
        True  # the centre of pool1's corner position (rows -1..2 of the input); not of pool3's
    )
    clouds = tl.extract_activations(
        model, images[:5], ["pool1", "pool3"], sampling="foreground", mask=mask
    )
    assert len(clouds["pool1"]) == 5 and len(clouds["pool1"].meta["foreground_skipped"]) == 0
    assert len(clouds["pool3"]) == 0
    np.testing.assert_array_equal(clouds["pool3"].meta["foreground_skipped"], np.arange(5))
    assert "no receptive-field centre" in clouds["pool3"].meta["foreground_note"]


def test_mask_errors(shapes):
    model, images = shapes
    good = np.ones(images.shape, dtype=bool)
    with pytest.raises(EmptySelectionError, match="needs a mask"):
        tl.extract_activations(model, images, ["pool1"], sampling="foreground")
    with pytest.raises(TopoLensError, match="sampling='foreground'"):
        tl.extract_activations(model, images, ["pool1"], sampling="top_norm", mask=good)
    with pytest.raises(ImageError, match="shape"):
        tl.extract_activations(model, images, ["pool1"], sampling="foreground", mask=good[:, :10])
    empty = good.copy()
    empty[3] = False
    with pytest.raises(EmptySelectionError, match="empty for 1 image.*index 3"):
        tl.extract_activations(model, images, ["pool1"], sampling="foreground", mask=empty)
    assert "foreground" in tl.SAMPLING_MODES


def test_foreground_uses_the_true_centre_when_the_receptive_field_outgrows_the_image():
    """At a deep layer every probed box is the whole image; the centres still follow the grid."""
    import torch
    from torch import nn

    from napari_topolens.activations.extract import receptive_field_centres
    from napari_topolens.activations.receptive_field import layer_geometry, receptive_fields

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(6):
        layers += [nn.Conv2d(1 if i == 0 else 4, 4, 3, padding=1), nn.ReLU()]
        if i in (1, 3):
            layers.append(nn.MaxPool2d(2))
    model = nn.Sequential(*layers).eval()
    images = np.random.default_rng(0).random((10, 16, 16)).astype(np.float32)
    modules = {"13": model[13], "4": model[4]}
    where = {"dtype": torch.float32, "device": torch.device("cpu")}
    geometry = layer_geometry(model, modules, (1, 16, 16), **where)
    wanted = {name: np.arange(geometry[name].n_positions) for name in modules}
    boxes = {
        name: fields.boxes
        for name, fields in receptive_fields(model, modules, wanted, (1, 16, 16), **where).items()
    }
    assert np.all(boxes["13"] == (0, 0, 16, 16))  # receptive field > image
    cy, cx = receptive_field_centres(geometry["13"], boxes["13"], 16, 16)
    for centres in (cy, cx):  # a 4 x 4 grid, cells of 4 pixels
        np.testing.assert_array_equal(np.unique(centres), [1, 5, 9, 13])
    # where the boxes are not clipped, the centre is the box's own
    inner = (boxes["4"][:, :2] > 0).all(axis=1) & (boxes["4"][:, 2:] < 16).all(axis=1)
    cy4, cx4 = receptive_field_centres(geometry["4"], boxes["4"], 16, 16)
    b = boxes["4"][inner]
    np.testing.assert_array_equal(cy4[inner], (b[:, 0] + b[:, 2] - 1) // 2)
    np.testing.assert_array_equal(cx4[inner], (b[:, 1] + b[:, 3] - 1) // 2)
    left = np.zeros((10, 16, 16), dtype=bool)
    left[:, :, :6] = True  # the left strip: grid columns 0 and 1
    cloud = tl.extract_activations(model, images, ["13"], sampling="foreground", mask=left)["13"]
    assert len(cloud) == 10 and set(cloud.position[:, 1].tolist()) <= {0, 1}
    anywhere = tl.extract_activations(model, images, ["13"], sampling="top_norm")["13"]
    assert not np.array_equal(cloud.position, anywhere.position)
