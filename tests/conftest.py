"""Suite-wide settings: the test process ends as soon as pytest has reported.

After the summary, tearing down napari, Qt, IPython's console kernel and Dask's
offload threads took 30–60 s on a loaded 2-core machine (pytest's five forced garbage
collections over the whole napari heap, then the interpreter's own teardown, which
printed "Task was destroyed but it is pending!" from ipykernel). Nothing is left to
do by then (reports, caches and junit files are written in ``pytest_sessionfinish``),
so the last ``pytest_unconfigure`` ends the process with pytest's exit status.
Set ``TOPOLENS_TESTS_SLOW_EXIT=1`` to keep the ordinary teardown (e.g. to debug it).
"""

from __future__ import annotations

import os
import sys

import pytest

_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if not _EXIT_STATUS or os.environ.get("TOPOLENS_TESTS_SLOW_EXIT"):
        return
    if config.pluginmanager.has_plugin("xdist") and hasattr(config, "workerinput"):
        return  # an xdist worker hands its results back through its own teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])
