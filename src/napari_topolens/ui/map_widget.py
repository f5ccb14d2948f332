"""Dock widget: the topology map of the image on screen, and pixel-level drift of a variant.

A thin form over ``ui.topology_maps``: choose a shown analysis, tick "Map overlay"
(each pixel coloured by the Mapper node of its position, updated as the slider
moves), and, for an analysis with perturbed variants, map the variant's image in
the base's graph beside the base's map with the changed pixels marked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton
from qtpy.QtWidgets import QSizePolicy

from ..errors import TopoLensError
from .state import state_for
from .topology_maps import maps_for
from .variants import variant_views_for
from .widget_parts import qt_alive, report_error

if TYPE_CHECKING:
    import napari

__all__ = ["MapWidget"]


class MapWidget(Container):
    """Map overlay on/off per shown analysis; pixel drift of a perturbed variant."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._state = state_for(napari_viewer)
        self.maps = maps_for(napari_viewer)
        self.analysis_key = ComboBox(
            label="Analysis", choices=self._key_choices, nullable=True, tooltip="A shown analysis"
        )
        self.overlay = CheckBox(
            text="Map overlay",
            value=True,
            tooltip="Colour every pixel of the image on screen by the Mapper node of its "
            "position (nearest receptive-field centre); hover for the node and its class",
        )
        self.variant = ComboBox(
            label="Variant",
            choices=self._variant_choices,
            nullable=True,
            tooltip="A perturbed variant: its image placed in the base's graph",
        )
        self.drift_button = PushButton(
            text="Pixel drift",
            tooltip="The image on screen: base map | variant map in the base's graph | the "
            "positions whose node changed",
        )
        self.rank_button = PushButton(
            text="Rank by changed pixels",
            tooltip="Map every analysed image, as it is and perturbed, in the base's graph "
            "(in the background); the views' most-moved list then ranks the images by the "
            "share of their positions whose node changed",
        )
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        # its width follows the dock (a long message wraps instead of widening the dock)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.extend(
            [
                self.analysis_key,
                # rows of two: the map dock must not make the window taller than a laptop
                # screen (1280 x 800) beside the analysis and views docks
                _row(self.overlay, self.variant, labels=True),
                _row(self.drift_button, self.rank_button),
                self.status,
            ]
        )
        self.overlay.changed.connect(self._apply)
        self.analysis_key.changed.connect(self._apply)
        self.drift_button.changed.connect(self.show_drift)
        self.rank_button.changed.connect(self.rank_by_pixels)
        self.maps.listeners.append(self._on_message)
        self._state.shown.connect(self._on_shown)
        self._state.removed.connect(self._on_removed)
        self._refresh()
        choices = self._key_choices()
        if choices:  # docked after a run: map the analysis on screen
            self.analysis_key.value = choices[-1]
        self._apply()

    def _on_message(self, text: str) -> None:
        try:
            self.status.value = text
        except RuntimeError:  # the widget was closed
            self.maps.listeners.remove(self._on_message)

    def _key_choices(self, _widget: Any = None) -> list[str]:
        return [e.key for e in self._state if e.variant_of is None and e.image_layer is not None]

    def _variant_choices(self, _widget: Any = None) -> list[str]:
        key = getattr(getattr(self, "analysis_key", None), "value", None)
        bv = variant_views_for(self._viewer).bases.get(key) if key else None
        return list(bv.image_layers) if bv is not None else []

    def _on_removed(self, _key: str) -> None:
        if qt_alive(self):
            self._refresh()

    def _refresh(self) -> None:
        self.analysis_key.reset_choices()
        self.variant.reset_choices()

    def _on_shown(self, key: str) -> None:
        if not qt_alive(self):  # closed with its window: the state outlives it
            return
        self._refresh()
        if self.analysis_key.value is None and key in self._key_choices():
            self.analysis_key.value = key
        self._apply()

    def _apply(self, _value: Any = None) -> None:
        """Overlay on for the chosen analysis (off for the others), or off."""
        self.variant.reset_choices()
        key = self.analysis_key.value
        try:
            for other in list(self.maps.shown):
                if other != key or not self.overlay.value:
                    self.maps.show_map(other, on=False)
            if key is not None and self.overlay.value:
                self.maps.show_map(key)
                self.status.value = self.maps.message or "Mapping the image on screen..."
        except TopoLensError as exc:
            report_error(exc, self.status)

    def show_drift(self, _value: Any = None) -> Any:
        """Base map, variant map and changed pixels of the image on screen."""
        key, variant = self.analysis_key.value, self.variant.value
        try:
            if key is None or variant is None:
                raise TopoLensError("choose an analysis and one of its perturbed variants")
            drift = self.maps.show_drift(key, variant)
        except TopoLensError as exc:
            report_error(exc, self.status)
            return None
        self.status.value = self.maps.message
        return drift

    def rank_by_pixels(self, _value: Any = None) -> Any:
        """Rank the analysed images by changed pixels under the chosen variant (a worker)."""
        key, variant = self.analysis_key.value, self.variant.value
        try:
            if key is None or variant is None:
                raise TopoLensError("choose an analysis and one of its perturbed variants")
            return self.maps.rank_by_pixel_drift(key, variant)
        except TopoLensError as exc:
            report_error(exc, self.status)
            return None


def _row(*widgets: Any, labels: bool = False) -> Container:
    """Widgets side by side, without the margins a nested container adds."""
    row = Container(layout="horizontal", widgets=list(widgets), labels=labels)
    row.margins = (0, 0, 0, 0)
    return row
