"""Run tasks on a running Dask cluster: connect to it, send the tasks, gather the results.

Optional: needs ``dask.distributed`` (``pip install 'napari-topolens[distributed]'``).
Give ``scheduler=`` (an address such as ``tcp://10.0.0.5:8786``, or a
``distributed.Client``) to :func:`~napari_topolens.extract_activations` or
:func:`~napari_topolens.analyze`, or ``--scheduler ADDRESS`` to the command line.
This module knows nothing of what the tasks do: the callers pass the task function
and its arguments (extraction: one forward pass per batch; analysis: one layer's
topology per layer). The tasks run exactly the code that runs in-process without a
scheduler, so the result is the same array for array; only where it runs changes.
What every task needs is sent to every worker once; image sources on disk are
opened by path, so workers must see the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from ._progress import Progress
from .errors import TopoLensError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "SchedulerError",
    "check_scheduler_address",
    "connect",
    "iter_remote_tasks",
]

T = TypeVar("T")


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


def iter_remote_tasks(
    scheduler: Any,
    task: Callable[..., T],
    items: Sequence[Any],
    *,
    shared: Sequence[Any] = (),
    constants: Sequence[Any] = (),
    scatter_items: bool = False,
    what: str = "task",
) -> Generator[Progress, None, list[T]]:
    """``task(item, *shared, *constants)`` for every item, each as one Dask task.

    Yields progress as tasks end; returns their results in the order of ``items``.
    ``shared`` values are sent to every worker once (``None`` is passed as is);
    ``constants`` go with each task as they are (small values). With
    ``scatter_items`` each item is sent to the cluster before its task is submitted
    (large items, e.g. point clouds). A task's error is raised here; the tasks still
    queued are cancelled when the consumer stops early or a task fails. The task's
    name is the Dask task prefix (so a cluster's dashboard shows what ran).
    """
    with connect(scheduler) as client:
        sent = [value for value in shared if value is not None]
        scattered = iter(client.scatter(sent, broadcast=True) if sent else [])
        shared_fs = [None if value is None else next(scattered) for value in shared]
        item_fs = client.scatter(list(items)) if scatter_items and items else list(items)
        futures = [
            client.submit(task, item, *shared_fs, *constants, pure=False) for item in item_fs
        ]
        return (yield from _gather_in_order(client, futures, what))
