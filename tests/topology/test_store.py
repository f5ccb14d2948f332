"""The analysis file format: bit-exact round trips, and refusal of bad files."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_topolens.activations.pointcloud import PointCloud
from napari_topolens.errors import AnalysisFileError
from napari_topolens.topology import store, store_files, store_types
from napari_topolens.topology.store import load_analysis, register_dataclass, save_analysis


@register_dataclass
@dataclass
class _Inner:
    value: float
    counts: np.ndarray


@register_dataclass
@dataclass
class _Everything:
    """One of every kind of plain data a result type may hold."""

    f64: np.ndarray
    f32: np.ndarray
    i8: np.ndarray
    u16: np.ndarray
    boolean: np.ndarray
    empty: np.ndarray
    zero_d: np.ndarray
    strings: np.ndarray
    tricky_floats: list[float]
    np_scalars: list[Any]
    python_int: int
    big_int: int
    flag: bool
    text: str
    nothing: None
    arrays: list[np.ndarray]
    nested: list[_Inner]
    optional: _Inner | None
    shape: tuple[int, ...]
    mapping: dict[str, Any]
    int_keys: dict[int, str]
    derived: list[str] = field(default_factory=list)


def _everything() -> _Everything:
    rng = np.random.default_rng(3)
    return _Everything(
        f64=rng.normal(size=(7, 3)),
        f32=rng.normal(size=(5,)).astype(np.float32),
        i8=np.array([-128, 0, 127], dtype=np.int8),
        u16=np.arange(12, dtype=np.uint16).reshape(3, 2, 2),
        boolean=np.array([True, False, True]),
        empty=np.zeros((0, 2), dtype=np.float64),
        zero_d=np.array(2.5, dtype=np.float32),
        strings=np.array(["cube0_cluster1", "ü"]),
        tricky_floats=[
            math.nan,
            math.inf,
            -math.inf,
            -0.0,
            0.1 + 0.2,
            5e-324,
            1.7976931348623157e308,
            1 / 3,
        ],
        np_scalars=[np.float32(0.1), np.int64(-3), np.bool_(True), np.float64(math.nan)],
        python_int=-7,
        big_int=2**70 + 1,
        flag=False,
        text='quote " and \\ and \n newline',
        nothing=None,
        arrays=[np.array([[0.0, np.inf], [0.5, 1.0]]), np.zeros((0, 2))],
        nested=[
            _Inner(math.nan, np.array([1, 2], dtype=np.int64)),
            _Inner(2.0, np.array([], dtype=np.int32)),
        ],
        optional=None,
        shape=(3, 4),
        mapping={
            "eps": 0.123456789012345678,
            "note": None,
            "inner": {"deep": [1, (2, 3.5)]},
            "__dict__": 1,
        },
        int_keys={1: "a", -2: "b"},
        derived=["x"],
    )


def reseal(folder: Path) -> None:
    """Recompute analysis.json's checksum, as a hostile editor who read the format would."""
    manifest_path = folder / store.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["manifest_sha256"] = store.canonical_digest(manifest)
    manifest_path.write_text(json.dumps(manifest))


def _assert_same(a: Any, b: Any, where: str = "value") -> None:
    """Recursive bit-exact equality: dtype, shape, NaN-aware floats, types."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
        if a.dtype.kind == "f":
            assert a.tobytes() == b.tobytes(), f"{where}: bits differ"
        else:
            assert np.array_equal(a, b), f"{where}: values differ"
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        ), f"{where}: {a!r} != {b!r}"
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_every_kind_of_plain_data_round_trips_bit_exactly(tmp_path: Path) -> None:
    original = _everything()
    save_analysis(original, tmp_path / "saved")
    loaded = load_analysis(tmp_path / "saved", expected=object)
    _assert_same(original, loaded)


def test_the_comparison_helper_sees_differences() -> None:
    original = _everything()
    changed = _everything()
    changed.f32 = changed.f32.astype(np.float64)
    with pytest.raises(AssertionError, match="dtype"):
        _assert_same(original, changed)
    changed = _everything()
    changed.tricky_floats[3] = 0.0  # -0.0 -> 0.0
    with pytest.raises(AssertionError):
        _assert_same(original, changed)


def test_point_cloud_round_trips(tmp_path: Path) -> None:
    cloud = PointCloud(
        layer="conv1",
        points=np.random.default_rng(0).normal(size=(6, 4)),
        image_index=np.arange(6),
        position=np.zeros((6, 2)),
        receptive_field=np.ones((6, 4)),
        sampling="random_position",
        grid_shape=(4, 4),
        image_shape=(8, 8),
        meta={"max_points": None, "seed": 0},
    )
    save_analysis(cloud, tmp_path / "cloud")
    _assert_same(cloud, load_analysis(tmp_path / "cloud", expected=object))


def test_arrays_live_in_the_npz_and_json_is_plain(tmp_path: Path) -> None:
    save_analysis(_everything(), tmp_path / "saved")
    text = (tmp_path / "saved" / store.MANIFEST_NAME).read_text()
    manifest = json.loads(text)  # strict JSON: no bare NaN / Infinity tokens
    assert "NaN" not in text and "Infinity" not in text
    assert manifest["format"] == store.FORMAT_NAME and manifest["version"] == store.FORMAT_VERSION
    with np.load(tmp_path / "saved" / store.ARRAYS_NAME, allow_pickle=False) as npz:
        assert len(npz.files) >= 10


def test_truncated_npz_is_refused(tmp_path: Path) -> None:
    save_analysis(_everything(), tmp_path / "saved")
    npz = tmp_path / "saved" / store.ARRAYS_NAME
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(AnalysisFileError, match=r"arrays\.npz.*truncated"):
        load_analysis(tmp_path / "saved", expected=object)


def test_damaged_npz_of_the_same_size_is_refused(tmp_path: Path) -> None:
    save_analysis(_everything(), tmp_path / "saved")
    npz = tmp_path / "saved" / store.ARRAYS_NAME
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(AnalysisFileError, match="sha256"):
        load_analysis(tmp_path / "saved", expected=object)


def test_foreign_folder_and_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"not an analysis")
    with pytest.raises(AnalysisFileError, match="not a saved napari-topolens analysis"):
        load_analysis(tmp_path / "photos", expected=object)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / store.MANIFEST_NAME).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(AnalysisFileError, match="not a napari-topolens analysis"):
        load_analysis(tmp_path / "other", expected=object)
    with pytest.raises(AnalysisFileError, match="is a file"):
        load_analysis(tmp_path / "photos" / "cat.png", expected=object)
    with pytest.raises(AnalysisFileError, match="does not exist"):
        load_analysis(tmp_path / "missing", expected=object)


def test_newer_version_and_broken_json_are_refused(tmp_path: Path) -> None:
    save_analysis(_everything(), tmp_path / "saved")
    manifest_path = tmp_path / "saved" / store.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = store.FORMAT_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(AnalysisFileError, match="newer"):
        load_analysis(tmp_path / "saved", expected=object)
    manifest_path.write_text(manifest_path.read_text()[:100])
    with pytest.raises(AnalysisFileError, match="not valid JSON"):
        load_analysis(tmp_path / "saved", expected=object)


def test_unknown_result_type_is_refused(tmp_path: Path) -> None:
    save_analysis(_Inner(1.0, np.zeros(2)), tmp_path / "saved")
    manifest_path = tmp_path / "saved" / store.MANIFEST_NAME
    manifest_path.write_text(manifest_path.read_text().replace('"_Inner"', '"NoSuchResult"'))
    with pytest.raises(AnalysisFileError, match="edited"):  # the checksum notices first
        load_analysis(tmp_path / "saved", expected=object)
    reseal(tmp_path / "saved")
    with pytest.raises(AnalysisFileError, match="NoSuchResult"):
        load_analysis(tmp_path / "saved", expected=object)


def test_saving_over_a_previous_analysis_replaces_it(tmp_path: Path) -> None:
    target = tmp_path / "saved"
    save_analysis(_Inner(1.0, np.zeros(2)), target)
    save_analysis(_Inner(2.0, np.ones(3)), target)
    loaded = load_analysis(target, expected=object)
    assert loaded.value == 2.0 and loaded.counts.shape == (3,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]  # no temporary leftovers


def test_failed_save_leaves_the_previous_analysis_intact(tmp_path: Path) -> None:
    target = tmp_path / "saved"
    save_analysis(_Inner(1.0, np.arange(4)), target)
    with pytest.raises(TypeError, match="not plain data"):
        save_analysis(_Inner(2.0, object()), target)  # type: ignore[arg-type]
    loaded = load_analysis(target, expected=object)
    assert loaded.value == 1.0 and np.array_equal(loaded.counts, np.arange(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_interrupted_save_leaves_the_previous_analysis_intact(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "saved"
    save_analysis(_Inner(1.0, np.arange(4)), target)

    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store_files.np, "savez", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_analysis(_Inner(2.0, np.ones(3)), target)
    monkeypatch.undo()
    assert load_analysis(target, expected=object).value == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_saving_never_overwrites_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(AnalysisFileError, match="other content"):
        save_analysis(_Inner(1.0, np.zeros(1)), tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"
    save_analysis(_Inner(1.0, np.zeros(1)), tmp_path / "empty_is_fine")
    assert load_analysis(tmp_path / "empty_is_fine", expected=object).value == 1.0


def test_object_arrays_are_refused_on_save(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="object array"):
        save_analysis(_Inner(1.0, np.array([None, 1], dtype=object)), tmp_path / "saved")


def test_a_real_analysis_round_trips_bit_exactly(tmp_path: Path, monkeypatch) -> None:
    from napari_topolens.topology.analysis import Analysis, AnalysisConfig, analyze

    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 20)
    clouds = []
    for name, dim in (("conv", 5), ("fc", 3)):
        points = (rng.normal(scale=6, size=(3, dim))[labels] + rng.normal(size=(60, dim))).astype(
            np.float32
        )
        clouds.append(
            PointCloud(
                layer=name,
                points=points,
                image_index=np.arange(60),
                position=None,
                receptive_field=np.tile([0, 0, 8, 8], (60, 1)),
                sampling="pooled",
                grid_shape=(),
                image_shape=(8, 8),
                meta={"note": "synthetic"},
            )
        )
    config = AnalysisConfig(
        h1_max_points=40, phdim_start=20, phdim_step=10, dendrogram_max_points=30
    )
    analysis = analyze(
        clouds,
        labels,
        config=config,
        class_names=["x", "y", "z"],
        provenance={"model": "pkg.mod:net", "sample_image_index": np.arange(60)},
    )
    analysis.save(tmp_path / "analysis")
    # load as a fresh process would: the result classes are found by name, not remembered
    monkeypatch.setattr(store_types, "_REGISTRY", {})
    loaded = load_analysis(tmp_path / "analysis")
    assert isinstance(loaded, Analysis)
    assert loaded.layers == ["conv", "fc"]
    _assert_same(analysis, loaded)
    # derived views still work on the loaded objects
    assert loaded["fc"].mapper.nodes[0].size == int(loaded["fc"].mapper.size[0])
    assert loaded.config == config
