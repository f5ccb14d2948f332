"""Variants of an analysis in the views: side by side with the base, linked, drift, most moved.

A base :class:`~napari_topolens.topology.analysis.Analysis` whose ``variants``
hold perturbed image sets or compressed models (``napari_topolens.run_variants``) is
shown by :func:`show_variants` (at once) or :func:`show_variants_incrementally`
(one layer per event-loop turn), after the base itself is shown:

- each perturbed image set becomes an image layer ``<key> · <variant>`` to the
  right of the base's images (same scale and contrast; spaced so that the
  galleries below never overlap);
- one variant at a time (the *compared* one, picked in the canvas's "Compare
  with" combo, by a click on another variant's image, or on a point of the drift
  plot) sits in the next slot of the topology canvas, drawn in the base's layout
  (``layout.drift.variant_layout``): a node whose image set did not change stays
  where the base's is, so a moved image visibly jumps;
- it follows the base: network layer, node colouring, edge threshold and class
  fading;
- a selection in the base rings (white) every item of the variant's views
  holding one of the selected images, and the other way round; a pixel click on
  the base's images rings the same pixel's items in a perturbed variant, and the
  other way round;
- the canvas's "drift (variants)" view plots, per network layer, the relative
  H1 sliced-Wasserstein distance and the moved fraction of each variant; under
  the canvas, the compared variant's most-moved images are one click away.

Removing the base removes its variants' views and image layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from ..errors import EmptySelectionError, TopoLensError
from ..layout.drift import variant_layout
from ..robustness.comparison import receptive_field_heat
from ..topology.results import Analysis, Variant
from . import view_data as vd
from .canvas import canvas_for
from .edits import highlight_class, recolor_nodes, set_edge_threshold
from .image_pixels import on_click_without_drag, pixel_at, pixel_press
from .layer_update import create_layer, update_layer
from .links import links_for
from .selection_members import csr_items_containing
from .show import (
    IncrementalShow,
    Offload,
    add_to_viewer_steps,
    offloaded,
    remove_analysis,
    show_analysis,
    show_steps,
)
from .state import PerViewer, ShownAnalyses, ShownAnalysis, state_for, viewer_ref

__all__ = [
    "BaseVariants",
    "VariantViews",
    "show_variants",
    "show_variants_incrementally",
    "variant_views_for",
    "watch_variants",
]

#: Most-moved images listed under the canvas.
MOVED_LISTED = 8


#: Which variant of a base to compare: None (the first), a name, an index or the ``Variant``.
VariantChoice: TypeAlias = "Variant | str | int | np.integer | None"


@dataclass
class BaseVariants:
    """The variants of one shown base analysis: their image layers and the compared one.

    Which variant is compared is read from ``ui.state`` (the shown analysis whose
    ``variant_of`` is the base), or, while its show runs, is the one being shown.
    """

    key: str
    base: Analysis
    state: ShownAnalyses = field(repr=False)
    image_layers: dict[str, Any] = field(default_factory=dict)
    #: The names above the images (base and each perturbed set).
    labels_layer: Any = None
    #: The variant whose show beside the base runs now, if any.
    showing: str | None = None

    @property
    def compared(self) -> str | None:
        """The name of the variant beside the base (being shown, or shown), or None."""
        if self.showing is not None:
            return self.showing
        entry = self.state.variant_beside(self.key)
        if entry is None:
            return None
        names = (v.name for v in self.base.variants if v.analysis is entry.analysis)
        return next(names, None)

    def variant(self, name: str) -> Variant:
        for variant in self.base.variants:
            if variant.name == name:
                return variant
        raise TopoLensError(
            f"no variant {name!r}; variants: {', '.join(v.name for v in self.base.variants)}"
        )

    def key_of(self, name: str) -> str:
        """The key of a variant's shown analysis."""
        return f"{self.key} · {name}"

    @property
    def compared_key(self) -> str | None:
        return None if self.compared is None else self.key_of(self.compared)


def _pick(base: Analysis, which: VariantChoice) -> Variant:
    """The variant of ``base`` meant by ``which`` (None: the first; a name, index or Variant)."""
    variants = list(getattr(base, "variants", None) or [])
    if not variants:
        raise EmptySelectionError(
            "this analysis has no variants; run it with perturbations or compressions "
            "(napari_topolens.run_variants) to compare"
        )
    if which is None:
        return variants[0]
    if isinstance(which, (int, np.integer)) and not isinstance(which, bool):
        if not 0 <= int(which) < len(variants):
            raise TopoLensError(f"variant number {which} is not in 0..{len(variants) - 1}")
        return variants[int(which)]
    for variant in variants:
        if variant is which or variant.name == str(which):
            return variant
    raise TopoLensError(f"no variant {which!r}; variants: {', '.join(v.name for v in variants)}")


def _as_stack(images: Any, like: Any) -> np.ndarray:
    """Variant images laid out like the base's image layer data (channels last, no 1-channel)."""
    array = np.asarray(images)
    target = tuple(like.data.shape)
    if array.shape == target:
        return array
    if array.ndim == 4 and array.shape[1] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 1, -1)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == len(target) + 1 and array.shape[0] == 1:
        array = array[0]  # a single-image layer: its variant is one image too, not a stack
    return array


def variant_images_layer_data(
    bv: BaseVariants, variant: Variant, base_layer: Any, number: int
) -> vd.LayerDataTuple:
    """A perturbed image set as a layer to the right of the base's images, styled like them.

    ``number`` (1, 2, ...) says where in the strip (the galleries lie below it:
    the variant's right of the base's, see ``view_data.variant_gallery_geometry``).
    """
    geometry = vd.ImageGeometry.of_layer(base_layer)
    pitch = 1.15 * geometry.width
    translate = [float(v) for v in base_layer.translate]
    translate[-1] += number * pitch
    rgb = bool(getattr(base_layer, "rgb", False))
    kwargs: dict[str, Any] = {
        "name": f"{bv.key} · {variant.name}",
        "scale": tuple(float(v) for v in base_layer.scale),
        "translate": tuple(translate),
        "rgb": rgb,
        "contrast_limits": tuple(float(v) for v in base_layer.contrast_limits),
        "gamma": float(base_layer.gamma),
        "metadata": vd.topolens_meta(
            "variant_images", bv.key, "", analysis=bv.base, variant=str(variant.name)
        ),
    }
    if not rgb:
        kwargs["colormap"] = base_layer.colormap
    return (_as_stack(variant.analysis.images, base_layer), kwargs, "image")


_CONTROLLERS = PerViewer()


def variant_views_for(viewer: Any) -> VariantViews:
    """The variants controller of ``viewer``, made on first use."""
    return _CONTROLLERS.setdefault(viewer, VariantViews)


_WATCHED = PerViewer()


def watch_variants(viewer: Any) -> None:
    """Show the variants of analyses the reader opens (their images layer asks for it).

    Once per viewer; the controller (and the canvas) are made only when such an
    analysis is shown.
    """
    if _WATCHED.get(viewer) is not None:
        return
    _WATCHED.set(viewer, True)
    ref = viewer_ref(viewer)

    def shown(key: str) -> None:
        v = ref()
        if v is not None and _reader_settings(state_for(v), key) is not None:
            variant_views_for(v).show_read(key)

    state_for(viewer).shown.connect(shown)


def _reader_settings(state: ShownAnalyses, key: str) -> dict[str, Any] | None:
    """How the reader asks to show ``key``'s variants (its images layer's saved settings),
    or None: not the reader's analysis, no variants asked, or asked and answered."""
    if key not in state:
        return None
    entry = state.get(key)
    layer = entry.image_layer
    meta = layer.metadata.get("topolens") if layer is not None else None
    if entry.reader_variants_answered or not isinstance(meta, dict):
        return None
    settings = meta.get("show")
    if meta.get("analysis") is not entry.analysis or not isinstance(settings, dict):
        return None
    return settings if settings.get("variants") else None


class VariantViews:
    """Variants beside their base in one viewer (see the module docstring).

    Attributes
    ----------
    bases : dict of str to BaseVariants
        Per shown base key with variants.
    current : str or None
        The base whose variants the canvas's combo and most-moved list show.
    pending : IncrementalShow or None
        The running (or last) incremental variant show.
    """

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer_ref(viewer)
        self.state = state_for(viewer)
        self.canvas = canvas_for(viewer)
        self.links = links_for(viewer)
        self.bases: dict[str, BaseVariants] = {}
        self.current: str | None = None
        self.pending: IncrementalShow | None = None
        #: Per (base key, variant name): images ranked by the share of their positions
        #: whose node changed (``ui.topology_maps``); the most-moved list then lists these.
        self.pixel_ranked: dict[tuple[str, str], list[tuple[str, int, float]]] = {}
        self._linking = False  # our own selections: no link back
        self._follow_at_once = 0  # follow the base at once (inside our own switches)
        self._no_follow = False
        self.state.changed.connect(self._on_changed)
        self.state.removed.connect(self._on_removed)
        self.state.selection_changed.connect(self._on_selection)
        self.canvas.compare_picked.connect(self._on_compare_chosen)
        self.canvas.moved_picked.connect(self._on_moved_chosen)
        self.links.item_picked.connect(self._on_item_picked)
        viewer.mouse_drag_callbacks.append(self._on_image_mouse)

    @property
    def viewer(self) -> Any:
        viewer = self._viewer()
        if viewer is None:
            raise TopoLensError("the viewer of these variants was closed")
        return viewer

    # ------------------------------------------------------------------ lookup
    def of_base(self, base: Analysis) -> BaseVariants:
        """The record of a shown base analysis (made on first use)."""
        key = self.state.key_of(base)
        if key is None:
            raise TopoLensError(
                "show the base analysis first (views.show_analysis), then its variants"
            )
        bv = self.bases.get(key)
        if bv is None or bv.base is not base:
            bv = self.bases[key] = BaseVariants(key, base, self.state)
        return bv

    def pair_of(self, key: str) -> tuple[BaseVariants, str] | None:
        """For a shown base or compared variant key: its base record and the other key."""
        bv = self.bases.get(key)
        if bv is not None and bv.compared_key in self.state:
            return bv, str(bv.compared_key)
        for bv in self.bases.values():
            if bv.compared_key == key and bv.key in self.state:
                return bv, bv.key
        return None

    def compared_entry(self, base_key: str) -> ShownAnalysis | None:
        bv = self.bases.get(base_key)
        key = None if bv is None else bv.compared_key
        return self.state.get(key) if key is not None and key in self.state else None

    # ------------------------------------------------------------------ showing
    def steps(
        self,
        base: Analysis,
        which: VariantChoice,
        added: list[tuple[Any, Any]],
        shown: list[Any],
        *,
        layer: str | None = None,
    ) -> Generator[Offload | None, Any, ShownAnalysis]:
        """Variant image layers, then the compared variant beside the base (a show's steps)."""
        variant = _pick(base, which)
        bv = self.of_base(base)
        base_entry = self.state.get(bv.key)
        yield from self._image_layer_steps(bv, base_entry.image_layer, added, shown)
        reuse = yield from self._take_over_steps(bv, variant.name)
        bv.showing = variant.name
        self.current = bv.key
        try:
            entry = yield from self._beside_base_steps(bv, variant, layer, reuse, added, shown)
        finally:
            bv.showing = None
        yield None  # (the show's end framed and drew the canvas: the rest in turns of their own)
        if base_entry.faded_class is not None:
            with contextlib.suppress(TopoLensError):  # a class it lacks: nothing to fade
                highlight_class(self.viewer, entry.key, base_entry.faded_class)
        self._link_selection(bv.key)
        yield None
        self.update_controls()  # (a list shown above the canvas resizes and redraws it)
        self.canvas.update_legend()
        return entry

    def _image_layer_steps(
        self, bv: BaseVariants, base_layer: Any, added: list[tuple[Any, Any]], shown: list[Any]
    ) -> Generator[Offload | None, Any, None]:
        """Each perturbed image set as an image layer right of the base's, named above:
        the layers made in a worker, one added per turn."""
        viewer = self.viewer
        if base_layer is None or base_layer not in viewer.layers:
            return
        active = viewer.layers.selection.active
        number = 0
        for other in bv.base.variants:
            if other.analysis.images is None:
                continue  # a compressed model sees the base's images
            number += 1
            known = bv.image_layers.get(other.name)
            if known is not None and known in viewer.layers:
                continue
            item = variant_images_layer_data(bv, other, base_layer, number)
            made = yield from offloaded(create_layer, item)
            if base_layer not in viewer.layers:
                return  # removed meanwhile
            bv.image_layers[other.name] = made
            yield from add_to_viewer_steps(viewer, made, added, shown)
        if number:
            yield from self._label_images_steps(bv, base_layer, added)
        if active is not None and active in viewer.layers:
            viewer.layers.selection.active = active  # napari activates each added layer

    def _take_over_steps(self, bv: BaseVariants, name: str) -> Generator[None, Any, dict[str, Any]]:
        """The layers of the variant compared now, when another is to be: the new one
        takes them over, in place (fast); the old one stops being shown."""
        old = bv.compared_key
        if old is None or bv.compared == name or old not in self.state:
            return {}
        self.links.clear_selection(old)  # quietly: no selection travels with the layers
        reuse = dict(self.state.get(old).layers)
        self.state.get(old).layers.clear()
        for taken in reuse.values():
            # napari re-slices a hidden Points layer with its old point indices when
            # its points change in place; shown while updated (the end of the show
            # hides those of other views again)
            if taken in self.canvas.model.layers and not taken.visible:
                taken.visible = True
        remove_analysis(self.viewer, old)
        yield None
        return reuse

    def _beside_base_steps(
        self,
        bv: BaseVariants,
        variant: Variant,
        layer: str | None,
        reuse: dict[str, Any],
        added: list[tuple[Any, Any]],
        shown: list[Any],
    ) -> Generator[Offload | None, Any, ShownAnalysis]:
        """Show the variant in the next slot, in the base's layout, with its settings."""
        viewer = self.viewer
        base_entry = self.state.get(bv.key)
        base_layer = base_entry.image_layer
        if base_layer is not None and base_layer not in viewer.layers:
            base_layer = None
        name = layer or base_entry.network_layer or bv.base.layers[-1]
        image_layer = (
            bv.image_layers.get(variant.name) if variant.analysis.images is not None else base_layer
        )
        if image_layer is not None and image_layer not in viewer.layers:
            image_layer = None
        color_by = base_entry.color_by
        if color_by in vd.NEEDS_PREDICTIONS and vd.analysis_predictions(variant.analysis) is None:
            color_by = "dominant_class"
        base_layout = yield from offloaded(base_entry.layout, name)
        layout, _paired = yield from offloaded(  # pairs nodes (Hungarian): off the main thread
            variant_layout, bv.base[name], base_layout, variant.analysis[name]
        )
        entry = yield from show_steps(
            viewer,
            variant.analysis,
            name,
            image_layer,
            color_by,
            base_entry.edge_threshold,
            {name: layout},
            added,
            shown,
            bv.key_of(variant.name),
            variant_of=bv.key,
            reuse=reuse,
        )
        entry.layouts[name] = layout  # (the saved layout of the variant would not match)
        return entry

    def _label_images_steps(
        self, bv: BaseVariants, base_layer: Any, added: list
    ) -> Generator[Offload | None, Any, None]:
        """Name the base's images and each perturbed set above them (a new layer of
        names made in a worker, added in a turn of its own)."""
        viewer = self.viewer
        names, boxes = ["base"], []
        layers = [base_layer]
        for name, layer in bv.image_layers.items():
            if layer in viewer.layers:
                names.append(name)
                layers.append(layer)
        for layer in layers:
            g = vd.ImageGeometry.of_layer(layer)
            boxes.append((g.origin[0], g.origin[1], g.origin[0] + g.height, g.origin[1] + g.width))
        item = vd.variant_labels_layer_data(bv.key, names, boxes)
        if bv.labels_layer is not None and bv.labels_layer in viewer.layers:
            update_layer(bv.labels_layer, item)
            return
        made = yield from offloaded(create_layer, item)
        if bv.labels_layer is not None and bv.labels_layer in viewer.layers:
            return  # (named meanwhile)
        bv.labels_layer = made
        yield from add_to_viewer_steps(viewer, made, added)

    def show(
        self, base: Analysis, which: VariantChoice = None, *, layer: str | None = None
    ) -> list[Any]:
        """:func:`show_variants` at once; returns the layers added or updated."""
        if self.pending is not None and not self.pending.done:
            self.pending.cancel()
        shown: list[Any] = []
        self._follow_at_once += 1
        try:
            for _ in self.steps(base, which, [], shown, layer=layer):
                pass
        finally:
            self._follow_at_once -= 1
        return shown

    def show_incrementally(
        self,
        base: Analysis,
        which: VariantChoice = None,
        *,
        layer: str | None = None,
        on_done: Callable[[list[Any]], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> IncrementalShow:
        """:func:`show_variants_incrementally`; cancels a variant show still running."""
        if self.pending is not None and not self.pending.done:
            self.pending.cancel()
        variant = _pick(base, which)
        self.of_base(base)  # refuses a base not shown, here and not in a later turn

        def steps(
            added: list[tuple[Any, Any]], shown: list[Any]
        ) -> Generator[Offload | None, Any, ShownAnalysis]:
            return self.steps(base, variant, added, shown, layer=layer)

        self.pending = IncrementalShow(
            self.viewer, variant.analysis, steps=steps, on_done=on_done, on_error=on_error
        ).start()
        return self.pending

    # ------------------------------------------------------------------ following the base
    def _on_changed(self, key: str, what: str) -> None:
        bv = self.bases.get(key)
        compared = None if bv is None else bv.compared
        if bv is None or compared is None or self._no_follow:
            return
        if what == "network_layer":
            # a switch made one layer per turn (the explorer's) is followed the same way;
            # one made at once (a script, our own switches) at once
            stepping = any(not show.done for show in IncrementalShow.running())
            if self._follow_at_once or not stepping:
                self.show(bv.base, compared)
            else:
                self.show_incrementally(bv.base, compared)
            return
        variant_key = bv.key_of(compared)
        if variant_key not in self.state or not self.state.get(variant_key).network_layer:
            return  # being shown: its show takes the base's settings
        self._follow_setting(self.state.get(key), variant_key, what)

    def _follow_setting(self, base_entry: ShownAnalysis, variant_key: str, what: str) -> None:
        """The variant takes the base's new colouring, edge threshold or class fading."""
        try:
            if what == "color_by":
                recolor_nodes(self.viewer, variant_key, base_entry.color_by)
            elif what == "edge_threshold":
                set_edge_threshold(self.viewer, variant_key, base_entry.edge_threshold)
            elif what == "faded_class":
                highlight_class(self.viewer, variant_key, base_entry.faded_class)
        except TopoLensError:
            pass  # e.g. a colouring the variant cannot take (no predictions): it keeps its own

    def _on_removed(self, key: str) -> None:
        for ranked in [k for k in self.pixel_ranked if k[0] == key]:
            del self.pixel_ranked[ranked]
        bv = self.bases.pop(key, None)
        viewer = self._viewer()
        if bv is not None:  # the base went: its variants go too
            if viewer is not None:
                if bv.compared_key is not None and bv.compared_key in self.state:
                    remove_analysis(viewer, bv.compared_key)
                for layer in [*bv.image_layers.values(), bv.labels_layer]:
                    if layer is not None and layer in viewer.layers:
                        viewer.layers.remove(layer)
            if self.current == key:
                self.current = next(iter(self.bases), None)
        if viewer is not None:
            self.update_controls()

    def show_read(self, key: str) -> None:
        """A base opened by the reader asks for its variants (once; its images layer says so)."""
        settings = _reader_settings(self.state, key) or {}
        entry = self.state.get(key)
        entry.reader_variants_answered = True
        if not vd.has_variants(entry.analysis):
            return
        names = [v.name for v in entry.analysis.variants]
        compare = settings.get("compare")
        self.show_incrementally(entry.analysis, compare if compare in names else None)

    # ------------------------------------------------------------------ links
    def _images_selected(self, key: str) -> np.ndarray:
        entry = self.state.get(key)
        members = entry.selection.members
        if not len(members) or not entry.network_layer:
            return np.zeros(0, np.int64)
        return np.unique(np.asarray(entry.result.cloud.image_index)[members]).astype(np.int64)

    def _on_selection(self, key: str) -> None:
        if self._linking:
            return
        pair = self.pair_of(key)
        if pair is None:
            return
        _bv, other = pair
        if not self.state.get(other).network_layer:
            return
        images = self._images_selected(key)
        if not len(images) and not self.state.get(other).linked:
            return  # nothing of this link to clear (the other's own selection stays)
        self._linking = True
        try:
            self.links.ring_images(other, images)  # (no images: the link is gone)
        finally:
            self._linking = False

    def _link_selection(self, base_key: str) -> None:
        """After a variant is (re)drawn: ring the base's selected images in it."""
        pair = self.pair_of(base_key)
        if pair is None:
            return
        images = self._images_selected(base_key)
        if len(images):
            self._linking = True
            try:
                self.links.ring_images(pair[1], images)
            finally:
                self._linking = False

    def variant_layer_at(self, position: Any) -> tuple[BaseVariants, str, Any] | None:
        """(base record, variant name, layer) of a variant image layer under a world position."""
        position = tuple(float(p) for p in position)
        for bv in self.bases.values():
            for name, layer in bv.image_layers.items():
                on = layer in self.viewer.layers and layer.visible
                if on and pixel_at(layer, position) is not None:
                    return bv, name, layer
        return None

    def click_at(self, position: Any) -> dict[str, Any] | None:
        """After the links' own pixel click at an image-viewer position: the variants' part.

        On an image of a variant not compared: compare it, then ring its nodes.
        On the base's images or the compared perturbed variant's: ring the same
        pixel of the same image in the other. Returns what it did, or None.
        """
        position = tuple(float(p) for p in position)
        found = self.variant_layer_at(position)
        if found is not None and found[0].compared != found[1]:
            bv, name, _layer = found
            self.show(bv.base, name)
            return {"switched": name, "click": self.links.click_at(position)}
        for bv in self.bases.values():
            variant_key = bv.compared_key
            if variant_key is None or variant_key not in self.state or bv.key not in self.state:
                continue
            base_layer = self.state.get(bv.key).image_layer
            variant_layer = self.state.get(variant_key).image_layer
            if variant_layer is base_layer:
                continue  # a compressed model: the links ring both already
            for hit, other in ((base_layer, variant_key), (variant_layer, bv.key)):
                if hit is None or hit not in self.viewer.layers:
                    continue
                pixel = pixel_at(hit, position)
                if pixel is not None:
                    return {"key": other, "found": self.links.pixel_clicked(other, *pixel)}
        return None

    def _on_image_mouse(self, viewer: Any, event: Any):
        if pixel_press(viewer, event):
            position = tuple(event.position)
            yield from on_click_without_drag(event, lambda: self.click_at(position))

    # ------------------------------------------------------------------ controls
    def update_controls(self) -> None:
        """The canvas's "Compare with" combo and most-moved list, for the current base."""
        if not self.canvas.is_open():  # closed with its window (the viewer lives on)
            return
        bv = self.bases.get(self.current) if self.current is not None else None
        if bv is None or bv.key not in self.state:
            self.canvas.set_compare_choices([], None)
            self.canvas.set_moved("", [])
            return
        self.canvas.set_compare_choices([v.name for v in bv.base.variants], bv.compared)
        if bv.compared is None:
            self.canvas.set_moved("", [])
            return
        variant = bv.variant(bv.compared)
        names = bv.base.class_names
        labels = bv.base.labels
        ranked = self.pixel_ranked.get((bv.key, variant.name))
        listed = (
            ranked[:MOVED_LISTED]
            if ranked is not None
            else variant.comparison.most_moved(MOVED_LISTED)
        )
        entries = []
        for layer, image, score in listed:
            label = int(labels[image]) if labels is not None and image < len(labels) else -1
            text = f"#{image} {vd.class_name(label, names)} · {layer} · score {score:.2f}"
            entries.append((text, (layer, int(image), float(score))))
        if ranked is not None:
            title = (
                f"Images whose pixels changed node most under {variant.name} (score: share "
                "of the image's positions in other nodes at that layer; click one):"
                if entries
                else f"No image's pixels changed node under {variant.name}."
            )
        else:
            title = (
                f"Images that moved most under {variant.name} (score: Jaccard distance of "
                "their groups; click one):"
                if entries
                else f"No image moved under {variant.name}."
            )
        self.canvas.set_moved(title, entries)

    def _on_compare_chosen(self, name: str) -> None:
        bv = self.bases.get(self.current) if self.current is not None else None
        if bv is None or (name == bv.compared and bv.compared_key in self.state):
            return
        self.show_incrementally(bv.base, name)

    def show_at(self, base_key: str, name: str, layer: str) -> None:
        """Compare variant ``name`` at network ``layer`` (the base switches too), at once."""
        bv = self.bases[base_key]
        base_entry = self.state.get(base_key)
        if layer != base_entry.network_layer:
            self._no_follow = True
            try:
                show_analysis(
                    self.viewer,
                    bv.base,
                    layer,
                    color_by=base_entry.color_by,
                    edge_threshold=base_entry.edge_threshold,
                )
            finally:
                self._no_follow = False
        if (
            bv.compared != name
            or bv.compared_key not in self.state
            or (self.state.get(str(bv.compared_key)).network_layer != layer)
        ):
            self.show(bv.base, name, layer=layer)

    def _on_item_picked(self, entry: ShownAnalysis, view: str, index: int) -> None:
        if view == "drift_points":
            self._on_drift_point(entry, index)

    def _on_drift_point(self, entry: ShownAnalysis, index: int) -> None:
        layer = entry.layers.get("drift_points")
        if layer is None or not 0 <= index < len(layer.features) or entry.key not in self.bases:
            return
        row = layer.features.iloc[index]
        self.canvas.show_panel("mapper")  # (its layers are updated shown, see steps)
        self.show_at(entry.key, str(row["variant"]), str(row["layer"]))

    def show_moved(self, base_key: str, layer: str, image: int, score: float) -> dict[str, Any]:
        """One most-moved image: original | variant with the moved activation's receptive-field
        heat in the base's gallery, the stack at that image, its nodes selected in both."""
        bv = self.bases[base_key]
        if bv.compared is None:
            raise TopoLensError("compare a variant first")
        variant = bv.variant(bv.compared)
        self.canvas.show_panel("mapper")  # the nodes it selects are drawn there
        self.show_at(base_key, variant.name, layer)
        variant_key = str(bv.compared_key)
        base_entry = self.state.get(base_key)
        variant_entry = self.state.get(variant_key)
        nodes = {}
        self._linking = True
        try:
            for key, entry in ((base_key, base_entry), (variant_key, variant_entry)):
                result = entry.result
                points = np.flatnonzero(result.cloud.image_index == int(image))
                graph = result.mapper
                nodes[key] = csr_items_containing(graph.members, graph.member_offsets, points)
                if len(nodes[key]):
                    self.links.select_nodes(key, nodes[key])
                else:
                    self.links.clear_selection(key)
        finally:
            self._linking = False
        labels = bv.base.labels
        label = int(labels[image]) if labels is not None and image < len(labels) else -1
        base_layer = base_entry.image_layer
        variant_layer = variant_entry.image_layer
        heats = np.stack(
            [
                receptive_field_heat(bv.base[layer].cloud, int(image)),
                receptive_field_heat(variant.analysis[layer].cloud, int(image)),
            ]
        )
        tiles = [_frame(base_layer, image, heats[0]), _frame(variant_layer, image, heats[1])]
        class_name = vd.class_name(label, bv.base.class_names)
        title = f"#{image} {class_name} moved most at {layer}, score {score:.2f}"
        if not len(nodes[variant_key]):  # its gallery says why nothing is selected there
            self.links.show_tiles(
                variant_key,
                tiles[1:],
                heats[1:],
                np.array([label]),
                [variant.name],
                f"#{image}: in no Mapper node of {variant.name} at {layer}",
            )
        self.links.show_tiles(
            base_key, tiles, heats, np.array([label, label]), ["base", variant.name], title
        )
        if base_layer is not None:
            self.links.show_image(base_layer, int(image))
        return {"image": int(image), "layer": layer, "heats": heats, "nodes": nodes}

    def _on_moved_chosen(self, data: Any) -> None:
        if self.current is None or data is None:
            return
        layer, image, score = data
        self.show_moved(self.current, str(layer), int(image), float(score))


def _frame(layer: Any, image: int, heat: np.ndarray) -> np.ndarray:
    """One image of a stack layer (blank where there is none)."""
    if layer is None:
        return np.zeros(heat.shape, np.float32)
    data = layer.data
    stacked = data.ndim == (4 if layer.rgb else 3)
    return np.asarray(data[int(image)] if stacked else data)


def show_variants(viewer: Any, base: Analysis, variant: VariantChoice = None) -> list[Any]:
    """Show the variants of a shown base analysis beside it, at once.

    Each perturbed image set gets its own image layer right of the base's
    images; ``variant`` (a name such as ``"gaussian:0.1"``, an index or a
    ``Variant``; default: the first) is drawn beside the base in the topology
    canvas, in the base's layout, and follows it. Calling it again compares
    another variant (the image layers stay). Returns the layers added or updated.

    Raises
    ------
    TopoLensError
        The base is not shown, has no variants, or has no such variant.
    """
    return variant_views_for(viewer).show(base, variant)


def show_variants_incrementally(
    viewer: Any,
    base: Analysis,
    variant: VariantChoice = None,
    on_done: Callable[[list[Any]], Any] | None = None,
    on_error: Callable[[BaseException], Any] | None = None,
) -> IncrementalShow:
    """:func:`show_variants`, one layer per event-loop turn; returns the running show.

    A variant show still running is cancelled first. ``on_done(layers)`` runs on
    the main thread when the compared variant is in and linked, ``on_error(exc)``
    if a step fails. Bad input (base not shown, no such variant) raises here.
    """
    return variant_views_for(viewer).show_incrementally(
        base, variant, on_done=on_done, on_error=on_error
    )
