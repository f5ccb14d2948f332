"""How long the napari main thread stalls while a user runs, shows, picks, switches and reopens.

Run from the repository root (needs a display, e.g. ``xvfb-run``)::

    PYTHONPATH=src python benchmarks/bench_responsiveness.py [--load N] [--variants SPEC ...]

The README walkthrough in a shown viewer: the shapes sample, the analysis widget with
the sample model's default layers and the published defaults on ``--images`` of its
1,200 images (marked in a Labels layer, evenly spread; default 300), plus
``--variants`` (default one, ``gaussian:0.3``); Run until the views are shown; the views
of the panels not picked yet made ahead while idle (code that does so: a phase of its
own); then every view picked in the canvas once (done when its views are visible and
its frame and text drawn), explorer layer switches, and the saved analysis reopened in
a new viewer. A 10 ms ``QTimer`` on the main thread records its ticks; a phase's longest
gap between ticks is the longest time the GUI could not react (its *stall*). The
main thread's CPU time is read at each tick too: the most it spent between two ticks
is the stall a machine with a free core would see (on a loaded machine the wall
stall is that plus the time the main thread waited for a core); its CPU time over the
whole phase is printed too (*in all*: the work a pick costs, whatever the load; the
event loop's 1 ms polling included).

Targets (issue 15): stall <= 250 ms in every phase (the worker's computing included),
a view pick <= 300 ms, an explorer layer switch <= 1 s, reopen to views <= 3 s (the
reopened analysis's Mapper view visible; what its show adds after that, the variants, the
overlay and the gallery, is measured as a phase of its own).

``--stacks`` prints what the main thread was doing in each phase's longest stall
(its Python stack sampled every 5 ms; ``--gaps N``: in its N longest stalls);
``--profile DIR`` writes a cProfile of each phase's main-thread work. ``--until-ahead``
stops after the views made ahead (the run's two phases only).

``--src DIR`` measures the package in ``DIR`` (a baseline's worktree's ``src``) with
this script, so both sides print the same columns.

``--load N`` starts N busy-loop processes first (emulating a loaded laptop) and stops
them at exit. The 1-minute load average is printed before and after: on a shared
machine it is the real one, whatever ``--load`` asked for. Wall and CPU seconds of
this process are printed for each phase.
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

STALL_TARGET_S = 0.25
PICK_TARGET_S = 0.3
SWITCH_TARGET_S = 1.0
REOPEN_TARGET_S = 3.0
#: The least time the widgets' opening is watched for (s): a user looking at the form.
OPEN_SETTLE_S = 1.5
#: How long the second viewer is left to show and paint before the saved analysis is
#: opened in it (s): a user opens the file in a viewer already on screen.
VIEWER_SETTLE_S = 1.5


def start_busy(n: int) -> list[subprocess.Popen]:
    """``n`` busy-loop processes, stopped (by their own ids) at exit."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]

    def stop() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()

    atexit.register(stop)
    return procs


def process_and_children_cpu() -> float:
    """CPU seconds of this process and of its child processes, live ones included (the
    topology's child computes there; Linux's ``/proc``, elsewhere reaped children only)."""
    import multiprocessing

    total = time.process_time()
    times = os.times()
    total += times.children_user + times.children_system
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    pids = [child.pid for child in multiprocessing.active_children()]
    try:  # the topology's child (absent from a baseline's code)
        from napari_topolens.topology.child_process import live_children

        pids += [child.pid for child in live_children()]
    except ImportError:
        pass
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def load_average() -> float:
    return os.getloadavg()[0]


class Ticks:
    """Times of the ticks of a 10 ms QTimer on the main thread: wall clock, and the main
    thread's own CPU time (``time.thread_time``) at each tick."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[tuple[float, float]] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self.tick)

    def tick(self) -> None:
        self.ticks.append((time.perf_counter(), time.thread_time()))

    def start(self) -> None:
        self.tick()
        self.timer.start()

    def stall(self, since: float, until: float) -> float:
        """Longest gap between ticks (and the phase's ends) in ``[since, until]``."""
        inside = [since, *(t for t, _ in self.ticks if since < t < until), until]
        return max(b - a for a, b in itertools.pairwise(inside))

    def worst_gaps(self, since: float, until: float, n: int = 1) -> list[tuple[float, float]]:
        """The ends of the ``n`` longest gaps between ticks in ``[since, until]``."""
        inside = [since, *(t for t, _ in self.ticks if since < t < until), until]
        gaps = sorted(itertools.pairwise(inside), key=lambda pair: pair[0] - pair[1])
        return gaps[:n]

    def gap_cpu(self, since: float, until: float) -> float:
        """The main thread's CPU time between the ticks at ``since`` and ``until``."""
        times = dict(self.ticks)
        return times.get(until, float("nan")) - times.get(since, float("nan"))

    def stall_cpu(self, since: float, until: float) -> float:
        """The most main-thread CPU time spent between two ticks in ``[since, until]``: the
        stall a machine with a free core would see (the wall stall less waiting for one)."""
        inside = [c for t, c in self.ticks if since <= t <= until]
        return max((b - a for a, b in itertools.pairwise(inside)), default=float("nan"))


def wait_until(app: Any, done: Callable[[], bool], timeout: float = 600.0) -> float:
    """Run the event loop until ``done()``; returns the time it became true."""
    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > deadline:
            raise SystemExit("timed out waiting")
        app.processEvents()
        time.sleep(0.001)
    return time.perf_counter()


def _stack_of(frame: Any) -> tuple[str, ...]:
    stack = []
    while frame is not None:
        code = frame.f_code
        stack.append(f"{Path(code.co_filename).name}:{code.co_name}")
        frame = frame.f_back
    return tuple(reversed(stack))


class StackSampler:
    """Samples the main thread's Python stack every 5 ms from a daemon thread, to say
    what the main thread was doing in a phase's longest stall (``--stacks``)."""

    def __init__(self, others: bool = False) -> None:
        import threading

        self.samples: list[tuple[float, tuple[str, ...]]] = []
        #: With ``others``: the other threads' stacks (the worker's) at the same times.
        self.other_samples: list[tuple[float, tuple[str, ...]]] = []
        self._others = others
        self._main = threading.main_thread().ident
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with tempfile.TemporaryFile(mode="w+") as dump:
            while not self._stop:
                now = time.perf_counter()
                if self._others:
                    main, other = self._all_stacks(dump)
                    self.other_samples.append((now, other))
                else:
                    main = _stack_of(sys._current_frames().get(self._main))
                self.samples.append((now, main))
                time.sleep(0.005)

    def _all_stacks(self, dump: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The main thread's stack and the busiest other thread's (the deepest: idle ones
        wait shallow), through faulthandler: written in C, holding the GIL throughout
        (walking a running thread's frames in Python crashed 3.11)."""
        import faulthandler
        import re
        import threading

        dump.seek(0)
        dump.truncate()
        faulthandler.dump_traceback(dump, all_threads=True)
        dump.seek(0)
        stacks: dict[int, list[str]] = {}
        current: list[str] | None = None
        for line in dump.read().splitlines():
            found = re.match(r"(?:Current thread|Thread) 0x([0-9a-f]+)", line)
            if found:
                current = stacks.setdefault(int(found.group(1), 16), [])
            elif current is not None and line.startswith("  File "):
                where, _, func = line.rpartition(" in ")
                name = Path(where.split('"')[1]).name if '"' in where else where
                current.append(f"{name}:{func}")
        main = tuple(reversed(stacks.pop(self._main, [])))
        stacks.pop(threading.get_ident(), None)
        other = max((tuple(reversed(st)) for st in stacks.values()), key=len, default=())
        return main, other

    def report(self, since: float, until: float, top: int = 12, others: bool = False) -> str:
        """The functions most often on the stack in ``[since, until]`` (share of samples);
        ``others``: on the other threads' (the worker's) stack instead."""
        from collections import Counter

        samples = self.other_samples if others else self.samples
        inside = [stack for t, stack in samples if since <= t <= until]
        if not inside:
            return "    (no samples)"
        counts: Counter[str] = Counter()
        for stack in inside:
            counts.update(set(stack))
        skip = ("bench_responsiveness.py", "threading.py", "<frozen")
        lines = [
            f"    {100 * n / len(inside):5.1f}%  {name}"
            for name, n in counts.most_common()
            if not name.startswith(skip)
        ]
        if others or self._others:  # where the thread was: its innermost calls too
            leaves: Counter[str] = Counter(" < ".join(reversed(stack[-4:])) for stack in inside)
            lines = lines[:top] + [
                f"    {100 * n / len(inside):5.1f}%  at {name}"
                for name, n in leaves.most_common(6 if others else 10)
            ]
            return "\n".join(lines)
        return "\n".join(lines[:top])


class Phases:
    def __init__(
        self,
        ticks: Ticks,
        profile: Path | None = None,
        sampler: StackSampler | None = None,
        gaps: int = 1,
    ) -> None:
        self.ticks = ticks
        self.gaps = gaps
        self.profile = profile
        self.sampler = sampler
        self.rows: list[tuple[str, float, float, float, float | None, float]] = []
        #: The main thread's CPU time over each phase (the event loop's polling included).
        self.main_cpu: dict[str, float] = {}

    def measure(
        self,
        name: str,
        start: Callable[[], Any],
        done: Callable[[], bool],
        app: Any,
        target: float | None = None,
    ) -> float:
        profiler = None
        if self.profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        began, cpu = time.perf_counter(), process_and_children_cpu()
        main_cpu = time.thread_time()
        self.ticks.tick()
        start()
        ended = wait_until(app, done)
        main_cpu = time.thread_time() - main_cpu
        if profiler is not None and self.profile is not None:
            profiler.disable()
            self.profile.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(self.profile / (name.replace(" ", "_").replace(":", "") + ".prof"))
        cpu = process_and_children_cpu() - cpu
        self.ticks.tick()
        stall = self.ticks.stall(began, ended)
        worst = self.ticks.worst_gaps(began, ended, self.gaps)
        stall_cpu = self.ticks.stall_cpu(began, time.perf_counter())
        self.rows.append((name, ended - began, cpu, stall, target, stall_cpu))
        self.main_cpu[name] = main_cpu
        flag = "" if target is None else ("  ok" if ended - began <= target else "  OVER")
        stall_flag = "ok" if stall <= STALL_TARGET_S else "OVER"
        print(
            f"{name:<34} {ended - began:7.2f} s wall {cpu:6.2f} s cpu  stall "
            f"{1000 * stall:6.0f} ms {stall_flag}{flag}  main-thread cpu in the longest stretch "
            f"{1000 * stall_cpu:5.0f} ms, in all {1000 * main_cpu:5.0f} ms  (load {load_average():.2f})",
            flush=True,
        )
        if self.sampler is not None:
            for since, until in worst:
                cpu_ms = 1000 * self.ticks.gap_cpu(since, until)
                print(
                    f"  a stall of {1000 * (until - since):.0f} ms "
                    f"(main-thread cpu {cpu_ms:.0f} ms):",
                    flush=True,
                )
                print(self.sampler.report(since, until), flush=True)
                if self.sampler.other_samples:
                    print("   meanwhile in the other threads (the worker):", flush=True)
                    print(self.sampler.report(since, until, top=25, others=True), flush=True)
        return ended - began


def panel_visible(state: Any, panel: str) -> bool:
    from napari_topolens.ui import view_data as vd

    wanted = set(vd.PANEL_VIEWS[panel])
    for entry in state:
        if not entry.network_layer:
            continue
        if panel in vd.VARIANT_PANELS and entry.variant_of is not None:
            continue
        if not any(view in wanted and layer.visible for view, layer in entry.layers.items()):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=int, default=0, help="busy-loop processes to start")
    parser.add_argument("--variants", nargs="*", default=["gaussian:0.3"])
    parser.add_argument("--switches", type=int, default=3)
    parser.add_argument(
        "--until-ahead",
        action="store_true",
        help="stop after the views made ahead (the run's phases only: no picks, no reopen)",
    )
    parser.add_argument(
        "--only-reopen",
        action="store_true",
        help="measure the run and the reopen only (no picks, no switches): quicker",
    )
    parser.add_argument(
        "--stacks",
        action="store_true",
        help="print what the main thread did in each phase's longest stall (sampled)",
    )
    parser.add_argument(
        "--worker-stacks",
        action="store_true",
        help="with --stacks: also what the other threads (the worker) did in those stalls",
    )
    parser.add_argument(
        "--gaps",
        type=int,
        default=1,
        help="with --stacks: what the main thread did in each phase's N longest stalls",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="folder for a cProfile of each phase (main thread)",
    )
    parser.add_argument(
        "--images", type=int, default=300, help="images analysed (marked, evenly spread); 0: all"
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=ROOT / "src",
        help="the package's source folder to measure (a baseline's worktree; default: this one)",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.src))
    before = load_average()
    if args.load:
        start_busy(args.load)
        time.sleep(20)  # let the load average feel them a little

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_topolens.ui import view_data as vd
    from napari_topolens.ui.analysis_widget import AnalysisWidget
    from napari_topolens.ui.canvas import canvas_for, close_canvases, existing_canvas
    from napari_topolens.ui.explorer_widget import ExplorerWidget
    from napari_topolens.ui.state import state_for

    print(
        f"{os.cpu_count()} CPUs; load average {before:.2f} before, {load_average():.2f} after "
        f"starting {args.load} busy loop(s)",
        flush=True,
    )
    viewer = napari.Viewer()
    app = QApplication.instance()
    viewer.window.resize(1280, 800)
    (stack,) = viewer.open_sample("napari-topolens", "shapes")
    chosen = None
    if args.images and args.images < len(stack.data):
        import numpy as np

        chosen = np.linspace(0, len(stack.data) - 1, args.images).round().astype(int)
        marks = np.zeros(stack.data.shape[:3], dtype=np.uint8)
        marks[chosen, 1:3, 1:3] = 1
        viewer.add_labels(marks, name="marks")
    ticks = Ticks()
    ticks.start()
    phases = Phases(
        ticks, args.profile, StackSampler(args.worker_stacks) if args.stacks else None, args.gaps
    )
    docked: dict[str, Any] = {}

    def open_widgets() -> None:
        # built with the real viewer, not through napari's dock menu: what is timed here
        # is the work, not how the widget finds the viewer
        widget = docked["analysis"] = AnalysisWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Topology analysis")
        explorer = docked["explorer"] = ExplorerWidget(viewer)
        viewer.window.add_dock_widget(explorer, name="Topology explorer")
        docked["at"] = time.perf_counter()

    def opened() -> bool:
        # what the product does after the widgets are docked, while the user fills the
        # form (code that makes the views dock then, and draws text ahead): done once its
        # glyph warmers are; at least the time a user takes to look at the form
        if time.perf_counter() - docked["at"] < OPEN_SETTLE_S:
            return False
        try:
            from napari_topolens.ui.glyphs import viewer_warmer_of, warmer_of
        except ImportError:
            return True
        made = existing_canvas(viewer)
        from napari_topolens.ui import analysis_widget

        if hasattr(analysis_widget, "CANVAS_AFTER_OPEN_MS") and not getattr(made, "docked", 0):
            return False  # code that makes the views dock on opening: not made yet
        warmers = [viewer_warmer_of(viewer), warmer_of(made.model) if made else None]
        return all(w is None or w.done for w in warmers)

    phases.measure("open the widgets (until idle)", open_widgets, opened, app)
    widget, explorer = docked["analysis"], docked["explorer"]
    widget.load_model()
    if chosen is not None:
        from napari_topolens.ui.widget_parts import MARKED_IMAGES

        widget.image_layer.value = stack
        widget.which.value = MARKED_IMAGES
        widget.marker_layer.value = viewer.layers["marks"]
    for text in args.variants:
        widget.variant_form.add(text=text)
    app.processEvents()
    state = state_for(viewer)

    job: dict[str, Any] = {}
    finished: list[float] = []
    inserted: list[float] = []
    # the canvas is made by the product (the analysis widget's Run, or the first show), as
    # a user's viewer gets it: its making is inside the measured run; its first view
    # layer is noticed once it exists
    watching: list[Any] = []

    def watch_canvas() -> None:
        made = existing_canvas(viewer)
        if made is not None and not watching:
            watching.append(made)
            made.model.layers.events.inserted.connect(
                lambda _e: inserted.append(time.perf_counter())
            )
            if len(made.model.layers) and not inserted:  # (added before it was noticed)
                inserted.append(time.perf_counter())

    def press_run() -> None:
        began = time.perf_counter()
        worker = widget.run()
        job["press"] = time.perf_counter() - began
        if worker is None:
            raise SystemExit(f"refused: {widget.status.value}")
        worker.finished.connect(lambda: finished.append(time.perf_counter()))

    began = time.perf_counter()

    def run_finished() -> bool:
        watch_canvas()
        return bool(finished)

    phases.measure("run: press Run until shown", press_run, run_finished, app)
    if widget.analysis is None:
        raise SystemExit(f"failed: {widget.status.value}")
    canvas = canvas_for(viewer)
    first = min(inserted)
    print(
        f"  pressing Run took {1000 * job['press']:.0f} ms; computing stall "
        f"{1000 * ticks.stall(began, first):.0f} ms (main-thread cpu in the longest stretch "
        f"{1000 * ticks.stall_cpu(began, first):.0f} ms); views added over "
        f"{finished[0] - first:.2f} s, stall {1000 * ticks.stall(first, finished[0]):.0f} ms",
        flush=True,
    )
    app.processEvents()
    # the views of the panels not picked yet, made ahead (hidden) while the viewer is idle,
    # in code that does so: measured as a phase of its own, the picks after it
    ahead = getattr(canvas.panel_builder, "making_ahead", None)
    if ahead is not None:
        phases.measure("views made ahead after the run", lambda: None, lambda: not ahead(), app)
    if args.until_ahead:
        close_canvases()
        viewer.close()
        worst = max(row[3] for row in phases.rows)
        worst_cpu = max(row[5] for row in phases.rows)
        print(
            f"summary (until the views made ahead): longest stall {1000 * worst:.0f} ms "
            f"(target 250; main-thread cpu {1000 * worst_cpu:.0f} ms); load average now "
            f"{load_average():.2f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        return 0

    panels = [canvas.picker.itemData(i) for i in range(canvas.picker.count())]
    # done when its views are visible and its frame and text drawn (code before the
    # canvas had ``busy`` drew them before the pick returned)
    busy = getattr(canvas, "busy", lambda: False)
    for panel in [] if args.only_reopen else [p for p in panels if p != "mapper"] + ["mapper"]:
        index = canvas.picker.findData(panel)
        phases.measure(
            f"pick view {panel}",
            lambda index=index: canvas.picker.setCurrentIndex(index),
            lambda panel=panel: panel_visible(state, panel) and not busy(),
            app,
            PICK_TARGET_S,
        )

    analysis = widget.analysis
    names = list(analysis.layers)
    for k in range(0 if args.only_reopen else args.switches):
        name = (
            names[k % len(names)]
            if names[k % len(names)] != explorer.layer.value
            else (names[(k + 1) % len(names)])
        )

        def switch(name: str = name) -> None:
            explorer.layer.value = name

        def switched(name: str = name) -> bool:
            show = explorer.pending_show
            entry = state.get(explorer.analysis_key.value)
            return show is not None and show.done and entry.network_layer == name

        phases.measure(f"explorer switch to {name}", switch, switched, app, SWITCH_TARGET_S)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.topolens"
        analysis.save(path)
        first_viewer = viewer  # kept open: its docked widgets stay connected to its state
        viewer = napari.Viewer()
        viewer.window.resize(1280, 800)
        # shown and painted before the user opens a file (its first paint, GL set up,
        # is napari's own: 0.3-0.4 s; measured within the reopen when open came at once)
        settled = time.perf_counter() + VIEWER_SETTLE_S
        wait_until(app, lambda: time.perf_counter() > settled)

        def reopen() -> None:
            viewer.open(str(path), plugin="napari-topolens")

        def views_shown() -> bool:
            reopened = state_for(viewer)
            return any(e.network_layer and "mapper_nodes" in e.layers for e in reopened) and (
                panel_visible(reopened, "mapper")
            )

        phases.measure("reopen to views", reopen, views_shown, app, REOPEN_TARGET_S)
        # what a reopen shows after its views (the variants, the overlay and gallery):
        # its stalls are a user's too
        from napari_topolens.ui.show import IncrementalShow

        phases.measure(
            "reopen: the rest of its show",
            lambda: None,
            lambda: all(s.kind == "prebuild" for s in IncrementalShow.running()),
            app,
        )
    close_canvases()
    viewer.close()
    first_viewer.close()

    worst = max(row[3] for row in phases.rows)
    worst_cpu = max(row[5] for row in phases.rows)
    picks = [row[1] for row in phases.rows if row[0].startswith("pick")] or [0.0]
    switches = [row[1] for row in phases.rows if row[0].startswith("explorer")] or [0.0]
    (reopen_s,) = [row[1] for row in phases.rows if row[0] == "reopen to views"]
    print(
        f"summary: longest stall {1000 * worst:.0f} ms (target 250; main-thread cpu "
        f"{1000 * worst_cpu:.0f} ms); slowest pick "
        f"{1000 * max(picks):.0f} ms (target 300); slowest switch {1000 * max(switches):.0f} ms "
        f"(target 1000); reopen {reopen_s:.2f} s (target 3); load average now "
        f"{load_average():.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    del vd
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
