"""Golden files: record what a pipeline produced once, compare later runs with a float tolerance.

``pytest --eddy-update-golden`` (re)writes the files; a normal run compares and fails with a readable diff that
names each differing record and field, the expected and the actual value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_DIFF_LINES = 20


class GoldenMismatch(AssertionError):
    """Outputs differ from the golden file; the message is the diff."""


def differences(expected: Any, actual: Any, *, rel: float, abs_: float, path: str = "") -> Iterable[str]:
    """Each difference between two JSON-like values, as ``path: expected X, got Y``; floats compare with tolerance.

    >>> list(differences({"p": [0.5, "a"]}, {"p": [0.5000001, "b"]}, rel=1e-6, abs_=1e-9))
    ['p[1]: expected "a", got "b"']
    """
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                yield f"{where}: missing (expected {_show(expected[key])})"
            elif key not in expected:
                yield f"{where}: unexpected (got {_show(actual[key])})"
            else:
                yield from differences(expected[key], actual[key], rel=rel, abs_=abs_, path=where)
    elif isinstance(expected, list) and isinstance(actual, list):
        for index, (e, a) in enumerate(zip(expected, actual, strict=False)):
            yield from differences(e, a, rel=rel, abs_=abs_, path=f"{path}[{index}]")
        if len(expected) != len(actual):
            yield f"{path or 'outputs'}: expected {len(expected)} items, got {len(actual)}"
    elif _is_number(expected) and _is_number(actual):
        if not math.isclose(float(expected), float(actual), rel_tol=rel, abs_tol=abs_) and expected != actual:
            delta = abs(float(expected) - float(actual))
            tolerance = f"rel {rel:g}/abs {abs_:g}"
            yield f"{path}: expected {_show(expected)}, got {_show(actual)} (|diff| {delta:.3g} > {tolerance})"
    elif expected != actual:
        yield f"{path}: expected {_show(expected)}, got {_show(actual)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _without(value: Any, ignore: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [_without(v, ignore) for v in value]
    return value


@dataclass
class Golden:
    """Compares named outputs with files under ``directory``; writes them instead when ``update`` is set."""

    directory: Path
    update: bool
    rel: float = 1e-6
    abs_: float = 1e-9

    def check(self, name: str, outputs: Any, *, ignore: Sequence[str] = ()) -> None:
        """Compare ``outputs`` (JSON-like: a HarnessResult's ``outputs``) with golden file ``<name>.json``.

        ``ignore`` names fields left out at any depth (e.g. wall-clock fields of your own messages).
        """
        if not name or any(c in name for c in "/\\") or name.startswith("."):
            raise ValueError(f"golden name {name!r} must be a plain file name like 'ctr-predictions'")
        path = self.directory / f"{name}.json"
        actual = _without(json.loads(json.dumps(outputs)), frozenset(ignore))
        if self.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
            return
        if not path.exists():
            raise GoldenMismatch(f"no golden file {path}; record it with: pytest --eddy-update-golden")
        expected = json.loads(path.read_text())
        found = list(differences(expected, actual, rel=self.rel, abs_=self.abs_))
        if found:
            shown = "\n".join(f"  {line}" for line in found[:MAX_DIFF_LINES])
            more = f"\n  ... and {len(found) - MAX_DIFF_LINES} more" if len(found) > MAX_DIFF_LINES else ""
            raise GoldenMismatch(
                f"outputs differ from {path} in {len(found)} place(s):\n{shown}{more}\n"
                "If the change is intended, re-record with: pytest --eddy-update-golden"
            )


__all__ = ["Golden", "GoldenMismatch", "differences"]
