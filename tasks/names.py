"""The names users give the registry: model names and aliases (they become S3 keys).

Checked in one place, with `fullmatch` (`^...$` would accept a trailing newline), both when params load
(`registry.model_name`, before any stage runs) and in the registry itself.
"""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
ALIAS_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot be a model name, or None."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        return f"invalid model name {name!r}: expected lowercase [a-z0-9._-], 1-64 chars, no '..'"
    return None


def alias_problem(alias: str) -> str | None:
    """Why `alias` cannot be an alias, or None."""
    if not ALIAS_PATTERN.fullmatch(alias):
        return f"invalid alias {alias!r}: expected lowercase [a-z0-9_-], starting with a letter"
    return None
