"""The activation cache: reuse across analyses, keys, and untrusted cache folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from napari_topolens import extract_activations
from napari_topolens.activations.cache import ActivationCache, CacheError, model_fingerprint

pytest.importorskip("zarr")

LAYERS = ["1", "4"]


def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


class ForwardCounter:
    """Counts the model's forward passes and the images they carried."""

    def __init__(self, model: nn.Module):
        self.calls = 0
        self.images = 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, _module, inputs) -> None:
        self.calls += 1
        self.images += int(inputs[0].shape[0])


def stack(n: int = 120, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 10, 10), dtype=np.float32)


def assert_same_clouds(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        for field in ("points", "image_index", "receptive_field"):
            np.testing.assert_array_equal(getattr(a[name], field), getattr(b[name], field))
        if a[name].position is None:
            assert b[name].position is None
        else:
            np.testing.assert_array_equal(a[name].position, b[name].position)
        assert a[name].grid_shape == b[name].grid_shape
        assert a[name].sampling == b[name].sampling


def test_second_extraction_reads_the_cache_without_running_the_batches(tmp_path: Path) -> None:
    model, images = small_cnn(), stack()
    counter = ForwardCounter(model)
    kw = dict(sampling="all_positions", max_points=2000, batch_size=16, cache_dir=tmp_path)
    first = extract_activations(model, images, LAYERS, **kw)
    first_images = counter.images
    assert first_images >= len(images)  # every image went through the model
    counter.images = 0
    second = extract_activations(model, images, LAYERS, **kw)
    # one image each for the channel check, the call count and the forward order
    assert counter.images <= 3
    assert_same_clouds(first, second)
    assert_same_clouds(
        first, extract_activations(model, images, LAYERS, **{**kw, "cache_dir": None})
    )
    assert all(c.meta["activation_cache"].startswith("read from") for c in second.values())
    assert all(c.meta["activation_cache"].startswith("written to") for c in first.values())


def test_a_partial_hit_extracts_only_the_missing_layer_in_forward_order(tmp_path: Path) -> None:
    model, images = small_cnn(), stack()
    extract_activations(model, images, ["4"], sampling="top_norm", cache_dir=tmp_path)
    both = extract_activations(model, images, ["4", "1"], sampling="top_norm", cache_dir=tmp_path)
    assert list(both) == ["1", "4"]
    assert both["4"].meta["activation_cache"].startswith("read from")
    assert both["1"].meta["activation_cache"].startswith("written to")
    assert_same_clouds(both, extract_activations(model, images, ["1", "4"], sampling="top_norm"))


@pytest.mark.parametrize(
    "change",
    ["seed", "sampling", "max_points", "one pixel", "weights", "fewer images"],
)
def test_anything_the_clouds_depend_on_changes_the_key(tmp_path: Path, change: str) -> None:
    model, images = small_cnn(), stack()
    kw = dict(sampling="random_position", max_points=50, seed=0)
    extract_activations(model, images, ["1"], cache_dir=tmp_path, **kw)
    if change == "seed":
        kw["seed"] = 1
    elif change == "sampling":
        kw["sampling"] = "top_norm"
    elif change == "max_points":
        kw["max_points"] = 60
    elif change == "one pixel":
        images = images.copy()
        images[77, 3, 3] += 0.5
    elif change == "weights":
        model = small_cnn(seed=5)
    else:
        images = images[:-1]
    again = extract_activations(model, images, ["1"], cache_dir=tmp_path, **kw)
    assert again["1"].meta["activation_cache"].startswith("written to")
    assert_same_clouds(again, extract_activations(model, images, ["1"], **kw))


def test_model_fingerprint_sees_every_weight_bit() -> None:
    model = small_cnn()
    before = model_fingerprint(model)
    assert model_fingerprint(small_cnn()) == before
    with torch.no_grad():
        model[7].bias[0] = torch.nextafter(model[7].bias[0], torch.tensor(1.0))
    assert model_fingerprint(model) != before


def _only_entry(cache_dir: Path) -> Path:
    (entry,) = [p for p in (cache_dir / "activations-v1").iterdir() if not p.name.startswith(".")]
    return entry


@pytest.mark.parametrize("damage", ["link", "checksum", "declared shape", "index", "garbage"])
def test_a_damaged_or_hostile_entry_is_ignored_and_recomputed(tmp_path: Path, damage: str) -> None:
    model, images = small_cnn(), stack()
    want = extract_activations(model, images, ["4"], sampling="top_norm", cache_dir=tmp_path)
    entry = _only_entry(tmp_path)
    meta_file = entry / "zarr.json"
    meta = json.loads(meta_file.read_text())
    if damage == "link":
        outside = tmp_path / "outside"
        outside.write_text("secret")
        (entry / "points" / "extra").symlink_to(outside)
    elif damage == "checksum":
        meta["attributes"]["points_sha256"] = "0" * 64
        meta_file.write_text(json.dumps(meta))
    elif damage == "declared shape":
        meta["attributes"]["n_points"] = 10**12
        meta_file.write_text(json.dumps(meta))
    elif damage == "index":
        zarr = pytest.importorskip("zarr")
        group = zarr.open_group(str(entry), mode="r+")
        group["image_index"][0] = 10**9
    else:
        meta_file.write_text("{not json")
    counter = ForwardCounter(model)
    again = extract_activations(model, images, ["4"], sampling="top_norm", cache_dir=tmp_path)
    assert counter.images >= len(images)  # recomputed, not read
    assert_same_clouds(want, again)


def test_cache_folder_that_is_a_file_or_a_link_is_refused(tmp_path: Path) -> None:
    model, images = small_cnn(), stack(20)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="is a file"):
        extract_activations(model, images, ["1"], cache_dir=blocker)
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(CacheError, match="is a link"):
        ActivationCache(link)
    assert not any(real.iterdir())


def test_keys_are_names_inside_the_cache(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path)
    with pytest.raises(CacheError):
        cache.load("../" * 10 + "etc", n_images=1, image_shape=(1, 1))
    assert cache.load("a" * 64, n_images=1, image_shape=(1, 1)) is None


def test_report_command_reads_a_zarr_store_and_reuses_the_cache(tmp_path: Path, capsys) -> None:
    import zarr

    from napari_topolens import cli, load_sample
    from napari_topolens.topology.store import load_analysis

    sample = load_sample("shapes")
    images, labels = sample.images[:100], sample.labels[:100]
    store = tmp_path / "shapes.zarr"
    group = zarr.open_group(str(store), mode="w")
    group.create_array("images", shape=images.shape, dtype=images.dtype, chunks=(32, 48, 48))
    group["images"][...] = images
    group.create_array("labels", shape=labels.shape, dtype=labels.dtype)
    group["labels"][...] = labels
    weights = Path(__file__).resolve().parents[1] / "sample_data" / "shapes_cnn.pt"
    common = [
        "report",
        "--model",
        "napari_topolens.sample_models:shapes_cnn",
        "--weights",
        str(weights),
        "--images",
        str(store),
        "--layers",
        "pool2,fc1",
        "--sampling",
        "top_norm",
        "--cache",
        str(tmp_path / "cache"),
        "--quiet",
        "--h1-max-points",
        "60",
    ]
    assert cli.main([*common, "--out", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    assert cli.main([*common, "--lens", "pca1", "--out", str(tmp_path / "b")]) == 0
    first = load_analysis(tmp_path / "a" / "analysis")
    second = load_analysis(tmp_path / "b" / "analysis")
    np.testing.assert_array_equal(first.labels, labels)
    np.testing.assert_array_equal(first.images, images)
    for name in ("pool2", "fc1"):
        assert first[name].cloud.meta["activation_cache"].startswith("written to")
        assert second[name].cloud.meta["activation_cache"].startswith("read from")
        np.testing.assert_array_equal(first[name].cloud.points, second[name].cloud.points)
    assert second.config.mapper_lens == "pca1"
    assert second.provenance["activation_cache"] == str(tmp_path / "cache")
