"""Choosing the torch device for extraction (tests run without a GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from napari_topolens import cli, extract_activations
from napari_topolens.activations.device import (
    DeviceError,
    available_devices,
    on_device,
    resolve_device,
)


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).eval()


def test_cpu_is_always_there_and_gives_the_default_result() -> None:
    assert available_devices()[0] == "cpu"
    assert resolve_device("CPU") == torch.device("cpu")
    model = small_cnn()
    images = np.random.default_rng(0).random((20, 8, 8), dtype=np.float32)
    default = extract_activations(model, images, ["1"], sampling="top_norm")
    on_cpu = extract_activations(model, images, ["1"], sampling="top_norm", device="cpu")
    np.testing.assert_array_equal(default["1"].points, on_cpu["1"].points)


@pytest.mark.parametrize("name", ["tpu", "gpu0", "cuda:abc", ""])
def test_unknown_devices_name_the_choices(name: str) -> None:
    with pytest.raises(DeviceError, match="cpu"):
        resolve_device(name)


def test_a_gpu_that_is_not_there_is_one_clear_error() -> None:
    # one past the last GPU, or any GPU where there is none
    name = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(DeviceError, match="not available"):
        resolve_device(name)
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        with pytest.raises(DeviceError, match="not available"):
            resolve_device("mps")


def test_the_model_goes_back_where_it_was(monkeypatch) -> None:
    model = small_cnn()
    model(torch.zeros(1, 1, 8, 8))  # materialise the lazy layer
    moves: list[str] = []
    real_to = nn.Module.to

    def recording_to(self, *args, **kw):
        moves.append(str(args[0]))
        return real_to(self, *args, **kw)

    monkeypatch.setattr(nn.Module, "to", recording_to)
    with on_device(model, torch.device("cpu")):
        pass
    assert moves == ["cpu", "cpu"]
    assert next(model.parameters()).device.type == "cpu"


def test_report_command_refuses_a_missing_device(tmp_path: Path, capsys) -> None:
    code = cli.main(
        [
            "report",
            "--sample",
            "digits",
            "--max-images",
            "30",
            "--device",
            "cuda:7" if torch.cuda.is_available() else "cuda",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "not available" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
