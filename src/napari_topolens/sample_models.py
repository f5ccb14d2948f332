"""Plain-torch architectures of the two shipped sample models.

Each factory returns an untrained model in eval mode whose module names are fixed
(``normalize``, ``conv1``, ``bn1``, ``relu1``, ``pool1``, ..., ``flatten``, ``fc1``,
``relu_fc1``, ``fc2``), because saved weights, default layer lists and saved
analyses all refer to layers by these names. The first submodule normalises the
input, so the models take images in ``[0, 1]`` shaped ``(B, 1, H, W)`` as given.

ReLUs are not in-place: a forward hook on ``convN`` or ``bnN`` must see that
layer's own output, not the rectified tensor that an in-place ReLU would leave.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["Normalize", "digits_cnn", "shapes_cnn"]

# Mean and standard deviation of the pixel values in [0, 1] of each data set's
# training images (sample_data/make_samples.py's split), fixed here so that an
# untrained model already carries them.
DIGITS_MEAN = 0.3054
DIGITS_STD = 0.3761
SHAPES_MEAN = 0.1693
SHAPES_STD = 0.2058


class Normalize(nn.Module):
    """Subtract ``mean`` and divide by ``std``, as the model's own first layer.

    Parameters
    ----------
    mean, std : float
        Pixel statistics of the training images; stored as buffers so they travel
        with the state dict.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={float(self.mean):.4f}, std={float(self.std):.4f}"


def _conv_stage(index: int, c_in: int, c_out: int) -> list[tuple[str, nn.Module]]:
    """conv 3x3 (same padding) -> batch norm -> ReLU -> 2x2 max pool."""
    return [
        (f"conv{index}", nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)),
        (f"bn{index}", nn.BatchNorm2d(c_out)),
        (f"relu{index}", nn.ReLU()),
        (f"pool{index}", nn.MaxPool2d(kernel_size=2, stride=2)),
    ]


def _cnn(
    mean: float,
    std: float,
    channels: tuple[int, ...],
    grid_after: int,
    hidden: int,
    n_classes: int,
) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = [("normalize", Normalize(mean, std))]
    c_in = 1
    for index, c_out in enumerate(channels, start=1):
        layers += _conv_stage(index, c_in, c_out)
        c_in = c_out
    layers += [
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(c_in * grid_after * grid_after, hidden)),
        ("relu_fc1", nn.ReLU()),
        ("fc2", nn.Linear(hidden, n_classes)),
    ]
    return nn.Sequential(OrderedDict(layers)).eval()


def digits_cnn() -> nn.Sequential:
    """CNN for the 8x8 scikit-learn digits: two conv stages (8 -> 4 -> 2), 10 classes.

    Returns
    -------
    torch.nn.Sequential
        Untrained, in eval mode; input ``(B, 1, 8, 8)`` in ``[0, 1]``.
    """
    return _cnn(DIGITS_MEAN, DIGITS_STD, channels=(16, 32), grid_after=2, hidden=64, n_classes=10)


def shapes_cnn() -> nn.Sequential:
    """CNN for the 48x48 procedural shapes: three conv stages (48 -> 24 -> 12 -> 6), 6 classes.

    Returns
    -------
    torch.nn.Sequential
        Untrained, in eval mode; input ``(B, 1, 48, 48)`` in ``[0, 1]``.
    """
    return _cnn(
        SHAPES_MEAN, SHAPES_STD, channels=(16, 32, 64), grid_after=6, hidden=64, n_classes=6
    )
