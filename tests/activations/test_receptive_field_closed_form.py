"""Receptive fields composed from the architecture equal the probed ones, layer by layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_topolens import extract_activations, sample_models
from napari_topolens.activations import receptive_field
from napari_topolens.activations.receptive_field import (
    layer_geometry,
    probing_only,
    receptive_fields,
)

CPU = torch.device("cpu")


def fields_both_ways(model: nn.Module, image_shape: tuple[int, int, int], names=None):
    """Every spatial layer's boxes at every position, composed and probed."""
    model = model.eval()
    named = dict(model.named_modules())
    names = [n for n in named if n] if names is None else names
    geometry = layer_geometry(
        model, {n: named[n] for n in names}, image_shape, dtype=torch.float32, device=CPU
    )
    spatial = {n: named[n] for n in names if geometry[n].kind == "spatial"}
    wanted = {n: np.arange(geometry[n].n_positions) for n in spatial}
    receptive_field._CACHE.clear()
    composed = receptive_fields(
        model, spatial, wanted, image_shape, dtype=torch.float32, device=CPU
    )
    receptive_field._CACHE.clear()
    with probing_only():
        probed = receptive_fields(
            model, spatial, wanted, image_shape, dtype=torch.float32, device=CPU
        )
    return composed, probed


def assert_equal_fields(composed, probed, route="closed form"):
    assert composed, "no spatial layer was compared"
    for name in composed:
        assert composed[name].method.startswith(route), (name, composed[name].method)
        assert probed[name].method.startswith("nan-probe"), probed[name].method
        np.testing.assert_array_equal(
            composed[name].boxes, probed[name].boxes, err_msg=f"layer {name}"
        )


@pytest.mark.parametrize(
    ("factory", "image_shape"),
    [
        (sample_models.digits_cnn, (1, 8, 8)),
        (sample_models.shapes_cnn, (1, 48, 48)),
        (sample_models.shapes_cnn, (1, 37, 29)),  # odd sizes: floor pooling drops a row
    ],
)
def test_sample_models_every_layer_composed_equals_probed(factory, image_shape):
    model = factory()
    names = [n for n, _ in model.named_modules() if n]
    if image_shape[1:] != (48, 48) and image_shape[1:] != (8, 8):  # the linear head cannot run
        names = names[: names.index("flatten")]
    composed, probed = fields_both_ways(model, image_shape, names)
    assert "conv1" in composed and "pool2" in composed
    assert_equal_fields(composed, probed)
    assert composed["conv1"].passes == 0 and probed["conv1"].passes > 0


def random_stack(seed: int) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """A random stack of convs (kernel, stride, padding, dilation, groups), pools
    (ceil_mode), pads, normalisations and activations that runs on its image size."""
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(14, 40, size=2))
    channels = int(rng.choice([1, 2, 3]))
    image_shape = (channels, height, width)
    layers: list[nn.Module] = []
    probe = torch.zeros((1, *image_shape))
    for _ in range(int(rng.integers(3, 8))):
        c = probe.shape[1]
        choice = rng.choice(["conv", "conv", "conv", "max", "avg", "adaptive", "pad", "act"])
        if choice == "conv":
            groups = int(rng.choice([g for g in (1, 2, 3) if c % g == 0]))
            kernel = tuple(int(k) for k in rng.integers(1, 6, size=2))
            layer = nn.Conv2d(
                c,
                groups * int(rng.integers(1, 3)),
                kernel,
                stride=tuple(int(s) for s in rng.integers(1, 4, size=2)),
                padding=tuple(int(p) for p in rng.integers(0, 4, size=2)),
                dilation=tuple(int(d) for d in rng.integers(1, 4, size=2)),
                groups=groups,
            )
        elif choice in ("max", "avg"):
            kernel = int(rng.integers(1, 5))
            options = {
                "stride": int(rng.integers(1, 4)),
                "padding": int(rng.integers(0, kernel // 2 + 1)),
                "ceil_mode": bool(rng.integers(0, 2)),
            }
            if choice == "max":
                layer = nn.MaxPool2d(kernel, dilation=int(rng.integers(1, 3)), **options)
            else:
                layer = nn.AvgPool2d(kernel, **options)
        elif choice == "adaptive":
            size = tuple(int(s) for s in rng.integers(2, 12, size=2))
            kind = nn.AdaptiveAvgPool2d if rng.integers(0, 2) else nn.AdaptiveMaxPool2d
            layer = kind(size)
        elif choice == "pad":
            pads = tuple(int(p) for p in rng.integers(0, 3, size=4))
            kind = rng.choice(["zero", "reflect", "replicate"])
            layer = {
                "zero": nn.ZeroPad2d,
                "reflect": nn.ReflectionPad2d,
                "replicate": nn.ReplicationPad2d,
            }[str(kind)](pads)
        else:
            layer = [nn.ReLU(), nn.GELU(), nn.BatchNorm2d(c), nn.Tanh(), nn.LeakyReLU()][
                int(rng.integers(0, 5))
            ]
        try:
            out = layer.eval()(probe)
        except RuntimeError:  # too small for this layer: pick another
            continue
        if min(out.shape[2:]) < 1:
            continue
        layers.append(layer)
        probe = out
    if not layers:
        layers.append(nn.Conv2d(channels, 2, 3))
    return nn.Sequential(*layers).eval(), image_shape


@pytest.mark.parametrize("seed", range(36))
def test_random_conv_stacks_composed_equals_probed(seed):
    model, image_shape = random_stack(seed)
    composed, probed = fields_both_ways(model, image_shape)
    assert_equal_fields(composed, probed)


class Block(nn.Module):
    """A residual block with a strided projection, and a concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.project = nn.Conv2d(2, 4, 1, stride=2)
        self.side = nn.MaxPool2d(5, stride=2, padding=2)

    def forward(self, x):
        y = self.conv2(F.relu(self.bn1(self.conv1(x))))
        y = F.relu(y + self.project(x))
        return torch.cat([y, self.side(x)], dim=1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 5, padding=1)
        self.block = Block()
        self.head = nn.Conv2d(6, 3, 3, stride=2)

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


def test_a_residual_block_and_a_concatenation_take_the_union_of_their_branches():
    names = ["stem", "block", "block.conv1", "block.conv2", "block.project", "head"]
    composed, probed = fields_both_ways(Net(), (1, 31, 26), names)
    assert_equal_fields(composed, probed, route="closed form (torch.fx graph)")
    # the union is wider than the projection branch alone
    assert (
        composed["block"].boxes[:, 2] - composed["block"].boxes[:, 0]
        > composed["block.project"].boxes[:, 2] - composed["block.project"].boxes[:, 0]
    ).any()


class Branching(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self, functional: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = nn.Conv2d(2, 2, 2, dilation=2)
        self.functional = functional

    def forward(self, x):
        if x.sum() > 1e9:
            x = x * 2
        x = self.pool(self.act(self.conv(x)))
        if self.functional:  # a pooling the hooks cannot see
            x = F.max_pool2d(x, 3, stride=1, padding=1)
        return self.conv2(x)


def test_an_untraceable_chain_of_modules_is_composed_from_its_calls():
    composed, probed = fields_both_ways(Branching(), (1, 29, 23), ["conv", "act", "pool", "conv2"])
    assert_equal_fields(composed, probed, route="closed form (module chain)")


def test_a_functional_step_between_the_hooked_modules_falls_back_to_probing():
    model = Branching(functional=True)
    composed, probed = fields_both_ways(model, (1, 29, 23), ["pool", "conv2"])
    assert composed["pool"].method == "closed form (module chain)"
    assert composed["conv2"].method.startswith("nan-probe")
    assert "torch.fx cannot trace" in composed["conv2"].note
    assert "does not read the previous module's output unchanged" in composed["conv2"].note
    np.testing.assert_array_equal(composed["conv2"].boxes, probed["conv2"].boxes)


class Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.up = nn.Upsample(scale_factor=2)
        self.conv2 = nn.Conv2d(2, 2, 3, stride=2)

    def forward(self, x):
        return self.conv2(self.up(self.conv(x)))


def test_a_model_with_an_unknown_module_falls_back_to_probing_and_says_so():
    images = np.random.default_rng(0).random((2, 19, 17), dtype=np.float32)
    receptive_field._CACHE.clear()
    clouds = extract_activations(
        Unknown().eval(), images, ["conv", "conv2"], sampling="all_positions"
    )
    assert clouds["conv"].meta["receptive_field_method"] == "closed form (torch.fx graph)"
    assert clouds["conv2"].meta["receptive_field_method"].startswith("nan-probe")
    assert (
        clouds["conv2"]
        .meta["receptive_field_note"]
        .startswith("probed: module Upsample has no closed form")
    )
    assert clouds["conv2"].meta["receptive_field_probe_passes"] > 0
    composed, probed = fields_both_ways(Unknown(), (1, 19, 17), ["conv", "conv2"])
    assert_equal_fields({"conv": composed["conv"]}, {"conv": probed["conv"]})


class JoinWithEmptyBranch(nn.Module):
    """At output row 0, branch ``a`` reads only padding (its columns would widen the box)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 1, (1, 3), padding=(1, 1))
        self.b = nn.Conv2d(1, 1, (3, 1), padding=(2, 0))
        self.out = nn.Identity()

    def forward(self, x):
        return self.out(self.a(x) + self.b(x))


def test_a_join_whose_branch_reads_only_padding_is_probed():
    composed, probed = fields_both_ways(JoinWithEmptyBranch(), (1, 12, 11), ["b", "out"])
    assert composed["b"].method.startswith("closed form")
    assert composed["out"].method.startswith("nan-probe")
    assert "reads only padding" in composed["out"].note
    np.testing.assert_array_equal(composed["out"].boxes, probed["out"].boxes)


@pytest.mark.parametrize("kind", sorted(t.__name__ for t in receptive_field._chain_types()))
def test_every_known_module_type_is_checked_against_probing(kind):
    module = {
        "PReLU": lambda: nn.PReLU(2),
        "BatchNorm2d": lambda: nn.BatchNorm2d(2),
        "SyncBatchNorm": None,
        "InstanceNorm2d": lambda: nn.InstanceNorm2d(2),
        "GroupNorm": lambda: nn.GroupNorm(1, 2),
        "LayerNorm": lambda: nn.LayerNorm([9]),
        "Linear": lambda: nn.Linear(9, 9),
        "Conv2d": lambda: nn.Conv2d(2, 2, 3, padding="same", dilation=2),
        "MaxPool2d": lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
        "AvgPool2d": lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True),
        "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d((5, 4)),
        "AdaptiveMaxPool2d": lambda: nn.AdaptiveMaxPool2d((13, 4)),
        "ZeroPad2d": lambda: nn.ZeroPad2d((1, 2, 0, 3)),
        "ConstantPad2d": lambda: nn.ConstantPad2d((1, 2, 0, 3), 1.0),
        "ReflectionPad2d": lambda: nn.ReflectionPad2d((1, 2, 0, 3)),
        "ReplicationPad2d": lambda: nn.ReplicationPad2d((1, 2, 0, 3)),
        "Softmax": lambda: nn.Softmax(dim=2),
        "LogSoftmax": lambda: nn.LogSoftmax(dim=1),
        "Softmin": lambda: nn.Softmin(dim=-1),
        "LocalResponseNorm": lambda: nn.LocalResponseNorm(2),
    }.get(kind, lambda: getattr(nn, kind)())
    if module is None:
        pytest.skip("SyncBatchNorm runs only in a process group")
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), module(), nn.Conv2d(2, 2, 2))
    composed, probed = fields_both_ways(model, (1, 11, 17))
    assert_equal_fields(composed, probed)


def test_extraction_records_the_route_and_matches_probing_at_the_sampled_positions():
    model = sample_models.shapes_cnn()
    images = np.random.default_rng(1).random((3, 48, 48), dtype=np.float32)
    layers = ["conv1", "pool2", "relu3"]
    receptive_field._CACHE.clear()
    composed = extract_activations(model, images, layers, sampling="top_norm")
    receptive_field._CACHE.clear()
    with probing_only():
        probed = extract_activations(model, images, layers, sampling="top_norm")
    for name in layers:
        assert composed[name].meta["receptive_field_method"] == "closed form (torch.fx graph)"
        assert composed[name].meta["receptive_field_probe_passes"] == 0
        assert "probed: closed form switched off" in probed[name].meta["receptive_field_note"]
        np.testing.assert_array_equal(composed[name].position, probed[name].position)
        np.testing.assert_array_equal(composed[name].receptive_field, probed[name].receptive_field)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_with_even_kernels_pads_more_on_the_right():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2),
        nn.Conv2d(2, 2, 4, padding="same", dilation=1),
        nn.Conv2d(2, 2, (2, 5), padding="same"),
    )
    composed, probed = fields_both_ways(model, (1, 21, 18))
    assert_equal_fields(composed, probed)


class Functional(nn.Module):
    """A torch function between two convs (binary: of two branches)."""

    def __init__(self, function, binary: bool) -> None:
        super().__init__()
        self.function, self.binary = function, binary
        self.a = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.b = nn.Conv2d(1, 2, 5, stride=2, padding=2)
        self.head = nn.Conv2d(2, 2, 2)

    def forward(self, x):
        y = self.function(self.a(x), self.b(x)) if self.binary else self.function(self.a(x))
        return self.head(y)


_UNARY, _BINARY, _, _ = receptive_field._fx_functions()


@pytest.mark.parametrize(
    ("function", "binary"),
    [(f, False) for f in sorted(_UNARY, key=repr)] + [(f, True) for f in sorted(_BINARY, key=repr)],
    ids=lambda f: getattr(f, "__name__", str(f)),
)
def test_every_known_torch_function_is_checked_against_probing(function, binary):
    composed, probed = fields_both_ways(Functional(function, binary), (1, 13, 16), ["head"])
    assert_equal_fields(composed, probed, route="closed form (torch.fx graph)")


@pytest.mark.parametrize(
    "norm",
    [
        nn.InstanceNorm2d(2, track_running_stats=True),  # running statistics in eval
        nn.InstanceNorm2d(2, affine=True),
    ],
    ids=repr,
)
def test_norms_use_the_statistics_they_compute(norm):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), norm, nn.Conv2d(2, 2, 3))
    composed, probed = fields_both_ways(model, (1, 15, 12))
    assert_equal_fields(composed, probed)


def test_batch_statistics_in_eval_mix_the_whole_image():
    # probing cannot check this one: a batch's statistics mix the probes of one batch
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2), nn.BatchNorm2d(2, track_running_stats=False)
    ).eval()
    composed, _ = fields_both_ways(model, (1, 15, 12), ["1"])
    # the strided conv reads columns 0..10 only; the statistics mix all it reads
    assert (composed["1"].boxes == [0, 0, 15, 11]).all()
    assert composed["1"].method.startswith("closed form")


def test_composing_the_fields_imports_no_compiler():
    """The shape run's stop is not dressed up by torch: its structured log imports
    torch._inductor and torch._dynamo (seconds of the GIL, inside a run's worker)."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from napari_topolens import sample_models\n"
        "from napari_topolens.activations.receptive_field import layer_geometry, "
        "receptive_fields\n"
        "model = sample_models.shapes_cnn().eval()\n"
        "named = dict(model.named_modules())\n"
        "layers = {n: named[n] for n in ('conv1', 'pool1')}\n"
        "geometry = layer_geometry(model, layers, (1, 48, 48), dtype=torch.float32, "
        "device=torch.device('cpu'))\n"
        "fields = receptive_fields(model, layers, {n: [0] for n in layers}, (1, 48, 48), "
        "dtype=torch.float32, device=torch.device('cpu'))\n"
        "assert all(f.method.startswith('closed form') for f in fields.values()), fields\n"
        "print(sorted(m for m in ('torch._inductor', 'torch._dynamo') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
