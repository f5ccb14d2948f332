"""napari sample-data contributions: each sample opens as one image stack layer.

The layer's metadata carries what the widgets need to find the sample again:
``topolens_sample`` (its name), ``labels``, ``class_names`` and ``test_index``.
"""

from __future__ import annotations

from typing import Any

from ..samples import load_sample

__all__ = ["digits_sample", "sample_layer_data", "shapes_sample"]

SAMPLE_KEY = "topolens_sample"


def sample_layer_data(name: str) -> list[tuple[Any, dict[str, Any], str]]:
    """The layer-data tuple of one sample's image stack."""
    sample = load_sample(name)
    metadata = {
        SAMPLE_KEY: sample.name,
        "labels": sample.labels,
        "class_names": list(sample.class_names),
        "test_index": sample.test_index,
        "description": sample.description,
    }
    return [
        (
            sample.images,
            {
                "name": f"{sample.name} images",
                "metadata": metadata,
                "colormap": "gray",
                "contrast_limits": (0.0, 1.0),
            },
            "image",
        )
    ]


def digits_sample() -> list[tuple[Any, dict[str, Any], str]]:
    return sample_layer_data("digits")


def shapes_sample() -> list[tuple[Any, dict[str, Any], str]]:
    return sample_layer_data("shapes")
