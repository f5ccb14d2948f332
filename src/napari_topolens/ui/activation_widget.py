"""Dock widget: choose a model, layers and images, pull activations off the main thread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    Select,
    SpinBox,
)

from ..activations.extract import SAMPLING_MODES
from ..errors import TopoLensError
from ..samples import SAMPLE_NAMES
from .sample_data import SAMPLE_KEY
from .widget_parts import (
    ALL_IMAGES,
    CURRENT_IMAGE,
    ProgressWorker,
    current_stack_index,
    image_stack,
    report_error,
)

if TYPE_CHECKING:
    import napari
    import torch

__all__ = ["ActivationWidget", "summarise_clouds"]

IMPORT_SPEC = "import spec + weights"


def summarise_clouds(clouds: dict[str, Any]) -> str:
    """One line per layer: points, dimensions, grid and sampling."""
    lines = []
    for name, cloud in clouds.items():
        grid = "x".join(map(str, cloud.grid_shape)) or "vector"
        images = len(np.unique(cloud.image_index))
        lines.append(
            f"{name}: {len(cloud)} points x {cloud.points.shape[1]} dims "
            f"from {images} images (grid {grid}, {cloud.sampling})"
        )
    return "\n".join(lines)


class ActivationWidget(Container):
    """Pull activations of the chosen layers for the images of an Image layer.

    Results are kept in :attr:`clouds` (layer name -> ``PointCloud``) with the
    model and images they came from; later analyses read them from there.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._model: torch.nn.Module | None = None
        self._model_key: tuple[str, str, str] | None = None
        self._defaults: list[str] = []
        self._job: ProgressWorker | None = None
        self.clouds: dict[str, Any] = {}
        self.source: dict[str, Any] = {}

        self.model_source = ComboBox(
            label="Model",
            choices=[f"sample: {n}" for n in SAMPLE_NAMES] + [IMPORT_SPEC],
            tooltip="A shipped sample model, or any model built by 'package.module:callable'",
        )
        self.spec = LineEdit(
            label="Import spec", tooltip="package.module:callable (called without arguments)"
        )
        self.weights = FileEdit(label="Weights", mode="r", filter="*.pt *.pth *.ckpt *.bin")
        self.load_button = PushButton(text="Load model and list layers")
        self.image_layer = ComboBox(
            label="Images", choices=self._image_layer_choices, nullable=True
        )
        self.which = ComboBox(label="Which", choices=[ALL_IMAGES, CURRENT_IMAGE])
        self.layers = Select(label="Layers", choices=[], tooltip="Ctrl/Shift-click to pick several")
        self.sampling = ComboBox(label="Sampling", choices=list(SAMPLING_MODES), value="top_norm")
        self.max_points = SpinBox(
            label="Max points",
            min=0,
            max=10_000_000,
            value=0,
            tooltip="0: no cap (80,000 for all_positions)",
        )
        self.run_button = PushButton(text="Pull activations")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="Load a model to list its layers.")
        self.extend(
            [
                self.model_source,
                self.spec,
                self.weights,
                self.load_button,
                self.image_layer,
                self.which,
                self.layers,
                self.sampling,
                self.max_points,
                self.run_button,
                self.cancel_button,
                self.status,
            ]
        )
        self.model_source.changed.connect(self._on_source_changed)
        self.load_button.changed.connect(self.load_model)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._viewer.layers.events.inserted.connect(self._on_layers_changed)
        self._viewer.layers.events.removed.connect(self._on_layers_changed)
        self._on_source_changed()
        self._on_layers_changed()

    # ---- choices -----------------------------------------------------------------
    def _image_layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _on_layers_changed(self, _event: Any = None) -> None:
        self.image_layer.reset_choices()
        if self.image_layer.value is None and self.image_layer.choices:
            self.image_layer.value = self.image_layer.choices[-1]
        # the sample on screen picks its own model (shapes open: the shapes model)
        layer = self.image_layer.value
        sample = layer.metadata.get(SAMPLE_KEY) if layer is not None else None
        if sample in SAMPLE_NAMES and self._sample_name() not in (None, sample):
            self.model_source.value = f"sample: {sample}"
        self._select_sample_images()

    def _on_source_changed(self, _value: Any = None) -> None:
        custom = self.model_source.value == IMPORT_SPEC
        self.spec.visible = custom
        self.weights.visible = custom
        self._select_sample_images()

    def _sample_name(self) -> str | None:
        value = self.model_source.value
        return value.split(": ", 1)[1] if value.startswith("sample: ") else None

    def _select_sample_images(self) -> None:
        """Pick the image layer that holds the chosen sample, when there is one."""
        name = self._sample_name()
        for _layer_name, layer in self._image_layer_choices():
            if name is not None and layer.metadata.get(SAMPLE_KEY) == name:
                self.image_layer.value = layer
                return

    # ---- model -------------------------------------------------------------------
    def load_model(self, _value: Any = None) -> torch.nn.Module | None:
        """Build (or reuse) the chosen model and fill the layer picker."""
        from ..activations.models import list_layers
        from ..activations.models import load_model as build_model

        name = self._sample_name()
        weights = (
            str(self.weights.value)
            if self.weights.value and str(self.weights.value) not in ("", ".")
            else ""
        )
        key = (self.model_source.value, self.spec.value, weights)
        try:
            if key != self._model_key or self._model is None:
                if name is not None:
                    from ..samples import load_sample

                    sample = load_sample(name)
                    model, defaults = sample.model, sample.default_layers
                else:
                    if not self.spec.value.strip():
                        raise TopoLensError(
                            "type an import spec such as 'mypackage.models:build_net'"
                        )
                    model, defaults = build_model(self.spec.value.strip(), weights or None), []
                self._model, self._model_key = model, key
                self._defaults = defaults
            shape = self._input_shape()
            names = list_layers(self._model, shape)
        except TopoLensError as exc:
            self._fail(exc)
            return None
        self.layers.choices = names
        self.layers.value = [n for n in self._defaults if n in names] or names[-2:-1]
        self.status.value = f"{len(names)} layers; pick some and press Pull activations."
        return self._model

    def _input_shape(self) -> tuple[int, int, int] | None:
        layer = self.image_layer.value
        if layer is None:
            return None
        data = np.asarray(layer.data[:1]) if layer.data.ndim > 2 else np.asarray(layer.data)[None]
        if layer.rgb:
            return (data.shape[-1], data.shape[-3], data.shape[-2])
        return (1, data.shape[-2], data.shape[-1])

    # ---- run ---------------------------------------------------------------------
    def selected_images(self) -> tuple[np.ndarray, np.ndarray]:
        """The chosen images and their indices in the layer's stack."""
        from ..errors import EmptySelectionError

        layer = self.image_layer.value
        if layer is None:
            raise EmptySelectionError("no Image layer is chosen; open images or a sample first")
        stack = image_stack(layer)
        index = np.arange(len(stack))
        if self.which.value == CURRENT_IMAGE:
            index = np.array([current_stack_index(self._viewer, layer)])
        return stack[index], index

    def run(self, _value: Any = None) -> Any:
        """Start the extraction in a worker; returns the worker (tests wait on it)."""
        from ..activations.extract import iter_extract_activations

        if self._job is not None:
            return self._job.worker
        try:
            model = self.load_model() if self._model is None else self._model
            if model is None:
                return None
            layers = list(self.layers.value)
            if not layers:
                raise TopoLensError("no layers are selected; pick at least one in the Layers list")
            images, index = self.selected_images()
            steps = iter_extract_activations(
                model,
                images,
                layers,
                sampling=self.sampling.value,
                max_points=self.max_points.value or None,
            )
        except TopoLensError as exc:
            self._fail(exc)
            return None

        def work():  # runs in the worker thread; touches no layer
            return (yield from steps)

        self._job = ProgressWorker(
            work,
            "Pulling activations",
            on_done=lambda clouds: self._on_done(clouds, index, layers),
            on_error=self._fail,
            on_cancelled=lambda: self._set_status("Cancelled; nothing was kept."),
            on_finished=self._on_finished,
        )
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self._set_status("Pulling activations...")
        self._job.start()
        return self._job.worker

    @property
    def _worker(self) -> Any:
        """The running napari worker, or ``None``."""
        return None if self._job is None else self._job.worker

    def cancel(self, _value: Any = None) -> None:
        if self._job is not None:
            self._job.quit()

    def _on_done(self, clouds: dict[str, Any], index: np.ndarray, layers: list[str]) -> None:
        self.clouds = clouds
        layer = self.image_layer.value
        self.source = {
            "model": self.model_source.value if self._sample_name() else self.spec.value,
            "image_layer": None if layer is None else layer.name,
            "image_index": index,
            "layers": layers,
            "sampling": self.sampling.value,
        }
        self._set_status(summarise_clouds(clouds))

    def _on_finished(self) -> None:
        self._job = None
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def _fail(self, exc: BaseException) -> None:
        report_error(exc, self.status)

    def _set_status(self, text: str) -> None:
        self.status.value = text
