"""Running a user's model: eval mode, its device and dtype, and the images it accepts.

Shared by extraction, prediction, the topology maps and the perturbations, so that
every forward pass of the package sets the model up the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ImageError
from .image_source import ImageSource, as_image_source
from .models import first_input_channels

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_channels",
    "eval_mode",
    "model_accepts",
    "model_device_dtype",
    "model_images",
    "torch_batch",
]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run in eval mode (dropout off, batch-norm running stats) and restore after."""
    was_training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in was_training:
            module.training = training


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model's first floating-point parameter lives and its dtype (CPU float32 if none)."""
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def torch_batch(batch: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A numpy ``(B, C, H, W)`` batch as a tensor on the model's device and dtype."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(batch)).to(device=device, dtype=dtype)


def check_channels(model: torch.nn.Module, batch: np.ndarray) -> None:
    """ImageError saying how to fix it when ``batch``'s channels are not what the model takes."""
    import torch

    device, dtype = model_device_dtype(model)
    with eval_mode(model):
        expected = first_input_channels(
            model, torch.from_numpy(batch[:1]).to(device=device, dtype=dtype)
        )
    if expected is not None and expected != batch.shape[1]:
        have = "grayscale (1 channel)" if batch.shape[1] == 1 else f"{batch.shape[1]} channels"
        fix = (
            "stack the grayscale image into 3 channels (RGB)"
            if expected == 3
            else "convert the images to grayscale"
            if expected == 1
            else f"give images with {expected} channels"
        )
        raise ImageError(
            f"the images are {have} but the model's first layer expects {expected}: {fix}"
        )


def model_accepts(model: torch.nn.Module) -> Callable[[ImageSource], bool]:
    """Whether the model runs on a source's images (one forward pass of its first image).

    What picks the level of a multiscale image (:class:`MultiscaleImages`, ``layer_level``).
    """

    def accepts(candidate: ImageSource) -> bool:
        import torch

        device, dtype = model_device_dtype(model)
        sample = torch.from_numpy(candidate.read([0])).to(device=device, dtype=dtype)
        try:
            with eval_mode(model), torch.no_grad():
                model(sample)
        except Exception:
            return False
        return True

    return accepts


def model_images(model: torch.nn.Module, images: Any) -> ImageSource:
    """The images as a lazy source (the level the model runs on, for a multiscale image);
    in-memory arrays are checked whole, up front."""
    source = as_image_source(images, accepts=model_accepts(model))
    if source.in_memory:
        source.check_all()
    return source
