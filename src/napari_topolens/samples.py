"""The two shipped sample data sets, each with its trained model.

``load_sample("digits")`` and ``load_sample("shapes")`` give images, labels and a
model that classifies them, so every feature works offline without the user's own
model. The data and weights are made by ``sample_data/make_samples.py``; its README
records the held-out accuracy of each model.

Torch is imported only inside :func:`load_sample`, so this module is cheap to import
at napari start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_topolens.activations.models import load_model
from napari_topolens.errors import TopoLensError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["SAMPLE_NAMES", "Sample", "load_sample", "sample_data_dir"]

SAMPLE_NAMES: tuple[str, ...] = ("digits", "shapes")

#: Layers a report analyses by default: every conv stage's output (after pooling)
#: and the penultimate fully connected layer (before its ReLU).
DEFAULT_LAYERS: dict[str, list[str]] = {
    "digits": ["pool1", "pool2", "fc1"],
    "shapes": ["pool1", "pool2", "pool3", "fc1"],
}

DESCRIPTIONS: dict[str, str] = {
    "digits": (
        "scikit-learn's 1,797 handwritten digit scans (8x8, 10 classes, from the UCI "
        "optdigits set) with a two-stage CNN."
    ),
    "shapes": (
        "1,200 procedurally drawn 48x48 shapes of known topology (disk, ring, two disks, "
        "cross, square frame, parallel bars) with a three-stage CNN."
    ),
}

_MODEL_SPECS: dict[str, str] = {
    "digits": "napari_topolens.sample_models:digits_cnn",
    "shapes": "napari_topolens.sample_models:shapes_cnn",
}


@dataclass
class Sample:
    """One sample data set and the model trained on it.

    Attributes
    ----------
    name : str
        One of :data:`SAMPLE_NAMES`.
    images : ndarray, shape (N, H, W), float32
        Grayscale images in ``[0, 1]``; the model takes ``images[:, None]`` as is.
    labels : ndarray, shape (N,), int64
        Class index of each image.
    class_names : list of str
        Name of each class index.
    model : torch.nn.Module
        Trained, in eval mode; its first submodule normalises the input.
    test_index : ndarray, int64
        Held-out images, never used in training; accuracies are quoted on these.
    train_index : ndarray, int64
        The images the model was trained on (disjoint from ``test_index``).
    default_layers : list of str
        Layers analysed by default, named as in ``model.named_modules()``.
    description : str
        One sentence on what the data and model are.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    model: nn.Module
    test_index: np.ndarray
    default_layers: list[str]
    description: str
    train_index: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def sample_data_dir() -> Path:
    """Folder with the sample files: inside the installed package, else the checkout's."""
    packaged = Path(__file__).parent / "sample_data"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sample_data"


def load_sample(name: str) -> Sample:
    """Load a shipped sample data set with its trained model.

    Parameters
    ----------
    name : str
        ``"digits"`` (scikit-learn's 8x8 digit scans, 10 classes) or ``"shapes"``
        (48x48 procedural shapes of known topology, 6 classes).

    Returns
    -------
    Sample
        A fresh copy each call, so changing the model (e.g. pruning it) does not
        change later loads.

    Raises
    ------
    TopoLensError
        For an unknown name, or when the sample files are missing.
    """
    if name not in SAMPLE_NAMES:
        raise TopoLensError(
            f"unknown sample {name!r}; available samples: {', '.join(SAMPLE_NAMES)}"
        )
    folder = sample_data_dir()
    data_path = folder / f"{name}.npz"
    weights_path = folder / f"{name}_cnn.pt"
    missing = [str(p) for p in (data_path, weights_path) if not p.is_file()]
    if missing:
        raise TopoLensError(
            f"sample {name!r} is missing its files {missing}; reinstall napari-topolens "
            "or run `python sample_data/make_samples.py` in a source checkout"
        )
    with np.load(data_path, allow_pickle=False) as data:
        images = data["images"].astype(np.float32) / np.float32(data["scale"])
        labels = data["labels"].astype(np.int64)
        class_names = [str(c) for c in data["class_names"]]
        test_index = data["test_index"].astype(np.int64)
        train_index = data["train_index"].astype(np.int64)
    model = load_model(_MODEL_SPECS[name], weights=weights_path)
    return Sample(
        name=name,
        images=images,
        labels=labels,
        class_names=class_names,
        model=model,
        test_index=test_index,
        default_layers=list(DEFAULT_LAYERS[name]),
        description=DESCRIPTIONS[name],
        train_index=train_index,
    )
