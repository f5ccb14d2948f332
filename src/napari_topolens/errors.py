"""The project's one exception family.

Every problem a user can cause (bad images, an unknown layer, a checkpoint that is
not plain weights, ...) is raised as a :class:`TopoLensError` whose message names the
problem and the fix, so the command line and the napari widgets can show it as is.
"""

from __future__ import annotations

__all__ = [
    "AnalysisFileError",
    "Cancelled",
    "CheckpointError",
    "EmptySelectionError",
    "ImageError",
    "LayerError",
    "ModelError",
    "TopoLensError",
]


class TopoLensError(ValueError):
    """A problem with the user's input, stated so that it can be fixed."""


class ImageError(TopoLensError):
    """Images that are not finite, or whose rank or channels do not fit the model."""


class EmptySelectionError(TopoLensError):
    """No images, no layers or no points were selected."""


class LayerError(TopoLensError):
    """An unknown layer name, or a layer whose output cannot be used."""


class ModelError(TopoLensError):
    """A model spec that does not import, or a model that fails when run."""


class CheckpointError(TopoLensError):
    """A weights file that is not plain weights, or does not fit the model."""


class AnalysisFileError(TopoLensError):
    """A saved analysis that is damaged, foreign or of an unknown version."""


class Cancelled(Exception):
    """The user stopped a long computation; not an error in the input."""
