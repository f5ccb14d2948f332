"""The activation cache: reuse across analyses, keys, and untrusted cache folders."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from napari_topolens import extract_activations
from napari_topolens.activations.cache import ActivationCache, CacheError, model_fingerprint

pytest.importorskip("zarr")

LAYERS = ["1", "4"]
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def key_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache's secret key in a temporary folder, never the user's config folder."""
    path = tmp_path_factory.mktemp("config") / "cache-key"
    monkeypatch.setenv("NAPARI_TOPOLENS_CACHE_KEY_FILE", str(path))
    return path


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


# ---- the key: code, attributes, hooks and every option ------------------------------------

_SOURCE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x)){edit}
        return self.head(x.mean(dim=(2, 3)))
"""


def _net_from_file(folder: Path, edit: str, weights: dict | None = None) -> nn.Module:
    """A model class loaded from a source file, as a user's own module would be."""
    import importlib.util

    name = f"user_net_{abs(hash(edit)) % 10**8}"
    path = folder / f"{name}.py"
    path.write_text(_SOURCE.format(edit=edit))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.Net().eval()
    if weights is not None:
        model.load_state_dict(weights)
    return model


def _net_from_notebook(edit: str, weights: dict | None = None) -> nn.Module:
    """The same class defined in a notebook cell: same names, no source file."""
    namespace = {"__name__": "notebook_cell"}
    exec(_SOURCE.format(edit="").replace("self.conv(x))", f"self.conv(x)){edit}"), namespace)
    torch.manual_seed(0)
    model = namespace["Net"]().eval()
    if weights is not None:
        model.load_state_dict(weights)
    return model


class Scaled(nn.Module):
    """A module whose output depends on a plain attribute, a helper and a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gain = 1.0
        self.register_buffer("offset", torch.zeros(4, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _activation(self.conv(x) * self.gain + self.offset)


def _activation(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


def _shifted_activation(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x) + 1.0


@pytest.mark.parametrize(
    "change",
    [
        "forward edited in its source file",
        "forward redefined in a notebook (no source)",
        "forward patched on the class",
        "helper function edited",
        "plain attribute",
        "non-persistent buffer",
        "forward hook",
    ],
)
def test_editing_the_models_code_misses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    images = stack(40)
    kw = dict(sampling="top_norm", cache_dir=tmp_path / "cache")
    if change == "forward edited in its source file":
        model = _net_from_file(tmp_path, "")
        layers = ["head"]
        extract_activations(model, images, layers, **kw)
        model = _net_from_file(tmp_path, "\n        x = x * 2", weights=model.state_dict())
    elif change == "forward redefined in a notebook (no source)":
        model = _net_from_notebook("")
        layers = ["head"]
        extract_activations(model, images, layers, **kw)
        model = _net_from_notebook(" * 2", weights=model.state_dict())
    else:
        torch.manual_seed(0)
        model = nn.Sequential(Scaled(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        layers = ["3"]
        extract_activations(model.eval(), images, layers, **kw)
        if change == "forward patched on the class":
            original = Scaled.forward
            monkeypatch.setattr(Scaled, "forward", lambda self, x: original(self, x) * 3)
        elif change == "helper function edited":
            monkeypatch.setitem(globals(), "_activation", _shifted_activation)
        elif change == "plain attribute":
            model[0].gain = 2.0
        elif change == "non-persistent buffer":
            model[0].offset += 0.5
        else:
            model[0].register_forward_hook(lambda module, args, output: output + 1)
    again = extract_activations(model, images, layers, **kw)
    assert again[layers[0]].meta["activation_cache"].startswith("written to")
    assert_same_clouds(again, extract_activations(model, images, layers, sampling="top_norm"))


def test_every_extraction_option_reaches_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Whatever options iter_extract_activations grows, they are part of the key unless
    listed here as keyed another way or changing only float rounding."""
    import inspect

    from napari_topolens.activations import cache as cache_module
    from napari_topolens.activations import extract as extract_module

    seen: dict = {}

    def capture(*args, options, **kwargs):
        seen.update(options)
        return iter([])

    monkeypatch.setattr(cache_module, "iter_cached_extraction", capture)
    extract_module.iter_extract_activations(small_cnn(), stack(8), ["1"], cache_dir=tmp_path)
    parameters = set(inspect.signature(extract_module.iter_extract_activations).parameters)
    keyed_otherwise = {"model", "images", "layers", "device", "batch_size", "scheduler"}
    assert set(seen) == parameters - keyed_otherwise - {"cache_dir"}


@dataclass(frozen=True)
class Scale:
    """An option given as plain data in a dataclass (as an input scale is)."""

    mode: str
    mean: tuple[float, ...] = ()


def test_two_values_of_any_option_miss_each_other(tmp_path: Path) -> None:
    from napari_topolens.activations.cache import entry_keys
    from napari_topolens.activations.image_source import as_image_source

    model, source = small_cnn(), as_image_source(stack(8))

    def keys(**options):
        return entry_keys(
            model, source, ["1"], options=options, device_type="cpu", dtype=torch.float32
        )

    base = {"sampling": "pooled", "seed": 0, "mask": None}
    assert keys(**base) == keys(**base)
    assert keys(**base, input_scale="0-1") != keys(**base, input_scale="imagenet")
    assert keys(**base, input_scale=1.0) != keys(**base, input_scale=1.0000001)
    assert keys(**base, input_scale=(0.5, 0.25)) != keys(**base, input_scale=(0.5, 0.26))
    assert keys(**base) != keys(**base, input_scale=None)
    assert keys(**base, input_scale=Scale("custom", (0.5,))) == keys(
        **base, input_scale=Scale("custom", (0.5,))
    )
    assert keys(**base, input_scale=Scale("custom", (0.5,))) != keys(
        **base, input_scale=Scale("custom", (0.25,))
    )
    mask = np.zeros((8, 10, 10), bool)
    other = mask.copy()
    other[3, 4, 5] = True
    assert keys(**{**base, "mask": mask}) != keys(**{**base, "mask": other})


# ---- hostile and damaged entries ------------------------------------------------------------


def _only_entry(cache_dir: Path) -> Path:
    (entry,) = [p for p in (cache_dir / "activations-v2").iterdir() if not p.name.startswith(".")]
    return entry


_DTYPES = {"points": np.float32, "image_index": np.int64, "receptive_field": np.int64}


def _chunk(entry: Path, name: str) -> Path:
    return entry / name / "c" / "0" / "0" if name != "image_index" else entry / name / "c" / "0"


def _arrays(entry: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for name in ("points", "image_index", "receptive_field", "position"):
        meta = json.loads((entry / name / "zarr.json").read_text())
        dtype = np.float32 if name == "points" else np.int64
        arrays[name] = np.memmap(_chunk(entry, name), dtype=dtype, mode="r+").reshape(meta["shape"])
    return arrays


def _record(entry: Path) -> dict:
    return json.loads((entry / "zarr.json").read_text())


def _write_record(entry: Path, group: dict) -> None:
    (entry / "zarr.json").write_text(json.dumps(group))


def _sign(entry: Path, secret: bytes) -> None:
    """Recompute both checksums, as someone holding ``secret`` would."""
    from napari_topolens.activations.cache import _checksums

    group = _record(entry)
    arrays = {name: np.array(values) for name, values in _arrays(entry).items()}
    record = group["attributes"]
    record["sha256"], record["hmac_sha256"] = _checksums(secret, record, arrays)
    _write_record(entry, group)


def _plain_checksum_only(entry: Path) -> None:
    """Recompute the plain checksum (anyone can); the keyed one stays as it was."""
    from napari_topolens.activations.cache import _checksums

    group = _record(entry)
    arrays = {name: np.array(values) for name, values in _arrays(entry).items()}
    group["attributes"]["sha256"] = _checksums(b"x" * 32, group["attributes"], arrays)[0]
    _write_record(entry, group)


def _edit_array_meta(entry: Path, name: str, **fields) -> None:
    path = entry / name / "zarr.json"
    meta = json.loads(path.read_text())
    meta.update(fields)
    path.write_text(json.dumps(meta))


def _damage(case: str, entry: Path, secret: bytes, tmp_path: Path) -> None:
    arrays = _arrays(entry)
    group = _record(entry)
    record = group["attributes"]
    if case == "values edited, plain checksum recomputed":
        arrays["points"][0, 0] += 1.0
        arrays["points"].flush()
        _plain_checksum_only(entry)
    elif case == "values edited, signed with another key":
        arrays["points"][:] = 0.0
        arrays["points"].flush()
        _sign(entry, b"another lab's key" * 2)
    elif case == "image_index permuted (signed)":
        arrays["image_index"][:] = np.random.default_rng(1).permutation(arrays["image_index"])
        arrays["image_index"].flush()
        _sign(entry, secret)
    elif case == "image_index permuted (plain checksum)":
        arrays["image_index"][:] = arrays["image_index"][::-1].copy()
        arrays["image_index"].flush()
        _plain_checksum_only(entry)
    elif case == "position outside the grid (signed)":
        arrays["position"][0] = [50, 0]
        arrays["position"].flush()
        _sign(entry, secret)
    elif case == "receptive field outside the image (signed)":
        arrays["receptive_field"][0] = [0, 0, 10, 99]
        arrays["receptive_field"].flush()
        _sign(entry, secret)
    elif case == "sampling attribute lies (signed)":
        record["sampling"] = "top_norm"
        _write_record(entry, group)
        _sign(entry, secret)
    elif case == "grid attribute lies (signed)":
        record["grid_shape"] = [20, 5]
        _write_record(entry, group)
        _sign(entry, secret)
    elif case == "3e38 value (signed)":
        arrays["points"][0, 0] = 3e38
        arrays["points"].flush()
        _sign(entry, secret)
    elif case == "NaN value (signed)":
        arrays["points"][0, 0] = np.nan
        arrays["points"].flush()
        _sign(entry, secret)
    elif case == "corrupt chunk":
        chunk = _chunk(entry, "points")
        data = bytearray(chunk.read_bytes())
        data[100:140] = b"\xff" * 40
        chunk.write_bytes(bytes(data))
    elif case == "truncated chunk":
        chunk = _chunk(entry, "receptive_field")
        chunk.write_bytes(chunk.read_bytes()[:-7])
    elif case == "missing chunk (read as fill value)":
        _chunk(entry, "image_index").unlink()
    elif case == "declared 16 GiB fill (shape)":
        _edit_array_meta(entry, "points", shape=[1 << 27, 32], fill_value=1.0)
    elif case == "declared 10^12 points":
        record["n_points"] = 10**12
        _write_record(entry, group)
    elif case == "tiny chunks":
        _edit_array_meta(
            entry,
            "points",
            chunk_grid={"name": "regular", "configuration": {"chunk_shape": [1, 4]}},
        )
    elif case == "compressed codec declared":
        meta = json.loads((entry / "points" / "zarr.json").read_text())
        _edit_array_meta(entry, "points", codecs=[*meta["codecs"], {"name": "zstd"}])
    elif case == "symlinked entry":
        copy = tmp_path / "elsewhere"
        shutil.copytree(entry, copy)
        shutil.rmtree(entry)
        entry.symlink_to(copy, target_is_directory=True)
    elif case == "symlinked chunk":
        chunk = _chunk(entry, "points")
        copy = tmp_path / "chunk-copy"
        shutil.copy(chunk, copy)
        chunk.unlink()
        chunk.symlink_to(copy)
    elif case == "extra file":
        (entry / "points" / "c" / "7").write_bytes(b"\0" * 10)
    elif case == "metadata not JSON":
        (entry / "zarr.json").write_text("{not json")
    elif case == "metadata nested 100000 deep":
        (entry / "zarr.json").write_text("[" * 100_000 + "]" * 100_000)
    elif case == "entry is a file":
        shutil.rmtree(entry)
        entry.write_bytes(b"zarr")
    else:
        raise AssertionError(case)


HOSTILE = {  # case: what the notice must say
    "values edited, plain checksum recomputed": "another key",
    "values edited, signed with another key": "another key",
    "image_index permuted (signed)": "out of order",
    "image_index permuted (plain checksum)": "another key",
    "position outside the grid (signed)": "outside the layer's grid",
    "receptive field outside the image (signed)": "receptive field",
    "sampling attribute lies (signed)": "sampling",
    "grid attribute lies (signed)": "grid",
    "3e38 value (signed)": "overflow",
    "NaN value (signed)": "not finite",
    "corrupt chunk": "checksum",
    "truncated chunk": "bytes, not",
    "missing chunk (read as fill value)": "unreadable",
    "declared 16 GiB fill (shape)": "shape is",
    "declared 10^12 points": "points declared",
    "tiny chunks": "chunk_grid",
    "compressed codec declared": "codecs",
    "symlinked entry": "link",
    "symlinked chunk": "unreadable",
    "extra file": "unexpected",
    "metadata not JSON": "unreadable",
    "metadata nested 100000 deep": "nested",
    "entry is a file": "link or not a folder",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_damaged_or_hostile_entry_is_ignored_with_a_notice_and_recomputed(
    tmp_path: Path, case: str
) -> None:
    from napari_topolens.activations.cache import CacheWarning

    model, images = small_cnn(), stack(60)
    counter = ForwardCounter(model)  # before the first run: hooks are part of the key
    kw = dict(sampling="all_positions", max_points=300, seed=3)
    cache_dir = tmp_path / "cache"
    extract_activations(model, images, ["1"], cache_dir=cache_dir, **kw)
    entry = _only_entry(cache_dir)
    secret = bytes.fromhex(Path(os.environ["NAPARI_TOPOLENS_CACHE_KEY_FILE"]).read_text())
    _damage(case, entry, secret, tmp_path)
    counter.images = 0
    messages: list[str] = []
    with pytest.warns(CacheWarning) as caught:
        again = extract_activations(
            model,
            images,
            ["1"],
            cache_dir=cache_dir,
            progress=lambda fraction, message: messages.append(message),
            **kw,
        )
    notice = str(caught[0].message)
    assert len(caught) == 1 and "\n" not in notice
    assert HOSTILE[case] in notice, notice
    assert notice in messages  # also shown as a progress message
    assert counter.images >= 60  # recomputed, not read
    assert "ignored" in again["1"].meta["activation_cache"]
    assert_same_clouds(again, extract_activations(model, images, ["1"], **kw))
    # the recomputed entry replaced the hostile one and is read back next time
    assert (
        extract_activations(model, images, ["1"], cache_dir=cache_dir, **kw)["1"]
        .meta["activation_cache"]
        .startswith("read from")
    )


# ---- the key file ---------------------------------------------------------------------------


def test_the_key_file_is_made_once_in_the_config_folder_readable_only_by_its_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_topolens.activations.cache import KEY_FILE_ENV, cache_key_file

    monkeypatch.delenv(KEY_FILE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "config"))
    path = cache_key_file()
    assert tmp_path in path.parents and path.name == "cache-key"
    ActivationCache(tmp_path / "cache")
    first = path.read_text()
    assert len(bytes.fromhex(first.strip())) == 32
    if os.name == "posix":
        assert (path.stat().st_mode & 0o777) == 0o600
    ActivationCache(tmp_path / "cache")
    assert path.read_text() == first


def test_a_lab_sharing_the_key_file_shares_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Member B copies member A's key file: B reads A's entries; C, without it, does not."""
    from napari_topolens.activations.cache import KEY_FILE_ENV, CacheWarning

    model, images = small_cnn(), stack(30)
    kw = dict(sampling="top_norm", cache_dir=tmp_path / "shared")
    extract_activations(model, images, ["4"], **kw)
    member_b = tmp_path / "b" / "cache-key"
    member_b.parent.mkdir()
    shutil.copy(os.environ[KEY_FILE_ENV], member_b)
    monkeypatch.setenv(KEY_FILE_ENV, str(member_b))
    got = extract_activations(model, images, ["4"], **kw)
    assert got["4"].meta["activation_cache"].startswith("read from")
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "c" / "cache-key"))
    with pytest.warns(CacheWarning, match="another key"):
        got = extract_activations(model, images, ["4"], **kw)
    assert "recomputed" in got["4"].meta["activation_cache"]


# ---- the cache's API and folders ------------------------------------------------------------


def _make_cache_surface(case: str, tmp_path: Path):
    from napari_topolens.activations.cache import KEY_FILE_ENV

    if case == "folder is a file":
        (tmp_path / "file").write_text("x")
        return lambda: extract_activations(
            small_cnn(), stack(5), ["1"], cache_dir=tmp_path / "file"
        )
    if case == "folder is a link":
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        return lambda: ActivationCache(tmp_path / "link")
    if case == "folder is not a path":
        return lambda: ActivationCache(42)  # type: ignore[arg-type]
    if case == "key outside the folder names":
        return lambda: ActivationCache(tmp_path).load("../" * 10 + "etc", None)  # type: ignore[arg-type]
    if case == "key not text":
        return lambda: ActivationCache(tmp_path).load(7, None)  # type: ignore[arg-type]
    if case == "request not an EntryRequest":
        return lambda: ActivationCache(tmp_path).load("a" * 64, {"n_images": 1})  # type: ignore[arg-type]
    if case == "storing something else":
        return lambda: ActivationCache(tmp_path).store("a" * 64, "cloud")  # type: ignore[arg-type]
    if case == "key file inside the cache":
        return lambda: ActivationCache(tmp_path, key_file=tmp_path / "activations-v2" / "k")
    if case == "key file is a link":
        target = tmp_path / "target-key"
        target.write_text("ab" * 32)
        link = tmp_path / "keys" / "key"
        link.parent.mkdir()
        link.symlink_to(target)
        return lambda: ActivationCache(tmp_path / "cache", key_file=link)
    if case == "key file holds no key":
        garbage = tmp_path / "keys" / "key"
        garbage.parent.mkdir()
        garbage.write_text("not a key")
        return lambda: ActivationCache(tmp_path / "cache", key_file=garbage)
    if case == "key file cannot be created":
        blocker = tmp_path / "blocker"
        blocker.write_text("x")
        os.environ[KEY_FILE_ENV] = str(blocker / "key")  # restored by the fixture
        return lambda: ActivationCache(tmp_path / "cache")
    raise AssertionError(case)


CACHE_SURFACE = {  # case: what the CacheError says
    "folder is a file": "is a file",
    "folder is a link": "is a link",
    "folder is not a path": "must be a path",
    "key outside the folder names": "not a cache key",
    "key not text": "not a cache key",
    "request not an EntryRequest": "EntryRequest",
    "storing something else": "PointCloud",
    "key file inside the cache": "inside the cache folder",
    "key file is a link": "not a link",
    "key file holds no key": "does not hold a key",
    "key file cannot be created": "cannot create",
}


@pytest.mark.parametrize("case", list(CACHE_SURFACE))
def test_cache_surface_misuse_is_one_clear_error(tmp_path: Path, case: str) -> None:
    call = _make_cache_surface(case, tmp_path)
    with pytest.raises(CacheError, match=CACHE_SURFACE[case]):
        call()
    assert not (tmp_path / "real").exists() or not any((tmp_path / "real").iterdir())


def test_an_absent_entry_is_simply_absent(tmp_path: Path) -> None:
    from napari_topolens.activations.cache import EntryRequest
    from napari_topolens.activations.receptive_field import LayerGeometry

    geometry = LayerGeometry("vector", (), 3, False, 12)
    request = EntryRequest("7", geometry, "pooled", None, 0, 1, (1, 1))
    assert ActivationCache(tmp_path).load("a" * 64, request) == (None, "")


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


@pytest.mark.slow
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


_KEY_SCRIPT = """
import sys
import numpy as np
from napari_topolens.activations.cache import entry_keys
from napari_topolens.activations.image_source import as_image_source
from napari_topolens.sample_models import shapes_cnn
import torch


class Gate(torch.nn.Module):  # defined here: no source file, only its code objects
    def forward(self, x):
        mode = "relu" if self.training in {False, None} else "id"
        return torch.relu(x) if mode in {"relu", "gelu", "tanh"} else x


torch.manual_seed(0)
model = torch.nn.Sequential(shapes_cnn(), Gate())
images = as_image_source(np.linspace(0, 1, 4 * 48 * 48, dtype=np.float32).reshape(4, 48, 48))
options = {"sampling": "top_norm", "seed": 0, "max_points": None, "mask": None, "scale": 0.5}
keys = entry_keys(model, images, ["0.pool2"], options=options, device_type="cpu", dtype="f32")
print(keys["0.pool2"])
"""


def test_the_key_is_the_same_in_another_process(tmp_path: Path) -> None:
    """A cache is useful only if a new process (another hash seed) finds its entries."""
    import subprocess
    import sys

    keys = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(SRC)}
        done = subprocess.run(
            [sys.executable, "-c", _KEY_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        keys.add(done.stdout.strip())
    assert len(keys) == 1 and len(keys.pop()) == 64


def test_what_the_key_cannot_describe_skips_the_cache_with_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_topolens.activations import cache as cache_module
    from napari_topolens.activations.image_source import as_image_source

    model, images = small_cnn(), stack(20)
    with pytest.raises(Exception, match="no stable form"):
        cache_module.entry_keys(
            model,
            as_image_source(images),
            ["1"],
            options={"input_scale": lambda x: x},
            device_type="cpu",
            dtype=torch.float32,
        )

    def unreadable(model):
        raise RuntimeError("a tensor on the meta device")

    monkeypatch.setattr(cache_module, "model_fingerprint", unreadable)
    with pytest.warns(cache_module.CacheWarning, match="not used: a tensor on the meta"):
        got = extract_activations(model, images, ["1"], sampling="top_norm", cache_dir=tmp_path)
    assert "activation_cache" not in got["1"].meta
    assert not any((tmp_path / "activations-v2").iterdir())
    assert_same_clouds(got, extract_activations(model, images, ["1"], sampling="top_norm"))


class _Doubled(nn.Module):
    factor = 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * self.factor


class _Tripled(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 3


class _Quadrupled(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 4


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_the_fingerprint_sees_generated_code_and_class_constants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    traced = torch.fx.symbolic_trace(_Doubled())
    assert model_fingerprint(traced) == model_fingerprint(torch.fx.symbolic_trace(_Doubled()))
    assert model_fingerprint(traced) != model_fingerprint(torch.fx.symbolic_trace(_Tripled()))
    scripted = torch.jit.script(_Tripled())
    assert model_fingerprint(scripted) == model_fingerprint(torch.jit.script(_Tripled()))
    assert model_fingerprint(scripted) != model_fingerprint(torch.jit.script(_Quadrupled()))
    before = model_fingerprint(_Doubled())
    monkeypatch.setattr(_Doubled, "factor", 2.5)
    assert model_fingerprint(_Doubled()) != before
