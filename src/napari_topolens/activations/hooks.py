"""Forward hooks that capture named layer outputs and stop the pass early.

A module the forward pass calls more than once (one ``self.pool`` after two
convolutions) is named per call: ``pool#1``, ``pool#2``, counted from 1 in the
order of the calls. Each name is captured at its own call. Modules called once
keep their plain names; the plain name of a module called more than once is
refused (:func:`check_layer_calls`), never quietly read at its first call.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import EmptySelectionError, LayerError, ModelError

if TYPE_CHECKING:
    import torch

__all__ = [
    "call_names",
    "capture_layers",
    "check_layer_calls",
    "check_layer_names",
    "first_tensor",
    "split_call",
]

_CALL = re.compile(r"^(?P<module>.+)#(?P<call>[1-9][0-9]*)$")


class _EnoughLayers(Exception):
    """Raised inside a hook once every requested layer is captured."""


def forward_with_hooks(model: torch.nn.Module, batch: torch.Tensor, handles: Sequence[Any]) -> None:
    """One forward pass with ``handles`` registered (removed whatever happens); an error of
    the model's own is one :class:`ModelError`, a hook's (ours) passes through."""
    import torch

    try:
        with torch.no_grad():
            model(batch)
    except (_EnoughLayers, LayerError):
        raise
    except Exception as exc:
        raise ModelError(
            f"the model raised {type(exc).__name__} on a batch of shape {tuple(batch.shape)}: "
            f"{exc}. Check that the images have the size and channels the model was built for."
        ) from exc
    finally:
        for handle in handles:
            handle.remove()


def split_call(name: str, modules: Mapping[str, Any]) -> tuple[str, int | None]:
    """``("pool", 2)`` for ``"pool#2"``; ``(name, None)`` for a plain module name.

    ``modules`` is ``dict(model.named_modules())``: a module whose own name holds
    ``#`` stays a plain name.
    """
    if name in modules:
        return name, None
    match = _CALL.match(name)
    if match is None or match["module"] not in modules:
        return name, None
    return match["module"], int(match["call"])


def call_names(calls: Sequence[str]) -> list[str]:
    """Layer names from the modules a forward pass called, in call order.

    A module called once keeps its name; one called ``k`` times gives
    ``name#1`` ... ``name#k`` at its calls.
    """
    counts = Counter(calls)
    seen: Counter[str] = Counter()
    names = []
    for name in calls:
        seen[name] += 1
        names.append(name if counts[name] == 1 else f"{name}#{seen[name]}")
    return names


def check_layer_names(model: torch.nn.Module, layers: Sequence[str]) -> dict[str, torch.nn.Module]:
    """Map layer names (``pool#2`` for a call) to modules, refusing unknown names."""
    if isinstance(layers, str):
        layers = [layers]
    if len(layers) == 0:
        raise EmptySelectionError("no layers were selected; pick at least one layer of the model")
    modules = dict(model.named_modules())
    resolved = {name: split_call(name, modules)[0] for name in layers}
    unknown = [name for name in layers if resolved[name] not in modules or resolved[name] == ""]
    if unknown:
        known = [n for n in modules if n]
        shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
        raise LayerError(
            f"unknown layer name(s) {', '.join(map(repr, unknown))}; the model's layers are: {shown}"
        )
    return {name: modules[resolved[name]] for name in layers}


def check_layer_calls(
    model: torch.nn.Module, modules: Mapping[str, torch.nn.Module], batch: torch.Tensor
) -> None:
    """Refuse names that do not pick one call: plain names of modules called more than once,
    and ``name#k`` past the module's calls (one forward pass of ``batch``, counting calls)."""
    named = dict(model.named_modules())
    targets = {name: split_call(name, named) for name in modules}
    counted = {id(modules[name]): 0 for name in modules}
    by_id = {id(modules[name]): modules[name] for name in modules}

    def counter(key: int) -> Any:
        def count(_module: torch.nn.Module, _inp: Any, _out: Any) -> None:
            counted[key] += 1

        return count

    handles = [module.register_forward_hook(counter(key)) for key, module in by_id.items()]
    forward_with_hooks(model, batch, handles)
    for name, (base, call) in targets.items():
        calls = counted[id(modules[name])]
        if call is None and calls > 1:
            options = ", ".join(f"{base}#{k}" for k in range(1, calls + 1))
            raise LayerError(
                f"layer {name!r} is called {calls} times in the model's forward pass; name the "
                f"call to analyse: {options}"
            )
        if call is not None and call > calls:
            raise LayerError(
                f"layer {name!r}: module {base!r} is called {calls} time(s) in the forward pass"
                + ("; name it without '#'" if calls == 1 else "")
            )
        if call is not None and calls == 1:
            raise LayerError(
                f"layer {name!r}: module {base!r} is called once in the forward pass; name it "
                f"{base!r}"
            )


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
    network is not computed. ``pool#k`` is the output of module ``pool``'s k-th
    call; a plain name its first. A module that returns a tuple, list or dict
    contributes its first tensor, and ``notes[name]`` (when given) says so.
    """
    captured: dict[str, torch.Tensor] = {}
    named = dict(model.named_modules()) if any("#" in name for name in modules) else {}

    def hook_for(name: str) -> Any:
        wanted = (split_call(name, named)[1] or 1) if named else 1
        calls = [0]

        def hook(_module: torch.nn.Module, _inp: Any, output: Any) -> None:
            calls[0] += 1
            if name in captured or calls[0] != wanted:
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
    with contextlib.suppress(_EnoughLayers):  # every layer asked for is in: stop early
        forward_with_hooks(model, batch, handles)
    missing = [name for name in modules if name not in captured]
    if missing:
        raise LayerError(
            f"layer(s) {', '.join(map(repr, missing))} never ran in the forward pass; "
            "pick layers the model actually calls"
        )
    return captured
