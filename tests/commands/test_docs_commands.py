"""Every command in the README and docs/ stays runnable, and every relative link points at something.

Commands come from the ```bash / ```sh / ```console blocks of ``README.md`` and ``docs/*.md``: each line that runs
``talkingface ...``, ``python demo.py``, ``python trainer/DiffTalkTrainer.py``, ``python -m talkingface...`` or
``python benchmarks/<x>.py`` (also behind ``srun``, ``torchrun`` or ``VAR=value``). For each, the subcommand must
exist and every ``--flag`` must be one its argument parser accepts (exactly, no abbreviations); ``key.sub=value``
config overrides must name keys of the config schema, and so must the values of ``--set KEY=VALUE`` flags. The
parsers are built in-process: the command's ``main`` runs with argparse's parsing replaced by a trap that hands back
the parser, so nothing is parsed, run or started. ``python <file>.py`` must name an existing file. Links: every
relative Markdown link must point at an existing file, and a ``#fragment`` into a Markdown file at one of its
headings.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.util
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from talkingface.cli_support import is_override
from talkingface.training.config import TrainingConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: How a documented command reaches its parser: the words that start it -> the ``talkingface`` subcommand whose
#: parser takes the rest ("": the next word names the subcommand). Parsers are resolved through the ``talkingface``
#: dispatch (:func:`talkingface.commands.main.main`); ``python benchmarks/<x>.py`` through the script's own ``main``.
ENTRY_POINTS: dict[tuple[str, ...], str] = {
    ("talkingface",): "",
    ("python", "-m", "talkingface.commands"): "",
    ("python", "demo.py"): "lipsync",
    ("python", "trainer/DiffTalkTrainer.py"): "train",
    ("python", "-m", "talkingface.preprocess"): "preprocess",
    ("python", "-m", "talkingface.training.latent_cache"): "cache",
    ("python", "-m", "talkingface.training.export"): "export",
    ("python", "-m", "talkingface.evaluate"): "evaluate",
    ("python", "-m", "talkingface.synthetic"): "synthetic",
}
#: Subcommands whose positional arguments may be ``key.sub=value`` config overrides.
TAKES_OVERRIDES = {"train", "cache"}
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}


@dataclasses.dataclass(frozen=True)
class Command:
    source: str  # "file:line"
    words: tuple[str, ...]


# ------------------------------------------------------------------------------------------- reading the docs
def _substitute_command_output(line: str) -> str:
    """``$(...)`` (balanced, quotes included) -> ``SUBST``: its words are another command's, not this one's."""
    out, i = [], 0
    while i < len(line):
        if line.startswith("$(", i):
            depth, j = 1, i + 2
            while j < len(line) and depth:
                depth += {"(": 1, ")": -1}.get(line[j], 0)
                j += 1
            out.append("SUBST")
            i = j
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def shell_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, logical line)`` of the shell code blocks, continuation lines joined, prompts removed."""
    lang, pending, start = None, "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w+-]*)", raw)
        if fence:
            lang = (fence.group(1) or "text").lower() if lang is None else None
            pending = ""
            continue
        if lang not in SHELL_BLOCKS:
            continue
        line = raw.strip()
        if lang == "console" and not pending:
            if not line.startswith("$ "):
                continue  # output, not a command
            line = line[2:]
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line: split at ``;``, ``&``, ``|`` (and their doubles), comments dropped."""
    lexer = shlex.shlex(_substitute_command_output(line), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def doc_commands(text: str, name: str) -> Iterator[Command]:
    """The documented commands of one file, with ``$VAR`` of ``VAR=value`` lines of the same block expanded."""
    variables: dict[str, list[str]] = {}
    for number, line in shell_lines(text):
        for words in split_commands(line):
            if all(re.match(r"^[A-Za-z_]\w*=", w) for w in words):  # VAR=value lines
                for w in words:
                    key, value = w.split("=", 1)
                    variables[key] = value.split()
                continue
            while words and re.match(r"^[A-Za-z_]\w*=", words[0]):  # PYTHONPATH=$PWD python ...
                words = words[1:]
            if words[:1] == ["srun"]:
                words = words[1:]
            if words[:1] == ["torchrun"]:  # torchrun [its options] script.py [the script's arguments]
                scripts = [i for i, w in enumerate(words) if w.endswith(".py")]
                words = ["python", *words[scripts[0] :]] if scripts else []
            expanded: list[str] = []
            for w in words:
                expanded.extend(variables.get(w[1:], [w]) if w.startswith("$") else [w])
            if expanded:
                yield Command(f"{name}:{number}", tuple(expanded))


# ------------------------------------------------------------------------------------------------- the parsers
class _ParserCapturedError(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def capture_parser(main: Callable[[list[str]], Any], argv: list[str]) -> argparse.ArgumentParser:
    """The parser ``main(argv)`` builds: its first call to ``parse_args``/``parse_known_args`` is turned into a
    trap that returns the parser instead of parsing (nothing runs past that point)."""

    def trap(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _ParserCapturedError(self)

    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", trap),
        mock.patch.object(argparse.ArgumentParser, "parse_known_args", trap),
        mock.patch("logging.basicConfig"),
    ):
        try:
            main(argv)
        except _ParserCapturedError as captured:
            return captured.parser
        except SystemExit as err:
            raise AssertionError(f"{main.__module__}.main exited ({err.code}) before parsing its arguments") from err
    raise AssertionError(f"{main.__module__}.main returned without parsing its arguments")


def talkingface_subcommands() -> set[str]:
    from talkingface.commands.main import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


@functools.cache
def subcommand_parser(name: str) -> argparse.ArgumentParser:
    from talkingface.commands.main import main

    return capture_parser(lambda argv: main([name, *argv]), ["--help"])


@functools.cache
def script_parser(path: str) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(f"docs_script_{Path(path).stem}", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return capture_parser(module.main, ["--help"])


# ------------------------------------------------------------------------------------------------- the checks
def config_key_problem(key: str) -> str | None:
    node: Any = TrainingConfig()
    for i, part in enumerate(key.split(".")):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return f"{key}: not a config key ({'.'.join(key.split('.')[:i]) or 'top level'} has no {part!r})"
        node = getattr(node, part)
    return None


def argument_problems(parser: argparse.ArgumentParser, words: list[str], overrides: bool) -> list[str]:
    """What ``parser`` would refuse among ``words``: unknown flags, a missing or unknown subcommand, config
    overrides with unknown keys (or any override where the command takes none)."""
    problems: list[str] = []
    if overrides:  # taken out before parsing (``cli_support.split_overrides``), wherever they stand
        problems += [p for w in words if is_override(w) and (p := config_key_problem(w.split("=", 1)[0]))]
        words = [w for w in words if not is_override(w)]
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("-") and len(word) > 1 and not re.match(r"^-\d", word):
            flag, inline = (word.split("=", 1) + [None])[:2] if word.startswith("--") else (word, None)
            action = parser._option_string_actions.get(flag)
            if action is None:
                problems.append(f"{flag}: not an option of `{parser.prog}`")
                continue
            takes = action.nargs != 0
            if takes and inline is None:  # its values: up to the next flag (one unless nargs says more)
                values = []
                while i < len(words) and not words[i].startswith("-"):
                    values.append(words[i])
                    i += 1
                    if action.nargs in (None, "?", 1):
                        break
                if action.metavar == "KEY=VALUE":
                    problems += [p for v in values if (p := config_key_problem(v.split("=", 1)[0]))]
            continue
        if subparsers:
            choices = subparsers[0].choices
            if word not in choices:
                return [*problems, f"{word}: not a subcommand of `{parser.prog}` (one of {', '.join(choices)})"]
            return problems + argument_problems(choices[word], words[i:], overrides=False)
        if is_override(word):
            problems.append(f"{word}: a config override, but `{parser.prog}` takes none")
    if subparsers and subparsers[0].required:
        problems.append(f"`{parser.prog}` needs a subcommand (one of {', '.join(subparsers[0].choices)})")
    return problems


def command_problems(command: Command) -> list[str]:
    """``[]`` when the command's program, subcommand and flags exist (or it is not one of ours)."""
    words = list(command.words)
    for start, sub in sorted(ENTRY_POINTS.items(), key=lambda item: -len(item[0])):
        if tuple(words[: len(start)]) == start:
            rest = words[len(start) :]
            if not sub:
                if not rest or rest[0].startswith("-"):
                    return [f"{w}: not an option of `talkingface`" for w in rest if w not in ("-h", "--help")]
                sub, rest = rest[0], rest[1:]
            if sub not in talkingface_subcommands():
                return [f"{sub}: not a talkingface subcommand"]
            return argument_problems(subcommand_parser(sub), rest, sub in TAKES_OVERRIDES)
    if words[:2] == ["python", "-m"] and len(words) > 2 and words[2].split(".")[0] == "talkingface":
        return [f"python -m {words[2]}: not in ENTRY_POINTS of test_docs_commands.py (add where it leads)"]
    if words[:1] == ["python"] and len(words) > 1 and words[1].endswith(".py"):
        if not (ROOT / words[1]).is_file():
            return [f"{words[1]}: no such file"]
        if words[1].startswith("benchmarks/"):
            return argument_problems(script_parser(words[1]), words[2:], overrides=False)
    return []


def github_slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The fragment ids GitHub gives the headings of a Markdown text (repeats get ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _without_fences(text), flags=re.M):
        slug = github_slug(heading)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def _without_fences(text: str) -> str:
    return re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.M | re.S)


def _without_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", _without_fences(text))


def link_problems(path: Path, text: str) -> list[str]:
    """Relative links (inline, images and reference definitions) whose file or heading does not exist."""
    prose = _without_code(text)
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", prose, flags=re.M)
    problems = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{path.name}: {target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved.read_text()):
            problems.append(f"{path.name}: {target}: no heading #{fragment} in {resolved.name}")
    return problems


# ------------------------------------------------------------------------------------------------------ tests
def _all_commands() -> list[Command]:
    return [c for doc in DOCS for c in doc_commands(doc.read_text(), str(doc.relative_to(ROOT)))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_exist_with_their_flags(doc: Path) -> None:
    problems = [
        f"{c.source}: {p}"
        for c in doc_commands(doc.read_text(), str(doc.relative_to(ROOT)))
        for p in command_problems(c)
    ]
    assert problems == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files_and_headings(doc: Path) -> None:
    assert link_problems(doc, doc.read_text()) == []


def test_the_docs_hold_commands_of_every_entry_point() -> None:
    """The extraction finds what it should: every entry point and a benchmark script appear in code blocks."""
    commands = _all_commands()
    assert len(commands) > 50
    for start in ENTRY_POINTS:
        assert any(c.words[: len(start)] == start for c in commands), start
    assert any(c.words[1].startswith("benchmarks/") for c in commands if len(c.words) > 1)


def test_readme_install_block_is_what_ci_runs() -> None:
    """``.ci/run`` runs the README's install and test commands: they stand verbatim in one of its bash blocks."""
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith(("pip ", "python "))
    ]
    readme = [line for _, line in shell_lines((ROOT / "README.md").read_text())]
    assert ci == ["pip install -r requirements.txt", "python -m pytest"]
    assert all(line in readme for line in ci)
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """The checker on planted docs: a flag, subcommand, config key or module that does not exist is reported, and
    the same commands spelled right pass."""
    planted = """
```bash
talkingface lipsync --video a.mp4 --no-such-flag          # comment
talkingface frobnicate --x
talkingface train --base configs/latent-diffusion/talking.yaml -t --gpus 0,1, data.no_such_key=4
talkingface preprocess --no-progress
talkingface lipsync --video a.mp4 data.batch_size=4
D="model.no_such=1 data.batch_size=2"
python trainer/DiffTalkTrainer.py -t $D
python -m talkingface.nowhere --x
python benchmarks/learnability.py --set model.nope=1 --smoke
python benchmarks/nowhere.py
```
```console
$ python demo.py --stream --chunk_size 40
output line --not-checked
```
```python
talkingface lipsync --not-checked-either
```
"""
    commands = list(doc_commands(planted, "planted.md"))
    assert [c.source for c in commands] == [f"planted.md:{n}" for n in (3, 4, 5, 6, 7, 9, 10, 11, 12, 15)]
    assert [command_problems(c) for c in commands] == [
        ["--no-such-flag: not an option of `talkingface lipsync`"],
        ["frobnicate: not a talkingface subcommand"],
        ["data.no_such_key: not a config key (data has no 'no_such_key')"],
        [
            "--no-progress: not an option of `talkingface preprocess`",
            "`talkingface preprocess` needs a subcommand (one of run, validate, finalize)",
        ],
        ["data.batch_size=4: a config override, but `talkingface lipsync` takes none"],
        ["model.no_such: not a config key (model has no 'no_such')"],
        ["python -m talkingface.nowhere: not in ENTRY_POINTS of test_docs_commands.py (add where it leads)"],
        ["model.nope: not a config key (model has no 'nope')"],
        ["benchmarks/nowhere.py: no such file"],
        ["--chunk_size: not an option of `talkingface lipsync`"],
    ]
    fixed = """
```bash
talkingface lipsync --video a.mp4 --out b.mp4 --steps 8     # comment
talkingface train --base configs/latent-diffusion/talking.yaml -t --gpus 0,1, data.batch_size=4
talkingface preprocess run videos/ --out data/x --workers 2
srun python trainer/DiffTalkTrainer.py -t model.base_learning_rate=5e-5 --scale-lr false
python -m talkingface.training.latent_cache build data/x --out data/x/latents model.first_stage.ch=32
python benchmarks/learnability.py --set model.scale_lr=true --smoke --variants ''
```
"""
    assert [command_problems(c) for c in doc_commands(fixed, "fixed.md")] == [[]] * 6

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Some `code`: here\n")
    doc = tmp_path / "README.md"
    text = (
        "[ok](docs/page.md) [ok](docs/page.md#some-code-here) ![img](docs/missing.png) [gone](docs/gone.md)\n"
        "[bad anchor](docs/page.md#nowhere) [web](https://example.org/x) `[not](a/link.md)`\n[ref]: docs/nope.md\n"
    )
    assert link_problems(doc, text) == [
        "README.md: docs/missing.png: no such file",
        "README.md: docs/gone.md: no such file",
        "README.md: docs/page.md#nowhere: no heading #nowhere in page.md",
        "README.md: docs/nope.md: no such file",
    ]
