"""What a user installs: the wheel carries the manifest and the sample files, and importing is cheap."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("*.whl")
    return zipfile.ZipFile(path)


def test_wheel_ships_manifest_and_samples(wheel):
    names = set(wheel.namelist())
    assert "napari_topolens/napari.yaml" in names
    assert wheel.read("napari_topolens/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
    for sample in ("digits", "shapes"):
        assert f"napari_topolens/sample_data/{sample}.npz" in names
        assert f"napari_topolens/sample_data/{sample}_cnn.pt" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert "napari-topolens = napari_topolens:napari.yaml" in text
    metadata = wheel.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Classifier: Framework :: napari" in metadata
    assert "License-Expression: BSD-3-Clause" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert not any(q in r for r in base for q in ("PyQt", "PySide", "napari"))
    assert any(r.startswith("Requires-Dist: torch>=2.2") for r in base)


def test_manifest_is_valid():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    assert manifest.name == "napari-topolens"
    assert {s.key for s in manifest.contributions.sample_data} >= {"digits", "shapes"}


def test_importing_the_package_loads_no_heavy_library():
    code = (
        "import sys, napari_topolens, napari_topolens.topology, napari_topolens.activations;"
        "heavy = [m for m in ('torch', 'gudhi', 'kmapper', 'napari', 'qtpy', 'matplotlib') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_the_report_command_imports_heavy_libraries_only_when_it_uses_them():
    # importing is a third of the digits report's time: pandas (0.7 s) is never needed
    # by it, the others only once their step runs
    code = (
        "import sys, napari_topolens.cli, napari_topolens.report.html,"
        " napari_topolens.report.figures, napari_topolens.layout,"
        " napari_topolens.topology.analysis, napari_topolens.topology.store;"
        "heavy = [m for m in ('torch', 'gudhi', 'kmapper', 'matplotlib', 'pandas', 'networkx',"
        " 'sklearn', 'scipy') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_the_import_contract_covers_every_module_outside_the_ui():
    import pkgutil

    import napari_topolens

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["type"] == "forbidden" and "napari" in c["forbidden_modules"]
    ]
    covered = set(contract["source_modules"])
    modules = {f"napari_topolens.{m.name}" for m in pkgutil.iter_modules(napari_topolens.__path__)}
    missing = sorted(modules - covered - {"napari_topolens.ui"})
    assert not missing, f"add {missing} to the import-linter contract's source_modules"
    assert {"napari", "qtpy", "magicgui"} <= set(contract["forbidden_modules"])


def test_the_ui_layers_contract_lists_every_ui_module():
    import pkgutil

    import napari_topolens.ui

    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (layers,) = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["type"] == "layers" and c.get("containers") == ["napari_topolens.ui"]
    ]
    listed = {name.strip(" ()") for layer in layers["layers"] for name in layer.split("|")}
    modules = {m.name for m in pkgutil.iter_modules(napari_topolens.ui.__path__)}
    assert layers.get("exhaustive") is True  # import-linter refuses a ui module left out
    assert listed <= modules
    assert not modules - listed, f"add {sorted(modules - listed)} to the ui layers contract"


def test_the_top_level_layers_contract_is_exhaustive_and_acyclic():
    import pkgutil

    import napari_topolens

    tomllib = pytest.importorskip("tomllib")
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [
        c
        for c in contracts["contracts"]
        if c["type"] == "layers" and c.get("containers") == ["napari_topolens"]
    ]
    listed = {name.strip(" ()") for layer in layers["layers"] for name in layer.split("|")}
    modules = {m.name for m in pkgutil.iter_modules(napari_topolens.__path__)}
    assert layers.get("exhaustive") is True
    assert listed == modules
    assert any(
        c["type"] == "acyclic_siblings" and c["ancestors"] == ["napari_topolens"]
        for c in contracts["contracts"]
    )


#: Import names whose distribution is named otherwise.
DISTRIBUTION_OF = {"PIL": "pillow", "sklearn": "scikit-learn"}
#: Imports that come with an extra: made only inside functions, and only where that
#: extra's feature is asked for (napari itself: only the ui package, run inside napari).
EXTRA_IMPORTS = {"napari", "zarr", "dask", "distributed", "cloudpickle"}


def _imports_of(path: Path) -> list[tuple[str, bool]]:
    """``(top-level name, at module level)`` of every absolute import in a source file."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    module_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` blocks count as lazy, anything else is eager
        if isinstance(node, ast.Try):
            module_level |= {id(n) for n in node.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(name.split(".")[0], id(node) in module_level) for name in names]
    return found


def test_every_import_of_the_package_is_a_declared_dependency():
    import re

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}

    base = names(project["dependencies"])
    extras = set().union(*(names(v) for k, v in project["optional-dependencies"].items()))
    undeclared, eager_extras = [], []
    for path in sorted((ROOT / "src" / "napari_topolens").rglob("*.py")):
        where = path.relative_to(ROOT / "src").as_posix()
        for name, eager in _imports_of(path):
            if name in sys.stdlib_module_names or name in ("napari_topolens", "__future__"):
                continue
            distribution = DISTRIBUTION_OF.get(name, name).lower()
            if distribution in base:
                continue
            if name not in EXTRA_IMPORTS or distribution not in extras:
                undeclared.append(f"{where}: {name}")
            elif eager and not where.startswith("napari_topolens/ui/"):
                eager_extras.append(f"{where}: {name}")
    assert not undeclared, f"declare these in pyproject.toml's dependencies: {undeclared}"
    assert not eager_extras, (
        f"import an extra's module inside the function using it: {eager_extras}"
    )
