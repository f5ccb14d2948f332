"""The Analysis object: every step per layer, the cross-layer matrices, progress and cancel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_topolens._progress import drive
from napari_topolens.activations.pointcloud import PointCloud
from napari_topolens.errors import (
    Cancelled,
    EmptySelectionError,
    ImageError,
    LayerError,
    TopoLensError,
)
from napari_topolens.topology.analysis import Analysis, AnalysisConfig, analyze, iter_analyze
from napari_topolens.topology.distances import linear_cka

N_IMAGES = 90
FAST = dict(h1_max_points=60, phdim_start=30, phdim_step=20, dendrogram_max_points=50)


def _blobs(rng: np.random.Generator, labels: np.ndarray, dim: int, spread: float) -> np.ndarray:
    centres = rng.normal(scale=10.0, size=(3, dim))
    return (centres[labels] + rng.normal(scale=spread, size=(len(labels), dim))).astype(np.float32)


def _pooled(name: str, points: np.ndarray) -> PointCloud:
    n = len(points)
    return PointCloud(
        layer=name,
        points=points,
        image_index=np.arange(n),
        position=None,
        receptive_field=np.tile([0, 0, 8, 8], (n, 1)),
        sampling="pooled",
        grid_shape=(),
        image_shape=(8, 8),
    )


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.repeat(np.arange(3), N_IMAGES // 3)


@pytest.fixture(scope="module")
def clouds(labels: np.ndarray) -> dict[str, PointCloud]:
    rng = np.random.default_rng(0)
    # 'early' mixes the classes, 'late' separates them: the quality must see the difference
    early = rng.normal(size=(N_IMAGES, 6)).astype(np.float32)
    late = _blobs(rng, labels, 4, 0.3)
    # a spatial layer: two positions per image, for the CKA alignment by image
    spatial_points = np.repeat(late, 2, axis=0) + rng.normal(
        scale=0.1, size=(2 * N_IMAGES, 4)
    ).astype(np.float32)
    spatial = PointCloud(
        layer="spatial",
        points=spatial_points,
        image_index=np.repeat(np.arange(N_IMAGES), 2),
        position=np.tile([[1, 1], [2, 2]], (N_IMAGES, 1)),
        receptive_field=np.tile([0, 0, 4, 4], (2 * N_IMAGES, 1)),
        sampling="random_position",
        grid_shape=(4, 4),
        image_shape=(8, 8),
    )
    return {"early": _pooled("early", early), "late": _pooled("late", late), "spatial": spatial}


@pytest.fixture(scope="module")
def analysis(clouds: dict[str, PointCloud], labels: np.ndarray) -> Analysis:
    probabilities = np.random.default_rng(1).dirichlet(np.ones(3), size=N_IMAGES)
    return analyze(
        clouds,
        labels,
        config=AnalysisConfig(**FAST),
        class_names=["a", "b", "c"],
        probabilities=probabilities,
        provenance={"sample": "synthetic"},
    )


def test_layers_in_forward_order_and_lookup_by_name(analysis: Analysis) -> None:
    assert analysis.layers == ["early", "late", "spatial"]
    assert analysis["late"].name == "late"
    assert "late" in analysis and "nope" not in analysis
    with pytest.raises(LayerError, match=r"'nope'.*early, late, spatial"):
        analysis["nope"]


def test_every_step_is_computed_on_the_layer_cloud(analysis: Analysis, clouds, labels) -> None:
    for name, cloud in clouds.items():
        result = analysis[name]
        m = len(cloud)
        assert result.cloud is cloud
        np.testing.assert_array_equal(result.point_labels, labels[cloud.image_index])
        assert result.persistence.n_points == m
        assert len(result.persistence.diagrams[0]) == m  # H0 of the full cloud
        assert len(result.persistence.h1_index) == FAST["h1_max_points"]  # H1 on landmarks
        # the default route picks the landmark kind by cost and closeness, and says so
        assert result.persistence.subsample in ("maxmin", "random")
        assert result.persistence.h1_route["route"] == result.persistence.subsample
        assert result.mapper.lens.shape == (m,)
        assert result.mapper.class_counts.shape[1] == 3
        assert np.isfinite(result.phdim.dimension)
        assert result.class_persistence is not None and len(result.class_persistence.classes) == 3
        best = result.flow.memberships[result.flow.best_stage]
        np.testing.assert_array_equal(result.best_clusters, best)
        np.testing.assert_array_equal(result.blobs.cluster, best)
        np.testing.assert_array_equal(result.blobs.labels, result.point_labels)
        assert len(result.dendrogram.index) == FAST["dendrogram_max_points"]
        assert set(result.seconds) >= {"persistence", "mapper", "phdim", "quality"}


def test_quality_sees_separated_classes(analysis: Analysis) -> None:
    assert analysis["late"].quality.ari > 0.9
    assert analysis["late"].quality.purity > 0.9
    assert analysis["early"].quality.ari < 0.5


def test_layer_matrices(analysis: Analysis, clouds) -> None:
    assert set(analysis.layer_distances) == {
        "sliced_wasserstein",
        "bottleneck",
        "wasserstein",
        "cka",
    }
    for key, matrix in analysis.layer_distances.items():
        assert matrix.shape == (3, 3)
        np.testing.assert_allclose(matrix, matrix.T)
        if key != "cka":
            np.testing.assert_array_equal(np.diag(matrix), 0.0)
            assert matrix[0, 1] > 0
    cka = analysis.layer_distances["cka"]
    np.testing.assert_allclose(np.diag(cka), 1.0)
    # the spatial layer's two points per image are averaged per image before CKA
    spatial = clouds["spatial"]
    per_image = spatial.points.reshape(N_IMAGES, 2, -1).astype(np.float64).mean(axis=1)
    expected = linear_cka(clouds["late"].points.astype(np.float64), per_image)
    assert cka[1, 2] == pytest.approx(expected, rel=1e-9)
    assert "aligned by image index" in analysis.provenance["notes"]["cka"]


def test_provenance(analysis: Analysis) -> None:
    record = analysis.provenance
    assert record["sample"] == "synthetic"
    assert record["seeds"]["analysis"] == 0
    assert {"numpy", "scipy", "gudhi", "kmapper", "scikit-learn", "napari-topolens"} <= set(
        record["libraries"]
    )
    assert record["created"]
    assert analysis.class_names == ["a", "b", "c"]
    assert analysis.n_classes == 3


def test_progress_is_monotone_per_layer_and_step(clouds, labels) -> None:
    steps = iter_analyze(clouds, labels, config=AnalysisConfig(**FAST))
    seen = []
    try:
        while True:
            seen.append(next(steps))
    except StopIteration as done:
        result = done.value
    assert isinstance(result, Analysis)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] == 0.0
    messages = " ".join(p.message for p in seen)
    for name in clouds:
        assert f"{name}: Mapper" in messages and f"{name}: persistence" in messages


def test_cancel_stops_between_steps(clouds, labels) -> None:
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        analyze(clouds, labels, config=AnalysisConfig(**FAST), cancel=cancel)
    assert len(calls) == 4


def test_probability_lens(clouds, labels) -> None:
    with pytest.raises(TopoLensError, match="probabilit"):
        analyze(
            {"late": clouds["late"]},
            labels,
            config=AnalysisConfig(mapper_lens="probability", **FAST),
        )
    probabilities = np.random.default_rng(2).dirichlet(np.ones(3), size=N_IMAGES)
    result = analyze(
        {"spatial": clouds["spatial"]},
        labels,
        config=AnalysisConfig(mapper_lens="probability", **FAST),
        probabilities=probabilities,
    )
    mapper = result["spatial"].mapper
    assert mapper.params["lens"] == "probability"
    # per image -> per point through image_index
    np.testing.assert_allclose(
        mapper.lens, probabilities.max(axis=1)[clouds["spatial"].image_index]
    )


def test_without_labels(clouds) -> None:
    result = analyze({"late": clouds["late"]}, config=AnalysisConfig(**FAST))
    layer = result["late"]
    assert result.labels is None and result.n_classes == 0
    assert layer.class_persistence is None
    assert np.all(layer.point_labels == -1)
    assert math.isnan(layer.quality.purity) and math.isnan(layer.quality.ari)
    assert np.isfinite(layer.quality.silhouette)  # needs no labels
    assert np.all(layer.mapper.dominant_class == -1)


def test_bad_input(clouds, labels) -> None:
    with pytest.raises(EmptySelectionError):
        analyze({})
    with pytest.raises(ImageError, match="labels"):
        analyze(clouds, labels[:10], config=AnalysisConfig(**FAST))
    with pytest.raises(ImageError, match="class name"):
        analyze(
            {"late": clouds["late"]}, labels, class_names=["a", "b"], config=AnalysisConfig(**FAST)
        )
    tiny = _pooled("tiny", np.zeros((2, 3), np.float32))
    with pytest.raises(EmptySelectionError, match="tiny"):
        analyze({"tiny": tiny})
    broken = _pooled("broken", np.full((20, 3), np.nan, np.float32))
    with pytest.raises(LayerError, match="non-finite"):
        analyze({"broken": broken})


def test_config_round_trip_and_validation() -> None:
    config = AnalysisConfig(metric="cosine", mapper_eps=0.5, seed=7)
    assert AnalysisConfig.from_dict(config.to_dict()) == config
    assert AnalysisConfig().h1_max_points == 1000 and AnalysisConfig().mapper_n_cubes == 10
    assert AnalysisConfig().mapper_perc_overlap == 0.5 and AnalysisConfig().phdim_start == 500
    with pytest.raises(TopoLensError, match="unknown analysis parameter"):
        AnalysisConfig.from_dict({"n_cube": 3})
    with pytest.raises(TopoLensError, match="mapper_lens"):
        AnalysisConfig(mapper_lens="magic")
    with pytest.raises(TopoLensError, match="layer_distance"):
        AnalysisConfig(layer_distance="manhattan")


def test_deterministic_given_seed(clouds, labels) -> None:
    one = analyze({"late": clouds["late"]}, labels, config=AnalysisConfig(**FAST))
    two = analyze({"late": clouds["late"]}, labels, config=AnalysisConfig(**FAST))
    np.testing.assert_array_equal(one["late"].mapper.members, two["late"].mapper.members)
    np.testing.assert_array_equal(
        one["late"].persistence.diagrams[1], two["late"].persistence.diagrams[1]
    )
    assert one["late"].phdim.dimension == two["late"].phdim.dimension


def test_images_travel_with_the_analysis_and_its_file(tmp_path):
    from napari_topolens.activations.pointcloud import PointCloud
    from napari_topolens.errors import ImageError
    from napari_topolens.topology.analysis import analyze
    from napari_topolens.topology.store import load_analysis

    rng = np.random.default_rng(0)
    images = rng.random((40, 6, 5), dtype=np.float32)
    cloud = PointCloud(
        layer="fc",
        points=rng.normal(size=(40, 4)),
        image_index=np.arange(40),
        position=None,
        receptive_field=np.tile([0, 0, 6, 5], (40, 1)),
        sampling="pooled",
        grid_shape=(),
        image_shape=(6, 5),
    )
    analysis = analyze({"fc": cloud}, rng.integers(0, 2, 40), images=images)
    assert analysis.images is not None and np.array_equal(analysis.images, images)
    again = load_analysis(analysis.save(tmp_path / "a"))
    assert again.images.dtype == np.float32 and np.array_equal(again.images, images)
    with pytest.raises(ImageError, match="refer to 40"):
        analyze({"fc": cloud}, images=images[:10])
    with pytest.raises(ImageError, match="6x5"):
        analyze({"fc": cloud}, images=rng.random((40, 5, 6), dtype=np.float32))


def test_large_clouds_are_subsampled_and_recorded():
    from napari_topolens.activations.pointcloud import PointCloud
    from napari_topolens.topology.analysis import AnalysisConfig, analyze

    rng = np.random.default_rng(1)
    n = 700
    cloud = PointCloud(
        layer="conv",
        points=rng.normal(size=(n, 3)),
        image_index=np.arange(n) // 7,
        position=np.stack([np.arange(n) % 7, np.zeros(n, int)], 1),
        receptive_field=np.tile([0, 0, 4, 4], (n, 1)),
        sampling="all_positions",
        grid_shape=(7, 1),
        image_shape=(4, 4),
    )
    analysis = analyze(
        {"conv": cloud},
        rng.integers(0, 3, 100),
        config=AnalysisConfig(max_points=250, phdim_start=50, phdim_step=50),
    )
    kept = analysis["conv"].cloud
    assert len(kept) == 250 and "250 of 700" in kept.meta["subset_note"]
    rows = [
        int(np.flatnonzero((cloud.image_index == i) & (cloud.position[:, 0] == p))[0])
        for i, p in zip(kept.image_index, kept.position[:, 0])
    ]
    np.testing.assert_array_equal(cloud.points[rows], kept.points)
    assert analysis["conv"].mapper.members.max() < 250
    assert len(analysis["conv"].persistence.diagrams[0]) == 250


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"metric": "manhattan"}, "metric"),
        ({"dendrogram_order": "random"}, "dendrogram_order"),
        ({"mapper_perc_overlap": 1.5}, "perc_overlap"),
        ({"max_dim": -1}, "max_dim"),
        ({"subsample": "every"}, "subsample"),
        ({"max_points": 0}, "max_points"),
    ],
)
def test_config_refuses_bad_values_up_front(bad, match):
    from napari_topolens.topology.analysis import AnalysisConfig

    with pytest.raises(TopoLensError, match=match):
        AnalysisConfig(**bad)


def test_channels_first_images_are_accepted():
    from napari_topolens.activations.pointcloud import PointCloud
    from napari_topolens.topology.analysis import analyze

    rng = np.random.default_rng(0)
    cloud = PointCloud(
        layer="fc",
        points=rng.normal(size=(30, 4)),
        image_index=np.arange(30),
        position=None,
        receptive_field=np.tile([0, 0, 6, 5], (30, 1)),
        sampling="pooled",
        grid_shape=(),
        image_shape=(6, 5),
    )
    rgb = rng.random((30, 6, 5, 3), dtype=np.float32)
    a = analyze({"fc": cloud}, images=np.moveaxis(rgb, -1, 1))
    np.testing.assert_array_equal(a.images, rgb)
    gray = rng.random((30, 1, 6, 5), dtype=np.float32)
    assert analyze({"fc": cloud}, images=gray).images.shape == (30, 6, 5)


def test_too_few_points_says_what_helps_for_the_layer_kind():
    from napari_topolens.activations.pointcloud import PointCloud
    from napari_topolens.topology.analysis import analyze

    def cloud(grid):
        return PointCloud(
            layer="x",
            points=np.ones((2, 3)),
            image_index=np.arange(2),
            position=None,
            receptive_field=np.tile([0, 0, 4, 4], (2, 1)),
            sampling="pooled",
            grid_shape=grid,
            image_shape=(4, 4),
        )

    with pytest.raises(EmptySelectionError, match="leave this layer out"):
        analyze({"x": cloud(())})
    with pytest.raises(EmptySelectionError, match="all_positions"):
        analyze({"x": cloud((3, 3))})


def test_predictions_travel_with_the_analysis_and_its_file(clouds, labels, tmp_path) -> None:
    from napari_topolens.topology.store import load_analysis

    predictions = labels.copy()
    predictions[::7] = (predictions[::7] + 1) % 3  # some wrong
    predictions[-1] = -1  # one image the model was not run on
    result = analyze(
        {"late": clouds["late"]},
        labels,
        config=AnalysisConfig(**FAST),
        predictions=predictions.astype(np.int32),
    )
    assert result.predictions.dtype == np.int64
    np.testing.assert_array_equal(result.predictions, predictions)
    loaded = load_analysis(result.save(tmp_path / "with_predictions"))
    np.testing.assert_array_equal(loaded.predictions, predictions)
    assert loaded.predictions.dtype == np.int64
    # without predictions the field stays None, also after a round trip
    plain = analyze({"late": clouds["late"]}, labels, config=AnalysisConfig(**FAST))
    assert plain.predictions is None
    assert load_analysis(plain.save(tmp_path / "plain")).predictions is None


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(5, np.int64), "5 predictions for at least"),
        (np.zeros(N_IMAGES, np.float32), "integer class indices"),
        (np.zeros((N_IMAGES, 2), np.int64), "1-D"),
        (np.full(N_IMAGES, -2, np.int64), "not a class index"),
    ],
)
def test_bad_predictions_are_refused(clouds, bad, match) -> None:
    with pytest.raises(ImageError, match=match):
        analyze({"late": clouds["late"]}, config=AnalysisConfig(**FAST), predictions=bad)


def test_device_reaches_each_layers_h0_tree(monkeypatch) -> None:
    """``device`` goes to the H0 tree's distance blocks; ``"cpu"`` keeps numpy."""
    import napari_topolens.topology.persistence as persistence_module

    real = persistence_module.compute_persistence
    seen: list = []

    def spy(*args, **kw):
        seen.append(kw.get("device"))
        return real(*args, **{**kw, "device": None})  # no GPU here: record, then run on numpy

    import napari_topolens.activations.device as device_module

    monkeypatch.setattr(persistence_module, "compute_persistence", spy)
    # no GPU here: the name is checked, not whether this machine has the device
    monkeypatch.setattr(device_module, "resolve_device", device_module.parse_device)
    cloud = _pooled("fc", np.random.default_rng(3).normal(size=(60, 4)))
    plain = analyze([cloud])
    on_device = analyze([cloud], device="cuda:1")
    analyze([cloud], device="cpu:0")
    assert [None if d is None else str(d) for d in seen] == [None, "cuda:1", None]
    np.testing.assert_array_equal(
        plain["fc"].persistence.linkage, on_device["fc"].persistence.linkage
    )


def test_one_layer_alone_is_that_layer_of_the_whole_analysis(
    analysis: Analysis, clouds: dict[str, PointCloud], labels: np.ndarray
) -> None:
    """``analyze_layer`` (what a Dask worker runs per layer) gives exactly the layer that
    ``analyze`` gives, capped cloud included; the cross-layer matrices are not its work."""
    from dataclasses import fields

    from napari_topolens.topology.analysis import analyze_layer

    config = AnalysisConfig(**{**FAST, "max_points": 150})  # caps 'spatial' (180 points)
    probabilities = analysis.probabilities
    whole = analyze(
        clouds, labels, config=config, class_names=["a", "b", "c"], probabilities=probabilities
    )
    for name, cloud in clouds.items():
        alone = analyze_layer(
            cloud,
            labels,
            config=config,
            class_names=["a", "b", "c"],
            probabilities=probabilities,
        )
        assert alone.name == name
        assert alone.seconds.keys() == whole[name].seconds.keys()
        for part in fields(alone):
            if part.name not in ("seconds", "name"):
                _assert_same(getattr(alone, part.name), getattr(whole[name], part.name), part.name)
    assert len(whole["spatial"].cloud) == 150


def _assert_same(a, b, where: str) -> None:
    """Equal arrays, numbers and text, recursively through dataclasses, dicts and lists."""
    import dataclasses

    assert type(a) is type(b), where
    if dataclasses.is_dataclass(a):
        for part in dataclasses.fields(a):
            if part.name != "seconds":  # times measured on the way
                _assert_same(getattr(a, part.name), getattr(b, part.name), f"{where}.{part.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in set(a) - {"seconds", "created"}:  # times measured on the way
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    elif type(a).__module__.startswith(("builtins", "numpy")):
        assert a == b, where
    else:  # an object with no equality of its own (e.g. a scipy linkage holder)
        _assert_same(vars(a), vars(b), where)


# ---- the same analysis in a child process (what the napari widget's runs use) ----------
def test_an_analysis_made_in_a_child_process_is_the_one_made_here(
    analysis: Analysis, clouds: dict[str, PointCloud], labels: np.ndarray
) -> None:
    """Same arrays, graphs and records; the images stay here; progress comes through in
    order; the child answers the next analysis too (kept, not started again)."""
    from napari_topolens.topology.child_process import AnalysisProcess

    images = np.random.default_rng(2).random((N_IMAGES, 8, 8)).astype(np.float32)
    options = dict(
        config=AnalysisConfig(**FAST),
        class_names=["a", "b", "c"],
        probabilities=analysis.probabilities,
        provenance={"sample": "blobs"},
        images=images,
    )
    here = analyze(clouds, labels, **options)
    child = AnalysisProcess()
    try:
        seen: list[tuple[float, str]] = []
        there = drive(
            child.iter_analyze(clouds, labels, **options), lambda f, m: seen.append((f, m))
        )
        _assert_same(here, there, "analysis")
        assert np.shares_memory(there.images, images)  # kept here, not sent there and back
        for name, cloud in clouds.items():  # not capped: the analysed clouds are these
            assert np.shares_memory(there[name].cloud.points, cloud.points)
        fractions = [f for f, _ in seen]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert any("layer 3/3 spatial" in m for _, m in seen)  # the child's own steps
        pid = child.pid
        again = drive(child.iter_analyze(clouds, labels, **options))
        assert child.alive and child.pid == pid
        _assert_same(here, again, "analysis again")
    finally:
        child.close()
    assert not child.alive


def test_a_child_process_warns_its_analysis_warnings_here_once_each(
    clouds: dict[str, PointCloud], labels: np.ndarray, monkeypatch
) -> None:
    """A warning of the child's analysis is warned again in this process (where napari's
    worker shows it as a notification), once per analysis, with its category; one
    whose class this process does not have comes as a UserWarning naming it."""
    import warnings

    from napari_topolens.topology import child_process
    from napari_topolens.topology.child_process import AnalysisProcess

    warning_child = (
        "import warnings\n"
        "from napari_topolens.topology import child_process as c\n"
        "real = c.iter_analyze\n"
        "class LocalWarning(UserWarning): pass\n"
        "def warning_analysis(*args, **kwargs):\n"
        "    for _ in range(3):\n"
        "        warnings.warn('a cover this thin leaves points out', RuntimeWarning)\n"
        "    warnings.warn('a class made in the child', LocalWarning)\n"
        "    return (yield from real(*args, **kwargs))\n"
        "c.iter_analyze = warning_analysis\n"
        "c.serve()\n"
    )
    monkeypatch.setattr(child_process, "CHILD_CODE", warning_child)
    child = AnalysisProcess()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            analysis = drive(child.iter_analyze(clouds, labels, config=AnalysisConfig(**FAST)))
        assert analysis.layers == list(clouds)
        said = [(w.category, str(w.message)) for w in caught]
        assert said.count((RuntimeWarning, "a cover this thin leaves points out")) == 1
        assert (UserWarning, "LocalWarning: a class made in the child") in said
        with warnings.catch_warnings(record=True) as caught_again:  # the child kept: again
            warnings.simplefilter("always")
            drive(child.iter_analyze(clouds, labels, config=AnalysisConfig(**FAST)))
        said_again = [(w.category, str(w.message)) for w in caught_again]
        assert said_again.count((RuntimeWarning, "a cover this thin leaves points out")) == 1
    finally:
        child.close()


def test_a_child_process_raises_the_error_raised_here_and_ends(
    clouds: dict[str, PointCloud], labels: np.ndarray
) -> None:
    from napari_topolens.topology.child_process import AnalysisProcess

    bad = dict(class_names=["a", "b"])  # three classes in the labels
    with pytest.raises(TopoLensError) as raised_here:
        analyze(clouds, labels, **bad)
    child = AnalysisProcess()
    with pytest.raises(type(raised_here.value)) as raised_there:
        drive(child.iter_analyze(clouds, labels, **bad))
    assert str(raised_there.value) == str(raised_here.value)
    assert not child.alive  # a failed analysis's child is not kept
    # input checked here raises before anything is sent: no child needed for it
    with pytest.raises(ImageError):
        drive(AnalysisProcess().iter_analyze(clouds, labels, images=np.zeros((2, 8, 8))))


def test_a_cancel_ends_the_child_and_a_dead_child_is_one_clear_error(
    clouds: dict[str, PointCloud], labels: np.ndarray
) -> None:
    import os
    import signal

    from napari_topolens.topology.child_process import AnalysisProcess

    child = AnalysisProcess()
    steps = child.iter_analyze(clouds, labels, config=AnalysisConfig(**FAST))
    while next(steps).fraction == 0.0:  # until the child computes
        pass
    with pytest.raises(Cancelled):
        drive(steps, cancel=lambda: True)
    assert not child.alive
    child = AnalysisProcess()
    steps = child.iter_analyze(clouds, labels, config=AnalysisConfig(**FAST))
    next(steps)
    while next(steps).fraction == 0.0:  # until the child computes
        pass
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(TopoLensError, match="ended without an answer .it was stopped by signal 9"):
        drive(steps)


def test_a_capped_cloud_made_again_here_is_the_one_the_child_analysed(
    clouds: dict[str, PointCloud], labels: np.ndarray
) -> None:
    from napari_topolens.topology.child_process import AnalysisProcess

    config = AnalysisConfig(**{**FAST, "max_points": 150})  # caps 'spatial' (180 points)
    here = analyze(clouds, labels, config=config)
    child = AnalysisProcess()
    try:
        there = drive(child.iter_analyze(clouds, labels, config=config))
    finally:
        child.close()
    assert len(there["spatial"].cloud) == 150
    _assert_same(here, there, "analysis")


def test_an_unguarded_main_script_is_not_run_again_in_the_child(tmp_path) -> None:
    """A launcher script without a ``__main__`` guard (``viewer = napari.Viewer()`` at its
    top level) must run once: the child never imports the user's main module."""
    import subprocess
    import sys

    marker = tmp_path / "ran.txt"
    script = tmp_path / "launcher.py"
    script.write_text(
        "import numpy as np\n"
        f"open({str(marker)!r}, 'a').write('ran\\n')\n"
        "from napari_topolens._progress import drive\n"
        "from napari_topolens.activations.pointcloud import PointCloud\n"
        "from napari_topolens.topology.analysis import AnalysisConfig\n"
        "from napari_topolens.topology.child_process import AnalysisProcess\n"
        "points = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)\n"
        "cloud = PointCloud(layer='fc', points=points, image_index=np.arange(40), position=None,\n"
        "    receptive_field=np.tile([0, 0, 8, 8], (40, 1)), sampling='pooled', grid_shape=(),\n"
        "    image_shape=(8, 8))\n"
        "config = AnalysisConfig(h1_max_points=20, phdim_start=10, phdim_step=10)\n"
        "analysis = drive(AnalysisProcess().iter_analyze([cloud], config=config))\n"
        "print('layers', analysis.layers)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "layers ['fc']" in done.stdout
    assert marker.read_text() == "ran\n"


@pytest.mark.skipif(not hasattr(__import__("os"), "nice"), reason="POSIX priorities")
def test_the_child_runs_at_a_lower_priority_than_its_parent() -> None:
    import os

    from napari_topolens.topology.child_process import CHILD_NICENESS, AnalysisProcess

    child = AnalysisProcess()
    try:
        cloud = _pooled("fc", np.random.default_rng(4).normal(size=(40, 3)))
        drive(child.iter_analyze([cloud], config=AnalysisConfig(**FAST)))  # (it has started)
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(own + CHILD_NICENESS, 19)
    finally:
        child.close()


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGSTOP"), reason="POSIX signals")
def test_ending_a_child_in_a_long_step_does_not_wait_for_that_step(labels: np.ndarray) -> None:
    """Cancel ends the child at once, not at its next answer (a step can take minutes)."""
    import os
    import signal
    import time

    from napari_topolens.topology.child_process import AnalysisProcess

    rng = np.random.default_rng(5)
    big = {"wide": _pooled("wide", rng.normal(size=(N_IMAGES, 6)).astype(np.float32))}
    child = AnalysisProcess()
    slow = AnalysisConfig(**{**FAST, "h1_max_points": N_IMAGES, "phdim_start": 30})
    steps = child.iter_analyze(big, labels, config=slow)
    while next(steps).fraction == 0.0:  # until the child computes
        pass
    os.kill(child.pid, signal.SIGSTOP)  # a step that never answers
    began = time.perf_counter()
    steps.close()
    assert time.perf_counter() - began < 5.0 and not child.alive
