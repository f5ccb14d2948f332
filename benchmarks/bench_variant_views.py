"""Time the variant views against the base's own show: side by side, a switch, a drift pick.

Run from the repository root (needs a display, e.g. ``xvfb-run``)::

    PYTHONPATH=src python benchmarks/bench_variant_views.py [--images 200]

For a digits run (pool1, pool2, fc1) with three variants (gaussian:0.1, blur:1.0,
prune:0.5), prints: the base's show (the baseline, measured in the same run), the
variants' show (image layers + the first variant beside the base), a "Compare with"
switch, a network-layer switch of the base that the variant follows, the first
drift view and a most-moved click, each as seconds and as a multiple of the
baseline, and the longest main-thread stall of the incremental variants show.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args(argv)

    import napari
    from conftest import TickRecorder
    from qtpy.QtWidgets import QApplication

    from napari_topolens import load_sample, run_variants
    from napari_topolens.ui.variants import variant_views_for
    from napari_topolens.ui.views import (
        canvas_for,
        show_analysis,
        show_variants,
        show_variants_incrementally,
    )

    sample = load_sample("digits")
    index = sample.test_index[: args.images]
    base = run_variants(
        sample.model,
        sample.images[index],
        ["pool1", "pool2", "fc1"],
        ["gaussian:0.1", "blur:1.0", "prune:0.5"],
        labels=sample.labels[index],
        class_names=sample.class_names,
        sampling="top_norm",
        provenance={"sample": "digits"},
    )
    # the window of a laptop screen, with the analysis widget docked from the Plugins menu
    # (napari's door), as in benchmarks/screenshots.py: the canvas gets the size users see
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 800)
    viewer.window.add_plugin_dock_widget("napari-topolens", "Topology analysis")
    image_layer = viewer.add_image(base.images, name="digits")

    def timed(action) -> float:
        started = time.perf_counter()
        action()
        for _ in range(5):
            QApplication.processEvents()
        return time.perf_counter() - started

    baseline = timed(lambda: show_analysis(viewer, base, "fc1", image_layer=image_layer))
    rows = [("base show (baseline)", baseline)]
    rows.append(("variants show, at once", timed(lambda: show_variants(viewer, base))))
    rows.append(
        ("compare switch to prune:0.5", timed(lambda: show_variants(viewer, base, "prune:0.5")))
    )
    rows.append(
        ("base layer switch, variant follows", timed(lambda: show_analysis(viewer, base, "pool2")))
    )
    canvas = canvas_for(viewer)
    rows.append(("drift view, first pick", timed(lambda: canvas.show_panel("drift"))))
    controls = variant_views_for(viewer)
    layer, image, score = base.variants[2].comparison.most_moved(1)[0]
    rows.append(
        (
            "most-moved click",
            timed(lambda: controls.show_moved(controls.current, layer, image, score)),
        )
    )
    canvas.show_panel("mapper")
    recorder = TickRecorder()
    recorder.start()
    started = time.perf_counter()
    show = show_variants_incrementally(viewer, base, "gaussian:0.1")
    while not show.done:
        QApplication.processEvents()
    incremental = time.perf_counter() - started
    recorder.stop()
    rows.append(("compare switch, one layer per turn", incremental))
    for name, seconds in rows:
        print(f"{name:40s} {seconds:7.3f} s  {seconds / baseline:5.2f} x baseline")
    print(f"{'longest stall of the incremental switch':40s} {recorder.longest_gap():7.3f} s")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
