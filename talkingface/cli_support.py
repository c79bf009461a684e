"""The command-line contract shared by every ``talkingface`` command.

* Bad input (a missing file, a wrong flag value, an invalid config) prints exactly one line
  ``error: <file or flag>: <problem>`` on stderr and exits 2 (:data:`EXIT_USAGE`).
* A command that ran and found problems (``preprocess validate``, a failed video in ``preprocess run``) exits 1
  (:data:`EXIT_PROBLEMS`).
* Long flags are kebab-case, and a flag name means one thing in every subcommand; older spellings stay accepted as
  aliases that ``--help`` leaves out (``--num_nodes`` for ``--num-nodes``; :func:`add_option`).
* Help is plain text and shows every default (:class:`HelpFormatter`).
* Every numeric flag declares its range (:func:`number`): nan, inf and values outside it are refused while parsing,
  ``error: --flag: must be at most 4096, got 20000``, before any work starts; ``--help`` shows the range.
* ``key.sub=value`` arguments override the DiffTalk config (:func:`split_overrides`), before or after ``--base``.
* Every subcommand's ``main`` is wrapped in :func:`command`, the one place that turns an error into its line and exit
  status: a :class:`~talkingface.errors.TalkingFaceError` (its own status), an ``OSError`` (a full disk: 1, else 2),
  Ctrl-C (130) and SIGTERM (143, as ``kill`` or ``timeout`` send it), which takes Ctrl-C's way out: the writers
  remove their partial files on the way.
* ``--device`` is checked against the torch build and the machine before anything loads (:func:`check_device`).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import functools
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

from talkingface.errors import DISK_FULL, EXIT_USAGE, TalkingFaceError, one_line
from talkingface.ranges import SEED, Number, Range

EXIT_OK, EXIT_PROBLEMS = 0, 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a process ended by SIGTERM

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "PROG",
    "ArgumentParser",
    "HelpFormatter",
    "NumberType",
    "Terminated",
    "add_device_option",
    "add_feature_options",
    "add_option",
    "check_device",
    "command",
    "fail",
    "hand_over",
    "number",
    "one_line",
    "report",
    "seed",
    "split_overrides",
]

#: Set by the ``talkingface`` dispatcher so that a subcommand's usage reads ``talkingface train ...``.
PROG: contextvars.ContextVar[str | None] = contextvars.ContextVar("talkingface_prog", default=None)

_OVERRIDE = re.compile(r"^[A-Za-z_][\w\-]*(\.[\w\-\[\]]+)*=")


def fail(subject: object, problem: object) -> int:
    """Print ``error: <subject>: <problem>`` (one line) on stderr; returns :data:`EXIT_USAGE`."""
    return report(TalkingFaceError(subject, problem))


def report(err: BaseException) -> int:
    """Print ``err`` as its one ``error:`` line on stderr; returns its exit status (2 unless it says otherwise)."""
    if isinstance(err, TalkingFaceError):
        print(err.cli_line(), file=sys.stderr)
        return err.exit_status
    print(f"error: {one_line(err)}", file=sys.stderr)
    return EXIT_USAGE


def report_os_error(err: OSError, disk_full_hint: str) -> int:
    """``error: <file>: <reason>``; a full disk exits 1 (the command could not finish) with ``disk_full_hint``,
    any other ``OSError`` (a missing or unreadable file, a read-only folder) 2."""
    problem = err.strerror or str(err)
    if err.errno in DISK_FULL:
        print(TalkingFaceError(err.filename, problem, hint=disk_full_hint).cli_line(), file=sys.stderr)
        return EXIT_PROBLEMS
    return report(TalkingFaceError(err.filename, problem))


class Terminated(KeyboardInterrupt):
    """SIGTERM received while a command runs: raised where Ctrl-C's ``KeyboardInterrupt`` would be, so that every
    ``finally`` and ``except BaseException`` that cleans up after Ctrl-C (the writers' partial files, a half-made
    run folder) cleans up after ``kill`` and ``timeout`` too."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the clean-up ends the process at once
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread (unless SIGTERM already has a
    handler of its own, or this is not the main thread); the handler before is restored afterwards. A handler
    installed inside the block (the trainer's, which checkpoints on SIGTERM) takes precedence while it is installed."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) in (_raise_terminated, signal.SIG_DFL):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _interrupted(err: KeyboardInterrupt) -> int:
    if isinstance(err, Terminated):
        print("error: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    print("error: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


Main = TypeVar("Main", bound=Callable[..., int])


def command(main: Main | None = None, *, disk_full_hint: str = "free space and run again") -> Main:
    """Decorate a subcommand's ``main``: the one handler that turns errors into the contract's line and status.

    A :class:`~talkingface.errors.TalkingFaceError` prints :meth:`~talkingface.errors.TalkingFaceError.cli_line` and
    returns its ``exit_status`` (2, bad input, unless the class says otherwise); an ``OSError`` prints
    ``error: <file>: <reason>`` and returns 1 for a full disk (with ``disk_full_hint``), else 2; Ctrl-C prints
    ``error: interrupted`` and returns 130, SIGTERM (:func:`sigterm_as_interrupt`) ``error: terminated (SIGTERM)``
    and 143. Anything else is a bug and keeps its traceback. Used bare (``@command``) or with options
    (``@command(disk_full_hint=...)``).
    """

    def wrap(function: Main) -> Main:
        @functools.wraps(function)
        def run(*args: object, **kwargs: object) -> int:
            try:
                with sigterm_as_interrupt():
                    return int(function(*args, **kwargs) or 0)
            except TalkingFaceError as err:
                return report(err)
            except OSError as err:
                return report_os_error(err, disk_full_hint)
            except KeyboardInterrupt as err:  # the writers have removed their partial files on the way out
                return _interrupted(err)
            except SystemExit as err:
                if isinstance(err.__context__, KeyboardInterrupt):  # Lightning's sys.exit(1) after an interrupt
                    return _interrupted(err.__context__)
                raise

        return run  # type: ignore[return-value]

    return wrap(main) if main is not None else wrap  # type: ignore[return-value]


def check_device(device: str | None, flag: str = "--device") -> None:
    """Refuse a ``--device`` that torch cannot use on this machine, before anything loads: a name torch does not
    know (``bogus``), CUDA without a CUDA build or GPU, a GPU index past the last one, MPS where there is none, or a
    device type the package does not run on. None (the command's default) passes."""
    if device is None:
        return
    import torch

    hint = "use --device cpu, cuda or cuda:N"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise TalkingFaceError(flag, f"unknown device {device!r}", hint=hint) from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise TalkingFaceError(flag, f"{device}: this torch build has no CUDA", hint="use --device cpu")
        if not torch.cuda.is_available():
            raise TalkingFaceError(flag, f"{device}: no CUDA GPU is available here", hint="use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise TalkingFaceError(flag, f"{device}: there are {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise TalkingFaceError(flag, f"{device}: MPS is not available here", hint="use --device cpu")
        return
    raise TalkingFaceError(flag, f"{device}: not a device this package runs on", hint=hint)


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


def _no_default(value: object) -> bool:
    """None, False (a switch), "" or [] (an empty list): nothing worth showing (0 and 0.0 are shown)."""
    return (
        value is None or value is False or value is argparse.SUPPRESS or (isinstance(value, str | list) and not value)
    )


class NumberType:
    """The argparse ``type`` of a numeric flag: the number its text spells, refused with argparse's error
    (``argument --x: must be ..., got ...``) when it is not a finite number of its kind inside its declared
    :class:`~talkingface.ranges.Range`. Made by :func:`number`."""

    def __init__(self, range_: Range) -> None:
        self.range = range_
        self.__name__ = range_.kind.__name__  # what argparse calls the type in its own messages

    def __call__(self, text: str) -> Number:
        try:
            return self.range.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    def __repr__(self) -> str:
        return f"number({self.range.kind.__name__}, {self.range.describe()})"


def number(
    kind: type[int] | type[float],
    *,
    min: Number | None = None,  # noqa: A002 - the bound's name in the help and the docs
    max: Number | None = None,  # noqa: A002
    above: Number | None = None,
    below: Number | None = None,
    also: tuple[Number, ...] = (),
) -> NumberType:
    """``type=`` of a numeric flag with its range: ``min`` / ``max`` inclusive, ``above`` / ``below`` exclusive,
    ``also`` special values outside them; nan and inf are always refused. E.g. ``number(int, min=1, max=100)``,
    ``number(float, above=0, below=1)``. Every numeric flag has one (``tests/test_ranges.py`` checks)."""
    return NumberType(Range(kind, min=min, max=max, above=above, below=below, also=also))


def seed() -> NumberType:
    """``type=`` of a seed flag: 0 .. 2**32 - 1 (NumPy's and Lightning's seeds)."""
    return NumberType(SEED)


def _range_problem(action: argparse.Action, value: object) -> str | None:
    """The problem of a value that did not come through the flag's ``type`` (a default, a value from an options
    file: argparse converts string defaults only)."""
    if not isinstance(action.type, NumberType) or value is None or value is argparse.SUPPRESS:
        return None
    for item in value if isinstance(value, list) else [value]:
        # strings go through ``type``; other objects (e.g. a caller's "not given" marker) are not numbers to check
        problem = action.type.range.problem(item) if isinstance(item, int | float) else None
        if problem is not None:
            return problem
    return None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (paragraphs kept); every option that has a default shows it, as
    ``(default: VALUE)``, unless its help already says what the default is; a numeric flag shows its range first,
    ``(1 to 100; default: 95)``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = "%(default)" in text or "default" in text.lower()
        notes = [action.type.range.describe()] if isinstance(action.type, NumberType) else []
        if not (shown or not action.option_strings or _no_default(default)):
            notes.append("default: %(default)s")
        if not notes:
            return text
        return f"{text} ({'; '.join(notes)})" if text else f"({'; '.join(notes)})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the contract's error line (no usage dump), exit status 2, and :class:`HelpFormatter`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        prog = PROG.get()
        if prog is not None and not str(kwargs.get("prog") or "").startswith(prog):
            kwargs["prog"] = prog  # the command's own parser; its subparsers already start with this name
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        print(f"error: {_argparse_message(one_line(message))}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """argparse's, then the ranges of the numeric values that did not come through their flag's ``type``
        (defaults, ``set_defaults`` from an options file): every numeric value is in range once parsing is done."""
        parsed, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            problem = _range_problem(action, getattr(parsed, action.dest, None))
            if problem is not None:
                self.error(f"argument {'/'.join(action.option_strings) or action.dest}: {problem}")
        return parsed, extras


def add_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, *flags: str, hidden: Sequence[str] = (), **kwargs: Any
) -> argparse.Action:
    """``parser.add_argument(*flags, **kwargs)``, plus the older spellings ``hidden`` as aliases that still work but
    are left out of ``--help`` (each flag name has one meaning across the subcommands; see docs/install.md)."""
    action = parser.add_argument(*flags, **kwargs)
    if hidden:
        alias = {k: v for k, v in kwargs.items() if k not in ("help", "default", "required", "metavar", "dest")}
        parser.add_argument(*hidden, dest=action.dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **alias)
    return action


def add_device_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str | None = None, used_for: str = ""
) -> argparse.Action:
    """``--device``, the torch device (``used_for``: what runs on it, e.g. "of the network metrics"); ``default``
    None: cuda when available, else cpu. The command checks the value with :func:`check_device` before anything
    loads."""
    text = " ".join(["torch device", *([used_for] if used_for else [])]) + ": cpu, cuda or cuda:N"
    if default is None:
        text += " (default: cuda when available, else cpu)"
    return parser.add_argument("--device", default=default, help=text)


def add_feature_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    kinds: Sequence[str],
    default: str | None,
    help: str,  # noqa: A002 - argparse's name
    deepspeech: str | None = None,
) -> None:
    """``--audio-features`` (one of ``kinds``; ``help`` says what the backend is for and what its default means) and
    the local model folder of each backend among ``kinds`` that needs one: ``--wav2vec2-model``, ``--whisper-model``
    and, with ``deepspeech`` (what the flag takes), ``--deepspeech-npy``."""
    parser.add_argument("--audio-features", choices=sorted(kinds), default=default, help=help)
    if "wav2vec2" in kinds:
        parser.add_argument(
            "--wav2vec2-model", default=None, help="local wav2vec2 CTC model folder (for --audio-features wav2vec2)"
        )
    if "whisper" in kinds:
        parser.add_argument(
            "--whisper-model",
            default=None,
            help="local whisper model folder, CTranslate2 or transformers (for --audio-features whisper)",
        )
    if deepspeech is not None:
        parser.add_argument("--deepspeech-npy", default=None, help=deepspeech)


def is_override(arg: str) -> bool:
    return not arg.startswith("-") and bool(_OVERRIDE.match(arg))


def split_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(overrides, rest)``: the ``key.sub=value`` arguments, wherever they stand, and everything else."""
    overrides = [a for a in args if is_override(a)]
    return overrides, [a for a in args if not is_override(a)]


def hand_over(command: str | None = None) -> NoReturn:
    """Become the installed ``talkingface`` program: ``talkingface [command] ARGS`` (ARGS: this program's own).

    ``python -m talkingface`` and the older module spellings (``python -m talkingface.evaluate``,
    ``python -m talkingface.training.export``, ...) are aliases of that program. They replace their process with
    it (same process id, so signals and exit statuses are the program's) rather than import the commands, which
    sit above the packages these spellings live in.
    """
    program = shutil.which("talkingface")
    if program is None:
        sys.exit(fail("talkingface", "the program is not on the PATH; install the package (pip install -e .)"))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(program, [program, *([command] if command else []), *sys.argv[1:]])
