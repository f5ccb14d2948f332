"""Shared helpers for the UI tests: small real analyses of the shipped samples, a stall meter."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

from napari_topolens import extract_activations, load_sample
from napari_topolens.topology.analysis import analyze


def wait_for(qtbot, worker, timeout=120_000):
    """Block until a widget's worker has finished (done, failed or cancelled)."""
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass


@pytest.fixture(autouse=True)
def _close_topology_canvases(request):
    """Close the topology canvases before napari's teardown counts leaked QtViewers.

    The canvas docks a second ``QtViewer``; napari closes its own on ``viewer.close()``
    but not a plugin's, so the tests close theirs first (set up after
    ``make_napari_viewer``, torn down before it).
    """
    if "make_napari_viewer" in request.fixturenames:
        request.getfixturevalue("make_napari_viewer")
    yield
    from napari_topolens.ui.canvas import close_canvases
    from napari_topolens.ui.show import IncrementalShow

    for show in IncrementalShow.running():
        show.cancel()
    close_canvases()


def digits_analysis(
    n_images: int, *, layers=("pool1", "fc1"), sampling: str = "top_norm", with_images: bool = False
):
    """``(images, analysis)`` of the first ``n_images`` held-out digits."""
    sample = load_sample("digits")
    index = sample.test_index[:n_images]
    images: np.ndarray = sample.images[index]
    clouds = extract_activations(sample.model, images, list(layers), sampling=sampling)
    analysis = analyze(
        clouds,
        sample.labels[index],
        class_names=sample.class_names,
        provenance={"sample": "digits"},
        images=images if with_images else None,
    )
    return images, analysis


class TickRecorder:
    """Times of the ticks of a 10 ms QTimer."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks.append(time.perf_counter())
        self.timer.start()

    def stop(self) -> None:
        self.ticks.append(time.perf_counter())
        self.timer.stop()

    def longest_gap(self, since: float = -np.inf, until: float = np.inf) -> float:
        ticks = np.array([t for t in self.ticks if since <= t <= until])
        return float(np.diff(ticks).max()) if len(ticks) > 1 else float("nan")

    def count(self, since: float, until: float) -> int:
        return sum(1 for t in self.ticks if since <= t <= until)


# ---- napari's door: widgets, samples and the reader only as napari makes them -------------
PLUGIN = "napari-topolens"


def spy_on_threads(monkeypatch, module, name: str) -> list[bool]:
    """Replace ``module.name`` by a wrapper recording, per call, whether it ran on the
    main thread (True) or in a worker (False)."""
    on_main: list[bool] = []
    original = getattr(module, name)

    def spy(*args, **kwargs):
        on_main.append(threading.current_thread() is threading.main_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return on_main


def dock(viewer, name: str):
    """Dock a TopoLens widget as ``Plugins ▸ TopoLens ▸ <name>`` does; returns the widget.

    napari builds it with a proxy of the viewer (``PublicOnlyProxy``), not the viewer:
    the state the widgets share must survive that.
    """
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def dock_analysis(viewer):
    """The ``Topology analysis`` widget, docked by napari."""
    return dock(viewer, "Topology analysis")


def dock_explorer(viewer):
    """The ``Topology explorer`` widget, docked by napari."""
    return dock(viewer, "Topology explorer")


def open_sample(viewer, name: str = "digits"):
    """``File ▸ Open Sample ▸ TopoLens ▸ <name>``: the sample's image layer."""
    (layer,) = viewer.open_sample(PLUGIN, name)
    return layer


def open_saved(viewer, path):
    """``File ▸ Open Folder…`` choosing TopoLens: the reader's images layer."""
    return viewer.open(str(path), plugin=PLUGIN)


def save_selected(viewer, path) -> list[str]:
    """``File ▸ Save Selected Layers…`` with the ``.topolens`` extension."""
    return viewer.layers.save(str(path), selected=True, plugin=PLUGIN)


@pytest.fixture
def door_digits(make_napari_viewer):
    """A viewer with the digits sample and the analysis widget, both through napari's door."""
    viewer = make_napari_viewer()
    images = open_sample(viewer, "digits")
    widget = dock_analysis(viewer)
    return viewer, widget, images


# ---- the process ends when pytest has reported --------------------------------------------
# After the summary, tearing down napari, Qt, IPython's console kernel and Dask's offload
# threads took 30-60 s on a loaded 2-core machine (pytest's forced garbage collections over
# the whole napari heap, then the interpreter's teardown, which printed "Task was destroyed
# but it is pending!" from ipykernel). Nothing is left to do by then (reports, caches and
# junit files are written in pytest_sessionfinish), so the last pytest_unconfigure ends the
# process with pytest's exit status. TOPOLENS_TESTS_SLOW_EXIT=1 keeps the ordinary teardown.
# (Here, not in a tests/conftest.py: the UI tests import this module as `conftest`, also in
# Dask's worker processes, where a second conftest.py higher up would be found first.)

_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Put what the imports made out of the cyclic collector's reach, once collected.

    napari runs a full ``gc.collect()`` for every layer it removes (a guard for
    Windows OpenGL drivers). With torch, napari and SciPy imported each pass walks
    about 330,000 objects (0.1-0.3 s), and a test viewer's teardown removes dozens of
    layers. The imports' objects live as long as the process anyway; what the tests
    make is still collected. ``TOPOLENS_TESTS_NO_GC_FREEZE=1`` leaves the collector alone.
    """
    if os.environ.get("TOPOLENS_TESTS_NO_GC_FREEZE"):
        return
    import gc

    gc.collect()
    gc.freeze()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if not _EXIT_STATUS or os.environ.get("TOPOLENS_TESTS_SLOW_EXIT"):
        return
    if config.pluginmanager.has_plugin("xdist") and hasattr(config, "workerinput"):
        return  # an xdist worker hands its results back through its own teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])
