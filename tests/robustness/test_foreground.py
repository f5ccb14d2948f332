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
    mask[1, 1] = True  # the centre of pool1's corner position (its box is clipped); not of pool3's
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
