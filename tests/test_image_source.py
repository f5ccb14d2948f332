"""Lazy inputs: dask and zarr arrays, folders and multiscale images are read batch by batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from napari_topolens import extract_activations, predict_proba
from napari_topolens.activations import image_source
from napari_topolens.activations.image_source import (
    ArraySource,
    FileFolderSource,
    MultiscaleImages,
    as_image_source,
    open_image_source,
)
from napari_topolens.errors import ImageError
from napari_topolens.image_files import read_images


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def fixed_size_net(size: int) -> nn.Sequential:
    """A net whose dense layer takes only ``size``x``size`` inputs."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * size * size, 3)
    ).eval()


class CountingArray:
    """An array-like that records every read (the rows each slice asked for)."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.reads: list[int] = []

    def __getitem__(self, key):
        rows = self.array[key]
        self.reads.append(len(rows) if np.ndim(rows) == self.ndim else 1)
        return rows


def images(n: int = 200, size: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size), dtype=np.float32)


@pytest.mark.parametrize("sampling", ["pooled", "top_norm", "all_positions"])
def test_dask_array_is_read_chunk_by_chunk_and_matches_numpy(sampling: str) -> None:
    da = pytest.importorskip("dask.array")
    stack = images(200)
    counting = CountingArray(stack)
    lazy = da.from_array(counting, chunks=(20, 12, 12), asarray=False)
    model = small_cnn()
    want = extract_activations(model, stack, ["1", "3"], sampling=sampling, max_points=300)
    got = extract_activations(
        model, lazy, ["1", "3"], sampling=sampling, max_points=300, batch_size=32
    )
    for name in want:
        np.testing.assert_array_equal(got[name].points, want[name].points)
        np.testing.assert_array_equal(got[name].image_index, want[name].image_index)
        np.testing.assert_array_equal(got[name].receptive_field, want[name].receptive_field)
    assert counting.reads, "the dask array was never read"
    assert max(counting.reads) <= 20  # one chunk at a time, never the whole stack
    # each batch of 32 touches at most 3 chunks; one extra read checks the first image
    n_batches = -(-200 // 32)
    assert sum(counting.reads) <= 20 * (3 * n_batches + 1)


def test_a_capped_selection_reads_only_the_chunks_it_needs() -> None:
    da = pytest.importorskip("dask.array")
    stack = images(400)
    counting = CountingArray(stack)
    lazy = da.from_array(counting, chunks=(10, 12, 12), asarray=False)
    clouds = extract_activations(small_cnn(), lazy, ["1"], sampling="top_norm", max_points=8)
    chosen = np.unique(clouds["1"].image_index)
    assert len(chosen) == 8
    chunks_needed = len(np.unique(chosen // 10))
    # the chunks of the chosen images, plus the first chunk once to check the channels
    assert sum(counting.reads) <= 10 * (chunks_needed + 1)  # not 400 rows


def test_zarr_store_on_disk_matches_numpy(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    stack = images(90, seed=3)
    store = tmp_path / "images.zarr"
    group = zarr.open_group(str(store), mode="w")
    group.create_array("images", shape=stack.shape, dtype=stack.dtype, chunks=(16, 12, 12))
    group["images"][...] = stack
    source = open_image_source(store)
    assert len(source) == 90 and source.sample_shape == (1, 12, 12)
    model = small_cnn()
    want = extract_activations(model, stack, ["3"], sampling="top_norm")
    got = extract_activations(model, source, ["3"], sampling="top_norm")
    np.testing.assert_array_equal(got["3"].points, want["3"].points)
    head = open_image_source(store, max_images=5)
    np.testing.assert_array_equal(head.to_stack(), stack[:5])
    np.testing.assert_allclose(predict_proba(model, source), predict_proba(model, stack))


def test_zarr_store_with_a_link_is_refused(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    store = tmp_path / "images.zarr"
    zarr.open_group(str(store), mode="w").create_array("images", shape=(4, 5, 5), dtype="f4")
    (tmp_path / "elsewhere").write_text("x")
    (store / "extra").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ImageError, match="link"):
        open_image_source(store)


def test_folder_source_opens_only_the_files_it_reads(tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    from napari_topolens import image_files

    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (9, 7), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    opened: list[str] = []
    real = image_files._read_pixel_file

    def counting(path: Path) -> np.ndarray:
        opened.append(path.name)
        return real(path)

    monkeypatch.setattr(image_files, "_read_pixel_file", counting)
    source = open_image_source(tmp_path)
    assert isinstance(source, FileFolderSource)
    assert opened == ["im0.png"] and len(source) == 12
    opened.clear()
    batch = source.read([10, 3])
    assert sorted(opened) == ["im10.png", "im3.png"]
    eager = read_images(tmp_path).images
    np.testing.assert_array_equal(batch[:, 0], eager[[10, 3]])
    np.testing.assert_array_equal(source.to_stack(), eager)
    assert source.names == read_images(tmp_path).names


def test_folder_with_a_file_of_another_size_names_it(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "b.png")
    source = open_image_source(tmp_path)
    with pytest.raises(ImageError, match=r"b\.png.*same size"):
        source.read([0, 1])


def test_multiscale_uses_the_finest_level_the_model_takes() -> None:
    fine, coarse = images(30, size=16), images(30, size=8)
    model = fixed_size_net(8)
    levels = MultiscaleImages([fine, coarse])
    clouds = extract_activations(model, levels, ["2"])
    want = extract_activations(model, coarse, ["2"])
    np.testing.assert_array_equal(clouds["2"].points, want["2"].points)
    assert clouds["2"].image_shape == (8, 8)
    taken = extract_activations(fixed_size_net(16), levels, ["2"])
    assert taken["2"].image_shape == (16, 16)
    with pytest.raises(ImageError, match="no level of the multiscale image fits"):
        extract_activations(fixed_size_net(5), levels, ["2"])


def test_nan_in_a_lazy_batch_is_named_by_its_index() -> None:
    da = pytest.importorskip("dask.array")
    stack = images(50)
    stack[37, 2, 2] = np.nan
    with pytest.raises(ImageError, match="index 37"):
        extract_activations(small_cnn(), da.from_array(stack, chunks=10), ["1"])


def test_sources_read_any_order_and_fingerprint_by_content() -> None:
    stack = images(40)
    source = as_image_source(stack)
    np.testing.assert_array_equal(source.read([5, 1, 5])[:, 0], stack[[5, 1, 5]])
    assert source.fingerprint() == ArraySource(stack.copy()).fingerprint()
    changed = stack.copy()
    changed[39, 0, 0] += 1
    assert source.fingerprint() != ArraySource(changed).fingerprint()
    subset = source.subset([3, 7])
    np.testing.assert_array_equal(subset.to_stack(), stack[[3, 7]])
    assert image_source._runs(np.array([1, 2, 3, 7, 9, 10]))[1][:2] == (7, 8)


def test_layer_level_is_the_finest_level_the_model_runs_on() -> None:
    from napari_topolens.activations.extract import model_accepts
    from napari_topolens.activations.image_source import layer_level

    fixed = nn.Sequential(nn.Flatten(), nn.Linear(6 * 6, 3))  # takes 6x6 images only
    stack = images(4, size=24)
    levels = [stack, stack[:, ::2, ::2], stack[:, ::4, ::4]]  # 24, 12, 6
    level, source = layer_level(levels, model_accepts(fixed))
    assert level == 2 and source.sample_shape == (1, 6, 6)
    assert "level 2 of a multiscale image" in source.description
    np.testing.assert_array_equal(source.to_stack(), levels[2])
    assert layer_level(levels, None)[0] == 0  # no check: the finest
    assert layer_level(levels, None, max_pixels=12 * 12)[0] == 1  # too many pixels: skipped
    rgb = [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 4, 4, 3), np.float32)]
    assert layer_level(rgb, None, rgb=True)[1].sample_shape == (3, 8, 8)
    with pytest.raises(ImageError, match=r"no level .* fits the model \(level 0: 24x24; level 1"):
        layer_level(levels[:2], model_accepts(fixed))
    with pytest.raises(ImageError, match="different stacks"):
        layer_level([stack, stack[:2, ::2, ::2]], None)


def test_layer_images_reads_a_layer_lazily_and_refuses_multiscale_levels() -> None:
    from napari_topolens.activations.image_source import layer_images

    stack = images(10)
    source = layer_images(stack)
    assert source.shape == (10, 12, 12)
    np.testing.assert_array_equal(source[2:4].to_stack(), stack[2:4])
    one = layer_images(stack[0])
    assert len(one) == 1
    np.testing.assert_array_equal(one.to_stack()[0], stack[0])
    with pytest.raises(ImageError, match="multiscale"):
        layer_images([stack, stack[:, ::2, ::2]])
