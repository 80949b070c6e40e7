"""The site's generated reference (docs/hooks/reference.py) is complete: every params key of both kinds has a
description in the schema and a row on its page, every `flowtune` command and option is on the CLI page, every
route and status of `flowtune serve` is on the HTTP page; and every `flowtune` command the docs show parses."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs/hooks/reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(reference) -> dict[str, str]:
    return reference.pages()


# ---------------------------------------------------------------- params

@pytest.mark.parametrize("kind", ["ner", "textclass"])
def test_every_params_key_has_a_description(reference, kind):
    rows = reference.param_rows(reference.schema(kind), {})
    assert len(rows) > 100
    assert reference.undocumented(rows) == []


def test_every_task_kind_has_a_params_page(reference):
    """A third kind (tasks/params.py `Kind`) needs its example params file and page in the hook's KINDS."""
    from typing import get_args

    from tasks.params import Kind

    assert set(reference.KINDS) == set(get_args(Kind))
    assert all((ROOT / file).is_file() for file, _ in reference.KINDS.values())


def test_a_key_without_a_description_is_named_with_its_class(reference):
    class Inner(BaseModel):  # no docstring: the section has no description either
        size: int = Field(ge=1)

    class Outer(BaseModel):
        """A section."""

        rate: float = Field(gt=0, description="how fast")
        inner: Inner

    problems = reference.undocumented(reference.param_rows(Outer, {}))
    assert problems == ["inner: Outer.inner (Inner) has no description (write Field(description=...), or a "
                        "docstring for a section)",
                        "inner.size: Inner.size has no description (write Field(description=...), or a docstring "
                        "for a section)"]


def leaf_keys(mapping: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        keys += leaf_keys(value, f"{dotted}.") if isinstance(value, dict) and value else [dotted]
    return keys


@pytest.mark.parametrize("kind", ["ner", "textclass"])
def test_the_params_page_has_a_row_for_every_key_of_the_example_file(reference, pages, kind):
    file, page = reference.KINDS[kind]
    text = pages[page]
    documented = set(re.findall(r"^\| `([\w.*]+)` \|", text, re.MULTILINE))
    mappings = {row.key for row in reference.param_rows(reference.schema(kind), {}) if row.type.startswith("mapping")}
    keys = leaf_keys(yaml.safe_load((ROOT / file).read_text()))
    assert len(keys) > 100
    # a key inside a mapping (gate.min_behaviour.name_invariance, sweep.space.train.dropout.low) is the mapping's
    missing = [key for key in keys
               if key not in documented and not any(key.startswith(f"{mapping}.") for mapping in mappings)]
    assert missing == [], f"{file}: keys without a row on {page}"
    assert "(no description)" not in text


def test_the_params_page_shows_type_allowed_values_and_the_files_value(pages):
    text = pages["reference/params-ner.md"]
    assert ("| `ingest.tag_scheme` | str | `iob1`, `iob2`, `bioes` | `iob2` | the source's tag scheme: `iob2` "
            in text)
    assert "| `train.lora.r` | int | >= 1 | `8` | the adapters' rank |" in text
    assert "| `validate.max_subword_pieces` | int or null | >= 1 | `1024` |" in text
    textclass = pages["reference/params-textclass.md"]
    assert "`train.class_weight`" in textclass and "`ingest.tag_scheme`" not in textclass


# ---------------------------------------------------------------- command line

def commands(reference, parser, prefix: str):
    """(name, parser) of every command under `parser`, depth first."""
    for name, _, sub in reference._subcommands(parser):
        yield f"{prefix} {name}", sub
        yield from commands(reference, sub, f"{prefix} {name}")


def test_the_cli_page_has_every_command_and_option(reference, pages):
    from flows.cli.main import build_parser
    from flows.ops.services import build_services_parser

    text = pages[reference.CLI_PAGE]
    found = [*commands(reference, build_parser(), "flowtune"),
             *commands(reference, build_services_parser(), "flowtune services")]
    assert len(found) >= 20
    for name, parser in found:
        if name == "flowtune prefect" or (name == "flowtune services" and parser.add_help is False):
            assert f"## `{name}`" in text
            continue
        section = text.split(f"`{name}`\n", 1)[1].split("\n#", 1)[0]
        for action in parser._actions:
            if action.help != "==SUPPRESS==" and action.option_strings and "-h" not in action.option_strings:
                assert f"`{action.option_strings[-1]}`" in section, f"{name} {action.option_strings}"
    assert "--webhook-url" not in text  # hidden on purpose: a token must not be typed on the command line


# ---------------------------------------------------------------- HTTP

def test_the_http_page_has_every_route_and_status(reference, pages):
    spec = reference.openapi()
    text = pages[reference.HTTP_PAGE]
    assert set(spec["paths"]) >= {"/v1/predict", "/healthz", "/readyz", "/metrics"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            section = text.split(f"## `{method.upper()} {path}`", 1)[1].split("\n## ", 1)[0]
            for status in operation["responses"]:
                assert f"\n| {status} | " in section, f"{method} {path} {status}"
    assert sorted(spec["paths"]["/v1/predict"]["post"]["responses"]) == [
        "200", "401", "408", "413", "422", "429", "500", "503"]


# ---------------------------------------------------------------- the commands the pages show

def doc_commands() -> list[tuple[str, str]]:
    """(page:line, command) of each `flowtune` command in a bash block of the site's pages: comments dropped,
    continued lines joined, `.venv/bin/` and trailing `&` removed."""
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text()
        for block in re.finditer(r"^[ \t]*```bash\n(.*?)^[ \t]*```", text, re.MULTILINE | re.DOTALL):
            line_no, pending = text[:block.start()].count("\n") + 1, ""
            for line in block.group(1).split("\n"):
                line_no += 1
                if line.endswith("\\"):  # continued on the next line
                    pending += line[:-1] + " "
                    continue
                command, pending = (pending + line).split("  #")[0].strip().removesuffix("&").strip(), ""
                for part in re.split(r"\s*(?:&&|;|\|\|)\s*", command):
                    if re.match(r"(\.venv/bin/)?flowtune ", part):
                        found.append((f"{page.relative_to(ROOT)}:{line_no}",
                                      part.removeprefix(".venv/bin/")))
    return found


def test_every_flowtune_command_in_the_docs_parses():
    """A renamed option or command fails here, naming the page and line that still shows it."""
    from flows.cli.main import build_parser
    from flows.ops.services import build_services_parser

    shown = doc_commands()
    assert len(shown) > 20
    for where, command in shown:
        argv = shlex.split(command.split(" | ")[0])[1:]
        if argv[:1] == ["prefect"]:
            continue  # Prefect's own command line
        parser = build_services_parser() if argv[:1] == ["services"] else build_parser()
        try:
            parser.parse_args(argv[1:] if argv[:1] == ["services"] else argv)
        except SystemExit:
            pytest.fail(f"{where}: `{command}` does not parse")



def bare(reference, parser, name: str) -> list[str]:
    """The commands and options under `parser` without a help text."""
    import argparse

    found = [f"{name} {action.option_strings or [action.dest]}" for action in parser._actions
             if not action.help and not isinstance(action, argparse._SubParsersAction)]
    for sub_name, helptext, sub in reference._subcommands(parser):
        found += ([] if helptext else [f"{name} {sub_name}"]) + bare(reference, sub, f"{name} {sub_name}")
    return found


def test_every_command_and_option_has_a_help_text(reference):
    """The CLI page says what each option does: an option without `help=` would be a bare name there."""
    from flows.cli.main import build_parser
    from flows.ops.services import build_services_parser

    assert bare(reference, build_parser(), "flowtune") + bare(reference, build_services_parser(),
                                                                "flowtune services") == []
