"""Helpers of the command-line tests (no tests here): a command's exit status, its ``error:`` line, its parsers."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

import pytest


def exit_status(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """``main(argv)``'s exit status, whether returned or (argparse's errors) raised as ``SystemExit``."""
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code or 0)


def run_cli(argv: list[str]) -> int:
    """``talkingface ARGV``'s exit status (the dispatcher, run in this process)."""
    from talkingface.commands.main import main

    return exit_status(main, argv)


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``error:`` line on stderr (other lines, such as log lines, may stand beside it; no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def only_error_line(err: str) -> str:
    """``err``'s one non-blank line, which must be an ``error: `` line (nothing else was written)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def parsers() -> dict[str, argparse.ArgumentParser]:
    """``name -> parser`` of every subcommand, sub-subcommands included (``preprocess run``, ``cache build``)."""
    from talkingface.commands.main import COMMANDS

    out: dict[str, argparse.ArgumentParser] = {}
    for name, command in COMMANDS.items():
        parser = importlib.import_module(command.module).build_parser()
        out[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                out.update({f"{name} {sub}": p for sub, p in action.choices.items()})
    return out
