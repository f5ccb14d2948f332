"""Models handed to napari-topolens from Python, for the analysis widget to list.

``napari_topolens.add_model(viewer, model, name="net")`` is the documented way to
give the widget a model built in a script, a notebook or napari's console. The
widget also lists the ``torch.nn.Module`` variables of a running IPython shell
(napari's console once it is open, or the IPython/Jupyter session napari was
started from), found through IPython's public ``get_ipython()``; nothing here
reads napari's private attributes.

Models are kept per viewer, strongly (the user handed them over), until the
viewer is garbage-collected or :func:`remove_model` drops them. The console's
``viewer`` is the viewer itself, a docked widget's is napari's proxy of it: both
find the same models (``ui.viewer_key.PerViewer``). This module imports neither
napari nor torch.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

from psygnal import Signal

from ..errors import ModelError
from ..samples import SAMPLE_NAMES, load_sample
from ..topology.results import Analysis
from .viewer_key import PerViewer

__all__ = [
    "add_model",
    "added_models",
    "discovered_models",
    "model_events",
    "model_of_analysis",
    "remember_model",
    "remove_model",
]


class _ModelEvents:
    """``changed(viewer)`` fires after a model was added to or removed from a viewer.

    ``viewer`` is what the caller passed (the viewer or a proxy of it): compare it
    with :func:`napari_topolens.ui.state.same_viewer`, never with ``is``.
    """

    changed = Signal(object)


#: Emits ``changed(viewer)``; the analysis widgets of that viewer refresh their list.
model_events = _ModelEvents()
_MODELS = PerViewer()  # dict of name -> model, per viewer


def _module_type() -> type | None:
    torch = sys.modules.get("torch")
    return None if torch is None else torch.nn.Module


def add_model(viewer: Any, model: Any, name: str | None = None) -> str:
    """Offer ``model`` in the analysis widget of ``viewer``.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose analysis widget should list the model.
    model : torch.nn.Module
        Any module that takes image batches ``(B, C, H, W)``.
    name : str, optional
        The name shown in the widget (``added: <name>``); the model's class name
        by default. Adding another model under the same name replaces it.

    Returns
    -------
    str
        The name the model is listed under.
    """
    module_type = _module_type()
    if module_type is None or not isinstance(model, module_type):
        raise ModelError(
            f"add_model expects a torch.nn.Module, got {type(model).__name__}; pass the "
            "network itself (e.g. add_model(viewer, net, name='net'))"
        )
    label = type(model).__name__ if name is None else str(name).strip()
    if not label:
        raise ModelError("give the model a non-empty name, e.g. add_model(viewer, net, name='net')")
    _MODELS.setdefault(viewer, lambda _viewer: {})[label] = model
    model_events.changed.emit(viewer)
    return label


def remove_model(viewer: Any, name: str) -> None:
    """Stop offering the model added as ``name`` (no error if there is none)."""
    if (_MODELS.get(viewer) or {}).pop(name, None) is not None:
        model_events.changed.emit(viewer)


def added_models(viewer: Any) -> dict[str, Any]:
    """The models given to ``viewer`` with :func:`add_model`, by name."""
    return dict(_MODELS.get(viewer) or {})


def discovered_models() -> dict[str, Any]:
    """``torch.nn.Module`` variables of the running IPython shell, by name.

    napari's console is an IPython shell once it has been opened; so is a
    Jupyter or IPython session napari was started from. Neither IPython nor
    torch is imported for this: without them there is nothing to find.
    """
    module_type = _module_type()
    ipython = sys.modules.get("IPython")
    if module_type is None or ipython is None:
        return {}
    shell = ipython.get_ipython()
    namespace = getattr(shell, "user_ns", None)
    if not isinstance(namespace, dict):
        return {}
    return {
        str(name): value
        for name, value in sorted(namespace.items(), key=lambda item: str(item[0]))
        if not str(name).startswith("_") and isinstance(value, module_type)
    }


#: The model each analysis made in this session was run with (``remember_model``), by
#: ``id`` with a weak reference to the analysis (an ``Analysis`` compares by value, so it
#: is no dict key); an entry goes when its analysis does.
_ANALYSIS_MODELS: dict[int, tuple[Any, Any]] = {}


def remember_model(analysis: Analysis, model: Any) -> None:
    """Record the model ``analysis`` was made with (for its topology maps)."""
    key = id(analysis)
    _ANALYSIS_MODELS[key] = (
        weakref.ref(analysis, lambda _ref: _ANALYSIS_MODELS.pop(key, None)),
        model,
    )


def model_of_analysis(viewer: Any, analysis: Analysis) -> Any:
    """The model ``analysis`` was made with, when it is in reach; else None.

    Recorded by :func:`remember_model` (the analysis widget does), else named by the
    analysis's provenance ``model``: a shipped sample (``sample:<name>``), a model
    still added to ``viewer`` or in the console under the recorded name. Never a
    guess by shape: a wrong model would place pixels silently wrong.
    """
    ref, found = _ANALYSIS_MODELS.get(id(analysis), (None, None))
    if ref is not None and ref() is analysis:
        return found
    label = str((getattr(analysis, "provenance", None) or {}).get("model") or "")
    kind, _, rest = label.partition(":")
    name = rest.split(" (", 1)[0].strip()
    if kind == "sample" and name:
        return load_sample(name).model if name in SAMPLE_NAMES else None
    if kind == "added":
        return added_models(viewer).get(name)
    if kind == "console":
        return discovered_models().get(name)
    return None
