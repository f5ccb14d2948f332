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
            "sha256": store.sha256_file(path),
            "bytes": path.stat().st_size,
        }
        self.manifest["manifest_sha256"] = store.canonical_digest(self.manifest)
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
    if analysis.images is None:  # the stand-in: one blank image seen N times, no memory each
        assert data.strides[0] == 0 and len(data) == needed_images(analysis)


def needed_images(analysis: Any) -> int:
    return max(int(r.cloud.image_index.max()) + 1 for r in analysis.layer_results)


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


def _both(edit: Callable[[SavedEdit], None], second: Callable[[SavedEdit], None]):
    def both(e: SavedEdit) -> None:
        edit(e)
        second(e)

    return both


def _every_cloud(name: str, value: Any) -> Callable[[SavedEdit], None]:
    """Set a field of every cloud of the base and of its variant."""

    def edit(e: SavedEdit) -> None:
        for tree in (e.tree, variant_tree(e.tree)):
            for result in fields(tree)["layer_results"]:
                fields(fields(result)["cloud"])[name] = value

    return edit


def _no_images(e: SavedEdit) -> None:
    fields(e.tree)["images"] = None
    fields(variant_tree(e.tree))["images"] = None


def _drop(locate: Callable[[dict], dict], name: str) -> Callable[[SavedEdit], None]:
    def edit(e: SavedEdit) -> None:
        del locate(e.tree)[name]

    return edit


def _drift_arrays_of_length(n: int) -> Callable[[SavedEdit], None]:
    """Every drift of the comparison scores ``n`` images, and the comparison says so."""

    def edit(e: SavedEdit) -> None:
        comparison = fields(fields(fields(e.tree)["variants"][0])["comparison"])
        comparison["n_images"] = n
        for node in comparison["drifts"]:
            drift_fields = fields(node)
            drift_fields["image_score"] = e.new_array(np.linspace(0, 1, n))
            drift_fields["mapper_moved"] = e.new_array(np.ones(n, bool))
            drift_fields["cluster_moved"] = e.new_array(np.ones(n, bool))

    return edit


def _hull(i: int) -> Callable[[dict], dict]:
    return lambda tree: {"hull": part(tree, "blobs")["hulls"][i]}


def _variant_is_a_cloud(e: SavedEdit) -> None:
    fields(fields(e.tree)["variants"][0])["analysis"] = layer(e.tree)["cloud"]


def _variant(locate: Callable[[dict], dict]) -> Callable[[dict], dict]:
    return lambda tree: locate(variant_tree(tree))


def _diagram(dim: int) -> Callable[[dict], dict]:
    return lambda tree: {"d": part(tree, "persistence")["diagrams"][dim]}


def _images_of(shape: tuple[int, ...], dtype: Any = np.float32) -> Callable[[np.ndarray], Any]:
    return lambda _old: np.zeros(shape, dtype=dtype)


_P = "persistence"
#: name -> (edit, what the refusal says; "" when the edited analysis must load and read)
CASES: dict[str, tuple[Callable[[SavedEdit], None], str]] = {
    # class codes: labels and predictions against the class names and the model's outputs
    "a label code of 10^12": (
        _array_edit(_top, "labels", lambda a: _with(a, 0, 10**12)),
        "label 1000000000000 has no class name",
    ),
    "a label code of 10^12 without class names": (
        _both(
            _set_field(_top, "class_names", None),
            _array_edit(_top, "labels", lambda a: _with(a, 0, 10**12)),
        ),
        "label 1000000000000 is not a class code",
    ),
    "labels of text": (_array_edit(_top, "labels", lambda a: a.astype(str)), "class codes"),
    "a prediction code of 10^12": (
        _array_edit(_top, "predictions", lambda a: _with(a, 0, 10**12)),
        "prediction 1000000000000 is not a class index",
    ),
    "a prediction past the probabilities' classes": (
        _array_edit(_top, "predictions", lambda a: _with(a, 0, 4)),
        "prediction 4 is not a class index",
    ),
    "a prediction code of -7": (
        _array_edit(_top, "predictions", lambda a: _with(a, 0, -7)),
        "predictions hold -7",
    ),
    "20000 class names": (
        _set_field(_top, "class_names", [f"c{i}" for i in range(20_000)]),
        "20,000 class names",
    ),
    # lengths against the image count
    "predictions shorter than the images": (
        _array_edit(_top, "predictions", lambda a: a[:10]),
        "10 predictions were saved but the clouds refer to 48 images",
    ),
    "labels shorter than the images": (
        _array_edit(_top, "labels", lambda a: a[:10]),
        "10 labels were saved",
    ),
    "probabilities of one row": (
        _array_edit(_top, "probabilities", lambda a: a[:1]),
        "1 probabilities were saved",
    ),
    "probabilities 1-D": (
        _array_edit(_top, "probabilities", lambda a: a[:, 0]),
        "probabilities is not a 2-D",
    ),
    "the provenance's image count 10^12": (
        _set_field(provenance, "n_images", 10**12),
        "image count",
    ),
    "the provenance's image count a string": (
        _set_field(provenance, "n_images", "many"),
        "image count",
    ),
    "the provenance's notes a list": (_set_field(provenance, "notes", [1, 2]), "notes"),
    # images against image_shape
    "image_shape 10^6 x 10^6 with the images saved": (
        _every_cloud("image_shape", {"__tuple__": [10**6, 10**6]}),
        "the saved images are 8x8 pixels but the clouds were made from 1000000x1000000",
    ),
    "image_shape 10^6 x 10^6 without images": (
        _both(_no_images, _every_cloud("image_shape", {"__tuple__": [10**6, 10**6]})),
        "larger than any model input",
    ),
    "image_shape of one layer differs": (
        _set_field(lambda t: layer(t, 1)["cloud"]["fields"], "image_shape", {"__tuple__": [9, 9]}),
        "different shapes",
    ),
    "images 9x9 for 8x8 clouds": (
        _array_edit(_top, "images", _images_of((N_IMAGES, 9, 9, 3))),
        "9x9 pixels",
    ),
    "images of text": (
        _array_edit(_top, "images", _images_of((N_IMAGES, 8, 8, 3), "<U2")),
        "are not \\(N, H, W\\)",
    ),
    "images of complex numbers": (
        _array_edit(_top, "images", _images_of((N_IMAGES, 8, 8, 3), np.complex64)),
        "are not \\(N, H, W\\)",
    ),
    "images with 2 channels": (
        _array_edit(_top, "images", _images_of((N_IMAGES, 8, 8, 2))),
        "are not \\(N, H, W\\)",
    ),
    "images 2-D": (_array_edit(_top, "images", _images_of((8, 8))), "are not \\(N, H, W\\)"),
    "fewer images than the clouds refer to": (
        _array_edit(_top, "images", lambda a: a[:5]),
        "refer to image 47 of 5 saved images",
    ),
    # per layer: diagrams, Betti grids, labels of the points
    "an H1 diagram of shape (k, 3)": (
        _array_edit(_diagram(1), "d", lambda a: np.zeros((len(a), 3))),
        "H1 persistence diagram is not a \\(n, 2\\)",
    ),
    "an H0 diagram 1-D": (
        _array_edit(_diagram(0), "d", lambda a: a[:, 0]),
        "H0 persistence diagram",
    ),
    "an H1 bar with a NaN death": (
        _array_edit(_diagram(1), "d", lambda a: _with(a, (0, 1), np.nan)),
        "not 0 <= birth <= death",
    ),
    "an H0 bar dying before its birth": (
        _array_edit(_diagram(0), "d", lambda a: _with(a, (0, 0), 5.0 + a[0, 1])),
        "not 0 <= birth <= death",
    ),
    "a Betti grid shorter than the curves": (
        _array_edit(lambda t: part(t, _P), "betti_grid", lambda a: a[:50]),
        "Betti curves",
    ),
    "Betti curves for one dimension of two": (
        _array_edit(lambda t: part(t, _P), "betti_curves", lambda a: a[:1]),
        "Betti curves",
    ),
    "total persistence of one dimension": (
        _array_edit(lambda t: part(t, _P), "total_persistence", lambda a: a[:1]),
        "total_persistence",
    ),
    "point labels that are not the images' labels": (
        _array_edit(layer, "point_labels", lambda a: (a + 1) % 3),
        "point labels are not its images' labels",
    ),
    "PH-dimension sizes that are not integers": (
        _array_edit(lambda t: part(t, "phdim"), "sizes", lambda a: a + 0.5),
        "sizes are not integers",
    ),
    "points_before_cap a string": (
        _set_field(lambda t: part(t, "cloud")["meta"]["__dict__"], "points_before_cap", "lots"),
        "points before the cap",
    ),
    # cluster flow: ids, bands
    "a flow band from cluster 999": (
        _array_edit(lambda t: part(t, "flow"), "flows", lambda a: _with(a, (0, 1), 999)),
        "band from cluster 999",
    ),
    "a flow band of 10^9 points": (
        _array_edit(lambda t: part(t, "flow"), "flows", lambda a: _with(a, (0, 3), 10**9)),
        "holds 1000000000 points",
    ),
    "a flow cluster id of -5": (
        _array_edit(lambda t: part(t, "flow"), "memberships", lambda a: _with(a, (1, 0), -5)),
        "memberships are not cluster ids",
    ),
    # blob graph: coordinates, hulls
    "blob coordinates (n, 3)": (
        _array_edit(lambda t: part(t, "blobs"), "coords", lambda a: np.zeros((len(a), 3))),
        "blob coordinates",
    ),
    "blob coordinates one row short": (
        _both(
            _array_edit(lambda t: part(t, "blobs"), "coords", lambda a: a[:-1]),
            _both(
                _array_edit(lambda t: part(t, "blobs"), "cluster", lambda a: a[:-1]),
                _array_edit(lambda t: part(t, "blobs"), "labels", lambda a: a[:-1]),
            ),
        ),
        "blob graph has 95 points for 96",
    ),
    "blob labels not the points' labels": (
        _array_edit(lambda t: part(t, "blobs"), "labels", lambda a: (a + 1) % 3),
        "blob graph colours other labels",
    ),
    "a blob hull of shape (k, 3)": (
        _array_edit(_hull(0), "hull", lambda a: np.zeros((len(a), 3))),
        "blob hull",
    ),
    "a blob hull of a cluster no point is in": (
        _array_edit(lambda t: part(t, "blobs"), "hull_clusters", lambda a: _with(a, 0, 999)),
        "no point is in",
    ),
    # Mapper
    "a Mapper node of class 10^12": (
        _array_edit(lambda t: part(t, "mapper"), "dominant_class", lambda a: _with(a, 0, 10**12)),
        "Mapper node's class",
    ),
    "a Mapper layout (n, 3)": (
        _array_edit(layer, "mapper_layout", lambda a: np.zeros((len(a), 3))),
        "Mapper layout",
    ),
    "a Mapper layout with NaN": (
        _array_edit(layer, "mapper_layout", lambda a: _with(a, (0, 0), np.nan)),
        "Mapper layout",
    ),
    "Mapper purity of text": (
        _array_edit(lambda t: part(t, "mapper"), "purity", lambda a: a.astype(str)),
        "purity is",
    ),
    "Mapper node sizes of floats": (
        _array_edit(lambda t: part(t, "mapper"), "size", lambda a: a + 0.5),
        "size is",
    ),
    "flow thresholds of text": (
        _array_edit(lambda t: part(t, "flow"), "thresholds", lambda a: a.astype(str)),
        "thresholds are not numbers",
    ),
    "the H1 route's pilot point count a string": (
        _set_field(lambda t: part(t, _P)["h1_route"]["__dict__"], "pilot_points", "many"),
        "pilot_points",
    ),
    # dendrogram: order, shapes
    "a dendrogram order past its points": (
        _array_edit(lambda t: part(t, "dendrogram"), "order", lambda a: _with(a, 0, 10**6)),
        "order is not an order of its 30 points",
    ),
    "a dendrogram order repeating a point": (
        _array_edit(lambda t: part(t, "dendrogram"), "order", lambda a: _with(a, 0, a[1])),
        "order is not an order",
    ),
    "dendrogram distances (n, n + 1)": (
        _array_edit(lambda t: part(t, "dendrogram"), "distances", lambda a: np.zeros((30, 31))),
        "distances",
    ),
    "dendrogram icoord one merge short": (
        _array_edit(lambda t: part(t, "dendrogram"), "icoord", lambda a: a[:-1]),
        "icoord",
    ),
    # layer x layer matrices
    "a layer-distance matrix 3 x 3 for 2 layers": (
        _array_edit(
            lambda t: fields(t)["layer_distances"]["__dict__"],
            "sliced_wasserstein",
            lambda a: np.zeros((3, 3)),
        ),
        "sliced_wasserstein matrix",
    ),
    "the CKA matrix missing": (
        _drop(lambda t: fields(t)["layer_distances"]["__dict__"], "cka"),
        "cka matrix",
    ),
    # nested variant analyses and their comparison
    "a variant's label code of 10^12": (
        _array_edit(_variant(_top), "labels", lambda a: _with(a, 0, 10**12)),
        "variant 'gaussian:0.1'.*no class name",
    ),
    "a variant's dendrogram order out of range": (
        _array_edit(
            _variant(lambda t: part(t, "dendrogram")), "order", lambda a: _with(a, 0, 10**6)
        ),
        "order is not an order",
    ),
    "a variant's images 9x9": (
        _array_edit(_variant(_top), "images", _images_of((N_IMAGES, 9, 9, 3))),
        "9x9 pixels",
    ),
    "a variant's image numbers past the base's images (no own images)": (
        _both(
            _set_field(_variant(_top), "images", None),
            _array_edit(_variant(lambda t: part(t, "cloud")), "image_index", lambda a: a + 1000),
        ),
        "variant 'gaussian:0.1'.*refer to image",
    ),
    # the field checks see the types of the nested results (Variant.analysis: Analysis)
    "a variant that is a point cloud": (
        _variant_is_a_cloud,
        "Variant.analysis holds a PointCloud where a Analysis belongs",
    ),
    "a variant that is a number": (
        _set_field(_top, "variants", [7]),
        "Analysis.variants holds item 0: int 7 where a Variant belongs",
    ),
    "a comparison of 10^6 images": (
        _set_field(
            lambda t: fields(fields(fields(t)["variants"][0])["comparison"]),
            "n_images",
            10**6,
        ),
        "scores 48 images of the 1000000 compared",
    ),
    "a comparison scoring more images than saved": (
        _drift_arrays_of_length(500),
        "covers 500 of 48 images",
    ),
    "a drift at a layer the variant lacks": (
        _set_field(drift, "layer", "nowhere"),
        "not in both",
    ),
    "a drift with moved flags of another length": (
        _array_edit(drift, "mapper_moved", lambda a: a[:3]),
        "mapper_moved has 3 entries for 48",
    ),
    "a drift whose quality numbers differ": (
        _drop(lambda t: drift(t)["quality_variant"]["__dict__"], "purity"),
        "same quality numbers",
    ),
    # edits that leave a consistent analysis: loaded, and every reader reads it (one
    # case: the report and the views take seconds per analysis)
    "images not kept, no image count, a huge finite bar": (
        _both(
            _both(_no_images, _drop(provenance, "n_images")),
            _array_edit(_diagram(1), "d", lambda a: _with(a, (0, 1), 1e300)),
        ),
        "",
    ),
}


def _placement(tree: dict) -> dict:
    return part(tree, "placement")


CASES.update(
    {
        "placement core flags of another length": (
            _array_edit(_placement, "member_core", lambda a: a[:3]),
            "placement index has 3 core flags",
        ),
        "placement core flags that are not booleans": (
            _array_edit(_placement, "member_core", lambda a: a.astype(np.int64)),
            "core flags are not a 1-D boolean array",
        ),
        "placement cubes whose lower bound passes the upper": (
            _array_edit(_placement, "cube_lower", lambda a: a + 1e6),
            "cube intervals are not finite",
        ),
        "placement node in a cube that does not exist": (
            _array_edit(_placement, "node_cube", lambda a: a + 1000),
            "puts a node in cube",
        ),
        "placement cubes of another lens width": (
            _both(
                _array_edit(_placement, "cube_lower", lambda a: np.tile(a, (1, 2))),
                _array_edit(_placement, "cube_upper", lambda a: np.tile(a, (1, 2))),
            ),
            "lens dimensions for 1",
        ),
        "placement eps that is not positive": (
            _set_field(_placement, "eps", -1.0),
            "eps -1.0 is not a positive number",
        ),
        "placement node numbers for another graph": (
            _array_edit(_placement, "node_cluster", lambda a: a[:1]),
            "numbers 1 nodes",
        ),
        # an analysis saved before placement was recorded: read (placement rebuilds it)
        "an analysis saved without a placement index": (
            _both(
                _set_field(lambda t: layer(t, 0), "placement", None),
                _set_field(lambda t: layer(t, 1), "placement", None),
            ),
            "",
        ),
    }
)


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


def test_a_variant_saved_alone_gets_the_field_checks_of_its_analysis(
    saved: Path, tmp_path: Path
) -> None:
    """A variant's analysis is typed (``Variant.analysis: Analysis``), so the field checks
    refuse a variant whose analysis is something else even where no whole-analysis
    check runs (a Variant saved and loaded on its own)."""
    from napari_topolens.robustness import Variant

    variant = load_analysis(saved).variants[0]
    folder = tmp_path / "variant"
    store.save_analysis(variant, folder)
    assert isinstance(load_analysis(folder, expected=Variant).analysis, Analysis)
    e = SavedEdit(folder)
    fields(e.tree)["analysis"] = layer(fields(e.tree)["analysis"])["cloud"]
    e.seal()
    with pytest.raises(AnalysisFileError, match="Variant.analysis holds a PointCloud where"):
        load_analysis(folder, expected=Variant)


def test_the_template_loads_and_every_reader_reads_it(saved: Path) -> None:
    analysis = load_analysis(saved)
    assert isinstance(analysis, Analysis) and len(analysis.variants) == 1
    read_everything(analysis)


def test_readers_size_nothing_by_a_class_code(saved: Path) -> None:
    """Beside the loader's checks, the readers themselves tally codes by the codes present:
    an in-memory analysis (not loaded, so not checked) with codes of 10^12 still reads."""
    analysis = load_analysis(saved)
    huge = 10**12
    analysis.class_names = None
    analysis.labels = np.where(analysis.labels == 2, huge, analysis.labels)
    analysis.predictions = np.where(analysis.predictions == 1, huge, analysis.predictions)
    for result in analysis.layer_results:
        result.point_labels = analysis.labels[result.cloud.image_index]
        result.blobs.labels = result.point_labels
        result.flow.memberships[0] = result.point_labels  # the label stage, and its bands
        result.flow.flows[(result.flow.flows[:, 0] == 0) & (result.flow.flows[:, 1] == 2), 1] = huge
    analysis.variants = []
    read_everything(analysis)
