"""Forward hooks that capture named layer outputs and stop the pass early."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import LayerError, ModelError

if TYPE_CHECKING:
    import torch

__all__ = ["capture_layers", "check_layer_names", "first_tensor"]


class _EnoughLayers(Exception):
    """Raised inside a hook once every requested layer is captured."""


def check_layer_names(model: torch.nn.Module, layers: Sequence[str]) -> dict[str, torch.nn.Module]:
    """Map layer names to modules, refusing unknown names with the known ones listed."""
    from ..errors import EmptySelectionError

    if isinstance(layers, str):
        layers = [layers]
    if len(layers) == 0:
        raise EmptySelectionError("no layers were selected; pick at least one layer of the model")
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules or name == ""]
    if unknown:
        known = [n for n in modules if n]
        shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
        raise LayerError(
            f"unknown layer name(s) {', '.join(map(repr, unknown))}; the model's layers are: {shown}"
        )
    return {name: modules[name] for name in layers}


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor of a module output (tensor, tuple/list, or dict)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def capture_layers(
    model: torch.nn.Module,
    batch: torch.Tensor,
    modules: Mapping[str, torch.nn.Module],
    notes: dict[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``model(batch)`` under ``no_grad`` and return the requested layer outputs.

    The result is ordered as the forward pass reached the layers. The pass stops
    as soon as every requested layer has produced its output, so the rest of the
    network is not computed. A module that returns a tuple, list or dict
    contributes its first tensor, and ``notes[name]`` (when given) says so.
    """
    import torch

    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Any:
        def hook(_module: torch.nn.Module, _inp: Any, output: Any) -> None:
            if name in captured:
                return
            tensor = first_tensor(output)
            if tensor is None:
                raise LayerError(
                    f"layer {name!r} returned a {type(output).__name__} that holds no tensor; "
                    "pick a layer whose output is a tensor"
                )
            if notes is not None and tensor is not output:
                notes[name] = (
                    f"the module returns a {type(output).__name__}; its first tensor "
                    f"(shape {tuple(tensor.shape[1:])} per image) was used"
                )
            captured[name] = tensor.detach()
            if len(captured) == len(modules):
                raise _EnoughLayers

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            model(batch)
    except _EnoughLayers:
        pass
    except LayerError:
        raise
    except Exception as exc:
        raise ModelError(
            f"the model raised {type(exc).__name__} on a batch of shape {tuple(batch.shape)}: "
            f"{exc}. Check that the images have the size and channels the model was built for."
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in modules if name not in captured]
    if missing:
        raise LayerError(
            f"layer(s) {', '.join(map(repr, missing))} never ran in the forward pass; "
            "pick layers the model actually calls"
        )
    return captured
