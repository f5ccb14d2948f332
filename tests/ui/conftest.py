"""Shared helpers for the UI tests: small real analyses of the shipped samples, a stall meter."""

from __future__ import annotations

import time

import numpy as np

from napari_topolens import extract_activations, load_sample
from napari_topolens.topology.analysis import analyze


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
