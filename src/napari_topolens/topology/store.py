"""Save and load an :class:`~napari_topolens.topology.analysis.Analysis` losslessly.

The format is a directory holding exactly two files, ``analysis.json`` and
``arrays.npz``:

* ``analysis.json`` names the format and its version, records the size and the
  sha256 of ``arrays.npz``, holds the analysis as a tree of JSON values, and ends
  with ``manifest_sha256``: the sha256 of the canonical JSON text of everything
  else in it, so an edited parameter or result is noticed as well as a damaged
  array file. Dataclasses are written generically (``dataclasses.fields``
  recursion) under their class name, so a new field of a result type needs no
  code here.
* ``arrays.npz`` (``np.savez``, stored, no pickle) holds every numpy array and
  numpy scalar, so arrays keep their dtype and shape bit for bit.

Python floats are written as JSON numbers (``repr``, which round-trips exactly);
NaN and the infinities, which JSON lacks, are written as ``{"__float__": "nan"}``
and the like. Tuples, dicts with non-string keys and ``None`` are tagged so they
come back as they were.

Loading treats the folder as untrusted. It reads only the two file names above,
never through a link and never outside the folder; it checks both checksums, then
rebuilds the tree checking every value against the type annotations of the
dataclass field that holds it (so new fields are validated with no code of their
own), CSR member lists (``x`` with ``x_offsets``) for monotone in-bounds offsets,
and the cross references of a layer (member rows within the cloud, image numbers
within the images). Arrays are read one at a time, only those the tree refers
to, after their ``.npy`` header's shape times item size has been checked against
the bytes the archive really holds. Checksums only show the files are undamaged
(anyone can recompute them), so the loaded analysis is then cross-checked as a
whole: every value the report and the views index or size with (class and
prediction codes, per-image arrays, images against ``image_shape``, diagrams,
Betti curves, matrices, coordinates, cluster ids, orders) against the others,
and each variant with its comparison against its base. Every refusal is an
:class:`~napari_topolens.errors.AnalysisFileError` naming the file and what is
wrong; nothing is ever unpickled.

Saving writes into a temporary sibling directory and renames it into place, so
an interrupted or failed save never leaves a half-written analysis over good
saved work.

The work is split by role: ``store_types`` (result classes by name, values against
annotations), ``store_codec`` (the JSON tree), ``store_checks`` (the domain
cross-checks) and ``store_files`` (the two files and their checksums); this module
is the public entry and knows which result classes a saved analysis may hold.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from types import ModuleType
from typing import Any, TypeVar, overload

from ..activations import pointcloud
from ..errors import AnalysisFileError, TopoLensError
from . import config, hole, mapper, quality, results
from .results import Analysis
from .store_checks import DOMAIN_CHECKS, MAX_IMAGE_PIXELS, check_analysis
from .store_codec import MAX_DEPTH, Arrays, from_tree, to_tree
from .store_files import (
    ARRAYS_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    arrays_record,
    canonical_digest,
    folder_argument,
    is_analysis_dir,
    open_plain_file,
    read_manifest,
    read_member,
    save_analysis,
    sha256_file,
    sha256_handle,
)
from .store_types import describe, field_hints, register_dataclass, type_problem

__all__ = [
    "ARRAYS_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_DEPTH",
    "MAX_IMAGE_PIXELS",
    "MAX_MANIFEST_BYTES",
    "canonical_digest",
    "field_hints",
    "from_tree",
    "is_analysis_dir",
    "load_analysis",
    "open_plain_file",
    "register_dataclass",
    "register_result_classes",
    "save_analysis",
    "sha256_file",
    "to_tree",
    "type_problem",
]

_Saved = TypeVar("_Saved")

#: Modules whose dataclasses may appear in a saved analysis (persistence and phdim,
#: heavy to import, are added by :func:`register_result_classes`).
_LIGHT_RESULT_MODULES: tuple[ModuleType, ...] = (pointcloud, config, hole, mapper, quality, results)


def _register_module(module: ModuleType) -> None:
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and dataclasses.is_dataclass(value)
            and value.__module__ == module.__name__
        ):
            register_dataclass(value)


def register_result_classes() -> None:
    """Make every result class a saved analysis may hold known to the loader by name.

    Called by :func:`load_analysis`; others are added by :func:`register_dataclass`.
    """
    from . import persistence, phdim  # heavy: both import scipy (via topology.metrics)

    for module in (*_LIGHT_RESULT_MODULES, persistence, phdim):
        _register_module(module)


@overload
def load_analysis(path: str | os.PathLike, *, expected: None = None) -> Analysis: ...


@overload
def load_analysis(path: str | os.PathLike, *, expected: type[_Saved]) -> _Saved: ...


def load_analysis(path: str | os.PathLike, *, expected: type | None = None) -> Any:
    """Read an analysis saved by :func:`save_analysis` (``Analysis.save``).

    Parameters
    ----------
    path : str or path
        The folder.
    expected : type, optional
        The class of the saved top object; :class:`Analysis` when omitted.

    Raises
    ------
    AnalysisFileError
        For a missing, foreign, damaged, edited or truncated file, links or files
        other than the two of the format, values that do not fit their fields, and
        a newer format version.
    """
    if expected is None:
        expected = Analysis
    elif not isinstance(expected, type):
        raise TopoLensError(f"load_analysis: expected must be a class, got {expected!r:.40}")
    register_result_classes()
    folder = folder_argument(path, "load_analysis")
    manifest = read_manifest(folder)
    digest, size = arrays_record(folder, manifest)
    where = str(folder / MANIFEST_NAME)
    arrays_path = folder / ARRAYS_NAME
    with open_plain_file(folder, ARRAYS_NAME) as (handle, actual_size):
        if actual_size != size:
            raise AnalysisFileError(
                f"{arrays_path} is damaged or truncated: it has {actual_size} bytes, "
                f"{size} were saved"
            )
        if sha256_handle(handle) != digest:
            raise AnalysisFileError(
                f"{arrays_path} is damaged: its sha256 differs from the one recorded when it was saved"
            )
        handle.seek(0)
        try:
            with zipfile.ZipFile(handle) as archive:
                arrays = Arrays(lambda key: read_member(archive, key, actual_size, where))
                result = from_tree(manifest["analysis"], arrays, where, checks=DOMAIN_CHECKS)
        except AnalysisFileError:
            raise
        except RecursionError:
            raise AnalysisFileError(f"{where} is nested too deeply; it is not ours") from None
        except MemoryError:
            raise AnalysisFileError(f"{arrays_path} holds arrays too large to load") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
            raise AnalysisFileError(f"{arrays_path} cannot be read: {exc}") from exc
    if not isinstance(result, expected):
        raise AnalysisFileError(
            f"{where} holds {describe(result)}, not a saved {expected.__name__}"
        )
    if isinstance(result, Analysis):  # with its variants, against each other
        try:
            check_analysis(result, where)
        except AnalysisFileError:
            raise
        except Exception as exc:  # a value no check foresaw: still a refusal, not a crash
            raise AnalysisFileError(
                f"{where} holds an analysis that does not validate: {type(exc).__name__}: {exc}"
            ) from exc
    return result
