"""Loading user models and naming their layers."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError, ModelError
from .hooks import call_names

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_model",
    "first_input_channels",
    "list_layers",
    "load_model",
    "load_state_dict",
]


def check_model(model: Any) -> torch.nn.Module:
    """``model`` if it is a ``torch.nn.Module``; a ModelError saying what it is otherwise."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model
    if callable(model) and not isinstance(model, type):
        hint = "; it looks like a function that builds one: call it first (model = build())"
    elif isinstance(model, type):
        hint = "; that is a class: create an instance first (model = Net())"
    elif isinstance(model, str):
        hint = "; load it with load_model('package.module:callable') first"
    else:
        hint = ""
    raise ModelError(f"the model must be a torch.nn.Module, got {type(model).__name__}{hint}")


_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
_PROBE_SIZES = (8, 28, 32, 48, 64, 96, 128, 224)


def load_model(spec: str, weights: str | Path | None = None) -> torch.nn.Module:
    """Build a model from ``"package.module:callable"`` and load plain weights into it.

    The callable is called without arguments and must return a ``torch.nn.Module``.
    ``weights`` is read with ``torch.load(weights_only=True)`` only, so a checkpoint
    that holds pickled code is refused without running any of it.
    """
    import torch

    module_name, sep, attr_path = str(spec).partition(":")
    if not sep or not module_name or not attr_path:
        raise ModelError(
            f"model spec {spec!r} is not of the form 'package.module:callable' "
            "(for example 'torchvision.models:resnet18' or 'mypkg.nets:build_model')"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except SystemExit as exc:  # a script-style module; never let it end our process
        raise ModelError(
            f"model spec {spec!r}: importing module {module_name!r} called sys.exit"
            f"({exc.code!r}); it runs a script on import. Put the model in a module that "
            "only defines it (guard the script part with `if __name__ == '__main__':`)"
        ) from None
    except Exception as exc:  # ImportError, or whatever the module raises on import
        raise ModelError(
            f"model spec {spec!r}: module {module_name!r} could not be imported "
            f"({type(exc).__name__}: {exc}); check the name and that the package is "
            "installed in this environment"
        ) from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ModelError(
                f"model spec {spec!r}: {module_name!r} has no attribute {attr_path!r}; "
                "name a function or class that builds the model"
            ) from exc
    try:
        model = target() if callable(target) and not isinstance(target, torch.nn.Module) else target
    except SystemExit as exc:
        raise ModelError(
            f"model spec {spec!r}: calling {attr_path}() called sys.exit({exc.code!r}); "
            "the callable must build and return the model"
        ) from None
    except Exception as exc:
        raise ModelError(
            f"model spec {spec!r}: calling {attr_path}() raised {type(exc).__name__}: {exc}; "
            "the callable must build the model without arguments"
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelError(
            f"model spec {spec!r} gave a {type(model).__name__}, not a torch.nn.Module"
        )
    if weights is not None:
        state = load_state_dict(weights)
        try:
            model.load_state_dict(_match_prefix(state, model), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"weights {str(weights)!r} do not fit the model from {spec!r}: {exc}"
            ) from exc
    return model.eval()


#: Most bytes a weights archive may hold once inflated (all members together, and any one).
MAX_WEIGHTS_BYTES = 16 << 30
#: Most a compressed member may grow when inflated (torch.save stores members uncompressed;
#: a zip bomb grows about a thousandfold), beyond the first MiB of any member.
MAX_INFLATE_RATIO = 20
_INFLATE_ALLOWANCE = 1 << 20


def check_weights_archive(path: Path) -> None:
    """Bound a zip checkpoint by its directory before anything is inflated.

    The sizes come from the zip's central directory (what torch's reader allocates by): each
    member and all together at most :data:`MAX_WEIGHTS_BYTES`, and a compressed member at
    most :data:`MAX_INFLATE_RATIO` times its compressed size (plus 1 MiB). Files that are not
    zip archives (the legacy format) are left to ``torch.load``.
    """
    import zipfile

    try:
        with open(path, "rb") as handle:
            if not zipfile.is_zipfile(handle):
                return
            handle.seek(0)
            with zipfile.ZipFile(handle) as archive:
                members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise CheckpointError(
            f"weights file {str(path)!r} is a damaged zip archive ({exc}); give the file "
            "written by torch.save(model.state_dict(), path)"
        ) from None
    total = 0
    for member in members:
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"weights file {str(path)!r}: member {member.filename!r} uses a compression "
                "torch cannot read; give the file written by torch.save"
            )
        inflated = int(member.file_size)
        total += inflated
        if inflated > MAX_WEIGHTS_BYTES or total > MAX_WEIGHTS_BYTES:
            raise CheckpointError(
                f"weights file {str(path)!r} declares {total / 2**30:.1f} GiB of weights "
                f"(member {member.filename!r}); weights are read up to "
                f"{MAX_WEIGHTS_BYTES / 2**30:.0f} GiB, so it was refused unread"
            )
        if (
            member.compress_type != zipfile.ZIP_STORED
            and inflated > MAX_INFLATE_RATIO * int(member.compress_size) + _INFLATE_ALLOWANCE
        ):
            raise CheckpointError(
                f"weights file {str(path)!r}: member {member.filename!r} would inflate from "
                f"{member.compress_size:,} to {inflated:,} bytes (more than "
                f"{MAX_INFLATE_RATIO}x; torch.save stores weights uncompressed), so it was "
                "refused unread; give the file written by torch.save(model.state_dict(), path)"
            )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint as plain weights, unwrapping the usual nestings.

    Accepts a bare state dict, ``{"state_dict": ...}``, ``{"model": ...}`` and
    similar, and strips DataParallel ``module.`` prefixes. A zip archive is bounded by its
    directory before anything is inflated (:func:`check_weights_archive`).
    """
    import pickle

    import torch

    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(
            f"weights {str(path)!r} is a folder; give the weights file inside it "
            "(written by torch.save(model.state_dict(), path))"
        )
    if not path.exists():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"weights {str(path)!r} is not a plain file")
    check_weights_archive(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():
            raise CheckpointError(
                f"weights file {str(path)!r} is not a PyTorch checkpoint (its content is not "
                "a pickle of tensors); give the file written by torch.save(model.state_dict(), path)"
            ) from exc
        raise CheckpointError(
            f"weights file {str(path)!r} is not plain weights: it holds pickled objects "
            "that would run code when loaded, so it was refused unread. Save "
            "model.state_dict() instead of the model object."
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"weights file {str(path)!r} could not be read as a PyTorch checkpoint "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    for _ in range(3):  # {"model": {"state_dict": ...}} happens
        if isinstance(obj, Mapping) and not _is_state_dict(obj):
            inner = next((obj[k] for k in _CONTAINER_KEYS if k in obj), None)
            if inner is None:
                break
            obj = inner
    if not (isinstance(obj, Mapping) and _is_state_dict(obj)):
        raise CheckpointError(
            f"weights file {str(path)!r} holds no state dict (found {type(obj).__name__}"
            f"{' with keys ' + ', '.join(map(str, list(obj)[:8])) if isinstance(obj, Mapping) else ''}); "
            "save model.state_dict(), optionally as {'state_dict': ...}"
        )
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: Mapping) -> bool:
    import torch

    return len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _match_prefix(state: dict, model: torch.nn.Module) -> dict:
    """Strip one extra leading component (e.g. ``model.``) when only that differs."""
    own = set(model.state_dict())
    if set(state) == own or not state:
        return state
    heads = {k.split(".", 1)[0] for k in state}
    if len(heads) == 1:
        stripped = {k.split(".", 1)[1]: v for k, v in state.items() if "." in k}
        if set(stripped) == own:
            return stripped
    return state


class _FirstConvReached(Exception):
    pass


def first_input_channels(model: torch.nn.Module, example: torch.Tensor | None = None) -> int | None:
    """Channels expected by the first convolution the forward pass calls.

    With ``example`` (one batch), the model is run until it calls its first module
    with an ``in_channels`` attribute, so a model that defines its head before
    its stem is read right. Without it, or when that pass fails, the first such
    module in definition order is used. Lazy modules (``in_channels == 0``) are
    skipped; ``None`` when no module says.
    """
    import torch

    candidates = [
        m
        for m in model.modules()
        if isinstance(getattr(m, "in_channels", None), int) and getattr(m, "in_channels") > 0
    ]
    if not candidates:
        return None
    if example is not None:
        reached: list[int] = []

        def stop(module: torch.nn.Module, _inputs: Any) -> None:
            reached.append(int(getattr(module, "in_channels")))
            raise _FirstConvReached

        handles = [m.register_forward_pre_hook(stop) for m in candidates]
        try:
            with torch.no_grad():
                model(example)
        except _FirstConvReached:
            return reached[0]
        except Exception:
            pass
        finally:
            for handle in handles:
                handle.remove()
    return int(getattr(candidates[0], "in_channels"))


def list_layers(model: torch.nn.Module, input_shape: tuple[int, ...] | None = None) -> list[str]:
    """Names of the layers that can be hooked, in the order the forward pass reaches them.

    The order comes from one forward pass of zeros shaped ``input_shape``
    ``(C, H, W)``; without it, common image sizes are tried. Modules the forward
    pass never calls (``ModuleList`` holders, unused heads) are left out. A module
    called more than once is listed once per call, ``pool#1``, ``pool#2``, each
    where its call ends (see ``hooks``). If no probe runs, the order of
    ``named_modules()`` is returned instead.
    """
    import torch

    candidates: list[tuple[int, ...]]
    if input_shape is not None:
        candidates = [tuple(input_shape)]
    else:
        channels = list(dict.fromkeys([first_input_channels(model) or 3, 1, 3]))
        candidates = [(c, s, s) for c in channels for s in _PROBE_SIZES]
    modules = [(n, m) for n, m in model.named_modules() if n]
    for shape in candidates:
        order: list[str] = []

        def recorder(name: str) -> Any:
            def record(_module: torch.nn.Module, _inp: Any, _out: Any) -> None:
                order.append(name)

            return record

        handles = [m.register_forward_hook(recorder(n)) for n, m in modules]
        try:
            with torch.no_grad():
                model(torch.zeros((1, *shape), dtype=_param_dtype(model), device=_device(model)))
        except Exception:
            continue
        finally:
            for handle in handles:
                handle.remove()
        if order:
            return call_names(order)
    return [n for n, _ in model.named_modules() if n]


def _device(model: torch.nn.Module) -> torch.device:
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _param_dtype(model: torch.nn.Module) -> torch.dtype:
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
