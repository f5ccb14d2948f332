"""Rings around view items: white for the selection, magenta for a clicked pixel's items.

A view layer's own border (Points) or edge (Shapes) colours and widths are kept
per layer; :class:`ViewRings` records two masks over its rows (selected, holds the
clicked pixel) and draws them over those colours. The masks are also written to
the layer's ``features`` (``selected``, ``highlighted``) so the readout and tests
can read them.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from . import view_data as vd

__all__ = ["ViewRings", "draw_rings", "write_ring_features"]


class ViewRings:
    """The ring masks of the view layers of one viewer, keyed by layer (weakly)."""

    def __init__(self) -> None:
        # per view layer: its own edge colours/widths or borders, and the two ring masks
        self._base: weakref.WeakKeyDictionary[Any, tuple[np.ndarray, np.ndarray]] = (
            weakref.WeakKeyDictionary()
        )
        self._rings: weakref.WeakKeyDictionary[Any, tuple[np.ndarray, np.ndarray]] = (
            weakref.WeakKeyDictionary()
        )

    def refresh(self, layer: Any) -> None:
        """Re-read a view layer whose data were replaced in place (its own colours, no rings)."""
        if type(layer).__name__.lower() == "shapes":
            self._base[layer] = (
                np.array(layer.edge_color, dtype=np.float64),
                np.array(layer.edge_width, dtype=np.float64),
            )
        else:
            self._base[layer] = (
                np.array(layer.border_color, dtype=np.float64),
                np.asarray(layer.border_width, dtype=np.float64),
            )
        self._rings[layer] = (
            np.zeros(len(layer.features), bool),
            np.zeros(len(layer.features), bool),
        )

    def set(self, layer: Any, mask: np.ndarray, *, selected: bool = False) -> None:
        """Record one ring mask of a layer (selection or pixel hits) and redraw its rings."""
        if layer not in self._base:
            self.refresh(layer)
        n = len(layer.features)
        mask = np.asarray(mask, dtype=bool)
        if len(mask) != n:
            return
        chosen, hits = self._rings.get(layer, (np.zeros(n, bool), np.zeros(n, bool)))
        if len(chosen) != n:
            chosen, hits = np.zeros(n, bool), np.zeros(n, bool)
        chosen, hits = (mask, hits) if selected else (chosen, mask)
        drawn = self._rings.get(layer)
        self._rings[layer] = (chosen, hits)
        if drawn is not None and _same(drawn, (chosen, hits)):
            # the colours are drawn already (a Shapes layer's new edge widths triangulate
            # every edge again on the main thread): only the features, if they differ
            write_ring_features(layer, chosen, hits)
            return
        draw_rings(layer, self._base[layer], chosen, hits)

    def masks(self, layer: Any) -> tuple[np.ndarray, np.ndarray]:
        """(selected, holds the clicked pixel) masks over a view layer's rows."""
        n = len(layer.features)
        return self._rings.get(layer, (np.zeros(n, bool), np.zeros(n, bool)))

    def ring_ids(self, layer: Any, column: str, ids: np.ndarray, *, selected: bool) -> np.ndarray:
        """Ring the rows whose ``column`` is one of ``ids``; returns their ids."""
        mask = np.isin(layer.features[column].to_numpy(), np.asarray(ids))
        self.set(layer, mask, selected=selected)
        return layer.features[column].to_numpy()[mask]

    def ring_pairs(
        self, layer: Any, columns: tuple[str, ...], ids: np.ndarray, *, selected: bool
    ) -> np.ndarray:
        """Ring the rows whose ``columns`` are one of the rows of ``ids``; returns those rows."""
        table = layer.features[list(columns)].to_numpy().astype(np.int64)
        wanted = {tuple(int(v) for v in row) for row in np.asarray(ids).reshape(-1, len(columns))}
        mask = np.array([tuple(row) in wanted for row in table.tolist()], dtype=bool)
        self.set(layer, mask, selected=selected)
        return table[mask]


def draw_rings(
    layer: Any, base: tuple[np.ndarray, np.ndarray], chosen: np.ndarray, hits: np.ndarray
) -> None:
    """Selected rows get a white ring, rows holding the clicked pixel a magenta one."""
    if len(chosen) == 0:
        return
    colors, widths = np.array(base[0], dtype=np.float64), np.array(base[1], dtype=np.float64)
    if type(layer).__name__.lower() == "points":
        if colors.ndim == 1 or len(colors) != len(chosen):
            colors = np.tile(colors.reshape(-1, 4)[:1], (len(chosen), 1))
        if widths.ndim == 0 or len(widths) != len(chosen):
            widths = np.full(len(chosen), float(np.ravel(widths)[0]) if widths.size else 0.08)
        colors[hits] = vd.HIT_RGBA
        colors[chosen] = vd.SELECTED_RGBA
        widths = np.where(chosen | hits, 0.3, widths)
        layer.border_color = colors
        layer.border_width = widths
    else:
        if len(colors) != len(chosen):
            return
        ring = chosen | hits
        base_width = float(np.max(widths)) if len(widths) else 0.004
        colors[hits] = vd.HIT_RGBA
        colors[chosen] = vd.SELECTED_RGBA
        widths = np.where(ring, np.maximum(widths * 1.8, max(base_width, 0.004)), widths)
        layer.edge_color = colors
        layer.edge_width = list(widths)
    write_ring_features(layer, chosen, hits, check=False)


def _same(drawn: tuple[np.ndarray, np.ndarray], wanted: tuple[np.ndarray, np.ndarray]) -> bool:
    return all(len(a) == len(b) and bool(np.array_equal(a, b)) for a, b in zip(drawn, wanted))


def write_ring_features(
    layer: Any, chosen: np.ndarray, hits: np.ndarray, *, check: bool = True
) -> None:
    """The ring masks as the layer's ``selected`` and ``highlighted`` features columns
    (``check``: only if they differ from those there)."""
    features = layer.features
    if check and all(
        column in features and np.array_equal(features[column].to_numpy(dtype=bool), mask)
        for column, mask in (("selected", chosen), ("highlighted", hits))
    ):
        return
    features = features.copy()
    features["selected"] = chosen
    features["highlighted"] = hits
    layer.features = features
