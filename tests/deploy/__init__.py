"""Tests of the deployment files (DESIGN.md §9): the Dockerfile, docker-compose.yml and the Helm chart, all checked
statically (no Docker engine, no cluster): schemas, a real helm binary, and cross-file consistency checks."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
