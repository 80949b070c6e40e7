"""MkDocs hook: the site's Reference pages, written from the code at every build, never kept in git.

- Params: every key of both task kinds' schemas (tasks/params.py, tasks/kinds/*/params.py) with its type,
  allowed values, the value the example params file gives it, and the schema's description.
- Command line: every `flowtune` command and option, from the argparse parser (flows/cli/main.py builds it).
- HTTP API: the routes and status codes of `flowtune serve`, from its FastAPI app's OpenAPI schema (also
  published whole as reference/openapi.json).

Generated at build time rather than committed (docs/DECISIONS.md, "The documentation site ... generated at build
time"): nothing to regenerate by hand, no stale copy to test for, no merge conflicts in a generated file.
tests/unit/test_docs_reference.py checks the pages and that every params key has a description.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _this_checkout_first() -> None:
    """Document the checkout this file is in, whichever installed copy of flowtune the interpreter would import
    (called at build time: MkDocs restores sys.path after loading a hook)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

# kind -> (the example params file whose values the page shows, its page)
KINDS = {"ner": ("params.yaml", "reference/params-ner.md"),
         "textclass": ("params-sentiment.yaml", "reference/params-textclass.md")}
CLI_PAGE, HTTP_PAGE, OPENAPI_FILE = "reference/cli.md", "reference/http.md", "reference/openapi.json"
ANY_KEY = "*"  # the key of a mapping's entries in a row's dotted key (gate.min_behaviour.*)
MAX_VALUE_CHARS = 90  # a longer example value is cut (the file itself has it whole)


# ---------------------------------------------------------------- params

@dataclass(frozen=True)
class ParamRow:
    key: str  # dotted, e.g. train.lora.r; a mapping's entries: gate.min_behaviour.*
    type: str
    allowed: str
    value: object  # in the example params file (None also when absent, see `present`)
    present: bool
    description: str | None  # None: the schema has none (tests/unit/test_docs_reference.py fails)
    section: bool  # a section (a nested model): its rows follow
    owner: str  # the model class that declares the key, e.g. TrainParams.seed (for error messages)


def schema(kind: str):
    from importlib import import_module

    return import_module(f"tasks.kinds.{kind}.params").SCHEMA


def model_doc(model: type) -> str | None:
    """A section's description: the docstring of its model class or of the nearest base that has one."""
    from pydantic import BaseModel

    from tasks.params import Params, Section

    for cls in model.__mro__:
        if cls in (Section, BaseModel, Params, object):
            return None
        if doc := cls.__dict__.get("__doc__"):
            return " ".join(doc.split())
    return None


def _unwrap_optional(tp):
    args = typing.get_args(tp)
    if _is_union(tp) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007 - built at run time
    return tp, False


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_model(tp) -> bool:
    from pydantic import BaseModel

    return isinstance(tp, type) and issubclass(tp, BaseModel)


def type_name(tp) -> str:
    """A reader's name for an annotation: `int or null`, `list of str`, `[float, float]`, `mapping str -> float`."""
    inner, optional = _unwrap_optional(tp)
    if optional:
        return f"{type_name(inner)} or null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " or ".join(sorted({type(a).__name__ for a in args}))
    if _is_union(tp):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is dict:
        return f"mapping {type_name(args[0])} -> {type_name(args[1])}"
    if _is_model(tp):  # inside a container (sweep.space's entries): its keys
        return "{" + ", ".join(f.alias or n for n, f in tp.model_fields.items()) + "}"
    return getattr(tp, "__name__", str(tp))


def literal_values(tp) -> list:
    """The values a Literal allows, wherever it sits in the annotation (list of Literal, Literal or None)."""
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    return [value for arg in typing.get_args(tp) for value in literal_values(arg)]


BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="),
          ("max_length", "length <="))


def allowed(field) -> str:
    """The values a field accepts beyond its type: the Literal's choices and the numeric or length bounds."""
    parts, tp = [], _unwrap_optional(field.annotation)[0]
    if typing.get_origin(tp) is dict:  # Literal keys (validate.soft): which keys the mapping takes
        key, value = typing.get_args(tp)
        if keys := literal_values(key):
            parts.append("keys " + ", ".join(f"`{v}`" for v in keys))
        tp = value
    if values := literal_values(tp):
        parts.append(", ".join(f"`{v}`" for v in values))
    for meta in field.metadata:
        parts.extend(f"{symbol} {getattr(meta, name)}" for name, symbol in BOUNDS
                     if getattr(meta, name, None) is not None)
    return "; ".join(parts)


def param_rows(model: type, values: object, prefix: str = "") -> list[ParamRow]:
    """One row per key of `model`, depth first, with the value `values` (the example file's mapping) gives it."""
    rows = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        dotted = f"{prefix}{key}"
        present = isinstance(values, dict) and key in values
        value = values.get(key) if present else None
        tp, _ = _unwrap_optional(field.annotation)
        if _is_model(tp):
            rows.append(ParamRow(dotted, "section", "", None, present, field.description or model_doc(tp), True,
                                 f"{model.__name__}.{name} ({tp.__name__})"))
            rows.extend(param_rows(tp, value, f"{dotted}."))
            continue
        rows.append(ParamRow(dotted, type_name(field.annotation), allowed(field), value, present,
                             field.description, False, f"{model.__name__}.{name}"))
        if typing.get_origin(tp) is dict:  # a mapping of sections (sweep.space): its entries' keys too
            entry = typing.get_args(tp)[1]
            for member in typing.get_args(entry) if _is_union(entry) else (entry,):
                if _is_model(member):
                    rows.extend(param_rows(member, None, f"{dotted}.{ANY_KEY}."))
    return rows


def undocumented(rows: list[ParamRow]) -> list[str]:
    """One line per key without a description, naming where to write it."""
    return [f"{row.key}: {row.owner} has no description (write Field(description=...), or a docstring for a "
            "section)" for row in rows if not row.description]


def _value_cell(row: ParamRow) -> str:
    if row.section or not row.present:
        return ""
    text = yaml.safe_dump(row.value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + " ..."
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def params_page(kind: str) -> str:
    file, _ = KINDS[kind]
    values = yaml.safe_load((ROOT / file).read_text(encoding="utf-8"))
    model = schema(kind)
    other = next(f"[{k}]({Path(page).name})" for k, (_, page) in KINDS.items() if k != kind)
    lines = [
        f"# Params reference: `task.kind: {kind}`",
        "",
        f"Every key a params file of this kind must have (each one: a missing or unknown key stops the run at "
        f"load time, naming it), generated from the pydantic schema (`{model.__module__}`) at each build. "
        f"*Value* is what the example `{file}` sets; there are no other defaults. The other kind: {other}.",
        "",
    ]
    rows = param_rows(model, values)
    for head in (row for row in rows if "." not in row.key):  # the sections, in the schema's order
        rest = [row for row in rows if row.key.startswith(f"{head.key}.")]
        key = head.key
        lines += [f"## `{key}`", "", _cell(head.description or ""), "",
                  "| key | type | allowed | value | description |", "|---|---|---|---|---|"]
        for row in rest:
            description = f"*{row.description}*" if row.section else row.description or "**(no description)**"
            lines.append(f"| `{row.key}` | {_cell(row.type)} | {_cell(row.allowed)} | {_cell(_value_cell(row))} | "
                         f"{_cell(description)} |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line

def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order `--help` lists them."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            found += [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return found


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if (isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
                or action.help == argparse.SUPPRESS):
            continue
        name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) or action.required else f"`{default}`"
        if action.choices:
            shown += (" " if shown else "") + "one of " + ", ".join(f"`{c}`" for c in action.choices)
        required = "yes" if action.required or not action.option_strings else ""
        rows.append(f"| {name} | {required} | {_cell(shown)} | {_cell(action.help or '')} |")
    if not rows:
        return []
    return ["| option | required | default | description |", "|---|---|---|---|", *rows, ""]


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage line, unwrapped (argparse wraps it for the terminal's width)."""
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


def _command_section(name: str, helptext: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = [f"{'#' * level} `{name}`", ""]
    if text := (parser.description if parser.description and parser.description != helptext else None) or helptext:
        lines += [_cell(text), ""]
    lines += ["```text", usage(parser), "```", ""]
    lines += _options_table(parser)
    if parser.epilog:
        lines += [parser.epilog, ""]
    for sub_name, sub_help, sub in _subcommands(parser):
        lines += _command_section(f"{name} {sub_name}", sub_help, sub, min(level + 1, 4))
    return lines


def cli_page() -> str:
    from flows.cli.main import build_parser
    from flows.ops.services import build_services_parser

    parser = build_parser()
    lines = ["# Command line reference", "",
             "Every `flowtune` command and option, generated from the argument parser (`flows/cli/main.py`) at each "
             "build; `flowtune <command> --help` prints the same.", "",
             "```text", usage(parser), "```", ""]
    for name, helptext, sub in _subcommands(parser):
        if name == "services":  # parsed by flows/services, not by this stub
            lines += _command_section("flowtune services", helptext, build_services_parser(), 2)
        elif name == "prefect":  # every argument goes to Prefect's own CLI
            lines += ["## `flowtune prefect`", "", _cell(helptext), "",
                      "Every argument is passed to Prefect's command line (`prefect --help`), with `PREFECT_API_URL` "
                      "and the API's auth string of this checkout's server (`.env`).", ""]
        else:
            lines += _command_section(f"flowtune {name}", helptext, sub, 2)
    return "\n".join(lines)


# ---------------------------------------------------------------- HTTP API

def openapi() -> dict:
    """The OpenAPI schema of `flowtune serve`'s app (built without a model: nothing is loaded or started)."""
    from fastapi import FastAPI

    from flows.serving.app import Metrics, create_app

    app = create_app(None, Metrics())
    while not isinstance(app, FastAPI):  # the guards (body limit, bearer token) wrap the FastAPI app
        app = app.app
    return app.openapi()


def _schema_rows(spec: dict, components: dict) -> list[str]:
    if "$ref" in spec:
        spec = components[spec["$ref"].rsplit("/", 1)[-1]]
    rows = []
    for name, prop in spec.get("properties", {}).items():
        kinds = [alt.get("type", "object") for alt in prop.get("anyOf", [prop])]
        rows.append(f"| `{name}` | {' or '.join(kinds)} | {'yes' if name in spec.get('required', []) else ''} | "
                    f"{_cell(prop.get('description', ''))} |")
    if not rows:
        return []
    lines = ["| field | type | required | description |", "|---|---|---|---|", *rows, ""]
    if description := spec.get("description"):
        lines = [_cell(description), "", *lines]
    return lines


def http_page(schema_: dict | None = None) -> str:
    spec = schema_ or openapi()
    components = spec.get("components", {}).get("schemas", {})
    lines = ["# HTTP API of `flowtune serve`", "",
             f"{spec['info'].get('description', '')} Generated from the service's OpenAPI schema at each build "
             f"([openapi.json](openapi.json); a running service shows it at `/docs`). Options: "
             "[`flowtune serve`](cli.md#flowtune-serve); tutorial: [Serving and hot swap](../tutorials/serving.md).",
             ""]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            lines += [f"## `{method.upper()} {path}`", "", op.get("summary", ""), ""]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                lines += ["**Request body** (JSON):", "", *_schema_rows(body, components)]
            lines += ["| status | meaning |", "|---|---|"]
            for status, answer in op["responses"].items():
                lines.append(f"| {status} | {_cell(answer.get('description', ''))} |")
            lines.append("")
            ok = op["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema")
            if ok and "$ref" in ok:
                lines += ["**Answer** (200, JSON):", "", *_schema_rows(ok, components)]
    return "\n".join(lines)


# ---------------------------------------------------------------- the hook

def pages() -> dict[str, str]:
    """Every generated file of the site: its path under docs/ -> its text."""
    _this_checkout_first()
    spec = openapi()
    return {**{page: params_page(kind) for kind, (_, page) in KINDS.items()},
            CLI_PAGE: cli_page(), HTTP_PAGE: http_page(spec), OPENAPI_FILE: json.dumps(spec, indent=2)}


_serving = False


def on_startup(command: str, dirty: bool) -> None:
    """MkDocs event: note whether this process is `mkdocs serve`, which rebuilds on every change."""
    global _serving
    _serving = command == "serve"


def on_files(files, config):
    """MkDocs event: add the generated pages before the nav is built (mkdocs.yml's nav names them)."""
    from mkdocs.structure.files import File

    if _serving:  # a rebuild after an edit of tasks/ or flows/ (mkdocs.yml watches them) must see the new code
        for name in [name for name in sys.modules if name.split(".")[0] in ("tasks", "flows")]:
            del sys.modules[name]
    for uri, text in pages().items():
        files.append(File.generated(config, uri, content=text))
    return files
