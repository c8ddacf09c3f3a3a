"""The worker image's Dockerfile and .dockerignore (issue #9, req. 1), read statically: no Docker engine here.

The instructions are parsed (continuations joined, comments dropped) and checked for what the image promises:
multi-stage, a non-root user, CPU torch by default with the CUDA variant as a build argument, a health check on the
worker's /healthz, ``eddy`` as the entry point, and every package of the project in the image.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest

from tests.deploy import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SPLIT_REQUIREMENTS = REPO / "deploy" / "docker" / "requirements.py"


class Instruction(NamedTuple):
    """One Dockerfile instruction: its keyword (upper case), its arguments, and the stage it belongs to."""

    keyword: str
    arguments: str
    stage: int


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, with line continuations joined and comments left out."""
    parsed: list[Instruction] = []
    pending = ""
    stage = -1
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        parsed.append(Instruction(keyword.upper(), re.sub(r"\s+", " ", arguments.strip()), stage))
        pending = ""
    return parsed


def only(keyword: str, stage: int | None = None) -> Instruction:
    """The one instruction with this keyword (in this stage); fails when there is not exactly one."""
    found = [i for i in instructions() if i.keyword == keyword and (stage is None or i.stage == stage)]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def exec_form(arguments: str) -> list[str]:
    """The JSON (exec) form of a CMD/ENTRYPOINT/HEALTHCHECK CMD: no shell, so signals reach the process."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def final_stage() -> int:
    """The index of the last stage, the one the image is made of."""
    return max(i.stage for i in instructions())


def copy_sources(stage: int) -> list[str]:
    """The build-context paths the COPY instructions of a stage take (COPY --from is not from the context)."""
    sources = []
    for instruction in instructions():
        if instruction.keyword == "COPY" and instruction.stage == stage and "--from=" not in instruction.arguments:
            *paths, _destination = instruction.arguments.split()
            sources.extend(paths)
    return sources


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression: ``*`` and ``?`` stay within one path element, ``**``
    spans any number of them (``**/`` also none)."""
    regex, rest = "", pattern.strip("/")
    while rest:
        for token, replacement in (("**/", "(?:.*/)?"), ("**", ".*"), ("*", "[^/]*"), ("?", "[^/]")):
            if rest.startswith(token):
                regex, rest = regex + replacement, rest[len(token) :]
                break
        else:
            regex, rest = regex + re.escape(rest[0]), rest[1:]
    return re.compile(regex)


def ignored_by_dockerignore(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context, by Docker's rules: a pattern matches a path
    when it matches the path or one of its parent folders, and the last matching pattern decides (``!`` lets in)."""
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        regex = dockerignore_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not pattern.startswith("!")
    return ignored


def test_image_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    """A build stage and a runtime stage that copies only the built environment, running as a numeric non-root
    user (Kubernetes' runAsNonRoot can only verify a numeric one)."""
    stages = [i for i in instructions() if i.keyword == "FROM"]
    assert len(stages) >= 2
    names = [re.search(r"\bAS (\S+)$", s.arguments, re.IGNORECASE) for s in stages]
    assert all(names), "name every stage (FROM ... AS name)"
    last = final_stage()
    copied_from = [i.arguments for i in instructions() if i.keyword == "COPY" and i.stage == last]
    assert copied_from and all(a.startswith("--from=") for a in copied_from), "the runtime copies build outputs only"
    user = only("USER", last).arguments.split(":")[0]
    assert user.isdigit() and int(user) != 0


def test_torch_comes_from_the_variant_index_at_the_project_pin() -> None:
    """TORCH_VARIANT (default cpu) picks torch's wheel index; the version is pyproject.toml's pin, not a copy."""
    build = [i for i in instructions() if i.stage == 0]
    assert any(i.keyword == "ARG" and i.arguments == "TORCH_VARIANT=cpu" for i in build)
    installs = " ".join(i.arguments for i in build if i.keyword == "RUN")
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" -r torch.txt' in installs
    assert not re.search(r"torch\s*==", DOCKERFILE.read_text(encoding="utf-8")), "torch's version belongs to pyproject"


def test_requirement_split_keeps_every_dependency(tmp_path: Path) -> None:
    """The build's requirement files are pyproject.toml's dependencies: torch (pinned) in one, the rest in the other."""
    torch_file, rest_file = tmp_path / "torch.txt", tmp_path / "rest.txt"
    subprocess.run(
        [
            sys.executable,
            str(SPLIT_REQUIREMENTS),
            str(REPO / "pyproject.toml"),
            "--torch",
            str(torch_file),
            "--rest",
            str(rest_file),
        ],
        check=True,
        timeout=30,
    )
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    torch = torch_file.read_text(encoding="utf-8").split()
    rest = rest_file.read_text(encoding="utf-8").splitlines()
    assert len(torch) == 1 and torch[0].startswith("torch==")
    assert sorted(torch + rest) == sorted(dependencies)


def test_healthcheck_asks_healthz_on_the_exposed_worker_port() -> None:
    """HEALTHCHECK runs python's urllib (slim images have no curl) against /healthz on the port EXPOSE names and
    the default command serves."""
    last = final_stage()
    healthcheck = only("HEALTHCHECK", last).arguments
    options, _, command = healthcheck.partition("CMD ")
    assert re.search(r"--start-period=\d+s", options)
    check = exec_form(command)
    assert check[:2] == ["python", "-c"] and "urllib.request.urlopen" in check[2]
    url = urlsplit(re.findall(r"https?://[^'\"]+", check[2])[0])
    exposed = int(only("EXPOSE", last).arguments)
    run = exec_form(only("CMD", last).arguments)
    assert (url.port, url.path) == (exposed, "/healthz")
    assert int(run[run.index("--port") + 1]) == exposed


def test_entrypoint_is_the_eddy_command() -> None:
    """``docker run IMAGE run spec.yaml ...`` runs ``eddy run spec.yaml``; the default runs every spec in /specs."""
    last = final_stage()
    assert exec_form(only("ENTRYPOINT", last).arguments) == ["eddy"]
    assert exec_form(only("CMD", last).arguments)[:2] == ["run", "/specs"]


def test_image_contains_every_package_of_the_project() -> None:
    """The build copies pyproject.toml, README.md (its readme) and every package setuptools is told to include,
    and each source exists."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    sources = copy_sources(0)
    assert {"pyproject.toml", project["project"]["readme"], *packages} <= set(sources)
    assert all((REPO / source).exists() for source in sources)


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        *((source, False) for source in copy_sources(0)),
        ("pipelines/spec.py", False),
        ("pipelines/__pycache__/spec.cpython-311.pyc", True),
        (".venv/bin/python", True),
        (".eddy/secret", True),
        (".env", True),
        (".git/HEAD", True),
        ("tests/deploy/test_dockerfile.py", True),
    ],
)
def test_build_context_holds_what_the_build_copies_and_nothing_private(path: str, ignored: bool) -> None:
    """.dockerignore lets through what COPY needs and keeps out environments, local data, secrets and Git."""
    assert ignored_by_dockerignore(path) is ignored
