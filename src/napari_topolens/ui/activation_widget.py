"""Dock widget: choose a model, layers and images, pull activations off the main thread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    Label,
    PushButton,
    Select,
    SpinBox,
    Widget,
)

from ..activations.extract import SAMPLING_MODES, iter_extract_activations
from ..activations.pointcloud import PointCloud
from ..errors import EmptySelectionError, TopoLensError
from .model_chooser import ADDED_PREFIX, IMPORT_SPEC, ModelChooser, input_shape
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

__all__ = ["IMPORT_SPEC", "ActivationWidget", "summarise_clouds"]


def summarise_clouds(clouds: dict[str, PointCloud]) -> str:
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
        super().__init__(labels=False)  # the chooser and the form label their own parts
        self._viewer = napari_viewer
        self._job: ProgressWorker | None = None
        self.clouds: dict[str, PointCloud] = {}
        self.source: dict[str, Any] = {}
        self.model_chooser = ModelChooser(
            napari_viewer,
            is_busy=lambda: self._job is not None,
            load_text="Load model and list layers",
        )
        # the chooser's parts under the names the form has always had
        self.model_source = self.model_chooser.source
        self.spec = self.model_chooser.spec
        self.weights = self.model_chooser.weights
        self.load_button = self.model_chooser.load_button
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
        parts: list[Widget] = [
            self.image_layer,
            self.which,
            self.layers,
            self.sampling,
            self.max_points,
        ]
        form = Container(widgets=parts, labels=True)
        self.extend([self.model_chooser, form, self.run_button, self.cancel_button, self.status])
        self.model_chooser.forgotten.connect(self._on_model_forgotten)
        self.model_chooser.added.connect(self._on_model_added)
        self.model_source.changed.connect(self._select_sample_images)
        self.load_button.changed.connect(self.load_model)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._viewer.layers.events.inserted.connect(self._on_layers_changed)
        self._viewer.layers.events.removed.connect(self._on_layers_changed)
        self._select_sample_images()
        self._on_layers_changed()
        self.model_chooser.choose_added_model(self.image_layer.value)

    # ---- choices -----------------------------------------------------------------
    def _image_layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _on_layers_changed(self, _event: Any = None) -> None:
        self.model_source.reset_choices()
        self.image_layer.reset_choices()
        if self.image_layer.value is None and self.image_layer.choices:
            self.image_layer.value = self.image_layer.choices[-1]
        # the sample on screen picks its own model (shapes open: the shapes model)
        self.model_chooser.match_sample(self.image_layer.value)
        self._select_sample_images()

    def _select_sample_images(self, _value: Any = None) -> None:
        """Pick the image layer that holds the chosen sample, when there is one."""
        layer = self.model_chooser.sample_layer([layer for _, layer in self._image_layer_choices()])
        if layer is not None:
            self.image_layer.value = layer

    def _on_model_forgotten(self) -> None:
        """Another model is chosen: its layers are listed when it is loaded."""
        self.layers.choices = []
        self._set_status("The model changed: press Load model and list layers.")

    def _on_model_added(self, choice: str) -> None:
        self._set_status(f"{choice[len(ADDED_PREFIX) :]!r} was added: press Load model.")

    # ---- model -------------------------------------------------------------------
    @property
    def _model(self) -> torch.nn.Module | None:
        chosen = self.model_chooser.chosen
        return None if chosen is None else chosen.model

    def load_model(self, _value: Any = None) -> torch.nn.Module | None:
        """Build (or reuse) the chosen model and fill the layer picker.

        Returns the model, or ``None`` after reporting the problem.
        """
        try:
            chosen, built = self.model_chooser.load(input_shape(self.image_layer.value))
        except TopoLensError as exc:
            self._fail(exc)
            return None
        if built or not self.layers.choices:
            self.layers.choices = chosen.layer_names
            self.layers.value = chosen.default_layers
        self.status.value = (
            f"{len(chosen.layer_names)} layers; pick some and press Pull activations."
        )
        return chosen.model

    # ---- run ---------------------------------------------------------------------
    def selected_images(self) -> tuple[np.ndarray, np.ndarray]:
        """The chosen images and their indices in the layer's stack."""
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
        if self._job is not None:
            return self._job.worker
        try:
            model = self.load_model()
            if model is None or self.model_chooser.chosen is None:
                return None
            label = self.model_chooser.chosen.label
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
            on_done=lambda clouds: self._on_done(clouds, index, layers, label),
            on_error=self._fail,
            on_cancelled=lambda: self._set_status("Cancelled; nothing was kept."),
            on_finished=self._on_finished,
            owner=self,  # its window closed while pulling: the pull stops, quietly
            on_abandoned=lambda: setattr(self, "_job", None),
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

    def _on_done(
        self, clouds: dict[str, PointCloud], index: np.ndarray, layers: list[str], model: str
    ) -> None:
        self.clouds = clouds
        layer = self.image_layer.value
        self.source = {
            "model": model,
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
