"""napari's private API (anything behind ``_``) is used nowhere in the product's code.

napari removes private attributes without notice (``window._qt_viewer`` goes away in
0.10), so ``src/`` must stay on the public API. Tests may still reach in to set a
scene up (e.g. open the console); the product may not.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_topolens"

#: Private napari attributes and modules, as they show up in code.
PRIVATE = [
    (r"\b_qt_viewer\b", "window._qt_viewer"),
    (r"\bqt_viewer\b", "window.qt_viewer (deprecated)"),
    (r"\bwindow\._\w", "a private Window attribute"),
    (r"\bviewer\._\w", "a private Viewer attribute"),
    (r"\blayers?\._\w", "a private Layer / LayerList attribute"),
    (r"\b(?:dims|camera|cursor|canvas|overlays)\._\w", "a private component attribute"),
    (r"\b_type_string\b", "Layer._type_string"),
    (r"\bnapari(?:\.\w+)*\._\w", "a private napari module or attribute"),
    (r"from\s+napari(?:\.\w+)*\s+import\s+\(?[^)\n]*\b_\w", "a private name imported from napari"),
]


def code_lines(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        code = line.split("#", 1)[0]  # comments may name what is avoided
        if code.strip():
            yield number, code


def test_the_patterns_catch_what_they_are_for():
    bad = [
        "qt = viewer.window._qt_viewer",
        "layer._type_string == 'points'",
        "from napari._qt.qt_viewer import QtViewer",
        "import napari._vispy",
        "viewer._canvas_size",
        "viewer.layers._selection",
        "viewer.dims._ndisplay",
    ]
    good = [
        "self._viewer.layers",
        "self._layers_of((Image,))",
        "napari.layers.Points",
        "viewer.dims.point",
    ]
    for text in bad:
        assert any(re.search(p, text) for p, _ in PRIVATE), text
    for text in good:
        assert not any(re.search(p, text) for p, _ in PRIVATE), text


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_private_napari_api_in_src(path: Path):
    found = [
        f"{path.relative_to(SRC)}:{number}: {what}: {code.strip()}"
        for number, code in code_lines(path)
        for pattern, what in PRIVATE
        if re.search(pattern, code)
    ]
    assert not found, "\n".join(found)
