"""Screenshots at exactly 1280 x 800 of every step of the README walkthrough, with variants.

Run from the repository root (needs a display, e.g. ``xvfb-run -s "-screen 0 1280x800x24"``)::

    PYTHONPATH=src python benchmarks/screenshots.py [--out docs] [--cases walkthrough,rgb]

Everything goes through napari's own doors, as a user's clicks do: the sample through
``viewer.open_sample``, the widgets through ``viewer.window.add_plugin_dock_widget``
(so they get napari's viewer proxy), the analysis through the widget's Run, saving
through ``viewer.layers.save`` and reopening through ``viewer.open``. Each step of the
walkthrough writes ``walkthrough_<n>_<what>.png``; the README's own pictures
(``screenshot_analysis.png``, ``screenshot_links.png``,
``screenshot_variants_{mapper,drift,moved}.png``) are copies of the steps they show.
The ``rgb`` case hands a small plain-torch RGB CNN over with ``add_model`` and writes
``screenshot_rgb_<view>.png``.

The script prints each window's size and the main window's minimum size (both must
stay within 1280 x 800) and fails on any napari warning.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCREEN = (1280, 800)
VARIANTS = ("gaussian:0.1", "blur:1.5", "prune:0.5")
#: README picture -> the walkthrough step it shows.
README_PICTURES = {
    "screenshot_analysis.png": "walkthrough_5_mapper.png",
    "screenshot_links.png": "walkthrough_6_selection.png",
    "screenshot_variants_mapper.png": "walkthrough_6_selection.png",
    "screenshot_variants_drift.png": "walkthrough_5_drift.png",
    "screenshot_variants_moved.png": "walkthrough_6_moved.png",
}


def rgb_images(n: int = 360, size: int = 32, seed: int = 0):
    """Procedural RGB images: a red disk, a green square or a blue ring on coloured noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.uniform(0.0, 0.35, (n, size, size, 3)).astype(np.float32)
    labels = np.arange(n) % 3
    for i, label in enumerate(labels):
        cy, cx = rng.uniform(9, size - 9, 2)
        r = rng.uniform(4, 7)
        d = np.hypot(yy - cy, xx - cx)
        mask = (
            d < r
            if label == 0
            else (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
            if label == 1
            else (d < r) & (d > r - 2.5)
        )
        images[i][mask] = [(0.9, 0.2, 0.15), (0.2, 0.85, 0.25), (0.2, 0.35, 0.95)][label]
    return images, labels, ["red disk", "green square", "blue ring"]


def rgb_model(images: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A small plain-torch CNN, trained for a few seconds on the RGB images."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
    model.add_module("relu1", nn.ReLU())
    model.add_module("pool1", nn.MaxPool2d(2))
    model.add_module("conv2", nn.Conv2d(8, 16, 3, padding=1))
    model.add_module("relu2", nn.ReLU())
    model.add_module("pool2", nn.MaxPool2d(2))
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc1", nn.Linear(16 * 8 * 8, 32))
    model.add_module("relu3", nn.ReLU())
    model.add_module("fc2", nn.Linear(32, 3))
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    y = torch.from_numpy(labels).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
    return model.eval()


class Camera:
    """Settles the event loop, writes screenshots of a viewer's whole window, and checks
    that the window fits the screen and that no warning reached the user."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written: list[Path] = []
        self.warned: list[str] = []
        shown = warnings.showwarning

        def collect(message, category, filename, lineno, file=None, line=None):
            # what a user sees (napari shows RuntimeWarning, UserWarning...); libraries'
            # deprecation notes for developers are not
            if not issubclass(category, (DeprecationWarning, PendingDeprecationWarning)):
                self.warned.append(f"{category.__name__}: {message} ({filename}:{lineno})")
            shown(message, category, filename, lineno, file, line)

        warnings.simplefilter("always", RuntimeWarning)  # every time, not once per place
        warnings.showwarning = collect

    @staticmethod
    def settle(seconds: float = 0.6) -> None:
        from qtpy.QtWidgets import QApplication

        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            QApplication.processEvents()
            time.sleep(0.01)

    def shoot(self, viewer, docked, name: str) -> Path:
        """``docked``: a widget docked in the viewer's window (its ``window()`` is napari's
        main window, reached through Qt's own API)."""
        from napari.utils.notifications import WarningNotification, notification_manager

        self.settle()
        window = docked.window()
        size, minimum = window.size(), window.minimumSizeHint()
        path = self.out / name
        viewer.screenshot(str(path), canvas_only=False)
        print(
            f"wrote {path}  window {size.width()}x{size.height()}, "
            f"minimum {minimum.width()}x{minimum.height()}"
        )
        if (size.width(), size.height()) != SCREEN or (
            minimum.width() > SCREEN[0] or minimum.height() > SCREEN[1]
        ):
            raise SystemExit(f"{name}: the window does not fit a {SCREEN[0]}x{SCREEN[1]} screen")
        self.warned += [
            str(record.message)
            for record in notification_manager.records
            if isinstance(record, WarningNotification) and str(record.message) not in self.warned
        ]
        if self.warned:
            raise SystemExit(f"{name}: warnings reached the user: {self.warned}")
        self.written.append(path)
        return path


def new_viewer():
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(*SCREEN)
    return viewer


def wait_for_run(widget, camera: Camera, timeout: float = 1800.0) -> None:
    started = time.perf_counter()
    while widget.worker is not None:
        camera.settle(0.2)
        if time.perf_counter() - started > timeout:
            raise SystemExit("the analysis did not finish in time")


def wait_for_views(canvas, camera: Camera, timeout: float = 600.0) -> None:
    """Until the picked panel's views are made and drawn (a shot before shows empty frames)."""
    started = time.perf_counter()
    camera.settle(0.2)
    while canvas.busy():
        camera.settle(0.2)
        if time.perf_counter() - started > timeout:
            raise SystemExit("the picked views were not drawn in time")


def wait_for_reopened(viewer, camera: Camera, timeout: float = 600.0):
    """Until a reopened analysis shows its Mapper views with the saved compared variant.

    The reader returns at once and fills the viewer in from a worker, so a shot taken
    after a fixed pause may show a half-filled canvas.
    """
    from napari_topolens.ui import view_data as vd
    from napari_topolens.ui.canvas import existing_canvas
    from napari_topolens.ui.state import state_for

    started = time.perf_counter()
    while True:
        camera.settle(0.2)
        canvas = existing_canvas(viewer)
        entries = [e for e in state_for(viewer) if e.network_layer]
        shown = [
            e
            for e in entries
            if any(
                view in vd.PANEL_VIEWS["mapper"] and layer.visible
                for view, layer in e.layers.items()
            )
        ]
        # the saved record names a compared variant: wait for it (30 s at most)
        compared = any(e.variant_of is not None for e in entries)
        settled = compared or time.perf_counter() - started > 30.0
        full = bool(shown) and len(shown) == len(entries)
        if canvas is not None and not canvas.busy() and full and settled:
            return canvas
        if time.perf_counter() - started > timeout:
            raise SystemExit("the reopened analysis did not show its views in time")


def walkthrough(camera: Camera, out: Path) -> None:
    """The README's "Walkthrough in napari", step by step, on the shapes sample."""
    from napari_topolens.ui.canvas import existing_canvas
    from napari_topolens.ui.links import links_for

    viewer = new_viewer()
    # 1. the sample, and the analysis widget from the Plugins menu
    viewer.open_sample("napari-topolens", "shapes")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-topolens", "Topology analysis")
    docked = widget
    camera.settle(1.5)  # the views dock comes below the form once napari has docked it
    camera.shoot(viewer, docked, "walkthrough_1_sample.png")
    # 2. the sample's model, its module tree with the defaults ticked
    widget.load_model()
    camera.shoot(viewer, docked, "walkthrough_2_model.png")
    # 3.-4. images, labels, sampling; variants added in their section
    widget.variants_section.expand(animate=False)
    for spec in VARIANTS:
        widget.variant_form.add(text=spec)
    widget.params_section.collapse(animate=False)
    camera.settle()
    # the form scrolls above Run (the views dock is below it): scrolled to the variants,
    # as a user does
    widget._scroll.ensureWidgetVisible(widget.variants_section)
    camera.shoot(viewer, docked, "walkthrough_4_variants.png")
    widget.run()
    camera.settle(3.0)
    camera.shoot(viewer, docked, "walkthrough_4_running.png")
    wait_for_run(widget, camera)
    camera.settle(2.0)
    # 5. the views, one at a time (the first variant beside the base)
    canvas = existing_canvas(widget._viewer) or existing_canvas(viewer)
    assert canvas is not None, "no Topology views dock"
    wait_for_views(canvas, camera)
    camera.shoot(viewer, docked, "walkthrough_5_mapper.png")
    for index in range(canvas.picker.count()):
        panel = canvas.picker.itemData(index)
        if panel == "mapper":
            continue
        canvas.picker.setCurrentIndex(index)
        wait_for_views(canvas, camera)
        camera.shoot(viewer, docked, f"walkthrough_5_{panel}.png")
    canvas.picker.setCurrentIndex(canvas.picker.findData("mapper"))
    # 6. a node clicked: its images in the gallery; a pixel clicked; a most-moved image
    links = links_for(widget._viewer)
    key = next(k for k in links.keys if links.entry(k).variant_of is None)
    layer = links.shown_layer(key)
    graph = links.analysis(key)[layer].mapper
    links.select_nodes(key, [int(np.argmax(graph.size))])
    camera.shoot(viewer, docked, "walkthrough_6_selection.png")
    image_layer = links.image_layer_of(key)
    shape = image_layer.data.shape
    links.pixel_clicked(key, links.current_image(image_layer) or 0, shape[-2] // 2, shape[-1] // 2)
    camera.shoot(viewer, docked, "walkthrough_6_pixel.png")
    links.clear_selection(key)
    camera.shoot(viewer, docked, "walkthrough_6_cleared.png")
    if canvas.moved_list.count():
        canvas.moved_list.setCurrentRow(0)
        canvas.moved_list.itemClicked.emit(canvas.moved_list.item(0))
        camera.shoot(viewer, docked, "walkthrough_6_moved.png")
    links.clear_selection()  # Esc
    # 7. the explorer: napari's menu entry, then its bar in the views dock
    viewer.window.add_plugin_dock_widget("napari-topolens", "Topology explorer")
    camera.shoot(viewer, docked, "walkthrough_7_explorer.png")
    bar = canvas.explorer
    bar.layer.value = "pool2"
    while bar.pending_show is not None and not bar.pending_show.done:
        camera.settle(0.2)
    camera.settle(4.0)  # the compared variant follows, one layer per event-loop turn
    wait_for_views(canvas, camera)
    for colour in ("purity", "correct"):
        if colour in [value for value in bar.color_by.choices]:
            bar.color_by.value = colour
            camera.shoot(viewer, docked, f"walkthrough_7_{colour}.png")
    bar.color_by.value = "dominant_class"
    bar.edge_threshold.value = 0.2
    bar.class_search.value = "ring"
    camera.shoot(viewer, docked, "walkthrough_7_find_class.png")
    bar.class_search.value = "zebra"
    camera.shoot(viewer, docked, "walkthrough_7_no_class.png")
    bar.class_search.value = ""
    bar.edge_threshold.value = 0.0
    # 8. save through napari's writer, reopen in a new viewer through its reader
    folder = Path(tempfile.mkdtemp()) / "shapes.topolens"
    overlay = next(
        lyr for lyr in viewer.layers if lyr.metadata.get("topolens", {}).get("view") == "overlay"
    )
    viewer.layers.selection = {overlay}
    viewer.layers.save(str(folder), selected=True, plugin="napari-topolens")
    viewer.close()
    camera.settle(1.0)
    reopened = new_viewer()
    reopened.open(str(folder), plugin="napari-topolens")
    reopened_canvas = wait_for_reopened(reopened, camera)
    camera.settle(1.0)
    camera.shoot(reopened, reopened_canvas, "walkthrough_8_reopened.png")
    reopened.close()
    shutil.rmtree(folder.parent, ignore_errors=True)
    for picture, step in README_PICTURES.items():
        if (camera.out / step).exists():
            shutil.copyfile(camera.out / step, out / picture)
            print("copied", camera.out / step, "->", out / picture)


def rgb_case(camera: Camera) -> None:
    """A user's own RGB model handed over with ``add_model``, analysed through the widget."""
    import napari_topolens as tl
    from napari_topolens.ui.canvas import existing_canvas

    images, labels, _names = rgb_images()
    model = rgb_model(images, labels)
    viewer = new_viewer()
    viewer.add_image(images, name="rgb images", rgb=True)
    tl.add_model(viewer, model, name="rgb_net")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-topolens", "Topology analysis")
    docked = widget
    widget.load_model()
    widget.run()
    wait_for_run(widget, camera)
    canvas = existing_canvas(widget._viewer) or existing_canvas(viewer)
    assert canvas is not None, "no Topology views dock"
    for panel in ("mapper", "flow", "layer_distances"):
        canvas.picker.setCurrentIndex(canvas.picker.findData(panel))
        wait_for_views(canvas, camera)
        camera.shoot(viewer, docked, f"screenshot_rgb_{panel}.png")
    viewer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--cases", default="walkthrough,rgb")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.cases.split(","))
    # the steps in docs/walkthrough/, the README's pictures (copies of steps) in docs/
    camera = Camera(out / "walkthrough")
    camera.out.mkdir(parents=True, exist_ok=True)
    if "walkthrough" in wanted:
        walkthrough(camera, out)
    if "rgb" in wanted:
        rgb_case(camera)
    from napari_topolens.ui.canvas import close_canvases

    close_canvases()
    print(f"{len(camera.written)} screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
