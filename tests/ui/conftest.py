"""Shared builders for the UI tests: small real analyses of the shipped samples."""

from __future__ import annotations

import numpy as np

from napari_topolens import extract_activations, load_sample
from napari_topolens.topology.analysis import analyze


def digits_analysis(n_images: int, *, layers=("pool1", "fc1"), sampling: str = "top_norm",
                    with_images: bool = False):
    """``(images, analysis)`` of the first ``n_images`` held-out digits."""
    sample = load_sample("digits")
    index = sample.test_index[:n_images]
    images: np.ndarray = sample.images[index]
    clouds = extract_activations(sample.model, images, list(layers), sampling=sampling)
    analysis = analyze(clouds, sample.labels[index], class_names=sample.class_names,
                       provenance={"sample": "digits"}, images=images if with_images else None)
    return images, analysis
