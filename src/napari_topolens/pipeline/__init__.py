"""The one run pipeline: a typed job, one generator that runs it, typed provenance.

:class:`~napari_topolens.pipeline.job.RunJob` describes a run (model, images,
layers, labels, extraction options, ``AnalysisConfig``, variants, device,
scheduler, cache); :func:`~napari_topolens.pipeline.run.iter_run` runs it
(extract → predict → analyse → variants, with progress and cancel). The command
line, the napari widget's worker and :func:`~napari_topolens.pipeline.variants.run_variants`
all run their work through it, so the same job gives the same analysis from each.
Headless: no napari or Qt; torch is imported by the modules that run models.
"""

from __future__ import annotations

from .job import DEFAULT_SAMPLING, RunJob, StackIndex, check_job
from .provenance import Provenance
from .run import iter_one_variant, iter_run, run_job, run_provenance
from .variants import iter_run_variants, run_variants, variant_specs

__all__ = [
    "DEFAULT_SAMPLING",
    "Provenance",
    "RunJob",
    "StackIndex",
    "check_job",
    "iter_one_variant",
    "iter_run",
    "iter_run_variants",
    "run_job",
    "run_provenance",
    "run_variants",
    "variant_specs",
]
