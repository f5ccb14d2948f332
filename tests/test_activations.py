"""Activation extraction: hooks, sampling provenance, receptive fields, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_topolens import extract_activations, list_layers, load_model
from napari_topolens.activations.models import load_state_dict
from napari_topolens.activations.receptive_field import probing_only
from napari_topolens.errors import (
    CheckpointError,
    EmptySelectionError,
    ImageError,
    LayerError,
    ModelError,
    TopoLensError,
)


def small_cnn(in_channels: int = 1) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, dilation=2, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


class Reordered(nn.Module):
    """Defines its layers in another order than it calls them."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.body = nn.Conv2d(1, 8, 3)
        self.unused = nn.ModuleList([nn.Linear(2, 2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def direct_outputs(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    with torch.no_grad():
        for module in model:
            x = module(x)
            outs.append(x)
    return outs


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(1).random((9, 17, 19), dtype=np.float32)


def test_hooked_activations_equal_a_direct_forward_pass(images):
    model = small_cnn()
    direct = direct_outputs(model, torch.from_numpy(images[:, None]))
    clouds = extract_activations(model, images, ["1", "4", "7"], sampling="pooled", batch_size=4)
    np.testing.assert_allclose(
        clouds["1"].points, direct[1].mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        clouds["4"].points, direct[4].mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(clouds["7"].points, direct[7].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(clouds["7"].image_index, np.arange(len(images)))
    assert clouds["7"].position is None and clouds["7"].grid_shape == ()


@pytest.mark.parametrize("sampling", ["random_position", "top_norm", "all_positions"])
def test_every_point_equals_the_layer_output_at_its_image_and_position(images, sampling):
    model = small_cnn()
    direct = direct_outputs(model, torch.from_numpy(images[:, None]))
    clouds = extract_activations(
        model, images, ["1", "4"], sampling=sampling, max_points=300, batch_size=4, seed=3
    )
    for name, index in (("1", 1), ("4", 4)):
        cloud, out = clouds[name], direct[index].numpy()
        assert cloud.grid_shape == out.shape[2:]
        assert cloud.position is not None
        expected = out[cloud.image_index, :, cloud.position[:, 0], cloud.position[:, 1]]
        np.testing.assert_allclose(cloud.points, expected, rtol=1e-5, atol=1e-6)
        if sampling == "top_norm":
            norms = np.linalg.norm(out, axis=1).reshape(len(images), -1)
            flat = cloud.position[:, 0] * out.shape[3] + cloud.position[:, 1]
            np.testing.assert_array_equal(flat, norms.argmax(axis=1))
        if sampling == "random_position":
            assert (cloud.position >= 1).all(), "border index 0 must be skipped"
            assert len(cloud) == len(images)
        if sampling == "all_positions":
            total = len(images) * out.shape[2] * out.shape[3]
            assert len(cloud) == min(300, total)
            keys = cloud.image_index * 10_000 + cloud.position[:, 0] * 100 + cloud.position[:, 1]
            assert len(np.unique(keys)) == len(keys)


@pytest.mark.parametrize("sampling", ["pooled", "random_position", "all_positions"])
def test_what_batch_size_may_change_is_float_rounding_only(images, sampling):
    """The documented guarantee: same choices for any batch size, bit-identical reruns."""
    model = small_cnn()
    layers = ["0", "4", "7"]
    runs = {
        size: extract_activations(
            model, images, layers, sampling=sampling, max_points=40, batch_size=size, seed=2
        )
        for size in (1, 4, 64)
    }
    again = extract_activations(
        model, images, layers, sampling=sampling, max_points=40, batch_size=4, seed=2
    )
    for name in layers:
        for size in (1, 64):
            a, b = runs[size][name], runs[4][name]
            np.testing.assert_array_equal(a.image_index, b.image_index)
            np.testing.assert_array_equal(a.receptive_field, b.receptive_field)
            if a.position is not None:
                np.testing.assert_array_equal(a.position, b.position)
            np.testing.assert_allclose(a.points, b.points, rtol=1e-5, atol=1e-6)
        assert runs[4][name].points.tobytes() == again[name].points.tobytes()


def test_results_do_not_depend_on_batch_size(images):
    model = small_cnn()
    a = extract_activations(
        model, images, ["4"], sampling="all_positions", max_points=50, batch_size=1, seed=5
    )
    b = extract_activations(
        model, images, ["4"], sampling="all_positions", max_points=50, batch_size=7, seed=5
    )
    np.testing.assert_array_equal(a["4"].image_index, b["4"].image_index)
    np.testing.assert_array_equal(a["4"].position, b["4"].position)
    np.testing.assert_allclose(a["4"].points, b["4"].points, rtol=1e-5, atol=1e-6)


def gradient_boxes(
    model: nn.Module, layer: str, shape: tuple[int, int, int], trials: int = 3
) -> dict:
    """Bounding box of the input pixels with a non-zero gradient, per output position."""
    modules = dict(model.named_modules())
    boxes: dict = {}
    for trial in range(trials):
        torch.manual_seed(trial)
        x = torch.randn(1, *shape, requires_grad=True)
        captured = {}
        handle = modules[layer].register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
        model(x)
        handle.remove()
        out = captured["out"][0]
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                (grad,) = torch.autograd.grad(out[:, i, j].sum(), x, retain_graph=True)
                rows = np.flatnonzero(grad[0].abs().sum(0).sum(1).numpy() > 0)
                cols = np.flatnonzero(grad[0].abs().sum(0).sum(0).numpy() > 0)
                box = boxes.get((i, j), [10**9, 10**9, -1, -1])
                boxes[(i, j)] = [
                    min(box[0], rows[0]),
                    min(box[1], cols[0]),
                    max(box[2], rows[-1] + 1),
                    max(box[3], cols[-1] + 1),
                ]
    return boxes


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(
            nn.Conv2d(1, 3, 5, stride=2, padding=2),
            nn.Tanh(),
            nn.AvgPool2d(3, stride=2),
            nn.Conv2d(3, 2, 3, dilation=2),
        ),
        nn.Sequential(
            nn.Conv2d(3, 3, (3, 5), stride=(1, 2)),
            nn.Softplus(),
            nn.AvgPool2d(2),
            nn.Conv2d(3, 3, 3, padding=1, stride=2),
        ),
    ],
)
def test_receptive_fields_match_a_gradient_check(model):
    model = model.eval()
    in_channels = model[0].in_channels
    shape = (in_channels, 23, 21)
    images = np.random.default_rng(0).random(
        (2, 23, 21, in_channels) if in_channels == 3 else (2, in_channels, 23, 21), dtype=np.float32
    )
    if in_channels == 1:
        images = images[:, 0]
    last = str(len(model) - 1)
    cloud = extract_activations(model, images, [last], sampling="all_positions")[last]
    expected = gradient_boxes(model, last, shape)
    got = {
        (int(r), int(c)): box.tolist() for (r, c), box in zip(cloud.position, cloud.receptive_field)
    }
    assert set(got) == set(expected)
    for key, box in expected.items():
        assert got[key] == box, f"position {key}: probed {got[key]}, gradient {box}"


def test_pixel_lookup_uses_the_receptive_field(images):
    cloud = extract_activations(small_cnn(), images, ["4"], sampling="all_positions")["4"]
    rf = cloud.receptive_field
    for row, col in [(0, 0), (5, 6), (16, 18)]:
        hits = cloud.points_covering(2, row, col)
        expected = np.flatnonzero(
            (cloud.image_index == 2)
            & (rf[:, 0] <= row)
            & (row < rf[:, 2])
            & (rf[:, 1] <= col)
            & (col < rf[:, 3])
        )
        np.testing.assert_array_equal(hits, expected)
    assert len(cloud.points_covering(2, 5, 6)) > 0
    # the dilated second conv skips input row 0: no position of this layer sees it
    assert len(cloud.points_covering(2, 0, 0)) == 0


class TokenModel(nn.Module):
    """A patch embedding: each token sees one 4x4 patch."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 5, 4, stride=4)
        self.norm = nn.LayerNorm(5)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.norm(tokens)


def test_token_layers_treat_tokens_as_positions():
    images = np.random.default_rng(0).random((3, 8, 12), dtype=np.float32)
    cloud = extract_activations(TokenModel().eval(), images, ["norm"], sampling="all_positions")[
        "norm"
    ]
    assert cloud.grid_shape == (6, 1)
    assert len(cloud) == 18
    token = cloud.position[:, 0]
    np.testing.assert_array_equal(cloud.receptive_field[:, 0], (token // 3) * 4)
    np.testing.assert_array_equal(cloud.receptive_field[:, 1], (token % 3) * 4)
    np.testing.assert_array_equal(cloud.receptive_field[:, 2:] - cloud.receptive_field[:, :2], 4)


def test_rgb_images_channels_last_and_first_agree():
    model = small_cnn(in_channels=3)
    rgb = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    last = extract_activations(model, rgb, ["4"])["4"].points
    first = extract_activations(model, np.moveaxis(rgb, -1, 1), ["4"])["4"].points
    np.testing.assert_array_equal(last, first)


def test_list_layers_follows_the_forward_pass():
    assert list_layers(Reordered()) == ["body", "head"]
    assert list_layers(small_cnn())[:3] == ["0", "1", "2"]


def test_training_mode_is_restored(images):
    model = small_cnn().train()
    extract_activations(model, images, ["1"])
    assert all(m.training for m in model.modules())


# ---- errors ------------------------------------------------------------------------
def test_nan_images_are_refused(images):
    images[4, 3, 3] = np.nan
    with pytest.raises(ImageError, match="index 4"):
        extract_activations(small_cnn(), images, ["1"])


@pytest.mark.parametrize("bad", [np.zeros((0, 8, 8), np.float32), []])
def test_empty_image_selection_is_refused(bad):
    with pytest.raises(EmptySelectionError, match="no images"):
        extract_activations(small_cnn(), bad, ["1"])


def test_empty_layer_selection_is_refused(images):
    with pytest.raises(EmptySelectionError, match="no layers"):
        extract_activations(small_cnn(), images, [])


def test_wrong_channels_and_rank_are_refused(images):
    with pytest.raises(ImageError, match="expects 3"):
        extract_activations(small_cnn(in_channels=3), images, ["1"])
    with pytest.raises(ImageError, match=r"images\[None\]"):
        extract_activations(small_cnn(), images[0], ["1"])
    with pytest.raises(ImageError, match="shape"):
        extract_activations(small_cnn(), images[..., None, None], ["1"])


def test_unknown_layer_names_the_known_ones(images):
    with pytest.raises(LayerError, match="'conv9'.*0, 1, 2"):
        extract_activations(small_cnn(), images, ["conv9"])


def test_unknown_sampling_mode(images):
    with pytest.raises(TopoLensError, match="pooled"):
        extract_activations(small_cnn(), images, ["1"], sampling="everything")


class ReturnsNoTensor(nn.Module):
    def forward(self, x):
        return "not a tensor"


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.odd = ReturnsNoTensor()

    def forward(self, x):
        self.odd(x)
        return self.conv(x)


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom inside the model")


def test_layer_output_that_is_not_a_tensor(images):
    with pytest.raises(LayerError, match="'odd'.*no tensor"):
        extract_activations(Wrapper(), images, ["odd"])


def test_model_that_raises(images):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), Raises())
    with pytest.raises(ModelError, match="boom inside the model"):
        extract_activations(model, images, ["1"])


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return (self.conv(x), "extra")


def test_tuple_outputs_use_their_first_tensor(images):
    model = nn.Sequential(TupleOut())
    cloud = extract_activations(model, images, ["0"])["0"]
    with torch.no_grad():
        expected = model[0].conv(torch.from_numpy(images[:, None])).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(cloud.points, expected, rtol=1e-5, atol=1e-6)


# ---- model loading ---------------------------------------------------------------------
def build_small_cnn() -> nn.Module:  # referenced by spec from the tests
    return small_cnn()


SPEC = f"{__name__}:build_small_cnn"


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "dataparallel"])
def test_checkpoint_nestings_load(tmp_path, wrap):
    trained = small_cnn()
    with torch.no_grad():
        trained[0].weight.add_(1.0)
    state = trained.state_dict()
    obj = {
        "bare": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "optimizer_name": "sgd"},
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    model = load_model(SPEC, weights=path)
    assert not model.training
    torch.testing.assert_close(model[0].weight, trained[0].weight)


class Evil:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(MARKER),))


MARKER = ""


def test_pickled_code_in_a_checkpoint_is_refused_unrun(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": small_cnn().state_dict(), "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="not plain weights"):
        load_model(SPEC, weights=path)
    assert not (tmp_path / "pwned").exists()


def test_whole_model_pickles_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(small_cnn(), path)
    with pytest.raises(CheckpointError, match="state_dict"):
        load_state_dict(path)


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(small_cnn(in_channels=3).state_dict(), path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(SPEC, weights=path)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("no_colon_here", "form 'package.module:callable'"),
        ("not_a_module_xyz:build", "could not be imported"),
        (f"{__name__}:missing_builder", "no attribute"),
        ("math:pi", "not a torch.nn.Module"),
    ],
)
def test_bad_model_specs(spec, match):
    with pytest.raises(ModelError, match=match):
        load_model(spec)


class HeadFirst(nn.Module):
    """Defines an 8-channel head before its 1-channel stem."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(8, 2, 1)
        self.stem = nn.Conv2d(1, 8, 3)

    def forward(self, x):
        return self.head(self.stem(x))


def test_clouds_come_in_forward_order_and_sample_by_layer_name(images):
    model = small_cnn()
    clouds = extract_activations(model, images, ["7", "4", "1"], sampling="random_position", seed=2)
    assert list(clouds) == ["1", "4", "7"]
    alone = extract_activations(model, images, ["4"], sampling="random_position", seed=2)
    np.testing.assert_array_equal(alone["4"].position, clouds["4"].position)


def test_channels_are_read_from_the_first_conv_the_forward_pass_calls(images):
    model = HeadFirst().eval()
    assert list_layers(model) == ["stem", "head"]
    cloud = extract_activations(model, images, ["stem"])["stem"]
    assert cloud.points.shape == (len(images), 8)
    with pytest.raises(ImageError, match="expects 1"):
        extract_activations(model, np.repeat(images[..., None], 3, axis=-1), ["stem"])


def test_tuple_outputs_are_noted(images):
    cloud = extract_activations(nn.Sequential(TupleOut()), images, ["0"])["0"]
    assert "tuple" in cloud.meta["output_note"] and "first tensor" in cloud.meta["output_note"]
    plain = extract_activations(small_cnn(), images, ["1"])["1"]
    assert plain.meta["output_note"] == ""


def test_bad_parameters_and_ragged_images_are_refused(images):
    with pytest.raises(TopoLensError, match="batch_size"):
        extract_activations(small_cnn(), images, ["1"], batch_size=0)
    with pytest.raises(TopoLensError, match="seed"):
        extract_activations(small_cnn(), images, ["1"], seed=-1)
    with pytest.raises(ImageError, match="differ in shape"):
        extract_activations(small_cnn(), [images[0], images[1, :10]], ["1"])


def test_a_file_that_is_no_checkpoint_is_named_so(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("print('hello')\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_state_dict(path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    assert "weights_only" not in str(info.value), "never relay advice to load unsafely"


def two_conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()


def count_forwarded_images(model: nn.Module) -> list[int]:
    """Images per forward pass of ``model`` (a forward pre-hook records batch sizes)."""
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    return seen


def test_pooled_sampling_and_vector_layers_probe_nothing():
    model = two_conv_net()
    seen = count_forwarded_images(model)
    images = np.random.default_rng(0).random((3, 256, 256), dtype=np.float32)
    clouds = extract_activations(model, images, ["2", "5"], sampling="pooled")
    # the channel check, the call count, the blank shape pass and the images: no H + W probes
    assert sum(seen) <= len(images) + 3, seen
    for cloud in clouds.values():
        assert cloud.meta["receptive_field_probe_passes"] == 0
        assert (cloud.receptive_field == [0, 0, 256, 256]).all()


def test_one_position_per_image_is_resolved_by_bisection_not_a_full_scan():
    model = two_conv_net()
    seen = count_forwarded_images(model)
    images = np.random.default_rng(0).random((2, 256, 256), dtype=np.float32)
    with probing_only():  # the probing route (the closed form probes nothing)
        cloud = extract_activations(model, images, ["2"], sampling="top_norm")["2"]
    probed = sum(seen) - len(images) - 2
    assert probed < 100, f"{probed} probe images (a scan would take 512)"
    assert "bisection" in cloud.meta["receptive_field_method"]
    full = extract_activations(two_conv_net(), images, ["2"], sampling="all_positions")["2"]
    lookup = {
        (int(i), int(r), int(c)): box.tolist()
        for i, (r, c), box in zip(full.image_index, full.position, full.receptive_field)
    }
    for i, (r, c), box in zip(cloud.image_index, cloud.position, cloud.receptive_field):
        assert box.tolist() == lookup[(int(i), int(r), int(c))]


@pytest.mark.parametrize("route", ["scan", "bisection"])
def test_both_probing_routes_match_the_gradient_check(route, monkeypatch):
    from napari_topolens.activations import receptive_field

    def forced(height, width, n):
        return route, (height + width) if route == "scan" else 1 + 2 * n * 10

    monkeypatch.setattr(receptive_field, "probe_cost", forced)
    receptive_field._CACHE.clear()
    model = nn.Sequential(
        nn.Conv2d(1, 3, 5, stride=2, padding=2),
        nn.Tanh(),
        nn.AvgPool2d(3, stride=2),
        nn.Conv2d(3, 2, 3, dilation=2),
    ).eval()
    images = np.random.default_rng(0).random((2, 23, 21), dtype=np.float32)
    with probing_only():
        cloud = extract_activations(model, images, ["3"], sampling="all_positions")["3"]
    assert route in cloud.meta["receptive_field_method"]
    expected = gradient_boxes(model, "3", (1, 23, 21))
    for (r, c), box in zip(cloud.position, cloud.receptive_field):
        assert box.tolist() == expected[(int(r), int(c))]


def test_images_too_big_for_probing_are_refused_before_any_work():
    model = two_conv_net()
    seen = count_forwarded_images(model)
    images = np.zeros((2, 64, 64), np.float32)
    with (
        probing_only(),
        pytest.raises(ImageError, match=r"too big.*limit of 1e\+04.*max-probe-pixels"),
    ):
        extract_activations(model, images, ["2"], sampling="all_positions", max_probe_pixels=10_000)
    assert sum(seen) <= 3  # the channel check, the call count and the blank shape pass only
    # fields composed from the architecture need no probing, so no limit applies
    cloud = extract_activations(
        model, images, ["2"], sampling="all_positions", max_probe_pixels=10_000
    )["2"]
    assert cloud.meta["receptive_field_method"] == "closed form (torch.fx graph)"
    # pooled sampling needs no receptive fields, so the same images are fine
    extract_activations(model, images, ["2"], sampling="pooled", max_probe_pixels=10_000)
