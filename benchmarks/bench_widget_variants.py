"""Time the analysis widget's run with variants against the same run without them.

Run from the repository root (needs a display, e.g. ``xvfb-run``)::

    PYTHONPATH=src python benchmarks/bench_widget_variants.py [--images 120] [--repeats 1]

The digits sample in a viewer, ``--images`` marked images of its 1,797 (every 15th),
the sample model's ``pool2`` and ``fc1``, ``top_norm`` sampling, the published
defaults. The baseline, measured in the same run (after a warm-up run that pays the
imports and the receptive-field probes), is a widget run without variants: press
Run until the views are shown. Then the same run with ``gaussian:0``,
``gaussian:0.3`` and ``prune:0.5``; its time is printed as a ratio to the baseline,
with each variant's own seconds (perturb/compress, extraction, analysis,
comparison) as the worker recorded them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("gaussian:0", "gaussian:0.3", "prune:0.5")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))

    import napari
    from qtpy.QtCore import QEventLoop

    from napari_topolens.ui.analysis_widget import AnalysisWidget
    from napari_topolens.ui.canvas import close_canvases
    from napari_topolens.ui.widget_parts import MARKED_IMAGES

    viewer = napari.Viewer(show=False)
    (images,) = viewer.open_sample("napari-topolens", "digits")
    chosen = np.arange(2, len(images.data), 15)[: args.images]
    marks = np.zeros(images.data.shape, dtype=np.uint8)
    marks[chosen, 3:5, 3:5] = 1
    viewer.add_labels(marks, name="marks")
    widget = AnalysisWidget(viewer)
    widget.model_source.value = "sample: digits"
    widget.load_model()
    widget.module_tree.set_checked(["pool2", "fc1"])
    widget.which.value = MARKED_IMAGES
    widget.marker_layer.value = viewer.layers["marks"]

    def one_run(specs: tuple[str, ...]) -> tuple[float, object]:
        widget.variant_form.specs_list.clear()
        for text in specs:
            widget.variant_form.add(text=text)
        for layer in [layer for layer in viewer.layers if "topolens" in layer.metadata]:
            viewer.layers.remove(layer)
        loop = QEventLoop()
        started = time.perf_counter()
        worker = widget.run()
        if worker is None:
            raise SystemExit(f"refused: {widget.status.value}")
        worker.finished.connect(loop.quit)
        loop.exec()
        seconds = time.perf_counter() - started
        if widget.analysis is None:
            raise SystemExit(f"failed: {widget.status.value}")
        return seconds, widget.analysis

    one_run(())  # warm-up: imports, receptive-field probes
    base_times, variant_times = [], []
    analysis = None
    for _ in range(args.repeats):
        base_times.append(one_run(())[0])
        seconds, analysis = one_run(VARIANTS)
        variant_times.append(seconds)
    base, with_variants = statistics.median(base_times), statistics.median(variant_times)
    print(f"digits, {len(chosen)} of {len(images.data)} images, layers pool2 + fc1, top_norm")
    print(f"baseline: widget run without variants      {base:7.2f} s")
    print(
        f"with {len(VARIANTS)} variants ({', '.join(VARIANTS)}) {with_variants:7.2f} s  "
        f"ratio {with_variants / base:.2f}"
    )
    assert analysis is not None
    for variant in analysis.variants:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in variant.seconds.items())
        print(f"  {variant.name:<14} {sum(variant.seconds.values()):6.2f} s ({parts})")
    close_canvases()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
