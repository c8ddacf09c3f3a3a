"""Split pyproject.toml's dependencies for the image build (Dockerfile, build stage).

torch is installed from the wheel index of the image's variant (CPU or a CUDA build), everything else from PyPI.
Reading both from pyproject.toml keeps one pin for torch: the image gets exactly the version the project tests.

    python deploy/docker/requirements.py pyproject.toml --torch torch.txt --rest rest.txt
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

TORCH = "torch"


def split_dependencies(pyproject: Path) -> tuple[list[str], list[str]]:
    """The project's dependencies as (the torch requirement, the others); fails when torch is not pinned."""
    dependencies: list[str] = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    torch: list[str] = []
    rest: list[str] = []
    for requirement in dependencies:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""
        (torch if name == TORCH else rest).append(requirement)
    if len(torch) != 1 or "==" not in torch[0]:
        raise SystemExit(f"{pyproject}: expected one pinned torch requirement (torch==X.Y.Z), got {torch}")
    return torch, rest


def main() -> None:
    """Write the two requirement files the build stage installs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--torch", type=Path, required=True, help="file for the torch requirement")
    parser.add_argument("--rest", type=Path, required=True, help="file for every other requirement")
    args = parser.parse_args()
    torch, rest = split_dependencies(args.pyproject)
    args.torch.write_text("\n".join(torch) + "\n", encoding="utf-8")
    args.rest.write_text("\n".join(rest) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
