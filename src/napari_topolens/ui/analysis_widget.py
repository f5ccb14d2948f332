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

Defaults are chosen to show the point of the tool: ``top_norm`` sampling (one
spatial position per image, so a pixel click rings the nodes whose receptive
fields cover it), the sample model of the sample that is open, and for a user's
model a few layers spread over its depth. Class labels come from the source the
user picks in the form (``ui.label_choice``); for a user's images without labels
they are the model's own predictions, and the status and the analysis's
provenance say so. The worker always records the model's predicted class per
image (``Analysis.predictions``) when the model outputs class scores.

Stack indices: when only some images are analysed, the point clouds'
``image_index`` is mapped back to the image layer's stack index, so the analysis
indexes the layer it came from (labels and probabilities are stack-sized; rows of
images that were not analysed hold -1 / NaN).

The run itself is the pipeline's (``pipeline.run.iter_run``, the run the command
line and ``run_variants`` make too): the widget describes it as a ``RunJob``
(stack-indexed: ``StackIndex``) on the main thread, the worker runs it. Variants
(the "Variants (robustness)" section, ``ui.variant_choice``) run in it after the
base, with the base's options, config and labels, stack-indexed like the base;
they end up in ``analysis.variants``.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    Widget,
)
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .._progress import Progress
from ..activations import device as torch_devices
from ..activations.extract import SAMPLING_MODES, input_scale_warning
from ..activations.image_source import layer_images
from ..activations.input_scale import INPUT_SCALE_MODES, InputScale
from ..errors import EmptySelectionError, TopoLensError
from ..layout.mapper import mapper_layouts
from ..pipeline.job import DEFAULT_SAMPLING, RunJob, StackIndex
from ..pipeline.run import iter_run
from ..topology.analysis import AnalysisConfig
from ..topology.config import METRICS
from ..topology.mapper import LENSES
from ..topology.results import Analysis, Variant
from . import (
    collector,
    explorer_widget,  # noqa: F401  (the views dock's explorer bar comes with it)
)
from .canvas import make_canvas_in_turns
from .glyphs import warm_viewer_glyphs, warmer_of
from .io import after_open
from .label_choice import (
    CSV_FILE,
    LAYER_METADATA,
    PREDICTIONS,
    LabelChoice,
    default_label_choice,
    label_choices,
    read_label_choice,
)
from .level_layer import analysed_level_layer
from .model_chooser import (
    ADDED_PREFIX,
    CONSOLE_PREFIX,
    IMPORT_SPEC,
    SAMPLE_PREFIX,
    SPREAD_LAYERS,
    ModelChooser,
    RefreshOnPopup,
    input_shape,
    spread_layers,
)
from .model_registry import remember_model
from .module_tree import ModuleTree
from .show import remove_analyses_on
from .variant_choice import VariantForm
from .viewer_key import window_closed
from .views import show_analysis_incrementally, show_variants_incrementally
from .widget_parts import (
    CURRENT_IMAGE,
    MARKED_IMAGES,
    WHICH_IMAGES,
    ProgressWorker,
    a_core_left_for_the_viewer,
    check_one_stack_axis,
    current_stack_index,
    elided_label,
    frame_shape,
    layer_mask,
    marked_stack_indices,
    read_frames,
    report_error,
)

if TYPE_CHECKING:
    import napari
    import torch

    from ..topology.analysis import Analysis

__all__ = [
    "ADDED_PREFIX",
    "CONSOLE_PREFIX",
    "DEFAULT_SAMPLING",
    "IMPORT_SPEC",
    "SAMPLE_PREFIX",
    "SPREAD_LAYERS",
    "AnalysisWidget",
    "spread_layers",
]

#: When Run makes the views dock (ms after it returns): a turn of its own, once the
#: worker has started.
CANVAS_AFTER_RUN_MS = 150
#: When the widget makes the views dock after napari has docked it (ms): a canvas's
#: first text (its text shaders and glyph atlas: 0.25-0.35 s of the main thread in one
#: paint with software OpenGL, not split through napari's public API) and the image
#: viewer's are drawn while the user fills the form, not while a run computes.
CANVAS_AFTER_OPEN_MS = 400
#: The open form's share of the dock column (the views dock below keeps the rest).
FORM_SHARE = 0.55
#: The provenance's ``source`` of an analysis made here.
FRONT_END = "napari-topolens analysis widget"
#: Sampling used when a single image is analysed (one point per image cannot make a shape).
SINGLE_IMAGE_SAMPLING = "all_positions"
#: Largest image stack copied into the analysis so that a saved file is self-contained
#: (larger stacks are left out; ``provenance["images_embedded"]`` says which).
_MAX_EMBEDDED_BYTES = 256 * 2**20


class AnalysisWidget(QWidget):
    """Choose model, layers, images and parameters; Run analyses off the main thread.

    The finished analysis is kept in :attr:`analysis` and shown with
    ``napari_topolens.ui.views.show_analysis``; :attr:`layers_added` lists the
    layers that call returned.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self._viewer = napari_viewer
        # the status's height fitted in the next turn after it changes (``_set_status``,
        # ``_report``): a burst of progress steps is fitted once. (Not from a lambda on the
        # label's ``changed``: with it and a lambda on the open-time timer, CI crashed in
        # C++ inside one of this module's lambdas, in a test's teardown.)
        self._fit_soon = QTimer(self)
        self._fit_soon.setSingleShot(True)
        self._fit_soon.timeout.connect(self._fit_height)
        self._job: ProgressWorker | None = None
        self._show: Any = None  # the running views.IncrementalShow
        self._variant_show: Any = None  # the same for the variants, after the base
        self._resume_collector: Callable[[], None] = lambda: None  # see ``run``
        self._started = 0.0
        self.analysis: Analysis | None = None
        self.layers_added: list[Any] = []
        self.model_chooser = ModelChooser(
            napari_viewer, is_busy=lambda: self._job is not None, load_text="Load model"
        )
        # the chooser's parts under the names the form has always had
        self.model_source = self.model_chooser.source
        self.spec = self.model_chooser.spec
        self.weights = self.model_chooser.weights
        self.load_button = self.model_chooser.load_button
        self.module_tree = ModuleTree()
        self.module_tree.setMinimumHeight(220)
        self.module_tree.setToolTip("Tick the layers to analyse (modules the forward pass calls)")
        images_box = Container(
            widgets=[*self._make_image_choice(), *self._make_input_options()], labels=True
        )
        params_box = self._make_params_box()
        self.variant_form = VariantForm(self._mask_layer_choices, self._set_status)
        self._make_run_controls()
        self._build_layout(self.model_chooser, images_box, params_box)
        self._connect_events()
        self._select_sample_images()
        self._on_which_changed()
        self._on_layers_changed()
        self._on_labels_source_changed()
        self._on_sampling_changed()
        self._on_input_scale_changed()
        self.model_chooser.choose_added_model(self.image_layer.value)
        self._canvas_on_open_armed = False

    def showEvent(self, event: Any) -> None:
        """First shown (docked by napari): the views dock follows, once napari's work
        here is done (see :data:`CANVAS_AFTER_OPEN_MS`)."""
        super().showEvent(event)
        if not self._canvas_on_open_armed:
            self._canvas_on_open_armed = True
            # a timer of the widget's own, to a method of it (no lambda: PyQt drops a
            # connection to a method when its widget goes; a lambda's stays)
            self._canvas_timer = QTimer(self)
            self._canvas_timer.setSingleShot(True)
            self._canvas_timer.timeout.connect(self._canvas_after_open)
            self._canvas_timer.start(CANVAS_AFTER_OPEN_MS)

    def _canvas_after_open(self) -> None:
        after_open(self._make_canvas_on_open)  # (not inside napari's ``open``)

    def _make_canvas_on_open(self) -> None:
        """The views dock, below the form, with its text and the image viewer's drawn
        ahead (see :data:`CANVAS_AFTER_OPEN_MS`); a run started meanwhile makes it."""
        try:
            shown = self.isVisible()
        except RuntimeError:  # deleted while napari's ``open`` held this back
            return
        if self._job is not None or not shown:
            return  # running (it makes the dock), or hidden again, closed
        widget = weakref.ref(self)

        def idle() -> bool:
            # until a show adds layers to the image viewer (each warm turn repaints it)
            me = widget()
            return me is not None and me._show is None and me._variant_show is None

        def warm_viewer(canvas: Any) -> None:
            me = widget()
            if me is None:
                return
            warm_viewer_glyphs(me._viewer, after=warmer_of(canvas.model), while_=idle)
            if not me.form_folded:  # the form keeps most of the column
                with contextlib.suppress(RuntimeError):  # (its window closed meanwhile)
                    me._give_height(FORM_SHARE)

        make_canvas_in_turns(self._viewer, then=warm_viewer)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit_height()  # the status's lines at the new width

    # ---- the form's parts -------------------------------------------------------------
    def _make_image_choice(self) -> list[Widget]:
        """Which images: the layer, all / current / marked, and their labels."""
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
        self.labels_source = ComboBox(
            label="Labels",
            choices=self._label_choices,
            tooltip=(
                "Class of each image: the model's own predictions, a features column of a "
                "layer (a point or shape labels the image it sits on), a CSV file (one label "
                "per image, or index,label rows), or a sample's true labels"
            ),
        )
        self.labels_file = FileEdit(
            label="Labels CSV", mode=FileDialogMode.EXISTING_FILE, filter="*.csv *.tsv *.txt"
        )
        return [
            self.image_layer,
            self.which,
            self.marker_layer,
            self.labels_source,
            self.labels_file,
        ]

    def _make_input_options(self) -> list[Widget]:
        """How the images become the model's input and its activations become points."""
        self.input_scale = ComboBox(
            label="Input scale",
            choices=[(text, mode) for mode, text in INPUT_SCALE_MODES.items()],
            value="dtype",
            tooltip=(
                "How the stored pixels become the model's input. [0, 1] from dtype: integer "
                "pixels divided by their type's maximum (uint8 / 255, as torchvision's "
                "ToTensor; float pixels kept); as stored: the numbers as they are; ImageNet "
                "mean/std: [0, 1], then ImageNet's per-channel mean and std; custom: [0, 1], "
                "then your mean/std"
            ),
        )
        self.scale_mean_std = LineEdit(
            label="Mean / std",
            tooltip=(
                "Per channel, in [0, 1] units: mean values / std values, e.g. "
                "0.485, 0.456, 0.406 / 0.229, 0.224, 0.225 (or one value each: 0.5 / 0.25)"
            ),
        )
        self.sampling = ComboBox(
            label="Sampling",
            choices=list(SAMPLING_MODES),
            value=DEFAULT_SAMPLING,
            tooltip=(
                "How a spatial layer becomes points. top_norm: the strongest position per "
                "image (its receptive field is a local patch, so pixel clicks find nodes); "
                "pooled: the spatial mean (every field is the whole image); all_positions: "
                "every position (used automatically for a single image); foreground: the "
                "strongest position whose receptive-field centre lies inside the object's "
                "mask (a Labels or Shapes layer)"
            ),
        )
        self.foreground_mask = ComboBox(
            label="Foreground mask",
            choices=self._mask_layer_choices,
            nullable=True,
            tooltip=(
                "The object's pixels for foreground sampling: a Labels layer of the image "
                "stack's shape (nonzero = object; a 2-D one serves every image), or a Shapes "
                "layer (each shape on the image it is drawn on; 2-D shapes on every image)"
            ),
        )
        self.max_points = SpinBox(
            label="Max points",
            min=0,
            max=10_000_000,
            value=0,
            tooltip="Cap on points per layer; 0: none (80,000 for all_positions)",
        )
        return [
            self.input_scale,
            self.scale_mean_std,
            self.sampling,
            self.foreground_mask,
            self.max_points,
        ]

    def _make_params_box(self) -> Container:
        """The topology parameters, at the published defaults, and where the work runs."""
        defaults = AnalysisConfig()
        self.distance_metric = ComboBox(
            label="Metric", choices=list(METRICS), value=defaults.metric
        )
        self.max_dim = SpinBox(label="Max homology dim", min=0, max=2, value=defaults.max_dim)
        self.h1_max_points = SpinBox(
            label="H1 landmarks",
            min=10,
            max=100_000,
            value=defaults.h1_max_points,
            tooltip="H1 is computed on at most this many landmarks (its cost grows steeply with N)",
        )
        self.subsample = ComboBox(
            label="Landmarks",
            choices=["auto", "maxmin", "random", "full"],
            value=defaults.subsample,
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
        topology: list[Widget] = [
            self.distance_metric,
            self.max_dim,
            self.h1_max_points,
            self.subsample,
            self.lens,
            self.n_cubes,
            self.perc_overlap,
            self.min_samples,
            self.eps,
            self.seed,
        ]
        return Container(widgets=[*topology, *self._make_where_to_run()], labels=True)

    def _make_where_to_run(self) -> list[Widget]:
        """The device the model runs on and the Dask scheduler the work may go to."""
        self.device = ComboBox(
            label="Device",
            choices=self._device_choices,
            value="cpu",
            tooltip="Where the model runs to pull the activations: cpu, or a GPU torch can use",
        )
        self.scheduler = LineEdit(
            label="Dask scheduler",
            tooltip="Address of a running dask.distributed scheduler (tcp://host:8786): the "
            "extraction batches and each layer's topology run on its workers. Empty: here.",
        )
        return [self.device, self.scheduler]

    def _make_run_controls(self) -> None:
        """Run, Cancel, the status line and the progress bar."""
        self.run_button = PushButton(text="Run analysis")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="Load a model to list its layers.")
        self.status.native.setWordWrap(True)
        # wrap to the dock's width: a long line (a variant's drift) must not widen the form
        self.status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status.native.setMinimumWidth(1)
        # at the top of its scroll area (below the progress), when that is taller than it
        self.status.native.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, ProgressWorker.STEPS)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setVisible(False)

    def _connect_events(self) -> None:
        self.model_chooser.forgotten.connect(self._on_model_forgotten)
        self.model_chooser.added.connect(self._on_model_added)
        self.model_source.changed.connect(self._select_sample_images)
        self.which.changed.connect(self._on_which_changed)
        self.image_layer.changed.connect(self._on_image_layer_changed)
        self.labels_source.changed.connect(self._on_labels_source_changed)
        self.sampling.changed.connect(self._on_sampling_changed)
        self.input_scale.changed.connect(self._on_input_scale_changed)
        self.load_button.changed.connect(self.load_model)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._popup_filter = RefreshOnPopup(self.labels_source)
        self._viewer.layers.events.inserted.connect(self._on_layers_changed)
        self._viewer.layers.events.removed.connect(self._on_layers_changed)

    def _build_layout(
        self, model_box: Container, images_box: Container, params_box: Container
    ) -> None:
        from superqt import QCollapsible

        content = QWidget()
        layout = self._content_layout = QVBoxLayout(content)
        layout.setContentsMargins(4, 4, 4, 4)
        # after Run the form folds into one summary line, so the views dock below gets the
        # height of a laptop screen; "Settings" opens it again
        self.form_summary = elided_label()
        self.form_toggle = QPushButton("Settings ▸")
        self.form_toggle.setToolTip("Show the analysis settings again (or fold them away)")
        self.form_toggle.clicked.connect(self._toggle_form)  # (a method: PyQt holds it weakly)
        self.form_toggle.setVisible(False)  # until the first Run folds the form
        self.form_summary.setVisible(False)
        layout.addWidget(self.form_summary)
        self.form = QWidget()
        form = QVBoxLayout(self.form)
        form.setContentsMargins(0, 0, 0, 0)
        form.addWidget(model_box.native)
        layers_title = QLabel("<b>Layers</b> (tick the ones to analyse)")
        form.addWidget(layers_title)
        form.addWidget(self.module_tree)
        form.addWidget(images_box.native)
        self.params_section = QCollapsible("Topology parameters")
        self.params_section.addWidget(params_box.native)
        form.addWidget(self.params_section)
        self.variants_section = QCollapsible("Variants (robustness)")
        self.variants_section.addWidget(self.variant_form)
        form.addWidget(self.variants_section)
        layout.addWidget(self.form)
        layout.addStretch(1)
        scroll = self._scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(content)
        # Run, the progress and the status stay in sight below the form, which scrolls
        # (the views dock below takes part of a laptop's column from the start)
        controls = QWidget()
        pinned = self._pinned_layout = QVBoxLayout(controls)
        pinned.setContentsMargins(4, 0, 4, 2)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button.native)
        buttons.addWidget(self.cancel_button.native)
        buttons.addWidget(self.form_toggle)
        pinned.addLayout(buttons)
        pinned.addWidget(self.progress_bar)
        status_scroll = self._status_scroll = QScrollArea()
        status_scroll.setWidgetResizable(True)
        status_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        status_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        status_scroll.setWidget(self.status.native)
        pinned.addWidget(status_scroll)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(scroll, 1)
        outer.addWidget(controls)
        self._boxes = (model_box, images_box, params_box)  # keep the magicgui wrappers alive
        for combo in content.findChildren(QComboBox):
            # long choices (layer names, label columns) must not widen the dock past its
            # edge: the list shows them whole when opened
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(8)
            # Qt keeps the minimum size hint it computed under the old policy (the
            # longest layer name open when the widget was made): an explicit minimum
            # width takes its place
            combo.setMinimumWidth(8 * combo.fontMetrics().horizontalAdvance("X") + 32)
        self.setMinimumWidth(300)
        self.form_folded = False
        self._fit_height()

    # ---- the form folded after Run ------------------------------------------------------
    def _toggle_form(self, _checked: bool = False) -> None:
        self.fold_form(not self.form_folded)

    def fold_form(self, folded: bool) -> None:
        """Fold the form into its one-line summary (after Run), or open it again.

        Folded, the widget is only as tall as the summary, the buttons, the progress and
        the status, so the views dock below it gets the rest of the screen.
        """
        self.form_folded = bool(folded)
        self.form.setVisible(not folded)
        self.form_summary.setVisible(folded and bool(self.form_summary.full_text()))
        self.form_toggle.setVisible(True)
        self.form_toggle.setText("Settings ▸" if folded else "Settings ▾")
        self._fit_height()
        if not folded:  # room for the form: half the column, the views keep the rest
            self._give_height(FORM_SHARE)

    #: Status lines a folded form shows at most (more scroll; the views get the height).
    FOLDED_STATUS_LINES = 5
    #: Status lines the open form's pinned status shows at most (more scroll).
    OPEN_STATUS_LINES = 6

    def _fit_height(self) -> None:
        """Folded: the summary, the buttons, the progress and a few status lines tall, at
        most :attr:`FOLDED_STATUS_LINES` (the rest of the status scrolls); open: as
        tall as the window gives, the status up to :attr:`OPEN_STATUS_LINES` lines (the
        form scrolls above it)."""
        label = self.status.native
        line = label.fontMetrics().lineSpacing()
        if not self.form_folded:
            viewport = self._status_scroll.viewport()
            width = max(viewport.width() if viewport is not None else 0, 200)
            needed = max(label.heightForWidth(width), line)
            self._scroll.setMinimumHeight(0)
            self._status_scroll.setMinimumHeight(line + 8)
            self._status_scroll.setMaximumHeight(min(needed, self.OPEN_STATUS_LINES * line) + 8)
            self.setMaximumHeight(16777215)  # QWIDGETSIZE_MAX
            self.setMinimumHeight(0)
            return
        spacing = max(self._pinned_layout.spacing(), 0)
        summary = (
            2 * self._scroll.frameWidth()
            + sum(self._content_layout.getContentsMargins()[1::2])
            + self.form_summary.sizeHint().height()
        )
        self._scroll.setMinimumHeight(summary)
        fixed = (
            summary
            + sum(self._pinned_layout.getContentsMargins()[1::2])
            + self.run_button.native.sizeHint().height()
            + (
                self.progress_bar.sizeHint().height() + spacing
                if self.progress_bar.isVisibleTo(self)
                else 0
            )
            + spacing
        )
        # at least a line of the status (a laptop's column holds the views and the map
        # too), at most FOLDED_STATUS_LINES whatever it says: a height that followed the
        # status's lines moved the views dock at each progress step of a run's show (the
        # canvas resized and repainted in full)
        tallest = self.FOLDED_STATUS_LINES * line + 4
        self._status_scroll.setMinimumHeight(line + 4)
        self._status_scroll.setMaximumHeight(tallest)
        self.setMinimumHeight(fixed + line + 4)
        self.setMaximumHeight(fixed + tallest)

    def _give_height(self, share: float) -> None:
        """Ask the main window for ``share`` of its dock column (Qt's own dock API)."""
        from qtpy.QtWidgets import QDockWidget, QMainWindow

        dock, window = self.parentWidget(), self.window()
        if isinstance(dock, QDockWidget) and isinstance(window, QMainWindow):
            window.resizeDocks([dock], [int(share * window.height())], Qt.Orientation.Vertical)

    def _summary_text(self, layers: list[str], n_images: int, variants: _VariantPlan | None) -> str:
        """The folded form's line: model, layers, images, sampling, variants."""
        source = self._model_label.replace("sample:", "") or str(self.model_source.value)
        layer = self.image_layer.value
        text = (
            f"{source} · {len(layers)} layer{'s' if len(layers) != 1 else ''} "
            f"({', '.join(layers)}) · {n_images} image{'s' if n_images != 1 else ''}"
            f"{f' of {layer.name}' if layer is not None else ''} · {self.sampling.value}"
        )
        if variants is not None:
            text += f" · variants: {', '.join(spec.name for spec in variants.specs)}"
        return text

    # ---- choices --------------------------------------------------------------------
    def _on_model_added(self, choice: str) -> None:
        """A model given with ``add_model`` was chosen: say what to do next."""
        self._set_status(f"{choice[len(ADDED_PREFIX) :]!r} was added: press Load model.")

    def _label_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layer = getattr(getattr(self, "image_layer", None), "value", None)
        n_stack = 0
        if layer is not None:  # from the shape only: a lazy stack is not loaded for this
            shape = tuple(np.shape(layer.data))
            leading = shape[: max(0, len(shape) - (3 if layer.rgb else 2))]
            n_stack = int(np.prod(leading, dtype=np.int64)) if leading else 1
        return label_choices(self._viewer, layer, n_stack)

    def _layers_of(self, kinds: tuple[type[Any], ...]) -> list[tuple[str, Any]]:
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

    def _mask_layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """Labels and Shapes layers that can mark pixels (foreground, occlusion)."""
        from napari.layers import Labels, Shapes

        return [
            (name, layer)
            for name, layer in self._layers_of((Labels, Shapes))
            if "topolens" not in layer.metadata
        ]

    def _device_choices(self, _widget: Any = None) -> list[str]:
        """cpu, and the GPUs this machine's torch can use (cuda, cuda:N, mps)."""
        return torch_devices.available_devices()

    def refresh_choices(self) -> None:
        """Re-read model sources and layers (napari layers, added and console models)."""
        self.model_source.reset_choices()
        self.image_layer.reset_choices()
        self.marker_layer.reset_choices()
        self.labels_source.reset_choices()
        self.foreground_mask.reset_choices()
        self.variant_form.reset_choices()

    def _on_layers_changed(self, _event: Any = None) -> None:
        previous = self.image_layer.value
        self.refresh_choices()
        layers = [layer for layer in self.image_layer.choices if layer is not None]
        if self.image_layer.value is None and layers:
            self.image_layer.value = layers[0]
        if previous is None:
            self._select_sample_images()
        self._match_sample_model()

    def _on_image_layer_changed(self, _value: Any = None) -> None:
        """New images: re-list label sources; a default choice follows the layer."""
        previous = self.labels_source.value
        self.labels_source.reset_choices()
        values = [value for _, value in self._label_choices()]
        keep = previous in values and previous not in (PREDICTIONS, LAYER_METADATA)
        self.labels_source.value = (
            previous if keep else default_label_choice([(str(v), v) for v in values])
        )
        self._match_sample_model()

    def _on_labels_source_changed(self, _value: Any = None) -> None:
        self.labels_file.visible = self.labels_source.value == CSV_FILE

    def _match_sample_model(self) -> None:
        """Offer the sample model of the sample on screen (shapes open: the shapes model)."""
        self.model_chooser.match_sample(self.image_layer.value)

    def _on_sampling_changed(self, _value: Any = None) -> None:
        self.foreground_mask.visible = self.sampling.value == "foreground"

    def _on_input_scale_changed(self, _value: Any = None) -> None:
        self.scale_mean_std.visible = self.input_scale.value == "custom"

    def chosen_input_scale(self) -> InputScale:
        """The form's input scale (``activations.input_scale.InputScale``); TopoLensError if bad."""
        if self.input_scale.value != "custom":
            return InputScale(self.input_scale.value)
        text = str(self.scale_mean_std.value).strip()
        if "/" not in text:
            raise TopoLensError(
                "the custom input scale needs 'mean / std' in the Mean / std field, e.g. "
                "0.5 / 0.25 or 0.485, 0.456, 0.406 / 0.229, 0.224, 0.225"
            )
        return InputScale.parse("custom:" + text.replace(" ", ""))

    def _on_which_changed(self, _value: Any = None) -> None:
        self.marker_layer.visible = self.which.value == MARKED_IMAGES

    def _on_model_forgotten(self) -> None:
        self.module_tree.clear()
        self._set_status("The model changed: press Load model to list its layers.")

    def _select_sample_images(self, _value: Any = None) -> None:
        """Pick the image layer that holds the chosen sample, when there is one."""
        layer = self.model_chooser.sample_layer([layer for _, layer in self._image_layer_choices()])
        if layer is not None:
            self.image_layer.value = layer

    # ---- model ----------------------------------------------------------------------
    # The chooser holds the model; these read it for the run and its provenance.
    @property
    def _model(self) -> torch.nn.Module | None:
        chosen = self.model_chooser.chosen
        return None if chosen is None else chosen.model

    @property
    def _model_label(self) -> str:
        chosen = self.model_chooser.chosen
        return "" if chosen is None else chosen.label

    @property
    def _class_names(self) -> list[str] | None:
        """The model's classes, when known."""
        chosen = self.model_chooser.chosen
        return None if chosen is None else chosen.class_names

    def _sample_name(self) -> str | None:
        return self.model_chooser.sample_name()

    def _source_key(self) -> tuple[str, str, str]:
        return self.model_chooser.source_key()

    def load_model(self, _value: Any = None) -> torch.nn.Module | None:
        """Build (or reuse) the chosen model and fill the module tree.

        Returns the model, or ``None`` after reporting the problem.
        """
        try:
            return self._load_model()
        except TopoLensError as exc:
            self._report(exc)
            return None

    def _load_model(self) -> torch.nn.Module:
        chosen, built = self.model_chooser.load(self._input_shape())
        if built:
            self.module_tree.set_model(chosen.model, chosen.layer_names, chosen.default_layers)
            self._set_status(
                f"{len(chosen.layer_names)} layers; {len(self.module_tree.checked())} ticked. "
                "Choose images and press Run analysis."
            )
        return chosen.model

    def _input_shape(self) -> tuple[int, int, int] | None:
        return input_shape(self.image_layer.value)

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

    def config(self) -> AnalysisConfig:
        """The :class:`AnalysisConfig` the form describes (raises TopoLensError if invalid)."""
        max_dim = int(self.max_dim.value)
        return AnalysisConfig(
            metric=self.distance_metric.value,
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
        if self._job is not None:
            return self._job.worker
        added_level: Any = None  # a multiscale layer's level, added for this run
        chosen_layer: Any = None
        try:
            model = self._load_model()
            layers = self.module_tree.checked()
            if not layers:
                raise EmptySelectionError(
                    "no layers are ticked; tick at least one module in the Layers tree"
                )
            # multiscale: analyse the level the model takes, added as its own layer (taken
            # away again, and the form restored, if the run is refused below)
            chosen_layer = self.image_layer.value
            known = set(map(id, self._viewer.layers))
            image_layer = self.image_layer.value = analysed_level_layer(
                self._viewer, chosen_layer, model
            )
            if id(image_layer) not in known:
                added_level = image_layer
            if image_layer is not None:
                check_one_stack_axis(image_layer)
            job, status, variants = self._form_job(model, image_layer, layers)
            steps = iter_run(job)  # checks the job here, on the main thread, before any work
        except TopoLensError as exc:
            if added_level is not None:  # refused input leaves the viewer as it was
                self._viewer.layers.remove(added_level)
                self.image_layer.value = chosen_layer
            self._report(exc)
            return None

        self._job = ProgressWorker(
            _analysis_work(steps),
            "Topology analysis",
            on_done=lambda analysis: self._on_done(analysis, image_layer),
            on_error=self._report,
            on_cancelled=self._on_cancelled,
            on_finished=self._on_finished,
            on_progress=self._on_progress,
            napari_bar=False,  # the dock's own bar and step, where the user looks
            # its window closed (napari deletes its docks' widgets) while the run
            # computes or shows: the run stops, quietly
            owner=self,
            on_abandoned=self._abandon_run,
        )
        self._job.worker.yielded.connect(lambda step: self._on_show_request(step, image_layer))
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%p%")
        self.progress_bar.setVisible(True)
        self._set_status(status)
        self._started = time.perf_counter()
        # no full garbage collection (0.2-0.45 s, holding the GIL) until the views are in
        self._resume_collector = collector.pause()
        self._job.start()
        # the views dock while the worker computes, in a turn of its own: its text's
        # glyphs are drawn ahead meanwhile (``ui.glyphs``), not when the first views go in
        QTimer.singleShot(CANVAS_AFTER_RUN_MS, self._make_canvas_while_running)
        n_images = len(job.stack.index) if job.stack is not None else len(job.images)
        self.form_summary.set_full_text(self._summary_text(list(layers), n_images, variants))
        self.fold_form(True)
        return self._job.worker

    def _make_canvas_while_running(self) -> None:
        job = self._job
        if job is None or not job.worker.is_running:
            return  # done, refused or cancelled meanwhile: the show makes it if needed

        def warm_viewer(canvas: Any) -> None:
            # then the image viewer's glyphs (the galleries' text), while the worker computes
            warm_viewer_glyphs(
                self._viewer,
                after=warmer_of(canvas.model),
                while_=lambda: self._job is job and job.worker.is_running,
            )

        make_canvas_in_turns(self._viewer, then=warm_viewer)

    def _form_job(
        self, model: torch.nn.Module, image_layer: Any, layers: list[str]
    ) -> tuple[RunJob, str, _VariantPlan | None]:
        """The run the form describes (checked; raises TopoLensError), its status line, its
        variants. Reads the layers here, on the main thread: the worker never does."""
        index = self.selected_indices()
        # lazy: dask- and zarr-backed layers are read batch by batch, in the worker
        stack = layer_images(image_layer.data, rgb=image_layer.rgb)
        images = stack.subset(index)
        sampling, sampling_note = self.sampling.value, None
        if len(index) == 1 and sampling != SINGLE_IMAGE_SAMPLING:
            # one point per image cannot make a shape: take every position of the image
            sampling = SINGLE_IMAGE_SAMPLING
            sampling_note = (
                f"one image: sampling {SINGLE_IMAGE_SAMPLING} instead of "
                f"{self.sampling.value} (one point per image cannot make a shape)"
            )
        mask = self._foreground_mask(image_layer, index) if sampling == "foreground" else None
        input_scale = self.chosen_input_scale()
        scale_warning = input_scale_warning(images, input_scale)
        labels = read_label_choice(
            self.labels_source.value,
            self._viewer,
            image_layer,
            len(stack),
            csv_path=self.labels_file.value,
            class_names=self._class_names,
        )
        variants = self._variant_plan(image_layer, index, len(stack), labels)
        origin = self._run_origin(image_layer, index, stack, labels, mask, sampling_note)
        # a copy made here, so the worker never reads the layer's own buffer
        embed = stack.to_stack() if stack.nbytes <= _MAX_EMBEDDED_BYTES else None
        origin["images_embedded"] = embed is not None
        job = RunJob(
            model=model,
            images=images,
            layers=list(layers),
            labels=labels.labels,
            class_names=self._class_names if labels.from_predictions else labels.class_names,
            labels_from_predictions=labels.from_predictions,
            labels_coded_by_name=labels.coded_by_name,
            config=self.config(),
            sampling=sampling,
            max_points=int(self.max_points.value) or None,
            seed=int(self.seed.value),
            mask=mask,
            input_scale=input_scale,
            device=str(self.device.value or "cpu"),
            scheduler=self._scheduler(),
            topology_in_child=True,  # the viewer's main thread never waits on its GIL
            variants=[] if variants is None else list(variants.specs),
            variant_images=None if variants is None else variants.frames,
            occlusion_mask=None if variants is None else variants.occlusion_mask,
            stack=StackIndex(index, len(stack)),
            kept_images=embed,
            front_end=FRONT_END,
            origin=origin,
        )
        variants_note = (
            f"; then {len(job.variants)} variant(s): {', '.join(s.name for s in job.variants)}"
            if job.variants
            else ""
        )
        status = (
            f"Analysing {len(layers)} layer(s) of {len(index)} image(s); labels: "
            f"{labels.description}"
            + (f"; {sampling_note}" if sampling_note else "")
            + variants_note
            + "..."
            + (f"\nWarning: {scale_warning}" if scale_warning else "")
        )
        return job, status, variants

    def _run_origin(
        self,
        image_layer: Any,
        index: np.ndarray,
        stack: Any,
        labels: LabelChoice,
        mask: np.ndarray | None,
        sampling_note: str | None,
    ) -> dict[str, Any]:
        """Where this run's model, images and labels come from, for its provenance."""
        origin: dict[str, Any] = {
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
            "n_stack": len(stack),
            "image_shape": [int(s) for s in stack.shape[1:]],
            "labels": labels.description,
        }
        if mask is not None:
            origin["foreground_mask"] = self.foreground_mask.value.name
        if sampling_note is not None:
            origin["sampling_note"] = sampling_note
        return origin

    def _foreground_mask(self, image_layer: Any, index: np.ndarray) -> np.ndarray:
        """The chosen foreground mask over the selected images (checked; raises TopoLensError)."""
        layer = self.foreground_mask.value
        if layer is None or layer not in self._viewer.layers:
            raise EmptySelectionError(
                "foreground sampling needs the object's pixels: choose a Labels or Shapes layer "
                "under 'Foreground mask' (or another sampling)"
            )
        return layer_mask(
            layer, image_layer, index, max_bytes=_MAX_EMBEDDED_BYTES, what="the foreground mask"
        )

    def _variant_plan(
        self, image_layer: Any, index: np.ndarray, n_stack: int, labels: LabelChoice
    ) -> _VariantPlan | None:
        """The listed variants, checked up front; ``None`` when the list is empty."""
        specs = self.variant_form.specs(seed=int(self.seed.value))
        if not specs:
            return None
        frame = frame_shape(image_layer)
        dtype = np.dtype(getattr(image_layer.data, "dtype", np.float32))
        perturbed = [spec.name for spec in specs if spec.is_perturbation]
        frame_bytes = int(np.prod(frame)) * dtype.itemsize
        # each keeps a stack of float32 pixels (image number == frame number), and the
        # selected frames are read once for all of them
        total = len(perturbed) * n_stack * int(np.prod(frame)) * 4 + (
            len(index) * frame_bytes if perturbed else 0
        )
        if perturbed and total > _MAX_EMBEDDED_BYTES:
            raise TopoLensError(
                f"perturbed variants ({', '.join(perturbed)}) each keep a copy of the image "
                f"stack: {len(perturbed)} x {n_stack} images of {'x'.join(map(str, frame))} "
                f"{dtype} and the {len(index)} selected take {total / 2**20:,.1f} MiB, more "
                f"than the {_MAX_EMBEDDED_BYTES / 2**20:,.0f} MiB cap; analyse a smaller stack "
                "(e.g. the marked images in their own layer), fewer perturbations, or model "
                "compressions only"
            )
        occlusion = None
        if any(spec.perturbation == "occlusion" for spec in specs):
            layer = self.variant_form.occlusion_mask.value
            if layer is not None:
                occlusion = layer_mask(
                    layer,
                    image_layer,
                    index,
                    max_bytes=_MAX_EMBEDDED_BYTES,
                    what="the occlusion mask",
                )
        return _VariantPlan(
            specs=specs,
            # read here, bounded by the cap above: the worker never reads the layer's own
            # buffer (the base's images are copied here too)
            frames=read_frames(image_layer.data, index, frame) if perturbed else None,
            frame=frame,
            dtype=dtype,
            occlusion_mask=occlusion,
        )

    def _scheduler(self) -> str | None:
        """The Dask scheduler address typed in the form, or ``None`` to run here."""
        return str(self.scheduler.value).strip() or None

    def cancel(self, _value: Any = None) -> None:
        """Stop the running analysis at its next step; nothing is added to the viewer."""
        if self._job is not None:
            self._set_status("Cancelling...")
            self._job.quit()

    def _on_progress(self, fraction: float, message: str) -> None:
        """The dock's own progress bar and status: where the user is looking."""
        # a QProgressBar repaints at once (QWidget.repaint) when its value shows a change:
        # a full repaint of the window with an OpenGL canvas in it, each time. With its
        # updates off meanwhile, it is painted in the next turn, with the rest
        self.progress_bar.setUpdatesEnabled(False)
        self.progress_bar.setValue(round(ProgressWorker.STEPS * min(max(fraction, 0.0), 1.0)))
        # (the bar says the percentage, the status below it the step: each once; the
        # step was said in both, clipped in the bar, with two roundings of the percentage)
        self.progress_bar.setUpdatesEnabled(True)
        self._set_status(message or f"{100 * fraction:.0f}%")

    def _on_show_request(self, step: Any, image_layer: Any) -> None:
        """Main thread: the worker's analysis is done; add its layers, one per event-loop turn."""
        if not isinstance(step, _ShowRequest) or self._job is None or self._job.cancelled:
            return
        if window_closed(self._viewer):  # (this widget taken off by its dock's X before)
            self._abandon_run()
            return
        if image_layer not in self._viewer.layers:
            image_layer = None  # removed while the analysis ran: views use analysis.images
        replaced = remove_analyses_on(self._viewer, image_layer)  # a new run replaces it

        def done(layers: list[Any]) -> None:
            self.layers_added = layers
            if not step.analysis.variants:
                step.shown.set()
                return
            # the variants beside the base, in its layout; "finished" still means shown
            self._set_status("Adding the variants...")
            try:
                self._variant_show = show_variants_incrementally(
                    self._viewer, step.analysis, on_done=variants_done, on_error=failed
                )
            except Exception as exc:  # refused before its first step: the worker must hear it
                failed(exc)

        def variants_done(layers: list[Any]) -> None:
            self.layers_added = [*self.layers_added, *layers]
            step.shown.set()

        def failed(exc: BaseException) -> None:
            for show in (self._variant_show, self._show):
                if show is not None:
                    show.cancel()  # no half-made views
            step.error = exc
            step.shown.set()

        instead = f" in place of {', '.join(map(repr, replaced))}" if replaced else ""
        self._set_status(f"Adding the layers{instead}...")
        self._show = show_analysis_incrementally(
            self._viewer,
            step.analysis,
            image_layer=image_layer,
            layouts=step.layouts,
            on_done=done,
            on_error=failed,
        )

    def _on_cancelled(self) -> None:
        for show in (self._variant_show, self._show):  # each removes the layers it added
            if show is not None:
                show.cancel()
        self._show = self._variant_show = None
        self.layers_added = []
        self._set_status("Cancelled; no layers were added.")

    def _on_done(self, analysis: Analysis, image_layer: Any) -> None:
        """Main thread: keep the analysis (its layers are in already) and report."""
        seconds = time.perf_counter() - self._started
        self.analysis = analysis
        if self._model is not None and analysis.provenance.get("model") == self._model_label:
            remember_model(analysis, self._model)  # its topology maps run it (ui.topology_maps)
        self._show = self._variant_show = None
        last = analysis.layer_results[-1]
        provenance = analysis.provenance
        labels_note = (
            " Labels are the model's own predictions (no true labels were given)."
            if provenance.get("labels_from_predictions")
            else f" Labels: {provenance.get('labels', 'none')}."
        )
        variants_note = ""
        if analysis.variants:
            variants_note = (
                f"\nVariants (SW drift relative to the base's diagram, mean of "
                f"{len(analysis.layers)} layer(s)):"
            ) + "".join("\n" + variant_summary(v, analysis) for v in analysis.variants)
        self._set_status(
            f"Analysed {len(analysis.layers)} layer(s) of "
            f"{len(provenance.get('image_index', []))} image(s) in {seconds:.1f} s. "
            f"Showing {last.name}: {len(last.mapper.node_ids)} Mapper nodes, "
            f"{len(last.persistence.diagrams[0])} H0 bars.{labels_note} "
            "Use the explorer to change the view."
            + variants_note
            + (
                f"\nWarning: {provenance['notes']['input_scale']}"
                if "input_scale" in provenance.get("notes", {})
                else ""
            )
        )

    def _abandon_run(self) -> None:
        """The run stopped, its widget's Qt side deleted (its window closed) or its
        viewer's window closed: its worker at its next step (its child process ends), its
        views' shows stopped where they are (the closed viewer needs no tidying; its
        canvas may be deleted already), the collector resumed. Nothing of the widget's Qt
        side is touched."""
        job = self._job
        if job is None:
            return
        shows = (self._variant_show, self._show)
        self._job = self._show = self._variant_show = None
        job.abandon()
        for show in shows:
            if show is not None and not show.done:
                show.stop()
        self._resume_collector()
        self._resume_collector = lambda: None

    def _on_finished(self) -> None:
        for show in (self._variant_show, self._show):
            if show is not None and not show.done:  # the worker gave up waiting
                show.cancel()
        self._show = self._variant_show = None
        self._job = None
        self._resume_collector()
        self.progress_bar.setVisible(False)
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self._fit_height()

    def _set_status(self, text: str) -> None:
        self.status.value = text
        self._fit_soon.start(0)  # its height follows (``_fit_height``)

    def _report(self, exc: BaseException) -> None:
        report_error(exc, self.status)
        self._fit_soon.start(0)


class _ShowRequest:
    """Yielded by the worker when the analysis is done: "show this; tell me when it is in".

    It looks like a ``Progress`` step to the progress bar (``fraction``, ``message``).
    The main thread sets :attr:`shown` when the last layer is in (or :attr:`error`
    when a step failed); the worker waits for it, so ``finished`` means shown.
    """

    fraction = 1.0
    message = "adding the layers"

    def __init__(self, analysis: Analysis, layouts: dict[str, np.ndarray]) -> None:
        import threading

        self.analysis = analysis
        self.layouts = layouts
        self.shown = threading.Event()
        self.error: BaseException | None = None


#: Longest the worker waits for the main thread to add the layers.
_SHOW_TIMEOUT_S = 600.0


@dataclass
class _VariantPlan:
    """The variants of a run, checked on the main thread; the worker runs them.

    ``frames`` are the selected images in the layer's own dtype (``perturb`` takes
    an array), read on the main thread when a perturbation needs them.
    """

    specs: list[Any]
    frames: np.ndarray | None
    frame: tuple[int, ...]
    dtype: np.dtype
    occlusion_mask: np.ndarray | None


def _analysis_work(steps: Generator[Progress, None, Analysis]) -> Callable[[], Any]:
    """The worker's generator: the run (``pipeline.iter_run``), then the views. Touches no layer.

    ``steps`` is the run, made (and its job checked) on the main thread; the worker
    runs it (activations, predictions, topology, variants: every yield can cancel),
    lays out the Mapper graphs, then hands the analysis to the main thread and waits
    until its layers are in.
    """

    def work() -> Generator[Any, None, Analysis]:
        with a_core_left_for_the_viewer():
            analysis = yield from steps
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


def variant_summary(variant: Variant, base: Analysis) -> str:
    """One line of a variant's drift: mean relative SW drift, moved at the last layer, accuracy."""
    comparison = variant.comparison
    dim = min(1, int(base.config.max_dim))
    drift = comparison.mean_drift("sliced_wasserstein", dim, relative=True)
    last = comparison.drifts[-1]
    moved = last.moved_fraction
    text = (
        f"{variant.name}: SW-H{dim} drift {drift:.3g}, moved "
        + ("n/a" if np.isnan(moved) else f"{100 * moved:.0f}%")
        + f" at {last.layer}"
    )
    if base.provenance.get("labels_from_predictions"):
        changed = comparison.prediction_changed
        if not np.isnan(changed):
            text += f", predictions changed {100 * changed:.0f}%"
    elif not np.isnan(comparison.accuracy_base):
        text += f", accuracy {comparison.accuracy_base:.3f} → {comparison.accuracy_variant:.3f}"
    return text
