"""Compressed copies of a model: global magnitude pruning and dynamic INT8 quantisation.

The original model is never changed: :func:`compress` works on a deep copy. Module
names stay as they were (a quantised ``nn.Linear`` keeps its name), so the same
layer names, hooks and :func:`~napari_topolens.activations.models.list_layers` work
on the copy.
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelError, TopoLensError
from ..topology.variant_kinds import QUANTIZATIONS

if TYPE_CHECKING:
    import torch

__all__ = ["QUANTIZATIONS", "compress", "prunable_weights", "quantized_engines", "sparsity"]


def prunable_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weight tensors global pruning ranks: those of every conv and linear layer."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    return [
        (f"{name}.weight" if name else "weight", module.weight)
        for name, module in model.named_modules()
        if isinstance(module, kinds) and isinstance(getattr(module, "weight", None), torch.Tensor)
    ]


def sparsity(model: torch.nn.Module) -> float:
    """Fraction of exact zeros over the weights that pruning ranks (:func:`prunable_weights`)."""
    weights = prunable_weights(model)
    total = sum(int(w.numel()) for _, w in weights)
    if total == 0:
        return float("nan")
    zeros = sum(int((w.detach() == 0).sum()) for _, w in weights)
    return zeros / total


def compress(
    model: torch.nn.Module, *, prune: float | None = None, quantize: str | None = None
) -> torch.nn.Module:
    """A compressed deep copy of ``model``; the original is untouched.

    Parameters
    ----------
    model : torch.nn.Module
    prune : float, optional
        Global magnitude pruning: this fraction (0..1) of the weights of all conv
        and linear layers together, those of smallest absolute value, is set to
        zero, so the sparsity over those weights is exactly ``round(prune * n) / n``
        (ties at the threshold are broken by position). Biases, normalisation and
        other parameters are kept. The zeros are written into the weights (no
        pruning masks or re-parametrisation stays behind), so the copy is a plain
        module. A weight computed by a parametrization (weight norm) is refused.
    quantize : {"int8"}, optional
        Dynamic INT8 quantisation of every ``nn.Linear`` (weights stored as int8,
        activations quantised on the fly; PyTorch's eager dynamic quantisation).
        Applied after pruning. Needs a quantised CPU engine (x86/fbgemm or
        qnnpack); otherwise one :class:`~napari_topolens.errors.ModelError`.

    Returns
    -------
    torch.nn.Module
        In eval mode, on the CPU when quantised (quantised kernels run on the CPU).
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"compress needs a torch.nn.Module, got {type(model).__name__}")
    if prune is None and quantize is None:
        raise TopoLensError("compress needs prune=fraction and/or quantize='int8'")
    if prune is not None:
        try:
            prune = float(prune)
        except (TypeError, ValueError):
            raise TopoLensError(
                f"prune must be a fraction between 0 and 1, got {prune!r}"
            ) from None
        if not 0.0 <= prune <= 1.0:
            raise TopoLensError(f"prune must be a fraction between 0 and 1, got {prune}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise TopoLensError(
            f"unknown quantisation {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}"
        )
    try:
        compressed = copy.deepcopy(model)
    except Exception as exc:
        raise ModelError(
            f"the model cannot be copied ({type(exc).__name__}: {exc}), so it cannot be "
            "compressed without changing the original"
        ) from exc
    if prune is not None:
        _prune_global(compressed, prune)
    if quantize is not None:
        compressed = _quantize_dynamic(compressed)
    return compressed.eval()


def _prune_global(model: torch.nn.Module, fraction: float) -> None:
    import torch

    weights = prunable_weights(model)
    if not weights:
        raise ModelError("the model has no convolution or linear weights to prune")
    # a weight computed from others (weight norm, a parametrization) is rebuilt on every
    # access or forward pass, so zeros written into it would be silently lost
    computed = [name for name, weight in weights if not isinstance(weight, torch.nn.Parameter)]
    if computed:
        raise ModelError(
            f"the weight of {computed[0].removesuffix('.weight') or 'the model'} is computed "
            "(weight norm or another parametrization), so pruning it would not last; remove "
            "it first (torch.nn.utils.parametrize.remove_parametrizations(module, 'weight'))"
        )
    total = sum(int(w.numel()) for _, w in weights)
    n_zero = round(fraction * total)
    if n_zero == 0:
        return
    magnitudes = np.concatenate(
        [w.detach().abs().float().cpu().numpy().ravel() for _, w in weights]
    )
    # exactly n_zero smallest: a stable sort breaks ties by position
    order = np.argsort(magnitudes, kind="stable")[:n_zero]
    drop = np.zeros(total, dtype=bool)
    drop[order] = True
    offset = 0
    with torch.no_grad():
        for _, weight in weights:
            n = int(weight.numel())
            keep = torch.from_numpy(~drop[offset : offset + n].reshape(tuple(weight.shape)))
            weight.mul_(keep.to(device=weight.device, dtype=weight.dtype))
            offset += n


def quantized_engines() -> list[str]:
    """The quantised CPU engines this PyTorch build has (empty: no INT8 here)."""
    import torch

    return [e for e in torch.backends.quantized.supported_engines if e != "none"]


def _quantize_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    import torch

    if not any(isinstance(m, torch.nn.Linear) for m in model.modules()):
        raise ModelError(
            "the model has no nn.Linear layers, so INT8 dynamic quantisation has nothing to do"
        )
    if not quantized_engines():
        raise ModelError(
            "this PyTorch build has no quantised CPU engine (x86, fbgemm or qnnpack), so "
            "INT8 quantisation is not supported on this platform; use prune only"
        )
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:
        raise ModelError(
            f"this PyTorch build has no dynamic quantisation ({exc}); use prune only"
        ) from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            quantized = quantize_dynamic(model.cpu(), {torch.nn.Linear}, dtype=torch.qint8)
    except (RuntimeError, NotImplementedError, AssertionError) as exc:
        raise ModelError(
            f"INT8 dynamic quantisation is not supported for this model on this platform "
            f"({type(exc).__name__}: {exc}); use prune only"
        ) from exc
    return quantized
