"""Mapper node positions: one seeded layout per graph, shared by napari and the report."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol

import numpy as np

__all__ = ["AnalysedLayers", "MapperEdges", "mapper_layout", "mapper_layouts"]


class MapperEdges(Protocol):
    """What a layout reads of a Mapper graph (``topology.mapper.MapperGraph`` has it;
    ``layout`` sits below ``topology``, so it names the shape, not the class)."""

    @property
    def n_nodes(self) -> int: ...

    @property
    def edges(self) -> np.ndarray: ...

    @property
    def edge_weight(self) -> np.ndarray: ...


class _Seeded(Protocol):
    @property
    def seed(self) -> int: ...


class _LayerWithMapper(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def mapper(self) -> MapperEdges: ...


class AnalysedLayers(Protocol):
    """What :func:`mapper_layouts` reads of an analysis (``topology.analysis.Analysis``):
    its config's seed and its layer results (a saved ``mapper_layout`` is read if present)."""

    @property
    def config(self) -> _Seeded: ...

    def __iter__(self) -> Iterator[_LayerWithMapper]: ...


def mapper_layout(graph: MapperEdges, seed: int = 0) -> np.ndarray:
    """Node positions ``(n, 2)`` (row, col) in the unit square.

    Each connected component is laid out on its own (Kamada-Kawai up to 60 nodes,
    seeded spring layout above, both on the Jaccard-weighted graph), then the
    components are shelf-packed by decreasing size in boxes whose side grows with
    the square root of their node count. A single force layout of the whole graph
    would fling small components and isolated nodes to the edges.

    Laid out under a one-thread BLAS limit: Kamada-Kawai runs SciPy's L-BFGS-B,
    thousands of BLAS calls on vectors of a few dozen numbers, which BLAS threads
    only slow down (by up to 30x on a loaded two-core machine). The limit is
    process-wide while it lasts, so BLAS calls of other threads meanwhile run on one
    thread too; their results do not change.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _mapper_layout(graph, seed)


def _mapper_layout(graph: MapperEdges, seed: int) -> np.ndarray:
    import networkx as nx

    n = int(graph.n_nodes)
    if n == 0:
        return np.zeros((0, 2))
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for (a, b), w in zip(np.asarray(graph.edges).reshape(-1, 2), graph.edge_weight):
        g.add_edge(int(a), int(b), weight=float(w))
    components = sorted(
        (sorted(c) for c in nx.connected_components(g)), key=lambda c: (-len(c), c[0])
    )
    local: list[np.ndarray] = []
    for comp in components:
        if len(comp) == 1:
            local.append(np.zeros((1, 2)))
            continue
        sub = g.subgraph(comp)
        if len(comp) <= 2:
            pos = {comp[0]: (0.0, 0.0), comp[1]: (1.0, 0.0)}
        elif len(comp) <= 60:
            pos = nx.kamada_kawai_layout(sub)
        else:
            pos = nx.spring_layout(sub, seed=seed, weight="weight", iterations=100)
        xy = np.array([pos[v] for v in comp], dtype=np.float64)
        xy -= xy.min(axis=0)
        span = xy.max()
        local.append(xy / span if span > 0 else xy)
    sides = np.array([math.sqrt(len(c)) for c in components])
    total_width = max(sides[0], math.sqrt(float(np.sum(sides**2))) * 1.15)
    out = np.zeros((n, 2))
    x = y = shelf = 0.0
    for comp, xy, side in zip(components, local, sides):
        if x > 0 and x + side > total_width + 1e-9:
            x, y, shelf = 0.0, y + shelf, 0.0
        inner = 0.8 * side if len(comp) > 1 else 0.0
        box = xy * inner + (side - inner) / 2
        out[comp, 1] = x + box[:, 0]
        out[comp, 0] = y + box[:, 1]
        x += side
        shelf = max(shelf, side)
    height = y + shelf
    extent = max(total_width, height)
    out /= extent
    out[:, 0] += (1 - height / extent) / 2
    return 0.06 + 0.88 * out


def mapper_layouts(analysis: AnalysedLayers) -> dict[str, np.ndarray]:
    """The Mapper layout of every analysed layer: the saved one, else computed now.

    Analyses made by ``analyze`` carry their layouts (``LayerAnalysis.mapper_layout``);
    only analyses saved before that field existed are laid out here.
    """
    seed = int(analysis.config.seed)
    out: dict[str, np.ndarray] = {}
    for result in analysis:
        saved = getattr(result, "mapper_layout", None)
        n = result.mapper.n_nodes
        if saved is not None and np.shape(saved) == (n, 2) and np.all(np.isfinite(saved)):
            out[result.name] = np.asarray(saved, dtype=np.float64).reshape(-1, 2)
        else:
            out[result.name] = mapper_layout(result.mapper, seed=seed)
    return out
