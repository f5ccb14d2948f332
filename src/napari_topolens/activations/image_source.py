"""Images read batch by batch, so that no input size loads the whole set into memory.

An :class:`ImageSource` stands for ``N`` images of one shape. Extraction asks it for
the images of one batch at a time (:meth:`ImageSource.read`), as float32
``(B, C, H, W)``, checked finite. Sources exist for anything array-like (numpy,
memory maps, dask and zarr arrays, h5py datasets: only the rows of a batch are
read), for a folder of image files (one file per image, opened when its batch is
read), for ``.zarr`` stores and ``.npy`` files on disk, and for multiscale images
(:class:`MultiscaleImages`: the finest level the model accepts).

A source also gives a content fingerprint (SHA-256 of the images read batch by
batch), which keys the activation cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmptySelectionError, ImageError, TopoLensError
from ..image_files import IMAGE_SUFFIXES, image_folder_files, open_image_npy, read_image_file

__all__ = [
    "ArraySource",
    "FileFolderSource",
    "ImageSource",
    "MultiscaleImages",
    "as_image_source",
    "layer_images",
    "layer_level",
    "open_image_source",
]

#: Images per read when a whole source is walked (fingerprint, checks).
_WALK_BATCH = 256


def _layout_of(shape: tuple[int, ...]) -> str:
    """``"NHW"``, ``"NHWC"`` or ``"NCHW"`` from a stack's shape (same rules as extraction)."""
    if len(shape) == 2:
        raise ImageError(
            f"got one {shape} image; pass a stack (N, H, W): use images[None] for a single image"
        )
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        if shape[-1] in (1, 3) and shape[1] not in (1, 3):
            return "NHWC"
        if shape[1] in (1, 3):
            return "NCHW"
        raise ImageError(
            f"images of shape {shape} have neither 1 nor 3 channels on the first or "
            "last axis; pass (N, H, W), (N, H, W, 3) or (N, 3, H, W)"
        )
    raise ImageError(
        f"images must be (N, H, W), (N, H, W, 3) or (N, 3, H, W); got shape {tuple(shape)}"
    )


def _runs(index: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Split sorted ``index`` into contiguous runs ``(start, stop, positions in index)``."""
    if len(index) == 0:
        return []
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(index)]])
    return [(int(index[a]), int(index[b - 1]) + 1, np.arange(a, b)) for a, b in zip(starts, stops)]


class ImageSource:
    """``N`` images of one shape, read a batch at a time.

    Subclasses implement :meth:`_read_raw` (the stored values of some images, in
    the stored layout); this class turns them into float32 ``(B, C, H, W)``.

    Attributes
    ----------
    n_images : int
        How many images.
    sample_shape : tuple of int
        ``(C, H, W)`` of one image as extraction sees it.
    description : str
        Where the images come from, for provenance and messages.
    """

    n_images: int
    sample_shape: tuple[int, int, int]
    description: str
    #: Whether the images are already in memory (then they are checked up front).
    in_memory: bool = False

    def __len__(self) -> int:
        return int(self.n_images)

    @property
    def pixel_dtype(self) -> np.dtype:
        """The dtype of the stored pixels :meth:`read` returns as float32 (float32 once scaled).

        What the input scale ``[0, 1] from dtype`` divides by (see ``input_scale``).
        """
        return np.dtype(np.float32)

    def _read_raw(self, index: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _to_batch(self, raw: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def read(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """The images at ``index`` (any order) as float32 ``(B, C, H, W)``, checked finite."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= self.n_images):
            raise ImageError(
                f"image index {int(index.max())} is outside the {self.n_images} images of "
                f"{self.description}"
            )
        order = np.argsort(index, kind="stable")
        wanted = index[order]
        unique, inverse = np.unique(wanted, return_inverse=True)
        raw = self._read_raw(unique)
        batch = np.ascontiguousarray(self._to_batch(raw), dtype=np.float32)
        if batch.shape[1:] != tuple(self.sample_shape) or len(batch) != len(unique):
            raise ImageError(
                f"{self.description}: read images of shape {batch.shape[1:]}, expected "
                f"{self.sample_shape}; the source changed while it was read"
            )
        finite = np.isfinite(batch).reshape(len(batch), -1).all(axis=1)
        if not finite.all():
            bad = unique[np.flatnonzero(~finite)]
            raise ImageError(
                f"{len(bad)} image(s) contain NaN or infinite pixels (first: index {bad[0]}); "
                "fill or drop them before extracting activations"
            )
        out = np.empty((len(index), *batch.shape[1:]), dtype=np.float32)
        out[order] = batch[inverse.reshape(-1)]
        return out

    def batches(self, batch_size: int = _WALK_BATCH):
        """``(index, images)`` for consecutive batches covering every image."""
        for start in range(0, self.n_images, batch_size):
            index = np.arange(start, min(start + batch_size, self.n_images), dtype=np.int64)
            yield index, self.read(index)

    def check_all(self) -> None:
        """Read every image once (batch by batch) so bad pixels fail before any work."""
        for _ in self.batches():
            pass

    def fingerprint(self) -> str:
        """SHA-256 of the images as extraction sees them, read batch by batch."""
        digest = hashlib.sha256()
        digest.update(repr((self.n_images, tuple(self.sample_shape), "float32")).encode())
        for _, images in self.batches():
            digest.update(images.tobytes())
        return digest.hexdigest()

    def __getitem__(self, key: slice | Sequence[int] | np.ndarray) -> ImageSource:
        """``source[a:b]`` or ``source[index]``: those images, still read lazily."""
        return self.subset(np.arange(self.n_images, dtype=np.int64)[key])

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageSource:
        """The images at ``index``, as a source that still reads lazily."""
        return _SubsetSource(self, np.asarray(index, dtype=np.int64).reshape(-1))

    def to_stack(self) -> np.ndarray:
        """All images as ``(N, H, W)`` or ``(N, H, W, 3)`` float32 (one full copy)."""
        channels, height, width = self.sample_shape
        shape = (self.n_images, height, width) + ((channels,) if channels != 1 else ())
        stack = np.empty(shape, dtype=np.float32)
        for index, images in self.batches():
            stack[index] = images[:, 0] if channels == 1 else np.moveaxis(images, 1, -1)
        return stack

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, H, W)`` or ``(N, H, W, C)``: the shape :meth:`to_stack` would return."""
        channels, height, width = self.sample_shape
        return (int(self.n_images), height, width) + ((channels,) if channels != 1 else ())

    @property
    def nbytes(self) -> int:
        """Bytes of all images as float32 (what :meth:`to_stack` would allocate)."""
        return int(self.n_images) * int(np.prod(self.sample_shape)) * 4


class ArraySource(ImageSource):
    """Images stored in one array-like ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``.

    Anything with ``shape``, ``dtype`` and slicing works; only the rows of the
    batch asked for are read (dask arrays compute only their chunks; zarr and
    memory-mapped arrays read only those bytes).

    Parameters
    ----------
    array : array-like
        The stack.
    scale_integers : bool
        Divide integer pixels by their dtype's maximum (as for image files);
        arrays the user made are taken as they are (``False``, the default).
    description : str
        Where the images come from.
    """

    def __init__(self, array: Any, *, scale_integers: bool = False, description: str = ""):
        shape = tuple(int(s) for s in np.shape(array))
        dtype = np.dtype(getattr(array, "dtype", np.asarray(array[:0]).dtype))
        if dtype.kind not in "biuf":
            raise ImageError(f"images must be numeric arrays, got dtype {dtype}")
        if len(shape) == 0 or (len(shape) >= 1 and shape[0] == 0):
            raise EmptySelectionError("no images were selected; select at least one image")
        self.layout = _layout_of(shape)
        self.array = array
        self.dtype = dtype
        self.scale = float(np.iinfo(dtype).max) if scale_integers and dtype.kind in "iu" else None
        self.n_images = shape[0]
        if self.layout == "NHW":
            self.sample_shape = (1, shape[1], shape[2])
        elif self.layout == "NHWC":
            self.sample_shape = (shape[3], shape[1], shape[2])
        else:
            self.sample_shape = (shape[1], shape[2], shape[3])
        self.in_memory = isinstance(array, np.ndarray) and not isinstance(array, np.memmap)
        self.description = description or f"a {type(array).__name__} of shape {shape}"

    @property
    def pixel_dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.scale is not None else self.dtype

    def _read_raw(self, index: np.ndarray) -> np.ndarray:
        array = self.array
        if isinstance(array, np.ndarray):
            return array[index]
        try:
            if hasattr(array, "dask"):  # dask: one graph for the batch, only its chunks computed
                import dask

                (values,) = dask.compute(array[index], scheduler="synchronous")
                return np.asarray(values)
            parts = [np.asarray(array[start:stop]) for start, stop, _ in _runs(index)]
        except (TopoLensError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a damaged store: zarr and its codecs raise many kinds
            raise ImageError(self._damaged(index, exc)) from None
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    def _damaged(self, index: np.ndarray, exc: Exception) -> str:
        """The message for a batch that could not be decoded, naming the first bad chunk."""
        rows = _chunk_rows(self.array)
        where = f"images {int(index.min())}..{int(index.max())}"
        if rows is not None:
            for start, stop, _ in _runs(index):
                for first in range(start - start % rows, stop, rows):
                    last = min(first + rows, self.n_images)
                    try:
                        np.asarray(self.array[first:last])
                    except Exception as chunk_exc:
                        exc = chunk_exc
                        where = f"chunk {first // rows} along the image axis (images {first}..{last - 1})"
                        break
                else:
                    continue
                break
        return (
            f"{self.description}: {where} could not be read ({type(exc).__name__}: {exc}); the "
            "store is damaged or truncated: write it again, or leave those images out"
        )

    def _to_batch(self, raw: np.ndarray) -> np.ndarray:
        if self.layout == "NHW":
            raw = raw[:, None]
        elif self.layout == "NHWC":
            raw = np.moveaxis(raw, -1, 1)
        batch = raw.astype(np.float32)
        if self.scale is not None:
            batch /= np.float32(self.scale)
        return batch


def _chunk_rows(array: Any) -> int | None:
    """Images per chunk of a chunked array-like (zarr, dask, or one wrapped in :class:`_Head`)."""
    while isinstance(array, _Head):
        array = array.array
    chunks = getattr(array, "chunks", None)
    if not chunks:
        return None
    first = chunks[0]
    if isinstance(first, tuple):  # dask: the sizes of each chunk; regular ones only
        return int(first[0]) if first and len(set(first[:-1])) <= 1 else None
    return int(first) if int(first) > 0 else None


class _SubsetSource(ImageSource):
    """Some images of another source, in the order given."""

    def __init__(self, parent: ImageSource, index: np.ndarray):
        if len(index) == 0:
            raise EmptySelectionError("no images were selected; select at least one image")
        if index.min() < 0 or index.max() >= len(parent):
            raise ImageError(f"image index {int(index.max())} is outside the {len(parent)} images")
        self.parent, self.index = parent, index
        self.n_images = len(index)
        self.sample_shape = parent.sample_shape
        self.in_memory = parent.in_memory
        self.description = f"{len(index)} of the images of {parent.description}"

    @property
    def pixel_dtype(self) -> np.dtype:
        return self.parent.pixel_dtype

    def _read_raw(self, index: np.ndarray) -> np.ndarray:
        return self.parent.read(self.index[index])

    def _to_batch(self, raw: np.ndarray) -> np.ndarray:
        return raw


class FileFolderSource(ImageSource):
    """A folder of PNG/JPEG/BMP/TIFF files, one image each, opened only when read.

    Files are taken in natural name order (as :func:`~napari_topolens.image_files.read_images`
    does); the first file fixes the shape and pixel type. Integer pixels are scaled
    to ``[0, 1]`` by their dtype's maximum unless ``scale_integers`` is false (then
    they are read as stored and the extraction's input scale decides); grey files
    among colour ones are repeated into three channels; alpha is dropped.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        max_images: int | None = None,
        scale_integers: bool = True,
    ):
        folder = Path(folder).expanduser()
        files = image_folder_files(folder)  # a link among the images is refused, naming it
        if not files:
            raise ImageError(
                f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                "give a folder of images, a .npy, a .npz or a .zarr store"
            )
        if max_images is not None:
            files = files[:max_images]
        self.folder, self.files = folder, files
        self.names = [p.name for p in files]
        first = self._read_file(files[0])
        self.dtype = first.dtype
        self.colour = first.ndim == 3
        self.n_images = len(files)
        self.sample_shape = (3 if self.colour else 1, first.shape[0], first.shape[1])
        self.description = f"{folder} ({len(files)} files)"
        self.scale_integers = bool(scale_integers)

    @property
    def pixel_dtype(self) -> np.dtype:
        scaled = self.scale_integers and self.dtype.kind in "iu"
        return np.dtype(np.float32) if scaled else np.dtype(self.dtype)

    @staticmethod
    def _read_file(path: Path) -> np.ndarray:
        array = read_image_file(path)
        if array.dtype.kind not in "biuf":
            raise ImageError(f"{path}: pixels must be numeric, got dtype {array.dtype}")
        return array

    def _read_raw(self, index: np.ndarray) -> np.ndarray:
        _, height, width = self.sample_shape
        out = np.empty((len(index), *self.sample_shape), dtype=np.float32)
        scaled = self.scale_integers and self.dtype.kind in "iu"
        scale = np.float32(np.iinfo(self.dtype).max) if scaled else None
        for row, i in enumerate(index):
            path = self.files[int(i)]
            array = self._read_file(path)
            if array.dtype != self.dtype:
                raise ImageError(
                    f"{path} has {array.dtype} pixels but {self.files[0].name} has {self.dtype}; "
                    "save all images with the same bit depth"
                )
            if array.shape[:2] != (height, width):
                raise ImageError(
                    f"{path} is {array.shape[:2]} but {self.files[0].name} is {(height, width)}; "
                    "all images must have the same size (resize them first)"
                )
            if array.ndim == 3 and not self.colour:
                raise ImageError(
                    f"{path} is a colour image but {self.files[0].name} (the first) is grey; "
                    "save them all in one mode"
                )
            if array.ndim == 2 and self.colour:  # grey among colour: repeated into 3 channels
                array = np.repeat(array[..., None], 3, axis=-1)
            pixels = array.astype(np.float32)
            if scale is not None:
                pixels /= scale
            out[row] = np.moveaxis(pixels, -1, 0) if pixels.ndim == 3 else pixels[None]
        return out

    def _to_batch(self, raw: np.ndarray) -> np.ndarray:
        return raw


class MultiscaleImages:
    """The levels of a multiscale image stack, finest first (as napari holds them).

    Extraction uses the finest level the model accepts (a forward pass on one image
    runs) and whose images hold at most ``max_pixels`` pixels each.
    """

    def __init__(self, levels: Sequence[Any], *, max_pixels: int = 4096 * 4096):
        self.levels = list(levels)
        if not self.levels:
            raise EmptySelectionError("the multiscale image has no levels")
        self.max_pixels = int(max_pixels)

    def choose(self, accepts: Callable[[ImageSource], bool] | None) -> tuple[int, ImageSource]:
        """The finest acceptable level and its source; ImageError when none fits."""
        tried = []
        for level, data in enumerate(self.levels):
            source = as_image_source(data)
            _, height, width = source.sample_shape
            tried.append(f"level {level}: {height}x{width}")
            if height * width > self.max_pixels:
                continue
            if accepts is None or accepts(source):
                source.description = f"level {level} of a multiscale image ({source.description})"
                return level, source
        raise ImageError(
            f"no level of the multiscale image fits the model ({'; '.join(tried)}); "
            "give images of the size the model was built for"
        )


def stack_image_list(images: Any) -> Any:
    """A list/tuple of same-shaped images stacked, a tensor as numpy; anything else as given."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise EmptySelectionError("no images were selected; select at least one image")
        shapes = sorted({np.shape(im) for im in images})
        if len(shapes) > 1:
            raise ImageError(
                f"the images differ in shape ({', '.join(map(str, shapes[:4]))}); "
                "resize or crop them to one size first"
            )
        images = np.stack([np.asarray(im) for im in images])
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    return images


def as_image_source(
    images: Any, *, accepts: Callable[[ImageSource], bool] | None = None
) -> ImageSource:
    """Wrap any image input as an :class:`ImageSource` without reading the images.

    Accepts a source, :class:`MultiscaleImages` (``accepts(source)`` says whether
    the model takes a level), a list of equally shaped images, a torch tensor, or
    any array-like stack (numpy, dask, zarr, memory map).
    """
    if isinstance(images, ImageSource):
        return images
    if isinstance(images, MultiscaleImages):
        return images.choose(accepts)[1]
    images = stack_image_list(images)
    if not hasattr(images, "shape") or not hasattr(images, "__getitem__"):
        images = np.asarray(images)
    if isinstance(images, np.ndarray) and images.ndim == 0:
        raise EmptySelectionError("no images were selected; select at least one image")
    return ArraySource(images)


def layer_images(data: Any, *, rgb: bool = False) -> ImageSource:
    """The images of a napari image layer's ``data`` as a lazy source (no pixel read yet).

    ``data`` is one image ``(H, W)`` / ``(H, W, 3)`` or a stack with one leading axis
    (numpy, dask, zarr, ...); dask- and zarr-backed layers are read batch by batch.
    """
    if isinstance(data, Sequence):  # napari's MultiScaleData is a sequence of levels
        raise ImageError(
            "this is a multiscale image's list of levels: pick the level to analyse first "
            "(layer_level), or use extract_activations(model, MultiscaleImages(levels), ...)"
        )
    spatial = 3 if rgb else 2
    shape = tuple(int(s) for s in np.shape(data))
    if len(shape) < spatial:
        raise ImageError(f"layer data of shape {shape} is not an image")
    if len(shape) == spatial:
        data = _Head(_OneImage(data), 1)
    elif len(shape) > spatial + 1:
        raise ImageError(
            f"layer data of shape {shape} has {len(shape) - spatial} axes before the images; "
            "give a stack with one such axis"
        )
    return ArraySource(data, description=f"an image layer of shape {shape}")


def layer_level(
    levels: Sequence[Any],
    accepts: Callable[[ImageSource], bool] | None,
    *,
    rgb: bool = False,
    max_pixels: int = 4096 * 4096,
) -> tuple[int, ImageSource]:
    """The finest level of a multiscale layer's data that ``accepts`` takes, and its source.

    Each level is read as :func:`layer_images` reads a layer (lazily); ``accepts`` is
    usually ``extract.model_accepts(model)``. ImageError when no level fits.
    """
    if len(levels) == 0:
        raise EmptySelectionError("the multiscale image has no levels")
    shapes = [tuple(int(s) for s in np.shape(level)) for level in levels]
    if len({shape[: -3 if rgb else -2] for shape in shapes}) > 1:
        raise ImageError(
            f"the levels of the multiscale image hold different stacks ({shapes}); only the "
            "image axes may shrink from level to level"
        )
    sources = [layer_images(level, rgb=rgb) for level in levels]
    return MultiscaleImages(sources, max_pixels=max_pixels).choose(accepts)


class _OneImage:
    """One image as a stack of one, read only when sliced."""

    def __init__(self, image: Any):
        self.image = image
        self.shape = (1, *tuple(int(s) for s in np.shape(image)))
        self.dtype = image.dtype

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(1)
        return np.asarray(self.image)[None][start:stop]


def open_image_source(
    path: str | os.PathLike, *, max_images: int | None = None, scale_integers: bool = True
) -> ImageSource:
    """A lazy source for a folder of image files, a ``.zarr`` store or a ``.npy`` file.

    A ``.zarr`` store is an array, or a group holding an array named ``images``
    (or its only array); its values are taken as they are, like a ``.npy``. Image
    files are scaled to ``[0, 1]`` unless ``scale_integers`` is false.
    Links are refused, so the images are the files the path names.
    """
    source_path = Path(path).expanduser()
    if not source_path.exists():
        raise ImageError(f"{source_path} does not exist; give a .npy, .zarr or a folder of images")
    if source_path.is_symlink():
        raise ImageError(f"{source_path} is a link; give the folder or file itself")
    suffix = source_path.suffix.lower()
    if suffix == ".zarr":
        array = _open_zarr_images(source_path)
        source: ImageSource = ArraySource(
            array if max_images is None else _Head(array, max_images),
            description=str(source_path),
        )
    elif source_path.is_dir():
        return FileFolderSource(source_path, max_images=max_images, scale_integers=scale_integers)
    elif suffix == ".npy":
        array = open_image_npy(source_path, max_images)
        source = ArraySource(array, description=str(source_path))
    else:
        raise ImageError(
            f"{source_path}: read lazily are folders, .zarr stores and .npy files; "
            "other files are read whole"
        )
    return source


class _Head:
    """The first ``n`` rows of an array-like, still sliced lazily."""

    def __init__(self, array: Any, n: int):
        self.array, self.n = array, min(int(n), int(array.shape[0]))
        self.shape = (self.n, *tuple(array.shape[1:]))
        self.dtype = array.dtype

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.n)
        return np.asarray(self.array[start:stop])


def _open_zarr_images(path: Path) -> Any:
    """The image array of a ``.zarr`` store, opened read-only (nothing read yet)."""
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - zarr is a dependency of the lazy extra
        raise ImageError(
            f"{path}: reading .zarr stores needs zarr; pip install 'napari-topolens[lazy]'"
        ) from exc
    for entry in path.rglob("*"):
        if entry.is_symlink():
            raise ImageError(f"{path}: {entry} is a link; zarr stores with links are not read")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises many kinds for a damaged store
        raise ImageError(f"{path} is not a readable zarr store ({exc})") from exc
    if isinstance(node, zarr.Group):
        arrays = dict(node.arrays())
        if "images" in arrays:
            node = arrays["images"]
        elif len(arrays) == 1:
            node = next(iter(arrays.values()))
        else:
            raise ImageError(f"{path} holds arrays {sorted(arrays)}; name the image array 'images'")
    return node
