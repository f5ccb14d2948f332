"""Extraction batches as Dask tasks: the model travels once, each worker keeps one copy.

The caller (:func:`~napari_topolens.activations.extract.iter_extract_activations`
with ``scheduler=``) passes its own batch function, so a batch on a worker runs
exactly the code that runs in-process; :mod:`napari_topolens.distributed` only runs
the tasks.
"""

from __future__ import annotations

import hashlib
import pickle
import uuid
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._progress import Progress
from ..distributed import iter_remote_tasks
from .hooks import check_layer_names

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .image_source import ImageSource

__all__ = ["iter_remote_batches"]

T = TypeVar("T")

#: Models unpickled on this worker, by token (each batch task of a run shares one copy).
_WORKER_MODELS: dict[str, torch.nn.Module] = {}


def _worker_model(token: str, blob: bytes, device: torch.device | None) -> torch.nn.Module:
    """The worker's copy of the model sent as ``blob`` (plain pickle bytes, sent by us)."""
    model = _WORKER_MODELS.get(token)
    if model is None:
        _WORKER_MODELS.clear()  # one run's model at a time
        model = pickle.loads(blob)
        if device is not None:
            model.to(device)
        model.eval()
        _WORKER_MODELS[token] = model
    return model


def _batch_task(
    index: np.ndarray,
    blob: bytes,
    source: ImageSource,
    plans: dict[str, Any],
    run_batch: Callable[..., T],
    token: str,
    names: Sequence[str],
    device: torch.device | None,
) -> T:
    """One extraction batch on a worker (the worker's copy of the model, in eval mode)."""
    import torch

    model = _worker_model(token, blob, device)
    modules = check_layer_names(model, names)  # "pool#2" is module pool's second call
    with torch.no_grad():
        return run_batch(model, source, modules, plans, index)


def iter_remote_batches(
    scheduler: Any,
    run_batch: Callable[..., T],
    model: torch.nn.Module,
    source: ImageSource,
    modules: dict[str, torch.nn.Module],
    plans: dict[str, Any],
    batches: Sequence[np.ndarray],
    device: torch.device | None = None,
) -> Generator[Progress, None, list[T]]:
    """``run_batch`` for every batch as a Dask task; yields progress, returns results in order."""
    import cloudpickle  # a dependency of dask.distributed; pickles models defined in __main__

    # The model travels as bytes: dask's own torch serialiser drops the module's hook dicts.
    blob = cloudpickle.dumps(model)
    token = f"{hashlib.sha256(blob).hexdigest()}-{uuid.uuid4().hex}"
    return (
        yield from iter_remote_tasks(
            scheduler,
            _batch_task,
            batches,
            shared=(blob, source, plans),
            constants=(run_batch, token, list(modules), device),
            what="batch",
        )
    )
