"""Make the README screenshots at 1280 x 800 with the docks open (digits, shapes, a user's RGB model,
and shapes with three variants).

Run from the repository root (needs a display, e.g. ``xvfb-run``)::

    PYTHONPATH=src python benchmarks/screenshots.py [--out docs]

Writes ``screenshot_<case>_<view>.png`` for the digits and shapes samples and a
small plain-torch RGB CNN trained here on procedural RGB images, plus
``screenshot_analysis.png`` and ``screenshot_links.png`` for the README; the
``variants`` case writes ``screenshot_variants_{mapper,drift,moved}.png`` (base and
variant side by side, the drift view, a most-moved image shown).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


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


def analyse(model, images, labels, class_names, layers, name, *, predictions=False):
    import torch

    from napari_topolens import extract_activations
    from napari_topolens.topology.analysis import analyze

    clouds = extract_activations(model, images, layers, sampling="top_norm")
    analysis = analyze(
        clouds, labels, class_names=class_names, provenance={"sample": name}, images=images
    )
    if predictions:
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(images, np.float32))
            x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
            analysis.predictions = model(x).argmax(1).numpy().astype(np.int64)
    return analysis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--cases", default="digits,shapes,rgb,variants")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_topolens import load_sample
    from napari_topolens.ui.analysis_widget import AnalysisWidget
    from napari_topolens.ui.explorer_widget import ExplorerWidget
    from napari_topolens.ui.links import links_for
    from napari_topolens.ui.views import canvas_for, show_analysis

    def settle(viewer, n=20):
        for _ in range(n):
            QApplication.processEvents()

    def shoot(viewer, name):
        settle(viewer)
        path = out / name
        viewer.screenshot(str(path), canvas_only=False)
        print("wrote", path)

    cases = []
    for sample_name, layers in (
        ("digits", ["pool1", "pool2", "fc1"]),
        ("shapes", ["pool1", "pool2", "fc1"]),
    ):
        sample = load_sample(sample_name)
        index = sample.test_index[:240]
        images = sample.images[index]
        cases.append(
            (sample_name, sample.model, images, sample.labels[index], sample.class_names, layers)
        )
    images, labels, names = rgb_images()
    cases.append(
        ("rgb", rgb_model(images, labels), images, labels, names, ["pool1", "pool2", "fc1"])
    )

    wanted = set(args.cases.split(","))
    if "variants" in wanted:
        variants_case(shoot)
    for name, model, images, labels, class_names, layers in cases:
        if name not in wanted:
            continue
        analysis = analyse(model, images, labels, class_names, layers, name, predictions=True)
        viewer = napari.Viewer(show=True)
        viewer.window.resize(1280, 800)
        image_layer = viewer.add_image(images, name=f"{name} images", rgb=images.ndim == 4)
        widget = AnalysisWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Topology analysis", area="right")
        explorer = ExplorerWidget(viewer)
        viewer.window.add_dock_widget(explorer, name="Topology explorer", area="right", tabify=True)
        show_analysis(viewer, analysis, image_layer=image_layer)
        canvas = canvas_for(viewer)
        links = links_for(viewer)
        key = links.keys[0]
        graph = analysis[layers[-1]].mapper
        node = int(np.argmax(graph.size))
        links.select_nodes(key, [node])
        panels = {
            "digits": ("mapper", "diagram", "barcode", "flow", "blobs", "dendrogram"),
            "shapes": ("mapper",),
        }.get(name, ("mapper", "flow", "layer_distances", "cka"))
        for panel in panels:
            canvas.show_panel(panel)
            shoot(viewer, f"screenshot_{name}_{panel}.png")
        canvas.show_panel("mapper")
        explorer.color_by.value = "purity"
        shoot(viewer, f"screenshot_{name}_purity.png")
        if name == "shapes":
            explorer.color_by.value = "dominant_class"
            canvas.show_panel("mapper")
            shoot(viewer, "screenshot_analysis.png")
            # pool2: receptive fields smaller than the image, so the links show where
            show_analysis(viewer, analysis, "pool2", image_layer=image_layer)
            graph = analysis["pool2"].mapper
            links.select_nodes(key, [int(np.argmax(graph.size))])
            shoot(viewer, "screenshot_links.png")
        viewer.close()
    return 0


def variants_case(shoot) -> None:
    """Shapes with two perturbations and a pruned model: side by side, drift, most moved."""
    import napari

    from napari_topolens import load_sample, run_variants
    from napari_topolens.ui.analysis_widget import AnalysisWidget
    from napari_topolens.ui.explorer_widget import ExplorerWidget
    from napari_topolens.ui.links import links_for
    from napari_topolens.ui.views import canvas_for, show_analysis, show_variants

    sample = load_sample("shapes")
    index = sample.test_index[:240]
    images = sample.images[index]
    base = run_variants(
        sample.model,
        images,
        ["pool1", "pool2", "fc1"],
        ["gaussian:0.1", "blur:1.5", "prune:0.5"],
        labels=sample.labels[index],
        class_names=sample.class_names,
        sampling="top_norm",
        provenance={"sample": "shapes"},
    )
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 800)
    image_layer = viewer.add_image(images, name="shapes images")
    widget = AnalysisWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Topology analysis", area="right")
    explorer = ExplorerWidget(viewer)
    viewer.window.add_dock_widget(explorer, name="Topology explorer", area="right", tabify=True)
    show_analysis(viewer, base, "pool2", image_layer=image_layer)
    show_variants(viewer, base, "gaussian:0.1")
    canvas = canvas_for(viewer)
    links = links_for(viewer)
    key = state_key = links.keys[0]
    graph = base["pool2"].mapper
    links.select_nodes(state_key, [int(np.argmax(graph.size))])
    viewer.reset_view()
    shoot(viewer, "screenshot_variants_mapper.png")
    canvas.show_panel("drift")
    shoot(viewer, "screenshot_variants_drift.png")
    canvas.show_panel("mapper")
    canvas.moved_list.setCurrentRow(0)
    canvas.moved_list.itemClicked.emit(canvas.moved_list.item(0))
    viewer.reset_view()
    shoot(viewer, "screenshot_variants_moved.png")
    del key
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
