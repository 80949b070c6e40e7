"""Security defences that need no services: ignored secret files, the Docker build context, credentials
kept out of lineage (docs/SECURITY.md lists each threat and the test that proves the defence)."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import ROOT


def git_ignores(path: str) -> bool:
    """`git check-ignore --no-index`: whether .gitignore ignores `path`, tracked or not."""
    result = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False)
    return result.returncode == 0


@pytest.mark.parametrize("path", [".env", ".env.local", ".env.production", "infra/compose/.env",
                                  "infra/compose/.env.local", ".dvc/config.local", ".flowtune/s3.json"])
def test_secret_files_are_git_ignored(path: str) -> None:
    assert git_ignores(path)


@pytest.mark.parametrize("path", [".env.example", "infra/compose/.env.example"])
def test_env_templates_stay_tracked(path: str) -> None:
    assert not git_ignores(path)
