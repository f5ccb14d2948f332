"""Dock widget: explore an analysis already shown in the viewer.

Pick the analysis and the network layer whose views are shown, colour the
Mapper nodes by a node feature, hide weak edges with a Jaccard threshold, and
search a class to fade every node it does not dominate. Every control calls one
function of ``ui.views`` on the main thread; nothing here computes topology. The
colour, edge and class controls are instant; a layer switch updates a dozen
layers (0.5-1 s in all), so it runs one layer per event-loop turn
(``views.show_analysis_incrementally``) and the viewer stays responsive. The
quality numbers of the shown layer are listed below the controls.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FloatSlider, Label, LineEdit
from qtpy.QtWidgets import QSizePolicy

from ..errors import TopoLensError
from .widget_parts import report_error

if TYPE_CHECKING:
    import napari

__all__ = ["COLOR_BY_LABELS", "ExplorerWidget", "resolve_class"]

#: Readable names of the node colourings (``views.COLOR_BY``).
COLOR_BY_LABELS: dict[str, str] = {
    "dominant_class": "dominant class",
    "purity": "purity",
    "mean_lens": "lens (mean)",
    "size": "size (log)",
    "component": "component",
    "community": "community (Louvain)",
}


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
    """Controls for an analysis shown by ``views.show_analysis`` (or read from a file)."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        from .views import COLOR_BY

        super().__init__(labels=False)
        self._viewer = napari_viewer
        self._updating = False
        self._known_keys: set[str] = set()
        #: The running (or last) layer switch, a ``views.IncrementalShow``; None before the first.
        self.pending_show: Any = None
        self._pending_key: str | None = None
        self._pending_layer: str | None = None
        self.analysis_key = ComboBox(label="Analysis", choices=self._key_choices, nullable=True)
        self.layer = ComboBox(
            label="Network layer",
            choices=self._layer_choices,
            nullable=True,
            tooltip="The analysed layer whose views are shown",
        )
        self.color_by = ComboBox(
            label="Colour by",
            choices=[(COLOR_BY_LABELS.get(name, name), name) for name in COLOR_BY],
            value="dominant_class",
            tooltip="Node colour: dominant class, purity (share of the dominant class), mean lens value, ...",
        )
        self.edge_threshold = FloatSlider(
            label="Edge threshold",
            min=0.0,
            max=1.0,
            step=0.01,
            value=0.0,
            tracking=False,
            tooltip="Hide Mapper edges whose Jaccard overlap |A∩B|/|A∪B| is below this "
            "(applied when the slider is released: rebuilding the edges is not free)",
        )
        self.class_search = LineEdit(
            label="Find class",
            tooltip="Type a class name (or its start): other nodes fade; empty: none fade",
        )
        self.status = Label(value="")
        self.summary = Label(value="")
        for text in (self.status, self.summary):
            text.native.setWordWrap(True)
            text.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        controls = Container(
            widgets=[
                self.analysis_key,
                self.layer,
                self.color_by,
                self.edge_threshold,
                self.class_search,
            ],
            labels=True,
        )
        self.extend([controls, self.status, self.summary])
        self.native.layout().addStretch(1)
        self.min_width = 280

        self.analysis_key.changed.connect(self._on_key_changed)
        self.layer.changed.connect(self.show_layer)
        self.color_by.changed.connect(self.recolor)
        self.edge_threshold.changed.connect(self.threshold_edges)
        self.class_search.changed.connect(self.find_class)
        self._viewer.layers.events.inserted.connect(self._on_layers_changed)
        self._viewer.layers.events.removed.connect(self._on_layers_changed)
        self._on_layers_changed()

    # ---- what is shown ----------------------------------------------------------------
    def _links(self) -> Any:
        from .links import links_for

        return links_for(self._viewer)

    def _key_choices(self, _widget: Any = None) -> list[str]:
        from .views import find_layers

        keys: list[str] = []
        for layer in find_layers(self._viewer, view="mapper_nodes"):
            key = layer.metadata["topolens"].get("key")
            if key is not None and key not in keys:
                keys.append(key)
        return keys

    @property
    def analysis(self) -> Any:
        """The chosen :class:`Analysis`, or ``None``."""
        key = self.analysis_key.value
        if key is None:
            return None
        from .views import find_layers

        for layer in find_layers(self._viewer, key):
            found = layer.metadata["topolens"].get("analysis")
            if found is not None:
                return found
        return None

    def _layer_choices(self, _widget: Any = None) -> list[str]:
        analysis = self.analysis
        return [] if analysis is None else list(analysis.layers)

    def _shown_layer(self) -> str | None:
        from .views import find_layers

        key = self.analysis_key.value
        nodes = find_layers(self._viewer, key, "mapper_nodes") if key is not None else []
        return nodes[-1].metadata["topolens"].get("layer") if nodes else None

    def _nodes_meta(self) -> dict[str, Any]:
        from .views import find_layers

        key = self.analysis_key.value
        nodes = find_layers(self._viewer, key, "mapper_nodes") if key is not None else []
        return nodes[-1].metadata["topolens"] if nodes else {}

    def reset_choices(self, *_: Any) -> None:
        """napari calls this on docked magicgui widgets whenever layers change.

        The choices depend on each other (analysis -> its layers), and while
        ``show_analysis`` swaps layers they are briefly missing, so the reset is
        done once, in order, and not in the middle of our own update.
        """
        self._on_layers_changed()

    def _on_layers_changed(self, _event: Any = None) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            previous = self.analysis_key.value
            self.analysis_key.reset_choices()
            keys = [k for k in self.analysis_key.choices if k is not None]
            new = [k for k in keys if k not in self._known_keys]
            self._known_keys = set(keys)
            if new:
                self.analysis_key.value = new[-1]  # a new analysis: show its controls
            elif keys and previous not in keys:
                self.analysis_key.value = keys[-1]
            if not self._switching(self.analysis_key.value):
                # during our own switch the layers are half-way: the controls already
                # say what it shows, and its end syncs the summary
                self._sync_from_layers()
        finally:
            self._updating = False

    def _on_key_changed(self, _value: Any = None) -> None:
        was = self._updating
        self._updating = True
        try:
            self._sync_from_layers()
        finally:
            self._updating = was

    def _sync_from_layers(self) -> None:
        """Make the controls show the state of the chosen analysis's layers."""
        self.layer.reset_choices()
        meta = self._nodes_meta()
        shown = (
            self._pending_layer if self._switching(self.analysis_key.value) else meta.get("layer")
        )
        if shown is not None and shown in self.layer.choices:
            self.layer.value = shown
        if meta.get("color_by") in self.color_by.choices:
            self.color_by.value = meta["color_by"]
        from .views import find_layers

        key = self.analysis_key.value
        edges = find_layers(self._viewer, key, "mapper_edges") if key is not None else []
        if edges:
            self.edge_threshold.value = float(
                edges[-1].metadata["topolens"].get("edge_threshold", 0.0)
            )
        faded = meta.get("faded_class")
        self.class_search.value = "" if faded is None else str(faded)
        self._update_summary()

    # ---- actions ------------------------------------------------------------------------
    def _switching(self, key: str | None) -> bool:
        """Whether a layer switch of analysis ``key`` is still putting its layers in."""
        show = self.pending_show
        return key is not None and show is not None and not show.done and self._pending_key == key

    def show_layer(self, _value: Any = None) -> Any:
        """Show the views of the chosen network layer, one layer per event-loop turn.

        A switch still running is cancelled first (what it updated stays, and this
        show updates it again), so rapid switching ends on the last choice with
        every view showing it. Returns the running ``views.IncrementalShow`` (also
        :attr:`pending_show`), or None when there is nothing to switch.
        """
        from .views import recolor_nodes, set_edge_threshold, show_analysis_incrementally

        if self._updating:
            return None
        key, name, analysis = self.analysis_key.value, self.layer.value, self.analysis
        if key is None or name is None or analysis is None:
            return None
        if self._switching(key):  # the views are half-way: show `name` even if the nodes show it
            self.pending_show.cancel()
        elif name == self._shown_layer():
            return None  # (a switch of another analysis runs on: its views are its own)
        color_by, threshold = self.color_by.value, float(self.edge_threshold.value)

        def done(_layers: list[Any]) -> None:
            if self.analysis_key.value != key:
                return  # the user chose another analysis meanwhile; its controls are shown
            try:  # controls changed while the layers went in apply now
                if self.color_by.value != color_by:
                    recolor_nodes(self._viewer, key, self.color_by.value)
                if float(self.edge_threshold.value) != threshold:
                    set_edge_threshold(self._viewer, key, float(self.edge_threshold.value))
                self._apply_class(report=False)
            except TopoLensError as exc:
                report_error(exc, self.status)
            self._update_summary()

        self._pending_key, self._pending_layer = key, name
        self.pending_show = show_analysis_incrementally(
            self._viewer,
            analysis,
            name,
            image_layer=self._links().image_layer_of(key),
            color_by=color_by,
            edge_threshold=threshold,
            on_done=done,
            on_error=lambda exc: report_error(exc, self.status),
        )
        return self.pending_show

    def recolor(self, _value: Any = None) -> None:
        """Colour the nodes by the chosen feature (keeps a class search applied)."""
        from .views import recolor_nodes

        if (
            self._updating
            or self.analysis_key.value is None
            or self._switching(self.analysis_key.value)
        ):
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
        from .views import set_edge_threshold

        if (
            self._updating
            or self.analysis_key.value is None
            or self._switching(self.analysis_key.value)
        ):
            return  # during a switch: its end applies the chosen threshold
        try:
            set_edge_threshold(
                self._viewer, self.analysis_key.value, float(self.edge_threshold.value)
            )
        except TopoLensError as exc:
            report_error(exc, self.status)
            return
        self._update_summary()

    def find_class(self, _value: Any = None) -> str | None:
        """Fade the nodes not dominated by the searched class; returns the class found."""
        if self._updating or self.analysis_key.value is None:
            return None
        return self._apply_class(report=True)

    def _apply_class(self, report: bool) -> str | None:
        from .views import highlight_class

        analysis = self.analysis
        if analysis is None:
            return None
        try:
            name = resolve_class(self.class_search.value, analysis.class_names)
        except TopoLensError as exc:
            if report:
                self.status.value = f"{exc}"
            name = None
        highlight_class(self._viewer, self.analysis_key.value, name)
        if report:
            self._update_summary(found=name)
        return name

    # ---- text -----------------------------------------------------------------------------
    def _update_summary(self, found: str | None = None) -> None:
        analysis, name = self.analysis, self._shown_layer()
        if analysis is None or name is None or name not in analysis:
            self.summary.value = "Run an analysis (or open a saved one) to explore it here."
            return
        result = analysis[name]
        graph = result.mapper
        from .views import find_layers

        key = self.analysis_key.value
        edges = find_layers(self._viewer, key, "mapper_edges")
        shown_edges = len(edges[-1].data) if edges else 0
        quality = result.quality

        def number(value: float) -> str:
            return (
                "n/a"
                if value is None or (isinstance(value, float) and math.isnan(value))
                else f"{value:.2f}"
            )

        self.summary.value = (
            f"{name}: {len(graph.node_ids)} nodes, {shown_edges} of {len(graph.edges)} edges shown; "
            f"{len(result.cloud)} points. Best H0 clusters vs labels: purity {number(quality.purity)}, "
            f"ARI {number(quality.ari)}, NMI {number(quality.nmi)}, silhouette {number(quality.silhouette)}; "
            f"PH dim {number(float(result.phdim.dimension))}."
        )
        if found is not None:
            nodes = find_layers(self._viewer, key, "mapper_nodes")
            if nodes:
                kept = int((nodes[-1].features["dominant_class"].astype(str) == found).sum())
                self.status.value = f"Class {found!r}: {kept} of {len(nodes[-1].features)} nodes kept, the others faded."
        elif self.class_search.value.strip() == "" and self.status.value.startswith("Class "):
            self.status.value = ""
