"""The files of a saved analysis: a folder of exactly ``analysis.json`` and ``arrays.npz``.

* ``analysis.json`` names the format and its version, records the size and the
  sha256 of ``arrays.npz``, holds the result as a tree of JSON values
  (``store_codec``), and ends with ``manifest_sha256``: the sha256 of the canonical
  JSON text of everything else in it, so an edited parameter or result is noticed
  as well as a damaged array file.
* ``arrays.npz`` (``np.savez``, stored, no pickle) holds every numpy array and
  numpy scalar, so arrays keep their dtype and shape bit for bit.

Reading treats the folder as untrusted: only the two file names above, never
through a link and never outside the folder, sizes checked before anything is
allocated. Saving writes into a temporary sibling directory and renames it into
place, so an interrupted or failed save never leaves a half-written analysis over
good saved work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import stat
import typing
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import AnalysisFileError, TopoLensError
from .store_codec import ArraySink, to_tree
from .store_types import ARRAY_KINDS

__all__ = [
    "ARRAYS_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "arrays_record",
    "canonical_digest",
    "folder_argument",
    "is_analysis_dir",
    "open_plain_file",
    "read_manifest",
    "read_member",
    "save_analysis",
    "sha256_file",
    "sha256_handle",
]

FORMAT_NAME = "napari-topolens-analysis"
#: 2: ``manifest_sha256`` covers analysis.json; 1 (unchecked analysis.json) is refused.
FORMAT_VERSION = 2
MANIFEST_NAME = "analysis.json"
ARRAYS_NAME = "arrays.npz"
#: analysis.json holds no arrays, so a larger one is not ours (arrays live in the npz).
MAX_MANIFEST_BYTES = 64 * 1024**2


def sha256_handle(handle: BinaryIO) -> str:
    """sha256 of what is left to read in ``handle``, in blocks of 1 MiB."""
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of the file at ``path``."""
    with open(path, "rb") as handle:
        return sha256_handle(handle)


def canonical_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON text, without its own digest."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@contextmanager
def open_plain_file(folder: Path, name: str) -> Iterator[tuple[BinaryIO, int]]:
    """Open ``folder/name`` for reading only if it is a regular file, not a link.

    Yields the binary handle and the file's size. Other files a saved folder may
    hold (the napari view record) are opened the same way.
    """
    path = folder / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise AnalysisFileError(f"{path} is missing; the analysis is incomplete") from None
    except OSError as exc:
        raise AnalysisFileError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise AnalysisFileError(
            f"{path} is a link; a saved analysis is read only from plain files inside its folder"
        )
    if not stat.S_ISREG(info.st_mode):
        raise AnalysisFileError(f"{path} is not a plain file")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise AnalysisFileError(f"{path} cannot be opened: {exc.strerror or exc}") from None
    handle = os.fdopen(fd, "rb")
    with handle:
        opened = os.fstat(handle.fileno())
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise AnalysisFileError(f"{path} changed while it was opened; try again")
        yield handle, opened.st_size


def _read_manifest_text(folder: Path) -> bytes:
    with open_plain_file(folder, MANIFEST_NAME) as (handle, size):
        if size > MAX_MANIFEST_BYTES:
            raise AnalysisFileError(
                f"{folder / MANIFEST_NAME} has {size:,} bytes, more than the "
                f"{MAX_MANIFEST_BYTES:,} an analysis manifest can have; it is not ours"
            )
        return handle.read(MAX_MANIFEST_BYTES + 1)


def is_analysis_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a napari-topolens analysis manifest."""
    folder = Path(path)
    try:
        if not folder.is_dir():
            return False
        head = json.loads(_read_manifest_text(folder).decode("utf-8"))
    except (AnalysisFileError, OSError, ValueError, RecursionError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT_NAME


def folder_argument(path: Any, caller: str) -> Path:
    """``path`` as a Path; a project error naming the argument for anything but a path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TopoLensError(
            f"{caller}: path must be a folder (str or pathlib.Path), got {type(path).__name__}"
        )
    return Path(path).expanduser()


def save_analysis(analysis: Any, path: str | os.PathLike) -> Path:
    """Write ``analysis`` to the directory ``path`` (created or atomically replaced).

    ``path`` may be new, an empty directory or a previously saved analysis; any
    other existing file or folder is refused rather than overwritten.
    """
    if not dataclasses.is_dataclass(analysis) or isinstance(analysis, type):
        raise TopoLensError(
            f"save_analysis: analysis must be an Analysis, got {type(analysis).__name__}"
        )
    target = folder_argument(path, "save_analysis")
    if target.is_symlink():
        raise AnalysisFileError(f"{target} is a link; save the analysis to a plain folder")
    if target.exists():
        if not target.is_dir():
            raise AnalysisFileError(
                f"{target} is a file; save the analysis to a new or empty folder"
            )
        if any(target.iterdir()) and not is_analysis_dir(target):
            raise AnalysisFileError(
                f"{target} is a folder with other content, not a saved analysis; "
                "save to a new or empty folder so nothing of yours is overwritten"
            )
    target.parent.mkdir(parents=True, exist_ok=True)

    sink = ArraySink()
    tree = to_tree(analysis, sink)
    token = uuid.uuid4().hex[:12]
    staging = target.parent / f".{target.name}.saving-{token}"
    retired = target.parent / f".{target.name}.old-{token}"
    try:
        staging.mkdir()
        arrays_path = staging / ARRAYS_NAME
        np.savez(arrays_path, **sink.arrays)  # type: ignore[arg-type]
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "files": {
                ARRAYS_NAME: {
                    "sha256": sha256_file(arrays_path),
                    "bytes": arrays_path.stat().st_size,
                }
            },
            "analysis": tree,
        }
        manifest["manifest_sha256"] = canonical_digest(manifest)
        text = json.dumps(manifest, indent=1, allow_nan=False)
        with open(staging / MANIFEST_NAME, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
    except BaseException:
        _remove_tree(staging)
        if retired.exists() and not target.exists():
            os.replace(retired, target)  # put the good saved work back
        raise
    _remove_tree(retired)
    return target


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def read_manifest(folder: Path) -> dict:
    """``analysis.json`` of ``folder``: its format, version and checksum checked."""
    manifest_path = folder / MANIFEST_NAME
    if not folder.exists():
        raise AnalysisFileError(f"{folder} does not exist; give the folder of a saved analysis")
    if not folder.is_dir():
        raise AnalysisFileError(
            f"{folder} is a file, not a saved analysis; give the folder that holds {MANIFEST_NAME}"
        )
    if not os.path.lexists(manifest_path):
        raise AnalysisFileError(
            f"{folder} is not a saved napari-topolens analysis (it has no {MANIFEST_NAME})"
        )
    raw = _read_manifest_text(folder)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise AnalysisFileError(f"{manifest_path} is damaged: it is not UTF-8 text") from exc
    except RecursionError:
        raise AnalysisFileError(
            f"{manifest_path} is nested too deeply to be an analysis; it is not ours"
        ) from None
    except ValueError as exc:
        raise AnalysisFileError(
            f"{manifest_path} is damaged: it is not valid JSON ({exc})"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise AnalysisFileError(
            f"{manifest_path} is not a napari-topolens analysis (format {found!r:.60})"
        )
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise AnalysisFileError(f"{manifest_path} has no valid format version ({version!r:.40})")
    if version > FORMAT_VERSION:
        raise AnalysisFileError(
            f"{manifest_path} was written in format version {version}, newer than the "
            f"{FORMAT_VERSION} this napari-topolens reads; update napari-topolens"
        )
    if version == 1:
        raise AnalysisFileError(
            f"{manifest_path} was written by an earlier napari-topolens (format 1), whose "
            "analysis.json carries no checksum, so edits to it cannot be detected; "
            "recompute the analysis"
        )
    if version < 1:
        raise AnalysisFileError(f"{manifest_path} has an unknown format version {version}")
    recorded = manifest.get("manifest_sha256")
    try:
        actual = canonical_digest(manifest)
    except (ValueError, RecursionError):
        actual = None
    if not isinstance(recorded, str) or recorded != actual:
        raise AnalysisFileError(
            f"{manifest_path} is damaged or was edited: its content does not match the "
            "checksum recorded when it was saved"
        )
    if "analysis" not in manifest:
        raise AnalysisFileError(f"{manifest_path} holds no analysis")
    return manifest


def arrays_record(folder: Path, manifest: dict) -> tuple[str, int]:
    """The sha256 and size the manifest records for ``arrays.npz`` (its only file)."""
    files = manifest.get("files")
    where = folder / MANIFEST_NAME
    if not isinstance(files, dict) or set(files) != {ARRAYS_NAME}:
        listed = sorted(map(str, files)) if isinstance(files, dict) else files
        raise AnalysisFileError(
            f"{where} must list exactly the file {ARRAYS_NAME}, not {listed!r:.80}; "
            "a saved analysis never refers to other files"
        )
    record = files[ARRAYS_NAME]
    digest = record.get("sha256") if isinstance(record, dict) else None
    size = record.get("bytes") if isinstance(record, dict) else None
    if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool):
        raise AnalysisFileError(f"{where} records no size and sha256 for {ARRAYS_NAME}")
    return digest, size


def read_member(archive: zipfile.ZipFile, key: str, archive_bytes: int, where: str) -> np.ndarray:
    """One ``.npy`` member, its header checked against the bytes the archive holds."""
    from numpy.lib import format as npy

    try:
        info = archive.getinfo(f"{key}.npy")
    except KeyError:
        raise AnalysisFileError(
            f"{where} refers to array {key!r:.40}, which {ARRAYS_NAME} does not hold; "
            "the analysis is damaged"
        ) from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise AnalysisFileError(f"{where}: array {key!r} is compressed; napari-topolens never is")
    if info.file_size > archive_bytes or info.compress_size != info.file_size:
        raise AnalysisFileError(
            f"{where}: array {key!r} declares {info.file_size:,} bytes in an archive of "
            f"{archive_bytes:,}"
        )
    with archive.open(info) as member:
        version = npy.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(member)
        else:
            raise AnalysisFileError(f"{where}: array {key!r} has npy version {version}")
        if dtype.hasobject or dtype.kind not in ARRAY_KINDS or dtype.fields is not None:
            raise AnalysisFileError(
                f"{where}: array {key!r} has dtype {dtype}; only numbers, booleans and text are read"
            )
        count = 1
        for extent in shape:
            count *= int(extent)
        nbytes = count * dtype.itemsize
        header = member.tell()
        if header + nbytes != info.file_size:
            raise AnalysisFileError(
                f"{where}: array {key!r} declares shape {tuple(shape)} of {dtype} "
                f"({nbytes:,} bytes) but holds {info.file_size - header:,}"
            )
        buffer = bytearray(nbytes)
        if typing.cast(io.BufferedIOBase, member).readinto(buffer) != nbytes or member.read(1):
            raise AnalysisFileError(f"{where}: array {key!r} is truncated")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran else "C")
