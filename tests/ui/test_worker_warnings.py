"""A warning raised in any of the plugin's worker threads reaches napari's notifications.

napari 0.9's workers record their work's warnings in ``warned`` but never relay them
(see ``widget_parts.relay_warnings``): without the relay a library's warning while
the views' layers or a topology map are made in a worker is dropped, unseen.

The show is started with ``show_analysis_incrementally`` and the map asked of
``maps_for`` with the real viewer: what is tested is the workers, not how a docked
widget finds its viewer (the journey tests dock them through napari's menus).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from conftest import digits_analysis

from napari_topolens import load_sample
from napari_topolens.ui import show as show_module
from napari_topolens.ui import topology_maps
from napari_topolens.ui.model_registry import remember_model
from napari_topolens.ui.state import state_for
from napari_topolens.ui.topology_maps import maps_for
from napari_topolens.ui.views import show_analysis, show_analysis_incrementally


@pytest.fixture(scope="module")
def digits():
    return digits_analysis(40, layers=("pool2", "fc1"), with_images=True)


@pytest.fixture
def notifications():
    """The messages of napari's notifications from now on."""
    from napari.utils.notifications import notification_manager

    messages: list[str] = []

    def record(notification) -> None:
        messages.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield messages
    notification_manager.notification_ready.disconnect(record)


def _warning_in_a_worker(fn, message: str):
    """``fn`` that warns ``message`` first when it runs off the main thread."""

    def warning(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            warnings.warn(message, RuntimeWarning, stacklevel=1)
        return fn(*args, **kwargs)

    return warning


def test_a_warning_while_a_show_makes_layers_in_its_worker_is_a_notification(
    make_napari_viewer, qtbot, digits, monkeypatch, notifications
):
    _images, analysis = digits
    viewer = make_napari_viewer()
    message = "a show's worker warned"
    monkeypatch.setattr(
        show_module,
        "_create_layers",
        _warning_in_a_worker(show_module._create_layers, message),
    )
    show = show_analysis_incrementally(viewer, analysis, "fc1")
    qtbot.waitUntil(lambda: show.done, timeout=120_000)
    assert show.error is None and not show.cancelled
    qtbot.waitUntil(lambda: any(message in m for m in notifications), timeout=10_000)


def test_a_warning_while_a_topology_map_is_made_in_its_worker_is_a_notification(
    make_napari_viewer, qtbot, digits, monkeypatch, notifications
):
    images, analysis = digits
    viewer = make_napari_viewer()
    remember_model(analysis, load_sample("digits").model)
    image_layer = viewer.add_image(np.asarray(images), name="digits")
    show_analysis(viewer, analysis, "fc1", image_layer=image_layer)
    (key,) = [entry.key for entry in state_for(viewer)]
    message = "a topology map's worker warned"
    monkeypatch.setattr(
        topology_maps, "_map_work", _warning_in_a_worker(topology_maps._map_work, message)
    )
    maps = maps_for(viewer)
    made: list[object] = []
    assert maps.request(key, 0, on_ready=made.append)
    qtbot.waitUntil(lambda: bool(made), timeout=60_000)
    qtbot.waitUntil(lambda: any(message in m for m in notifications), timeout=10_000)
