"""Exact H1 of a Rips filtration on a certified cut (docs/methods.md §4).

Ripser-class tools spend most of their H1 time on edges that change nothing: an
edge ``(u, v)`` of length ``L`` with a *witness*, a point ``w`` closer than ``L``
to both ends, enters together with the triangle ``uvw`` and gives no bar. Here the
filtration is cut at an edge length ``t`` that is proven not to change the H1
diagram, and gudhi's Ripser runs only below it:

1. *No H1 class is born above t.* Every edge longer than ``t`` is checked: it
   either has a strict witness or is an edge of the minimum spanning tree (it
   joins two components, which makes no cycle; with ties, tree edges of a length
   enter first). Then by induction over the edge lengths above ``t``, every
   cycle of ``Rips(s)``, ``s > t``, is homologous to one of ``Rips(t)``: each
   witnessed edge is swapped for the two shorter edges of its triangle.
2. *Every class alive at t dies by t.* The cut run's diagram has no infinite H1
   bar, i.e. ``H1(Rips(t)) = 0``.

Together: ``H1(Rips(s)) = 0`` for every ``s >= t``, so every bar of the uncut
filtration lies below ``t`` and the cut run computes all of them, exactly (the
same gudhi reduction on the same float64 entries). Edges above the enclosing
radius ``min_i max_j d(i, j)`` are all witnessed by its centre (gudhi cuts there
too). The witnesses are looked for first among a few central points, then, for
the edges none of those witnesses, among all points, longest edges first, until
the longest unwitnessed non-tree edge (the last possible birth) is found.

Step 2 is checked, not assumed: the first cut is a guess above that last birth
(a fixed factor more edges); when a class is still alive there, the cut is raised
(twice the edges each time) and the run repeated, up to the enclosing radius,
where the diagram is gudhi's own uncut one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["certified_h1", "last_birth_bound"]

# Central points tried as witnesses for every edge before the exhaustive search.
_CENTRAL_WITNESSES = 12
# Distance-matrix entries per block of the witness scan (bounded memory).
_BLOCK_ENTRIES = 1 << 22
# Edges witnessed by no central point that are kept for the exhaustive search
# (the longest ones); the cut is never set below the shortest edge kept.
_MAX_CANDIDATES = 1 << 23
# Edges exhaustively searched for a witness per batch.
_BATCH = 64
# First cut: this many times the edges below the last birth; then twice as many per retry.
_FIRST_GROWTH = 1.5
_RETRY_GROWTH = 2.0
# Above this fraction of the edges below the enclosing radius, cut there (gudhi's own run).
_FULL_FRACTION = 0.5
# Random pairs that estimate edge-length quantiles for the cut guesses.
_QUANTILE_SAMPLE = 1 << 20


def enclosing_radius(distances: np.ndarray) -> float:
    """``min_i max_j d(i, j)``: above it every Rips complex is a cone, nothing changes."""
    return float(distances.max(axis=1).min()) if len(distances) else 0.0


def last_birth_bound(
    distances: np.ndarray, parent: np.ndarray, radius: float
) -> tuple[float, dict[str, Any]]:
    """Length of the longest edge up to ``radius`` that has no strict witness and is
    not an edge of the tree ``parent`` (minimum spanning tree as parent pointers).

    Every longer edge is a tree edge or has a point ``w`` with
    ``max(d(u, w), d(v, w)) < d(u, v)``. Returns 0.0 when there is no such edge.
    """
    m = len(distances)
    central = np.argsort(distances.sum(axis=1), kind="stable")[: min(_CENTRAL_WITNESSES, m)]
    to_central = distances[central]  # (K, m)
    rows = max(1, _BLOCK_ENTRIES // max(m, 1))
    cand_u: list[np.ndarray] = []
    cand_v: list[np.ndarray] = []
    cand_len: list[np.ndarray] = []
    kept = 0
    floor = -np.inf  # candidates at or below it were dropped (over _MAX_CANDIDATES)
    column = np.arange(m)
    for start in range(0, m - 1, rows):
        stop = min(m, start + rows)
        block = distances[start:stop]
        lengths = block
        open_ = (column[None, :] > np.arange(start, stop)[:, None]) & (lengths <= radius)
        open_ &= lengths > floor
        for k in range(len(central)):
            witnessed = (to_central[k, start:stop, None] < lengths) & (
                to_central[k][None, :] < lengths
            )
            open_ &= ~witnessed
        u, v = np.nonzero(open_)
        u += start
        tree = (parent[u] == v) | (parent[v] == u)
        u, v = u[~tree], v[~tree]
        cand_u.append(u.astype(np.int64))
        cand_v.append(v.astype(np.int64))
        cand_len.append(distances[u, v])
        kept += len(u)
        if kept > _MAX_CANDIDATES:
            all_len = np.concatenate(cand_len)
            keep = np.argpartition(-all_len, _MAX_CANDIDATES // 2)[: _MAX_CANDIDATES // 2]
            floor = max(floor, float(all_len[keep].min()))
            cand_u = [np.concatenate(cand_u)[keep]]
            cand_v = [np.concatenate(cand_v)[keep]]
            cand_len = [all_len[keep]]
            kept = len(keep)
    u = np.concatenate(cand_u) if cand_u else np.zeros(0, dtype=np.int64)
    v = np.concatenate(cand_v) if cand_v else np.zeros(0, dtype=np.int64)
    lengths = np.concatenate(cand_len) if cand_len else np.zeros(0)
    order = np.argsort(-lengths, kind="stable")
    u, v, lengths = u[order], v[order], lengths[order]
    record: dict[str, Any] = {"witness_candidates": len(u), "searched": 0}
    for start in range(0, len(u), _BATCH):
        s = slice(start, start + _BATCH)
        closer = np.maximum(distances[u[s]], distances[v[s]]) < lengths[s, None]
        unwitnessed = np.flatnonzero(~closer.any(axis=1))
        record["searched"] = int(min(len(u), start + _BATCH))
        if unwitnessed.size:
            return float(lengths[s][unwitnessed[0]]), record
    # none of the candidates is a birth: every edge above the floor is certified
    return (max(float(floor), 0.0) if np.isfinite(floor) else 0.0), record


def _length_quantiles(distances: np.ndarray, seed: int = 0) -> np.ndarray:
    """Sorted lengths of (up to) ``_QUANTILE_SAMPLE`` random distinct pairs."""
    m = len(distances)
    pairs = m * (m - 1) // 2
    if pairs <= _QUANTILE_SAMPLE:
        return np.sort(distances[np.triu_indices(m, 1)])
    rng = np.random.default_rng(seed)
    i = rng.integers(0, m, _QUANTILE_SAMPLE)
    j = rng.integers(0, m - 1, _QUANTILE_SAMPLE)
    j += j >= i  # j != i
    return np.sort(distances[i, j])


def _ripser_h1(distances: np.ndarray, threshold: float) -> np.ndarray:
    """gudhi's Ripser on the dense matrix, edges longer than ``threshold`` left out.

    Calls the binding that gudhi's ``RipsPersistence`` itself calls for a full
    matrix; should a gudhi release move it, the public class does the same run
    (through its sparse route, the same diagram).
    """
    try:
        from gudhi._ripser_ext import _full
    except ImportError:  # a gudhi release without it
        from gudhi.sklearn.rips_persistence import RipsPersistence

        rips = RipsPersistence(
            homology_dimensions=1,
            input_type="full distance matrix",
            threshold=float(threshold),
            n_jobs=1,
        )
        return np.asarray(rips.fit_transform([distances])[0], dtype=np.float64).reshape(-1, 2)
    dgm = _full(
        distances, max_dimension=1, max_edge_length=float(threshold), homology_coeff_field=2
    )
    return np.asarray(dgm[1] if len(dgm) > 1 else np.zeros((0, 2)), dtype=np.float64).reshape(-1, 2)


def certified_h1(distances: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """H1 bars ``(birth, death)`` of the Rips filtration of ``distances``, uncut, computed
    on a cut proven not to change them (module notes); with what was done.

    ``distances``: symmetric float64 matrix, zero diagonal; ``parent``: its minimum
    spanning tree as parent pointers (root: -1). Zero-length bars may be listed.
    """
    distances = np.ascontiguousarray(distances, dtype=np.float64)
    m = len(distances)
    radius = enclosing_radius(distances)
    record: dict[str, Any] = {"enclosing_radius": radius}
    if m < 4:
        record.update(birth_bound=radius, cut=radius, cut_tries=1)
        return _ripser_h1(distances, radius), record
    birth, search = last_birth_bound(distances, parent, radius)
    record.update(birth_bound=birth, **search)
    sample = _length_quantiles(distances)
    below_radius = float(np.searchsorted(sample, radius, side="right"))
    fraction = float(np.searchsorted(sample, birth, side="right")) / max(below_radius, 1.0)
    growth = _FIRST_GROWTH
    tries = 0
    while True:
        fraction = min(1.0, max(fraction, 1.0 / max(below_radius, 1.0)) * growth)
        if birth >= radius or fraction >= _FULL_FRACTION:
            cut = radius
        else:
            cut = max(birth, float(sample[int(fraction * below_radius) - 1]))
            cut = min(cut, radius)
        tries += 1
        h1 = _ripser_h1(distances, cut)
        if cut >= radius or np.all(np.isfinite(h1[:, 1])):
            break
        growth = _RETRY_GROWTH
    record.update(cut=float(cut), cut_tries=tries)
    return h1, record
