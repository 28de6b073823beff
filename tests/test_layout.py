"""The package's layout holds: each subpackage imports only those below it, and the installed package carries
no benchmark or tool."""

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

PACKAGE = ROOT / "src" / "mnist_study"
# Lowest first: a module may import its own subpackage and those listed before it.
LAYERS = ["errors", "atomic_files", "runs", "config", "data", "models", "training", "inference", "reporting"]
ALLOWED = {name: set(LAYERS[: i + 1]) for i, name in enumerate(LAYERS)} | {
    "manual_backprop": {"errors", "atomic_files", "runs", "manual_backprop"},
}


def project_imports(path: Path) -> set[str]:
    """The subpackages of mnist_study that a module imports (the first name after `mnist_study.`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] if node.module != "mnist_study" else [f"mnist_study.{a.name}" for a in node.names]
        found |= {name.split(".")[1] for name in names if name.startswith("mnist_study.")}
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_import_runs_back_up(layer: str) -> None:
    folder = PACKAGE / layer
    modules = sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{layer}.py"]
    assert modules
    for module in modules:
        assert project_imports(module) <= ALLOWED[layer], f"{module.relative_to(ROOT)} imports upwards"


def test_every_module_belongs_to_a_layer_and_every_package_is_explicit() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    assert top == set(ALLOWED)
    folders = [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__")]
    for folder in folders:
        if any(folder.rglob("*.py")):  # a folder of data files only (inference/static/) is no package
            assert (folder / "__init__.py").is_file(), folder
