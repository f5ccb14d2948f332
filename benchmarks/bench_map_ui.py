"""Topology map overlay in napari: map time per image, and the main thread while sliding.

Run from the repository root (needs a display)::

    PYTHONPATH=src xvfb-run -a -s "-screen 0 1280x800x24" python benchmarks/bench_map_ui.py

The shapes sample at pool2 (2000 positions of 40 images analysed) is shown with
its views; then the stack's slider moves through 50 images, waiting for each
image's map, twice, interleaved: without the map overlay (the baseline: the same
moves, the same views) and with it. A 10 ms Qt timer measures the main thread: its
longest gap is the longest stall. Printed: per case, the wall and CPU seconds, the
longest stall, the map time per image (in the worker), and the 1-minute load
average; and the ratio of the stalls. (The science's own per-image time, e.g. for
224 x 224 images at three layers, is ``bench_topology_map.py``'s.)
"""

from __future__ import annotations

import os
import time

import numpy as np

N_IMAGES = 50
TARGET_STALL_S = 0.25


class Ticks:
    """Times of the ticks of a 10 ms QTimer (the main thread's heartbeat)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def longest_gap(self) -> float:
        return float(np.diff(self.ticks).max()) if len(self.ticks) > 1 else float("nan")


def settle(until, timeout: float = 60.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + timeout
    while not until() and time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.002)


def slide(viewer, maps, key, images, with_map: bool) -> dict[str, float]:
    """Move through ``images`` one by one (waiting for each map when it is on)."""
    maps.cache.clear()
    maps.timings.clear()
    maps.show_map(key, on=with_map)
    settle(lambda: not maps.busy)
    ticks = Ticks()
    wall, cpu = time.perf_counter(), time.process_time()
    ticks.ticks.append(time.perf_counter())
    ticks.timer.start()
    for image in images:
        viewer.dims.set_point(0, int(image))
        settle(lambda: not maps.busy)
        settle(lambda: False, timeout=0.02)  # a repaint between images
    ticks.timer.stop()
    ticks.ticks.append(time.perf_counter())
    return {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "stall_s": ticks.longest_gap(),
        "map_s": float(np.median(maps.timings)) if maps.timings else float("nan"),
        "map_max_s": float(np.max(maps.timings)) if maps.timings else float("nan"),
        "maps": len(maps.timings),
    }


def main() -> None:
    import napari

    from napari_topolens import extract_activations, load_sample
    from napari_topolens.topology.analysis import analyze
    from napari_topolens.ui.model_registry import remember_model
    from napari_topolens.ui.state import state_for
    from napari_topolens.ui.topology_maps import maps_for
    from napari_topolens.ui.views import show_analysis

    sample = load_sample("shapes")
    analysed = np.arange(0, 1200, 30)
    clouds = extract_activations(
        sample.model, sample.images[analysed], ["pool2"], sampling="all_positions", max_points=2000
    )
    analysis = analyze(
        clouds,
        sample.labels[analysed],
        class_names=sample.class_names,
        provenance={"sample": "shapes"},
    )
    remember_model(analysis, sample.model)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 800)
    layer = viewer.add_image(sample.images, name="shapes")
    show_analysis(viewer, analysis, "pool2", image_layer=layer)
    key = state_for(viewer).key_of(analysis)
    maps = maps_for(viewer)
    settle(lambda: False, timeout=1.0)
    images = np.arange(1, 1 + N_IMAGES)  # not the analysed ones only
    print(f"cores {os.cpu_count()}, load average (1 min) {os.getloadavg()[0]:.2f}")
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "map": []}
    for _round in range(2):
        results["baseline"].append(slide(viewer, maps, key, images, with_map=False))
        results["map"].append(slide(viewer, maps, key, images, with_map=True))
    for name, runs in results.items():
        for run in runs:
            print(
                f"{name:8s} wall {run['wall_s']:6.2f} s  cpu {run['cpu_s']:6.2f} s  "
                f"longest stall {1000 * run['stall_s']:6.1f} ms  maps {run['maps']:3d}  "
                f"map per image {1000 * run['map_s']:6.1f} ms (max {1000 * run['map_max_s']:.1f})"
            )
    base_stall = max(r["stall_s"] for r in results["baseline"])
    map_stall = max(r["stall_s"] for r in results["map"])
    print(
        f"longest stall with the map / without: {map_stall / base_stall:.2f} "
        f"({1000 * map_stall:.0f} ms vs {1000 * base_stall:.0f} ms; target <= "
        f"{1000 * TARGET_STALL_S:.0f} ms)"
    )
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}")
    viewer.close()


if __name__ == "__main__":
    main()
