"""The ``napari-topolens`` command (and ``python -m napari_topolens``).

Only the standard library is imported before the ``try``: Ctrl-C while the command
line loads numpy, torch and the rest (the first second or two) ends with one line
instead of an import traceback, as it does later in :func:`napari_topolens.cli.main`.
"""

from __future__ import annotations

import sys


def main() -> int:
    """Load the command line and run it; Ctrl-C at any moment is one line, exit code 130."""
    try:
        # heavy: loaded inside the try so that Ctrl-C during the imports is caught
        from ._signals import pause_point

        pause_point("import")
        from .cli import main as run  # heavy: cli imports numpy (and torch when it runs)

        return run()
    except KeyboardInterrupt:
        print("napari-topolens: stopped; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
