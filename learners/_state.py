"""Checks the learners share: argument checks and the header of a saved ``state_dict``, each failing with a message
that says what was wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def require(ok: bool, message: str) -> None:
    """Raise the ValueError ``message`` unless ``ok``."""
    if not ok:
        raise ValueError(message)


def check_state(state: Any, learner: str, state_format: int, params: Mapping[str, Any]) -> None:
    """Refuse a state that another learner, another format or other constructor parameters produced.

    >>> check_state({"learner": "A", "format": 1, "params": {"k": 2}}, "A", 1, {"k": 2})
    >>> check_state({"learner": "A", "format": 1, "params": {"k": 3}}, "A", 1, {"k": 2})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: A: the state was saved with k=3 but this learner has k=2; build A(**params) with the saved ...
    """
    header = (state.get("learner"), state.get("format")) if isinstance(state, dict) else (type(state).__name__,)
    require(
        header == (learner, state_format),
        f"{learner}: not a {learner} state of format {state_format} (got learner, format = {header}); load what "
        f"{learner}.state_dict() returned",
    )
    saved = state.get("params")
    require(
        isinstance(saved, dict),
        f"{learner}: the state has no 'params' mapping; load what {learner}.state_dict() returned",
    )
    differing = sorted(key for key in set(saved) | set(params) if saved.get(key) != params.get(key))
    require(
        not differing,
        f"{learner}: the state was saved with {', '.join(f'{k}={saved.get(k)!r}' for k in differing)} but this "
        f"learner has {', '.join(f'{k}={params.get(k)!r}' for k in differing)}; build {learner}(**params) with the "
        "saved parameters (state['params'])",
    )
