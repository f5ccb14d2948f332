"""Exact minimum spanning trees of point clouds in O(N·d) memory.

The finite H0 deaths of a Rips filtration are the edge lengths of the minimum
spanning tree (MST), and single linkage is that tree sorted. Building it from the
full distance matrix costs N² memory (100,000 points: 80 GB); here it is built by
Borůvka's algorithm on blocks of distances instead:

1. Each round, every component needs its shortest edge to another component.
   For each point we keep a short list of its nearest points outside its
   component (``k`` of them) and a lower bound for every point not in the list.
   The first list entry outside the (grown) component is the point's exact
   nearest outside neighbour; a point with no such entry is only known to be at
   least its bound away from the rest.
2. A component's shortest edge is certified when no point of it could hold a
   shorter one (its bound is larger). The others' uncertain points are queried:
   one blocked pass over the cloud computes their new lists. The largest
   component is never queried (it merges through the others' edges, so each
   round still at least halves the number of components).
3. Distances are screened in float32 blocks ``|x|² + |y|² - 2 x·y`` (one matrix
   product, on the CPU or, with ``device``, in torch), with a rounding margin
   proven to keep every point that can be among the nearest; the candidates'
   distances are then recomputed exactly in float64 from the coordinates, the way
   ``scipy.spatial.distance.pdist`` does. Ties are broken by ``(length, lower
   index, higher index)``, a strict total order, so the tree is the unique MST
   under that order and Borůvka never closes a cycle.

Identical rows are joined first by zero-length edges (ReLU layers give many
all-zero vectors); Borůvka runs on the distinct rows. Peak memory is a few
``block_bytes`` blocks plus ``O(N·(d + k))``.

torch: ``topology`` never imports torch except here, and here only on the optional
``device`` route (the GPU path of exact H0): when ``device`` is given, the screening
of step 3 imports torch (in ``_Screen``) to multiply the float32 blocks on that
device. Without ``device`` everything is numpy, and importing this module does not
import torch (``torch.device`` is named in annotations for type checkers only).
"""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["Device", "minimum_spanning_edges"]

#: Where the screening blocks are multiplied: a torch device (``"cuda"``, ``"mps"``,
#: ``"cpu"`` or a ``torch.device``), or None for numpy on the CPU.
Device: TypeAlias = "str | torch.device | None"

_U32 = float(np.finfo(np.float32).eps)  # 2**-23: float32 rounding unit (twice the unit roundoff)
_BIG = np.float32(1e30)  # screening value of masked columns (same component, padding)
_MAX_CHUNK = 128  # columns per chunk minimum in the screening threshold
_KEY_SLACK = 1e-6  # relative slack of the screen threshold, far above float64 rounding


def squared_distances(x: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``sum((x[p] - x[q])**2)`` per pair, summed coordinate by coordinate as scipy's
    ``pdist`` and scikit-learn's trees do: the same bits as theirs."""
    diff = (x[p] - x[q]).T
    total = np.zeros(len(p))
    for row in diff:
        total += row * row
    return total


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = int(parent[root])
    while parent[i] != root:
        parent[i], i = root, int(parent[i])
    return root


def join_components(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component labels ``0..c-1`` after joining the components of ``a[i]`` and ``b[i]``."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    c = int(labels.max()) + 1
    # int8 data: a byte per pair, for calls with millions of pairs (DBSCAN's blocks)
    graph = sp.coo_matrix((np.ones(len(a), dtype=np.int8), (labels[a], labels[b])), shape=(c, c))
    _, merged = connected_components(graph, directed=False)
    return merged[labels].astype(np.int64)


class _Screen:
    """Blocked float32 screening of squared (optionally scaled) distances."""

    def __init__(
        self,
        x: np.ndarray,
        scale: np.ndarray | None,
        k: int,
        device: Device,
        block_bytes: int,
    ) -> None:
        self.x = x  # exact float64 coordinates
        self.n, self.d = x.shape
        self.scale = scale  # density: key = |x - y| / sqrt(s_x s_y)
        centred = x - x.mean(axis=0)
        self.sq = np.einsum("ij,ij->i", centred, centred)
        self.sq_max = float(self.sq.max())
        # float32 rounding of |x|^2 + |y|^2 - 2 x.y is below (2d + 16) u32 (|x|^2 + |y|^2);
        # doubled for the float32 copy of the coordinates and the scaling.
        self.gamma = 2.0 * (2 * self.d + 16) * _U32
        self.scale_min = float(scale.min()) if scale is not None else 1.0
        # about 4 k chunks per row (at most 128 columns each), so that the k-th
        # smallest chunk minimum lets few more than k candidates through. A chunk
        # is every ``nchunk``-th column: columns are laid out by component (and
        # clouds often arrive sorted by class), strided chunks mix them.
        self.chunk = int(np.clip(self.n // (4 * k), 1, _MAX_CHUNK))
        self.n_pad = -(-self.n // self.chunk) * self.chunk
        self.rows_aug = np.empty((self.n, self.d + 2), dtype=np.float32)
        self.rows_aug[:, : self.d] = centred
        self.rows_aug[:, self.d] = self.sq
        self.rows_aug[:, self.d + 1] = 1.0
        cols = np.zeros((self.n_pad, self.d + 2), dtype=np.float32)
        cols[: self.n, : self.d] = -2.0 * centred
        cols[: self.n, self.d] = 1.0
        cols[: self.n, self.d + 1] = self.sq
        cols[self.n :, self.d + 1] = _BIG  # padding columns screen as BIG
        self.cols_base = cols
        self.block_rows = int(max(8, min(4096, block_bytes // (4 * self.n_pad))))
        self.device = device
        self.torch: ModuleType | None = None
        if device is not None:
            import torch  # the device route only: topology's one torch import

            self.torch = torch
            self.torch_device = torch.device(device)

    def order(self, labels: np.ndarray) -> None:
        """Lay the columns out by component, so a component is one column range."""
        self.perm = np.argsort(labels, kind="stable")
        sorted_labels = labels[self.perm]
        c = int(labels.max()) + 1
        self.comp_start = np.searchsorted(sorted_labels, np.arange(c), side="left")
        self.comp_stop = np.searchsorted(sorted_labels, np.arange(c), side="right")
        cols = self.cols_base.copy()
        cols[: self.n] = self.cols_base[self.perm]
        scale_cols = None
        if self.scale is not None:
            scale_cols = np.full(self.n_pad, 1.0, dtype=np.float32)
            scale_cols[: self.n] = self.scale[self.perm]
        if self.torch is not None:
            self.cols = self.torch.from_numpy(cols.T.copy()).to(self.torch_device)
            self.scale_cols = (
                None
                if scale_cols is None
                else self.torch.from_numpy(scale_cols).to(self.torch_device)
            )
        else:
            self.cols = np.ascontiguousarray(cols.T)
            self.scale_cols = scale_cols

    def exact_keys(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        keys = np.sqrt(squared_distances(self.x, p, q))
        if self.scale is not None:
            keys = keys / np.sqrt(self.scale[p] * self.scale[q])
        return keys

    def _block(self, rows: np.ndarray, labels_rows: np.ndarray, k: int):
        """Screened candidates of a block of query rows: (row pos, column id), threshold."""
        rows_aug = self.rows_aug[rows]
        m = len(rows)
        nchunk = self.n_pad // self.chunk
        # same-component column ranges, per run of equal labels in the (sorted) block
        runs = np.flatnonzero(np.r_[True, labels_rows[1:] != labels_rows[:-1], True])
        if self.torch is not None:
            torch = self.torch
            h = torch.from_numpy(rows_aug).to(self.torch_device) @ self.cols
            if self.scale_cols is not None and self.scale is not None:
                srow = torch.from_numpy(self.scale[rows].astype(np.float32)).to(self.torch_device)
                h = h / srow[:, None] / self.scale_cols[None, :]
                h[:, self.n :] = float(_BIG)
            for r0, r1 in itertools.pairwise(runs):
                lab = int(labels_rows[r0])
                h[r0:r1, self.comp_start[lab] : self.comp_stop[lab]] = float(_BIG)
            chunk_min = h.reshape(m, self.chunk, nchunk).amin(dim=1)
            if nchunk > k:
                thr = torch.kthvalue(chunk_min, k, dim=1).values.cpu().numpy().astype(np.float64)
            else:
                thr = np.full(m, np.inf)
            thr_t, margin = self._threshold(rows, thr)
            limit = torch.from_numpy(np.minimum(thr_t + margin, float(_BIG) / 2)).to(
                self.torch_device, dtype=h.dtype
            )
            h3 = h.reshape(m, self.chunk, nchunk)
            rr, jj = torch.nonzero(chunk_min <= limit[:, None], as_tuple=True)
            vals = h3[rr, :, jj]  # (hits, chunk): only chunks that can hold a candidate
            hr, hc = torch.nonzero(vals <= limit[rr][:, None], as_tuple=True)
            r = rr[hr].cpu().numpy()
            c = (hc * nchunk + jj[hr]).cpu().numpy()
            return r, c, thr_t
        h = rows_aug @ self.cols
        if self.scale_cols is not None and self.scale is not None:
            h /= self.scale[rows].astype(np.float32)[:, None]
            h /= self.scale_cols[None, :]
            h[:, self.n :] = _BIG  # padding stays BIG whatever the scale
        # same-component columns: masked after the scaling, so they stay BIG
        for r0, r1 in itertools.pairwise(runs):
            lab = int(labels_rows[r0])
            h[r0:r1, self.comp_start[lab] : self.comp_stop[lab]] = _BIG
        chunk_min = h.reshape(m, self.chunk, nchunk).min(axis=1)
        if nchunk > k:
            thr = np.partition(chunk_min, k - 1, axis=1)[:, k - 1].astype(np.float64)
        else:
            thr = np.full(m, np.inf)
        thr_t, margin = self._threshold(rows, thr)
        limit = np.minimum(thr_t + margin, float(_BIG) / 2).astype(np.float32)
        # only chunks whose minimum is under the limit can hold a candidate
        rr, jj = np.nonzero(chunk_min <= limit[:, None])
        vals = h.reshape(m, self.chunk, nchunk)[rr, :, jj]  # (hits, chunk)
        hit = np.flatnonzero(vals <= limit[rr][:, None])
        hr, hc = np.divmod(hit, self.chunk)
        return rr[hr], hc * nchunk + jj[hr], thr_t

    def _threshold(self, rows: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Screen threshold ``T`` (every point with exact squared key <= T is a candidate)
        and the margin added to it when screening."""
        margin = self.gamma * (self.sq[rows] + self.sq_max)
        if self.scale is not None:
            margin = margin / (self.scale[rows] * self.scale_min)
        margin = margin + _KEY_SLACK * np.abs(np.where(np.isfinite(thr), thr, 0.0)) + 1e-300
        big = thr >= float(_BIG) / 2
        thr_t = np.where(big, np.inf, thr + 2.0 * margin)
        return thr_t, 2.0 * margin

    def query(
        self, rows: np.ndarray, labels: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``k`` nearest points outside each row's component (exact, ties by index).

        Returns ``(index, key, bound)``: ``index`` (m, k) with -1 padding, ``key`` their
        exact distances (inf padding), ``bound`` a distance every unlisted point
        outside the component reaches or exceeds (in the (key, index) order, the
        listed points come first).
        """
        rows = rows[np.argsort(labels[rows], kind="stable")]
        out_index = np.full((len(rows), k), -1, dtype=np.int64)
        out_key = np.full((len(rows), k), np.inf)
        out_bound = np.full(len(rows), np.inf)
        for s in range(0, len(rows), self.block_rows):
            block = rows[s : s + self.block_rows]
            r, c, thr_t = self._block(block, labels[block], k)
            q = self.perm[c]
            p = block[r]
            keys = self.exact_keys(p, q)
            # T in key units, lowered by the relative slack so that float64 rounding
            # of the keys cannot put a point beyond the screened set.
            key_limit = np.sqrt(np.maximum(thr_t, 0.0)) * (1.0 - 0.25 * _KEY_SLACK)
            order = np.lexsort((q, keys, r))
            r, q, keys = r[order], q[order], keys[order]
            within = keys <= key_limit[r]
            r, q, keys = r[within], q[within], keys[within]
            start = np.searchsorted(r, np.arange(len(block)), side="left")
            rank = np.arange(len(r)) - start[r]
            keep = rank < k
            out_index[s + r[keep], rank[keep]] = q[keep]
            out_key[s + r[keep], rank[keep]] = keys[keep]
            count = np.bincount(r, minlength=len(block))
            full = count >= k
            bound = key_limit.copy()
            bound[full] = out_key[s + np.flatnonzero(full), k - 1]
            out_bound[s : s + len(block)] = bound
        # return in the caller's (ascending row) order
        order = np.argsort(rows, kind="stable")
        return out_index[order], out_key[order], out_bound[order]


def _boruvka(
    x: np.ndarray,
    labels: np.ndarray,
    scale: np.ndarray | None,
    k: int,
    device: Device,
    block_bytes: int,
    stats: dict[str, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(x)
    screen = _Screen(x, scale, k, device, block_bytes)
    nbr = np.full((n, k), -1, dtype=np.int64)
    nbr_key = np.full((n, k), np.inf)
    bound = np.full(n, -np.inf)  # unknown: every point is queried once
    edges_a: list[np.ndarray] = []
    edges_b: list[np.ndarray] = []
    edges_w: list[np.ndarray] = []
    rows_all = np.arange(n)
    queried = 0
    rounds = 0
    while True:
        c = int(labels.max()) + 1
        if c == 1:
            break
        rounds += 1
        size = np.bincount(labels, minlength=c)
        giant = int(np.argmax(size))
        ordered = False

        def best_edges() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            outside = (nbr >= 0) & (labels[np.maximum(nbr, 0)] != labels[:, None])
            has = outside.any(axis=1)
            first = outside.argmax(axis=1)
            key = np.where(has, nbr_key[rows_all, first], np.inf)
            other = np.where(has, nbr[rows_all, first], -1)
            lo, hi = np.minimum(rows_all, other), np.maximum(rows_all, other)
            best_key = np.full(c, np.inf)
            best_lo = np.full(c, -1, dtype=np.int64)
            best_hi = np.full(c, -1, dtype=np.int64)
            cand = np.flatnonzero(has)
            if len(cand):
                order = np.lexsort((hi[cand], lo[cand], key[cand], labels[cand]))
                sel = cand[order]
                firsts = sel[np.r_[True, labels[sel][1:] != labels[sel][:-1]]]
                comp = labels[firsts]
                best_key[comp] = key[firsts]
                best_lo[comp] = lo[firsts]
                best_hi[comp] = hi[firsts]
            return has, best_key, best_lo, best_hi

        has, best_key, best_lo, best_hi = best_edges()
        while True:
            need = ~has & (bound <= best_key[labels])
            if c > 1 and size[giant] > 1:
                need &= labels != giant
            ask = np.flatnonzero(need)
            if len(ask) == 0:
                break
            if not ordered:
                screen.order(labels)
                ordered = True
            idx, key, bnd = screen.query(ask, labels, k)
            nbr[ask], nbr_key[ask], bound[ask] = idx, key, bnd
            queried += len(ask)
            has, best_key, best_lo, best_hi = best_edges()
        # a component is certified when none of its points could still hold a shorter edge
        open_points = ~has & (bound <= best_key[labels])
        uncertain = np.zeros(c, dtype=bool)
        uncertain[labels[open_points]] = True
        chosen = np.flatnonzero(~uncertain & (best_lo >= 0))
        if len(chosen) == 0:  # cannot happen: every non-giant component is certified
            raise RuntimeError("Borůvka round made no progress")
        pairs = np.unique(np.stack([best_lo[chosen], best_hi[chosen]], axis=1), axis=0)
        a, b = pairs[:, 0], pairs[:, 1]
        w = screen.exact_keys(a, b)
        edges_a.append(a)
        edges_b.append(b)
        edges_w.append(w)
        labels = join_components(labels, a, b)
    stats.update(rounds=rounds, queried_rows=queried, block_rows=screen.block_rows)
    if not edges_a:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    return np.concatenate(edges_a), np.concatenate(edges_b), np.concatenate(edges_w)


def _join_identical_rows(
    x: np.ndarray, labels0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Identical rows joined to their first occurrence at length 0.

    Returns the distinct rows (first occurrences, ascending), the component labels
    after the joins, and the zero-length edges ``(a, b)`` kept: only those that join
    two components not yet joined.
    """
    n = len(x)
    _, first, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    rep = first[inverse]
    dup = np.flatnonzero(rep != np.arange(n))
    zero_a = np.zeros(0, dtype=np.int64)
    zero_b = np.zeros(0, dtype=np.int64)
    labels = labels0
    if len(dup):
        joined = join_components(labels0, dup, rep[dup])
        parent = np.arange(int(labels0.max()) + 1)
        keep = []
        for i in dup:
            ra, rb = _find(parent, int(labels0[i])), _find(parent, int(labels0[rep[i]]))
            if ra != rb:
                parent[rb] = ra
                keep.append(i)
        keep_arr = np.asarray(keep, dtype=np.int64)
        zero_a, zero_b = keep_arr, rep[keep_arr]
        labels = joined
    return np.sort(first), labels, zero_a, zero_b


def minimum_spanning_edges(
    points: np.ndarray,
    *,
    scale: np.ndarray | None = None,
    components: np.ndarray | None = None,
    n_neighbors: int = 16,
    device: Device = None,
    block_bytes: int = 32 << 20,
    stats: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(a, b, length)`` of the exact minimum spanning tree of a point cloud.

    Parameters
    ----------
    points : (N, d) float64 array
        Coordinates in which the distance is euclidean (``sqrt(sum((x - y)**2))``).
    scale : (N,) positive array, optional
        Use ``|x - y| / sqrt(scale_x * scale_y)`` instead (the density metric).
    components : (N,) int array, optional
        Points already joined (e.g. a kNN graph's components): return only the
        shortest edges that join these components into one tree (a minimum spanning
        tree of the components, each pair at its shortest distance).
    n_neighbors : int
        Length of each point's list of nearest points outside its component;
        more costs memory and fewer queries.
    device : str or torch.device, optional
        Screen the distance blocks with torch on this device (``"cuda"``, ``"mps"``,
        ``"cpu"``); the tree is the same.
    block_bytes : int
        Size of one screening block; memory is a few blocks plus ``O(N·(d + k))``.
    stats : dict, optional
        Filled with ``rounds``, ``queried_rows`` (rows screened in all),
        ``distinct`` points and ``block_rows``.

    Returns
    -------
    a, b : (E,) int64
        Edge end points, ``E = N - 1`` (or components - 1).
    length : (E,) float64
        Exact lengths, in no particular order.
    """
    x = np.ascontiguousarray(points, dtype=np.float64)
    n = len(x)
    stats = {} if stats is None else stats
    k = int(max(1, n_neighbors))
    labels0 = (
        np.arange(n, dtype=np.int64)
        if components is None
        else np.unique(np.asarray(components), return_inverse=True)[1].astype(np.int64).ravel()
    )
    distinct, labels, zero_a, zero_b = _join_identical_rows(x, labels0)
    stats["distinct"] = len(distinct)
    sub_labels = np.unique(labels[distinct], return_inverse=True)[1].astype(np.int64).ravel()
    if int(sub_labels.max()) + 1 > 1:
        a, b, w = _boruvka(
            x[distinct],
            sub_labels,
            None if scale is None else np.asarray(scale, dtype=np.float64)[distinct],
            k,
            device,
            int(block_bytes),
            stats,
        )
        a, b = distinct[a], distinct[b]
    else:
        a = b = np.zeros(0, dtype=np.int64)
        w = np.zeros(0)
        stats.update(rounds=0, queried_rows=0)
    return (
        np.concatenate([zero_a, a]).astype(np.int64),
        np.concatenate([zero_b, b]).astype(np.int64),
        np.concatenate([np.zeros(len(zero_a)), w]),
    )
