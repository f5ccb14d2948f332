"""How long napari alone stalls its main thread on this machine: the floor under
``bench_responsiveness.py``'s targets.

Run from the repository root (needs a display, e.g. ``xvfb-run``)::

    python benchmarks/bench_napari_floor.py [--load N]

No plugin code runs: a shown viewer at 1280×800, then what any napari user does, each
a phase followed by 1 s of the event loop: a second viewer shown, its first text (one
character in its text overlay, as the plugin's canvas draws first; then it is closed),
an image stack added, a Points layer whose text is the viewer's first, a second one with
text, the slider stepped, a widget docked, a Shapes layer added. The same meter as
``bench_responsiveness.py``: a 10 ms ``QTimer``'s ticks, whose longest gap is the
phase's stall; the main thread's CPU time in that gap is what a free core would see.
``--load N`` starts N busy loops, as there.

A phase of napari's own whose stall is over ``bench_responsiveness.py``'s 250 ms target
says that no plugin can meet the target for a step that needs the same paint on this
machine at this load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_responsiveness import STALL_TARGET_S, Ticks, load_average, start_busy

#: The event loop run after each phase's step (s): its paints and timers.
SETTLE_S = 1.0
SCREEN = (1280, 800)
#: The longest wait for the load average to near ``--load`` before measuring (s).
LOAD_WAIT_S = 90.0


def spin(app, seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        app.processEvents()
        time.sleep(0.001)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=int, default=0, help="busy-loop processes to start")
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication, QLabel

    before = load_average()
    if args.load:
        start_busy(args.load)
        # the 1-minute load average moves slowly: up to a minute for it to near N
        deadline = time.perf_counter() + LOAD_WAIT_S
        while load_average() < 0.8 * args.load and time.perf_counter() < deadline:
            time.sleep(1)
    print(
        f"{len(__import__('os').sched_getaffinity(0))} CPUs; load average {before:.2f} before, "
        f"{load_average():.2f} after starting {args.load} busy loop(s)"
    )
    viewer = napari.Viewer(show=True)
    viewer.window.resize(*SCREEN)
    app = QApplication.instance()
    spin(app, 2.0)
    ticks = Ticks()
    ticks.start()
    spin(app, 0.5)
    rng = np.random.default_rng(0)
    kept: list[object] = []

    def phase(name: str, step) -> float:
        ticks.tick()  # the step's own time counts (it runs on the main thread)
        began = ticks.ticks[-1][0]
        step()
        spin(app, SETTLE_S)
        ended = time.perf_counter()
        stall = ticks.stall(began, ended)
        ((since, until),) = ticks.worst_gaps(began, ended, 1)
        cpu = ticks.gap_cpu(since, until)
        mark = "OVER" if stall > STALL_TARGET_S else "ok"
        print(
            f"{name:<44} stall {1000 * stall:6.0f} ms {mark:<4}  main-thread cpu in it "
            f"{1000 * cpu:5.0f} ms  (load {load_average():.2f})"
        )
        return stall

    def second_viewer() -> None:
        other = napari.Viewer(show=True)
        other.window.resize(*SCREEN)
        kept.append(other)

    def points(name: str) -> None:
        coords = rng.uniform(0, 64, size=(100, 3))
        coords[:, 0] = 0
        viewer.add_points(
            coords,
            features={"label": [f"p{i}" for i in range(100)]},
            text={"string": "{label}", "size": 8, "color": "white"},
            name=name,
        )

    def step_slider() -> None:
        for index in range(1, 11):
            viewer.dims.set_point(0, index)
            spin(app, 0.1)

    def shapes() -> None:
        boxes = [
            np.array(
                [[0, 2 + i, 2 + i], [0, 2 + i, 30 + i], [0, 20 + i, 30 + i], [0, 20 + i, 2 + i]]
            )
            for i in range(20)
        ]
        viewer.add_shapes(
            boxes, shape_type="rectangle", edge_color="yellow", face_color="transparent"
        )

    def overlay_text() -> None:
        (other,) = kept
        overlay = other.canvas.overlays["text"]  # type: ignore[attr-defined]
        overlay.text = "0"
        overlay.visible = True

    def close_second_viewer() -> None:
        # (not a phase: the later ones paint the first viewer only, as a user's would)
        other = kept.pop()
        other.close()  # type: ignore[attr-defined]
        spin(app, SETTLE_S)

    stack = rng.random((1200, 64, 64), dtype=np.float32)  # (made before: not napari's)

    stalls = [
        phase("a second viewer shown", second_viewer),
        phase("its first text (one character, overlay)", overlay_text),
    ]
    close_second_viewer()
    stalls += [
        phase("an image stack added (1,200 × 64 × 64)", lambda: viewer.add_image(stack)),
        phase("a Points layer with the first text", lambda: points("first text")),
        phase("a second Points layer with text", lambda: points("more text")),
        phase("the slider stepped 10 times", step_slider),
        phase("a widget docked", lambda: viewer.window.add_dock_widget(QLabel("a dock"))),
        phase("a Shapes layer added (20 rectangles)", shapes),
    ]
    print(
        f"summary: napari alone, longest stall {1000 * max(stalls):.0f} ms "
        f"(target {1000 * STALL_TARGET_S:.0f}); load average now {load_average():.2f}"
    )
    for other in kept:
        other.close()  # type: ignore[attr-defined]
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
