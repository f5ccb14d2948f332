"""A saved analysis is untrusted: a table of hostile edits, each refused with AnalysisFileError.

Every case starts from a real saved analysis, edits it as a hostile user who read
the format would (recomputing the checksums where the case is about structure),
and expects one ``AnalysisFileError``: no other exception type may escape, no file
outside the folder may be read, and nothing may be allocated by a declared size.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_topolens.activations.pointcloud import PointCloud
from napari_topolens.errors import AnalysisFileError
from napari_topolens.topology import store, store_files
from napari_topolens.topology.analysis import Analysis, AnalysisConfig, analyze
from napari_topolens.topology.store import load_analysis


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
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
            )
        )
    config = AnalysisConfig(
        h1_max_points=40, phdim_start=20, phdim_step=10, dendrogram_max_points=30
    )
    analysis = analyze(
        clouds, labels, config=config, class_names=["x", "y", "z"], images=np.zeros((60, 8, 8))
    )
    folder = tmp_path_factory.mktemp("template") / "analysis"
    analysis.save(folder)
    return folder


# ------------------------------------------------------------------------- edit helpers


def _manifest(folder: Path) -> dict:
    return json.loads((folder / store.MANIFEST_NAME).read_text())


def _write(folder: Path, manifest: dict, *, reseal: bool = True) -> None:
    if reseal:
        manifest["manifest_sha256"] = store.canonical_digest(manifest)
    (folder / store.MANIFEST_NAME).write_text(json.dumps(manifest))


def _edit_json(change: Callable[[dict], Any], *, reseal: bool = True) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        manifest = _manifest(folder)
        change(manifest)
        _write(folder, manifest, reseal=reseal)

    return edit


def _layer(manifest: dict, i: int = 0) -> dict:
    return manifest["analysis"]["fields"]["layer_results"][i]["fields"]


def _config(manifest: dict) -> dict:
    return manifest["analysis"]["fields"]["config"]["fields"]


def _rewrite_npz(folder: Path, members: dict[str, bytes], compress: bool = False) -> None:
    """Replace or add raw ``.npy`` members, then record the npz's new size and sha256."""
    path = folder / store.ARRAYS_NAME
    with zipfile.ZipFile(path) as old:
        contents = {info.filename: old.read(info) for info in old.infolist()}
    contents.update(members)
    buffer = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", mode) as new:
        for name, data in contents.items():
            new.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    manifest = _manifest(folder)
    manifest["files"][store.ARRAYS_NAME] = {
        "sha256": store.sha256_file(path),
        "bytes": path.stat().st_size,
    }
    _write(folder, manifest)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...], dtype: str, payload: bytes = b"") -> bytes:
    """A raw .npy member whose header declares ``shape`` whatever the payload holds."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue() + payload


def _set_array(locate: Callable[[dict], dict], array: np.ndarray) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        key = locate(_manifest(folder))["__array__"]
        _rewrite_npz(folder, {f"{key}.npy": _npy(array)})

    return edit


def _mapper(manifest: dict) -> dict:
    return _layer(manifest)["mapper"]["fields"]


def _outside_key(folder: Path) -> None:
    manifest = _manifest(folder)
    manifest["files"]["../../../../etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}
    _write(folder, manifest)


def _absolute_key_with_right_checksum(folder: Path) -> None:
    outside = folder.parent / "outside.npz"
    shutil.copy(folder / store.ARRAYS_NAME, outside)
    manifest = _manifest(folder)
    record = manifest["files"].pop(store.ARRAYS_NAME)
    manifest["files"][str(outside)] = record
    (folder / store.ARRAYS_NAME).unlink()
    _write(folder, manifest)


def _npz_links_outside(folder: Path) -> None:
    outside = folder.parent / "elsewhere.npz"
    shutil.move(folder / store.ARRAYS_NAME, outside)
    os.symlink(outside, folder / store.ARRAYS_NAME)


def _manifest_links_outside(folder: Path) -> None:
    outside = folder.parent / "elsewhere.json"
    shutil.move(folder / store.MANIFEST_NAME, outside)
    os.symlink(outside, folder / store.MANIFEST_NAME)


def _npz_is_a_folder(folder: Path) -> None:
    (folder / store.ARRAYS_NAME).unlink()
    (folder / store.ARRAYS_NAME).mkdir()


def _huge_declared_shape(folder: Path) -> None:
    key = _layer(_manifest(folder))["cloud"]["fields"]["points"]["__array__"]
    _rewrite_npz(folder, {f"{key}.npy": _npy_header((10**12,), "<f8", b"\0" * 64)})


def _object_dtype(folder: Path) -> None:
    key = _layer(_manifest(folder))["cloud"]["fields"]["points"]["__array__"]
    _rewrite_npz(folder, {f"{key}.npy": _npy_header((2,), "|O", b"\0" * 16)})


def _compressed(folder: Path) -> None:
    _rewrite_npz(folder, {}, compress=True)


def _nested(depth: int) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        value: Any = 1
        for _ in range(depth):
            value = [value]
        manifest["analysis"]["fields"]["provenance"]["__dict__"]["deep"] = value

    return change


def _deep_text(folder: Path) -> None:
    """Nesting too deep for json to parse (Python's json would raise RecursionError)."""
    path = folder / store.MANIFEST_NAME
    depth = 100_000
    text = path.read_text().replace('"seed": 0', '"seed": ' + "[" * depth + "0" + "]" * depth, 1)
    path.write_text(text)


def _drop_field(manifest: dict) -> None:
    del _layer(manifest)["quality"]["fields"]["purity"]


def _top_is_a_cloud(manifest: dict) -> None:
    manifest["analysis"] = _layer(manifest)["cloud"]


def _set(locate: Callable[[dict], dict], name: str, value: Any) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        locate(manifest)[name] = value

    return change


def _analysis_fields(manifest: dict) -> dict:
    return manifest["analysis"]["fields"]


def _cloud(manifest: dict) -> dict:
    return _layer(manifest)["cloud"]["fields"]


def _version_one(manifest: dict) -> None:
    manifest["version"] = 1
    manifest.pop("manifest_sha256", None)


HOSTILE_EDITS: dict[str, tuple[Callable[[Path], None], str]] = {
    # reading outside the folder, links
    "files key climbing out of the folder": (_outside_key, "exactly the file arrays.npz"),
    "absolute files key with the right size and sha": (
        _absolute_key_with_right_checksum,
        "exactly the file arrays.npz",
    ),
    "arrays.npz is a link out of the folder": (_npz_links_outside, "is a link"),
    "analysis.json is a link out of the folder": (_manifest_links_outside, "is a link"),
    "arrays.npz is a folder": (_npz_is_a_folder, "not a plain file"),
    # analysis.json is covered by a checksum
    "edited mapper_eps": (_edit_json(_set(_config, "mapper_eps", 0.5), reseal=False), "edited"),
    "edited mapper_n_cubes": (
        _edit_json(_set(_config, "mapper_n_cubes", 3), reseal=False),
        "edited",
    ),
    "checksum removed": (
        _edit_json(lambda m: m.pop("manifest_sha256"), reseal=False),
        "edited",
    ),
    "format 1 without a checksum": (_edit_json(_version_one, reseal=False), "format 1"),
    # structure, resealed: the fields' own types decide
    "n_cubes a string": (_edit_json(_set(_config, "mapper_n_cubes", "ten")), "mapper_n_cubes"),
    "max_points 2.5": (_edit_json(_set(_config, "max_points", 2.5)), "max_points"),
    "seed a bool": (_edit_json(_set(_config, "seed", True)), "seed"),
    "negative n_cubes": (_edit_json(_set(_config, "mapper_n_cubes", -4)), "mapper_n_cubes"),
    "distance_dim -1": (_edit_json(_set(_config, "distance_dim", -1)), "distance_dim"),
    "layer_results a dict": (
        _edit_json(_set(_analysis_fields, "layer_results", {"__dict__": {}})),
        "layer_results",
    ),
    "layer_results a list of numbers": (
        _edit_json(_set(_analysis_fields, "layer_results", [1, 2])),
        "layer_results",
    ),
    "persistence holds a Quality": (
        _edit_json(lambda m: _layer(m).__setitem__("persistence", _layer(m)["quality"])),
        "persistence",
    ),
    "top object a PointCloud": (_edit_json(_top_is_a_cloud), "not a saved Analysis"),
    "manifest a list": (lambda f: (f / store.MANIFEST_NAME).write_text("[1, 2]"), "format"),
    "tuple payload a number": (
        _edit_json(_set(_cloud, "image_shape", {"__tuple__": 5})),
        "tuple",
    ),
    "dict payload a list": (
        _edit_json(_set(_analysis_fields, "provenance", {"__dict__": [1]})),
        "dict",
    ),
    "unknown float code": (
        _edit_json(_set(_cloud, "meta", {"__dict__": {"x": {"__float__": "banana"}}})),
        "float code",
    ),
    "array reference a number": (
        _edit_json(_set(_cloud, "points", {"__array__": 7})),
        "array reference",
    ),
    "array key not in the npz": (
        _edit_json(_set(_cloud, "points", {"__array__": "a99999"})),
        "does not hold",
    ),
    "unhashable dict key": (
        _edit_json(_set(_cloud, "meta", {"__items__": [[[1], 2]]})),
        "hashable",
    ),
    "items not pairs": (_edit_json(_set(_cloud, "meta", {"__items__": [[1, 2, 3]]})), "pairs"),
    "unknown result type": (
        _edit_json(lambda m: _layer(m)["quality"].__setitem__("__dataclass__", "os.system")),
        "does not know",
    ),
    "result type not a string": (
        _edit_json(lambda m: _layer(m)["quality"].__setitem__("__dataclass__", ["Quality"])),
        "not a string",
    ),
    "unknown field": (
        _edit_json(lambda m: _layer(m)["quality"]["fields"].__setitem__("evil", 1)),
        "unknown field",
    ),
    "missing field": (_edit_json(_drop_field), "without its field"),
    "bare NaN token": (
        lambda f: (f / store.MANIFEST_NAME).write_text(
            (f / store.MANIFEST_NAME).read_text().replace('"seed": 0', '"seed": NaN', 1)
        ),
        "edited",
    ),
    "nesting 100 deep": (_edit_json(_nested(100)), "nested"),
    "nesting 100000 deep": (_deep_text, "nested"),
    # ranges and cross references
    "member offsets not monotone": (
        _set_array(lambda m: _mapper(m)["member_offsets"], np.array([0, 5, 3, 60])),
        "monotonically",
    ),
    "member offsets past the members": (
        _set_array(lambda m: _mapper(m)["member_offsets"], np.array([0, 10**9])),
        "monotonically",
    ),
    "member rows past the cloud": (
        _set_array(lambda m: _mapper(m)["members"], np.full(1000, 10**6)),
        "monotonically|refers to row",
    ),
    "H1 landmark rows past the cloud": (
        _set_array(lambda m: _layer(m)["persistence"]["fields"]["h1_index"], np.arange(5) + 500),
        "refers to row",
    ),
    "dendrogram rows negative": (
        _set_array(lambda m: _layer(m)["dendrogram"]["fields"]["index"], np.full(30, -3)),
        "refers to row",
    ),
    "image numbers past the images": (
        _set_array(lambda m: _cloud(m)["image_index"], np.arange(60) + 1000),
        "image",
    ),
    "receptive fields outside the image": (
        _set_array(lambda m: _cloud(m)["receptive_field"], np.tile([0, 0, 80, 8], (60, 1))),
        "receptive fields",
    ),
    "point labels of the wrong length": (
        _set_array(lambda m: _layer(m)["point_labels"], np.zeros(3, np.int64)),
        "point labels",
    ),
    "a label without a class name": (
        _set_array(lambda m: _analysis_fields(m)["labels"], np.full(60, 7, np.int64)),
        "no class name",
    ),
    "labels below -1": (
        _set_array(lambda m: _analysis_fields(m)["labels"], np.full(60, -9, np.int64)),
        "class codes",
    ),
    "points of the wrong shape": (
        _set_array(lambda m: _cloud(m)["points"], np.zeros((4, 4, 4), np.float32)),
        "validate",
    ),
    "Mapper edges past the nodes": (
        _set_array(lambda m: _mapper(m)["edges"], np.array([[0, 10**6]], np.int64)),
        "edges",
    ),
    "Mapper node table short": (
        _set_array(lambda m: _mapper(m)["purity"], np.zeros(1)),
        "purity has 1 entries",
    ),
    "flow best stage past the stages": (
        _edit_json(_set(lambda m: _layer(m)["flow"]["fields"], "best_stage", 99)),
        "best stage 99",
    ),
    "flow memberships for another cloud": (
        _set_array(
            lambda m: _layer(m)["flow"]["fields"]["memberships"], np.zeros((5, 7), np.int64)
        ),
        "cluster flow covers 7 points",
    ),
    # memory bombs and foreign arrays
    "npy header declaring 10^12 elements": (_huge_declared_shape, "declares shape"),
    "object dtype in the npz": (_object_dtype, "dtype"),
    "compressed member": (_compressed, "compressed"),
    "truncated npz, size resealed": (
        lambda f: (
            (f / store.ARRAYS_NAME).write_bytes((f / store.ARRAYS_NAME).read_bytes()[:-200]),
            _edit_json(
                lambda m: m["files"].__setitem__(
                    store.ARRAYS_NAME,
                    {
                        "sha256": store.sha256_file(f / store.ARRAYS_NAME),
                        "bytes": (f / store.ARRAYS_NAME).stat().st_size,
                    },
                )
            )(f),
        ),
        "cannot be read|truncated|does not hold",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_EDITS))
def test_hostile_edit_is_refused(case: str, saved: Path, tmp_path: Path) -> None:
    folder = tmp_path / "analysis"
    shutil.copytree(saved, folder)
    edit, message = HOSTILE_EDITS[case]
    edit(folder)
    with pytest.raises(AnalysisFileError, match=message):
        load_analysis(folder)


def test_the_template_itself_loads(saved: Path) -> None:
    assert isinstance(load_analysis(saved), Analysis)


def test_an_outside_file_is_never_opened_nor_its_size_shown(saved: Path, tmp_path: Path) -> None:
    folder = tmp_path / "analysis"
    shutil.copytree(saved, folder)
    secret = tmp_path / "secret.txt"
    secret.write_text("x" * 12345)
    manifest = _manifest(folder)
    manifest["files"]["../secret.txt"] = {"sha256": "0" * 64, "bytes": 1}
    _write(folder, manifest)
    with pytest.raises(AnalysisFileError) as caught:
        load_analysis(folder)
    assert "12345" not in str(caught.value) and "12,345" not in str(caught.value)


def test_unreferenced_npz_entries_are_never_read(saved: Path, tmp_path: Path) -> None:
    """An extra entry (here one declaring 10^12 elements) is skipped, not loaded."""
    folder = tmp_path / "analysis"
    shutil.copytree(saved, folder)
    _rewrite_npz(folder, {"bomb.npy": _npy_header((10**12,), "<f8", b"\0" * 64)})
    loaded = load_analysis(folder)
    assert loaded.layers == ["conv", "fc"]


def test_a_new_field_is_validated_with_no_code_of_its_own(tmp_path: Path) -> None:
    """A field added to a result type is checked against its annotation generically."""
    from dataclasses import dataclass

    @store.register_dataclass
    @dataclass
    class _NewResult:
        counts: np.ndarray
        label: str
        weights: list[float]
        extra: dict[str, int] | None = None

    store.save_analysis(_NewResult(np.arange(3), "ok", [1.0]), tmp_path / "a")
    assert load_analysis(tmp_path / "a", expected=_NewResult).label == "ok"
    for name, value in (("label", 3), ("weights", ["x"]), ("extra", {"__dict__": {"k": 1.5}})):
        manifest = _manifest(tmp_path / "a")
        manifest["analysis"]["fields"][name] = value
        _write(tmp_path / "a", manifest)
        with pytest.raises(AnalysisFileError, match=f"_NewResult.{name}"):
            load_analysis(tmp_path / "a", expected=_NewResult)
        store.save_analysis(_NewResult(np.arange(3), "ok", [1.0]), tmp_path / "a")


def test_an_oversized_manifest_is_refused_before_reading(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "analysis"
    shutil.copytree(saved, folder)
    monkeypatch.setattr(store_files, "MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(AnalysisFileError, match="more than"):
        load_analysis(folder)
