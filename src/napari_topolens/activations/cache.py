"""Activations cached on disk as chunked zarr, so a second analysis skips extraction.

Each layer's :class:`PointCloud` is one zarr group ``<cache>/activations-v2/<key>/``,
where ``key`` is the SHA-256 of everything the cloud depends on
(:func:`entry_keys`): the model's weights and buffers, its code
(:func:`model_fingerprint`), the torch, numpy and Python versions, this package's
extraction code, the dtype and device kind, the images (a fingerprint read batch by
batch), the layer and every extraction option passed in (sampling, point cap,
seed, mask, input scaling, ...). An analysis with other topology parameters on the
same model, layers and images finds its clouds here.

A cache folder may be shared (a lab's network drive), so an entry is read like an
untrusted file: only the files expected, never through links, each metadata file
and chunk checked for its size before anything is allocated, every array read in
full and covered by a keyed checksum (HMAC-SHA256 with a secret kept outside the
cache, :func:`cache_key_file`), and its content checked against the request
(shapes, dtypes, finite values, image indices, grid positions and receptive fields
in range, sampling and grid equal to the request). An entry that fails any check
is ignored and recomputed with a one-line :class:`CacheWarning`; it is never
fatal and never used. A new entry is written to a temporary folder and renamed
into place, so a reader never sees half an entry. Chunks are stored uncompressed,
so a chunk's size on disk is known before it is read (no decompression bombs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import inspect
import json
import os
import re
import secrets
import shutil
import stat
import sys
import types
import uuid
import warnings
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import Progress, scaled
from .._version import __version__ as package_version
from ..errors import TopoLensError
from .image_source import ImageSource
from .options import DEFAULT_MAX_POSITIONS
from .pointcloud import PointCloud

if TYPE_CHECKING:
    import torch

    from .receptive_field import LayerGeometry

__all__ = [
    "KEY_FILE_ENV",
    "ActivationCache",
    "CacheError",
    "CacheWarning",
    "EntryRequest",
    "cache_key_file",
    "entry_keys",
    "model_fingerprint",
]

_FORMAT = "activations-v2"
#: Environment variable naming the cache's secret key file (else the user's config folder).
KEY_FILE_ENV = "NAPARI_TOPOLENS_CACHE_KEY_FILE"
_KEY_BYTES = 32
_MAX_KEY_FILE_BYTES = 4096
_ROWS_PER_CHUNK = 16_384
_MAX_CHUNK_BYTES = 64 << 20
#: Largest metadata file read from an entry (zarr.json holds the record as attributes).
_MAX_META_BYTES = 1 << 20
_MAX_CHANNELS = 1 << 20
#: Largest absolute activation kept: beyond it a squared distance overflows float32.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ARRAY_META_KEYS = {
    "shape",
    "data_type",
    "chunk_grid",
    "chunk_key_encoding",
    "fill_value",
    "codecs",
    "attributes",
    "zarr_format",
    "node_type",
    "storage_transformers",
    "dimension_names",
}


class CacheError(TopoLensError):
    """A cache folder or key file that cannot be used (not a folder, a link, not writable)."""


class CacheWarning(UserWarning):
    """A cache entry was ignored (damaged, edited or not for this request) and recomputed."""


class _Untrusted(Exception):
    """An entry that fails a check; it is ignored and recomputed."""


# ---- the secret key ---------------------------------------------------------------------


def _config_folder() -> Path:
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / "napari-topolens"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "napari-topolens"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "napari-topolens"


def cache_key_file() -> Path:
    """Where the cache's secret key lives: ``$NAPARI_TOPOLENS_CACHE_KEY_FILE``, else the
    user's config folder (``~/.config/napari-topolens/cache-key`` on Linux,
    ``~/Library/Application Support/napari-topolens/cache-key`` on macOS,
    ``%APPDATA%\\napari-topolens\\cache-key`` on Windows).

    The key is outside the cache on purpose: whoever can write to a shared cache
    folder but has not been given the key cannot forge an entry that is used.
    """
    named = os.environ.get(KEY_FILE_ENV)
    if named:
        return Path(named).expanduser()
    return _config_folder() / "cache-key"


def _read_or_create_key(path: Path) -> bytes:
    """The secret in ``path`` (hex), created with 0600 permissions on first use."""
    if not path.exists() and not path.is_symlink():
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.parent.is_dir():
                raise NotADirectoryError(f"{path.parent} is not a folder")
            # written whole to a private temporary file, then linked into place: a process
            # starting at the same moment reads either no key file or the complete key
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(descriptor, "w") as stream:
                    stream.write(secrets.token_hex(_KEY_BYTES) + "\n")
                try:
                    os.link(temporary, path)
                except FileExistsError:
                    pass  # another process made the key first: use theirs
                except OSError:  # a file system without hard links
                    if not os.path.lexists(path):
                        os.rename(temporary, path)
            finally:
                if os.path.lexists(temporary):
                    os.unlink(temporary)
        except OSError as exc:
            raise CacheError(
                f"cannot create the activation cache key file {path}: {exc}; "
                f"set {KEY_FILE_ENV} to a writable file outside the cache"
            ) from exc
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(descriptor, "rb") as stream:
            info = os.fstat(stream.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_KEY_FILE_BYTES:
                raise CacheError(f"the activation cache key file {path} is not a small file")
            text = stream.read(_MAX_KEY_FILE_BYTES).decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CacheError(
            f"cannot read the activation cache key file {path} ({exc}); it must be a plain "
            f"file, not a link; set {KEY_FILE_ENV} to use another"
        ) from exc
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise CacheError(
            f"the activation cache key file {path} does not hold a key (at least 32 hex "
            "digits); delete it to make a new one, or copy your lab's key file there"
        )
    return secret


# ---- what the activations depend on -----------------------------------------------------

#: Modules whose code is pinned by their version (in the key) rather than hashed.
_LIBRARIES = ("torch", "numpy", "builtins", "typing", "functools", "collections", "math")
_MODULE_INTERNALS = {
    "_parameters",
    "_buffers",
    "_modules",
    "training",
    "_non_persistent_buffers_set",
}


def _is_library(module_name: str | None) -> bool:
    top = (module_name or "").split(".")[0]
    return top in _LIBRARIES


class _CodeDigest:
    """Feeds the code an object runs into a hash: source where available, and always
    the compiled code objects (bytecode, constants, names) of every function reached."""

    def __init__(self, digest: Any):
        self.digest = digest
        self.seen: set[int] = set()

    def text(self, value: str) -> None:
        self.digest.update(value.encode("utf-8", "surrogatepass") + b"\0")

    def function(self, function: Any) -> None:
        """A function, its closure and the user functions and classes its code names."""
        if isinstance(function, (staticmethod, classmethod)):
            function = function.__func__
        if isinstance(function, types.MethodType):
            self.text(f"bound to {type(function.__self__).__qualname__}")
            function = function.__func__
        if isinstance(function, property):
            for part in (function.fget, function.fset):
                if part is not None:
                    self.function(part)
            return
        if isinstance(function, type):
            self.cls(function)
            return
        code = getattr(function, "__code__", None)
        if code is None:  # a builtin or callable object: its name is what we can pin
            self.text(f"callable {type(function).__module__}.{type(function).__qualname__}")
            call = vars(type(function)).get("__call__")
            if isinstance(call, types.FunctionType):
                self.function(call)
            return
        if id(function) in self.seen or len(self.seen) > 20_000:
            return
        self.seen.add(id(function))
        self.text(f"function {function.__module__}.{function.__qualname__}")
        self.digest.update(_code_bytes(code))
        for cell in function.__closure__ or ():
            try:
                self.value(cell.cell_contents, depth=1)
            except ValueError:  # an empty cell
                self.text("empty cell")
        for name in _names(code):
            found = function.__globals__.get(name)
            if isinstance(found, (types.FunctionType, type)) and not _is_library(
                getattr(found, "__module__", None)
            ):
                self.function(found)

    def cls(self, cls: type) -> None:
        """A class: its defining file's source (where available) and its methods' code."""
        for klass in cls.__mro__:
            if klass is object or _is_library(klass.__module__) or id(klass) in self.seen:
                continue
            self.seen.add(id(klass))
            self.text(f"class {klass.__module__}.{klass.__qualname__}")
            module = sys.modules.get(klass.__module__)
            try:
                source = inspect.getsource(module) if module is not None else None
            except (OSError, TypeError):
                source = None  # defined in a notebook or exec'd: the code objects stand alone
            self.text(source if source is not None else "<no source>")
            for name, member in sorted(vars(klass).items()):
                if callable(member) or isinstance(member, (staticmethod, classmethod, property)):
                    self.text(name)
                    self.function(member)
                elif not name.startswith("__") and isinstance(
                    member, (type(None), bool, int, float, str, tuple)
                ):
                    self.text(name)  # a class constant, e.g. ``scale = 0.5``
                    self.value(member, depth=2)

    def value(self, value: Any, depth: int = 0) -> None:
        """A plain attribute: numbers and text as such, arrays by their bytes, callables by
        their code, anything else by its type."""
        import torch

        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            self.text(f"{type(value).__name__}:{value!r}")
        elif isinstance(value, torch.Tensor):
            self.tensor(value)
        elif isinstance(value, np.ndarray):
            self.text(f"ndarray {value.dtype} {value.shape}")
            self.digest.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, torch.dtype | torch.device):
            self.text(str(value))
        elif isinstance(value, (list, tuple)) and depth < 4:
            self.text(f"{type(value).__name__}[{len(value)}]")
            for item in list(value)[:10_000]:
                self.value(item, depth + 1)
        elif isinstance(value, dict) and depth < 4:
            self.text(f"dict[{len(value)}]")
            for key, item in list(value.items())[:10_000]:
                self.value(key, depth + 1)
                self.value(item, depth + 1)
        elif callable(value):
            self.function(value)
        else:
            self.text(f"object {type(value).__module__}.{type(value).__qualname__}")

    def tensor(self, tensor: torch.Tensor) -> None:
        import torch

        flat = tensor.detach().cpu().contiguous().reshape(-1)
        self.text(f"tensor {flat.dtype} {tuple(tensor.shape)}")
        if flat.dtype.is_complex:
            flat = torch.view_as_real(flat).reshape(-1)
        self.digest.update(flat.view(torch.uint8).numpy().tobytes())


def _code_bytes(code: types.CodeType) -> bytes:
    """A code object's bytecode, constants and names, the same in every process
    (``marshal`` is not: it depends on reference counts, and sets on the hash seed)."""
    layout = (
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
    )
    parts = [code.co_code, repr(layout).encode()]
    parts += [_constant_bytes(constant) for constant in code.co_consts]
    return b"\0".join(parts)


def _constant_bytes(constant: Any) -> bytes:
    if isinstance(constant, types.CodeType):
        return b"code(" + _code_bytes(constant) + b")"
    if isinstance(constant, tuple):
        return b"(" + b",".join(_constant_bytes(c) for c in constant) + b")"
    if isinstance(constant, frozenset):
        return b"{" + b",".join(sorted(_constant_bytes(c) for c in constant)) + b"}"
    return repr(constant).encode()


def _names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_names(const))
    return names


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of everything in the model that decides its activations.

    - Every parameter and buffer (persistent or not), bit for bit, by name.
    - The code of every module class in the model (each class of its MRO outside
      torch): the source of the file that defines it where ``inspect`` can find it,
      and always the compiled code objects (bytecode, constants and names) of its methods and of
      the non-library functions and classes they name (followed transitively), so a
      ``forward`` edited in place, patched at run time or defined in a notebook
      changes the fingerprint. torch's own classes are pinned by torch's version,
      which is part of the cache key.
    - The generated code of TorchScript and ``torch.fx`` modules (their ``.code``).
    - Each module's plain attributes (numbers, text, tensors not registered as
      buffers, callables stored on the instance) and the forward hooks registered on
      it or globally (by their code, not their handle numbers).
    - The model's ``repr``.

    Not covered: code reached only through objects the fingerprint cannot see
    (e.g. a function looked up at run time by a name built from text); such models
    should not be cached.
    """
    import torch

    digest = hashlib.sha256()
    code = _CodeDigest(digest)
    shown = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(model))  # addresses differ by process
    code.text(f"{type(model).__module__}.{type(model).__qualname__}\n{shown}")
    for name, module in model.named_modules(remove_duplicate=False):
        code.text(f"module {name}")
        code.cls(type(module))
        generated = getattr(type(module), "code", None)
        if isinstance(generated, property):  # TorchScript and torch.fx modules: their code
            try:
                code.text(str(module.code))
            except Exception as exc:  # a script module without a forward has no code
                code.text(f"no code: {type(exc).__name__}")
        for attribute, value in sorted(vars(module).items()):
            if attribute in _MODULE_INTERNALS or "backward" in attribute:
                continue
            code.text(f"attribute {attribute}")
            if "hooks" in attribute and isinstance(value, Mapping):
                code.value(list(value.values()))  # handle numbers differ from run to run
            else:
                code.value(value)
    tensors: list[tuple[str, torch.Tensor]] = [*model.named_parameters(remove_duplicate=False)]
    tensors += [*model.named_buffers(remove_duplicate=False)]
    for name, tensor in tensors:
        code.text(f"weight {name}")
        code.tensor(tensor)
    hooks_module = torch.nn.modules.module
    for attribute in ("_global_forward_pre_hooks", "_global_forward_hooks"):
        code.text(attribute)
        code.value(list(getattr(hooks_module, attribute, {}).values()))
    return digest.hexdigest()


@lru_cache(maxsize=1)
def _extraction_code() -> str:
    """SHA-256 of this package's version and of the source of every module of the
    activations package (extraction, receptive fields, hooks, image sources, ...): a fix
    to any of them invalidates old entries. Read from the files beside this one, so that
    the cache imports none of them (extraction imports the cache). Without the sources
    (a build that ships none) the cache is not used, rather than keyed by the version."""
    digest = hashlib.sha256(f"napari-topolens {package_version}".encode())
    files = sorted(Path(__file__).resolve().parent.glob("*.py"))
    if not any(path.name == "extract.py" for path in files):
        raise FileNotFoundError(
            "the source files of napari_topolens.activations are not installed, and the "
            "activation cache keys its entries by them"
        )
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _canonical(value: Any, where: str) -> Any:
    """An option's value as exact JSON (floats by ``repr``; arrays by a hash of their bytes)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return {"float": repr(float(value))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, where) for k, v in sorted(value.items(), key=str)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. an InputScale
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"dataclass": kind, "fields": _canonical(fields, where)}
    if isinstance(value, np.ndarray):
        contiguous = np.ascontiguousarray(value)
        return {
            "array": str(contiguous.dtype),
            "shape": list(contiguous.shape),
            "sha256": hashlib.sha256(contiguous.tobytes()).hexdigest(),
        }
    raise _Untrusted(f"the option {where} ({type(value).__name__}) has no stable form for a key")


def _plain(value: Any) -> Any:
    """Meta values as JSON (tuples become lists; numpy scalars become numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def entry_keys(
    model: torch.nn.Module,
    source: ImageSource,
    layers: list[str],
    *,
    options: Mapping[str, Any],
    device_type: str,
    dtype: Any,
) -> dict[str, str]:
    """The cache key of each layer's cloud.

    ``options`` are the extraction's options, ALL of those that change the
    activations (whatever their names: a new option is part of the key as soon as it
    is passed in). Each must be ``None``, a bool, number, text, array, a dataclass
    of those, or a list or mapping of those; anything else raises (the caller then
    skips the cache with a notice).
    """
    import torch

    shared = {
        "format": _FORMAT,
        "model": model_fingerprint(model),
        "images": source.fingerprint(),
        "extraction_code": _extraction_code(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": list(sys.version_info[:2]),
        "device": str(device_type),
        "dtype": str(dtype),
        "options": {str(k): _canonical(v, str(k)) for k, v in sorted(options.items())},
    }
    return {layer: ActivationCache.key(**shared, layer=layer) for layer in layers}


# ---- entries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryRequest:
    """What a cloud read from the cache must be, for one layer of one extraction."""

    layer: str
    geometry: LayerGeometry
    sampling: str  # as requested
    max_points: int | None
    seed: int
    n_images: int
    image_shape: tuple[int, int]

    @property
    def mode(self) -> str:
        return "pooled" if self.geometry.kind == "vector" else self.sampling

    @property
    def has_position(self) -> bool:
        return self.mode != "pooled"

    def point_count(self) -> tuple[int, bool]:
        """The number of points a fresh extraction gives, and whether it is exact."""
        if self.mode == "all_positions":
            cap = DEFAULT_MAX_POSITIONS if self.max_points is None else int(self.max_points)
            return min(self.n_images * self.geometry.n_positions, cap), True
        chosen = self.n_images if self.max_points is None else min(self.max_points, self.n_images)
        return chosen, self.mode != "foreground"


def _rows_per_chunk(n_points: int, row_bytes: int) -> int:
    """Rows per chunk: fixed by the shape, so a reader knows every chunk's size."""
    return max(1, min(max(n_points, 1), _ROWS_PER_CHUNK, _MAX_CHUNK_BYTES // max(row_bytes, 1)))


def _array_layout(m: int, d: int, has_position: bool) -> dict[str, tuple[tuple[int, ...], Any]]:
    layout: dict[str, tuple[tuple[int, ...], Any]] = {
        "points": ((m, d), np.dtype("<f4")),
        "image_index": ((m,), np.dtype("<i8")),
        "receptive_field": ((m, 4), np.dtype("<i8")),
    }
    if has_position:
        layout["position"] = ((m, 2), np.dtype("<i8"))
    return layout


def _signed_content(record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> list[bytes]:
    """What the checksums cover: the record (less the checksums) and every array."""
    text = json.dumps(
        {k: v for k, v in record.items() if k not in ("sha256", "hmac_sha256")}, sort_keys=True
    )
    parts = [b"napari-topolens activation cache entry\n", text.encode()]
    for name in sorted(arrays):
        values = np.ascontiguousarray(arrays[name])
        parts.append(f"\n{name} {values.dtype.str} {list(values.shape)}\n".encode())
        parts.append(values.tobytes())
    return parts


def _checksums(
    secret: bytes, record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> tuple[str, str]:
    plain, keyed = hashlib.sha256(), hmac.new(secret, digestmod=hashlib.sha256)
    for part in _signed_content(record, arrays):
        plain.update(part)
        keyed.update(part)
    return plain.hexdigest(), keyed.hexdigest()


def _read_small_json(path: Path) -> Any:
    with _open_plain(path) as stream:
        size = os.fstat(stream.fileno()).st_size
        if size > _MAX_META_BYTES:
            raise _Untrusted(f"{path.name} is {size} bytes")
        return json.loads(stream.read(_MAX_META_BYTES + 1))


def _open_plain(path: Path) -> Any:
    """``path`` opened for reading, refusing links and anything but a regular file."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    stream = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        stream.close()
        raise _Untrusted(f"{path.name} is not a file")
    return stream


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Untrusted(f"{what} is not a whole number")
    return value


class ActivationCache:
    """A folder of cached point clouds.

    Parameters
    ----------
    folder : str or path
        Created if missing; must not be a link.
    key_file : str or path, optional
        The secret that signs entries (:func:`cache_key_file` by default); created
        on first use. It must lie outside the cache folder.
    """

    def __init__(self, folder: str | os.PathLike, *, key_file: str | os.PathLike | None = None):
        try:
            import zarr  # noqa: F401
        except ImportError as exc:
            raise CacheError(
                "the activation cache needs zarr (>= 3); pip install 'napari-topolens[lazy]'"
            ) from exc
        if not isinstance(folder, (str, os.PathLike)):
            raise CacheError(f"the cache folder must be a path, got {type(folder).__name__}")
        if key_file is not None and not isinstance(key_file, (str, os.PathLike)):
            raise CacheError(f"the cache key file must be a path, got {type(key_file).__name__}")
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
        self.key_file = Path(key_file).expanduser() if key_file is not None else cache_key_file()
        if self.key_file.resolve().is_relative_to(self.root):
            raise CacheError(
                f"the cache key file {self.key_file} lies inside the cache folder {self.root}; "
                "keep it outside (anyone who can write the cache could read it)"
            )
        self._secret = _read_or_create_key(self.key_file)

    # ---- keys -------------------------------------------------------------------------
    @staticmethod
    def key(**parts: Any) -> str:
        """The entry name for a cloud: SHA-256 of its determining parts, as sorted JSON."""
        text = json.dumps({"format": _FORMAT, **_plain(parts)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        if (
            not isinstance(key, str)
            or len(key) != 64
            or any(c not in "0123456789abcdef" for c in key)
        ):
            raise CacheError(f"not a cache key: {key!r}")
        return self.entries / key

    # ---- read -------------------------------------------------------------------------
    def load(self, key: str, request: EntryRequest) -> tuple[PointCloud | None, str]:
        """The cloud stored under ``key`` and ``""``; ``(None, "")`` when there is none;
        ``(None, reason)`` when there is one that must not be used."""
        entry = self._entry(key)
        if not isinstance(request, EntryRequest):
            raise CacheError(f"load needs an EntryRequest, got {type(request).__name__}")
        if not os.path.lexists(entry):
            return None, ""
        try:
            return self._read(entry, key, request), ""
        except _Untrusted as exc:
            return None, str(exc)
        except RecursionError:
            return None, "metadata nested too deeply"
        except Exception as exc:  # anything a damaged entry can raise: never fatal
            return None, f"unreadable ({type(exc).__name__}: {exc})"[:300]

    def _read(self, entry: Path, key: str, request: EntryRequest) -> PointCloud:
        if not stat.S_ISDIR(os.lstat(entry).st_mode):
            raise _Untrusted("the entry is a link or not a folder")
        group = _read_small_json(entry / "zarr.json")
        if not isinstance(group, dict) or group.get("node_type") != "group":
            raise _Untrusted("the entry is not a zarr group")
        record = group.get("attributes")
        if not isinstance(record, dict):
            raise _Untrusted("the entry has no record")
        if record.get("key") != key or record.get("format") != _FORMAT:
            raise _Untrusted("the entry was written for another key")
        m = _whole(record.get("n_points"), "n_points")
        d = _whole(record.get("n_channels"), "n_channels")
        count, exact = request.point_count()
        if d != request.geometry.channels or not 0 < d <= _MAX_CHANNELS:
            raise _Untrusted(f"{d} channels, the layer has {request.geometry.channels}")
        if m < 0 or m > count or (exact and m != count):
            raise _Untrusted(f"{m} points declared, the request gives {count}")
        if record.get("has_position") is not request.has_position:
            raise _Untrusted("positions present where none are expected, or missing")
        layout = _array_layout(m, d, request.has_position)
        arrays = {name: self._read_array(entry, name, *layout[name]) for name in layout}
        self._check_no_other_files(entry, layout, arrays)
        plain, keyed = _checksums(self._secret, record, arrays)
        if not hmac.compare_digest(str(record.get("sha256")), plain):
            raise _Untrusted("the arrays do not match their checksum (damaged)")
        if not hmac.compare_digest(str(record.get("hmac_sha256")), keyed):
            raise _Untrusted(
                f"edited, or signed with another key than {self.key_file} (a lab sharing a "
                "cache shares this key file)"
            )
        return _check_content(record, arrays, request)

    def _read_array(
        self, entry: Path, name: str, shape: tuple[int, ...], dtype: np.dtype
    ) -> np.ndarray:
        folder = entry / name
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise _Untrusted(f"{name} is a link or not a folder")
        meta = _read_small_json(folder / "zarr.json")
        row_shape = shape[1:]
        row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
        rows = _rows_per_chunk(shape[0], row_bytes)
        expected = {
            "shape": list(shape),
            "data_type": "float32" if dtype.kind == "f" else "int64",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [rows, *row_shape]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "zarr_format": 3,
            "node_type": "array",
        }
        if not isinstance(meta, dict) or set(meta) - _ARRAY_META_KEYS:
            raise _Untrusted(f"{name}: unexpected metadata")
        for field, value in expected.items():
            if meta.get(field) != value:
                raise _Untrusted(f"{name}: {field} is {str(meta.get(field))[:80]}, not {value}")
        if meta.get("fill_value") != 0 or meta.get("attributes", {}) != {}:
            raise _Untrusted(f"{name}: unexpected fill value or attributes")
        if meta.get("storage_transformers", []) != []:
            raise _Untrusted(f"{name}: storage transformers")
        values = np.empty(shape, dtype=dtype)  # bounded: m and d were checked against the request
        flat = values.reshape(shape[0], -1)
        chunk_bytes = rows * row_bytes
        for start in range(0, shape[0], rows):
            path = _chunk_path(folder, start // rows, len(shape))
            for parent in (folder / "c", *path.parents[: len(shape) - 1]):
                if not stat.S_ISDIR(os.lstat(parent).st_mode):
                    raise _Untrusted(f"{name}: a chunk folder is a link or not a folder")
            with _open_plain(path) as stream:
                size = os.fstat(stream.fileno()).st_size
                if size != chunk_bytes:
                    raise _Untrusted(
                        f"{name}: chunk {start // rows} is {size} bytes, not {chunk_bytes}"
                    )
                part = flat[start : start + rows]
                view = memoryview(part.data).cast("B")
                if stream.readinto(view) != len(view):
                    raise _Untrusted(f"{name}: chunk {start // rows} is truncated")
        return values

    @staticmethod
    def _check_no_other_files(
        entry: Path, layout: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> None:
        """Refuse an entry holding anything but the files read (links included)."""
        allowed = {"zarr.json", *(f"{name}/zarr.json" for name in layout)}
        folders = {""}
        for name, values in arrays.items():
            folders.add(name)
            if len(values):
                rows = _rows_per_chunk(len(values), values.dtype.itemsize * values[0].size)
                for i in range(-(-len(values) // rows)):
                    path = _chunk_path(Path(name), i, values.ndim).as_posix()
                    allowed.add(path)
                    parts = path.split("/")
                    folders.update("/".join(parts[:k]) for k in range(1, len(parts)))
        limit = len(allowed) + len(folders)
        seen = 0
        pending = [""]
        while pending:
            relative = pending.pop()
            with os.scandir(entry / relative) as listing:
                for item in listing:
                    seen += 1
                    if seen > limit:
                        raise _Untrusted("the entry holds more files than expected")
                    inner = f"{relative}/{item.name}" if relative else item.name
                    if item.is_symlink():
                        raise _Untrusted(f"{inner} is a link")
                    if item.is_dir(follow_symlinks=False) and inner in folders:
                        pending.append(inner)
                    elif not (item.is_file(follow_symlinks=False) and inner in allowed):
                        raise _Untrusted(f"unexpected {inner}")

    # ---- write ------------------------------------------------------------------------
    def store(self, key: str, cloud: PointCloud) -> None:
        """Write ``cloud`` under ``key`` (atomically: a temporary folder renamed into place)."""
        import zarr

        if not isinstance(cloud, PointCloud):
            raise CacheError(f"only a PointCloud can be cached, got {type(cloud).__name__}")
        entry = self._entry(key)
        if os.path.lexists(entry):  # an entry that was ignored on reading: replace it
            try:
                if stat.S_ISDIR(os.lstat(entry).st_mode):
                    shutil.rmtree(entry)
                else:
                    entry.unlink()  # a link (never followed) or a file
            except OSError:
                return  # removed or rewritten by another process meanwhile
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
            layout = _array_layout(m, d, cloud.position is not None)
            # every chunk on disk, zeros too: a reader never falls back to a fill value
            keep_empty_chunks: Any = {"write_empty_chunks": True}
            for name, values in arrays.items():
                shape, dtype = layout[name]
                values = np.ascontiguousarray(values, dtype=dtype)
                arrays[name] = values
                rows = _rows_per_chunk(m, dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)))
                array = group.create_array(
                    name,
                    shape=shape,
                    dtype=dtype,
                    chunks=(rows, *shape[1:]),
                    compressors=None,
                    fill_value=0,
                    config=keep_empty_chunks,
                )
                if m:
                    array[...] = values
            record: dict[str, Any] = {
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
            }
            record = json.loads(json.dumps(record))  # as it will read back
            record["sha256"], record["hmac_sha256"] = _checksums(self._secret, record, arrays)
            group.attrs.update(record)
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


def _chunk_path(folder: Path, index: int, ndim: int) -> Path:
    return folder / "c" / str(index) / "0" if ndim == 2 else folder / "c" / str(index)


def _check_content(
    record: Mapping[str, Any], arrays: Mapping[str, np.ndarray], request: EntryRequest
) -> PointCloud:
    """The entry's cloud, if what it says agrees with the request and with itself."""
    geometry = request.geometry
    height, width = request.image_shape
    if record.get("layer") != request.layer:
        raise _Untrusted(f"written for layer {record.get('layer')!r}")
    if record.get("sampling") != request.mode:
        raise _Untrusted(f"sampling {record.get('sampling')!r}, the request is {request.mode!r}")
    if record.get("grid_shape") != [int(g) for g in geometry.grid_shape]:
        raise _Untrusted(f"grid {record.get('grid_shape')}, the layer's is {geometry.grid_shape}")
    if record.get("image_shape") != [height, width]:
        raise _Untrusted(f"image shape {record.get('image_shape')}, not {[height, width]}")
    meta = record.get("meta")
    if not isinstance(meta, dict):
        raise _Untrusted("no meta record")
    said = {
        "requested_sampling": request.sampling,
        "n_images": request.n_images,
        "seed": request.seed,
        "layer_kind": geometry.kind,
    }
    for field, value in said.items():
        if meta.get(field) != value:
            raise _Untrusted(f"meta {field} is {str(meta.get(field))[:40]}, not {value}")
    points, index = arrays["points"], arrays["image_index"]
    boxes, position = arrays["receptive_field"], arrays.get("position")
    m, d = points.shape
    if not np.isfinite(points).all():
        raise _Untrusted("activations are not finite")
    if m and float(np.abs(points).max()) > np.sqrt(_FLOAT32_MAX / (4 * d)):
        raise _Untrusted("activations so large that distances overflow")
    if m and (index.min() < 0 or index.max() >= request.n_images):
        raise _Untrusted("image index out of range")
    order = index
    if position is not None:
        rows, cols = (int(g) for g in geometry.grid_shape)
        if m and (
            position.min() < 0 or position[:, 0].max() >= rows or position[:, 1].max() >= cols
        ):
            raise _Untrusted("grid position outside the layer's grid")
        flat = position[:, 0] * cols + position[:, 1]
        if request.mode == "all_positions":
            order = index * (rows * cols) + flat
        by_flat = np.argsort(flat, kind="stable")
        same = flat[by_flat][1:] == flat[by_flat][:-1]
        if np.any(same & np.any(boxes[by_flat][1:] != boxes[by_flat][:-1], axis=1)):
            raise _Untrusted("one grid position with two receptive fields")
    if m > 1 and not np.all(np.diff(order) > 0):
        raise _Untrusted("points out of order or repeated (image_index permuted?)")
    if m and (
        boxes[:, :2].min() < 0
        or np.any(boxes[:, 2] <= boxes[:, 0])
        or np.any(boxes[:, 3] <= boxes[:, 1])
        or boxes[:, 2].max() > height
        or boxes[:, 3].max() > width
    ):
        raise _Untrusted("receptive field outside the image")
    if position is None and m and np.any(boxes != np.array([0, 0, height, width])):
        raise _Untrusted("a pooled point whose receptive field is not the whole image")
    return PointCloud(
        layer=request.layer,
        points=points,
        image_index=index,
        position=position,
        receptive_field=boxes,
        sampling=request.mode,
        grid_shape=tuple(int(g) for g in geometry.grid_shape),
        image_shape=(int(height), int(width)),
        meta=dict(meta),
    )


def _notice(message: str) -> None:
    """A :class:`CacheWarning` shown as one line (no source line under it)."""
    warnings.warn_explicit(message, CacheWarning, "napari_topolens.activations.cache", 0)


def iter_cached_extraction(
    cache: ActivationCache,
    model: torch.nn.Module,
    source: ImageSource,
    modules: Mapping[str, torch.nn.Module],
    geometry: Mapping[str, LayerGeometry],
    *,
    options: Mapping[str, Any],
    device_type: str,
    dtype: Any,
    forward_order: Callable[[], list[str]],
    extract: Callable[[Mapping[str, torch.nn.Module]], Generator[Progress, None, dict[str, Any]]],
) -> Generator[Progress, None, dict[str, PointCloud]]:
    """Load the layers found in the cache, extract (and store) the others.

    ``options`` are every extraction option that changes the activations, by name
    (``sampling``, ``max_points`` and ``seed`` among them); they all go into the key.
    ``extract(modules)`` is the extraction generator for a subset of the layers;
    ``forward_order()`` gives the order the forward pass reaches the layers, used
    when every layer came from the cache. An entry that fails a check is reported
    (a progress message and a :class:`CacheWarning`), recomputed and overwritten.
    """
    yield Progress(0.0, "activation cache: fingerprinting the model and images")
    try:
        keys = entry_keys(
            model, source, list(modules), options=options, device_type=device_type, dtype=dtype
        )
    except TopoLensError:
        raise  # unreadable images: the extraction would stop on them too
    except Exception as exc:  # an option or a model the key cannot describe: no cache
        notice = f"activation cache not used: {exc}"[:300]
        _notice(notice)
        yield Progress(0.0, notice)
        return (yield from extract(dict(modules)))
    image_shape = (int(source.sample_shape[1]), int(source.sample_shape[2]))
    found: dict[str, PointCloud] = {}
    ignored: dict[str, str] = {}
    for name, key in keys.items():
        request = EntryRequest(
            layer=name,
            geometry=geometry[name],
            sampling=str(options["sampling"]),
            max_points=None if options.get("max_points") is None else int(options["max_points"]),
            seed=int(options.get("seed", 0)),
            n_images=len(source),
            image_shape=image_shape,
        )
        cloud, reason = cache.load(key, request)
        if cloud is not None:
            cloud.meta["activation_cache"] = f"read from {cache.root} (entry {key[:12]})"
            found[name] = cloud
        elif reason:
            ignored[name] = f"entry {key[:12]} ignored ({reason})"
            notice = f"activation cache: layer {name!r}: {ignored[name]}; recomputing"
            _notice(notice)
            yield Progress(0.0, notice)
    missing = {name: module for name, module in modules.items() if name not in found}
    fresh: dict[str, PointCloud] = {}
    if missing:
        fresh = yield from scaled(
            extract(missing), 0.05, 1.0, f"({len(found)} of {len(modules)} layers cached) "
        )
        for name, cloud in fresh.items():
            cache.store(keys[name], cloud)
            note = f"written to {cache.root} (entry {keys[name][:12]})"
            if name in ignored:
                note = f"{ignored[name]}; recomputed and {note}"
            cloud.meta["activation_cache"] = note
        order = list(fresh)
    else:
        order = forward_order()
    merged = {**found, **fresh}
    if missing and found:
        order = forward_order()
    yield Progress(1.0, f"activations: {len(found)} layer(s) from the cache")
    return {name: merged[name] for name in order}
