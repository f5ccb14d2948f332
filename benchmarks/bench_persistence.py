"""Time H0 + H1 persistence: napari-topolens against gudhi's full Rips simplex tree.

Run:  PYTHONPATH=src python benchmarks/bench_persistence.py

For each cloud both routes run in this process on the same points; the script
checks that the diagrams agree (H0 finite deaths and H1 bars, to 1e-9) and prints
both times and their ratio. The baseline is the straightforward
``RipsComplex(points).create_simplex_tree(max_dimension=2).compute_persistence()``.
"""

from __future__ import annotations

import platform
import time

import numpy as np


def _clouds() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    clouds = []
    for n in (200, 400):
        clouds.append((f"gaussian n={n} D=64", rng.normal(size=(n, 64))))
    t = rng.uniform(0, 2 * np.pi, 300)
    circle = np.zeros((300, 64))
    circle[:, 0], circle[:, 1] = np.cos(t), np.sin(t)
    clouds.append(("noisy circle n=300 D=64", circle + rng.normal(scale=0.05, size=circle.shape)))
    return clouds


def _sorted(diagram: np.ndarray) -> np.ndarray:
    diagram = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
    return diagram[np.lexsort((diagram[:, 1], diagram[:, 0]))]


def _simplex_tree_route(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import gudhi

    st = gudhi.RipsComplex(points=points).create_simplex_tree(max_dimension=2)
    st.compute_persistence()
    h0 = st.persistence_intervals_in_dimension(0)
    return h0, st.persistence_intervals_in_dimension(1)


def main() -> None:
    import gudhi

    from napari_topolens.topology.persistence import compute_persistence

    print(f"python {platform.python_version()}, gudhi {gudhi.__version__}, numpy {np.__version__}")
    compute_persistence(np.random.default_rng(1).normal(size=(20, 3)))  # imports, warm-up
    _simplex_tree_route(np.random.default_rng(1).normal(size=(20, 3)))
    print(
        f"{'cloud':28s} {'topolens s':>11s} {'simplex tree s':>15s} {'ratio':>7s}  H1 bars  agree"
    )
    for name, points in _clouds():
        start = time.perf_counter()
        result = compute_persistence(points, max_dim=1, max_points=len(points))
        ours = time.perf_counter() - start

        start = time.perf_counter()
        ref_h0, ref_h1 = _simplex_tree_route(points)
        baseline = time.perf_counter() - start

        our_h0 = np.sort(result.diagrams[0][:-1, 1])
        ref_h0_deaths = np.sort(ref_h0[np.isfinite(ref_h0[:, 1]), 1])
        h0_ok = our_h0.shape == ref_h0_deaths.shape and np.allclose(
            our_h0, ref_h0_deaths, rtol=1e-9, atol=0
        )
        h1_ok = result.diagrams[1].shape == ref_h1.shape and np.allclose(
            _sorted(result.diagrams[1]), _sorted(ref_h1), rtol=1e-9, atol=0
        )
        print(
            f"{name:28s} {ours:11.3f} {baseline:15.3f} {baseline / ours:6.1f}x  "
            f"{len(result.diagrams[1]):7d}  "
            f"H0 {'yes' if h0_ok else 'NO'}, H1 {'yes' if h1_ok else 'NO'}"
        )
        if not (h0_ok and h1_ok):
            raise SystemExit(f"diagrams disagree on {name}")

    # Subsampling before H1 (no simplex-tree baseline: it would take minutes).
    print("\nsubsample before H1: N=2000 D=64, max_points=600 (H0 on all 2000 points)")
    print(f"{'cloud':28s} {'mode':>7s} {'total s':>8s}  H1 bars  top-2 H1 persistence")
    rng = np.random.default_rng(2)
    t = rng.uniform(0, 2 * np.pi, 2000)
    circle = np.zeros((2000, 64))
    circle[:, 0], circle[:, 1] = np.cos(t), np.sin(t)
    for name, points in (
        ("gaussian", rng.normal(size=(2000, 64))),
        ("noisy circle", circle + rng.normal(scale=0.05, size=circle.shape)),
    ):
        for mode in ("maxmin", "random"):
            start = time.perf_counter()
            result = compute_persistence(points, max_points=600, subsample=mode)
            elapsed = time.perf_counter() - start
            top = np.diff(result.diagrams[1][:2], axis=1).ravel()
            print(
                f"{name:28s} {mode:>7s} {elapsed:8.2f}  {len(result.diagrams[1]):7d}  {np.round(top, 3)}"
            )


if __name__ == "__main__":
    main()
