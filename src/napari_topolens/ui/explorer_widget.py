"""Dock widget: explore an analysis already shown (views in the topology canvas).

Pick the analysis and the network layer whose views are shown, colour the Mapper
nodes by a node feature (the model's predicted class and correct share too, when
the analysis holds predictions), hide weak edges with a Jaccard threshold, and
search a class to fade every node it does not dominate. Every control calls one
function of ``ui.views`` on the main thread; the controls follow ``ui.state``
(its events), never the layers. A layer switch updates the canvas layers in
place, one per event-loop turn, so the viewer stays responsive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    ComboBox,
    Container,
    FloatSlider,
    Label,
    LineEdit,
    PushButton,
    Widget,
)
from psygnal import SignalInstance
from qtpy.QtWidgets import QComboBox, QSizePolicy

from ..errors import TopoLensError
from ..topology.results import Analysis
from .canvas import existing_canvas, set_bar_factory
from .mapper_nodes import analysis_predictions
from .panel_text import plural
from .panels import COLOR_BY, COLOR_BY_LABELS, NEEDS_PREDICTIONS
from .state import ShownAnalysis, state_for
from .views import (
    highlight_class,
    recolor_nodes,
    remove_analysis,
    set_edge_threshold,
    show_analysis_incrementally,
)
from .widget_parts import report_error

if TYPE_CHECKING:
    import napari

__all__ = ["COLOR_BY_LABELS", "ExplorerWidget", "resolve_class"]


def resolve_class(text: str, class_names: list[str] | None) -> str | None:
    """The class a search text means: exact, then case-insensitive, then a unique prefix.

    Returns ``None`` for an empty text; raises ``TopoLensError`` when nothing or
    several classes match, naming the candidates.
    """
    text = text.strip()
    if not text:
        return None
    if not class_names:
        raise TopoLensError("this analysis has no class labels, so there is no class to search")
    if text in class_names:
        return text
    lowered = [name.lower() for name in class_names]
    if text.lower() in lowered:
        return class_names[lowered.index(text.lower())]
    matches = [name for name in class_names if name.lower().startswith(text.lower())]
    if not matches:
        matches = [name for name in class_names if text.lower() in name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise TopoLensError(f"no class matches {text!r}; classes: {', '.join(class_names)}")
    raise TopoLensError(
        f"{text!r} matches several classes ({', '.join(matches)}); type more of the name"
    )


class ExplorerWidget(Container):
    """Controls for the analyses shown by ``views.show_analysis`` (or read from a file).

    A compact bar of two rows. The Topology views dock holds one (``in_canvas``), so
    the controls and the views are seen together on a laptop screen; the one napari
    docks from ``Plugins ▸ TopoLens ▸ Topology explorer`` works on its own until that
    bar exists, then points to it (and focuses it) instead of doubling it.
    """

    def __init__(self, napari_viewer: napari.Viewer, *, in_canvas: bool = False) -> None:
        super().__init__(labels=False)
        self._viewer = napari_viewer
        self._state = state_for(napari_viewer)
        self._in_canvas = in_canvas
        self._updating = False
        self._known: set[str] = set()  # keys seen: a new one gets chosen
        self._class_message = False  # the status holds a class search's message
        #: The running (or last) layer switch, a ``views.IncrementalShow``; None before the first.
        self.pending_show: Any = None
        self._make_controls()
        self._make_texts()
        self._lay_out()
        self._connect_events()
        self._sync()

    # ---- the bar's parts ----------------------------------------------------------------
    def _make_controls(self) -> None:
        """The two rows' controls: analysis, layer, colouring; threshold, class, remove."""
        self.analysis_key = ComboBox(
            label="Analysis",
            choices=self._key_choices,
            nullable=True,
            tooltip="The analysis these controls act on (listed when several are shown)",
        )
        self.layer = ComboBox(
            label="Layer",
            choices=self._layer_choices,
            nullable=True,
            tooltip="The analysed network layer whose views are shown",
        )
        self.color_by = ComboBox(
            label="Colour",
            choices=self._color_choices,
            value="dominant_class",
            tooltip="Node colour: dominant class, the model's predicted class, correct share "
            "(prediction = label), purity (share of the dominant class), mean lens value, size "
            "(log), component, community (Louvain)",
        )
        self.edge_threshold = FloatSlider(
            label="Edges ≥",
            min=0.0,
            max=1.0,
            step=0.01,
            value=0.0,
            tracking=False,
            tooltip="Hide Mapper edges whose Jaccard overlap |A∩B|/|A∪B| is below this",
        )
        self.class_search = LineEdit(
            label="Class",
            tooltip="Type a class name (or its start): other nodes fade; empty: none fade",
        )
        self.remove_button = PushButton(
            text="Remove analysis",
            tooltip="Take the chosen analysis (and its variants) off the canvas; its images stay",
        )
        for combo in (self.analysis_key, self.layer, self.color_by):
            # long choices must not widen the dock: the list shows them whole when opened
            combo.native.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.native.setMinimumContentsLength(6)

    def _make_texts(self) -> None:
        """The status, the summary and the pointer to the views dock's bar."""
        self.status = Label(value="")
        self.summary = Label(value="")
        #: Shown instead of the controls when the views dock holds the explorer's bar.
        self.pointer = Label(
            value="The explorer's controls are the bar at the top of the Topology views dock."
        )
        line = self.status.native.fontMetrics().lineSpacing()
        for text, lines in ((self.status, 3), (self.summary, 4), (self.pointer, 2)):
            text.native.setWordWrap(True)
            # wrap to the dock's width: a long message must not widen the dock
            text.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
            text.native.setMinimumWidth(1)
            # nor make it tall: a wrapped label's minimum is its height at 1 px wide, and
            # it adds to the main window's minimum (a laptop screen is 800 px high)
            text.native.setMaximumHeight(lines * line + 4)

    def _lay_out(self) -> None:
        """Two compact rows of controls, then the texts."""
        first: list[Widget] = [self.analysis_key, self.layer, self.color_by]
        second: list[Widget] = [self.edge_threshold, self.class_search, self.remove_button]
        self.first_row = Container(widgets=first, layout="horizontal", labels=True)
        self.second_row = Container(widgets=second, layout="horizontal", labels=True)
        for row in (self.first_row, self.second_row):
            row.margins = (0, 0, 0, 0)
        # the colouring's names are the longest: it gets the most room
        for row, stretches in ((self.first_row, (1, 2, 3)), (self.second_row, (1, 1, 0))):
            for index, stretch in enumerate(stretches):
                row.native.layout().setStretch(index, stretch)
        self.extend([self.first_row, self.second_row, self.status, self.summary, self.pointer])
        self.margins = (2, 0, 2, 0)
        self.native.layout().setSpacing(2)
        self.pointer.visible = False
        self.summary.visible = not self._in_canvas  # in the bar: the layer's tooltip says it
        self.status.visible = False
        self.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.min_width = 1

    def _connect_events(self) -> None:
        self.analysis_key.changed.connect(self._on_key_changed)
        self.layer.changed.connect(self.show_layer)
        self.color_by.changed.connect(self.recolor)
        self.edge_threshold.changed.connect(self.threshold_edges)
        self.class_search.changed.connect(self.find_class)
        self.remove_button.changed.connect(self.remove)
        listening: list[tuple[SignalInstance, Callable[..., Any]]] = [
            (self._state.shown, self._on_shown),
            (self._state.removed, self._on_removed),
            (self._state.changed, self._on_state_changed),
        ]
        for signal, callback in listening:
            signal.connect(callback)

        # the state outlives these controls (a closed viewer, a closed dock): stop
        # listening when Qt deletes them
        def stop_listening(*_: Any) -> None:
            for signal, callback in listening:
                signal.disconnect(callback, missing_ok=True)

        for part in (self.native, self.analysis_key.native, self.layer.native):
            part.destroyed.connect(stop_listening)

    def say(self, text: str) -> None:
        """Put a message in the status line (shown only while it says something)."""
        self.status.value = text
        self.status.visible = bool(text) and not self.pointer.visible

    def _bar_elsewhere(self) -> Any:
        """The views dock's explorer bar when this one is another (napari's menu dock)."""
        if self._in_canvas:
            return None
        canvas = existing_canvas(self._viewer)
        bar = getattr(canvas, "explorer", None)
        return bar if bar is not None and bar is not self else None

    def _point_to_bar(self) -> None:
        """Show the pointer instead of the controls once the views dock holds the bar."""
        bar = self._bar_elsewhere()
        if bar is None or self.pointer.visible:
            return
        for part in (self.first_row, self.second_row, self.status, self.summary):
            part.visible = False
        self.pointer.visible = True
        bar.layer.native.setFocus()

    # ---- what is shown ----------------------------------------------------------------
    def _key_choices(self, _widget: Any = None) -> list[str]:
        # a variant shown beside its base follows the base's controls
        return [
            entry.key for entry in self._state if entry.network_layer and entry.variant_of is None
        ]

    def _entry(self) -> ShownAnalysis | None:
        key = self.analysis_key.value
        return self._state.get(key) if key is not None and key in self._state else None

    @property
    def analysis(self) -> Analysis | None:
        """The chosen :class:`Analysis`, or ``None``."""
        entry = self._entry()
        return None if entry is None else entry.analysis

    def _layer_choices(self, _widget: Any = None) -> list[str]:
        analysis = self.analysis
        return [] if analysis is None else list(analysis.layers)

    def _color_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        analysis = self.analysis
        has_predictions = analysis is not None and analysis_predictions(analysis) is not None
        return [
            (COLOR_BY_LABELS[name], name)
            for name in COLOR_BY
            if has_predictions or name not in NEEDS_PREDICTIONS
        ]

    def reset_choices(self, *_: Any) -> None:
        """napari calls this on docked magicgui widgets whenever layers change."""
        self._sync()

    def _on_shown(self, key: str) -> None:
        if self._switching():
            return  # our own switch: its end syncs
        if key not in self._known:
            self._known.add(key)
            self._sync(choose=key)  # a new analysis: show its controls
        elif key == self.analysis_key.value:
            self._sync()

    def _on_removed(self, key: str) -> None:
        self._known.discard(key)  # a new analysis under the same key is chosen again
        self._sync()

    def _on_state_changed(self, key: str, _what: str) -> None:
        if key == self.analysis_key.value and not self._switching():
            self._sync()

    def _on_key_changed(self, _value: Any = None) -> None:
        if not self._updating:
            self._sync()

    def _sync(self, choose: str | None = None) -> None:
        """Make the controls show the state of the chosen analysis."""
        if self._updating:
            return
        self._updating = True
        try:
            previous = self.analysis_key.value
            self.analysis_key.reset_choices()
            keys = [k for k in self.analysis_key.choices if k is not None]
            self._known |= set(keys)
            if choose in keys:
                self.analysis_key.value = choose
            elif keys and previous not in keys:
                self.analysis_key.value = keys[-1]
            self.layer.reset_choices()
            self.color_by.reset_choices()
            entry = self._entry()
            if entry is not None:
                if entry.network_layer in self.layer.choices:
                    self.layer.value = entry.network_layer
                if entry.color_by in self.color_by.choices:
                    self.color_by.value = entry.color_by
                self.edge_threshold.value = float(entry.edge_threshold)
                self.class_search.value = "" if entry.faded_class is None else entry.faded_class
            # one analysis (its variants follow it): no need to choose
            self.analysis_key.visible = len(keys) > 1
            self.remove_button.enabled = bool(keys)  # (nothing to remove while a run computes)
            self._update_summary()
        finally:
            self._updating = False
        self._point_to_bar()

    # ---- actions ------------------------------------------------------------------------
    def _switching(self) -> bool:
        show = self.pending_show
        return show is not None and not show.done

    def show_layer(self, _value: Any = None) -> Any:
        """Show the views of the chosen network layer, one layer per event-loop turn.

        A switch still running is cancelled first, so rapid switching ends on the
        last choice. Returns the running ``views.IncrementalShow`` (also
        :attr:`pending_show`), or None when there is nothing to switch.
        """
        if self._updating:
            return None
        entry, name = self._entry(), self.layer.value
        if entry is None or name is None:
            return None
        cut_short = self.pending_show is not None and self.pending_show.cancelled
        if self._switching():
            self.pending_show.cancel()
        elif name == entry.network_layer and not cut_short:
            return None  # (after a cancelled switch some views may show another layer)
        key = entry.key
        color_by, threshold = self.color_by.value, float(self.edge_threshold.value)

        def done(_layers: list[Any]) -> None:
            if self.analysis_key.value != key:
                return
            try:  # controls changed while the layers went in apply now
                if self.color_by.value != color_by:
                    recolor_nodes(self._viewer, key, self.color_by.value)
                if float(self.edge_threshold.value) != threshold:
                    set_edge_threshold(self._viewer, key, float(self.edge_threshold.value))
                self._apply_class(report=False)
            except TopoLensError as exc:
                report_error(exc, self.status)
            self._update_summary()

        self.pending_show = show_analysis_incrementally(
            self._viewer,
            entry.analysis,
            name,
            color_by=color_by,
            edge_threshold=threshold,
            on_done=done,
            on_error=lambda exc: report_error(exc, self.status),
        )
        return self.pending_show

    def recolor(self, _value: Any = None) -> None:
        """Colour the nodes by the chosen feature (keeps a class search applied)."""
        if self._updating or self.analysis_key.value is None or self._switching():
            return  # during a switch: its end applies the chosen colouring
        try:
            recolor_nodes(self._viewer, self.analysis_key.value, self.color_by.value)
            self._apply_class(report=False)
        except TopoLensError as exc:
            report_error(exc, self.status)
            return
        self._update_summary()

    def threshold_edges(self, _value: Any = None) -> None:
        """Hide edges whose Jaccard weight is below the slider."""
        if self._updating or self.analysis_key.value is None or self._switching():
            return
        try:
            set_edge_threshold(
                self._viewer, self.analysis_key.value, float(self.edge_threshold.value)
            )
        except TopoLensError as exc:
            report_error(exc, self.status)
            return
        self._update_summary()

    def remove(self, _value: Any = None) -> None:
        """Take the chosen analysis off the canvas (its views, overlay, gallery, variants)."""
        key = self.analysis_key.value
        if key is None or self._updating:
            return
        if self._switching():
            self.pending_show.cancel()
        remove_analysis(self._viewer, key)
        self.status.value = f"Removed {key!r} from the canvas; its images stay in the viewer."

    def find_class(self, _value: Any = None) -> str | None:
        """Fade the nodes not dominated by the searched class; returns the class found."""
        if self._updating or self.analysis_key.value is None:
            return None
        return self._apply_class(report=True)

    def _apply_class(self, report: bool) -> str | None:
        analysis = self.analysis
        if analysis is None:
            return None
        try:
            name = resolve_class(self.class_search.value, analysis.class_names)
        except TopoLensError as exc:
            if report:
                self.say(f"{exc}")
                self._class_message = True
            name = None
        else:
            if self._class_message:  # a search that matches (or none) ends its message
                self.say("")
                self._class_message = False
        was = self._updating
        self._updating = True
        try:
            highlight_class(self._viewer, self.analysis_key.value, name)
        finally:
            self._updating = was
        if report:
            self._update_summary(found=name)
        return name

    # ---- text -----------------------------------------------------------------------------
    def _update_summary(self, found: str | None = None) -> None:
        entry = self._entry()
        if entry is None or not entry.network_layer:
            self.summary.value = "Run an analysis (or open a saved one) to explore it here."
            self.layer.tooltip = "The analysed network layer whose views are shown"
            return
        result = entry.result
        graph = result.mapper
        edges = entry.layers.get("mapper_edges")
        shown_edges = len(edges.data) if edges is not None else 0
        quality = result.quality

        def number(value: float) -> str:
            return (
                "n/a"
                if value is None or (isinstance(value, float) and math.isnan(value))
                else f"{value:.2f}"
            )

        self.summary.value = (
            f"{entry.network_layer}: {len(graph.node_ids)} nodes, {shown_edges} of "
            f"{len(graph.edges)} edges shown; {len(result.cloud)} points. Best H0 clusters vs "
            f"labels: purity {number(quality.purity)}, ARI {number(quality.ari)}, NMI "
            f"{number(quality.nmi)}, silhouette {number(quality.silhouette)}; "
            f"PH dim {number(float(result.phdim.dimension))}."
        )
        self.layer.tooltip = (
            f"The analysed network layer whose views are shown. {self.summary.value}"
        )
        nodes = entry.layers.get("mapper_nodes")
        if found is not None and nodes is not None:
            kept = int((nodes.features["dominant_class"].astype(str) == found).sum())
            self.say(
                f"Class {found!r}: {kept} of {plural(len(nodes.features), 'node')} kept, "
                "the others faded."
            )
            self._class_message = True
        elif self.class_search.value.strip() == "" and self._class_message:
            self.say("")
            self._class_message = False


def _canvas_bar(viewer: Any) -> ExplorerWidget:
    return ExplorerWidget(viewer, in_canvas=True)


# the views dock of every viewer gets the explorer as a bar above its canvas (the canvas
# sits below this module and cannot import it)
set_bar_factory(_canvas_bar)
