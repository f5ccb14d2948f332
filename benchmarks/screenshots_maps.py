"""Screenshots at 1280 x 800 of the topology map: overlay, a node's regions, pixel drift.

Run from the repository root (needs a display)::

    PYTHONPATH=src xvfb-run -a -s "-screen 0 1280x800x24" python benchmarks/screenshots_maps.py

Through napari's doors as in ``screenshots.py``: the shapes sample, the analysis
widget (pool2, every position of 40 images, one gaussian variant), the "Topology
map" widget. Writes ``docs/walkthrough/map_overlay.png``, ``map_node_selection.png``
(a click on the object: its node selected, the node's regions on the image) and
``map_drift.png`` (base map | variant map in the base's graph | changed pixels) and
``map_ranked.png`` (the most-moved list ranked by changed pixels).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshots import ROOT, Camera, new_viewer, wait_for_run

CHOSEN = np.arange(0, 1200, 30)


def main() -> int:
    from napari_topolens.ui.links import links_for
    from napari_topolens.ui.topology_maps import maps_for
    from napari_topolens.ui.widget_parts import MARKED_IMAGES

    out = ROOT / "docs" / "walkthrough"
    out.mkdir(parents=True, exist_ok=True)
    camera = Camera(out)
    viewer = new_viewer()
    (images,) = viewer.open_sample("napari-topolens", "shapes")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-topolens", "Topology analysis")
    marks = np.zeros(images.data.shape, dtype=np.uint8)
    marks[CHOSEN, :3, :3] = 1
    marker = viewer.add_labels(marks, name="marks")
    widget.load_model()
    widget.module_tree.set_checked(["pool2"])
    widget.which.value = MARKED_IMAGES
    widget.marker_layer.value = marker
    widget.sampling.value = "all_positions"
    widget.variant_form.add(text="gaussian:0.1")
    widget.run()
    wait_for_run(widget, camera)
    camera.settle(3.0)
    marker.visible = False
    viewer.layers.selection.active = images
    image = int(CHOSEN[3])
    viewer.dims.set_point(0, image)
    _dock, map_widget = viewer.window.add_plugin_dock_widget("napari-topolens", "Topology map")
    maps = maps_for(map_widget._viewer)
    while maps.busy:
        camera.settle(0.2)
    camera.shoot(viewer, map_widget.native, "map_overlay.png")
    key = map_widget.analysis_key.value
    one = maps.cached(key, image)
    picture = np.asarray(images.data[image])
    nodes = one.pixel_map(0)
    on_shape = np.argwhere((picture > 0.5 * picture.max()) & (nodes >= 0))
    row, col = (int(v) for v in on_shape[len(on_shape) // 2])
    links = links_for(map_widget._viewer)
    links.click_at(images.data_to_world((image, row, col)))
    while maps.busy:
        camera.settle(0.2)
    print("clicked", (row, col), "->", maps.message)
    camera.shoot(viewer, map_widget.native, "map_node_selection.png")
    links.clear_selection(key)
    map_widget.variant.reset_choices()
    map_widget.variant.value = "gaussian:0.1"
    drift = map_widget.show_drift()
    viewer.reset_view()  # the difference panel right of the variant in view
    print("drift:", maps.message, "share", float(drift.share[0]))
    camera.shoot(viewer, map_widget.native, "map_drift.png")
    from napari_topolens.ui.variants import variant_views_for

    views = variant_views_for(map_widget._viewer)
    map_widget.rank_by_pixels()
    while (key, "gaussian:0.1") not in views.pixel_ranked:
        camera.settle(0.2)
    camera.settle(1.0)
    print("ranked:", maps.message)
    camera.shoot(viewer, map_widget.native, "map_ranked.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
