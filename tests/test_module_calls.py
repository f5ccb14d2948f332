"""Modules the forward pass calls more than once are analysed at each call (``pool#1``, ``pool#2``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from napari_topolens import cli, extract_activations, list_layers
from napari_topolens.errors import LayerError
from napari_topolens.topology.store import load_analysis


class SharedPool(nn.Module):
    """One ``pool`` after each of two convolutions, one ``act`` after each conv and the fc."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        return self.act(self.fc(x.flatten(1)))


def build() -> SharedPool:
    """The CLI's ``--model tests.test_module_calls:build``."""
    return SharedPool().eval()


def images(n: int = 24) -> np.ndarray:
    return np.random.default_rng(0).random((n, 16, 16), dtype=np.float32)


def test_each_call_is_a_layer_of_its_own() -> None:
    model = build()
    assert list_layers(model, (1, 16, 16)) == [
        "conv1",
        "act#1",
        "pool#1",
        "conv2",
        "act#2",
        "pool#2",
        "fc",
        "act#3",
    ]
    clouds = extract_activations(
        model, images(), ["pool#2", "pool#1", "act#3"], sampling="top_norm"
    )
    assert list(clouds) == ["pool#1", "pool#2", "act#3"]  # forward order
    # each at its own call: the first pool's 8x8 grid of 4 channels, the second's 4x4 of 6
    assert clouds["pool#1"].grid_shape == (8, 8) and clouds["pool#1"].points.shape[1] == 4
    assert clouds["pool#2"].grid_shape == (4, 4) and clouds["pool#2"].points.shape[1] == 6
    assert clouds["act#3"].points.shape[1] == 3
    with torch.no_grad():  # the values are the outputs of those calls
        x = torch.from_numpy(images()[:, None])
        first = model.pool(model.act(model.conv1(x)))
        second = model.pool(model.act(model.conv2(first)))
    pooled = extract_activations(model, images(), ["pool#1", "pool#2"])
    np.testing.assert_allclose(pooled["pool#1"].points, first.mean((2, 3)).numpy(), atol=1e-6)
    np.testing.assert_allclose(pooled["pool#2"].points, second.mean((2, 3)).numpy(), atol=1e-6)
    # receptive fields per call: the second call sees further (3x3 + pool + 3x3 + pool)
    width = lambda cloud: int(np.max(cloud.receptive_field[:, 3] - cloud.receptive_field[:, 1]))  # noqa: E731
    assert width(clouds["pool#1"]) == 4 and width(clouds["pool#2"]) == 10


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ("pool", r"called 2 times.*pool#1, pool#2"),
        ("pool#3", r"'pool' is called 2 time"),
        ("fc#1", r"called once.*name it 'fc'"),
        ("nothere#1", r"unknown layer name"),
    ],
)
def test_names_that_pick_no_single_call_are_refused(layer: str, message: str) -> None:
    with pytest.raises(LayerError, match=message):
        extract_activations(build(), images(4), [layer])


def test_the_cli_analyses_each_call(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    np.save(tmp_path / "images.npy", images(24))
    common = ["report", "--model", "tests.test_module_calls:build", "--images"]
    common += [str(tmp_path / "images.npy"), "--h1-max-points", "60", "--quiet"]
    code = cli.main([*common, "--layers", "pool#1,pool#2", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    analysis = load_analysis(tmp_path / "out" / "analysis")
    assert analysis.layers == ["pool#1", "pool#2"]
    assert [r.cloud.points.shape[1] for r in analysis.layer_results] == [4, 6]
    assert "pool#1" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    # the plain name of a module called twice: one line naming the calls, exit 2
    code = cli.main([*common, "--layers", "pool", "--out", str(tmp_path / "plain")])
    err = capsys.readouterr().err
    assert code == 2 and "pool#1, pool#2" in err
    # no --layers: the hint lists the calls
    assert cli.main([*common, "--out", str(tmp_path / "none")]) == 2
    assert "pool#1, conv2, act#2, pool#2" in capsys.readouterr().err
