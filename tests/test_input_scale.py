"""Input scaling: how stored pixels reach the model, in the API, the CLI and the variants."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from napari_topolens import cli, extract_activations, predict_proba
from napari_topolens.activations.extract import input_scale_warning
from napari_topolens.activations.input_scale import InputScale, as_input_scale
from napari_topolens.errors import ImageError, TopoLensError
from napari_topolens.samples import load_sample
from napari_topolens.topology.store import load_analysis

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
FAST = ["--h1-max-points", "80", "--quiet"]


@pytest.fixture(scope="module")
def digit_photos() -> tuple[np.ndarray, np.ndarray, float]:
    """120 digits as uint8 photos (0..255), their labels, and the digits model's own
    accuracy on them as it was trained to see them: float pixels in [0, 1]."""
    sample = load_sample("digits")
    photos = np.rint(sample.images[:120] * 255).astype(np.uint8)
    labels = sample.labels[:120]
    with torch.no_grad():
        logits = sample.model(torch.from_numpy(photos[:, None].astype(np.float32) / 255))
    own = float(np.mean(logits.argmax(1).numpy() == labels))
    return photos, labels, own


def _accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predicted == labels))


def test_uint8_photos_reach_a_model_trained_on_unit_range_as_it_saw_them(digit_photos) -> None:
    photos, labels, own = digit_photos
    model = load_sample("digits").model
    assert own > 0.9  # the model knows these digits when it sees them as trained
    recorded = _accuracy(predict_proba(model, photos).argmax(1), labels)
    assert recorded == own
    # what happened before: 0..255 straight into the network
    raw = _accuracy(predict_proba(model, photos, input_scale="as-stored").argmax(1), labels)
    assert raw < own - 0.1  # (batch norm makes the digits net fairly scale-tolerant)
    warning = input_scale_warning(photos, "as-stored")
    assert warning is not None and "[0, 1] from dtype" in warning
    assert input_scale_warning(photos) is None
    # the activations are those of the [0, 1] images, and say how they were made
    cloud = extract_activations(model, photos, ["fc1"])["fc1"]
    float_cloud = extract_activations(model, photos.astype(np.float32) / 255, ["fc1"])["fc1"]
    np.testing.assert_array_equal(cloud.points, float_cloud.points)
    assert cloud.meta["input_scale"] == "dtype"
    assert cloud.meta["input_scale_text"] == "[0, 1] from dtype (uint8 / 255)"


def test_cli_records_the_models_own_accuracy_for_uint8_pngs(
    digit_photos, tmp_path: Path, capsys
) -> None:
    from PIL import Image

    photos, labels, _ = digit_photos
    photos, labels = photos[:48], labels[:48]  # a short run: the accuracy is what is checked
    model = load_sample("digits").model
    with torch.no_grad():
        logits = model(torch.from_numpy(photos[:, None].astype(np.float32) / 255))
    own = _accuracy(logits.argmax(1).numpy(), labels)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, photo in enumerate(photos):
        Image.fromarray(photo).save(folder / f"digit{i:03d}.png")
    (tmp_path / "labels.txt").write_text("\n".join(str(int(v)) for v in labels))
    common = [
        "report",
        "--model",
        "napari_topolens.sample_models:digits_cnn",
        "--weights",
        str(SAMPLE_DATA / "digits_cnn.pt"),
        "--images",
        str(folder),
        "--labels",
        str(tmp_path / "labels.txt"),
        "--layers",
        "fc1",
        *FAST,
    ]
    assert cli.main([*common, "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert "warning" not in capsys.readouterr().err
    analysis = load_analysis(tmp_path / "out" / "analysis")
    assert analysis.predictions is not None
    assert _accuracy(analysis.predictions, labels) == own
    assert analysis.provenance["input_scale"] == "[0, 1] from dtype (uint8 / 255)"
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    shown = re.search(r"model accuracy ([0-9.]+) %", page)
    assert shown is not None and float(shown.group(1)) == round(100 * own, 1)
    assert "model input: [0, 1] from dtype (uint8 / 255)" in page

    # as stored, the same files reach the model as 0..255: the warning comes before any work
    # (this run stops right after it, at a --mask that foreground sampling alone uses)
    code = cli.main(
        [*common, "--out", str(tmp_path / "raw"), "--input-scale", "as-stored", "--mask", "m.npy"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--mask is used by --sampling foreground" in err
    assert "warning: input scale as stored" in err and "outside [-3, 3]" in err


def test_cli_refuses_a_bad_input_scale_with_its_choices(tmp_path: Path, capsys) -> None:
    code = cli.main(
        ["report", "--sample", "digits", "--input-scale", "unit", "--out", str(tmp_path)]
    )
    assert code == 2  # argparse's usage error, returned as the exit code
    err = capsys.readouterr().err
    assert "argument --input-scale" in err and "custom:MEAN/STD" in err


def test_parse_describe_and_refusals() -> None:
    assert InputScale.parse("custom:0.5,0.4,0.3/0.2,0.2,0.1") == InputScale(
        "custom", (0.5, 0.4, 0.3), (0.2, 0.2, 0.1)
    )
    assert str(InputScale.parse(" As Stored ")) == "as-stored"
    assert as_input_scale(None) == InputScale("dtype")
    assert as_input_scale(InputScale("imagenet").to_dict()) == InputScale("imagenet")
    for bad in ("custom:0.5", "custom:a/b", "custom:0.5/0", "custom:1,2/3", "unit"):
        with pytest.raises(TopoLensError):
            InputScale.parse(bad)
    with pytest.raises(TopoLensError, match="takes no mean/std"):
        InputScale("dtype", (0.5,), (0.2,))


def test_each_scale_gives_the_values_the_model_sees() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten()).eval()
    seen: list[torch.Tensor] = []
    model[0].register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().clone()))

    def model_input(scale: str) -> np.ndarray:
        seen.clear()
        predict_proba(model, rgb, input_scale=scale)
        return seen[-1].numpy()

    channels_first = np.moveaxis(rgb, -1, 1).astype(np.float32)
    np.testing.assert_array_equal(model_input("as-stored"), channels_first)
    np.testing.assert_allclose(model_input("dtype"), channels_first / 255, rtol=1e-6)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    np.testing.assert_allclose(
        model_input("imagenet"), (channels_first / 255 - mean) / std, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        model_input("custom:0.5/0.25"), (channels_first / 255 - 0.5) / 0.25, rtol=1e-5, atol=1e-6
    )
    # uint16 by its own range; floats as they are
    wide = rgb.astype(np.uint16) * 257
    np.testing.assert_allclose(predict_proba(model, wide), predict_proba(model, rgb), atol=1e-6)
    seen.clear()
    predict_proba(model, rgb.astype(np.float32))
    np.testing.assert_array_equal(seen[-1].numpy(), channels_first)
    # ImageNet statistics are per RGB channel: grey images are refused with the way out
    grey_model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten()).eval()
    with pytest.raises(ImageError, match="RGB .*'\\[0, 1\\] from dtype'"):
        extract_activations(grey_model, rgb[..., 0], ["0"], input_scale="imagenet")


def test_the_warning_rule() -> None:
    rng = np.random.default_rng(1)
    photos = rng.integers(0, 256, (10, 8, 8), dtype=np.uint8)
    assert input_scale_warning(photos) is None
    assert "[0, 1] from dtype" in (input_scale_warning(photos, "as-stored") or "")
    # float images holding 0..255 are kept by "[0, 1] from dtype": the warning names the fix
    floats = photos.astype(np.float32)
    assert "custom mean/std 0/255" in (input_scale_warning(floats) or "")
    assert input_scale_warning(floats, "custom:0/255") is None
    # 12-bit data in uint16: a sliver of [0, 1]
    twelve_bit = rng.integers(0, 4096, (10, 8, 8)).astype(np.uint16)
    assert "12-bit" in (input_scale_warning(twelve_bit) or "")
    assert input_scale_warning(np.zeros((4, 8, 8), np.uint8)) is None  # blank is not a range


def test_scale_is_part_of_the_cache_key(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    model = load_sample("digits").model
    photos = np.rint(load_sample("digits").images[:40] * 255).astype(np.uint8)
    unit = extract_activations(model, photos, ["fc1"], cache_dir=tmp_path)["fc1"]
    raw = extract_activations(model, photos, ["fc1"], cache_dir=tmp_path, input_scale="as-stored")
    assert raw["fc1"].meta["activation_cache"].startswith("written to")
    assert not np.allclose(unit.points, raw["fc1"].points)
    again = extract_activations(model, photos, ["fc1"], cache_dir=tmp_path)["fc1"]
    assert again.meta["activation_cache"].startswith("read from")
    np.testing.assert_array_equal(again.points, unit.points)


def test_variants_perturb_float_pixels_and_sample_numbers_stay(tmp_path: Path) -> None:
    from napari_topolens.robustness.perturbations import perturb
    from napari_topolens.robustness.study import VariantSpec, variant_inputs

    sample = load_sample("digits")
    images = sample.images[:30]
    # a float [0, 1] sample: the same perturbed images as before the input scale existed
    for spec in ("gaussian:0.1", "fgsm:0.05"):
        variant = VariantSpec.parse(spec, seed=3)
        _, got = variant_inputs(variant, sample.model, images, labels=sample.labels[:30])
        assert variant.perturbation is not None and variant.strength is not None
        want = perturb(
            images,
            variant.perturbation,
            variant.strength,
            seed=3,
            model=sample.model if variant.perturbation == "fgsm" else None,
            labels=sample.labels[:30] if variant.perturbation == "fgsm" else None,
        )
        np.testing.assert_array_equal(got, want)
    # uint8 photos: perturbed as [0, 1] float pixels, never rounded back to 0..255
    photos = np.rint(images * 255).astype(np.uint8)
    fgsm = VariantSpec.parse("fgsm:0.001", seed=0)
    _, attacked = variant_inputs(fgsm, sample.model, photos, labels=sample.labels[:30])
    assert attacked.dtype == np.float32 and attacked.max() <= 1.0
    step = np.abs(attacked - photos / np.float32(255))
    assert np.isclose(step.max(), 0.001, rtol=1e-3)  # a step far below one grey level survives


def test_fgsm_differentiates_through_the_mean_std() -> None:
    from napari_topolens.robustness.study import VariantSpec, variant_inputs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    model.eval()
    photos = np.random.default_rng(0).integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1])
    spec = VariantSpec.parse("fgsm:0.01", seed=0)
    scale = "custom:0.2,0.5,0.8/0.1,0.3,0.05"
    _, attacked = variant_inputs(spec, model, photos, labels=labels, input_scale=scale)
    # the sign of the loss gradient with respect to the [0, 1] pixels, through the mean/std
    pixels = torch.from_numpy(np.moveaxis(photos, -1, 1).astype(np.float32) / 255)
    pixels.requires_grad_(True)
    mean = torch.tensor([0.2, 0.5, 0.8]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.1, 0.3, 0.05]).reshape(1, 3, 1, 1)
    loss = nn.functional.cross_entropy(
        model((pixels - mean) / std), torch.from_numpy(labels), reduction="sum"
    )
    (grad,) = torch.autograd.grad(loss, pixels)
    lo, hi = photos.min() / 255, photos.max() / 255
    step = 0.01 * (hi - lo)  # FGSM's epsilon is a fraction of the images' range
    want = np.clip(pixels.detach().numpy() + step * np.sign(grad.numpy()), lo, hi)
    np.testing.assert_allclose(np.moveaxis(attacked, -1, 1), want, atol=1e-6)


def test_receptive_fields_do_not_depend_on_the_scale() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).eval()
    photos = np.random.default_rng(0).integers(0, 256, (6, 12, 12), dtype=np.uint8)
    unit = extract_activations(model, photos, ["2"], sampling="all_positions")["2"]
    shifted = extract_activations(
        model, photos, ["2"], sampling="all_positions", input_scale="custom:0.5/0.1"
    )["2"]
    assert not np.allclose(unit.points, shifted.points)
    np.testing.assert_array_equal(unit.position, shifted.position)
    np.testing.assert_array_equal(unit.receptive_field, shifted.receptive_field)
    assert len(np.unique(unit.receptive_field, axis=0)) > 1  # local boxes, not the whole image
