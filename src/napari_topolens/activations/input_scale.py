"""How stored pixels become the values a model sees: the input scale.

A model is trained on pixels prepared one way: most on ``[0, 1]`` (torchvision's
``ToTensor`` divides 8-bit pixels by 255), many then normalised by a mean and
standard deviation per channel (ImageNet's). A uint8 photo handed over as 0..255
to a model trained on ``[0, 1]`` runs without error and gives wrong activations
and predictions, so the scale is an explicit, recorded extraction option:

``"dtype"`` (the default) — ``[0, 1] from dtype``
    Integer pixels divided by their dtype's largest value, as ``ToTensor`` /
    ``convert_image_dtype`` do (uint8 / 255, uint16 / 65535, int16 / 32767; a
    bool pixel is 0 or 1). Float pixels are taken as they are. The shipped sample
    images are float in ``[0, 1]``, so their numbers do not change.
``"as-stored"``
    The stored numbers, only cast to float32 (uint8 stays 0..255).
``"imagenet"``
    ``[0, 1] from dtype``, then ``(x - mean) / std`` per channel with ImageNet's
    mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); RGB images only.
``"custom:MEAN/STD"``
    ``[0, 1] from dtype``, then ``(x - mean) / std`` with the user's numbers, one
    for all channels or one per channel (``custom:0.5/0.25``,
    ``custom:0.485,0.456,0.406/0.229,0.224,0.225``). Mean and std are in the
    ``[0, 1]`` units of the first step (for 0..255 statistics divide them by 255).

The two steps are kept apart: :meth:`InputScale.pixels` is the first (stored
numbers to float pixels), :meth:`InputScale.normalize` the second. Perturbed
variants (noise, blur, FGSM, ...) perturb the float pixels of the first step
(``[0, 1]`` for integer images: "σ = 0.1 on normalised pixels"), never the
rounded integers, and go through the second step like the originals; FGSM's
gradient passes through it to the model (:func:`normalizing_model`).

Receptive-field probes are built directly in the model's input space: the scale
is affine per pixel, so a NaN pixel stays NaN and the boxes do not depend on it.

:func:`range_warning` says when the values reaching the model look unlike what the
sample models (and most trained networks) see; see its docstring for the rule.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import ImageError, TopoLensError
from .image_source import ImageSource

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_INPUT_SCALE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_SCALE_MODES",
    "InputScale",
    "ScaledSource",
    "as_input_scale",
    "normalizing_model",
    "range_warning",
    "scaled_source",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Mode -> what a user reads (the widget's choices, the report's line).
INPUT_SCALE_MODES: dict[str, str] = {
    "as-stored": "as stored",
    "dtype": "[0, 1] from dtype",
    "imagenet": "ImageNet mean/std",
    "custom": "custom mean/std",
}

#: What the warning rule takes as the usual range of a model's input (sample models'
#: [0, 1], and ImageNet-normalised pixels within about [-2.2, 2.7]).
_USUAL_LIMIT = 3.0
#: Share of values outside [-3, 3] above which the range is called unusual.
_OUTSIDE_SHARE = 0.01
#: Values whose largest magnitude stays below this look like an unused dtype range
#: (12-bit data in uint16 divided by 65535 reach 0.0625).
_TINY_LIMIT = 0.07
#: Images read to judge the range (the first ones; few, so a lazy stack reads one chunk).
WARNING_IMAGES = 8

Mode = Literal["as-stored", "dtype", "imagenet", "custom"]


@dataclass(frozen=True)
class InputScale:
    """How stored pixels become the model's input (plain data; see the module docstring).

    Parameters
    ----------
    mode : {"dtype", "as-stored", "imagenet", "custom"}
        ``"dtype"``: integers divided by their dtype's maximum (the default).
    mean, std : tuple of float
        For ``"custom"`` only: one value, or one per channel; every std > 0.
    """

    mode: Mode = "dtype"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in INPUT_SCALE_MODES:
            raise TopoLensError(
                f"unknown input scale {self.mode!r}; choose one of {', '.join(INPUT_SCALE_MODES)}"
            )
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if self.mode == "custom":
            if not mean or not std:
                raise TopoLensError(
                    "a custom input scale needs a mean and a std (one value, or one per "
                    "channel), e.g. custom:0.5/0.25"
                )
            if len(mean) != len(std):
                raise TopoLensError(
                    f"the custom input scale has {len(mean)} mean value(s) and {len(std)} "
                    "std value(s); give as many of each"
                )
            if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
                raise TopoLensError(
                    f"the custom input scale's mean must be finite and its std positive, got "
                    f"mean {mean}, std {std}"
                )
        elif mean or std:
            raise TopoLensError(f"input scale {self.mode!r} takes no mean/std (only 'custom' does)")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    # ---- text -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> InputScale:
        """From ``"dtype"``, ``"as-stored"``, ``"imagenet"`` or ``"custom:MEAN/STD"``."""
        if not isinstance(text, str):
            raise TopoLensError(f"an input scale is a name such as 'dtype', got {text!r:.40}")
        value = text.strip().lower().replace("_", "-")
        aliases = {"as stored": "as-stored", "stored": "as-stored", "raw": "as-stored"}
        value = aliases.get(value, value)
        if value in ("as-stored", "dtype", "imagenet"):
            return cls(value)  # type: ignore[arg-type]
        match = re.fullmatch(r"custom\s*:\s*([^/]+)/(.+)", value)
        if match is None:
            raise TopoLensError(
                f"input scale {text!r} is not one of: as-stored, dtype, imagenet, "
                "custom:MEAN/STD (e.g. custom:0.5/0.25 or "
                "custom:0.485,0.456,0.406/0.229,0.224,0.225)"
            )
        try:
            mean = tuple(float(v) for v in match.group(1).split(","))
            std = tuple(float(v) for v in match.group(2).split(","))
        except ValueError:
            raise TopoLensError(
                f"input scale {text!r}: mean and std must be numbers separated by commas, "
                "e.g. custom:0.5,0.5,0.5/0.25,0.25,0.25"
            ) from None
        return cls("custom", mean, std)

    def __str__(self) -> str:
        """The spec as :meth:`parse` reads it (``custom:0.5/0.25``)."""
        if self.mode != "custom":
            return self.mode
        return (
            "custom:"
            + ",".join(f"{v:g}" for v in self.mean)
            + "/"
            + ",".join(f"{v:g}" for v in self.std)
        )

    def describe(self, pixel_dtype: Any = None) -> str:
        """What a user reads: ``"[0, 1] from dtype (uint8 / 255)"``, ``"as stored"``,
        ``"ImageNet mean/std (after uint8 / 255)"``."""
        parts = []
        if self.mode == "custom":
            parts.append(f"mean {_numbers(self.mean)}, std {_numbers(self.std)}")
        if pixel_dtype is not None and self.mode != "as-stored":
            dtype = np.dtype(pixel_dtype)
            divisor = dtype_divisor(dtype)
            if self.mode == "dtype":
                parts.append(f"{dtype} / {divisor:g}" if divisor else f"{dtype} kept")
            elif divisor:
                parts.append(f"after {dtype} / {divisor:g}")
        text = INPUT_SCALE_MODES[self.mode]
        return f"{text} ({'; '.join(parts)})" if parts else text

    def to_dict(self) -> dict[str, Any]:
        """Plain data for provenance and cache keys."""
        return {"mode": self.mode, "mean": list(self.mean), "std": list(self.std)}

    # ---- numbers ----------------------------------------------------------------------
    def mean_std(self, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-channel ``(mean, std)`` of the second step, or ``None`` when there is none."""
        mean: tuple[float, ...]
        std: tuple[float, ...]
        if self.mode == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            if channels != 3:
                raise ImageError(
                    f"the ImageNet mean/std input scale is for RGB (3-channel) images, and "
                    f"these have {channels} channel(s); choose '[0, 1] from dtype' or a custom "
                    "mean/std"
                )
        elif self.mode == "custom":
            mean, std = self.mean, self.std
            if len(mean) not in (1, channels):
                raise ImageError(
                    f"the custom input scale has {len(mean)} mean/std values for images of "
                    f"{channels} channel(s); give one value, or one per channel"
                )
        else:
            return None
        shape = (channels, 1, 1)
        return (
            np.broadcast_to(np.asarray(mean, np.float32).reshape(-1, 1, 1), shape),
            np.broadcast_to(np.asarray(std, np.float32).reshape(-1, 1, 1), shape),
        )

    def pixels(self, batch: np.ndarray, pixel_dtype: Any) -> np.ndarray:
        """First step: stored numbers (as float32, ``(B, C, H, W)``) to float pixels."""
        out = np.asarray(batch, dtype=np.float32)
        divisor = None if self.mode == "as-stored" else dtype_divisor(np.dtype(pixel_dtype))
        return out / np.float32(divisor) if divisor else out

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Second step: ``(x - mean) / std`` per channel (``(B, C, H, W)``), when the mode has one."""
        stats = self.mean_std(pixels.shape[1])
        if stats is None:
            return pixels
        mean, std = stats
        return ((pixels - mean) / std).astype(np.float32, copy=False)

    def apply(self, batch: np.ndarray, pixel_dtype: Any) -> np.ndarray:
        """Both steps: the values the model sees."""
        return self.normalize(self.pixels(batch, pixel_dtype))

    def stack_pixels(self, images: Any) -> np.ndarray:
        """A whole stack, any layout extraction takes, as float32 pixels in the same layout.

        The first step only (what perturbations act on); integer stacks are divided by
        their dtype's maximum, float ones are kept (as float32).
        """
        array = np.asarray(images)
        if self.mode == "as-stored" or array.dtype.kind not in "biu":
            return array.astype(np.float32)
        return self.pixels(array, array.dtype)

    def is_identity_for(self, pixel_dtype: Any) -> bool:
        """True when images of this dtype reach the model unchanged (floats under ``dtype``)."""
        if self.mode == "as-stored":
            return True
        return self.mode == "dtype" and dtype_divisor(np.dtype(pixel_dtype)) is None


DEFAULT_INPUT_SCALE = InputScale()


def _numbers(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def dtype_divisor(dtype: np.dtype) -> float | None:
    """What ``[0, 1] from dtype`` divides by: the integer dtype's maximum; ``None`` for floats."""
    if dtype.kind in "iu":
        return float(np.iinfo(dtype).max)
    return None  # float (kept), bool (already 0/1)


def as_input_scale(value: Any) -> InputScale:
    """An :class:`InputScale` from itself, a spec string, or ``None`` (the default)."""
    if value is None:
        return DEFAULT_INPUT_SCALE
    if isinstance(value, InputScale):
        return value
    if isinstance(value, str):
        return InputScale.parse(value)
    if isinstance(value, dict):
        try:
            return InputScale(
                value.get("mode", "dtype"),
                tuple(value.get("mean", ())),
                tuple(value.get("std", ())),
            )
        except TypeError as exc:
            raise TopoLensError(f"not an input scale: {value!r:.80}") from exc
    raise TopoLensError(
        f"input_scale must be an InputScale or one of 'dtype', 'as-stored', 'imagenet', "
        f"'custom:MEAN/STD', got {value!r:.60}"
    )


def range_warning(values: np.ndarray, scale: InputScale, pixel_dtype: Any) -> str | None:
    """A warning when the values reaching the model look unlike a trained model's input.

    The rule (on the first 8 images of the set, after scaling): the sample models take
    pixels in ``[0, 1]`` and normalise them inside; a network normalised by a
    mean/std (ImageNet's) sees values within about ``[-2.2, 2.7]``. So the range is
    called far from usual when more than 1 % of the values lie outside ``[-3, 3]``
    (0..255 pixels "as stored", or float images holding 0..255), or when every value
    lies within ``±0.07`` while the images are not blank (12-bit data in uint16
    divided by 65535 reach 0.0625). ``None`` when the range looks usual.
    """
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        return None
    low, high = float(flat.min()), float(flat.max())
    outside = float(np.mean(np.abs(flat) > _USUAL_LIMIT))
    dtype = np.dtype(pixel_dtype)
    what = f"the images ({dtype}) reach the model as values in [{low:.3g}, {high:.3g}]"
    if outside > _OUTSIDE_SHARE:
        if scale.mode == "as-stored" and dtype.kind in "iu":
            fix = "choose the input scale '[0, 1] from dtype' if the model was trained on [0, 1] (as the sample models were)"
        elif dtype.kind == "f" and high > 1.5:
            fix = (
                "these are float images, which '[0, 1] from dtype' keeps as they are; if they "
                f"hold 0..{high:.0f} pixels, choose custom mean/std 0/{_round_max(high):g}"
            )
        else:
            fix = "check the input scale against how the model was trained"
        return (
            f"input scale {scale.describe(dtype)}: {what}, {100 * outside:.0f}% of them "
            f"outside [-3, 3], far from the [0, 1] (or mean/std-normalised) inputs most "
            f"models are trained on; {fix}"
        )
    if max(abs(low), abs(high)) < _TINY_LIMIT and high > low:
        return (
            f"input scale {scale.describe(dtype)}: {what}, a small part of [0, 1] (e.g. "
            "12-bit data stored in uint16); if the model was trained on [0, 1], choose a "
            f"custom mean/std 0/{high:.3g} or rescale the images"
        )
    return None


def _round_max(high: float) -> float:
    """255 for 8-bit-like floats, 65535 for 16-bit-like, else the maximum itself."""
    for limit in (1.0, 255.0, 65535.0):
        if high <= limit * 1.0001:
            return limit
    return high


def first_values(source: Any, scale: InputScale) -> np.ndarray:
    """The scaled values of the first 8 images of a source (what :func:`range_warning` judges)."""
    count = min(len(source), WARNING_IMAGES)
    return scale.apply(source.read(np.arange(count)), getattr(source, "pixel_dtype", np.float32))


def normalizing_model(model: torch.nn.Module, scale: InputScale, channels: int) -> torch.nn.Module:
    """``model`` behind the scale's mean/std step (``model`` itself when there is none).

    What FGSM differentiates: perturbations act on float pixels, the model sees them
    normalised, and the gradient passes through the normalisation.
    """
    stats = scale.mean_std(channels)
    if stats is None:
        return model
    import torch

    mean, std = (torch.from_numpy(np.array(s, dtype=np.float32)) for s in stats)

    class _Normalized(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> Any:
            return self.inner((x - mean.to(x)) / std.to(x))

    return _Normalized()


class ScaledSource(ImageSource):
    """Another source's images as the model sees them (picklable: Dask workers read it)."""

    def __init__(self, parent: ImageSource, scale: InputScale) -> None:
        scale.mean_std(parent.sample_shape[0])  # a scale that does not fit the images fails here
        self.parent, self.scale = parent, scale
        self.n_images = len(parent)
        self.sample_shape = parent.sample_shape
        self.in_memory = parent.in_memory
        self.description = parent.description

    def _read_raw(self, index: np.ndarray) -> np.ndarray:
        return self.scale.apply(self.parent.read(index), self.parent.pixel_dtype)

    def _to_batch(self, raw: np.ndarray) -> np.ndarray:
        return raw


def scaled_source(source: ImageSource, scale: InputScale) -> ImageSource:
    """``source`` read through ``scale`` (the source itself when the scale changes nothing)."""
    if scale.is_identity_for(source.pixel_dtype):
        return source
    return ScaledSource(source, scale)
