"""A saved analysis that passes the integrity checks must still be consistent before anyone reads it.

Each case edits a real saved analysis (with labels, class names, predictions,
probabilities, images and a variant) as a hostile or careless user who read the
format would, and recomputes both checksums so the edit passes the integrity
check. Loading must then either refuse it with one ``AnalysisFileError`` naming
what is wrong, or give an analysis that every reader handles: the report
(``render_report``) and the napari view data (``ui.view_data``, built without a
viewer) never raise, and nothing is allocated by a number the file chose.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_topolens.activations.pointcloud import PointCloud
from napari_topolens.errors import AnalysisFileError
from napari_topolens.topology import store
from napari_topolens.topology.analysis import Analysis, AnalysisConfig, analyze
from napari_topolens.topology.store import load_analysis

N_IMAGES = 48


def _clouds(rng: np.random.Generator, labels: np.ndarray, shift: float = 0.0) -> list[PointCloud]:
    clouds = []
    centres = {"conv": rng.normal(scale=6, size=(3, 4)), "fc": rng.normal(scale=6, size=(3, 3))}
    # conv: spatial, 2 positions per image with a 4x4 receptive field each
    image_index = np.repeat(np.arange(N_IMAGES), 2)
    points = centres["conv"][labels[image_index]] + rng.normal(size=(2 * N_IMAGES, 4)) + shift
    position = np.tile([[0, 0], [1, 1]], (N_IMAGES, 1))
    clouds.append(
        PointCloud(
            layer="conv",
            points=points.astype(np.float32),
            image_index=image_index,
            position=position,
            receptive_field=np.column_stack([4 * position, 4 * position + 4]),
            sampling="all_positions",
            grid_shape=(2, 2),
            image_shape=(8, 8),
        )
    )
    points = centres["fc"][labels] + rng.normal(size=(N_IMAGES, 3)) + shift
    clouds.append(
        PointCloud(
            layer="fc",
            points=points.astype(np.float32),
            image_index=np.arange(N_IMAGES),
            position=None,
            receptive_field=np.tile([0, 0, 8, 8], (N_IMAGES, 1)),
            sampling="pooled",
            grid_shape=(),
            image_shape=(8, 8),
        )
    )
    return clouds


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_topolens.robustness.comparison import compare
    from napari_topolens.robustness.study import Variant, VariantSpec

    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(3), N_IMAGES // 3)
    probabilities = rng.dirichlet(np.ones(4), size=N_IMAGES)
    predictions = probabilities.argmax(axis=1)
    images = rng.random((N_IMAGES, 8, 8, 3)).astype(np.float32)
    config = AnalysisConfig(
        h1_max_points=40, phdim_start=20, phdim_step=10, dendrogram_max_points=30
    )
    common = dict(
        config=config,
        class_names=["x", "y", "z"],
        probabilities=probabilities,
        predictions=predictions,
        provenance={"sample": "consistency"},
    )
    base = analyze(_clouds(rng, labels), labels, images=images, **common)
    variant = analyze(_clouds(rng, labels, 0.3), labels, images=images + 0.1, **common)
    variant.provenance["variant"] = "gaussian:0.1"
    spec = VariantSpec(perturbation="gaussian", strength=0.1)
    base.variants = [
        Variant(spec.name, spec, variant, compare(base, variant, variant_name=spec.name))
    ]
    folder = tmp_path_factory.mktemp("consistency") / "analysis"
    base.save(folder)
    return folder


# ------------------------------------------------------------------------- the edit helper


class SavedEdit:
    """Edit a saved analysis in place, then recompute both checksums.

    ``tree`` is analysis.json's analysis tree; :meth:`array` and :meth:`set_array`
    read and replace the arrays it refers to (by the tree node holding the
    reference); :meth:`seal` rewrites arrays.npz and records its new size and
    sha256, then the manifest's own checksum, so the edit passes the integrity
    check and only the consistency checks can catch it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = json.loads((folder / store.MANIFEST_NAME).read_text())
        with zipfile.ZipFile(folder / store.ARRAYS_NAME) as archive:
            self.members = {info.filename: archive.read(info) for info in archive.infolist()}

    @property
    def tree(self) -> dict:
        return self.manifest["analysis"]

    def array(self, node: dict) -> np.ndarray:
        return np.load(io.BytesIO(self.members[node["__array__"] + ".npy"]), allow_pickle=False)

    def set_array(self, node: dict, value: Any) -> None:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
        self.members[node["__array__"] + ".npy"] = buffer.getvalue()

    def new_array(self, value: Any) -> dict:
        """A reference to a new array member holding ``value``."""
        key = f"edit{len(self.members)}"
        node = {"__array__": key}
        self.set_array(node, value)
        return node

    def seal(self) -> None:
        path = self.folder / store.ARRAYS_NAME
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, data in self.members.items():
                archive.writestr(name, data)
        path.write_bytes(buffer.getvalue())
        self.manifest["files"][store.ARRAYS_NAME] = {
            "sha256": store._sha256(path),
            "bytes": path.stat().st_size,
        }
        self.manifest["manifest_sha256"] = store._canonical_digest(self.manifest)
        (self.folder / store.MANIFEST_NAME).write_text(json.dumps(self.manifest))


def fields(node: dict) -> dict:
    return node["fields"]


def layer(tree: dict, i: int = 0) -> dict:
    return fields(fields(tree)["layer_results"][i])


def part(tree: dict, name: str, i: int = 0) -> dict:
    return fields(layer(tree, i)[name])


def variant_tree(tree: dict) -> dict:
    return fields(fields(tree)["variants"][0])["analysis"]


def drift(tree: dict, i: int = 0) -> dict:
    comparison = fields(fields(tree)["variants"][0])["comparison"]
    return fields(fields(comparison)["drifts"][i])


def provenance(tree: dict) -> dict:
    return fields(tree)["provenance"]["__dict__"]


# ------------------------------------------------------------------------- the readers


def read_everything(analysis: Any) -> None:
    """Every reader of a loaded analysis: the report page and the napari view data."""
    from napari_topolens.report.html import render_report

    render_report(analysis)
    for one in (analysis, *(v.analysis for v in analysis.variants)):
        build_views(one)


def build_views(analysis: Any) -> None:
    from napari_topolens.layout.mapper import mapper_layout
    from napari_topolens.ui import view_data as vd

    for name in analysis.layers:
        result = analysis[name]
        graph = result.mapper
        saved = result.mapper_layout
        layout = (
            np.asarray(saved, dtype=np.float64)
            if saved is not None and np.shape(saved) == (graph.n_nodes, 2)
            else mapper_layout(graph, seed=int(analysis.config.seed))
        )
        for panel in vd.ALL_PANELS:
            vd.group_layer_data("frame", analysis, name, "k", 0, layout, panel)
            vd.group_layer_data(vd.panel_group(panel), analysis, name, "k", 0, layout, panel)
        for color_by in vd.COLOR_BY:
            if color_by in vd.NEEDS_PREDICTIONS and vd.analysis_predictions(analysis) is None:
                continue
            vd.mapper_layer_data(analysis, name, "k", 0, layout, color_by=color_by)
        cloud = result.cloud
        members = np.arange(len(cloud))
        heat = vd.overlay_for_members(cloud, members, int(cloud.image_index.max()) + 1)
        chosen = vd.member_images(cloud, members)[: vd.GALLERY_TILES]
        labels = analysis.labels
        tile_classes = np.array(
            [int(labels[i]) if labels is not None and i < len(labels) else -1 for i in chosen]
        )
        vd.gallery_mosaic(analysis.images, heat, chosen, tile_classes=tile_classes)
        for code in tile_classes:
            vd.class_name(int(code), analysis.class_names)
    data, _kwargs, _kind = vd.images_layer_data(analysis, "k")
    assert data.ndim in (3, 4)


# ------------------------------------------------------------------------- the cases


def _set_field(
    locate: Callable[[dict], dict], name: str, value: Any
) -> Callable[[SavedEdit], None]:
    def edit(e: SavedEdit) -> None:
        locate(e.tree)[name] = value

    return edit


def _array_edit(
    locate: Callable[[dict], dict], name: str, change: Callable[[np.ndarray], Any]
) -> Callable[[SavedEdit], None]:
    def edit(e: SavedEdit) -> None:
        node = locate(e.tree)[name]
        e.set_array(node, change(e.array(node)))

    return edit


def _with(array: np.ndarray, index: Any, value: Any) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


def _top(tree: dict) -> dict:
    return fields(tree)


CASES: dict[str, tuple[Callable[[SavedEdit], None], str]] = {
    "a label code of 10^12": (
        _array_edit(_top, "labels", lambda a: _with(a, 0, 10**12)),
        "no class name",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_inconsistent_saved_analysis_is_refused_or_read(
    case: str, saved: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "analysis"
    shutil.copytree(saved, folder)
    edit, message = CASES[case]
    e = SavedEdit(folder)
    edit(e)
    e.seal()
    if message:
        with pytest.raises(AnalysisFileError, match=message):
            load_analysis(folder)
    else:
        read_everything(load_analysis(folder))


def test_the_template_loads_and_every_reader_reads_it(saved: Path) -> None:
    analysis = load_analysis(saved)
    assert isinstance(analysis, Analysis) and len(analysis.variants) == 1
    read_everything(analysis)
