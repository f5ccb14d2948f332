"""The ``napari-topolens`` command: a headless HTML report of a network's topology.

Examples
--------
``napari-topolens report --sample digits --out digits_report``

``napari-topolens report --model mypkg.nets:build --weights net.pt --images imgs/
--labels labels.csv --layers layer1,layer2,fc --out my_report``

Exit codes: 0 done; 2 a problem with the input (one line on stderr says what and
how to fix it); 130 stopped with Ctrl-C and 143 with SIGTERM, both leaving no
half-written output.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import samples
from ._progress import drive
from ._signals import pause_point
from ._version import __version__
from .activations.device import DeviceError, parse_device, resolve_device
from .activations.extract import input_scale_warning
from .activations.hooks import check_layer_names
from .activations.image_source import ImageSource, as_image_source, open_image_source
from .activations.input_scale import InputScale, as_input_scale
from .activations.models import list_layers, load_model
from .activations.options import DEFAULT_MAX_POSITIONS, SAMPLING_MODES
from .activations.receptive_field import DEFAULT_MAX_PROBE_PIXELS, layer_geometry
from .activations.running import eval_mode, model_device_dtype
from .distributed import DEFAULT_CONNECT_TIMEOUT, connect
from .errors import Cancelled, EmptySelectionError, ImageError, LayerError, TopoLensError
from .image_files import ImageSet, MaskFile, read_images, read_labels
from .label_sources import LABELS_CODED_BY_NAME, checked_class_names
from .pipeline.job import DEFAULT_SAMPLING, RunJob
from .pipeline.run import iter_run
from .report.html import check_report_folder, remove_report_debris, write_report
from .report.maps import maps_section
from .robustness.perturbations import PERTURBATIONS, strength_range_text
from .robustness.study import parse_variants
from .samples import load_sample
from .topology.analysis import check_class_labels
from .topology.config import METRICS, AnalysisConfig
from .topology.results import VariantSpec

__all__ = ["TerminalProgress", "build_parser", "main", "stage_lines"]

_PROG = "napari-topolens"
#: The provenance's ``source`` of a report.
FRONT_END = "napari-topolens report"
# Share of the progress bar each phase takes (the analysis dominates).
_PHASES = {
    "run": (0.0, 0.8),
    "maps": (0.8, 0.85),
    "report": (0.85, 1.0),
}


class TerminalProgress:
    """A one-line progress bar redrawn in place with ``\\r`` on a text stream."""

    def __init__(
        self, stream: TextIO | None = None, *, min_interval: float = 0.1, enabled: bool = True
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.min_interval = min_interval
        self.enabled = enabled
        self._last = 0.0
        self._shown = False
        self._start = time.perf_counter()
        self._message = ""

    def __call__(self, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if message == self._message and now - self._last < self.min_interval and fraction < 1.0:
            return
        self._last, self._message = now, message
        width = shutil.get_terminal_size((100, 20)).columns
        fraction = min(max(float(fraction), 0.0), 1.0)
        bar_width = 24
        filled = round(bar_width * fraction)
        head = f"[{'#' * filled}{'.' * (bar_width - filled)}] {100 * fraction:3.0f}% {now - self._start:5.0f}s "
        line = (head + message)[: max(width - 1, len(head))]
        self.stream.write("\r" + line.ljust(max(width - 1, len(line))))
        self.stream.flush()
        self._shown = True

    def phase(self, name: str):
        """A callback that maps a phase's own 0..1 progress into its share of the bar."""
        start, stop = _PHASES[name]
        return lambda fraction, message: self(start + (stop - start) * fraction, message)

    def close(self) -> None:
        """End the bar's line so later output starts on a fresh line."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _input_scale(text: str) -> Any:
    """``--input-scale``: an InputScale, or argparse's own error naming the choices."""

    try:
        return InputScale.parse(text)
    except TopoLensError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="The topology of a neural network's activations, as a report or in napari.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="analyse layers of a model on images and write a self-contained HTML report",
        description=(
            "Extract activations of the chosen layers, run the topology engine on them and "
            "write OUT/report.html (one self-contained page) and OUT/analysis/ (the "
            "analysis, readable by napari-topolens and load_analysis)."
        ),
    )
    _add_source_arguments(report)
    _add_method_arguments(report)
    add_config_arguments(report)
    _add_robustness_arguments(report)
    _add_scale_arguments(report)
    _add_output_arguments(report)
    return parser


def _add_source_arguments(report: argparse.ArgumentParser) -> None:
    source = report.add_argument_group("what to analyse (a sample, or your own model and images)")
    source.add_argument(
        "--sample", help="a shipped sample data set with its model: digits or shapes"
    )
    source.add_argument(
        "--model", help="your model as 'package.module:callable' (called without arguments)"
    )
    source.add_argument("--weights", help="plain weights (state dict) for --model")
    source.add_argument(
        "--images", help="images: .npy, .npz, a TIFF stack, or a folder of PNG/JPEG/TIFF files"
    )
    source.add_argument(
        "--labels",
        help="one class label per image: .npy, .txt or .csv (one per image in order, "
        "index,label rows in any order, or name,label rows for a folder); integer labels "
        "are the model's class indices",
    )
    source.add_argument(
        "--class-names",
        help="comma-separated, distinct names of the model's classes 0, 1, ... (text labels "
        "are matched to them)",
    )
    source.add_argument(
        "--layers",
        help="comma-separated layer names (default for samples: the sample's default layers)",
    )
    source.add_argument(
        "--max-images",
        type=_int_at_least(3),
        help="use at most this many images (samples: a seeded random subset; files: the first ones)",
    )
    source.add_argument(
        "--subset",
        choices=("all", "test", "train"),
        default="all",
        help="which images of a sample to use (default all: the held-out test set alone is too small "
        "for the PH dimension's subsample sizes)",
    )


def _add_method_arguments(report: argparse.ArgumentParser) -> None:
    method = report.add_argument_group("extraction (how activations become points)")
    method.add_argument(
        "--sampling",
        default=DEFAULT_SAMPLING,
        choices=SAMPLING_MODES,
        help=f"how a spatial layer becomes points (default {DEFAULT_SAMPLING}, as in napari: the "
        "strongest position per image, so a pixel's receptive field stays local; pooled: the "
        "mean over positions; foreground needs --mask)",
    )
    method.add_argument(
        "--input-scale",
        type=_input_scale,
        default="dtype",
        metavar="SCALE",
        help="how stored pixels become the model's input: dtype (default: integer pixels "
        "divided by their dtype's maximum, uint8/255, as torchvision's ToTensor; float "
        "pixels kept), as-stored, imagenet ([0, 1] then ImageNet's mean/std), or "
        "custom:MEAN/STD (after [0, 1]; one value or one per channel, e.g. "
        "custom:0.5/0.25 or custom:0.485,0.456,0.406/0.229,0.224,0.225)",
    )
    method.add_argument(
        "--max-points",
        type=_int_at_least(3),
        help="cap on the points extracted per layer (all_positions: positions, default "
        f"{DEFAULT_MAX_POSITIONS:,}; other modes: images, default all)",
    )
    method.add_argument(
        "--max-probe-pixels",
        type=_int_at_least(1),
        default=DEFAULT_MAX_PROBE_PIXELS,
        help="receptive-field probing work allowed (probe passes x pixels); spatial sampling "
        f"of bigger images is refused before any work (default {DEFAULT_MAX_PROBE_PIXELS:.3g})",
    )
    method.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")
    method.add_argument(
        "--batch-size", type=_int_at_least(1), default=64, help="images per forward pass"
    )


def _add_scale_arguments(report: argparse.ArgumentParser) -> None:
    scale = report.add_argument_group("scale (large image sets, caches, clusters, GPUs)")
    scale.add_argument(
        "--cache",
        metavar="DIR",
        help="activation cache folder: layers already extracted for this model, images, "
        "sampling, cap and seed are read from it instead of running the model again",
    )
    scale.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a running dask.distributed scheduler (e.g. tcp://10.0.0.5:8786): extraction "
        "batches and per-layer topology run as Dask tasks on its workers",
    )
    scale.add_argument(
        "--scheduler-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to try reaching --scheduler before giving up (default 10; 0 < SECONDS "
        "<= 3600); a wrong address is refused at once",
    )
    scale.add_argument(
        "--device",
        help="torch device for extraction, predictions and the exact H0 tree's distance "
        "blocks, for the base and every variant (an INT8 model runs on the CPU): cpu, cuda, "
        "cuda:N or mps (default: extraction where the model is, H0 with numpy on the CPU)",
    )


def _add_output_arguments(report: argparse.ArgumentParser) -> None:
    output = report.add_argument_group("output")
    output.add_argument(
        "--out", required=True, help="output folder (created; report.html and analysis/ inside)"
    )
    output.add_argument("--title", help="title of the report page")
    output.add_argument(
        "--maps",
        type=_int_at_least(0),
        default=0,
        metavar="N",
        help="topology maps of N images per class at every spatial layer (every position "
        "placed in the analysis's graph), and with --variants their pixel-level drift "
        "(default 0: none)",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bar")


# ----------------------------------------------------------------------------- AnalysisConfig
# One flag per AnalysisConfig field, derived from the dataclass (names, types, defaults, and
# help from its docstring's Attributes section), so that the command cannot drift from it.

#: Flags of the fields not spelt ``--field-name`` (first: the one --help shows first).
CONFIG_FLAGS = {
    "max_points": ("--analysis-max-points",),  # --max-points is the extraction's cap
    "mapper_lens": ("--lens", "--mapper-lens"),
    "mapper_n_cubes": ("--n-cubes", "--mapper-n-cubes"),
    "mapper_perc_overlap": ("--perc-overlap", "--mapper-perc-overlap"),
    "mapper_min_samples": ("--min-samples", "--mapper-min-samples"),
    "mapper_eps": ("--eps", "--mapper-eps"),
    "seed": ("--seed",),  # one seed for the extraction and the analysis (the method group)
}
#: Smallest values the command takes where a useful analysis needs more than the class's checks.
_CONFIG_MINIMUMS = {
    "max_points": 3,
    "h1_max_points": 3,
    "class_max_per_class": 3,
    "phdim_max_points": 15,
    "dendrogram_max_points": 3,
    "silhouette_max_points": 3,
}


def config_flags(name: str) -> tuple[str, ...]:
    """The command-line flags of the AnalysisConfig field ``name``."""
    return CONFIG_FLAGS.get(name, ("--" + name.replace("_", "-"),))


def config_field_help() -> dict[str, str]:
    """Each AnalysisConfig field's description, from the class docstring's Attributes section."""
    doc = inspect.cleandoc(AnalysisConfig.__doc__ or "")
    section = doc.partition("Attributes\n----------\n")[2]
    helps: dict[str, str] = {}
    names: list[str] = []
    text: list[str] = []
    for line in [*section.splitlines(), "end"]:
        if line and not line.startswith(" "):  # "name : type" or "a, b, c" starts an entry
            helps.update({name: " ".join(text) for name in names})
            names = [part.strip() for part in line.partition(" : ")[0].split(",")]
            text = []
        elif line.strip():
            text.append(line.strip().replace("``", ""))
    return helps


def _config_parser(name: str, kind: str) -> Callable[[str], Any]:
    if kind == "int":
        return _int_at_least(_CONFIG_MINIMUMS.get(name, 0))
    if kind in ("float", "float | None"):
        return _number(allow_none=kind.endswith("None"))
    return str


def _number(*, allow_none: bool) -> Callable[[str], float | None]:
    def parse(text: str) -> float | None:
        if allow_none and text.strip().lower() in ("none", "auto"):
            return None
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None

    return parse


def add_config_arguments(report: argparse.ArgumentParser) -> None:
    """A flag for every AnalysisConfig field (``dest`` ``config_<field>``; default: the class's)."""
    group = report.add_argument_group(
        "analysis (every AnalysisConfig field; caps are reported beside the numbers they "
        "limit, and in the provenance)"
    )
    helps = config_field_help()
    for spec in dataclasses.fields(AnalysisConfig):
        if spec.name == "seed":
            continue  # --seed, with the extraction options
        default = "none" if spec.default is None else spec.default
        group.add_argument(
            *config_flags(spec.name),
            dest=f"config_{spec.name}",
            type=_config_parser(spec.name, str(spec.type)),
            choices=METRICS if spec.name == "metric" else None,
            default=None,
            metavar=spec.name.rpartition("_")[2].upper(),
            help=f"{helps.get(spec.name, spec.name)} (default {default})".replace("%", "%%"),
        )


def config_from_args(args: argparse.Namespace) -> AnalysisConfig:
    """The AnalysisConfig the flags give (the class's defaults for the flags not given)."""
    values = {
        spec.name: getattr(args, f"config_{spec.name}")
        for spec in dataclasses.fields(AnalysisConfig)
        if spec.name != "seed" and getattr(args, f"config_{spec.name}", None) is not None
    }
    if "max_dim" in values and "distance_dim" not in values:
        values["distance_dim"] = min(1, values["max_dim"])  # compare H1, or H0 alone
    try:
        return AnalysisConfig(**values, seed=args.seed)
    except TopoLensError as exc:
        raise TopoLensError(f"the analysis options: {exc}") from None


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [part.strip() for part in text.split(",") if part.strip()]
    return items or None


def _class_names(text: str | None) -> list[str] | None:
    """``--class-names``: distinct, non-empty names for the model's classes 0, 1, ..."""

    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if parts and not parts[-1]:
        parts.pop()  # "a,b,": a trailing comma
    return checked_class_names(parts, "--class-names")


def _prepare_sample(args: argparse.Namespace) -> dict[str, Any]:

    for flag in ("model", "weights", "images", "labels", "class_names"):
        if getattr(args, flag) is not None:
            raise TopoLensError(
                f"--{flag.replace('_', '-')} cannot be combined with --sample; use either a sample or your own model"
            )
    sample = load_sample(args.sample)
    if args.subset == "test":
        index = np.asarray(sample.test_index, dtype=np.int64)
    elif args.subset == "train":
        index = np.asarray(sample.train_index, dtype=np.int64)
    else:
        index = np.arange(len(sample.images), dtype=np.int64)
    if len(index) == 0:
        raise EmptySelectionError(f"sample {args.sample!r} has no {args.subset} images")
    if args.max_images is not None and args.max_images < len(index):
        rng = np.random.default_rng(args.seed)
        index = np.sort(rng.choice(index, size=args.max_images, replace=False))
    spec = getattr(samples, "_MODEL_SPECS", {}).get(args.sample, f"sample {args.sample} model")
    return {
        "model": sample.model,
        "images": sample.images[index],
        "labels": sample.labels[index],
        "class_names": list(sample.class_names),
        "layers": _split(args.layers) or list(sample.default_layers),
        "provenance": {
            "sample": sample.name,
            "description": sample.description,
            "model": spec,
            "images": f"sample {sample.name}: {args.subset} images"
            + (f", seeded random subset of {len(index)}" if args.max_images is not None else ""),
            "image_subset": args.subset,
            "sample_image_index": index,
        },
    }


def _prepare_model(args: argparse.Namespace) -> dict[str, Any]:

    if args.model is None:
        raise TopoLensError("give --sample NAME, or --model package.module:callable with --images")
    if args.images is None:
        raise ImageError("--model needs --images (a .npy, .npz, TIFF stack or folder of images)")

    model = load_model(args.model, weights=args.weights)
    layers = _split(args.layers)
    if not layers:  # listed for these images' shape (each call of a module called twice)
        try:
            shape = as_image_source(_read_image_input(args.images, 1).images).sample_shape
        except TopoLensError:
            shape = None
        names = list_layers(model, shape)
        shown = ", ".join(names[:25]) + (" ..." if len(names) > 25 else "")
        raise EmptySelectionError(f"give --layers a,b,c for your model; its layers are: {shown}")
    class_names = _class_names(args.class_names)
    image_set = _read_image_input(args.images, args.max_images)
    labels = None
    coded_by_name = False
    if args.labels is not None:
        label_set = read_labels(
            args.labels,
            image_names=image_set.names,
            n_images=len(image_set.images),
            class_names=class_names,
            first_images=args.max_images is not None,
        )
        labels, names_from_file = label_set.codes, label_set.class_names
        coded_by_name = label_set.coded_by_name
        if class_names is None:
            class_names = names_from_file
        if args.max_images is not None and len(labels) > len(image_set.images):
            labels = labels[: len(image_set.images)]  # the labels of the first images
    elif image_set.labels is not None:
        label_set_codes = np.asarray(image_set.labels)
        if not np.issubdtype(label_set_codes.dtype, np.integer):
            raise ImageError(f"{args.images}: its 'labels' array must hold integer class codes")
        labels = label_set_codes.astype(np.int64)
    if labels is not None and len(labels) != len(image_set.images):
        raise ImageError(
            f"{len(labels)} labels for {len(image_set.images)} images; give one label per image"
        )
    if labels is not None and class_names is not None and labels.max() >= len(class_names):
        raise ImageError(
            f"label {int(labels.max())} has no name among the {len(class_names)} --class-names"
        )
    provenance: dict[str, Any] = {
        "model": args.model,
        "weights": args.weights or "(as built by the callable)",
        "images": image_set.source,
        "labels_file": args.labels or "",
    }
    if coded_by_name:  # codes of sorted names: not comparable with the model's predictions
        provenance[LABELS_CODED_BY_NAME] = True
    return {
        "model": model,
        "images": image_set.images,
        "labels": labels,
        "class_names": class_names,
        "layers": layers,
        "image_names": image_set.names,
        "provenance": provenance,
    }


def _read_image_input(path: str, max_images: int | None) -> Any:
    """Folders, ``.zarr`` stores and ``.npy`` files lazily (read batch by batch); others whole."""

    where = Path(path).expanduser()
    if where.exists() and (where.is_dir() or where.suffix.lower() in (".zarr", ".npy")):
        # stored pixels: --input-scale decides how the model sees them
        source = open_image_source(where, max_images=max_images, scale_integers=False)
        return ImageSet(
            images=source,  # type: ignore[arg-type]  # an ImageSource reads lazily
            names=getattr(source, "names", None),
            source=str(where),
            labels=_zarr_labels(where, len(source)),
        )
    return read_images(path, max_images=max_images, keep_dtype=True)


def _zarr_labels(path: Any, n_images: int) -> np.ndarray | None:
    """The ``labels`` array of a ``.zarr`` group beside its images, if any (size checked)."""
    if path.suffix.lower() != ".zarr":
        return None
    import zarr

    node = zarr.open(str(path), mode="r")
    if not isinstance(node, zarr.Group) or "labels" not in node:
        return None
    labels = node["labels"]
    if not isinstance(labels, zarr.Array) or labels.ndim != 1 or labels.shape[0] < n_images:
        raise ImageError(f"{path}: its 'labels' array must hold one class code per image")
    try:
        return np.asarray(labels[:n_images])
    except Exception as exc:  # a damaged chunk: zarr and its codecs raise many kinds
        raise ImageError(
            f"{path}: its 'labels' array could not be read ({type(exc).__name__}: {exc}); the "
            "store is damaged or truncated: write it again"
        ) from None


#: Images a lazy input keeps in the analysis (for links to pixels), as float32 bytes.
_KEEP_IMAGES_BYTES = 1 << 30


def _images_to_keep(images: Any, notes: dict[str, str]) -> Any:
    """The images the analysis keeps: all of an in-memory set; a lazy one if it fits 1 GiB."""
    if not isinstance(images, ImageSource):
        return images
    if images.nbytes <= _KEEP_IMAGES_BYTES:
        return images.to_stack()
    notes["images"] = (
        f"the {len(images)} images ({images.nbytes / 2**30:.1f} GiB as float32) were read "
        "batch by batch and not kept in the analysis; links to pixels need the source"
    )
    return None


def _check_output_folder(out: str) -> None:
    """Refuse an output folder that cannot be written, or holds files not ours, before any work."""

    remove_report_debris(out)  # what runs killed outright left (only our scratch names)
    check_report_folder(out)
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise TopoLensError(f"--out {out} is a file; give a folder for the report")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise TopoLensError(
            f"--out {out}: {existing} is not a writable folder; choose another output folder"
        )


def _checked_device(name: str | None, scheduler: str | None) -> str | None:
    """--device in torch's spelling (``CPU`` is ``cpu``), refused before any work when this
    machine cannot use it (with --scheduler, only its spelling: the workers have the devices)."""

    if name is None:
        return None
    try:
        device = parse_device(name) if scheduler is not None else resolve_device(name)
    except DeviceError as exc:
        raise DeviceError(f"--device: {exc}") from None
    return str(device)


def _check_before_extraction(args: argparse.Namespace, job: dict[str, Any]) -> None:
    """Errors that can be known before any forward pass: layers, labels, too few points."""

    layers = job["layers"]
    repeated = sorted({name for name in layers if layers.count(name) > 1})
    if repeated:
        raise LayerError(f"--layers names {', '.join(map(repr, repeated))} more than once")
    n_images = len(job["images"])
    job["labels"], job["class_names"] = check_class_labels(
        job["labels"], job["class_names"], n_images
    )
    if n_images >= 3:
        return
    if args.sampling != "all_positions":
        raise EmptySelectionError(
            f"{n_images} image(s) give {n_images} point(s) per layer with {args.sampling} "
            "sampling; topology needs at least 3: give more images, or use --sampling "
            "all_positions for many points per image"
        )

    sample_shape = as_image_source(job["images"]).sample_shape  # no pixels read (lazy inputs)
    device, dtype = model_device_dtype(job["model"])
    with eval_mode(job["model"]):
        geometry = layer_geometry(
            job["model"],
            check_layer_names(job["model"], layers),
            sample_shape,
            dtype=dtype,
            device=device,
        )
    vectors = [name for name, geo in geometry.items() if geo.kind == "vector"]
    if vectors:
        raise EmptySelectionError(
            f"layer(s) {', '.join(vectors)} give one point per image, and {n_images} image(s) "
            "are too few for topology (at least 3): give more images or leave those layers out"
        )


def run_report(
    args: argparse.Namespace,
    progress: TerminalProgress | _VariantPhases,
    stages: dict[str, tuple[float, float]] | None = None,
) -> Any:
    """Do the ``report`` command; returns the path of report.html.

    ``stages``, when given, receives the (wall, CPU) seconds of each stage, in order
    (see :func:`stage_lines`). The run itself is :func:`~napari_topolens.pipeline.run.iter_run`,
    the run the widget and ``run_variants`` make too.
    """
    stages = {} if stages is None else stages
    started, started_cpu = time.perf_counter(), time.process_time()
    _check_arguments(args)
    config = config_from_args(args)
    variant_specs = _variant_specs(args)
    bar: Any = _VariantPhases(progress) if variant_specs else progress
    bar(0.0, "loading the model and images")
    inputs = _prepare_sample(args) if args.sample is not None else _prepare_model(args)
    job = _run_job(args, inputs, config, variant_specs, bar)
    loading = (time.perf_counter() - started, time.process_time() - started_cpu)
    stages["loading model and images"] = loading
    run_stages: dict[str, tuple[float, float]] = {}
    analysis = drive(iter_run(job, stages=run_stages), bar.phase("run"))
    _record_times(analysis, loading[0], run_stages, stages)
    extra_sections = []
    if args.maps:
        mapping, mapping_cpu = time.perf_counter(), time.process_time()
        section = drive(
            maps_section(
                analysis, job.model, job.images, per_class=args.maps, input_scale=job.scale
            ),
            bar.phase("maps"),
        )
        extra_sections = [section] if section else []
        stages["topology maps"] = (
            time.perf_counter() - mapping,
            time.process_time() - mapping_cpu,
        )
    written: dict[str, tuple[float, float]] = {}
    workers = _figure_workers()
    path = write_report(
        analysis,
        args.out,
        title=args.title,
        progress=bar.phase("report"),
        extra_sections=extra_sections,
        seconds=written,
        workers=workers,
    )
    page = written.pop("report page")
    stages[f"report page ({workers} process{'es' if workers > 1 else ''})"] = page
    stages.update(written)
    return path


def _check_arguments(args: argparse.Namespace) -> None:
    """What the flags alone can refuse, before any work."""
    _check_output_folder(args.out)
    if args.seed < 0:
        raise TopoLensError(f"--seed must be a non-negative whole number, got {args.seed}")
    args.device = _checked_device(args.device, args.scheduler)
    if args.scheduler is None and args.scheduler_timeout is not None:
        raise TopoLensError("--scheduler-timeout is used with --scheduler; add it, or leave it out")


def _run_job(
    args: argparse.Namespace,
    inputs: dict[str, Any],
    config: AnalysisConfig,
    variant_specs: list[VariantSpec],
    progress: Any,
) -> RunJob:
    """The job the flags and the loaded inputs describe (checked; warnings printed)."""
    _check_before_extraction(args, inputs)
    scale = as_input_scale(args.input_scale)
    notes: dict[str, str] = {}
    _warn(args, inputs, config, scale, progress)
    mask = _read_mask(args, inputs)
    occlusion_mask = _read_occlusion_mask(args, inputs, variant_specs)
    origin = {
        **inputs["provenance"],
        "command": " ".join(shlex.quote(a) for a in [_PROG, *sys.argv[1:]]) if sys.argv else _PROG,
    }
    return RunJob(
        model=inputs["model"],
        images=inputs["images"],
        layers=list(inputs["layers"]),
        labels=inputs["labels"],
        class_names=inputs["class_names"],
        labels_coded_by_name=bool(inputs["provenance"].get(LABELS_CODED_BY_NAME, False)),
        config=config,
        sampling=args.sampling,
        max_points=args.max_points,
        batch_size=args.batch_size,
        seed=args.seed,
        mask=mask,
        input_scale=scale,
        max_probe_pixels=args.max_probe_pixels,
        device=args.device,
        scheduler=getattr(args, "scheduler_client", None) or args.scheduler,
        cache_dir=args.cache,
        variants=variant_specs,
        occlusion_mask=occlusion_mask,
        kept_images=_images_to_keep(inputs["images"], notes),
        front_end=FRONT_END,
        origin={k: v for k, v in origin.items() if k != LABELS_CODED_BY_NAME},
        notes=notes,
    )


def _warn(
    args: argparse.Namespace,
    inputs: dict[str, Any],
    config: AnalysisConfig,
    scale: Any,
    progress: Any,
) -> None:
    """Warnings before the run: pixels the input scale may misread, caps that cut."""
    scale_warning = input_scale_warning(inputs["images"], scale)
    if scale_warning:
        progress.close()
        print(f"{_PROG}: warning: {scale_warning}", file=sys.stderr)
    if args.max_points is not None and args.max_points > config.max_points:
        progress.close()
        print(
            f"{_PROG}: note: --max-points {args.max_points:,} is above the analysis cap "
            f"--analysis-max-points {config.max_points:,}: each layer's analysis uses a random "
            f"{config.max_points:,} of its extracted points (the report says so)",
            file=sys.stderr,
        )


#: The command's names of the run's stages (its stage lines, benchmarks/bench_report.py).
_STAGE_NAMES = {
    "extraction": "activation extraction",
    "predictions": "predictions",
    "analysis": "analysis",
    "variants": "robustness variants",
}


def _record_times(
    analysis: Any,
    loading: float,
    run_stages: dict[str, tuple[float, float]],
    stages: dict[str, tuple[float, float]],
) -> None:
    """The run's stage times into ``stages`` and the analysis's ``provenance["seconds"]``."""
    steps = _analysis_steps(analysis)
    for name, times in run_stages.items():
        stages[_STAGE_NAMES.get(name, name)] = times
        if name == "analysis":
            stages.update({f"analysis: {step}": (v, math.nan) for step, v in steps.items()})
    analysis.provenance["seconds"] = {
        "loading": round(loading, 3),
        **dict(analysis.provenance.get("seconds", {})),
        **{f"analysis: {step}": round(value, 3) for step, value in steps.items()},
    }


def _figure_workers() -> int:
    """2 (a second process draws half the report's figures) when a core is free, else 1.

    The page is the same either way. The second process costs about a second of CPU to
    start, which only pays when it runs beside this one: with the cores already busy
    (1-minute load average above the cores less one) the figures are drawn here.
    """

    cores = _usable_cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float(cores)
    return 2 if cores >= 2 and load <= cores - 1 else 1


def stage_lines(stages: dict[str, tuple[float, float]], total: tuple[float, float]) -> list[str]:
    """The stage times the command prints: one line per stage, wall and CPU seconds.

    Stages named ``"analysis: <step>"`` are the analysis's steps summed over the
    layers (wall only), drawn indented under ``analysis``. The total is of the
    command after the interpreter started and imported this module.
    """
    lines = [f"{'stage':34s} {'wall s':>7s} {'CPU s':>7s}"]
    for name, (wall, cpu) in [*stages.items(), ("total", total)]:
        label = "  " + name.removeprefix("analysis: ") if name.startswith("analysis: ") else name
        cpu_text = "" if math.isnan(cpu) else f"{cpu:7.2f}"
        lines.append(f"{label:34s} {wall:7.2f} {cpu_text:>7s}".rstrip())
    return lines


def _usable_cores() -> int:
    """The cores this process may run on (its affinity where the system says)."""

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _analysis_steps(analysis: Any) -> dict[str, float]:
    """Wall seconds of each analysis step, summed over the layers, largest first."""
    steps: dict[str, float] = {}
    for result in analysis.layer_results:
        for step, value in result.seconds.items():
            steps[step] = steps.get(step, 0.0) + float(value)
    return dict(sorted(steps.items(), key=lambda kv: -kv[1]))


@contextlib.contextmanager
def _scheduler_client(args: argparse.Namespace) -> Iterator[None]:
    """Reach --scheduler before any work, within --scheduler-timeout seconds; the client
    (``args.scheduler_client``) serves the whole run and is closed after it."""
    if getattr(args, "scheduler", None) is None:
        yield
        return

    timeout = DEFAULT_CONNECT_TIMEOUT if args.scheduler_timeout is None else args.scheduler_timeout
    if not 0 < timeout <= 3600:
        raise TopoLensError(f"--scheduler-timeout must be within 0..3600 seconds, got {timeout:g}")
    with connect(args.scheduler, timeout=timeout) as client:
        args.scheduler_client = client
        try:
            yield
        finally:
            args.scheduler_client = None


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it cleans up as after Ctrl-C."""


def _raise_terminated(_signum: int, _frame: Any) -> None:
    raise _Terminated


def _handle_sigterm() -> Any:
    """Turn SIGTERM into :class:`_Terminated` (main thread only); returns the old handler."""

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _restore_sigterm(previous: Any) -> None:

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- robustness
# Perturbed and compressed variants (--perturb, --compress) and foreground masks (--mask).


def _add_robustness_arguments(report: argparse.ArgumentParser) -> None:

    group = report.add_argument_group(
        "robustness (variants compared with the base run, in a section of the report)"
    )
    group.add_argument(
        "--perturb",
        metavar="KIND:STRENGTH,...",
        help="perturbed copies of the images, e.g. gaussian:0.1,blur:1.0,fgsm:0.03; kinds: "
        + ", ".join(f"{kind} ({strength_range_text(kind)})" for kind in PERTURBATIONS)
        + " (noise and fgsm strengths are fractions of the images' value range, blur is in "
        "pixels, occlusion a fraction of the area)",
    )
    group.add_argument(
        "--compress",
        metavar="SPEC,...",
        help="compressed copies of the model, e.g. prune:0.5,int8 (two variants) or "
        "prune:0.5+int8 (one model both pruned and quantised)",
    )
    group.add_argument(
        "--mask",
        help="the object's pixels per image, for --sampling foreground: a .npy/.npz "
        "(N, H, W) array (.npz: key masks, or its only array), or a folder of mask images (non-zero = object) named like the "
        "image files, or in the images' order",
    )
    group.add_argument(
        "--occlusion-mask",
        help="the pixels an occlusion variant greys out per image, in the same forms as "
        "--mask (without it, each image loses a random square patch)",
    )


def _variant_specs(args: argparse.Namespace) -> list[Any]:
    if args.perturb is None and args.compress is None:
        return []

    specs = parse_variants(args.perturb, args.compress, seed=args.seed)
    if not specs:
        raise TopoLensError("--perturb / --compress name no variant; e.g. --perturb gaussian:0.1")
    return specs


# Share of the progress bar each phase takes when variants run (they take most of the time).
_VARIANT_PHASES = {
    "run": (0.0, 0.85),
    "maps": (0.85, 0.9),
    "report": (0.9, 1.0),
}


class _VariantPhases:
    """The progress bar with :data:`_VARIANT_PHASES` instead of the plain run's phases."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def __call__(self, fraction: float, message: str) -> None:
        self.bar(fraction, message)

    def phase(self, name: str):
        start, stop = _VARIANT_PHASES[name]
        return lambda fraction, message: self.bar(start + (stop - start) * fraction, message)

    def close(self) -> None:
        self.bar.close()


def _read_mask(args: argparse.Namespace, job: dict[str, Any]) -> np.ndarray | None:
    """The --mask as (N, H, W) bool aligned with the job's images (by file name when both have them)."""
    if args.mask is None:
        if args.sampling == "foreground":
            raise TopoLensError(
                "--sampling foreground needs --mask (the object's pixels per image)"
            )
        return None
    if args.sampling != "foreground":
        raise TopoLensError("--mask is used by --sampling foreground; add it, or leave --mask out")
    return _read_mask_file(args.mask, "--mask", args, job)


def _read_occlusion_mask(
    args: argparse.Namespace, job: dict[str, Any], specs: list[Any]
) -> np.ndarray | None:
    """The --occlusion-mask, for the occlusion variants (refused without one)."""
    if args.occlusion_mask is None:
        return None
    if not any(spec.perturbation == "occlusion" for spec in specs):
        raise TopoLensError(
            "--occlusion-mask is used by an occlusion variant only; add one (e.g. "
            "--perturb occlusion:1) or leave --occlusion-mask out"
        )
    return _read_mask_file(args.occlusion_mask, "--occlusion-mask", args, job)


def _read_mask_file(
    path: str, flag: str, args: argparse.Namespace, job: dict[str, Any]
) -> np.ndarray:
    """A mask file or folder as (N, H, W) bool aligned with the job's images."""

    images = job["images"]
    n_images = len(images)
    _, height, width = as_image_source(images).sample_shape  # lazy images: nothing read
    mask_file = MaskFile(path, height=height, width=width)
    names = job.get("image_names")
    if names is not None and mask_file.names is not None:
        by_stem = {Path(name).stem: i for i, name in enumerate(mask_file.names)}
        missing = [name for name in names if Path(name).stem not in by_stem]
        if missing:
            raise ImageError(
                f"{flag} {path} has no mask for {len(missing)} image(s) (first: {missing[0]}); "
                "name each mask file like its image"
            )
        return mask_file.take([by_stem[Path(name).stem] for name in names])
    count = mask_file.count
    sample_index = job["provenance"].get("sample_image_index")
    if sample_index is not None and count != n_images and count > int(np.max(sample_index)):
        return mask_file.take(np.asarray(sample_index))  # masks for the whole sample
    if sample_index is None and args.max_images is not None and count > n_images:
        return mask_file.take(np.arange(n_images))  # the first images, as --max-images keeps
    if count != n_images:
        raise ImageError(
            f"{flag} {path} holds {count} masks for {n_images} images; give one per image"
        )
    return mask_file.take(np.arange(n_images))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-topolens`` console script; returns the exit code."""

    previous_handler = _handle_sigterm()  # first: Ctrl-C or SIGTERM while importing is clean
    progress = TerminalProgress(enabled=False)
    try:
        pause_point("startup")
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, or a usage error argparse has printed
            return exc.code if isinstance(exc.code, int) else 2
        progress = TerminalProgress(enabled=not args.quiet)
        if args.command == "report":
            started, started_cpu = time.perf_counter(), time.process_time()
            stages: dict[str, tuple[float, float]] = {}
            with _scheduler_client(args):
                path = run_report(args, progress, stages)
            progress(1.0, "done")
            progress.close()
            total = (time.perf_counter() - started, time.process_time() - started_cpu)
            print("\n".join(stage_lines(stages, total)), file=sys.stderr)
            print(f"report written to {path} ({total[0]:.1f} s)", file=sys.stderr)
            return 0
    except _Terminated as exc:
        progress.close()
        print(f"{_PROG}: terminated; {_interrupted_outcome(exc)}", file=sys.stderr)
        return 143
    except (KeyboardInterrupt, Cancelled) as exc:
        progress.close()
        print(f"{_PROG}: stopped; {_interrupted_outcome(exc)}", file=sys.stderr)
        return 130
    except SystemExit as exc:  # only the user's model code can get here
        progress.close()
        print(
            f"{_PROG}: error: the model's code called sys.exit({exc.code!r}); nothing was "
            "written. Guard script code in its module with `if __name__ == '__main__':`",
            file=sys.stderr,
        )
        return 2
    except TopoLensError as exc:
        progress.close()
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        progress.close()
        print(
            f"{_PROG}: error: out of memory; nothing was written. Lower --batch-size (big "
            "images), --analysis-max-points (big clouds) or --max-images",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        progress.close()
        print(f"{_PROG}: error: could not read or write a file: {exc}", file=sys.stderr)
        return 1
    finally:
        _restore_sigterm(previous_handler)
    parser.error(f"unknown command {args.command!r}")
    return 2


def _interrupted_outcome(exc: BaseException) -> str:
    """What a stopped run left: nothing, or (a signal held during the final renames) the
    complete new report."""
    if getattr(exc, "block_completed", False):
        return "the new report was complete before stopping"
    return "nothing was written"


if __name__ == "__main__":  # pragma: no cover - `python -m napari_topolens.cli`
    sys.exit(main())
