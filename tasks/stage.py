"""What every stage's command line shares: `--params`, loading them, and user errors without a traceback.

`python -m tasks.<step>` is what `dvc repro` and the flow run; when the input or the params are
wrong, the user must read one message naming the file, line or record, not a stack trace.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable

from tasks.io import InputFormatError
from tasks.params import Params, ParamsError, load_params

Step = Callable[[Params, argparse.Namespace], str]
# The machine's fault, not the code's: the user frees space (or raises a quota) and runs again.
OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def run_stage(name: str, step: Step, argv: list[str] | None = None, *,
              add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
              user_errors: tuple[type[Exception], ...] = ()) -> None:
    """Parse `--params` (and the stage's own options), run `step`, print its one-line summary.

    Errors of the kinds in `user_errors`, bad params, unreadable input and a full disk exit with
    status 1 and `<stage>: error: <message>` on stderr; anything else is a bug and keeps its traceback.
    """
    parser = argparse.ArgumentParser(prog=f"python -m tasks.{name}")
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        summary = step(load_params(args.params), args)
    except (ParamsError, InputFormatError, *user_errors) as exc:
        sys.exit(f"{name}: error: {exc}")
    except OSError as exc:
        if exc.errno not in OUT_OF_SPACE:
            raise
        sys.exit(f"{name}: error: {out_of_space(exc)}")
    print(f"{name}: {summary}")


def out_of_space(exc: OSError) -> str:
    """`cannot write <file>: No space left on device` (the file when the writer named it)."""
    where = f"cannot write {exc.filename}: " if exc.filename else "cannot write the stage's output: "
    return where + (exc.strerror or str(exc))
