"""Dock widget: analyse the topology of a model's layers on images in the viewer.

A thin form. The parameters (model, layers from the module tree, which images,
sampling, the Mapper / persistence / metric options with the published defaults)
are read and checked on the main thread; bad input is reported at once and the
viewer is left as it was. The work (activations, class probabilities for the
probability lens, the whole topology engine) runs in a generator worker whose
every yield can cancel. The worker also computes the Mapper layouts (the pure,
costly part of the views), then hands the finished :class:`Analysis` to the main
thread, where ``views.show_analysis_incrementally`` adds the layers one per
event-loop turn (the viewer keeps painting and reacting), and waits for the last
one before it returns; so the worker's ``finished`` means "shown". A cancelled
or failed run removes what it added: it never leaves half-made layers.

Stack indices: when only some images are analysed, the point clouds'
``image_index`` is mapped back to the image layer's stack index, so the analysis
indexes the layer it came from (labels and probabilities are stack-sized; rows of
images that were not analysed hold -1 / NaN).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from ..activations.image_source import layer_images
from ..errors import EmptySelectionError, ModelError, TopoLensError
from ..samples import SAMPLE_NAMES
from .module_tree import ModuleTree
from .sample_data import SAMPLE_KEY
from .widget_parts import (
    CURRENT_IMAGE,
    MARKED_IMAGES,
    WHICH_IMAGES,
    ProgressWorker,
    check_one_stack_axis,
    console_models,
    current_stack_index,
    marked_stack_indices,
    report_error,
)

if TYPE_CHECKING:
    import napari
    import torch

__all__ = ["CONSOLE_PREFIX", "IMPORT_SPEC", "SAMPLE_PREFIX", "AnalysisWidget"]

SAMPLE_PREFIX = "sample: "
CONSOLE_PREFIX = "console: "
IMPORT_SPEC = "import spec + weights"
#: Share of the progress bar given to pulling activations (the rest: topology).
_EXTRACT_SHARE = 0.25
#: Largest image stack copied into the analysis so that a saved file is self-contained
#: (larger stacks are left out; ``provenance["images_embedded"]`` says which).
_MAX_EMBEDDED_BYTES = 256 * 2**20


class _RefreshOnPopup(QObject):
    """Re-reads a ComboBox's choices when the user opens it (console models come and go)."""

    def __init__(self, combo: ComboBox) -> None:
        super().__init__(combo.native)
        self._combo = combo

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.MouseButtonPress:
            self._combo.reset_choices()
        return False


class AnalysisWidget(QWidget):
    """Choose model, layers, images and parameters; Run analyses off the main thread.

    The finished analysis is kept in :attr:`analysis` and shown with
    ``napari_topolens.ui.views.show_analysis``; :attr:`layers_added` lists the
    layers that call returned.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        from ..activations.extract import SAMPLING_MODES
        from ..topology.analysis import AnalysisConfig
        from ..topology.mapper import LENSES
        from ..topology.metrics import METRICS

        self._viewer = napari_viewer
        self._model: torch.nn.Module | None = None
        self._model_key: tuple[str, str, str] | None = None
        self._model_label = ""
        self._defaults: list[str] = []
        self._job: ProgressWorker | None = None
        self._show: Any = None  # the running views.IncrementalShow
        self._started = 0.0
        self.analysis: Any = None
        self.layers_added: list[Any] = []
        defaults = AnalysisConfig()

        # ---- model --------------------------------------------------------------
        self.model_source = ComboBox(
            label="Model",
            choices=self._source_choices,
            tooltip=(
                "A shipped sample model, a model built by 'package.module:callable' "
                "(+ weights), or a torch.nn.Module variable of the napari console"
            ),
        )
        self.spec = LineEdit(
            label="Import spec", tooltip="package.module:callable (called without arguments)"
        )
        self.weights = FileEdit(label="Weights", mode="r", filter="*.pt *.pth *.ckpt *.bin")
        self.load_button = PushButton(text="Load model")
        model_box = Container(
            widgets=[self.model_source, self.spec, self.weights, self.load_button], labels=True
        )

        # ---- layers -------------------------------------------------------------
        self.module_tree = ModuleTree()
        self.module_tree.setMinimumHeight(220)
        self.module_tree.setToolTip("Tick the layers to analyse (modules the forward pass calls)")

        # ---- images -------------------------------------------------------------
        self.image_layer = ComboBox(
            label="Images", choices=self._image_layer_choices, nullable=True
        )
        self.which = ComboBox(label="Which", choices=list(WHICH_IMAGES))
        self.marker_layer = ComboBox(
            label="Marked in",
            choices=self._marker_layer_choices,
            nullable=True,
            tooltip="Points/Shapes: the images their marks sit on; Labels: slices with any label",
        )
        self.sampling = ComboBox(label="Sampling", choices=list(SAMPLING_MODES), value="pooled")
        self.max_points = SpinBox(
            label="Max points",
            min=0,
            max=10_000_000,
            value=0,
            tooltip="Cap on points per layer; 0: none (80,000 for all_positions)",
        )
        images_box = Container(
            widgets=[
                self.image_layer,
                self.which,
                self.marker_layer,
                self.sampling,
                self.max_points,
            ],
            labels=True,
        )

        # ---- topology parameters (published defaults) ---------------------------
        self.metric = ComboBox(label="Metric", choices=list(METRICS), value=defaults.metric)
        self.max_dim = SpinBox(label="Max homology dim", min=0, max=2, value=defaults.max_dim)
        self.h1_max_points = SpinBox(
            label="H1 landmarks",
            min=10,
            max=100_000,
            value=defaults.h1_max_points,
            tooltip="H1 is computed on at most this many landmarks (its cost grows steeply with N)",
        )
        self.subsample = ComboBox(
            label="Landmarks", choices=["maxmin", "random"], value=defaults.subsample
        )
        self.lens = ComboBox(label="Mapper lens", choices=list(LENSES), value=defaults.mapper_lens)
        self.n_cubes = SpinBox(
            label="Cover intervals", min=1, max=1000, value=defaults.mapper_n_cubes
        )
        self.perc_overlap = FloatSpinBox(
            label="Cover overlap", min=0.0, max=0.95, step=0.05, value=defaults.mapper_perc_overlap
        )
        self.min_samples = SpinBox(
            label="DBSCAN min samples", min=1, max=1000, value=defaults.mapper_min_samples
        )
        self.eps = FloatSpinBox(
            label="DBSCAN eps",
            min=0.0,
            max=1e9,
            step=0.1,
            value=0.0,
            tooltip="0: the knee of the sorted nearest-neighbour distances",
        )
        self.seed = SpinBox(label="Seed", min=0, max=2**31 - 1, value=defaults.seed)
        self.scheduler = LineEdit(
            label="Dask scheduler",
            tooltip="Address of a running dask.distributed scheduler (tcp://host:8786): the "
            "extraction batches and each layer's topology run on its workers. Empty: here.",
        )
        params_box = Container(
            widgets=[
                self.metric,
                self.max_dim,
                self.h1_max_points,
                self.subsample,
                self.lens,
                self.n_cubes,
                self.perc_overlap,
                self.min_samples,
                self.eps,
                self.seed,
                self.scheduler,
            ],
            labels=True,
        )

        # ---- run ----------------------------------------------------------------
        self.run_button = PushButton(text="Run analysis")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="Load a model to list its layers.")
        self.status.native.setWordWrap(True)

        self._build_layout(model_box, images_box, params_box)

        self.model_source.changed.connect(self._on_source_changed)
        self.spec.changed.connect(self._forget_model)
        self.weights.changed.connect(self._forget_model)
        self.which.changed.connect(self._on_which_changed)
        self.load_button.changed.connect(self.load_model)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._popup_filter = _RefreshOnPopup(self.model_source)
        self.model_source.native.installEventFilter(self._popup_filter)
        self._viewer.layers.events.inserted.connect(self._on_layers_changed)
        self._viewer.layers.events.removed.connect(self._on_layers_changed)
        self._on_source_changed()
        self._on_which_changed()
        self._on_layers_changed()

    def _build_layout(
        self, model_box: Container, images_box: Container, params_box: Container
    ) -> None:
        from superqt import QCollapsible

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(model_box.native)
        layers_title = QLabel("<b>Layers</b> (tick the ones to analyse)")
        layout.addWidget(layers_title)
        layout.addWidget(self.module_tree)
        layout.addWidget(images_box.native)
        self.params_section = QCollapsible("Topology parameters")
        self.params_section.addWidget(params_box.native)
        layout.addWidget(self.params_section)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button.native)
        buttons.addWidget(self.cancel_button.native)
        layout.addLayout(buttons)
        layout.addWidget(self.status.native)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._boxes = (model_box, images_box, params_box)  # keep the magicgui wrappers alive
        self.setMinimumWidth(300)

    # ---- choices --------------------------------------------------------------------
    def _source_choices(self, _widget: Any = None) -> list[str]:
        names = [SAMPLE_PREFIX + n for n in SAMPLE_NAMES] + [IMPORT_SPEC]
        names += [CONSOLE_PREFIX + name for name in console_models(self._viewer)]
        current = getattr(getattr(self, "model_source", None), "value", None)
        if isinstance(current, str) and current.startswith(CONSOLE_PREFIX) and current not in names:
            names.append(current)  # keep the chosen one; loading it says it is gone
        return names

    def _layers_of(self, kinds: tuple[type, ...]) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kinds)]

    def _image_layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [
            (name, layer)
            for name, layer in self._layers_of((Image,))
            if "topolens" not in layer.metadata
            or layer.metadata["topolens"].get("view") == "images"
        ]

    def _marker_layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Labels, Points, Shapes

        return [
            (name, layer)
            for name, layer in self._layers_of((Points, Labels, Shapes))
            if "topolens" not in layer.metadata
        ]

    def refresh_choices(self) -> None:
        """Re-read model sources and layers (napari layers, console variables)."""
        self.model_source.reset_choices()
        self.image_layer.reset_choices()
        self.marker_layer.reset_choices()

    def _on_layers_changed(self, _event: Any = None) -> None:
        previous = self.image_layer.value
        self.refresh_choices()
        layers = [layer for layer in self.image_layer.choices if layer is not None]
        if self.image_layer.value is None and layers:
            self.image_layer.value = layers[0]
        if previous is None:
            self._select_sample_images()

    def _on_which_changed(self, _value: Any = None) -> None:
        self.marker_layer.visible = self.which.value == MARKED_IMAGES

    def _on_source_changed(self, _value: Any = None) -> None:
        custom = self.model_source.value == IMPORT_SPEC
        self.spec.visible = custom
        self.weights.visible = custom
        self._forget_model()
        self._select_sample_images()

    def _forget_model(self, _value: Any = None) -> None:
        if self._model is not None:
            self._model, self._model_key = None, None
            self.module_tree.clear()
            self._set_status("The model changed: press Load model to list its layers.")

    def _sample_name(self) -> str | None:
        value = self.model_source.value or ""
        return value[len(SAMPLE_PREFIX) :] if value.startswith(SAMPLE_PREFIX) else None

    def _select_sample_images(self) -> None:
        """Pick the image layer that holds the chosen sample, when there is one."""
        name = self._sample_name()
        if name is None:
            return
        for _layer_name, layer in self._image_layer_choices():
            if layer.metadata.get(SAMPLE_KEY) == name:
                self.image_layer.value = layer
                return

    # ---- model ----------------------------------------------------------------------
    def _source_key(self) -> tuple[str, str, str]:
        weights = self.weights.value
        weights_text = str(weights) if weights and str(weights) not in ("", ".") else ""
        return (str(self.model_source.value), self.spec.value.strip(), weights_text)

    def _build_model(self) -> tuple[Any, list[str], str]:
        """The chosen model, its default layers, and a description for provenance."""
        from ..activations.models import load_model as build_model

        source, spec, weights = self._source_key()
        name = self._sample_name()
        if name is not None:
            from ..samples import load_sample

            sample = load_sample(name)
            return sample.model, list(sample.default_layers), f"sample:{name}"
        if source.startswith(CONSOLE_PREFIX):
            variable = source[len(CONSOLE_PREFIX) :]
            model = console_models(self._viewer).get(variable)
            if model is None:
                raise ModelError(
                    f"the console has no torch.nn.Module named {variable!r} any more; "
                    "define it again in the napari console or choose another model"
                )
            return (
                model,
                [],
                f"console:{variable} ({type(model).__module__}.{type(model).__qualname__})",
            )
        if not spec:
            raise ModelError("type an import spec such as 'mypackage.models:build_net'")
        return build_model(spec, weights or None), [], spec

    def load_model(self, _value: Any = None) -> torch.nn.Module | None:
        """Build (or reuse) the chosen model and fill the module tree.

        Returns the model, or ``None`` after reporting the problem.
        """
        try:
            return self._load_model()
        except TopoLensError as exc:
            report_error(exc, self.status)
            return None

    def _load_model(self) -> torch.nn.Module:
        from ..activations.models import list_layers

        key = self._source_key()
        if key != self._model_key or self._model is None:
            model, defaults, label = self._build_model()
            names = list_layers(model, self._input_shape())
            self._model, self._model_key, self._model_label = model, key, label
            self._defaults = [n for n in defaults if n in names] or _before_output(model, names)
            self.module_tree.set_model(model, names, self._defaults)
            self._set_status(
                f"{len(names)} layers; {len(self.module_tree.checked())} ticked. "
                "Choose images and press Run analysis."
            )
        return self._model

    def _input_shape(self) -> tuple[int, int, int] | None:
        layer = self.image_layer.value
        if layer is None:
            return None
        shape = np.shape(layer.data)
        if layer.rgb:
            return (shape[-1], shape[-3], shape[-2])
        return (1, shape[-2], shape[-1])

    # ---- images ---------------------------------------------------------------------
    def selected_indices(self) -> np.ndarray:
        """Stack indices of the images to analyse (checked; raises TopoLensError)."""
        layer = self.image_layer.value
        if layer is None:
            raise EmptySelectionError("no Image layer is chosen; open images or a sample first")
        if self.which.value == CURRENT_IMAGE:
            return np.array([current_stack_index(self._viewer, layer)], dtype=np.int64)
        if self.which.value == MARKED_IMAGES:
            marker = self.marker_layer.value
            if marker is None:
                raise EmptySelectionError(
                    "no marking layer is chosen; add a Points, Shapes or Labels layer, mark "
                    "images on it and choose it under 'Marked in'"
                )
            return marked_stack_indices(layer, marker)
        return np.arange(len(layer_images(layer.data, rgb=layer.rgb)), dtype=np.int64)

    def _image_labels(self, layer: Any, n_stack: int) -> tuple[np.ndarray | None, list[str] | None]:
        """Per-image class labels and names from the layer's metadata (samples carry them)."""
        labels = layer.metadata.get("labels")
        names = layer.metadata.get("class_names")
        if labels is None:
            return None, None
        labels = np.asarray(labels)
        if (
            labels.ndim != 1
            or len(labels) != n_stack
            or not np.issubdtype(labels.dtype, np.integer)
        ):
            return None, None
        return labels.astype(np.int64), (list(map(str, names)) if names is not None else None)

    def config(self) -> Any:
        """The :class:`AnalysisConfig` the form describes (raises TopoLensError if invalid)."""
        from ..topology.analysis import AnalysisConfig

        max_dim = int(self.max_dim.value)
        return AnalysisConfig(
            metric=self.metric.value,
            max_dim=max_dim,
            h1_max_points=int(self.h1_max_points.value),
            subsample=self.subsample.value,
            mapper_lens=self.lens.value,
            mapper_n_cubes=int(self.n_cubes.value),
            mapper_perc_overlap=float(self.perc_overlap.value),
            mapper_min_samples=int(self.min_samples.value),
            mapper_eps=float(self.eps.value) or None,
            distance_dim=min(1, max_dim),
            seed=int(self.seed.value),
        )

    # ---- run ------------------------------------------------------------------------
    @property
    def worker(self) -> Any:
        """The running napari worker, or ``None``."""
        return None if self._job is None else self._job.worker

    def run(self, _value: Any = None) -> Any:
        """Check the form and start the analysis in a worker.

        Returns the worker (tests wait on its ``finished`` signal), or ``None``
        when the input was refused (the reason is in :attr:`status`).
        """
        from ..activations.extract import iter_extract_activations

        if self._job is not None:
            return self._job.worker
        try:
            model = self._load_model()
            layers = self.module_tree.checked()
            if not layers:
                raise EmptySelectionError(
                    "no layers are ticked; tick at least one module in the Layers tree"
                )
            image_layer = self.image_layer.value
            if image_layer is not None:
                check_one_stack_axis(image_layer)
            index = self.selected_indices()
            # lazy: dask- and zarr-backed layers are read batch by batch, in the worker
            stack = layer_images(image_layer.data, rgb=image_layer.rgb)
            images = stack.subset(index)
            config = self.config()
            steps = iter_extract_activations(
                model,
                images,
                layers,
                sampling=self.sampling.value,
                max_points=int(self.max_points.value) or None,
                seed=int(self.seed.value),
                scheduler=self._scheduler(),
            )
            labels, class_names = self._image_labels(image_layer, len(stack))
        except TopoLensError as exc:
            report_error(exc, self.status)
            return None

        provenance = {
            "source": "napari-topolens analysis widget",
            "model": self._model_label,
            "sample": self._sample_name(),
            "weights": self._source_key()[2] or None,
            "image_layer": image_layer.name,
            "image_selection": self.which.value,
            "marker_layer": (
                self.marker_layer.value.name
                if self.which.value == MARKED_IMAGES and self.marker_layer.value is not None
                else None
            ),
            "image_index": [int(i) for i in index],
            "n_stack": len(stack),
            "image_shape": [int(s) for s in stack.shape[1:]],
            "layers": list(layers),
            "sampling": self.sampling.value,
            "max_points": int(self.max_points.value) or None,
        }
        # a copy made here, so the worker never reads the layer's own buffer
        embed = stack.to_stack() if stack.nbytes <= _MAX_EMBEDDED_BYTES else None
        provenance["images_embedded"] = embed is not None
        if self._scheduler() is not None:
            provenance["scheduler"] = self._scheduler()
        work = _analysis_work(
            steps, model, images, index, len(stack), labels, class_names, config, provenance, embed
        )
        self._job = ProgressWorker(
            work,
            "Topology analysis",
            on_done=lambda analysis: self._on_done(analysis, image_layer),
            on_error=lambda exc: report_error(exc, self.status),
            on_cancelled=self._on_cancelled,
            on_finished=self._on_finished,
            on_progress=self._on_progress,
        )
        self._job.worker.yielded.connect(lambda step: self._on_show_request(step, image_layer))
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self._set_status(f"Analysing {len(layers)} layer(s) of {len(index)} image(s)...")
        self._started = time.perf_counter()
        self._job.start()
        return self._job.worker

    def _scheduler(self) -> str | None:
        """The Dask scheduler address typed in the form, or ``None`` to run here."""
        return str(self.scheduler.value).strip() or None

    def cancel(self, _value: Any = None) -> None:
        """Stop the running analysis at its next step; nothing is added to the viewer."""
        if self._job is not None:
            self._set_status("Cancelling...")
            self._job.quit()

    def _on_progress(self, fraction: float, message: str) -> None:
        self._set_status(f"{100 * fraction:.0f}%: {message}")

    def _on_show_request(self, step: Any, image_layer: Any) -> None:
        """Main thread: the worker's analysis is done; add its layers, one per event-loop turn."""
        from .views import show_analysis_incrementally

        if not isinstance(step, _ShowRequest) or self._job is None or self._job.cancelled:
            return
        if image_layer not in self._viewer.layers:
            image_layer = None  # removed while the analysis ran: views use analysis.images

        def done(layers: list[Any]) -> None:
            self.layers_added = layers
            step.shown.set()

        def failed(exc: BaseException) -> None:
            if self._show is not None:
                self._show.cancel()  # no half-made views
            step.error = exc
            step.shown.set()

        self._set_status("Adding the layers...")
        self._show = show_analysis_incrementally(
            self._viewer,
            step.analysis,
            image_layer=image_layer,
            layouts=step.layouts,
            on_done=done,
            on_error=failed,
        )

    def _on_cancelled(self) -> None:
        if self._show is not None:
            self._show.cancel()  # removes the layers it had added
            self._show = None
        self.layers_added = []
        self._set_status("Cancelled; no layers were added.")

    def _on_done(self, analysis: Any, image_layer: Any) -> None:
        """Main thread: keep the analysis (its layers are in already) and report."""
        seconds = time.perf_counter() - self._started
        self.analysis = analysis
        self._show = None
        last = analysis.layer_results[-1]
        self._set_status(
            f"Analysed {len(analysis.layers)} layer(s) of "
            f"{len(analysis.provenance.get('image_index', []))} image(s) in {seconds:.1f} s. "
            f"Showing {last.name}: {len(last.mapper.node_ids)} Mapper nodes, "
            f"{len(last.persistence.diagrams[0])} H0 bars. Use the explorer to change the view."
        )

    def _on_finished(self) -> None:
        if self._show is not None and not self._show.done:  # the worker gave up waiting
            self._show.cancel()
        self._show = None
        self._job = None
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def _set_status(self, text: str) -> None:
        self.status.value = text


class _ShowRequest:
    """Yielded by the worker when the analysis is done: "show this; tell me when it is in".

    It looks like a ``Progress`` step to the progress bar (``fraction``, ``message``).
    The main thread sets :attr:`shown` when the last layer is in (or :attr:`error`
    when a step failed); the worker waits for it, so ``finished`` means shown.
    """

    fraction = 1.0
    message = "adding the layers"

    def __init__(self, analysis: Any, layouts: dict[str, np.ndarray]) -> None:
        import threading

        self.analysis = analysis
        self.layouts = layouts
        self.shown = threading.Event()
        self.error: BaseException | None = None


#: Longest the worker waits for the main thread to add the layers.
_SHOW_TIMEOUT_S = 600.0


def _before_output(model: Any, names: list[str]) -> list[str]:
    """The leaf module called just before the last one: a layer next to the output."""
    modules = dict(model.named_modules())
    leaves = [n for n in names if n in modules and not any(True for _ in modules[n].children())]
    return leaves[-2:-1] or names[-1:]


def _analysis_work(
    steps: Any,
    model: Any,
    images: np.ndarray,
    index: np.ndarray,
    n_stack: int,
    labels: np.ndarray | None,
    class_names: list[str] | None,
    config: Any,
    provenance: dict[str, Any],
    embed: np.ndarray | None,
):
    """The worker's generator: activations, probabilities, topology. Touches no layer."""
    from .._progress import Progress, scaled
    from ..activations.extract import predict_proba
    from ..topology.analysis import iter_analyze
    from .views import mapper_layouts

    def work():
        clouds = yield from scaled(steps, 0.0, _EXTRACT_SHARE, "activations: ")
        # analysed images -> their index in the layer's stack
        clouds = {
            name: dataclasses.replace(cloud, image_index=index[cloud.image_index])
            for name, cloud in clouds.items()
        }
        used = np.unique(np.concatenate([cloud.image_index for cloud in clouds.values()]))
        record = {**provenance, "image_index": [int(i) for i in used]}
        if len(used) != len(index):  # max_points drew a subset of the selection
            record["selected_index"] = [int(i) for i in index]
        probabilities = None
        if config.mapper_lens == "probability":
            yield Progress(_EXTRACT_SHARE, "class probabilities for the lens")
            analysed = predict_proba(model, images)
            probabilities = np.full((n_stack, analysed.shape[1]), np.nan)
            probabilities[index] = analysed
        analysis = yield from scaled(
            iter_analyze(
                clouds,
                labels,
                config=config,
                class_names=class_names,
                probabilities=probabilities,
                provenance=record,
                images=embed,
                scheduler=provenance.get("scheduler"),
            ),
            _EXTRACT_SHARE,
            1.0,
            "topology: ",
        )
        yield Progress(1.0, "laying out the views")
        request = _ShowRequest(analysis, mapper_layouts(analysis))
        yield request  # the main thread starts adding the layers
        waited = time.perf_counter()
        while not request.shown.wait(0.05):  # each yield is a chance to cancel
            if time.perf_counter() - waited > _SHOW_TIMEOUT_S:
                raise TopoLensError(
                    "the viewer did not take the layers in time; run the analysis again"
                )
            yield None
        if request.error is not None:
            raise request.error
        return analysis

    return work
