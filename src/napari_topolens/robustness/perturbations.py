"""Perturbed copies of images: noise, blur, occlusion and FGSM, index-aligned and seeded.

Every kind keeps the images' shape, dtype and value range, so a perturbed set can go
wherever the originals went (extraction, napari image layers, the report).
Strengths are in the images' own units: noise levels and the FGSM step are
fractions of the stack's value range ``max - min`` (so ``gaussian:0.1`` means the
same on ``[0, 1]`` floats and on ``uint8``), blur is in pixels, occlusion is a
fraction of the image area (a patch) or an opacity (a mask). Strength 0 returns
an unchanged copy.
"""

from __future__ import annotations

import warnings
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ..activations.extract import as_image_batch, as_mask_stack
from ..activations.models import check_model
from ..activations.options import whole_number
from ..activations.running import check_channels, eval_mode, model_device_dtype
from ..errors import ImageError, ModelError, TopoLensError
from ..topology.variant_kinds import (
    PERTURBATIONS,
    STRENGTH_RANGES,
    check_strength,
    strength_range_text,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "PERTURBATIONS",
    "STRENGTH_RANGES",
    "channel_axis",
    "check_label_codes",
    "check_strength",
    "perturb",
    "strength_range_text",
]

# values per chunk of work (float64 temporaries stay near 128 MB for any image size)
_CHUNK_VALUES = 1 << 24
# above this many photons at full brightness (poisson strength below 1e-6) Poisson counts
# are drawn from their normal approximation
_MAX_PHOTONS = 1e12


def perturb(
    images: Any,
    kind: str,
    strength: float,
    *,
    seed: int = 0,
    model: torch.nn.Module | None = None,
    labels: Any = None,
    mask: Any = None,
    batch_size: int = 64,
) -> np.ndarray:
    """A perturbed copy of ``images``, index-aligned, same shape and dtype.

    Parameters
    ----------
    images : array-like
        ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` (the layouts extraction
        takes), any integer or float dtype, finite.
    kind : str
        One of :data:`PERTURBATIONS`.
    strength : float
        Within ``kind``'s range (:data:`STRENGTH_RANGES`); its unit depends on ``kind``
        (see :data:`PERTURBATIONS`).
        0 gives the images back unchanged (as a copy).
    seed : int
        Seeds all randomness; the same seed gives the same result.
    model : torch.nn.Module, optional
        Needed by ``"fgsm"``: the step follows the sign of the gradient of its
        cross-entropy loss, with the images prepared exactly as extraction
        prepares them.
    labels : array of int, shape (N,), optional
        ``"fgsm"`` attacks these classes (-1: the model's own prediction);
        without labels, the model's own predictions.
    mask : array of bool, shape (N, H, W) or (H, W), optional
        ``"occlusion"`` covers these pixels (e.g. a napari Labels layer) instead
        of a random square patch per image.
    batch_size : int
        Images per forward and backward pass of ``"fgsm"``.

    Returns
    -------
    ndarray
        Values clipped to the input stack's ``[min, max]``; integer dtypes are rounded.
    """
    strength = _check_arguments(kind, strength, seed, batch_size, model, labels, mask)
    original = _check_images(images)
    shape = original.shape
    # work on (N, H, W, C) channels last, or (N, C, H, W) as given
    array = original[..., None] if original.ndim == 3 else original
    axis = 3 if original.ndim == 3 else channel_axis(array)
    occlusion_mask = _check_mask(mask, array, axis) if kind == "occlusion" else None
    label_codes = check_label_codes(labels, len(array)) if kind == "fgsm" else None
    if strength == 0.0:
        return original.copy()
    lo, hi = float(array.min()), float(array.max())
    if kind == "fgsm":
        assert model is not None
        out = _fgsm(original, model, label_codes, strength, lo, hi, int(batch_size))
        return out.reshape(shape)
    out = _noisy_copy(array, axis, kind, strength, int(seed), occlusion_mask, lo, hi)
    return out.reshape(shape)


def _check_arguments(
    kind: str,
    strength: Any,
    seed: Any,
    batch_size: Any,
    model: torch.nn.Module | None,
    labels: Any,
    mask: Any,
) -> float:
    """Refuse what :func:`perturb` cannot use, before any work; returns the strength."""
    if not isinstance(kind, str) or kind not in PERTURBATIONS:
        raise TopoLensError(
            f"unknown perturbation {kind!r:.60}; choose one of {', '.join(PERTURBATIONS)}"
        )
    value = check_strength(kind, strength)
    if whole_number("seed", seed) < 0:
        raise TopoLensError(f"seed must be a non-negative integer, got {seed}")
    if whole_number("batch_size", batch_size) < 1:
        raise TopoLensError(f"batch_size must be at least 1, got {batch_size}")
    if kind != "fgsm" and (model is not None or labels is not None):
        raise TopoLensError(f"a model and labels are used by fgsm only, not by {kind}")
    if kind != "occlusion" and mask is not None:
        raise TopoLensError(f"a mask is used by occlusion only, not by {kind}")
    if kind == "fgsm" and model is None:
        raise ModelError("fgsm needs the model it attacks: pass model=")
    if model is not None:
        check_model(model)
    return value


def _noisy_copy(
    array: np.ndarray,
    axis: int,
    kind: str,
    strength: float,
    seed: int,
    occlusion_mask: np.ndarray | None,
    lo: float,
    hi: float,
) -> np.ndarray:
    """Every kind but fgsm, a chunk of images at a time (bounded float64 temporaries)."""
    out = np.empty_like(array)
    # occlusion greys with the mean of the whole stack, the same for every image and chunk
    grey = float(array.mean(dtype=np.float64)) if kind == "occlusion" else 0.0
    chunk = max(1, _CHUNK_VALUES // max(1, array[0].size))
    for number, start in enumerate(range(0, len(array), chunk)):
        stop = min(start + chunk, len(array))
        rng = np.random.default_rng([seed, zlib.crc32(kind.encode()), number])
        values = np.moveaxis(array[start:stop], axis, -1).astype(np.float64)  # (B,H,W,C)
        chunk_mask = None if occlusion_mask is None else occlusion_mask[start:stop]
        values = _noise(kind, values, strength, lo, hi, rng, chunk_mask, grey)
        out[start:stop] = _cast(np.moveaxis(values, -1, axis), array.dtype, lo, hi)
    return out


def _check_images(images: Any) -> np.ndarray:
    """The images as an array, checked by extraction's own rules (rank, channels, finite)."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ImageError(f"images to perturb must be integer or float arrays, got {array.dtype}")
    as_image_batch(array[:1] if array.ndim in (3, 4) else array)  # rank and channels
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array).reshape(len(array), -1).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise ImageError(
                f"{int((~finite).sum())} image(s) have NaN or infinite pixels (first: index "
                f"{bad}); fill or drop them before perturbing"
            )
    return array


def channel_axis(array: np.ndarray) -> int:
    """1 or 3: the channel axis of a 4-D image stack, as extraction reads its layout."""
    prepared = as_image_batch(array[:1])  # (1, C, H, W)
    return 1 if prepared.shape[1:] == array.shape[1:] else 3


def _spatial_shape(array: np.ndarray, axis: int) -> tuple[int, int]:
    return (array.shape[2], array.shape[3]) if axis == 1 else (array.shape[1], array.shape[2])


def _check_mask(mask: Any, array: np.ndarray, axis: int) -> np.ndarray | None:
    if mask is None:
        return None
    height, width = _spatial_shape(array, axis)
    return as_mask_stack(mask, len(array), height, width, "the occlusion mask")


def check_label_codes(labels: Any, n_images: int) -> np.ndarray | None:
    """``labels`` as ``n_images`` int64 class codes (None stays None); an ImageError otherwise."""
    if labels is None:
        return None
    codes = np.asarray(labels)
    if codes.ndim != 1 or len(codes) != n_images or not np.issubdtype(codes.dtype, np.integer):
        raise ImageError(
            f"labels must be {n_images} integer class codes (one per image), got dtype "
            f"{codes.dtype} and shape {codes.shape}"
        )
    return codes.astype(np.int64)


def _cast(values: np.ndarray, dtype: np.dtype, lo: float, hi: float) -> np.ndarray:
    values = np.clip(values, lo, hi)
    if np.issubdtype(dtype, np.integer):
        values = np.rint(values)
    return values.astype(dtype)


def _noise(
    kind: str,
    x: np.ndarray,
    strength: float,
    lo: float,
    hi: float,
    rng: np.random.Generator,
    mask: np.ndarray | None,
    grey: float,
) -> np.ndarray:
    """Perturb one chunk ``x`` (B, H, W, C) float64; the caller clips and casts."""
    span = hi - lo
    if kind == "gaussian":
        return x + rng.normal(0.0, strength * span, size=x.shape)
    if kind == "uniform":
        return x + rng.uniform(-strength * span, strength * span, size=x.shape)
    if kind == "speckle":
        return x + (x - lo) * rng.normal(0.0, strength, size=x.shape)
    if kind == "poisson":
        if span == 0:
            return x
        brightness = np.clip((x - lo) / span, 0.0, 1.0)
        if strength * strength * _MAX_PHOTONS < 1.0:
            # over _MAX_PHOTONS photons numpy's sampler refuses the counts, and 1/strength**2
            # overflows for tiny strengths: the normal approximation of counts / photons,
            # brightness + sqrt(brightness / photons) * n, written without the photon count
            noise = np.sqrt(brightness) * rng.standard_normal(size=x.shape)
            return lo + (brightness + strength * noise) * span
        photons = 1.0 / strength**2  # at full brightness: std / mean = strength
        counts = rng.poisson(brightness * photons).astype(np.float64)
        return lo + counts / photons * span
    if kind == "salt_pepper":
        hit = rng.random(size=x.shape[:3])  # per pixel, all channels together
        x = x.copy()
        x[hit < strength / 2] = lo
        x[(hit >= strength / 2) & (hit < strength)] = hi
        return x
    if kind == "blur":
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(x, sigma=(0.0, strength, strength, 0.0), mode="nearest")
    if kind == "occlusion":
        return _occlude(x, strength, rng, mask, grey)
    raise AssertionError(kind)  # pragma: no cover - kinds are checked by perturb


def _occlude(
    x: np.ndarray,
    strength: float,
    rng: np.random.Generator,
    mask: np.ndarray | None,
    grey: float,
) -> np.ndarray:
    """Grey out a mask (opacity ``strength``) or a random square patch of ``strength`` of the area.

    ``grey`` is the mean value of the whole stack, the grey of occlusion studies.
    """
    x = x.copy()
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        x[m] = (1.0 - strength) * x[m] + strength * grey
        return x
    height, width = x.shape[1:3]
    side_h = min(height, max(1, round(height * np.sqrt(strength))))
    side_w = min(width, max(1, round(width * np.sqrt(strength))))
    tops = rng.integers(0, height - side_h + 1, size=len(x))
    lefts = rng.integers(0, width - side_w + 1, size=len(x))
    for i, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist())):
        x[i, top : top + side_h, left : left + side_w] = grey
    return x


def _fgsm(
    images: np.ndarray,
    model: torch.nn.Module,
    labels: np.ndarray | None,
    epsilon: float,
    lo: float,
    hi: float,
    batch_size: int,
) -> np.ndarray:
    """x + epsilon * (hi - lo) * sign(grad_x loss), batches prepared as extraction prepares them."""
    import torch

    check_channels(model, as_image_batch(images[:1]))
    device, dtype = model_device_dtype(model)
    step = epsilon * (hi - lo)
    out = np.empty_like(images)
    # gradients even when the caller runs under torch.no_grad() or torch.inference_mode()
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        for start in range(0, len(images), batch_size):
            original = images[start : start + batch_size]
            batch = as_image_batch(original)  # (B, C, H, W) float32, the model's input
            x = torch.from_numpy(batch).to(device=device, dtype=dtype).requires_grad_(True)
            try:
                logits = model(x)
            except Exception as exc:
                raise ModelError(
                    f"the model raised {type(exc).__name__} on a batch of shape "
                    f"{tuple(x.shape)}: {exc}"
                ) from exc
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                raise ModelError(
                    "fgsm needs a model whose output is a (batch, classes) tensor of logits"
                )
            target = logits.detach().argmax(dim=1)
            if labels is not None:
                given = torch.from_numpy(labels[start : start + batch_size]).to(target.device)
                if int(given.max()) >= logits.shape[1]:
                    raise ImageError(
                        f"label {int(given.max())} is not a class of the model's "
                        f"{logits.shape[1]} outputs"
                    )
                target = torch.where(given >= 0, given, target)
            loss = torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum")
            try:
                with warnings.catch_warnings():  # quantised ops warn before they fail
                    warnings.simplefilter("ignore", UserWarning)
                    (grad,) = torch.autograd.grad(loss, x)
            except RuntimeError as exc:
                raise ModelError(
                    f"fgsm needs gradients through the model, and its backward pass failed "
                    f"({exc}); attack the uncompressed model"
                ) from exc
            sign = np.sign(grad.detach().float().cpu().numpy())  # (B, C, H, W)
            sign = _to_layout(sign, original)
            values = original.astype(np.float64) + step * sign
            out[start : start + batch_size] = _cast(values, images.dtype, lo, hi)
    return out


def _to_layout(prepared: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Put a ``(B, C, H, W)`` array (extraction's layout) back into ``original``'s layout."""
    if original.ndim == 3:
        return prepared[:, 0]
    if prepared.shape == original.shape:
        return prepared
    return np.moveaxis(prepared, 1, -1)
