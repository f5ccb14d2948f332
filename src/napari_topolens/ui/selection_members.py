"""The two directions between view items and cloud points, by the ids in the layers' features.

A view item (Mapper node or edge, persistence bar, flow cluster or band, blob point
or hull, dendrogram branch) stands for *member points*: rows of the shown network
layer's point cloud. :func:`members_of` goes from selected items to their members,
:func:`items_holding` from points (those under a clicked pixel) to every item that
holds one. Pure: numpy and pandas over a layer's analysis result, no layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from ..errors import LayerError, TopoLensError
from ..topology.results import LayerAnalysis
from . import view_data as vd
from .state import ShownAnalysis

if TYPE_CHECKING:
    import pandas as pd

    from ..topology.persistence import PersistenceResult

__all__ = [
    "SELECTABLE_VIEWS",
    "bar_members",
    "csr_items_containing",
    "csr_union",
    "describe_selection",
    "drawn_bars",
    "items_holding",
    "members_of",
]

#: Views whose selection drives the links (and that a click selects from).
SELECTABLE_VIEWS = (
    "mapper_nodes",
    "mapper_edges",
    "diagram",
    "barcode",
    "flow",
    "flow_clusters",
    "blob_points",
    "blob_hulls",
    "dendrogram_tree",
)


def _csr_owner(offsets: np.ndarray) -> np.ndarray:
    offsets = np.asarray(offsets, dtype=np.int64)
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def csr_items_containing(
    members: np.ndarray, offsets: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """Items (rows of a CSR member table) that hold at least one of ``points``."""
    hit = np.isin(np.asarray(members, dtype=np.int64), points)
    return np.unique(_csr_owner(offsets)[hit])


def csr_union(members: np.ndarray, offsets: np.ndarray, items: Iterable[int]) -> np.ndarray:
    """The members of the CSR rows ``items``, sorted and unique."""
    parts = [members[offsets[i] : offsets[i + 1]] for i in items]
    return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


def bar_members(result: LayerAnalysis, dim: int, bars: Iterable[int]) -> np.ndarray:
    """Cloud rows of persistence bars: H0 the dying component, H1 a representative cycle."""
    pers = result.persistence
    if dim == 0:
        return csr_union(pers.h0_members, pers.h0_member_offsets, bars)
    if dim == 1:
        return csr_union(pers.h1_members, pers.h1_member_offsets, bars)
    raise TopoLensError(f"bars of H{dim} have no member points; select H0 or H1 bars")


def _edge_members(result: LayerAnalysis, table: pd.DataFrame) -> np.ndarray:
    graph = result.mapper
    parts = [
        np.intersect1d(graph.node_members(int(a)), graph.node_members(int(b)))
        for a, b in zip(table["source"], table["target"])
    ]
    return np.unique(np.concatenate(parts)).astype(np.int64)


def _bars_members(result: LayerAnalysis, table: pd.DataFrame) -> np.ndarray:
    parts = [bar_members(result, int(d), [int(b)]) for d, b in zip(table["dim"], table["bar"])]
    return np.unique(np.concatenate(parts)).astype(np.int64)


def _flow_cluster_members(result: LayerAnalysis, table: pd.DataFrame) -> np.ndarray:
    memberships = np.asarray(result.flow.memberships)
    hit = np.zeros(memberships.shape[1], bool)
    for s, c in zip(table["stage"], table["cluster"]):
        hit |= memberships[int(s)] == int(c)
    return np.flatnonzero(hit).astype(np.int64)


def _flow_band_members(result: LayerAnalysis, table: pd.DataFrame) -> np.ndarray:
    memberships = np.asarray(result.flow.memberships)
    hit = np.zeros(memberships.shape[1], bool)
    for s, a, b in zip(table["stage"], table["cluster"], table["next_cluster"]):
        hit |= (memberships[int(s)] == int(a)) & (memberships[int(s) + 1] == int(b))
    return np.flatnonzero(hit).astype(np.int64)


def _hull_members(result: LayerAnalysis, table: pd.DataFrame) -> np.ndarray:
    cluster = np.asarray(result.blobs.cluster)
    return np.flatnonzero(np.isin(cluster, table["cluster"].to_numpy())).astype(np.int64)


_MEMBERS_OF: dict[str, Callable[[LayerAnalysis, pd.DataFrame], np.ndarray]] = {
    "mapper_nodes": lambda r, t: csr_union(
        r.mapper.members, r.mapper.member_offsets, t["node"].astype(int)
    ),
    "mapper_edges": _edge_members,
    "diagram": _bars_members,
    "barcode": _bars_members,
    "flow_clusters": _flow_cluster_members,
    "flow": _flow_band_members,
    "blob_points": lambda _r, t: np.unique(t["point"].to_numpy().astype(np.int64)),
    "blob_hulls": _hull_members,
    "dendrogram_tree": lambda r, t: csr_union(
        r.dendrogram.members, r.dendrogram.member_offsets, t["merge"].astype(int)
    ),
}


def members_of(result: LayerAnalysis, view: str, table: pd.DataFrame) -> np.ndarray:
    """Cloud rows behind the rows of a view's ``features`` table (by their ids)."""
    if len(table) == 0:
        return np.zeros(0, dtype=np.int64)
    members = _MEMBERS_OF.get(view)
    if members is None:
        raise LayerError(f"the view {view!r} has no members to link")
    return members(result, table)


def _bars_holding(pers: PersistenceResult, points: np.ndarray) -> np.ndarray:
    """(dim, bar) rows of the H0 and H1 bars whose members hold one of ``points``."""
    h0 = csr_items_containing(pers.h0_members, pers.h0_member_offsets, points)
    bars = [np.column_stack([np.zeros(len(h0), np.int64), h0])]
    if len(pers.diagrams) > 1:
        h1 = csr_items_containing(pers.h1_members, pers.h1_member_offsets, points)
        bars.append(np.column_stack([np.ones(len(h1), np.int64), h1]))
    return np.vstack(bars).astype(np.int64)


def items_holding(result: LayerAnalysis, points: np.ndarray) -> dict[str, np.ndarray]:
    """Every view item of a layer result holding one of ``points`` (cloud rows)."""
    points = np.asarray(points, dtype=np.int64)
    graph, dendro = result.mapper, result.dendrogram
    memberships = np.asarray(result.flow.memberships)
    stage_clusters = [
        (s, int(c)) for s in range(len(memberships)) for c in np.unique(memberships[s, points])
    ]
    bands = [
        (s, int(a), int(b))
        for s in range(len(memberships) - 1)
        for a, b in np.unique(
            np.column_stack([memberships[s, points], memberships[s + 1, points]]), axis=0
        ).reshape(-1, 2)
    ]
    hulls = np.unique(np.asarray(result.blobs.cluster)[points]).astype(np.int64)
    return {
        "points": points.astype(np.int64),
        "mapper_nodes": csr_items_containing(graph.members, graph.member_offsets, points).astype(
            np.int64
        ),
        "diagram": _bars_holding(result.persistence, points),
        "flow_clusters": np.array(stage_clusters, dtype=np.int64).reshape(-1, 2),
        "flow": np.array(bands, dtype=np.int64).reshape(-1, 3),
        "blob_points": points.astype(np.int64),
        "blob_hulls": hulls[np.isin(hulls, result.blobs.hull_clusters)],
        "dendrogram_tree": csr_items_containing(
            dendro.members, dendro.member_offsets, points
        ).astype(np.int64),
    }


def drawn_bars(persistence: PersistenceResult, diagram_ids: np.ndarray) -> np.ndarray:
    """The (dim, bar) rows of ``diagram_ids`` that the barcode draws (its most persistent)."""
    drawn = vd.geo.barcode_bars(persistence, vd.MAX_BARS)[["dim", "bar"]].to_numpy()
    wanted = {tuple(int(v) for v in row) for row in np.asarray(diagram_ids).reshape(-1, 2)}
    keep = [tuple(int(v) for v in row) in wanted for row in drawn]
    return drawn[np.asarray(keep, dtype=bool)].astype(np.int64).reshape(-1, 2)


def _bar_names(t: pd.DataFrame) -> str:
    return ", ".join(f"H{int(d)} bar {int(b)}" for d, b in zip(t["dim"][:3], t["bar"][:3]))


#: Per view: how the gallery title names the first selected items.
_ITEM_NAMES: dict[str, Callable[[pd.DataFrame], str]] = {
    "mapper_nodes": lambda t: "node " + ", ".join(str(int(v)) for v in t["node"][:4]),
    "mapper_edges": lambda t: (
        "edge " + ", ".join(f"{int(a)}–{int(b)}" for a, b in zip(t["source"][:3], t["target"][:3]))
    ),
    "diagram": _bar_names,
    "barcode": _bar_names,
    "flow_clusters": lambda t: ", ".join(
        f"stage {int(s)} cluster {int(c)}" for s, c in zip(t["stage"][:3], t["cluster"][:3])
    ),
    "flow": lambda t: ", ".join(
        f"stage {int(s)} {int(a)}→{int(b)}"
        for s, a, b in zip(t["stage"][:3], t["cluster"][:3], t["next_cluster"][:3])
    ),
    "blob_points": lambda t: "point " + ", ".join(str(int(v)) for v in t["point"][:4]),
    "blob_hulls": lambda t: "cluster " + ", ".join(str(int(v)) for v in t["cluster"][:4]),
    "dendrogram_tree": lambda t: "branch " + ", ".join(str(int(v)) for v in t["merge"][:4]),
}


def describe_selection(
    entry: ShownAnalysis, view: str, table: pd.DataFrame | None, members: np.ndarray
) -> str:
    """The gallery title: what is selected, how many members, dominant class and purity."""
    names = entry.analysis.class_names
    labels = np.asarray(entry.result.point_labels, dtype=np.int64)[np.asarray(members, np.int64)]
    known = labels[labels >= 0]
    if known.size:
        counts = np.bincount(known)
        dominant = vd.class_name(int(counts.argmax()), names)
        tail = f", dominant {dominant}, purity {counts.max() / known.size:.2f}"
    else:
        tail = ""
    n = len(members)
    what = {"pixel": "pixel"}.get(view, view.replace("_", " "))
    if table is not None and len(table):
        ids = _ITEM_NAMES.get(view)
        if ids is not None:
            what = ids(table) + ("…" if len(table) > 4 else "")
    return f"{what}: {n} member{'s' if n != 1 else ''}{tail}"
