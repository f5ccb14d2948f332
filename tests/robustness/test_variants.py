"""Variant runs and comparisons: zero drift at strength 0, drift growing with noise, saved and reloaded."""

from __future__ import annotations

import math

import numpy as np
import pytest

import napari_topolens as tl
from napari_topolens.errors import Cancelled, ImageError, LayerError, TopoLensError
from napari_topolens.robustness.comparison import Comparison, compare
from napari_topolens.robustness.study import Variant, VariantSpec, parse_variants
from napari_topolens.topology.analysis import AnalysisConfig

FAST = AnalysisConfig(h1_max_points=150, phdim_start=80, phdim_step=50, dendrogram_max_points=60)


@pytest.fixture(scope="module")
def digits():
    return tl.load_sample("digits")


@pytest.fixture(scope="module")
def digits_run(digits):
    index = digits.test_index[:200]
    return tl.run_variants(
        digits.model,
        digits.images[index],
        ["pool1", "fc1"],
        ["gaussian:0", "gaussian:0.15", "prune:0.6+int8"],
        labels=digits.labels[index],
        class_names=digits.class_names,
        config=FAST,
        sampling="top_norm",
    )


def test_strength_zero_gives_zero_distance_and_no_moved_image(digits_run):
    zero = digits_run.variants[0]
    assert zero.name == "gaussian:0"
    comparison = zero.comparison
    assert comparison.layers == ["pool1", "fc1"]
    for drift in comparison.drifts:
        assert np.all(drift.bottleneck == 0.0) and np.all(drift.sliced_wasserstein == 0.0)
        assert drift.distance("sliced_wasserstein", 1, relative=True) == 0.0
        assert np.all(drift.sliced_wasserstein_scale > 0) and np.all(drift.bottleneck_scale > 0)
        assert len(drift.bottleneck) == 2  # H0 and H1
        assert not drift.moved.any() and drift.moved_fraction == 0.0
        assert np.all(drift.image_score[drift.compared] == 0.0)
        assert all(v == 0 or math.isnan(v) for v in drift.quality_change.values())
    assert comparison.most_moved() == []
    assert comparison.accuracy_variant == comparison.accuracy_base > 0.95
    assert comparison.prediction_changed == 0.0
    np.testing.assert_array_equal(zero.analysis.images, digits_run.images)


def test_noise_and_compression_drift(digits_run):
    noisy, compressed = digits_run.variants[1].comparison, digits_run.variants[2].comparison
    assert noisy.mean_drift() > 0 and (noisy.moved_fraction > 0).all()
    relative = noisy.distances(relative=True)
    assert np.all(np.isfinite(relative)) and np.all(relative > 0)
    np.testing.assert_allclose(
        relative, noisy.distances() / [d.sliced_wasserstein_scale[1] for d in noisy.drifts]
    )
    assert not np.array_equal(digits_run.variants[1].analysis.images, digits_run.images)
    assert digits_run.variants[2].analysis.images is None  # a compressed model sees the base images
    assert compressed.accuracy_variant > 0.9
    layer, image, score = noisy.most_moved(1)[0]
    assert 0 < score <= 1 and noisy[layer].moved[image]
    scores = [s for _, _, s in noisy.most_moved(10)]
    assert scores == sorted(scores, reverse=True)
    assert len({i for _, i, _ in noisy.most_moved(50)}) == len(noisy.most_moved(50))


def test_variants_save_and_reload_with_the_analysis(digits_run, tmp_path):
    digits_run.save(tmp_path / "run.topolens")
    loaded = tl.load_analysis(tmp_path / "run.topolens")
    assert [v.name for v in loaded.variants] == ["gaussian:0", "gaussian:0.15", "prune:0.6+int8"]
    for got, want in zip(loaded.variants, digits_run.variants):
        assert isinstance(got, Variant) and isinstance(got.comparison, Comparison)
        assert got.spec == want.spec
        for a, b in zip(got.comparison.drifts, want.comparison.drifts):
            np.testing.assert_array_equal(a.image_score, b.image_score)
            np.testing.assert_array_equal(a.moved, b.moved)
            np.testing.assert_array_equal(a.sliced_wasserstein, b.sliced_wasserstein)
            np.testing.assert_array_equal(a.sliced_wasserstein_scale, b.sliced_wasserstein_scale)
            assert a.quality_base == b.quality_base
        assert got.comparison.accuracy_variant == want.comparison.accuracy_variant
        assert got.analysis.layers == want.analysis.layers
    assert tl.load_analysis(tmp_path / "run.topolens").variants[2].analysis.variants == []
    # a fresh interpreter, where nothing of the robustness package is imported yet, reads it too
    import subprocess
    import sys

    code = (
        "import sys, napari_topolens as tl;"
        f"a = tl.load_analysis({str(tmp_path / 'run.topolens')!r});"
        "print(type(a.variants[1].comparison).__name__, a.variants[1].name)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["Comparison", "gaussian:0.15"], result.stderr


def test_a_given_base_is_reused_not_recomputed(digits, digits_run):
    index = digits.test_index[:200]
    steps = []
    again = tl.run_variants(
        digits.model,
        digits.images[index],
        ["pool1", "fc1"],
        "gaussian:0.15",
        labels=digits.labels[index],
        class_names=digits.class_names,
        config=FAST,
        sampling="top_norm",
        base=digits_run,
        progress=lambda f, m: steps.append(m),
    )
    assert not any(m.startswith("base") for m in steps)
    assert again.layer_results is digits_run.layer_results  # the same results, not a recomputation
    assert len(digits_run.variants) == 3  # the given analysis is not changed
    want = digits_run.variants[1].comparison
    got = again.variants[0].comparison
    for a, b in zip(got.drifts, want.drifts):
        np.testing.assert_array_equal(a.image_score, b.image_score)


def test_run_variants_can_be_cancelled(digits):
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        tl.run_variants(
            digits.model,
            digits.images[:60],
            ["fc1"],
            "blur:1",
            config=FAST,
            cancel=lambda: next(calls) > 3,
        )


def test_compare_refuses_analyses_of_other_images(digits_run, digits):
    index = digits.test_index[:100]
    clouds = tl.extract_activations(digits.model, digits.images[index], ["fc1"])
    other = tl.analyze(clouds, digits.labels[index], config=FAST, images=digits.images[index])
    with pytest.raises(TopoLensError, match="same images"):
        compare(digits_run, other)
    index = digits.test_index[:200]
    clouds = tl.extract_activations(
        digits.model, digits.images[index], ["pool1", "fc1"], sampling="top_norm"
    )
    other = tl.analyze(
        clouds,
        digits.labels[index],
        config=AnalysisConfig(**{**FAST.to_dict(), "metric": "cosine"}),
    )
    note = compare(digits_run, other).notes["config"]
    assert "metric 'euclidean' vs 'cosine'" in note
    assert "config" not in digits_run.variants[1].comparison.notes
    clouds = tl.extract_activations(digits.model, digits.images[digits.test_index[:200]], ["fc2"])
    other = tl.analyze(clouds, digits.labels[digits.test_index[:200]], config=FAST)
    with pytest.raises(LayerError, match="share no layer"):
        compare(digits_run, other)


def test_variant_specs_parse_like_the_command_line():
    specs = parse_variants("gaussian:0.1, blur:1.0,fgsm:0.03", "prune:0.5,int8,prune:0.3+int8")
    assert [s.name for s in specs] == [
        "gaussian:0.1",
        "blur:1",
        "fgsm:0.03",
        "prune:0.5",
        "int8",
        "prune:0.3+int8",
    ]
    assert specs[5] == VariantSpec(prune=0.3, quantize="int8")
    for bad, match in [
        ("gaussian", "needs a strength"),
        ("jpeg:0.3", "unknown variant"),
        ("gaussian:abc", "not a number"),
        ("gaussian:0.1+int8", "only prune and int8"),
    ]:
        with pytest.raises(TopoLensError, match=match):
            parse_variants(bad)
    with pytest.raises(TopoLensError, match="does not belong"):
        parse_variants("prune:0.5")
    with pytest.raises(TopoLensError, match="twice"):
        parse_variants("blur:1,blur:1.0")
    with pytest.raises(TopoLensError, match="prunes twice"):
        parse_variants(compress="prune:0.5+prune:0.3")
    with pytest.raises(TopoLensError, match="quantises twice"):
        parse_variants(compress="int8+prune:0.5+int8")


@pytest.mark.slow
def test_mean_drift_grows_with_gaussian_sigma_on_shapes():
    """Measured: three sigmas on the held-out shapes, default layers pool2 and fc1, pooled."""
    shapes = tl.load_sample("shapes")
    index = shapes.test_index
    run = tl.run_variants(
        shapes.model,
        shapes.images[index],
        ["pool2", "fc1"],
        ["gaussian:0.05", "gaussian:0.1", "gaussian:0.2"],
        labels=shapes.labels[index],
        class_names=shapes.class_names,
        config=FAST,
    )
    drift = [v.comparison.mean_drift() for v in run.variants]
    relative = [v.comparison.mean_drift(relative=True) for v in run.variants]
    print("mean SW H1 drift", drift, "relative", relative)
    moved = [float(np.mean(v.comparison.moved_fraction)) for v in run.variants]
    accuracy = [v.comparison.accuracy_variant for v in run.variants]
    assert drift[0] < drift[1] < drift[2], drift
    assert relative[0] < relative[1] < relative[2], relative
    assert moved[0] < moved[1] < moved[2], moved
    assert accuracy[0] >= accuracy[2], accuracy


@pytest.mark.parametrize("hungarian", [True, False])
def test_moved_images_are_found_whatever_the_group_numbers(hungarian):
    from napari_topolens.layout.matching import HUNGARIAN_MAX_CELLS, images_by_groups
    from napari_topolens.robustness import comparison

    def compared(base_groups, variant_groups):
        cells = HUNGARIAN_MAX_CELLS if hungarian else 0
        return comparison._moved(base_groups, variant_groups, max_cells=cells)

    images = np.arange(12)
    base = np.repeat([0, 1, 2], 4)  # three clusters of four images
    renamed = np.array([2, 0, 1])[base]  # the same clusters, other numbers
    moved = renamed.copy()
    moved[5] = renamed[0]  # image 5 changes cluster
    groups = images_by_groups
    distance, changed = compared(groups(images, base, 12, 3), groups(images, renamed, 12, 3))
    assert not changed.any() and np.all(distance == 0)
    distance, changed = compared(groups(images, base, 12, 3), groups(images, moved, 12, 3))
    np.testing.assert_array_equal(np.flatnonzero(changed), [5])
    assert distance[5] == 1.0
    # an image in two groups (Mapper overlap) that keeps one of them moved, partly
    two = np.concatenate([base, [2]]), np.concatenate([images, [0]])
    one_left = np.concatenate([base, [1]]), np.concatenate([images, [0]])
    distance, changed = compared(
        groups(two[1], two[0], 12, 3), groups(one_left[1], one_left[0], 12, 3)
    )
    np.testing.assert_array_equal(np.flatnonzero(changed), [0])
    assert distance[0] == pytest.approx(2 / 3)  # {0, 2} vs {0, 1}: 1 shared of 3


def test_iter_run_variants_refuses_bad_input_before_any_work(digits):
    images = digits.images[:30]
    with pytest.raises(LayerError, match="unknown layer"):
        tl.iter_run_variants(digits.model, images, ["nope"], "blur:1")
    with pytest.raises(TopoLensError, match="labels for 30 images"):
        tl.iter_run_variants(digits.model, images, ["fc1"], "fgsm:0.1", labels=digits.labels[:10])
    with pytest.raises(TopoLensError, match="unknown variant"):
        tl.iter_run_variants(digits.model, images, ["fc1"], "jpeg:0.1")
    with pytest.raises(ImageError, match="occlusion mask has shape"):
        tl.iter_run_variants(
            digits.model, images, ["fc1"], "occlusion:1", occlusion_mask=np.ones((3, 3), bool)
        )
    with pytest.raises(TopoLensError, match="occlusion variant only"):
        tl.iter_run_variants(
            digits.model, images, ["fc1"], "blur:1", occlusion_mask=np.ones((8, 8), bool)
        )
    with pytest.raises(ImageError, match="integer class codes"):
        tl.iter_run_variants(
            digits.model, images, ["fc1"], "fgsm:0.1", labels=digits.labels[:30] + 0.5
        )
    steps = tl.iter_run_variants(digits.model, images, ["fc1"], "blur:1", config=FAST)
    first = next(steps)
    assert 0.0 <= first.fraction <= 1.0 and first.message.startswith("base")
    steps.close()


def test_receptive_field_heat_and_variant_images(digits_run):
    from napari_topolens.robustness.comparison import receptive_field_heat

    cloud = digits_run["pool1"].cloud
    row = 0
    image = int(cloud.image_index[row])
    y0, x0, y1, x1 = cloud.receptive_field[row]
    heat = receptive_field_heat(cloud, image)
    assert heat.shape == (8, 8) and heat.max() == 1.0
    assert heat[y0:y1, x0:x1].min() == 1.0 and heat.sum() == (y1 - y0) * (x1 - x0)
    assert not receptive_field_heat(cloud, 10_000).any()
    noisy, compressed = digits_run.variants[1], digits_run.variants[2]
    assert noisy.images(digits_run) is noisy.analysis.images
    assert compressed.images(digits_run) is digits_run.images


def test_robustness_section_renders_the_drift_plot_and_moved_images(digits_run):
    from napari_topolens._progress import drive
    from napari_topolens.report.robustness import robustness_section

    html = drive(robustness_section(digits_run))
    assert html.count('src="data:image/png;base64,') == 2
    for variant in digits_run.variants:
        assert f"<code>{variant.name}</code>" in html
    plain = tl.Analysis(**{**digits_run.__dict__, "variants": []})
    assert drive(robustness_section(plain)) == ""


@pytest.mark.parametrize("layout", ["channels_first", "channels_last", "grey"])
def test_most_moved_figure_takes_every_image_layout(layout):
    """PyTorch's own (N, C, H, W) colour stacks draw like channels-last ones."""
    from types import SimpleNamespace

    from napari_topolens.report.robustness import moved_images_figure

    rng = np.random.default_rng(0)
    shape = {"channels_first": (4, 3, 10, 12), "channels_last": (4, 10, 12, 3)}
    images = rng.random(shape.get(layout, (4, 10, 12))).astype(np.float32)
    cloud = SimpleNamespace(
        receptive_field=np.array([[0, 0, 5, 6]] * 4 + [[2, 2, 8, 9]] * 4),
        image_index=np.array([0, 1, 2, 3] * 2),
        image_shape=(10, 12),
    )

    class Fake(SimpleNamespace):
        def __getitem__(self, layer):
            return SimpleNamespace(cloud=cloud)

    base = Fake(images=images)
    variant = SimpleNamespace(
        name="gaussian:0.1",
        analysis=Fake(images=images + 0.01),
        comparison=SimpleNamespace(most_moved=lambda n: [("pool1", 2, 0.5), ("pool1", 0, 0.25)]),
    )
    uri = moved_images_figure(base, [variant])
    assert uri is not None and uri.startswith("data:image/png;base64,")
