"""What a run records about itself: one typed record, written in one place.

The saved format is unchanged: ``Analysis.provenance`` stays a plain dict (what
:meth:`Provenance.as_dict` gives, then the analysis adds its seeds, caps, library
versions and creation time). The CLI, the widget and ``run_variants`` differ only
in :attr:`Provenance.front_end` and in :attr:`Provenance.origin` (where the model,
images and labels came from, as that front end knows it); every other key is the
job's, written by :func:`~napari_topolens.pipeline.run.iter_run`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..label_sources import LABELS_CODED_BY_NAME

__all__ = ["ANALYSIS_KEYS", "RUN_KEYS", "TIMING_KEYS", "Provenance"]

#: Keys the pipeline writes from the job (the same for every front end given the same job).
RUN_KEYS = (
    "source",
    "layers",
    "sampling",
    "max_points",
    "batch_size",
    "max_probe_pixels",
    "input_scale",
    "seeds",
    "device",
    "scheduler",
    "activation_cache",
    "labels_from_predictions",
    LABELS_CODED_BY_NAME,
    "variants",
    "image_index",
    "selected_index",
    "notes",
)
#: Keys the analysis adds of itself (``topology.analysis.iter_analyze``).
ANALYSIS_KEYS = ("seed", "seeds", "caps", "n_images", "input_scale", "notes")
#: Keys that differ from one run of the same job to the next (times, versions).
TIMING_KEYS = ("seconds", "created", "libraries")


@dataclass
class Provenance:
    """How a run was made: the job's options, and where its inputs came from.

    Attributes
    ----------
    front_end : str
        Who ran it (``"napari-topolens report"``, ``"napari-topolens analysis
        widget"``, ``"run_variants"``); saved as ``source``.
    layers : list of str
        Always a list (saved files before this record sometimes held one string).
    sampling, max_points, batch_size, max_probe_pixels, seed
        The extraction options (``seed`` is saved as ``seeds["extraction"]``).
    input_scale : str
        How stored pixels became the model's input, in words.
    device, scheduler, activation_cache : str or None
        Where the work ran and the activation cache; left out when not used.
    labels_from_predictions, labels_coded_by_name : bool
        The labels are the model's own predictions / codes of sorted text names.
    variants : list of str
        Names of the variants run with this analysis (left out when none).
    image_index, selected_index : list of int or None
        Stack-indexed runs (the widget): the stack positions analysed, and the
        selection when the extraction cap drew fewer.
    origin : dict
        The front end's description of its inputs (model, weights, sample, image
        files or layer, labels...), saved as top-level keys as before.
    notes : dict of str to str
        Notes for the reader (e.g. why there are no predictions).
    """

    front_end: str
    layers: list[str]
    sampling: str
    max_points: int | None
    batch_size: int
    max_probe_pixels: int
    seed: int
    input_scale: str
    device: str | None = None
    scheduler: str | None = None
    activation_cache: str | None = None
    labels_from_predictions: bool = False
    labels_coded_by_name: bool = False
    variants: list[str] = field(default_factory=list)
    image_index: list[int] | None = None
    selected_index: list[int] | None = None
    origin: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Provenance:
        """A copy with ``changes`` (a dataclass replace)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The plain dict saved as ``Analysis.provenance`` (the on-disk format)."""
        record: dict[str, Any] = dict(self.origin)
        record.update(
            {
                "source": self.front_end,
                "layers": list(self.layers),
                "sampling": self.sampling,
                "max_points": self.max_points,
                "batch_size": int(self.batch_size),
                "max_probe_pixels": int(self.max_probe_pixels),
                "input_scale": self.input_scale,
                "seeds": {"extraction": int(self.seed)},
                "labels_from_predictions": bool(self.labels_from_predictions),
            }
        )
        for key, value in (
            ("device", self.device),
            ("scheduler", self.scheduler),
            ("activation_cache", self.activation_cache),
            ("image_index", self.image_index),
            ("selected_index", self.selected_index),
        ):
            if value is not None:
                record[key] = value
        if self.labels_coded_by_name:  # not the model's class indices: no accuracy
            record[LABELS_CODED_BY_NAME] = True
        if self.variants:
            record["variants"] = list(self.variants)
        if self.notes:
            record["notes"] = {**dict(record.get("notes", {})), **self.notes}
        return record

    def of_variant(self, spec: Any, device: str | None) -> dict[str, Any]:
        """A variant's record: the run it belongs to, the variant's spec, its own device.

        ``spec`` is a ``VariantSpec``; ``device`` differs from the run's for a
        model that runs on the CPU only (INT8), which the record then says.
        """
        record = self.replace(variants=[]).as_dict()
        record["variant"] = spec.name
        record["variant_spec"] = dataclasses.asdict(spec)
        if device != self.device:
            record["device"] = device
            record["device_note"] = "an INT8 model runs on the CPU (dynamic quantisation)"
        return record
