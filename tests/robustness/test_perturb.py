"""Perturbations: seeded, index-aligned, same shape/dtype/range; FGSM hurts the sample models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_topolens as tl
from napari_topolens.errors import ImageError, ModelError, TopoLensError
from napari_topolens.robustness.perturbations import PERTURBATIONS, perturb

NOISE_KINDS = [k for k in PERTURBATIONS if k != "fgsm"]
STRENGTH = {"blur": 1.5, "occlusion": 0.25, "salt_pepper": 0.1}


def _stacks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    gray = rng.random((6, 12, 10)).astype(np.float32)
    return {
        "float32 (N,H,W)": gray,
        "float64 (N,H,W) in [-2, 5]": (gray.astype(np.float64) * 7 - 2),
        "uint8 (N,H,W)": (gray * 255).astype(np.uint8),
        "uint8 RGB (N,H,W,3)": (rng.random((6, 12, 10, 3)) * 200).astype(np.uint8),
        "float32 RGB (N,3,H,W)": rng.random((6, 3, 12, 10)).astype(np.float32),
        "uint16 (N,H,W,1)": (gray[..., None] * 4000).astype(np.uint16),
    }


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("stack_name", list(_stacks()))
def test_each_kind_is_seeded_and_keeps_shape_dtype_and_range(kind, stack_name):
    images = _stacks()[stack_name]
    strength = STRENGTH.get(kind, 0.2)
    first = perturb(images, kind, strength, seed=7)
    again = perturb(images, kind, strength, seed=7)
    other = perturb(images, kind, strength, seed=8)
    assert first.shape == images.shape and first.dtype == images.dtype
    assert np.array_equal(first, again)
    assert first.min() >= images.min() and first.max() <= images.max()
    assert not np.array_equal(first, images), "a non-zero strength changed nothing"
    if kind != "blur":  # blur is not random
        assert not np.array_equal(first, other)
    np.testing.assert_array_equal(perturb(images, kind, 0.0, seed=7), images)


def test_poisson_at_a_tiny_strength_is_tiny_noise_not_a_crash():
    images = _stacks()["float64 (N,H,W) in [-2, 5]"]
    for strength in (1e-10, 1e-5):
        noisy = perturb(images, "poisson", strength, seed=1)
        change = np.abs(noisy - images)
        assert 0 < change.max() < 10 * strength * 7  # range 7: std <= strength * range


def test_perturbation_is_index_aligned():
    images = _stacks()["float32 (N,H,W)"]
    whole = perturb(images, "blur", 1.0)
    for i in (0, 3, 5):
        np.testing.assert_allclose(whole[i], perturb(images[i : i + 1], "blur", 1.0)[0])


def test_noise_grows_with_strength_and_rgb_layouts_agree():
    images = _stacks()["uint8 RGB (N,H,W,3)"]
    changes = [
        np.abs(perturb(images, "gaussian", s).astype(float) - images).mean()
        for s in (0.02, 0.1, 0.3)
    ]
    assert changes[0] < changes[1] < changes[2]
    channels_first = np.moveaxis(images, -1, 1)
    np.testing.assert_array_equal(
        np.moveaxis(perturb(channels_first, "salt_pepper", 0.2), 1, -1),
        perturb(images, "salt_pepper", 0.2),
    )


def test_salt_pepper_hits_the_asked_fraction_of_pixels():
    images = np.full((20, 32, 32), 0.5, dtype=np.float32)
    noisy = perturb(
        np.concatenate(
            [images, np.zeros((1, 32, 32), np.float32), np.ones((1, 32, 32), np.float32)]
        ),
        "salt_pepper",
        0.2,
    )[:20]
    assert abs(np.mean(noisy != 0.5) - 0.2) < 0.02


def test_occlusion_greys_the_mask_or_a_patch_of_the_asked_area():
    images = np.zeros((3, 10, 10), dtype=np.float32)
    images[:, 0, 0] = 1.0  # value range [0, 1], mean 0.01
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 3:7] = True
    covered = perturb(images, "occlusion", 1.0, mask=mask)
    changed = covered != images
    assert changed.any(axis=0)[mask].all() and not changed[:, ~mask].any()
    patch = perturb(images, "occlusion", 0.25)
    assert all(np.sum(patch[i] != images[i]) in (25, 24) for i in range(3))


def test_occlusion_greys_every_image_alike_however_the_stack_is_chunked(monkeypatch):
    from napari_topolens.robustness import perturbations

    images = np.zeros((4, 10, 10))
    images[2:] = 1.0  # stack mean 0.5
    monkeypatch.setattr(perturbations, "_CHUNK_VALUES", 100)  # one image per chunk
    for mask in (None, np.ones((10, 10), bool)):
        covered = perturb(images, "occlusion", 0.25 if mask is None else 1.0, mask=mask)
        changed = covered != images
        assert all(changed[i].any() for i in range(4))
        np.testing.assert_array_equal(np.unique(covered[changed]), [0.5])


def test_bad_input_is_refused_clearly():
    images = _stacks()["float32 (N,H,W)"]
    with pytest.raises(TopoLensError, match="unknown perturbation"):
        perturb(images, "jpeg", 0.1)
    with pytest.raises(TopoLensError, match=r"within 0\.\.10"):
        perturb(images, "gaussian", -1)
    with pytest.raises(TopoLensError, match=r"within 0\.\.1 "):
        perturb(images, "salt_pepper", 1.5)
    with pytest.raises(ModelError, match="model="):
        perturb(images, "fgsm", 0.1)
    with pytest.raises(TopoLensError, match="occlusion only"):
        perturb(images, "gaussian", 0.1, mask=np.ones((12, 10), bool))
    with pytest.raises(ImageError, match="mask"):
        perturb(images, "occlusion", 0.5, mask=np.ones((5, 5), bool))
    bad = images.copy()
    bad[2, 1, 1] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        perturb(bad, "gaussian", 0.1)
    with pytest.raises(ImageError):
        perturb(images[0], "gaussian", 0.1)  # one image, not a stack


@pytest.mark.parametrize("name", ["digits", "shapes"])
def test_fgsm_at_small_epsilon_lowers_the_sample_models_accuracy(name):
    sample = tl.load_sample(name)
    index = sample.test_index
    images, labels = sample.images[index], sample.labels[index]
    before = {k: v.clone() for k, v in sample.model.state_dict().items()}
    clean = np.mean(tl.predict_proba(sample.model, images).argmax(1) == labels)
    attacked = perturb(images, "fgsm", 0.03, model=sample.model, labels=labels)
    assert attacked.shape == images.shape and attacked.dtype == images.dtype
    assert attacked.min() >= images.min() and attacked.max() <= images.max()
    assert np.abs(attacked - images).max() <= 0.03 * (images.max() - images.min()) + 1e-6
    accuracy = np.mean(tl.predict_proba(sample.model, attacked).argmax(1) == labels)
    assert accuracy < clean - 0.01, (clean, accuracy)
    # against the model's own predictions (no labels) it also hurts, and is deterministic
    own = perturb(images, "fgsm", 0.03, model=sample.model)
    np.testing.assert_array_equal(own, perturb(images, "fgsm", 0.03, model=sample.model))
    assert np.mean(tl.predict_proba(sample.model, own).argmax(1) == labels) < clean
    assert all(torch.equal(before[k], v) for k, v in sample.model.state_dict().items())


def test_fgsm_works_inside_a_callers_no_grad_or_inference_mode_and_leaves_the_model_be():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Dropout(0.5),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 3),
    ).train()
    images = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32)
    running_mean = model[1].running_mean.clone()
    plain = perturb(images, "fgsm", 0.05, model=model)
    assert not np.array_equal(plain, images)
    with torch.no_grad():
        np.testing.assert_array_equal(perturb(images, "fgsm", 0.05, model=model), plain)
    with torch.inference_mode():
        np.testing.assert_array_equal(perturb(images, "fgsm", 0.05, model=model), plain)
    assert model.training and model[2].training  # the caller's mode is restored
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind
    assert torch.equal(model[1].running_mean, running_mean)  # eval mode: stats untouched


def test_fgsm_refuses_a_model_without_gradients():
    sample = tl.load_sample("digits")
    quantised = tl.compress(sample.model, quantize="int8")
    with pytest.raises(ModelError, match="gradients"):
        perturb(sample.images[:8], "fgsm", 0.05, model=quantised)


@pytest.mark.parametrize("channels_last", [True, False])
def test_fgsm_on_colour_images_keeps_their_layout(channels_last):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()
    rng = np.random.default_rng(0)
    images = (rng.random((5, 10, 12, 3)) * 255).astype(np.uint8)
    if not channels_last:
        images = np.ascontiguousarray(np.moveaxis(images, -1, 1))
    attacked = perturb(images, "fgsm", 0.02, model=model)
    assert attacked.shape == images.shape and attacked.dtype == np.uint8
    step = np.abs(attacked.astype(int) - images.astype(int))
    assert step.max() <= round(0.02 * (int(images.max()) - int(images.min()))) + 1
    assert step.any()
    # the step follows the gradient of the model's own input, channel by channel
    x = torch.from_numpy(
        (np.moveaxis(images, -1, 1) if channels_last else images).astype(np.float32)
    ).requires_grad_(True)
    logits = model(x)
    torch.nn.functional.cross_entropy(logits, logits.argmax(1), reduction="sum").backward()
    sign = np.sign(x.grad.numpy())
    if channels_last:
        sign = np.moveaxis(sign, 1, -1)
    moved = step > 0
    direction = np.sign(attacked.astype(int) - images.astype(int))
    assert np.all(direction[moved] == sign[moved])
