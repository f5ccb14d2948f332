"""Read a user's images and labels from files, for the command line and the widgets.

Images come from a ``.npy`` array, a ``.npz`` archive (key ``images``, or its only
array), a folder of PNG/JPEG/BMP/TIFF files (read in natural name order), or a
single (multi-page) TIFF. They are returned as float32 ``(N, H, W)`` or
``(N, H, W, 3)``. Pixel files with integer pixels are scaled to ``[0, 1]`` by their
dtype's maximum (8-bit: /255), which is how most image models are trained;
arrays from ``.npy``/``.npz`` are the user's own numbers and are only cast to
float32. Labels come from ``.npy``, ``.txt`` (one per line, so class names may
hold spaces, or all whitespace separated on one line) or ``.csv`` (one column, or ``name,label`` rows matched to the image
file names).

Pixel files are read with Pillow (PNG, JPEG, BMP) and tifffile (TIFF).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError
from .label_sources import checked_label_file, labels_from_values, read_labels_csv

__all__ = ["IMAGE_SUFFIXES", "ImageSet", "LabelSet", "MaskFile", "read_images", "read_labels"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass
class ImageSet:
    """Images read from ``source`` and, for a folder, the file name of each."""

    images: np.ndarray
    names: list[str] | None
    source: str
    labels: np.ndarray | None = None  # labels stored beside the images in an .npz


@dataclass
class LabelSet:
    """Integer class codes per image and, for text labels, the class names."""

    codes: np.ndarray
    class_names: list[str] | None
    coded_by_name: bool = False  # text labels coded by their sorted names, not the model's


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _to_float_images(
    array: np.ndarray, source: str, *, scale_integers: bool, keep_dtype: bool = False
) -> np.ndarray:
    """Bring an image stack to float32 (N, H, W) or (N, H, W, 3) (its own dtype if ``keep_dtype``)."""
    if array.dtype.kind not in "biuf":
        raise ImageError(f"{source}: images must be numeric, got dtype {array.dtype}")
    if array.ndim == 4 and array.shape[-1] not in (1, 3, 4) and array.shape[1] in (1, 3, 4):
        array = np.moveaxis(array, 1, -1)  # channels-first (N, C, H, W)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 4 and array.shape[-1] == 4:
        array = array[..., :3]  # drop alpha
    if array.ndim == 2:
        raise ImageError(
            f"{source}: got a single 2-D array {array.shape}; give a stack (N, H, W) "
            "or (N, H, W, 3) of images"
        )
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] != 3):
        raise ImageError(
            f"{source}: images of shape {array.shape} are not (N, H, W) grey or (N, H, W, 3) colour"
        )
    if len(array) == 0:
        raise ImageError(f"{source}: holds no images")
    if keep_dtype:
        images = np.ascontiguousarray(array)
        if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
            raise ImageError(f"{source}: images hold NaN or infinite values; clean them first")
        return images
    if scale_integers and array.dtype.kind in "iu":
        images = array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
    else:
        images = array.astype(np.float32)
    if not np.all(np.isfinite(images)):
        raise ImageError(f"{source}: images hold NaN or infinite values; clean them first")
    return images


def open_image_npy(path: Path, max_images: int | None = None) -> np.ndarray:
    """A ``.npy`` image stack memory-mapped (nothing read yet), its first ``max_images``."""
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise ImageError(
            f"{path} is not a plain numpy array file: it is damaged, or holds pickled "
            "objects (never loaded here); save the images with np.save(path, array)"
        ) from exc
    return array if max_images is None else array[:max_images]


def read_image_file(path: Path) -> np.ndarray:
    """One image file of a folder as a grey ``(H, W)`` or RGB ``(H, W, 3)`` array (alpha dropped)."""
    try:
        array = _read_pixel_file(path)
    except Exception as exc:  # Pillow / tifffile raise many kinds
        raise ImageError(f"{path} could not be read as an image ({exc})") from exc
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ImageError(
            f"{path} has shape {array.shape}; each file in a folder must be one grey or RGB image"
        )
    return array


def _read_pixel_file(path: Path) -> np.ndarray:
    """One image file as an (H, W) or (H, W, 3/4) array, or (P, H, W...) for a TIFF stack."""
    if path.suffix.lower() in _TIFF_SUFFIXES:
        return _read_tiff(path)[0]
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            image = image.convert(
                "RGBA" if "A" in image.mode or "transparency" in image.info else "RGB"
            )
        if image.mode == "LA":
            image = image.convert("L")
        return np.asarray(image)


def _read_tiff(path: Path) -> tuple[np.ndarray, bool]:
    """A TIFF's first series, and whether it is a stack of images (from its axes)."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        array = np.asarray(series.asarray())
        axes = series.axes
    image_axes = 3 if axes.endswith("S") else 2  # YX, or YXS with colour samples
    if array.ndim > image_axes:  # pages, time, z ...: all become one stack of images
        return array.reshape(-1, *array.shape[-image_axes:]), True
    return array, False


def image_folder_files(folder: Path) -> list[Path]:
    """The image files of a folder in natural name order; a link among them is refused.

    The images are the files the folder holds, never what a link points to (elsewhere,
    or into the folder twice), so a link is an error naming it, not a file skipped.
    """
    entries = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    links = sorted((p.name for p in entries if p.is_symlink()), key=_natural_key)
    if links:
        raise ImageError(
            f"image folder {folder} holds {len(links)} link(s) (first: {links[0]}); images are "
            "read only from plain files inside the folder: copy the file in, or remove the link"
        )
    return sorted((p for p in entries if p.is_file()), key=lambda p: _natural_key(p.name))


def _read_folder(folder: Path, max_images: int | None) -> tuple[np.ndarray, list[str]]:
    files = image_folder_files(folder)
    if not files:
        raise ImageError(
            f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
            "give a folder of images, a .npy or a .npz"
        )
    if max_images is not None:
        files = files[:max_images]
    pixels = [read_image_file(path) for path in files]
    colour = any(p.ndim == 3 for p in pixels)
    if colour:  # grey files among colour ones are repeated into three channels
        pixels = [np.repeat(p[..., None], 3, axis=-1) if p.ndim == 2 else p for p in pixels]
    dtypes = {p.dtype for p in pixels}
    if len(dtypes) > 1:
        raise ImageError(
            f"{folder}: the files mix pixel types {sorted(str(d) for d in dtypes)}; "
            "save them all with the same bit depth"
        )
    shape = pixels[0].shape
    for path, array in zip(files, pixels):
        if array.shape != shape:
            raise ImageError(
                f"{path} is {array.shape[:2]} but {files[0].name} is {shape[:2]}; "
                "all images must have the same size (resize them first)"
            )
    return np.stack(pixels), [p.name for p in files]


def read_images(
    path: str | os.PathLike, *, max_images: int | None = None, keep_dtype: bool = False
) -> ImageSet:
    """Read images from a ``.npy``, ``.npz``, TIFF stack, image file or folder of images.

    Parameters
    ----------
    path : str or path
        The file or folder.
    max_images : int, optional
        Keep only the first ``max_images`` images (in file-name order for folders).
    keep_dtype : bool
        Keep the stored pixel type (uint8 stays 0..255) instead of float32, so that
        the extraction's input scale decides how the model sees them.

    Raises
    ------
    ImageError
        If the path is missing, unreadable, of the wrong shape or not finite.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise ImageError(f"{source} does not exist; give a .npy, .npz, image file or folder")
    names: list[str] | None = None
    labels = None
    suffix = source.suffix.lower()
    if source.is_dir():
        array, names = _read_folder(source, max_images)
        images = _to_float_images(array, str(source), scale_integers=True, keep_dtype=keep_dtype)
    elif suffix == ".npy":
        array = open_image_npy(source, max_images)
        images = _to_float_images(
            np.asarray(array), str(source), scale_integers=False, keep_dtype=keep_dtype
        )
    elif suffix == ".npz":
        try:
            with np.load(source, allow_pickle=False) as archive:
                keys = list(archive.files)
                if "images" in keys:
                    key = "images"
                elif len(keys) == 1:
                    key = keys[0]
                else:
                    raise ImageError(f"{source} holds arrays {keys}; name the image array 'images'")
                array = archive[key]
                for label_key in ("labels", "label", "y", "targets"):
                    if label_key in keys and label_key != key:
                        labels = np.asarray(archive[label_key])
                        break
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise ImageError(
                f"{source} is not a readable .npz of plain arrays: it is damaged, or holds pickled "
                "objects (never loaded here); save the images with np.savez(path, images=array)"
            ) from exc
        if max_images is not None:
            array = array[:max_images]
            labels = labels[:max_images] if labels is not None else None
        images = _to_float_images(array, str(source), scale_integers=False, keep_dtype=keep_dtype)
    elif suffix in IMAGE_SUFFIXES:
        try:
            if suffix in _TIFF_SUFFIXES:
                array, is_stack = _read_tiff(source)
            else:
                array, is_stack = _read_pixel_file(source), False
        except Exception as exc:
            raise ImageError(f"{source} could not be read as an image ({exc})") from exc
        if not is_stack:
            array = array[None]
            names = [source.name]
        if max_images is not None:
            array = array[:max_images]
        images = _to_float_images(array, str(source), scale_integers=True, keep_dtype=keep_dtype)
    else:
        raise ImageError(
            f"{source}: unknown image file type {source.suffix!r}; give .npy, .npz, "
            f"{', '.join(IMAGE_SUFFIXES)} or a folder of images"
        )
    return ImageSet(images=images, names=names, source=str(source), labels=labels)


def _codes_from_values(
    values: list[str] | np.ndarray, source: str, class_names: Sequence[str] | None = None
) -> LabelSet:
    array = np.asarray(values)
    if array.ndim != 1:
        array = array.reshape(-1) if array.ndim == 2 and 1 in array.shape else array
    if array.ndim != 1:
        raise ImageError(f"{source}: labels must be one value per image, got shape {array.shape}")
    if array.dtype.kind in "iub":
        return LabelSet(array.astype(np.int64), None)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            bad = int(np.flatnonzero(~np.isfinite(array))[0])
            raise ImageError(
                f"{source}: label {bad} is {array[bad]}; labels must be whole numbers or class names"
            )
        if np.any(array != np.round(array)):
            bad = int(np.flatnonzero(array != np.round(array))[0])
            raise ImageError(
                f"{source}: label {bad} is {array[bad]}; labels must be whole numbers or class names"
            )
        return LabelSet(array.astype(np.int64), None)
    texts = [str(v).strip() for v in array.tolist()]
    try:
        return LabelSet(np.array([int(t) for t in texts], dtype=np.int64), None)
    except ValueError:
        pass
    try:
        numbers = np.array([float(t) for t in texts])
    except ValueError:
        numbers = None
    if numbers is not None:  # numeric text such as "3.0" is a class code, not a name
        return _codes_from_values(numbers, source)
    named = labels_from_values(np.array(texts, dtype=object), source, class_names=class_names)
    return LabelSet(named.codes, named.class_names, named.coded_by_name)


def read_labels(
    path: str | os.PathLike,
    *,
    image_names: list[str] | None = None,
    n_images: int | None = None,
    class_names: Sequence[str] | None = None,
    first_images: bool = False,
) -> LabelSet:
    """Read one class label per image from ``.npy``, ``.txt`` or ``.csv``.

    A ``.txt`` is read as whitespace-separated labels; given ``n_images``, a file
    with one label per line for each image is read by lines, so class names may
    hold spaces, and a count that fits neither way is refused saying so.

    Integer labels are kept as codes (the model's class indices); text labels are
    matched to ``class_names`` when given, else become codes 0..K-1 in natural
    order of the names, returned as ``class_names``. A ``.csv`` is read by
    ``label_sources.read_labels_csv``: ``index,label`` rows by their index, and
    ``name,label`` rows matched to ``image_names`` (the files of an image folder).
    ``first_images``: the images are the first ``n_images`` of the labelled set.
    """
    source = checked_label_file(path)
    suffix = source.suffix.lower()
    if suffix == ".npy":
        try:
            values = np.load(source, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ImageError(
                f"{source} is not a plain numpy array of labels: it is damaged, or holds pickled "
                "objects (never loaded here); save the labels with np.save(path, labels)"
            ) from exc
        return _codes_from_values(values, str(source), class_names)
    if suffix in (".csv", ".tsv"):
        labelled = read_labels_csv(
            source,
            n_images,
            image_names=image_names,
            class_names=class_names,
            first_images=first_images,
        )
        return LabelSet(labelled.codes, labelled.class_names, labelled.coded_by_name)
    if suffix != ".txt":
        raise ImageError(f"labels file {source}: use .npy, .txt or .csv")
    try:
        text = source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImageError(
            f"labels file {source} is not UTF-8 text (byte {exc.start} cannot be read); "
            "save it as UTF-8"
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ImageError(f"labels file {source}, line {line}: a NUL byte; the file is not text")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    words = text.split()
    if n_images is not None and len(lines) == n_images != len(words):
        words = lines  # one per line; names hold spaces
    elif n_images is not None and (
        len(words) < n_images if first_images else len(words) != n_images
    ):
        raise ImageError(
            f"labels file {source} holds {len(words)} whitespace-separated labels on "
            f"{len(lines)} lines for {n_images} images; give one label per line "
            "(a class name may then hold spaces) or one per image separated by spaces"
        )
    if first_images and n_images is not None:
        words = words[:n_images]
    return _codes_from_values(words, str(source), class_names)


# ----------------------------------------------------------------------------- masks

# bytes of mask data read at a time from an .npz member
_MASK_CHUNK_BYTES = 1 << 24


class MaskFile:
    """Foreground masks from a ``.npy``, an ``.npz`` or a folder of mask images, read lazily.

    Masks are untrusted files: opening reads only headers and checks the declared
    shape against the images' ``height`` x ``width`` (so nothing is allocated by a
    size the file chose); links are refused; :meth:`take` reads only the masks asked
    for. Non-zero pixels (in any channel) are the object.
    """

    def __init__(self, path: str | os.PathLike, *, height: int, width: int) -> None:
        self.source = Path(path).expanduser()
        self.height, self.width = int(height), int(width)
        self.names: list[str] | None = None
        self._files: list[Path] = []
        self._npz_member: str | None = None
        if self.source.is_symlink():
            raise ImageError(f"mask path {self.source} is a link; give the file or folder itself")
        if not self.source.exists():
            raise ImageError(f"mask path {self.source} does not exist")
        suffix = self.source.suffix.lower()
        if self.source.is_dir():
            self._open_folder()
        elif suffix == ".npy":
            with open(self.source, "rb") as handle:
                shape, _, dtype = self._header(handle)
            self._check_shape(shape, dtype)
            self.count = int(shape[0])
        elif suffix == ".npz":
            self._open_npz()
        else:
            raise ImageError(
                f"{self.source}: masks come from a .npy or .npz (N, H, W) array or a folder of "
                f"mask images ({', '.join(IMAGE_SUFFIXES)})"
            )

    def _header(self, handle) -> tuple[tuple[int, ...], bool, np.dtype]:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                return np.lib.format.read_array_header_1_0(handle)
            return np.lib.format.read_array_header_2_0(handle)
        except (ValueError, EOFError) as exc:
            raise ImageError(f"{self.source} is not a plain numpy array ({exc})") from None

    def _check_shape(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        colour = len(shape) == 4 and shape[3] in (1, 3, 4)
        if (
            dtype.hasobject
            or dtype.kind not in "biuf"
            or not (len(shape) == 3 or colour)
            or tuple(shape[1:3]) != (self.height, self.width)
        ):
            raise ImageError(
                f"{self.source} declares masks of shape {tuple(shape)} and dtype {dtype}; give "
                f"numeric (N, {self.height}, {self.width}) masks, one per image"
            )

    def _open_npz(self) -> None:
        try:
            with zipfile.ZipFile(self.source) as archive:
                members = [n for n in archive.namelist() if n.endswith(".npy")]
                if len(members) != 1 and "masks.npy" not in members and "mask.npy" not in members:
                    raise ImageError(
                        f"{self.source} holds arrays {[m[:-4] for m in members]}; name the mask "
                        "array 'masks'"
                    )
                member = next((m for m in ("masks.npy", "mask.npy") if m in members), members[0])
                with archive.open(member) as handle:
                    shape, fortran, dtype = self._header(handle)
        except (OSError, zipfile.BadZipFile) as exc:
            raise ImageError(f"{self.source} is not a readable .npz ({exc})") from None
        self._check_shape(shape, dtype)
        if fortran:
            raise ImageError(
                f"{self.source} stores its masks in Fortran order; save them with "
                "np.savez(path, masks=np.ascontiguousarray(masks))"
            )
        self._npz_member, self._npz_shape, self._npz_dtype = member, shape, dtype
        self.count = int(shape[0])

    def _open_folder(self) -> None:
        entries = sorted(self.source.iterdir(), key=lambda p: _natural_key(p.name))
        links = [p.name for p in entries if p.is_symlink()]
        if links:
            raise ImageError(
                f"mask folder {self.source} holds links ({links[0]}); masks are read only from "
                "plain files inside the folder"
            )
        self._files = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not self._files:
            raise ImageError(f"mask folder {self.source} holds no image files")
        self.names = [p.name for p in self._files]
        self.count = len(self._files)

    def take(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The masks of these rows as ``(len(rows), H, W)`` bool."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.count):
            raise ImageError(
                f"{self.source} holds {self.count} masks; mask {rows.max()} is missing"
            )
        if self._files:
            masks = np.stack([self._read_mask_file(self._files[i]) for i in rows.tolist()])
        elif self._npz_member is not None:
            masks = self._npz_rows(rows, self._npz_member)
        else:
            try:
                array = np.load(self.source, allow_pickle=False, mmap_mode="r")
            except (ValueError, OSError, EOFError) as exc:
                raise ImageError(f"{self.source} is not a readable .npy of masks ({exc})") from None
            masks = np.stack([np.asarray(array[i]) != 0 for i in rows.tolist()])
        if masks.ndim == 4:
            masks = np.asarray(masks.any(axis=-1))  # an array: ``any`` is typed array | scalar
        return masks.reshape(len(rows), self.height, self.width)

    def _npz_rows(self, rows: np.ndarray, member: str) -> np.ndarray:
        """Stream the member's rows in bounded chunks, keeping the asked ones."""
        shape, dtype = self._npz_shape, self._npz_dtype
        per_row = int(np.prod(shape[1:])) * dtype.itemsize
        step = max(1, _MASK_CHUNK_BYTES // max(1, per_row))
        out = np.zeros((len(rows), *shape[1:]), dtype=bool)
        last = int(rows.max()) + 1 if len(rows) else 0
        with zipfile.ZipFile(self.source) as archive, archive.open(member) as handle:
            self._header(handle)
            for start in range(0, last, step):
                n = min(step, last - start)
                data = handle.read(n * per_row)
                if len(data) != n * per_row:
                    raise ImageError(f"{self.source} is shorter than the masks it declares")
                block = np.frombuffer(data, dtype=dtype).reshape(n, *shape[1:]) != 0
                inside = (rows >= start) & (rows < start + n)
                out[inside] = block[rows[inside] - start]
        return out

    def _read_mask_file(self, path: Path) -> np.ndarray:
        """One mask image, its size checked from the header before its pixels are decoded."""
        try:
            if path.suffix.lower() in _TIFF_SUFFIXES:
                import tifffile

                with tifffile.TiffFile(path) as tiff:
                    shape = tuple(tiff.series[0].shape)
            else:
                from PIL import Image

                with Image.open(path) as image:
                    shape = (image.size[1], image.size[0])
        except Exception as exc:  # Pillow / tifffile raise many kinds
            raise ImageError(f"{path} could not be read as a mask image ({exc})") from exc
        if tuple(shape[:2]) != (self.height, self.width) or len(shape) > 3:
            raise ImageError(
                f"mask {path} has shape {shape}, but the images are {self.height}x{self.width}"
            )
        try:
            array = _read_pixel_file(path)
        except Exception as exc:
            raise ImageError(f"{path} could not be read as a mask image ({exc})") from exc
        array = np.asarray(array) != 0
        return array.any(axis=-1) if array.ndim == 3 else array
