"""The topology canvas: a dock holding its own napari canvas and camera for the views.

The views are napari layers (features tables, selection, colormaps, colour bars)
in a second :class:`napari.components.ViewerModel` drawn by a
:class:`napari.qt.QtViewer` inside a dock widget of the image viewer (the pattern
of napari's multiple-viewer example). Zoom, grid and 3D of the image viewer never
touch them. One view (a *panel*) is shown at a time, picked above the canvas,
and framed by the camera; a second analysis of the same images (a variant) sits
in the next slot to the right with the same layout. Above the canvas: the class
legend and the ring colours; below: the hover readout (details of the item under
the pointer in whichever view layer, full matrix values included).
"""

from __future__ import annotations

import html
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, cast

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from . import collector
from . import view_data as vd
from .glyphs import warm_glyphs, warmer_of
from .layer_update import insert_quietly, lock_layer, set_visible, track_drawing, update_layer
from .state import PerViewer, ShownAnalyses, ShownAnalysis, state_for, viewer_ref, window_closed
from .widget_parts import qt_alive

__all__ = [
    "PanelMaker",
    "TopologyCanvas",
    "canvas_for",
    "close_canvases",
    "existing_canvas",
    "hover_text",
    "insert_unselected",
    "set_bar_factory",
]

#: Views whose layers keep napari's colour bar on. None: napari's colour bar has no
#: title, and two analyses side by side would stack two unnamed bars in one corner; each
#: slot draws its own titled key instead (``view_data.color_key_data`` and the panel text).
COLORBAR_VIEWS: tuple[str, ...] = ()
#: The readout's text when nothing is hovered or selected.
READOUT_HINT = (
    "Hover: details · click: its images (white ring) · click an input's pixel: the items "
    "holding it (magenta) · Esc: clear"
)
#: The legend's line while no analysis is shown.
EMPTY_HINT = "No analysis shown yet: its views appear here once a run is done."
#: Smallest height of the canvas itself (the dock's other rows come on top).
MIN_CANVAS_HEIGHT = 144
#: Characters drawn ahead per repaint (:meth:`TopologyCanvas.put_unseen_glyphs`): napari
#: rasterises each new one for its text atlas on the main thread, about 10 ms apiece.
GLYPHS_PER_TURN = 6
#: The colour of text drawn only to load its characters (fully transparent).
UNSEEN_TEXT_COLOR = "#00000000"


class PanelMaker(Protocol):
    """What makes the views of a panel not drawn yet (``ui.show.PanelBuilder``)."""

    def __call__(self, entry: ShownAnalysis, panel: str, *, at_once: bool = False) -> object: ...

    def busy(self) -> bool:
        """Whether a pick is still being made."""
        ...


def _rgb_css(rgb: Any) -> str:
    r, g, b = (round(255 * float(v)) for v in list(rgb)[:3])
    return f"rgb({r},{g},{b})"


class _RefitOnResize(QObject):
    """Frames the views again when the canvas itself is resized."""

    def __init__(self, canvas: TopologyCanvas) -> None:
        super().__init__(canvas)
        self._canvas = weakref.ref(canvas)

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:
        canvas = self._canvas()
        if event is not None and event.type() == QEvent.Type.Resize and canvas is not None:
            QTimer.singleShot(0, canvas.refit)
        return False


class TopologyCanvas(QWidget):
    """The dock with the topology canvas (see the module docstring).

    Attributes
    ----------
    model : napari.components.ViewerModel
        The canvas's own viewer model: its layers are the views, its camera theirs.
    qt_viewer : napari.qt.QtViewer
    picker : QComboBox
        The view shown (``view_data.PANELS``).
    legend, readout : QLabel
    """

    #: The chosen variant's name in the "Compare" combo (``ui.variants`` listens).
    compare_picked = Signal(str)
    #: A most-moved image clicked: its entry's data (``ui.variants`` listens).
    moved_picked = Signal(object)

    def __init__(self, viewer: Any) -> None:
        # heavy: napari.components and napari.qt import napari's Qt side
        from napari.components import ViewerModel
        from napari.qt import QtViewer

        super().__init__()
        self._viewer = viewer_ref(viewer)
        self.state: ShownAnalyses = state_for(viewer)
        self.model = ViewerModel(title="TopoLens topology")
        # layers removed: the objects frozen out of the collector are freed again
        collector.thaw_on_removal(self.model.layers)
        collector.thaw_on_removal(viewer.layers)
        #: Makes the layers of a panel not drawn yet (set by ``ui.show``).
        self.panel_builder: PanelMaker | None = None
        #: Counts the picks' turns: odd while a pick's frame and text wait for their turn.
        self._pick_turn = 0
        #: The characters this canvas's text has drawn (napari keeps their glyphs), and
        #: those of every panel of the shown analyses, by what they depend on.
        self.glyphs_drawn: set[str] = set()
        self._panel_chars: tuple[tuple, set[str]] = ((), set())
        #: In the viewer's window (``canvas_for``; made and docked in two turns by
        #: ``make_canvas_in_turns``).
        self.docked = False
        #: Layers added hidden to be shown a turn later (:meth:`add_layer`'s ``show_later``).
        self._to_show: weakref.WeakSet[Any] = weakref.WeakSet()
        self.qt_viewer: Any = _quiet_qt_viewer(QtViewer, self.model)
        self._make_controls()
        #: The explorer's controls (network layer, colouring, edges, class search) as a bar
        #: above the canvas, so controls and views are seen together. ``ui.explorer_widget``
        #: (above this module) makes it: see :func:`set_bar_factory`.
        self.explorer: Any = _BAR_FACTORY[0](viewer) if _BAR_FACTORY else None
        self._lay_out()
        self._connect()
        self.update_legend()

    def _make_controls(self) -> None:
        """The view picker, the variant combo, the most-moved list, the legend and readout."""
        self.picker = QComboBox()
        for panel in vd.PANELS:
            self.picker.addItem(vd.PANEL_TITLES[panel], panel)
        self.picker.setToolTip("The view shown in the topology canvas")
        #: Which variant of the shown analysis sits beside it (visible when it has variants).
        self.compare = QComboBox()
        self.compare.setToolTip(
            "The variant (perturbed images or compressed model) shown beside the base, "
            "with the base's layout: a moved image jumps"
        )
        self.compare_label = QLabel("Compare:")
        #: The compared variant's most-moved images (visible while a variant is compared).
        self.moved_label = QLabel()
        self.moved_label.setWordWrap(True)
        self.moved_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.moved_list = QListWidget()
        self.moved_list.setToolTip(
            "Click an image: the original and its variant with the receptive-field heat of "
            "the activation that moved, in the selection gallery; its nodes selected"
        )
        self.moved_list.setMaximumHeight(56)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.readout = QLabel(READOUT_HINT)
        self.readout.setWordWrap(True)
        self.readout.setMinimumHeight(34)
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        for combo in (self.picker, self.compare):
            # long choices must not widen the dock: the list shows them whole when opened
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(8)

    def _lay_out(self) -> None:
        top = QHBoxLayout()  # one row: on a laptop screen every row is taken from the views
        top.addWidget(QLabel("View:"))
        top.addWidget(self.picker, 3)
        top.addWidget(self.compare_label)
        top.addWidget(self.compare, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(top)
        if self.explorer is not None:
            layout.addWidget(self.explorer.native)
        layout.addWidget(self.legend)
        layout.addWidget(self.qt_viewer, 1)
        layout.addWidget(self.readout)
        layout.addWidget(self.moved_label)
        layout.addWidget(self.moved_list)
        for widget in (self.compare_label, self.compare, self.moved_label, self.moved_list):
            widget.setVisible(False)
        # wider than the form: a base and its variant share this width
        self.setMinimumWidth(440)
        # the views need room (Qt shrinks docks to nothing), but the dock's minimum adds to
        # the main window's: with the analysis dock above it, it must fit an 800-px screen
        self.qt_viewer.setMinimumHeight(MIN_CANVAS_HEIGHT)

    def _connect(self) -> None:
        # the canvas also changes size inside the dock (a message shown above it): frame again
        self._refit_on_resize = _RefitOnResize(self)
        self.qt_viewer.installEventFilter(self._refit_on_resize)
        self.picker.currentIndexChanged.connect(self._on_picked)
        self.compare.currentIndexChanged.connect(self._on_compare_picked)
        self.moved_list.itemClicked.connect(self._on_moved_clicked)
        for signal, slot in self._state_slots():
            signal.connect(slot)
        self.model.mouse_move_callbacks.append(self._on_hover)

    def _state_slots(self) -> list[tuple[Any, Callable[..., None]]]:
        """What the canvas follows in its viewer's state (the state outlives a closed canvas)."""
        state = self.state
        return [
            (state.panel_changed, self._on_panel_changed),
            (state.added, self._on_entries_changed),
            (state.removed, self._on_entries_changed),
            (state.selection_changed, self._on_selection_changed),
            (state.changed, self._on_setting_changed),
        ]

    def resizeEvent(self, event: Any) -> None:
        """Frame the view again when the dock changes size (it has none before it is shown)."""
        super().resizeEvent(event)
        QTimer.singleShot(0, self.refit)

    def refit(self) -> None:
        """Frame the views again (queued after a resize, once Qt has laid the canvas out)."""
        if getattr(self, "qt_viewer", None) is not None:
            self.fit()

    def is_open(self) -> bool:
        """Whether views can still be drawn here: not closed, and the Qt side not deleted
        with its window (a closed viewer may outlive its widgets until it is collected)."""
        return getattr(self, "qt_viewer", None) is not None and qt_alive(self.picker)

    def close_canvas(self) -> None:
        """Close the canvas's own napari canvas and forget it (its viewer is closing)."""
        for viewer, canvas in _CANVASES.items():
            if canvas is self:
                _CANVASES.pop(viewer)
        qt_viewer = getattr(self, "qt_viewer", None)
        if qt_viewer is None:
            return
        for signal, slot in self._state_slots():  # its analyses may be removed later
            signal.disconnect(slot)
        self.qt_viewer = None
        self.panel_builder = None
        self.model.mouse_move_callbacks.clear()
        self.model.mouse_drag_callbacks.clear()
        collector.thaw()  # the closed viewers' objects: freed by the next collection
        self.model.layers.clear()
        try:
            layout = self.layout()
            if layout is not None:
                layout.removeWidget(qt_viewer)
            qt_viewer.close()
            qt_viewer.setParent(None)
            qt_viewer.deleteLater()
        except RuntimeError:  # Qt deleted it already with its window
            pass

    # ---- panels ---------------------------------------------------------------------------
    @property
    def panel(self) -> str:
        return self.state.panel

    def show_panel(self, panel: str, *, at_once: bool = True) -> None:
        """Show one view (``view_data.ALL_PANELS``) of every shown analysis, framed.

        A view shown for the first time is made then: at once, or (``at_once=False``,
        the picker's way) in a worker thread, its layers added when ready
        (``ui.show.PanelBuilder``).
        """
        if panel not in vd.ALL_PANELS:
            raise ValueError(f"no view {panel!r}; views: {', '.join(vd.ALL_PANELS)}")
        self.state.set_panel(cast(vd.Panel, panel))
        if self.panel_builder is not None:
            for entry in self.state:
                self.panel_builder(entry, panel, at_once=at_once)
        if at_once:
            self.apply_panel()
            return
        # the picker's way, in two event-loop turns: the views now (each shown or hidden
        # layer costs napari a pass over every canvas layer), the frame, text and camera
        # in the next turn, so neither holds the main thread for both
        self._pick_turn += 2 if self._pick_turn % 2 else 1  # odd: waiting (a newer one)
        turn = self._pick_turn
        self.sync_visibility(*self.state)
        QTimer.singleShot(1, lambda: self._finish_pick(turn))

    def _finish_pick(self, turn: int) -> None:
        if turn != self._pick_turn or getattr(self, "qt_viewer", None) is None:
            return  # a newer pick or show took over, or the canvas closed
        self._pick_turn += 1
        self.apply_panel()

    def busy(self) -> bool:
        """Whether a pick is still being drawn: its frame and text, or its views being made."""
        builder = self.panel_builder
        return self._pick_turn % 2 == 1 or bool(builder is not None and builder.busy())

    def _on_picked(self, index: int) -> None:
        panel = self.picker.itemData(index)
        if panel is not None and panel != self.state.panel:
            self.show_panel(panel, at_once=False)

    def _on_panel_changed(self, panel: str) -> None:
        if not self.is_open():  # its window closed: the state is followed until it is
            return
        index = self.picker.findData(panel)
        if index >= 0 and index != self.picker.currentIndex():
            self.picker.blockSignals(True)
            self.picker.setCurrentIndex(index)
            self.picker.blockSignals(False)

    def update_panel_choices(self) -> None:
        """Offer the variant views (the drift plot) only while an analysis with variants is shown."""
        wanted = any(vd.has_variants(entry.analysis) for entry in self.state)
        for panel in vd.VARIANT_PANELS:
            index = self.picker.findData(panel)
            if wanted and index < 0:
                self.picker.blockSignals(True)
                self.picker.addItem(vd.PANEL_TITLES[panel], panel)
                self.picker.blockSignals(False)
            elif not wanted and index >= 0:
                if self.state.panel == panel:
                    self.show_panel("mapper")
                self.picker.blockSignals(True)
                self.picker.removeItem(self.picker.findData(panel))
                self.picker.blockSignals(False)

    # ---- variants ---------------------------------------------------------------------------
    def set_compare_choices(self, names: list[str], current: str | None) -> None:
        """The variants the "Compare" combo offers (hidden when none) and the one shown."""
        self.compare.blockSignals(True)
        try:
            self.compare.clear()
            for name in names:
                self.compare.addItem(name, name)
            if current is not None and current in names:
                self.compare.setCurrentIndex(names.index(current))
        finally:
            self.compare.blockSignals(False)
        self.compare_label.setVisible(bool(names))
        self.compare.setVisible(bool(names))

    def _on_compare_picked(self, index: int) -> None:
        name = self.compare.itemData(index)
        if name is not None:
            self.compare_picked.emit(str(name))

    def set_moved(self, title: str, entries: list[tuple[str, Any]]) -> None:
        """The most-moved images list: ``(text, data)`` per entry; hidden when ``title`` is empty."""
        self.moved_list.clear()
        for text, data in entries:
            item = QListWidgetItem(text)
            item.setData(256, data)  # Qt.UserRole
            self.moved_list.addItem(item)
        # one line: "Most moved under <variant> (click one):", the score's meaning in the tooltip
        short = (
            title.split(" (score")[0]
            .replace("Images that moved most", "Most moved")
            .replace("Images whose pixels changed node most", "Most changed pixels")
        )
        self.moved_label.setText(short + (" (click one):" if entries else ""))
        self.moved_label.setToolTip(title)
        self.moved_label.setVisible(bool(title))
        self.moved_list.setVisible(bool(title))

    def _on_moved_clicked(self, item: Any) -> None:
        self.moved_picked.emit(item.data(256))

    def apply_panel(self, entries: list[ShownAnalysis] | None = None) -> None:
        """Make the layers of the current panel visible, the others hidden; redo its text."""
        if self._pick_turn % 2 == 1:  # a pick's second turn waits: done here
            self._pick_turn += 1
        targets = entries if entries is not None else list(self.state)
        for entry in targets:
            self._put_panel_text(entry)
        # once for every analysis, after their keys' new colourings (a key shown or hidden
        # per analysis: two changes in one napari batch, not one pass over every layer each)
        self.sync_visibility(*targets)
        self.fit()
        self.update_legend()

    def sync_visibility(self, *entries: ShownAnalysis) -> None:
        """Show the layers of the current panel of ``entries``, hide their others.

        All in one napari batch (``LayerList.batched_update``): napari otherwise passes
        over every canvas layer for each layer shown or hidden (15-25 ms each with two
        analyses' views made), and a pick shows and hides 4-10.
        """
        changes = self.visibility_changes(*entries)
        with self.visibility_batch(len(changes)):
            for layer, visible in changes:
                set_visible(layer, visible)

    def visibility_changes(self, *entries: ShownAnalysis) -> list[tuple[Any, bool]]:
        """``(layer, visible)`` for each layer of ``entries`` whose visibility
        :meth:`sync_visibility` would change."""
        changes = []
        for entry in entries:
            for view, layer in entry.layers.items():
                if layer not in self.model.layers:
                    continue
                visible = self.shown_now(view, layer)
                if visible is not None and bool(layer.visible) != visible:
                    changes.append((layer, visible))
        return changes

    def shown_now(self, view: str, layer: Any) -> bool | None:
        """Whether a view layer is shown on the current panel; None for the frame's
        axes and text, shown on every panel (what they show is redone per panel)."""
        if view == "color_key":  # the frame's key: shown when the panel has one
            return bool(layer.metadata["topolens"].get("continuous"))
        if view in vd.PANEL_LAYERS:
            return None
        return view in vd.PANEL_VIEWS[self.state.panel]

    def visibility_batch(self, changes: int) -> AbstractContextManager[Any]:
        """One napari batch for ``changes`` visibility changes of canvas layers (one pass
        over every canvas layer at its end, instead of one per change), or nothing when
        fewer than two, or when napari's collection at a batch's end would walk every
        object (not frozen: :func:`.collector.collections_are_cheap`)."""
        batched = getattr(self.model.layers, "batched_update", None)
        if batched is None or changes < 2 or not collector.collections_are_cheap():
            return nullcontext()
        return cast(AbstractContextManager[Any], batched())

    def redo_panel_text(self, entry: ShownAnalysis) -> None:
        """Rebuild the frame, titles, ticks and colour key of the current panel for one analysis."""
        if not entry.network_layer:
            return
        self._put_panel_text(entry)
        self.sync_visibility(entry)
        self.fit_text()

    def _put_panel_text(self, entry: ShownAnalysis) -> None:
        """The frame, titles, ticks and colour key of the current panel into their layers
        (their visibility and the text's size at the zoom: the caller's)."""
        if not entry.network_layer:
            return
        args = (entry.analysis, entry.network_layer, entry.key, entry.slot, self.state.panel)
        items = [
            vd.panel_axes_data(*args),
            *vd.panel_text_data(*args, color_by=entry.color_by),
            vd.panel_key_data(*args, entry.color_by),
        ]
        for item in items:
            view = item[1]["metadata"]["topolens"]["view"]
            layer = entry.layers.get(view)
            if layer is not None and layer in self.model.layers:
                if view == "panel_text":  # at the size it will keep: one layout of the text
                    item[1]["text"]["size"] = self._text_size(item[1]["features"])
                if view in ("panel_text", "panel_values"):
                    self.glyphs_drawn.update(*map(str, item[1]["features"]["text"]))
                update_layer(layer, item)

    def fit(self) -> None:
        """Frame the current panel of every analysis (titles and ticks included)."""
        frames = [
            entry.layers["panel_axes"]
            for entry in self.state
            if "panel_axes" in entry.layers
            and entry.layers["panel_axes"] in self.model.layers
            and len(entry.layers["panel_axes"].data)  # (the drift plot frames its base only)
        ]
        if frames:
            self.model.fit_to_view(layers=frames, margin=0.02)
        self.fit_text()

    def fit_text(self) -> None:
        """Shrink the panel text when the views are small (slots side by side, a laptop's
        dock), so each title stays over its slot.

        napari draws text in screen points whatever the zoom; views with room keep
        :data:`~napari_topolens.ui.view_data.PANEL_TEXT_SIZE`. The frame's lines, drawn
        in world units, are widened to a pixel there (:meth:`_fit_frame_lines`).
        """
        for entry in self.state:
            layer = entry.layers.get("panel_text")
            if layer is None or layer not in self.model.layers:
                continue
            size = self._text_size(layer.features)
            if float(layer.text.size) != size:
                layer.text.size = size
        self._fit_frame_lines()

    def _fit_frame_lines(self) -> None:
        """The frame's lines at least :data:`~.view_data.MIN_FRAME_PX` wide on screen at
        the current zoom (thinner, some of its edges were not drawn at all)."""
        zoom = self._zoom()
        width = vd.FRAME_WIDTH
        if zoom > 0:
            width = max(width, vd.MIN_FRAME_PX / (vd.SIDE * zoom))
        for entry in self.state:
            layer = entry.layers.get("panel_axes")
            if (
                layer is not None
                and layer in self.model.layers
                and not np.isclose(float(layer.edge_width), width)
            ):
                layer.edge_width = width

    def _zoom(self) -> float:
        """Screen pixels per world unit (napari 0.9 moved the camera to ``scene``)."""
        scene = getattr(self.model, "scene", None)
        camera = scene.camera if scene is not None else self.model.camera
        return float(camera.zoom)

    def _text_size(self, features: Any) -> float:
        """The panel text's size for its texts (``features["text"]``) at the current zoom."""
        if not len(features):
            return vd.PANEL_TEXT_SIZE
        zoom = self._zoom()
        # (one view in a small dock too: the drift plot's legend)
        longest = max(len(str(text)) for text in features["text"])
        fits = vd.SIDE * zoom / (vd.TEXT_PX_PER_CHAR_POINT * max(longest, 1))
        return float(np.clip(fits, vd.MIN_PANEL_TEXT_SIZE, vd.PANEL_TEXT_SIZE))

    # ---- characters drawn ahead ----------------------------------------------------------------
    def unseen_glyphs(self) -> str:
        """The characters of the shown analyses' panel text (every panel offered) that
        this canvas has not drawn yet, when a matrix-values layer is free to draw them
        (:meth:`put_unseen_glyphs`); '' otherwise.

        napari rasterises a character the first time its text draws it (about 10 ms of
        the main thread each): drawn ahead while idle, a pick does not pay for it.
        """
        if self._glyph_entry() is None:
            return ""
        offered = tuple(self.picker.itemData(i) for i in range(self.picker.count()))
        entries = [e for e in self.state if e.network_layer]
        depends = (
            *((e.key, id(e.analysis), e.network_layer, e.slot, e.color_by) for e in entries),
            offered,
        )
        if self._panel_chars[0] != depends:
            chars: set[str] = set()
            for entry in entries:
                for panel in offered:
                    for item in self._text_items(entry, panel):
                        chars.update(*map(str, item[1]["features"]["text"]))
            self._panel_chars = (depends, chars)
        return "".join(sorted(self._panel_chars[1] - self.characters_drawn() - {"\n"}))

    def characters_drawn(self) -> set[str]:
        """The characters whose glyphs this canvas has: drawn by its views' text, or ahead
        while it was empty (:mod:`.glyphs`)."""
        warmer = warmer_of(self.model)
        return self.glyphs_drawn | set(warmer.drawn if warmer is not None else ())

    def _text_items(self, entry: ShownAnalysis, panel: str) -> list[Any]:
        args = (entry.analysis, entry.network_layer, entry.key, entry.slot, panel)
        return list(vd.panel_text_data(*args, color_by=entry.color_by))

    def _glyph_entry(self) -> ShownAnalysis | None:
        """The first shown analysis whose matrix-values layer is free to draw characters
        in (shown, empty), or None: :meth:`unseen_glyphs` and :meth:`put_unseen_glyphs`
        agree on it, so a step never finds characters it cannot put anywhere."""
        for entry in self.state:
            layer = entry.layers.get("panel_values")
            if (
                entry.network_layer
                and layer is not None
                and layer in self.model.layers
                and layer.visible
                and not len(layer.data)
            ):
                return entry
        return None

    def put_unseen_glyphs(self) -> ShownAnalysis | None:
        """Put a few characters not drawn yet into an empty matrix-values layer, in
        transparent text, for the next repaint to load; returns its analysis (for
        :meth:`restore_values` after that repaint), or None (none left, or no layer free,
        or a pick being drawn)."""
        unseen = self.unseen_glyphs()
        entry = self._glyph_entry()
        if not unseen or entry is None or self.busy():
            return None
        chunk = unseen[:GLYPHS_PER_TURN]
        layer = entry.layers["panel_values"]
        data, kwargs, kind = vd.text_layer(
            "panel_values",
            entry.key,
            entry.network_layer or "",
            entry.slot,
            [(0.5, 0.5)],
            [chunk],
            [UNSEEN_TEXT_COLOR],
            float(layer.text.size),
            layer.name,
        )
        kwargs["metadata"] = layer.metadata
        update_layer(layer, (data, kwargs, kind))
        self.glyphs_drawn.update(chunk)
        return entry

    def restore_values(self, entry: ShownAnalysis) -> None:
        """Put the matrix values of the panel shown back (after :meth:`put_unseen_glyphs`)."""
        layer = entry.layers.get("panel_values")
        if layer is None or layer not in self.model.layers or not entry.network_layer:
            return
        for item in self._text_items(entry, self.state.panel):
            if item[1]["metadata"]["topolens"]["view"] == "panel_values":
                update_layer(layer, item)

    # ---- layers ---------------------------------------------------------------------------
    def add_layer(self, layer: Any, view: str, *, show_later: bool = False) -> Any:
        """Add a view layer to the canvas: locked, hidden unless its panel is shown.

        ``show_later``: added hidden even so, and shown by :meth:`show_added` (e.g. in
        the next event-loop turn: its first draw, which compiles its shader programs,
        is then not in the turn that added it; :meth:`waits_to_be_shown` says whether
        it was hidden so).
        """
        lock_layer(layer)
        if view in COLORBAR_VIEWS and hasattr(layer, "colorbar"):
            # bottom right, small: the views keep that corner free (titles sit on top)
            layer.colorbar.position = "bottom_right"
            layer.colorbar.size = (12, 110)
            layer.colorbar.font_size = 8
            layer.colorbar.visible = True
        visible = self.shown_now(view, layer)
        if visible is not None:
            layer.visible = visible
        if show_later and layer.visible:
            layer.visible = False
            self._to_show.add(layer)
        layers = self.model.layers
        if view == "panel_axes":
            index = 0
        elif view in ("panel_text", "panel_values"):
            index = len(layers)
        else:  # below the text
            text = [
                i
                for i, known in enumerate(layers)
                if known.metadata.get("topolens", {}).get("view") in ("panel_text", "panel_values")
            ]
            index = min(text) if text else len(layers)
        insert_unselected(layers, index, layer)
        track_drawing(layer)  # from now on: shown unchanged, it is not sent again
        return layer

    def waits_to_be_shown(self, layer: Any) -> bool:
        """Whether ``layer`` was added hidden with ``show_later`` and not shown yet."""
        return layer in self._to_show

    def show_added(self, layer: Any, view: str) -> None:
        """Show a layer added with ``show_later``, if its panel is still the one shown."""
        if layer not in self._to_show:
            return
        self._to_show.discard(layer)
        if layer in self.model.layers and not layer.visible:
            set_visible(layer, self.shown_now(view, layer) is not False)

    def remove_layer(self, layer: Any) -> None:
        if layer in self.model.layers:
            self.model.layers.remove(layer)

    # ---- legend and readout -------------------------------------------------------------------
    def _on_entries_changed(self, _key: str = "") -> None:
        if not self.is_open():
            return
        self.update_panel_choices()
        self.update_legend()

    def update_legend(self) -> None:
        entries = list(self.state)
        # the class names of what is shown now; analyses with other names each get a line
        lists: list[tuple[str, list[str]]] = []
        for e in entries:
            found = list(e.analysis.class_names or [])
            if found and all(found != known for _, known in lists):
                lists.append((e.key, found))
        parts = []
        for key, names in lists:
            colors = vd.categorical_colors(np.arange(len(names)))
            parts.append(
                (f"<b>{html.escape(key)}</b>: " if len(lists) > 1 else "")
                + " ".join(
                    f'<span style="color:{_rgb_css(c)}">■</span>&nbsp;{html.escape(str(name))}'
                    for name, c in zip(names, colors)
                )
                + f' <span style="color:{_rgb_css(vd.UNKNOWN_RGB)}">■</span>&nbsp;unknown'
            )
        rings = (
            f'<span style="color:{_rgb_css(vd.SELECTED_RGBA)}">○</span>&nbsp;selected, '
            f'<span style="color:{_rgb_css(vd.HIT_RGBA)}">○</span>&nbsp;holds the clicked pixel'
        )
        if any(e.variant_of is not None for e in entries):
            rings += "; white beside a selection: the same images"
        # the rings' key is the legend's tooltip: every line here is taken from the views
        self.legend.setToolTip(f"Class colours. Rings: {rings}; Esc clears.")
        if not entries:  # nothing shown yet (the dock is made when the analysis widget opens)
            parts.append(EMPTY_HINT)
        elif not parts:
            parts.append(f"rings: {rings}")
        self.legend.setText("<br>".join(parts))

    def _on_setting_changed(self, key: str, what: str) -> None:
        """A new node colouring: its key's strip, title and end values follow."""
        if what == "color_by" and key in self.state and self.is_open():
            self.redo_panel_text(self.state.get(key))

    def _on_selection_changed(self, _key: str = "") -> None:
        """A cleared selection (Esc, a click on empty space) clears the readout too."""
        if self.is_open() and all(not len(entry.selection.members) for entry in self.state):
            self.readout.setText(READOUT_HINT)

    def _on_hover(self, _model: Any, event: Any) -> None:
        text = self.hover_at(tuple(event.position))
        if text:
            self.readout.setText(text)

    def hover_at(self, position: tuple[float, ...]) -> str:
        """Details of the view item under a canvas world position ('' over nothing)."""
        for layer in reversed(list(self.model.layers)):
            if not layer.visible:
                continue
            found = self.state.entry_of_layer(layer)
            if found is None:
                continue
            entry, view = found
            text = hover_text(entry, view, layer, position)
            if text:
                return text
        return ""


def hover_text(entry: ShownAnalysis, view: str, layer: Any, position: tuple[float, ...]) -> str:
    """The readout of one view layer at a world position ('' when no item is there)."""
    if view in vd.PANEL_LAYERS and view != "color_key":
        return ""
    if type(layer).__name__.lower() == "image":
        data = np.asarray(layer.world_to_data(position), dtype=np.float64)
        i, j = (int(np.floor(v + 0.5)) for v in data[-2:])
        rows, cols = layer.data.shape[-2:]
        if not (0 <= i < rows and 0 <= j < cols):
            return ""
        value = float(layer.data[i, j])
        if view in ("layer_distances", "cka"):
            names = entry.analysis.layers
            matrix_key = layer.metadata["topolens"].get("kind", view)
            full = float(np.asarray(entry.analysis.layer_distances[matrix_key])[i, j])
            what = "linear CKA" if view == "cka" else f"{matrix_key.replace('_', ' ')} distance"
            return f"{what} {i + 1} {names[i]} vs {j + 1} {names[j]}: {full!r}"
        if view == "dendrogram_heatmap":
            return f"distance between dendrogram points {i} and {j}: {value:.6g}"
        if view == "color_key":
            return f"colour key, {layer.metadata['topolens'].get('title', '')}: {value:.4g}"
        return ""
    value = layer.get_value(position, world=True)
    index = value[0] if isinstance(value, tuple) else value
    if index is None or not 0 <= int(index) < len(layer.features):
        return ""
    row = layer.features.iloc[int(index)]
    if view == "mapper_nodes":
        text = (
            f"node {int(row['node'])} ({row['node_id']}): {vd.plural(int(row['size']), 'member')}, "
            f"dominant class {row['dominant_class']}, purity {float(row['purity']):.3f}, "
            f"lens {float(row['mean_lens']):.4g}, component {int(row['component'])}"
        )
        if "predicted_class" in row:
            text += (
                f", predicted {row['predicted_class']}, correct {float(row['correct_share']):.0%}"
            )
        return text
    if view == "drift_points":
        accuracy = (
            f"accuracy {_percent(row['accuracy_base'])} → {_percent(row['accuracy_variant'])}"
        )
        return (
            f"{row['variant']} at {row['layer']}: SW H1 distance {float(row['distance']):.4g} "
            f"(relative {float(row['relative']):.3g}), bottleneck H1 "
            f"{float(row['bottleneck']):.4g}, moved {_percent(row['moved'])}; {accuracy}"
            " · click: compare this variant at this layer"
        )
    if view == "mapper_edges":
        return (
            f"edge {int(row['source'])}–{int(row['target'])}: Jaccard {float(row['jaccard']):.3f}"
        )
    if view in ("diagram", "barcode"):
        return (
            f"H{int(row['dim'])} bar {int(row['bar'])}: birth {float(row['birth']):.6g}, "
            f"death {float(row['death']):.6g}, persistence {float(row['persistence']):.6g}"
        )
    if view == "flow":
        return (
            f"stage {int(row['stage'])} cluster {int(row['cluster'])} → "
            f"stage {int(row['stage']) + 1} cluster {int(row['next_cluster'])}: "
            f"{vd.plural(int(row['count']), 'point')}"
        )
    if view == "flow_clusters":
        return (
            f"stage {int(row['stage'])} ({row['stage_name']}) cluster {int(row['cluster'])}: "
            f"{vd.plural(int(row['count']), 'point')}"
        )
    if view == "blob_points":
        return (
            f"point {int(row['point'])} of image {int(row['image'])}: class "
            f"{row['class_name']}, cluster {int(row['cluster'])}"
        )
    if view == "blob_hulls":
        return f"best-stage cluster {int(row['cluster'])}"
    if view == "dendrogram_tree":
        return (
            f"merge {int(row['merge'])} at height {float(row['height']):.6g}: "
            f"{vd.plural(int(row['size']), 'point')}"
        )
    return ""


def insert_unselected(layers: Any, index: int, layer: Any) -> None:
    """Insert a view layer into the canvas's layer list, leaving no layer selected.

    No active layer: napari's layer key bindings (Delete, modes) then have no target.
    napari makes an inserted layer the active one and the canvas clears that again:
    each change of the active layer is a pass of napari's over every canvas layer (their
    highlights redone; 30-80 ms with two analyses' views made), twice per layer added.
    With nothing selected before, the selection's events are held back for both
    (:func:`.layer_update.insert_quietly`).
    """
    selection = layers.selection
    if len(selection) or selection.active is not None:
        layers.insert(index, layer)
        selection.clear()
        return
    insert_quietly(layers, index, layer, None)


def _percent(value: Any) -> str:
    value = float(value)
    return "n/a" if not np.isfinite(value) else f"{100 * value:.1f} %"


def _quiet_qt_viewer(qt_viewer_class: Any, model: Any) -> Any:
    """``qt_viewer_class(model)`` without telling every welcome screen about its shortcuts.

    A new napari ``QtViewer`` unbinds and binds again every shortcut of napari's
    settings, and each change is announced (``action_manager.events.shortcut_changed``)
    to every welcome screen and button tooltip of the application: some 180
    announcements times every napari canvas open, 60-70 % of making the canvas (more
    with every viewer and canvas). The keys bound afterwards are those of the
    settings, the ones the viewer's own window bound before: nothing those listeners
    show changes, so the announcements are held back while it is made.
    """
    from napari.utils.action_manager import action_manager

    with action_manager.events.shortcut_changed.blocker():
        return qt_viewer_class(model)


_CANVASES = PerViewer()
#: The wait between making a canvas and docking it (ms; ``make_canvas_in_turns``): long
#: enough for the event loop to turn in between (a 0 ms timer ran in the same turn).
DOCK_AFTER_MS = 50
#: What makes the explorer bar of a new canvas (one entry, set by ``ui.explorer_widget``
#: when it is imported: the explorer acts through the modules above this one).
_BAR_FACTORY: list[Callable[[Any], Any]] = []


def set_bar_factory(make: Callable[[Any], Any]) -> None:
    """Give the canvases an explorer bar: ``make(viewer)`` returns a magicgui widget."""
    _BAR_FACTORY[:] = [make]


def existing_canvas(viewer: Any) -> TopologyCanvas | None:
    """The topology canvas of ``viewer`` if it has one open.

    One whose Qt side went with its window (the viewer lives on until collected) is
    closed and forgotten here: what asks for it next (a ``viewer.close()`` removing the
    analyses) finds none, instead of its deleted widgets.
    """
    canvas = _CANVASES.get(viewer)
    if canvas is not None and not canvas.is_open():
        canvas.close_canvas()
        return None
    return canvas


def close_canvases() -> None:
    """Close every topology canvas (test teardown; a closing application)."""
    for canvas in list(_CANVASES.values()):
        canvas.close_canvas()


def _is_open(canvas: TopologyCanvas | None) -> bool:
    return canvas is not None and canvas.is_open()


def canvas_for(viewer: Any) -> TopologyCanvas:
    """The topology canvas of ``viewer``, made and docked on first use."""
    canvas = _CANVASES.get(viewer)
    if canvas is None:
        canvas = _new_canvas(viewer)
    if not canvas.docked:
        _dock(viewer, canvas)
    return canvas


def make_canvas_in_turns(
    viewer: Any,
    then: Callable[[TopologyCanvas], None],
    defer: Callable[[Callable[[], None]], None] | None = None,
    gone: Callable[[], None] | None = None,
) -> None:
    """The canvas of ``viewer`` made in this event-loop turn, docked in the next, then
    ``then(canvas)``; or ``gone()``, if given, when the canvas or the viewer's window is
    closed first. If it has one, ``then`` at once. ``defer(dock)``, if given, runs the
    docking turn when it sees fit (the reader's :func:`~napari_topolens.ui.io.after_open`:
    not inside napari's ``open``).

    Making it (its napari canvas, controls and explorer bar) and docking it (the main
    window laid out again, the first paint) each take a few hundred ms of the main
    thread with software OpenGL: one turn for both was a freeze while a run computed.
    ``canvas_for`` docks a canvas made but not docked yet at once.
    """
    from qtpy.QtCore import QTimer

    if window_closed(viewer):  # (a viewer closed while its file was read)
        if gone is not None:
            gone()
        return
    if _CANVASES.get(viewer) is not None:
        then(canvas_for(viewer))
        return
    canvas_ref = weakref.ref(_new_canvas(viewer))

    def dock() -> None:
        canvas = canvas_ref()
        if canvas is not None and canvas.is_open():
            canvas = canvas_for(viewer)
            if canvas.is_open():  # (not if its viewer was closed meanwhile)
                then(canvas)
                return
        if gone is not None:
            gone()

    QTimer.singleShot(DOCK_AFTER_MS, dock if defer is None else lambda: defer(dock))


def _new_canvas(viewer: Any) -> TopologyCanvas:
    canvas = TopologyCanvas(viewer)
    _CANVASES.set(viewer, canvas)
    return canvas


def _dock(viewer: Any, canvas: TopologyCanvas) -> None:
    canvas.docked = True
    if window_closed(viewer):  # its window takes no dock: the canvas goes (is_open False)
        canvas.close_canvas()
        return
    window = getattr(viewer, "window", None)
    if window is not None:
        # below the analysis dock, not tabbed with it: the form (a one-line summary
        # after Run, ``ui.analysis_widget``) and the views are seen together; the
        # explorer's controls are a bar inside this dock
        dock = window.add_dock_widget(canvas, name="Topology views", area="right", tabify=False)
        dock.raise_()
    # its text's glyphs drawn while it is empty (the run computes, the file is read)
    canvas_ref = weakref.ref(canvas)  # the warmer keeps nothing of a closed canvas alive
    warm_glyphs(canvas.model, lambda: _is_open(canvas_ref()))
