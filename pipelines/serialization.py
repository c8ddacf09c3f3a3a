"""Signed operator state: what checkpoints in Redis and model versions in MLflow hold.

Operator state can contain pickles (River trees), and unpickling runs code, so every blob is HMAC-SHA256 signed
with ``EDDY_SECRET`` (DESIGN.md §5) and a blob that fails the check is refused before it is unpickled. Without
``EDDY_SECRET`` a random per-project secret is kept in ``<home>/secret`` (mode 0600), which is right for a laptop;
production deployments set ``EDDY_SECRET`` so that all workers and the registry agree.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
from pathlib import Path
from typing import Any

_MAGIC = b"EDDYSIG1"
_DIGEST = hashlib.sha256().digest_size


class SignatureError(ValueError):
    """A state blob whose signature does not match this deployment's secret."""


def project_secret(configured: str, home: Path) -> bytes:
    """``EDDY_SECRET`` if set, else the per-project secret in ``<home>/secret`` (created on first use)."""
    if configured:
        return configured.encode()
    path = home / "secret"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def dump_state(obj: Any, secret: bytes) -> bytes:
    """Pickle ``obj`` and prepend an HMAC of the pickle.

    >>> blob = dump_state({"w": [1.0, 2.0]}, b"k")
    >>> load_state(blob, b"k")
    {'w': [1.0, 2.0]}
    """
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _MAGIC + hmac.new(secret, payload, hashlib.sha256).digest() + payload


def load_state(blob: bytes, secret: bytes) -> Any:
    """Verify and unpickle a blob made by :func:`dump_state`; raises :class:`SignatureError` on any mismatch."""
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + _DIGEST:
        raise SignatureError("state blob is not an Eddy-signed blob (it was not written by dump_state)")
    digest = blob[len(_MAGIC) : len(_MAGIC) + _DIGEST]
    payload = blob[len(_MAGIC) + _DIGEST :]
    if not hmac.compare_digest(digest, hmac.new(secret, payload, hashlib.sha256).digest()):
        raise SignatureError(
            "state blob signature does not match: it was written with another EDDY_SECRET or was tampered with; "
            "set EDDY_SECRET to the secret of the deployment that wrote it"
        )
    return pickle.loads(payload)
