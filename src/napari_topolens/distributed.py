"""Run extraction batches and per-layer topology as Dask tasks on a running cluster.

Optional: needs ``dask.distributed`` (``pip install 'napari-topolens[distributed]'``).
Give ``scheduler=`` (an address such as ``tcp://10.0.0.5:8786``, or a
``distributed.Client``) to :func:`~napari_topolens.extract_activations` or
:func:`~napari_topolens.analyze`, or ``--scheduler ADDRESS`` to the command line.
The tasks run exactly the code that runs in-process without a scheduler (one
forward pass per batch; one whole layer's analysis per layer), so the result is the
same array for array; only where it runs changes. The model, the image source and
the sampling plans are sent to every worker once; image sources on disk are opened
by path, so workers must see the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from ._progress import Progress
from .errors import TopoLensError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "SchedulerError",
    "check_scheduler_address",
    "connect",
    "iter_remote_batches",
    "iter_remote_layers",
]


class SchedulerError(TopoLensError):
    """No dask.distributed, or no scheduler at the address given."""


#: Seconds to reach a scheduler before giving up (``--scheduler-timeout``).
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Address schemes of dask.distributed that run over TCP (reachability is probed first).
_TCP_SCHEMES = ("tcp", "tls", "ws", "wss")
_HOW = (
    "start one with 'dask scheduler' (it prints its address, e.g. tcp://127.0.0.1:8786) and "
    "workers with 'dask worker ADDRESS', then give that address, or drop --scheduler"
)


def check_scheduler_address(address: str) -> tuple[str, str | None, int | None]:
    """``(scheme, host, port)`` of a scheduler address (host and port ``None`` for inproc);
    :class:`SchedulerError` naming the address for anything that is not one."""
    text = address.strip()
    if not text:
        raise SchedulerError(f"the scheduler address is empty; {_HOW}")
    scheme, sep, location = text.rpartition("://")
    scheme = scheme.lower() if sep else "tcp"
    if scheme == "inproc":
        return scheme, None, None
    if scheme not in _TCP_SCHEMES:
        raise SchedulerError(
            f"the scheduler address {address!r} has the scheme {scheme!r}; dask.distributed "
            f"addresses look like tcp://HOST:PORT (or {', '.join(_TCP_SCHEMES[1:])}); {_HOW}"
        )
    host, colon, port_text = location.rpartition(":")
    host = host.strip("[]")  # [::1]:8786
    if not colon or not host or any(c.isspace() or c in "/@?#" for c in host):
        raise SchedulerError(
            f"{address!r} is not a scheduler address; give one such as tcp://HOST:PORT; {_HOW}"
        )
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SchedulerError(
            f"the scheduler address {address!r} has no port between 1 and 65535; {_HOW}"
        )
    return scheme, host, int(port_text)


def _probe(address: str, scheme: str, host: str, port: int, timeout: float) -> None:
    """Open a TCP connection to the scheduler's port within ``timeout`` seconds; over plain
    tcp, also wait (as long) for the first byte of the handshake a Dask scheduler sends as
    soon as it accepts (distributed's own client waits for it without a time limit)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as probe:
            if scheme == "tcp":
                try:
                    first = probe.recv(1)
                except TimeoutError:
                    raise SchedulerError(
                        f"something listens at {address!r} but it is not a Dask scheduler (it "
                        f"sent nothing within {timeout:g} s, --scheduler-timeout); {_HOW}"
                    ) from None
                if not first:
                    raise SchedulerError(
                        f"something at {address!r} closed the connection at once; it is not a "
                        f"Dask scheduler; {_HOW}"
                    )
    except socket.gaierror as exc:
        raise SchedulerError(
            f"no Dask scheduler at {address!r}: the host {host!r} is unknown ({exc}); {_HOW}"
        ) from None
    except TimeoutError:
        raise SchedulerError(
            f"no Dask scheduler at {address!r}: nothing answered within {timeout:g} s "
            f"(--scheduler-timeout); {_HOW}"
        ) from None
    except OSError as exc:
        raise SchedulerError(
            f"no Dask scheduler at {address!r}: {exc.strerror or exc} (nothing is listening "
            f"on port {port} there); {_HOW}"
        ) from None


def _abandon(exc: BaseException) -> None:
    """Mark a Client whose constructor failed as closed, so that it does not wait out its
    close timeout (and print a traceback) when it is collected."""
    import traceback

    from distributed import Client

    for frame, _ in traceback.walk_tb(exc.__traceback__):
        client = frame.f_locals.get("self")
        if isinstance(client, Client) and client.status != "closed":
            client.status = "closed"
            runner = getattr(client, "_loop_runner", None)
            if runner is not None:
                with suppress(Exception):  # the loop may never have started
                    runner.stop()


@contextmanager
def connect(scheduler: Any, *, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler`` (an address, or a client used as is).

    A client made here is closed on exit; a client passed in is left open. The address is
    checked and its port probed first, so a wrong address fails at once and an unreachable
    one within ``timeout`` seconds, with one :class:`SchedulerError` that names it.
    """
    try:
        from distributed import Client
    except ImportError as exc:
        raise SchedulerError(
            "running on a Dask scheduler needs dask.distributed; "
            "pip install 'napari-topolens[distributed]'"
        ) from exc
    if isinstance(scheduler, Client):
        yield scheduler
        return
    if not isinstance(scheduler, str):
        raise SchedulerError(
            f"scheduler must be an address such as 'tcp://127.0.0.1:8786' or a "
            f"distributed.Client, got {type(scheduler).__name__}"
        )
    if isinstance(timeout, bool) or not (0 < float(timeout) <= 3600):
        raise SchedulerError(f"the scheduler timeout must be 0..3600 seconds, got {timeout!r}")
    address = scheduler.strip()
    scheme, host, port = check_scheduler_address(address)
    if host is not None and port is not None:
        _probe(address, scheme, host, port, float(timeout))
    try:
        client = Client(address, timeout=float(timeout), set_as_default=False)
    except Exception as exc:  # distributed raises many kinds (comm errors, timeouts, ...)
        _abandon(exc)
        raise SchedulerError(
            f"could not connect to the Dask scheduler at {address!r} "
            f"({type(exc).__name__}: {exc}); {_HOW}"
        ) from None
    try:
        yield client
    finally:
        client.close()


def _gather_in_order(
    client: Any, futures: list[Any], what: str
) -> Generator[Progress, None, list[Any]]:
    """Wait for ``futures``, yielding progress as each ends; results in submission order."""
    from distributed import as_completed

    position = {future.key: i for i, future in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    done = 0
    try:
        for future in as_completed(futures, loop=client.loop):
            results[position[future.key]] = future.result()  # re-raises a task's error
            done += 1
            yield Progress(done / len(futures), f"{what} {done}/{len(futures)} (Dask)")
    finally:
        if done < len(futures):  # cancelled or failed: stop what is still queued
            client.cancel(futures)
    return results


#: Models unpickled on this worker, by token (each batch task of a run shares one copy).
_WORKER_MODELS: dict[str, Any] = {}


def _worker_model(token: str, blob: bytes, device: Any) -> Any:
    """The worker's copy of the model sent as ``blob`` (plain pickle bytes, sent by us)."""
    import pickle

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
    run_batch: Callable[..., Any],
    token: str,
    blob: bytes,
    source: Any,
    names: Sequence[str],
    plans: dict[str, Any],
    index: Any,
    device: Any,
) -> Any:
    """One extraction batch on a worker (the worker's copy of the model, in eval mode)."""
    import torch

    from .activations.hooks import check_layer_names

    model = _worker_model(token, blob, device)
    modules = check_layer_names(model, names)  # "pool#2" is module pool's second call
    with torch.no_grad():
        return run_batch(model, source, modules, plans, index)


def iter_remote_batches(
    scheduler: Any,
    run_batch: Callable[..., Any],
    model: Any,
    source: Any,
    modules: dict[str, Any],
    plans: dict[str, Any],
    batches: Sequence[Any],
    device: Any = None,
) -> Generator[Progress, None, list[Any]]:
    """``run_batch`` for every batch as a Dask task; yields progress, returns results in order."""
    import hashlib
    import uuid

    import cloudpickle  # a dependency of dask.distributed; pickles models defined in __main__

    # The model travels as bytes: dask's own torch serialiser drops the module's hook dicts.
    blob = cloudpickle.dumps(model)
    token = f"{hashlib.sha256(blob).hexdigest()}-{uuid.uuid4().hex}"
    with connect(scheduler) as client:
        blob_f, source_f, plans_f = client.scatter([blob, source, plans], broadcast=True)
        names = list(modules)
        futures = [
            client.submit(
                _batch_task,
                run_batch,
                token,
                blob_f,
                source_f,
                names,
                plans_f,
                index,
                device,
                pure=False,
            )
            for index in batches
        ]
        return (yield from _gather_in_order(client, futures, "batch"))


def _layer_task(
    cloud: Any, labels: Any, probabilities: Any, config: Any, class_names: Any, device: Any = None
) -> Any:
    """The whole per-layer analysis of one cloud, run in-process on a worker."""
    from .topology.analysis import analyze

    single = analyze(
        [cloud],
        labels,
        config=config,
        class_names=class_names,
        probabilities=probabilities,
        device=device,
    )
    return single.layer_results[0]


def iter_remote_layers(
    scheduler: Any,
    clouds: Sequence[Any],
    labels: Any,
    probabilities: Any,
    config: Any,
    class_names: Any,
    device: Any = None,
) -> Generator[Progress, None, list[Any]]:
    """One Dask task per layer; returns the layers' ``LayerAnalysis`` in order.

    ``device``: where each worker runs the H0 tree's distance blocks (``analyze``).
    """
    with connect(scheduler) as client:
        shared = [value for value in (labels, probabilities) if value is not None]
        scattered = iter(client.scatter(shared, broadcast=True) if shared else [])
        labels_f = None if labels is None else next(scattered)
        probabilities_f = None if probabilities is None else next(scattered)
        cloud_fs = client.scatter(list(clouds))
        futures = [
            client.submit(
                _layer_task,
                cloud_f,
                labels_f,
                probabilities_f,
                config,
                class_names,
                device,
                pure=False,
            )
            for cloud_f in cloud_fs
        ]
        return (yield from _gather_in_order(client, futures, "layer"))
