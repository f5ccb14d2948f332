"""Which torch device extraction runs on: cpu, cuda (cuda:N) or mps, when available."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import TopoLensError

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceError", "available_devices", "on_device", "parse_device", "resolve_device"]


class DeviceError(TopoLensError):
    """A device that this machine's torch cannot use."""


def available_devices() -> list[str]:
    """The device names this machine's torch can run on, ``"cpu"`` first."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names += ["cuda"] + [f"cuda:{i}" for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


#: Device kinds extraction and the H0 tree can run on.
_KINDS = ("cpu", "cuda", "mps")


def parse_device(name: str | torch.device) -> torch.device:
    """The torch device ``name`` spells (any case, spaces around), without asking whether
    this machine has it (a Dask worker may); :class:`DeviceError` for anything else."""
    import torch

    if isinstance(name, torch.device):
        device = name
    else:
        if not isinstance(name, str):
            raise DeviceError(
                f"a device is a name such as 'cpu', 'cuda' or 'cuda:0', got {type(name).__name__}"
            )
        try:
            device = torch.device(name.strip().lower())
        except (RuntimeError, ValueError):
            raise DeviceError(
                f"unknown device {name!r}; choose one of {', '.join(available_devices())}"
            ) from None
    if device.type not in _KINDS:
        raise DeviceError(
            f"device {str(name)!r} is not supported; choose one of {', '.join(available_devices())}"
        )
    return device


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device for ``name`` (any case); :class:`DeviceError` naming the choices if
    this machine's torch cannot use it. The command line, the API and the widget all check
    devices here, before any work."""
    import torch

    device = parse_device(name)
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} is not available: this torch ({torch.__version__}) sees no CUDA "
                f"GPU; choose one of {', '.join(available_devices())}"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} is not available: there are {torch.cuda.device_count()} CUDA "
                f"device(s); choose one of {', '.join(available_devices())}"
            )
        return device
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(
                f"device {name!r} is not available on this machine; choose one of "
                f"{', '.join(available_devices())}"
            )
        return device
    raise AssertionError(device)  # pragma: no cover - parse_device allows only _KINDS


@contextmanager
def on_device(model: torch.nn.Module, device: torch.device | None) -> Iterator[None]:
    """Move ``model`` to ``device`` for the block and back to where it was afterwards."""
    if device is None:
        yield
        return
    original = next((p.device for p in model.parameters()), None)
    original = original or next((b.device for b in model.buffers()), None)
    model.to(device)
    try:
        yield
    finally:
        if original is not None:
            model.to(original)
