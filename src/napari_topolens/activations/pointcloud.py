"""The point cloud of one layer, with the provenance of every point."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PointCloud"]


@dataclass
class PointCloud:
    """Activation vectors of one layer, each tied to its image and pixels.

    Attributes
    ----------
    layer : str
        Module name as in ``model.named_modules()``.
    points : ndarray, shape (M, D), float32
        One activation vector per row.
    image_index : ndarray, shape (M,), int64
        Index of the source image in the images passed to the extraction.
    position : ndarray, shape (M, 2), int64, or None
        ``(row, col)`` in the layer's grid (token layers: ``(token, 0)``);
        ``None`` for pooled points and non-spatial layers.
    receptive_field : ndarray, shape (M, 4), int64, or None
        ``(y0, x0, y1, x1)`` in input pixels, end-exclusive, clipped to the image.
        For pooled points and non-spatial layers it is the whole image.
    sampling : str
        The sampling mode that made the cloud.
    grid_shape : tuple of int
        ``(H', W')`` of the layer's grid, ``(T, 1)`` for tokens, ``()`` otherwise.
    image_shape : tuple of int
        ``(H, W)`` of the input images.
    meta : dict
        Plain-data notes (how the receptive field was derived, caps applied, ...).
    """

    layer: str
    points: np.ndarray
    image_index: np.ndarray
    position: np.ndarray | None
    receptive_field: np.ndarray
    sampling: str
    grid_shape: tuple[int, ...]
    image_shape: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        self.image_index = np.asarray(self.image_index, dtype=np.int64)
        if self.position is not None:
            self.position = np.asarray(self.position, dtype=np.int64).reshape(-1, 2)
        self.receptive_field = np.asarray(self.receptive_field, dtype=np.int64).reshape(-1, 4)
        m = len(self.points)
        if self.points.ndim != 2:
            raise ValueError(f"points must be (M, D), got shape {self.points.shape}")
        for name in ("image_index", "receptive_field", "position"):
            value = getattr(self, name)
            if value is not None and len(value) != m:
                raise ValueError(f"{name} has {len(value)} rows but points has {m}")

    def __len__(self) -> int:
        return len(self.points)

    @property
    def is_spatial(self) -> bool:
        """True when points come from positions of a spatial grid (not pooled)."""
        return self.position is not None

    def subset(self, rows: np.ndarray, note: str = "") -> PointCloud:
        """The cloud restricted to ``rows`` (provenance kept); ``note`` goes to ``meta``."""
        rows = np.asarray(rows, dtype=np.int64)
        meta = dict(self.meta)
        if note:
            meta["subset_note"] = note
        return PointCloud(
            layer=self.layer,
            points=self.points[rows],
            image_index=self.image_index[rows],
            position=None if self.position is None else self.position[rows],
            receptive_field=self.receptive_field[rows],
            sampling=self.sampling,
            grid_shape=self.grid_shape,
            image_shape=self.image_shape,
            meta=meta,
        )

    def points_covering(self, image: int, row: int, col: int) -> np.ndarray:
        """Indices of points of ``image`` whose receptive field holds pixel (row, col)."""
        rf = self.receptive_field
        hit = (
            (self.image_index == image)
            & (rf[:, 0] <= row)
            & (row < rf[:, 2])
            & (rf[:, 1] <= col)
            & (col < rf[:, 3])
        )
        return np.flatnonzero(hit)
