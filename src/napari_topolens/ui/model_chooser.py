"""The model chooser both dock widgets share: which model, built or reused, and its layers.

A shipped sample model, a model built by ``package.module:callable`` (+ weights), a
model handed over with ``napari_topolens.add_model(viewer, model, name=...)`` or a
``torch.nn.Module`` variable of the open napari console. The chooser builds the
chosen model once and keeps it until the choice changes (or a console variable or
added model is replaced), and says so with :attr:`ModelChooser.forgotten`, so a
widget never runs a model other than the one its form shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, Container, FileEdit, LineEdit, PushButton
from psygnal import Signal
from qtpy.QtCore import QEvent, QObject

from ..activations.hooks import split_call
from ..activations.models import list_layers, load_model
from ..errors import ModelError
from ..samples import SAMPLE_NAMES, load_sample
from .model_registry import added_models, discovered_models, model_events
from .sample_data import SAMPLE_KEY
from .viewer_key import same_viewer

if TYPE_CHECKING:
    import torch

__all__ = [
    "ADDED_PREFIX",
    "CONSOLE_PREFIX",
    "IMPORT_SPEC",
    "SAMPLE_PREFIX",
    "SPREAD_LAYERS",
    "ChosenModel",
    "ModelChooser",
    "RefreshOnPopup",
    "input_shape",
    "spread_layers",
]

SAMPLE_PREFIX = "sample: "
ADDED_PREFIX = "added: "
CONSOLE_PREFIX = "console: "
IMPORT_SPEC = "import spec + weights"
#: Layers ticked for a model that brings no defaults of its own.
SPREAD_LAYERS = 3


class RefreshOnPopup(QObject):
    """Re-reads a ComboBox's choices when the user opens it (console models come and go)."""

    def __init__(self, combo: ComboBox) -> None:
        super().__init__(combo.native)
        self._combo = combo
        combo.native.installEventFilter(self)

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:
        if event is not None and event.type() == QEvent.Type.MouseButtonPress:
            self._combo.reset_choices()
        return False


@dataclass
class ChosenModel:
    """A built model, the layers its forward pass calls and where it came from."""

    model: torch.nn.Module
    #: The layers (modules) the forward pass calls, in call order.
    layer_names: list[str]
    #: The layers to tick at first: the sample's own, else a spread over the depth.
    default_layers: list[str]
    #: What the model is, for provenance (``sample:digits``, an import spec, ...).
    label: str
    #: The model's class names, when known (the samples').
    class_names: list[str] | None


class ModelChooser(Container):
    """Model source, import spec, weights and a load button, with the model they give.

    ``is_busy`` tells whether the owning widget is running (a model added then is
    listed but not chosen, and the sample on screen does not switch the model).
    """

    #: The chosen model changed: a model built before is dropped (load again).
    forgotten = Signal()
    #: A model was added with ``add_model`` and chosen (its choice text).
    added = Signal(str)

    def __init__(
        self, viewer: Any, *, is_busy: Callable[[], bool] = lambda: False, load_text: str
    ) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._is_busy = is_busy
        self.chosen: ChosenModel | None = None
        self._chosen_key: tuple[str, str, str] | None = None
        self.source = ComboBox(
            label="Model",
            choices=self._source_choices,
            tooltip=(
                "A shipped sample model, a model built by 'package.module:callable' "
                "(+ weights), a model given with napari_topolens.add_model(viewer, model, "
                "name=...), or a torch.nn.Module variable of the open napari console"
            ),
        )
        self.spec = LineEdit(
            label="Import spec", tooltip="package.module:callable (called without arguments)"
        )
        self.weights = FileEdit(
            label="Weights", mode=FileDialogMode.EXISTING_FILE, filter="*.pt *.pth *.ckpt *.bin"
        )
        self.load_button = PushButton(text=load_text)
        self.extend([self.source, self.spec, self.weights, self.load_button])
        self._popup_filter = RefreshOnPopup(self.source)
        self.source.changed.connect(self._on_source_changed)
        self.spec.changed.connect(self.forget)
        self.weights.changed.connect(self.forget)
        model_events.changed.connect(self._on_models_added)
        self._on_source_changed()

    # ---- the choices ------------------------------------------------------------------
    def user_models(self) -> dict[str, Any]:
        """Models from Python, by their choice text: added ones first, then the console's."""
        added = added_models(self._viewer)
        found = {ADDED_PREFIX + name: model for name, model in added.items()}
        given = {id(model) for model in added.values()}
        for name, model in discovered_models().items():
            if id(model) not in given:
                found[CONSOLE_PREFIX + name] = model
        return found

    def _source_choices(self, _widget: Any = None) -> list[str]:
        names = [SAMPLE_PREFIX + n for n in SAMPLE_NAMES] + [IMPORT_SPEC]
        names += list(self.user_models())
        current = getattr(getattr(self, "source", None), "value", None)
        if (
            isinstance(current, str)
            and current.startswith((CONSOLE_PREFIX, ADDED_PREFIX))
            and current not in names
        ):
            names.append(current)  # keep the chosen one; loading it says it is gone
        return names

    def sample_name(self) -> str | None:
        """The chosen sample's name, or ``None`` for any other model."""
        value = self.source.value or ""
        return value[len(SAMPLE_PREFIX) :] if value.startswith(SAMPLE_PREFIX) else None

    def source_key(self) -> tuple[str, str, str]:
        """(choice, import spec, weights path): what the chosen model is built from."""
        weights = self.weights.value
        weights_text = str(weights) if weights and str(weights) not in ("", ".") else ""
        return (str(self.source.value), self.spec.value.strip(), weights_text)

    def match_sample(self, layer: Any) -> None:
        """Offer the sample model of the sample on screen (shapes open: the shapes model)."""
        sample = layer.metadata.get(SAMPLE_KEY) if layer is not None else None
        current = self.source.value or ""
        if (
            sample in SAMPLE_NAMES
            and current.startswith(SAMPLE_PREFIX)
            and current != SAMPLE_PREFIX + sample
            and not self._is_busy()
        ):
            self.source.value = SAMPLE_PREFIX + sample

    def sample_layer(self, layers: Sequence[Any]) -> Any:
        """The image layer among ``layers`` that holds the chosen sample, or ``None``."""
        name = self.sample_name()
        if name is None:
            return None
        return next((layer for layer in layers if layer.metadata.get(SAMPLE_KEY) == name), None)

    def choose_added_model(self, image_layer: Any) -> None:
        """A model handed over before the widget opened is the one meant for the user's images."""
        added = list(added_models(self._viewer))
        if added and (image_layer is None or SAMPLE_KEY not in image_layer.metadata):
            self.source.value = ADDED_PREFIX + added[-1]

    def _on_source_changed(self, _value: Any = None) -> None:
        custom = self.source.value == IMPORT_SPEC
        self.spec.visible = custom
        self.weights.visible = custom
        self.forget()

    def _on_models_added(self, viewer: Any) -> None:
        """A model was given with ``add_model``: list it, and choose it when idle."""
        if not same_viewer(viewer, self._viewer):  # napari docks us with a proxy of it
            return
        before = set(self.source.choices)
        self.source.reset_choices()
        new = [
            c
            for c in self.source.choices
            if isinstance(c, str) and c not in before and c.startswith(ADDED_PREFIX)
        ]
        if new and not self._is_busy():
            self.source.value = new[-1]
            self.source.reset_choices()  # drops a console entry that is now "added"
            self.added.emit(new[-1])

    # ---- the model --------------------------------------------------------------------
    def forget(self, _value: Any = None) -> None:
        """Drop the model built for the previous choice (and say so, once)."""
        if self.chosen is not None:
            self.chosen, self._chosen_key = None, None
            self.forgotten.emit()

    def load(self, input_shape: tuple[int, int, int] | None) -> tuple[ChosenModel, bool]:
        """The chosen model, built now or reused, and whether it was built now.

        Raises a ``TopoLensError`` (``ModelError`` for a model that cannot be built).
        """
        key = self.source_key()
        # a model added again under the same name (or a console variable reassigned)
        stale = (
            self.chosen is not None
            and key[0].startswith((ADDED_PREFIX, CONSOLE_PREFIX))
            and self.user_models().get(key[0]) is not self.chosen.model
        )
        if self.chosen is not None and key == self._chosen_key and not stale:
            return self.chosen, False
        model, defaults, label, class_names = self._build()
        names = list_layers(model, input_shape)
        chosen = ChosenModel(
            model=model,
            layer_names=names,
            default_layers=[n for n in defaults if n in names] or spread_layers(model, names),
            label=label,
            class_names=class_names,
        )
        self.chosen, self._chosen_key = chosen, key
        return chosen, True

    def _build(self) -> tuple[Any, list[str], str, list[str] | None]:
        """The chosen model, its default layers, a description for provenance, its classes."""
        source, spec, weights = self.source_key()
        name = self.sample_name()
        if name is not None:
            sample = load_sample(name)
            return (
                sample.model,
                list(sample.default_layers),
                f"sample:{name}",
                list(map(str, sample.class_names)),
            )
        if source.startswith((CONSOLE_PREFIX, ADDED_PREFIX)):
            return self._user_model(source)
        if not spec:
            raise ModelError("type an import spec such as 'mypackage.models:build_net'")
        return load_model(spec, weights or None), [], spec, None

    def _user_model(self, source: str) -> tuple[Any, list[str], str, None]:
        """A model added with ``add_model`` or a console variable, by its choice text."""
        model = self.user_models().get(source)
        added = source.startswith(ADDED_PREFIX)
        variable = source[len(ADDED_PREFIX if added else CONSOLE_PREFIX) :]
        if model is None:
            raise ModelError(
                f"no model is added as {variable!r} any more; add it again with "
                "napari_topolens.add_model(viewer, model, name=...) or choose another model"
                if added
                else f"the console has no torch.nn.Module named {variable!r} any more; "
                "define it again in the napari console or choose another model"
            )
        kind = "added" if added else "console"
        return (
            model,
            [],
            f"{kind}:{variable} ({type(model).__module__}.{type(model).__qualname__})",
            None,
        )


def input_shape(layer: Any) -> tuple[int, int, int] | None:
    """(channels, height, width) of one image of an Image layer, from its shape alone
    (a lazy stack is not read for this); ``None`` without a layer."""
    if layer is None:
        return None
    shape = np.shape(layer.data)
    if layer.rgb:
        return (shape[-1], shape[-3], shape[-2])
    return (1, shape[-2], shape[-1])


#: Modules that only reshape or pass values on: not worth a look of their own.
_PASS_THROUGH = {
    "Flatten",
    "Unflatten",
    "Identity",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "AlphaDropout",
}
#: Where torch keeps the modules that end a stage (nonlinearities and pooling).
_STAGE_END_MODULES = ("torch.nn.modules.activation", "torch.nn.modules.pooling")


def spread_layers(model: Any, names: list[str], count: int = SPREAD_LAYERS) -> list[str]:
    """A few layers spread over the model's depth, for a model without defaults.

    Candidates are the leaf modules the forward pass calls, except the output and
    pass-through modules (flatten, dropout, identity). Where a stage ends (a
    nonlinearity or pooling not followed at once by another) is preferred, as the
    samples' defaults are; ``count`` of them are picked evenly from first to last,
    so the last layer before the output is always among them.
    """
    named = dict(model.named_modules())
    modules = {n: named[split_call(n, named)[0]] for n in names if split_call(n, named)[0] in named}
    leaves = [n for n in names if n in modules and not any(True for _ in modules[n].children())]
    if len(leaves) < 2:
        return leaves[-1:] or names[-1:]
    body = [n for n in leaves[:-1] if type(modules[n]).__name__ not in _PASS_THROUGH]
    if not body:
        return leaves[-2:-1]

    def ends_stage(name: str) -> bool:
        return type(modules[name]).__module__ in _STAGE_END_MODULES

    stage_ends = [
        name
        for i, name in enumerate(body)
        if ends_stage(name) and not (i + 1 < len(body) and ends_stage(body[i + 1]))
    ]
    pool = stage_ends if len(stage_ends) >= min(count, 2) else body
    if len(pool) <= count:
        return pool
    if count <= 1:
        return pool[-1:]
    picks = np.linspace(0, len(pool) - 1, count).round().astype(int)
    return [pool[i] for i in sorted(set(picks.tolist()))]
