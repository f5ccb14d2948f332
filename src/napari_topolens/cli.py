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
import math
import shlex
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import numpy as np

from . import __version__
from .errors import Cancelled, EmptySelectionError, ImageError, TopoLensError

__all__ = ["TerminalProgress", "build_parser", "main", "stage_lines"]

_PROG = "napari-topolens"
# Share of the progress bar each phase takes (the analysis dominates).
_PHASES = {
    "extract": (0.0, 0.15),
    "analyze": (0.15, 0.8),
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
    from .activations.input_scale import InputScale

    try:
        return InputScale.parse(text)
    except TopoLensError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    from .activations.extract import DEFAULT_MAX_POSITIONS, SAMPLING_MODES
    from .activations.receptive_field import DEFAULT_MAX_PROBE_PIXELS
    from .topology.analysis import AnalysisConfig
    from .topology.metrics import METRICS

    defaults = AnalysisConfig()
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
    method = report.add_argument_group("method")
    method.add_argument(
        "--sampling",
        default="pooled",
        choices=SAMPLING_MODES,
        help="how a spatial layer becomes points (default pooled: one point per image; "
        "foreground needs --mask)",
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
    caps = report.add_argument_group(
        "caps (each is reported beside the numbers it limits, and in the provenance)"
    )
    caps.add_argument(
        "--analysis-max-points",
        type=_int_at_least(3),
        default=defaults.max_points,
        help="points per layer the analysis uses; a larger cloud is subsampled at random "
        f"(memory grows with points x dimensions) (default {defaults.max_points:,})",
    )
    caps.add_argument(
        "--class-max-per-class",
        type=_int_at_least(3),
        default=defaults.class_max_per_class,
        help=f"points per class for the per-class H0 persistence (default {defaults.class_max_per_class})",
    )
    caps.add_argument(
        "--phdim-max-points",
        type=_int_at_least(15),
        default=defaults.phdim_max_points,
        help=f"points in the largest PH-dimension subsample (default {defaults.phdim_max_points})",
    )
    caps.add_argument(
        "--dendrogram-max-points",
        type=_int_at_least(3),
        default=defaults.dendrogram_max_points,
        help=f"points in the heatmap dendrogram (default {defaults.dendrogram_max_points})",
    )
    caps.add_argument(
        "--silhouette-max-points",
        type=_int_at_least(3),
        default=defaults.silhouette_max_points,
        help=f"points for the silhouette score (default {defaults.silhouette_max_points})",
    )
    caps.add_argument(
        "--max-probe-pixels",
        type=_int_at_least(1),
        default=DEFAULT_MAX_PROBE_PIXELS,
        help="receptive-field probing work allowed (probe passes x pixels); spatial sampling "
        f"of bigger images is refused before any work (default {DEFAULT_MAX_PROBE_PIXELS:.3g})",
    )
    method.add_argument(
        "--metric",
        default="euclidean",
        choices=METRICS,
        help="point-cloud metric (default euclidean)",
    )
    method.add_argument(
        "--lens",
        default="l2norm",
        choices=("l2norm", "pca1", "pca2", "probability"),
        help="Mapper lens (default l2norm)",
    )
    caps.add_argument(
        "--h1-max-points",
        type=_int_at_least(3),
        default=defaults.h1_max_points,
        help="H1 on the whole cloud up to this many points; above it on this many random or "
        "max-min landmarks, whichever a pilot subsample finds closer to the full diagram "
        f"(default {defaults.h1_max_points})",
    )
    method.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")
    method.add_argument(
        "--batch-size", type=_int_at_least(1), default=64, help="images per forward pass"
    )
    _add_robustness_arguments(report)
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
        help="torch device for extraction and the exact H0 tree's distance blocks: cpu, cuda, "
        "cuda:N or mps (default: extraction where the model is, H0 with numpy on the CPU)",
    )
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
    return parser


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [part.strip() for part in text.split(",") if part.strip()]
    return items or None


def _class_names(text: str | None) -> list[str] | None:
    """``--class-names``: distinct, non-empty names for the model's classes 0, 1, ..."""
    from .label_sources import checked_class_names

    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if parts and not parts[-1]:
        parts.pop()  # "a,b,": a trailing comma
    return checked_class_names(parts, "--class-names")


def _prepare_sample(args: argparse.Namespace) -> dict[str, Any]:
    from . import samples
    from .samples import load_sample

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
    from .activations.models import list_layers, load_model
    from .image_files import read_labels
    from .label_sources import LABELS_CODED_BY_NAME

    if args.model is None:
        raise TopoLensError("give --sample NAME, or --model package.module:callable with --images")
    if args.images is None:
        raise ImageError("--model needs --images (a .npy, .npz, TIFF stack or folder of images)")
    from .activations.image_source import as_image_source

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
    from pathlib import Path

    from .activations.image_source import open_image_source
    from .image_files import ImageSet, read_images

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


def _images_to_keep(images: Any, provenance: dict[str, Any]) -> Any:
    """The images the analysis keeps: all of an in-memory set; a lazy one if it fits 1 GiB."""
    from .activations.image_source import ImageSource

    if not isinstance(images, ImageSource):
        return images
    if images.nbytes <= _KEEP_IMAGES_BYTES:
        return images.to_stack()
    provenance.setdefault("notes", {})["images"] = (
        f"the {len(images)} images ({images.nbytes / 2**30:.1f} GiB as float32) were read "
        "batch by batch and not kept in the analysis; links to pixels need the source"
    )
    return None


def _check_output_folder(out: str) -> None:
    """Refuse an output folder that cannot be written, or holds files not ours, before any work."""
    import os
    from pathlib import Path

    from .report.html import check_report_folder, remove_report_debris

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
    from .activations.device import DeviceError, parse_device, resolve_device

    if name is None:
        return None
    try:
        device = parse_device(name) if scheduler is not None else resolve_device(name)
    except DeviceError as exc:
        raise DeviceError(f"--device: {exc}") from None
    return str(device)


def _check_before_extraction(args: argparse.Namespace, job: dict[str, Any]) -> None:
    """Errors that can be known before any forward pass: layers, labels, too few points."""
    from .errors import LayerError
    from .topology.analysis import check_class_labels

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
    from .activations.hooks import check_layer_names
    from .activations.image_source import as_image_source
    from .activations.receptive_field import layer_geometry
    from .activations.running import eval_mode, model_device_dtype

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
    (see :func:`stage_lines`).
    """
    from ._progress import drive
    from .activations.extract import input_scale_warning, iter_extract_activations
    from .activations.input_scale import as_input_scale
    from .report.html import write_report
    from .topology.analysis import AnalysisConfig, analyze

    started, started_cpu = time.perf_counter(), time.process_time()
    _check_output_folder(args.out)
    if args.seed < 0:
        raise TopoLensError(f"--seed must be a non-negative whole number, got {args.seed}")
    args.device = _checked_device(args.device, args.scheduler)
    if args.scheduler is None and args.scheduler_timeout is not None:
        raise TopoLensError("--scheduler-timeout is used with --scheduler; add it, or leave it out")
    config = AnalysisConfig(
        metric=args.metric,
        mapper_lens=args.lens,
        h1_max_points=args.h1_max_points,
        max_points=args.analysis_max_points,
        class_max_per_class=args.class_max_per_class,
        dendrogram_max_points=args.dendrogram_max_points,
        phdim_max_points=args.phdim_max_points,
        silhouette_max_points=args.silhouette_max_points,
        seed=args.seed,
    )
    variant_specs = _variant_specs(args)
    if variant_specs:
        progress = _VariantPhases(progress)
    progress(0.0, "loading the model and images")
    job = _prepare_sample(args) if args.sample is not None else _prepare_model(args)
    prepared, prepared_cpu = time.perf_counter(), time.process_time()
    _check_before_extraction(args, job)
    input_scale = as_input_scale(args.input_scale)
    scale_warning = input_scale_warning(job["images"], input_scale)
    if scale_warning:
        progress.close()
        print(f"{_PROG}: warning: {scale_warning}", file=sys.stderr)
    mask = _read_mask(args, job)
    occlusion_mask = _read_occlusion_mask(args, job, variant_specs)
    if args.max_points is not None and args.max_points > config.max_points:
        progress.close()
        print(
            f"{_PROG}: note: --max-points {args.max_points:,} is above the analysis cap "
            f"--analysis-max-points {config.max_points:,}: each layer's analysis uses a random "
            f"{config.max_points:,} of its extracted points (the report says so)",
            file=sys.stderr,
        )
    clouds = drive(
        iter_extract_activations(
            job["model"],
            job["images"],
            job["layers"],
            sampling=args.sampling,
            max_points=args.max_points,
            batch_size=args.batch_size,
            seed=args.seed,
            mask=mask,
            max_probe_pixels=args.max_probe_pixels,
            device=args.device,
            cache_dir=args.cache,
            scheduler=getattr(args, "scheduler_client", None) or args.scheduler,
            input_scale=input_scale,
        ),
        progress.phase("extract"),
    )
    probabilities, predictions, predictions_note = _predictions(args, job, input_scale)
    extracted, extracted_cpu = time.perf_counter(), time.process_time()
    provenance = {
        **job["provenance"],
        "n_images": len(job["images"]),
        "layers": ", ".join(job["layers"]),
        "sampling": args.sampling,
        "input_scale": input_scale.describe(_pixel_dtype(job["images"])),
        "seeds": {"extraction": args.seed},
        "command": " ".join(shlex.quote(a) for a in [_PROG, *sys.argv[1:]]) if sys.argv else _PROG,
        **{
            key: value
            for key, value in (
                ("device", args.device),
                ("activation_cache", args.cache),
                ("scheduler", args.scheduler),
            )
            if value is not None
        },
    }
    if predictions_note:
        provenance.setdefault("notes", {})["predictions"] = predictions_note
    kept_images = _images_to_keep(job["images"], provenance)
    analysis = analyze(
        clouds,
        job["labels"],
        config=config,
        class_names=job["class_names"],
        probabilities=probabilities,
        predictions=predictions,
        provenance=provenance,
        images=kept_images,
        scheduler=getattr(args, "scheduler_client", None) or args.scheduler,
        device=args.device,
        progress=progress.phase("analyze"),
    )
    analysed, analysed_cpu = time.perf_counter(), time.process_time()
    analysis.provenance["seconds"] = {
        "loading": round(prepared - started, 3),
        "extraction": round(extracted - prepared, 3),
        "analysis": round(analysed - extracted, 3),
        **{
            f"analysis: {step}": round(value, 3)
            for step, value in _analysis_steps(analysis).items()
        },
    }
    if stages is not None:
        stages["loading model and images"] = (prepared - started, prepared_cpu - started_cpu)
        stages["activation extraction"] = (extracted - prepared, extracted_cpu - prepared_cpu)
        stages["analysis"] = (analysed - extracted, analysed_cpu - extracted_cpu)
        stages.update(
            {f"analysis: {step}": (v, math.nan) for step, v in _analysis_steps(analysis).items()}
        )
    if variant_specs:
        analysis = _run_variants(
            args, job, analysis, variant_specs, mask, occlusion_mask, config, progress
        )
        if stages is not None:
            stages["robustness variants"] = (
                time.perf_counter() - analysed,
                time.process_time() - analysed_cpu,
            )
    extra_sections = []
    if args.maps:
        from .report.maps import maps_section

        mapping, mapping_cpu = time.perf_counter(), time.process_time()
        section = drive(
            maps_section(
                analysis, job["model"], job["images"], per_class=args.maps, input_scale=input_scale
            ),
            progress.phase("maps"),
        )
        extra_sections = [section] if section else []
        if stages is not None:
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
        progress=progress.phase("report"),
        extra_sections=extra_sections,
        seconds=written,
        workers=workers,
    )
    if stages is not None:
        page = written.pop("report page")
        stages[f"report page ({workers} process{'es' if workers > 1 else ''})"] = page
        stages.update(written)
    return path


def _figure_workers() -> int:
    """2 (a second process draws half the report's figures) when a core is free, else 1.

    The page is the same either way. The second process costs about a second of CPU to
    start, which only pays when it runs beside this one: with the cores already busy
    (1-minute load average above the cores less one) the figures are drawn here.
    """
    import os

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
    import os

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
    from .distributed import DEFAULT_CONNECT_TIMEOUT, connect

    timeout = DEFAULT_CONNECT_TIMEOUT if args.scheduler_timeout is None else args.scheduler_timeout
    if not 0 < timeout <= 3600:
        raise TopoLensError(f"--scheduler-timeout must be within 0..3600 seconds, got {timeout:g}")
    with connect(args.scheduler, timeout=timeout) as client:
        args.scheduler_client = client
        try:
            yield
        finally:
            args.scheduler_client = None


def _pixel_dtype(images: Any) -> Any:
    """The stored pixel type of the job's images (what ``--input-scale dtype`` divides by)."""
    from .activations.image_source import ImageSource

    return images.pixel_dtype if isinstance(images, ImageSource) else np.asarray(images[:1]).dtype


def _predictions(
    args: argparse.Namespace, job: dict[str, Any], input_scale: Any
) -> tuple[Any, Any, str]:
    """Class probabilities (probability lens only), predicted classes, and a note when none.

    The predictions give the model's accuracy on these images in the report, the
    check that the images reach the model as it was trained to see them.
    """
    from .activations.extract import predict_proba
    from .errors import ModelError

    try:
        analysed = predict_proba(
            job["model"], job["images"], batch_size=args.batch_size, input_scale=input_scale
        )
    except ModelError as exc:
        if args.lens == "probability":
            raise
        return None, None, f"none: {exc}"
    probabilities = analysed if args.lens == "probability" else None
    return probabilities, np.argmax(analysed, axis=1).astype(np.int64), ""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it cleans up as after Ctrl-C."""


def _raise_terminated(_signum: int, _frame: Any) -> None:
    raise _Terminated


def _handle_sigterm() -> Any:
    """Turn SIGTERM into :class:`_Terminated` (main thread only); returns the old handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _restore_sigterm(previous: Any) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- robustness
# Perturbed and compressed variants (--perturb, --compress) and foreground masks (--mask).


def _add_robustness_arguments(report: argparse.ArgumentParser) -> None:
    from .robustness.perturbations import PERTURBATIONS, strength_range_text

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
    from .robustness.study import parse_variants

    specs = parse_variants(args.perturb, args.compress, seed=args.seed)
    if not specs:
        raise TopoLensError("--perturb / --compress name no variant; e.g. --perturb gaussian:0.1")
    return specs


# Share of the progress bar each phase takes when variants run (they take most of the time).
_VARIANT_PHASES = {
    "extract": (0.0, 0.04),
    "analyze": (0.04, 0.2),
    "variants": (0.2, 0.85),
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
    from pathlib import Path

    from .activations.image_source import as_image_source
    from .image_files import MaskFile

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


def _run_variants(
    args: argparse.Namespace,
    job: dict[str, Any],
    analysis: Any,
    specs: list[Any],
    mask: np.ndarray | None,
    occlusion_mask: np.ndarray | None,
    config: Any,
    progress: Any,
) -> Any:
    """The base analysis with the variants run and compared (the base is reused, not recomputed)."""
    from .robustness.study import run_variants

    started = time.perf_counter()
    from .activations.image_source import ImageSource

    images = job["images"]
    if isinstance(images, ImageSource):  # variants perturb whole arrays: read the set once
        images = images.to_stack()
    result = run_variants(
        job["model"],
        images,
        job["layers"],
        specs,
        labels=job["labels"],
        class_names=job["class_names"],
        config=config,
        sampling=args.sampling,
        max_points=args.max_points,
        batch_size=args.batch_size,
        seed=args.seed,
        mask=mask,
        occlusion_mask=occlusion_mask,
        provenance=dict(analysis.provenance),
        base=analysis,
        input_scale=args.input_scale,
        progress=progress.phase("variants"),
    )
    result.provenance["seconds"] = {
        **dict(result.provenance.get("seconds", {})),
        "variants": round(time.perf_counter() - started, 3),
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-topolens`` console script; returns the exit code."""
    from ._signals import pause_point

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
