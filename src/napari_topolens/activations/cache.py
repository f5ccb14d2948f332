"""Activations cached on disk as chunked zarr, so a second analysis skips extraction.

Each layer's :class:`PointCloud` is one zarr group ``<cache>/activations-v1/<key>/``,
where ``key`` is the SHA-256 of everything the cloud depends on: the model (its
structure and a hash of its weights), the layer, the sampling mode, the point cap,
the seed, the device type and the images (a fingerprint read batch by batch). An
analysis with other topology parameters on the same model, layers and images finds
its clouds here.

The cache folder is treated as untrusted: an entry is read only if it lies inside
the folder, holds no links, declares the arrays, dtypes and shapes expected (checked
before anything is allocated) and its points match the checksum written with them.
Anything else is ignored and recomputed (a damaged entry is never fatal); a new
entry is written to a temporary folder and renamed into place, so a reader never
sees half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import Progress
from ..errors import TopoLensError
from .image_source import ImageSource
from .pointcloud import PointCloud

if TYPE_CHECKING:
    import torch

__all__ = ["ActivationCache", "CacheError", "model_fingerprint"]

_FORMAT = "activations-v1"
_ROWS_PER_CHUNK = 16_384
#: Largest metadata file read from an entry (zarr.json holds the record as attributes).
_MAX_META_BYTES = 1 << 20
#: Largest entry read back (an activation cloud bigger than this is recomputed).
_MAX_ENTRY_BYTES = 16 << 30
_MAX_CHANNELS = 1 << 20


class CacheError(TopoLensError):
    """A cache folder that cannot be used (not a folder, a link, not writable)."""


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the model's structure (its repr) and every weight and buffer, bit for bit."""
    import torch

    digest = hashlib.sha256()
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}".encode())
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            digest.update(f"{name}:{tensor!r}".encode())
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """Meta values as JSON (tuples become lists; numpy scalars become numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class ActivationCache:
    """A folder of cached point clouds.

    Parameters
    ----------
    folder : str or path
        Created if missing; must not be a link.
    """

    def __init__(self, folder: str | os.PathLike):
        try:
            import zarr  # noqa: F401
        except ImportError as exc:
            raise CacheError(
                "the activation cache needs zarr (>= 3); pip install 'napari-topolens[lazy]'"
            ) from exc
        if not isinstance(folder, (str, os.PathLike)):
            raise CacheError(f"the cache folder must be a path, got {type(folder).__name__}")
        path = Path(folder).expanduser()
        if path.is_symlink():
            raise CacheError(f"cache folder {path} is a link; give a real folder")
        if path.exists() and not path.is_dir():
            raise CacheError(f"cache folder {path} is a file; give a folder")
        try:
            (path / _FORMAT).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create the cache folder {path}: {exc}") from exc
        self.root = path.resolve()
        self.entries = self.root / _FORMAT
        if self.entries.is_symlink() or not self.entries.is_dir():
            raise CacheError(f"{self.entries} is not a folder; remove it or choose another cache")

    # ---- keys -------------------------------------------------------------------------
    @staticmethod
    def key(**parts: Any) -> str:
        """The entry name for a cloud: SHA-256 of its determining parts, as sorted JSON."""
        text = json.dumps({"format": _FORMAT, **_plain(parts)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise CacheError(f"not a cache key: {key!r}")
        return self.entries / key

    # ---- read -------------------------------------------------------------------------
    def load(self, key: str, *, n_images: int, image_shape: tuple[int, int]) -> PointCloud | None:
        """The cloud stored under ``key``, or ``None`` when absent or not trustworthy."""
        entry = self._entry(key)
        if not entry.exists():
            return None
        try:
            return self._read(entry, key, n_images, image_shape)
        except (_Untrusted, OSError, ValueError, KeyError, TypeError):
            return None

    def _read(
        self, entry: Path, key: str, n_images: int, image_shape: tuple[int, int]
    ) -> PointCloud:
        import zarr

        if entry.is_symlink() or not entry.is_dir():
            raise _Untrusted("entry is not a folder")
        total = 0
        for path in entry.rglob("*"):
            if path.is_symlink():
                raise _Untrusted(f"{path} is a link")
            if not path.resolve().is_relative_to(entry.resolve()):
                raise _Untrusted(f"{path} lies outside the entry")
            if path.is_file():
                size = path.stat().st_size
                if path.name == "zarr.json" and size > _MAX_META_BYTES:
                    raise _Untrusted(f"{path} is {size} bytes")
                total += size
        if total > _MAX_ENTRY_BYTES:
            raise _Untrusted("entry too large")
        group = zarr.open_group(str(entry), mode="r")
        record: dict[str, Any] = dict(group.attrs)
        if record.get("key") != key or record.get("format") != _FORMAT:
            raise _Untrusted("entry was written for another key")
        m = int(record["n_points"])
        d = int(record["n_channels"])
        if not (m >= 0 and 0 < d <= _MAX_CHANNELS and m * d * 4 <= _MAX_ENTRY_BYTES):
            raise _Untrusted("declared size out of range")
        expected = {
            "points": ((m, d), np.float32),
            "image_index": ((m,), np.int64),
            "receptive_field": ((m, 4), np.int64),
        }
        if record.get("has_position"):
            expected["position"] = ((m, 2), np.int64)
        arrays = {}
        for name, (shape, dtype) in expected.items():
            array = group[name]
            if not isinstance(array, zarr.Array):
                raise _Untrusted(f"{name} is not an array")
            if tuple(array.shape) != shape or np.dtype(array.dtype) != np.dtype(dtype):
                raise _Untrusted(f"{name} is {array.shape} {array.dtype}, expected {shape} {dtype}")
            arrays[name] = np.asarray(array[...], dtype=dtype)
        points = arrays["points"]
        if hashlib.sha256(points.tobytes()).hexdigest() != record.get("points_sha256"):
            raise _Untrusted("points do not match their checksum")
        if not np.isfinite(points).all():
            raise _Untrusted("points are not finite")
        index = arrays["image_index"]
        if m and (index.min() < 0 or index.max() >= n_images):
            raise _Untrusted("image index out of range")
        boxes = arrays["receptive_field"]
        height, width = image_shape
        if m and (
            boxes.min() < 0 or boxes[:, [0, 2]].max() > height or boxes[:, [1, 3]].max() > width
        ):
            raise _Untrusted("receptive field outside the image")
        if tuple(record["image_shape"]) != tuple(image_shape):
            raise _Untrusted("image shape differs")
        return PointCloud(
            layer=str(record["layer"]),
            points=points,
            image_index=index,
            position=arrays.get("position"),
            receptive_field=boxes,
            sampling=str(record["sampling"]),
            grid_shape=tuple(int(g) for g in record["grid_shape"]),
            image_shape=(int(height), int(width)),
            meta=dict(record["meta"]),
        )

    # ---- write ------------------------------------------------------------------------
    def store(self, key: str, cloud: PointCloud) -> None:
        """Write ``cloud`` under ``key`` (atomically: a temporary folder renamed into place)."""
        import zarr

        entry = self._entry(key)
        if entry.exists():
            return
        temporary = self.entries / f".tmp-{uuid.uuid4().hex}"
        try:
            group = zarr.open_group(str(temporary), mode="w")
            m, d = cloud.points.shape
            arrays: dict[str, np.ndarray] = {
                "points": cloud.points,
                "image_index": cloud.image_index,
                "receptive_field": cloud.receptive_field,
            }
            if cloud.position is not None:
                arrays["position"] = cloud.position
            for name, values in arrays.items():
                chunks = (min(max(m, 1), _ROWS_PER_CHUNK), *values.shape[1:])
                array = group.create_array(
                    name, shape=values.shape, dtype=values.dtype, chunks=chunks
                )
                if m:
                    array[...] = values
            group.attrs.update(
                {
                    "format": _FORMAT,
                    "key": key,
                    "layer": cloud.layer,
                    "n_points": int(m),
                    "n_channels": int(d),
                    "has_position": cloud.position is not None,
                    "sampling": cloud.sampling,
                    "grid_shape": [int(g) for g in cloud.grid_shape],
                    "image_shape": [int(s) for s in cloud.image_shape],
                    "meta": _plain(cloud.meta),
                    "points_sha256": hashlib.sha256(
                        np.ascontiguousarray(cloud.points).tobytes()
                    ).hexdigest(),
                }
            )
            try:
                temporary.rename(entry)
            except OSError:  # another process wrote the same entry first
                if not entry.exists():
                    raise
        except OSError as exc:
            raise CacheError(f"could not write to the activation cache {self.root}: {exc}") from exc
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)


class _Untrusted(Exception):
    """An entry that fails a check; it is ignored and recomputed."""


def iter_cached_extraction(
    cache: ActivationCache,
    model: torch.nn.Module,
    source: ImageSource,
    modules: Mapping[str, torch.nn.Module],
    *,
    sampling: str,
    max_points: int | None,
    seed: int,
    device_type: str,
    forward_order: Callable[[], list[str]],
    extract: Callable[[Mapping[str, torch.nn.Module]], Generator[Progress, None, dict[str, Any]]],
    key_parts: Mapping[str, Any] | None = None,
) -> Generator[Progress, None, dict[str, PointCloud]]:
    """Load the layers found in the cache, extract (and store) the others.

    ``extract(modules)`` is the extraction generator for a subset of the layers;
    ``forward_order()`` gives the order the forward pass reaches the layers, used
    when every layer came from the cache.
    """
    yield Progress(0.0, "activation cache: fingerprinting the model and images")
    weights = model_fingerprint(model)
    images = source.fingerprint()
    image_shape = (int(source.sample_shape[1]), int(source.sample_shape[2]))
    keys = {
        name: cache.key(
            model=weights,
            layer=name,
            sampling=sampling,
            max_points=max_points,
            seed=int(seed),
            images=images,
            device=device_type,
            **dict(key_parts or {}),
        )
        for name in modules
    }
    found: dict[str, PointCloud] = {}
    for name, key in keys.items():
        cloud = cache.load(key, n_images=len(source), image_shape=image_shape)
        if cloud is not None and cloud.layer == name:
            cloud.meta["activation_cache"] = f"read from {cache.root} (entry {key[:12]})"
            found[name] = cloud
    missing = {name: module for name, module in modules.items() if name not in found}
    fresh: dict[str, PointCloud] = {}
    if missing:
        from .._progress import scaled

        fresh = yield from scaled(
            extract(missing), 0.05, 1.0, f"({len(found)} of {len(modules)} layers cached) "
        )
        for name, cloud in fresh.items():
            cache.store(keys[name], cloud)
            cloud.meta["activation_cache"] = f"written to {cache.root} (entry {keys[name][:12]})"
        order = list(fresh)
    else:
        order = forward_order()
    merged = {**found, **fresh}
    if missing and found:
        order = forward_order()
    yield Progress(1.0, f"activations: {len(found)} layer(s) from the cache")
    return {name: merged[name] for name in order}
