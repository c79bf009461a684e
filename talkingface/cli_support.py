"""The command-line contract shared by every ``talkingface`` command.

* Bad input (a missing file, a wrong flag value, an invalid config) prints exactly one line
  ``error: <file or flag>: <problem>`` on stderr and exits 2 (:data:`EXIT_USAGE`).
* A command that ran and found problems (``preprocess validate``, a failed video in ``preprocess run``) exits 1
  (:data:`EXIT_PROBLEMS`).
* Long flags are kebab-case; older snake-case spellings stay accepted as aliases (``--num-nodes`` / ``--num_nodes``).
* ``key.sub=value`` arguments override the DiffTalk config (:func:`split_overrides`), before or after ``--base``.
"""

from __future__ import annotations

import argparse
import contextvars
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

#: Set by the ``talkingface`` dispatcher so that a subcommand's usage reads ``talkingface train ...``.
PROG: contextvars.ContextVar[str | None] = contextvars.ContextVar("talkingface_prog", default=None)

_OVERRIDE = re.compile(r"^[A-Za-z_][\w\-]*(\.[\w\-\[\]]+)*=")


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def fail(subject: object, problem: object) -> int:
    """Print ``error: <subject>: <problem>`` (one line) on stderr; returns :data:`EXIT_USAGE`."""
    print(f"error: {one_line(subject)}: {one_line(problem)}", file=sys.stderr)
    return EXIT_USAGE


def report(err: BaseException) -> int:
    """Print an exception whose message already starts with its file or flag as one ``error:`` line; returns 2."""
    print(f"error: {one_line(err)}", file=sys.stderr)
    return EXIT_USAGE


def _argparse_message(message: str) -> str:
    """argparse's wording -> ``<flag>: <problem>``."""
    m = re.match(r"the following arguments are required: (.+)", message)
    if m:
        return f"{m.group(1)}: required"
    m = re.match(r"unrecognized arguments: (.+)", message)
    if m:
        return f"{m.group(1)}: unrecognized argument (config overrides look like data.batch_size=4)"
    m = re.match(r"argument ([^:]+): (.+)", message)
    if m:
        return f"{m.group(1).split('/')[-1]}: {m.group(2)}"
    return message


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the contract's error line (no usage dump) and exit status 2."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        prog = PROG.get()
        if prog is not None and not str(kwargs.get("prog") or "").startswith(prog):
            kwargs["prog"] = prog  # the command's own parser; its subparsers already start with this name
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        print(f"error: {_argparse_message(one_line(message))}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def is_override(arg: str) -> bool:
    return not arg.startswith("-") and bool(_OVERRIDE.match(arg))


def split_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(overrides, rest)``: the ``key.sub=value`` arguments, wherever they stand, and everything else."""
    overrides = [a for a in args if is_override(a)]
    return overrides, [a for a in args if not is_override(a)]
