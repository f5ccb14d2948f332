"""Unit-square geometry of the persistence, cluster-flow, blob and matrix views."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DIAGRAM_AXES",
    "INF_ROW",
    "MATRIX_BOX",
    "STAGE_LABELS",
    "Diagrams",
    "Memberships",
    "barcode_bars",
    "barcode_rows",
    "blob_unit_transform",
    "diagram_coords",
    "diagram_top",
    "flow_band",
    "flow_geometry",
    "format_value",
    "nice_ticks",
    "short_label",
]


# ``layout`` sits below ``topology``: these name the shapes it reads, not the classes.
class Diagrams(Protocol):
    """Persistence diagrams by dimension (``topology.persistence.PersistenceResult``)."""

    @property
    def diagrams(self) -> Sequence[np.ndarray]: ...


class Memberships(Protocol):
    """Cluster of every point at each stage (``topology.hole.ClusterFlow``)."""

    @property
    def memberships(self) -> np.ndarray: ...


#: Where the persistence diagram's axes lie in the unit square: (low, high).
DIAGRAM_AXES = (0.16, 0.93)
#: Row of the line that holds the points of infinite death.
INF_ROW = 0.05
#: (top, left, side) of a layer x layer heatmap in the unit square (room for labels).
MATRIX_BOX = (0.1, 0.22, 0.6)
#: Short names of the cluster-flow stages, drawn under the columns.
STAGE_LABELS = {
    "labels": "class",
    "smallest": "fine",
    "best": "best",
    "intermediate": "mid",
    "merged": "coarse",
}


def format_value(value: float, digits: int = 3) -> str:
    """A number in at most ``digits`` significant digits, short exponents: 0.613, 815, 1.23e3."""
    if not np.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if value == 0:
        return "0"
    text = f"{value:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def short_label(name: str, width: int = 9) -> str:
    """A network layer name cut to ``width`` characters (the end kept: it says most)."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def nice_ticks(low: float, high: float, count: int = 5) -> np.ndarray:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) within ``[low, high]``."""
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        return np.array([low]) if np.isfinite(low) else np.zeros(0)
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = np.arange(first, high + step * 1e-6, step)
    return np.round(ticks, 12)


# --------------------------------------------------------------------------- persistence


def diagram_top(diagrams: Sequence[np.ndarray]) -> float:
    """The largest finite birth or death of the diagrams (1 when there is none)."""
    finite = [
        np.asarray(d, dtype=np.float64).reshape(-1, 2)[
            np.isfinite(np.asarray(d, dtype=np.float64).reshape(-1, 2)).all(axis=1)
        ]
        for d in diagrams
    ]
    values = np.concatenate([f.ravel() for f in finite]) if finite else np.zeros(0)
    top = float(values.max()) if len(values) else 1.0
    return top if top > 0 else 1.0


def diagram_coords(birth: np.ndarray, death: np.ndarray, top: float) -> np.ndarray:
    """(row, col) of diagram points: birth right, death up; infinite deaths on :data:`INF_ROW`."""
    low, high = DIAGRAM_AXES
    col = low + (high - low) * np.asarray(birth, dtype=np.float64) / top
    death = np.asarray(death, dtype=np.float64)
    row = np.where(
        np.isfinite(death), high - (high - low) * np.nan_to_num(death, posinf=top) / top, INF_ROW
    )
    return np.column_stack([row, col])


def barcode_bars(persistence: Diagrams, max_bars: int = 60) -> pd.DataFrame:
    """The bars the barcode draws: per dimension the ``max_bars`` most persistent."""
    import pandas as pd  # here: the report never needs it, and it takes 0.7 s to import

    rows = []
    for dim, diagram in enumerate(persistence.diagrams):
        diagram = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
        length = diagram[:, 1] - diagram[:, 0]
        order = np.lexsort(
            (np.arange(len(diagram)), -np.nan_to_num(length, posinf=np.finfo(float).max))
        )
        for bar in order[:max_bars]:
            rows.append(
                (dim, int(bar), diagram[bar, 0], diagram[bar, 1], length[bar], len(diagram))
            )
    return pd.DataFrame(rows, columns=["dim", "bar", "birth", "death", "persistence", "of_bars"])


#: Barcode: the bars' value axis spans these columns; infinite bars reach the end.
BARCODE_COLS = (0.1, 0.92)
BARCODE_ROWS = (0.04, 0.88)


def barcode_rows(dims: np.ndarray) -> tuple[np.ndarray, float]:
    """Row of each bar (dimensions apart by a two-bar gap) and the row pitch."""
    dims = np.asarray(dims)
    n = len(dims)
    n_dims = len(np.unique(dims)) if n else 1
    slots = n + 2 * max(n_dims - 1, 0)
    top, bottom = BARCODE_ROWS
    pitch = (bottom - top) / max(slots, 1)
    rows = np.zeros(n)
    slot = 0
    last = None
    for i, dim in enumerate(dims):
        if last is not None and dim != last:
            slot += 2
        rows[i] = top + (slot + 0.5) * pitch
        slot += 1
        last = dim
    return rows, pitch


def barcode_cols(birth: np.ndarray, death: np.ndarray, top: float) -> tuple[np.ndarray, np.ndarray]:
    """Start and end column of each bar; infinite deaths end at the axis end."""
    low, high = BARCODE_COLS
    span = top * 1.06
    col0 = low + (high - low) * np.asarray(birth, dtype=np.float64) / span
    col1 = (
        low + (high - low) * np.nan_to_num(np.asarray(death, dtype=np.float64), posinf=span) / span
    )
    return col0, np.maximum(col1, col0 + 0.003)


def barcode_value_col(value: float, top: float) -> float:
    """Column of a filtration value on the barcode's axis."""
    low, high = BARCODE_COLS
    return low + (high - low) * value / (top * 1.06)


# --------------------------------------------------------------------------- cluster flow


def flow_geometry(
    flow: Memberships,
) -> tuple[dict[tuple[int, int], tuple[float, float]], np.ndarray, float]:
    """Sankey blocks: {(stage, cluster): (top row, height)}, stage columns, block width."""
    memberships = np.asarray(flow.memberships)
    n_stages, m = memberships.shape
    cols = 0.06 + 0.84 * np.arange(n_stages) / max(n_stages - 1, 1)
    blocks: dict[tuple[int, int], tuple[float, float]] = {}
    for s in range(n_stages):
        ids, counts = np.unique(memberships[s], return_counts=True)
        order = np.argsort(np.where(ids < 0, np.iinfo(np.int64).max, ids), kind="stable")
        ids, counts = ids[order], counts[order]
        gap = min(0.012, 0.2 / max(len(ids) - 1, 1))
        per_point = (0.84 - gap * (len(ids) - 1)) / max(m, 1)
        row = 0.04
        for c, k in zip(ids, counts):
            blocks[(s, int(c))] = (row, k * per_point)
            row += k * per_point + gap
    return blocks, cols, 0.035


def flow_band(
    x0: float, x1: float, top0: float, bot0: float, top1: float, bot1: float, k: int = 8
) -> np.ndarray:
    """A Sankey band: two eased curves of k points (Shapes triangulation grows steeply with k)."""
    t = np.linspace(0.0, 1.0, k)
    ease = 3 * t**2 - 2 * t**3
    col = x0 + (x1 - x0) * t
    upper = np.column_stack([top0 + (top1 - top0) * ease, col])
    lower = np.column_stack([bot0 + (bot1 - bot0) * ease, col])[::-1]
    return np.vstack([upper, lower])


# --------------------------------------------------------------------------- blobs


def blob_unit_transform(coords: np.ndarray, hulls: Sequence[np.ndarray]):
    """The map from PCA coordinates to the unit square (PC1 right, PC2 up), same for hulls."""
    everything = np.vstack(
        [np.asarray(coords, dtype=np.float64).reshape(-1, 2)]
        + [np.asarray(h, dtype=np.float64).reshape(-1, 2) for h in hulls]
    )
    if len(everything) == 0:
        centre, span = np.zeros(2), 1.0
    else:
        lo, hi = everything.min(axis=0), everything.max(axis=0)
        span = float(max(hi - lo)) or 1.0
        centre = (lo + hi) / 2

    def to_unit(xy: np.ndarray) -> np.ndarray:
        u = (np.asarray(xy, dtype=np.float64).reshape(-1, 2) - centre) / span
        return np.column_stack([0.5 - 0.86 * u[:, 1], 0.5 + 0.86 * u[:, 0]])

    return to_unit
