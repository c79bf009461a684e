"""The command-line contract: one `talkingface` command, kebab-case flags with snake-case aliases, one `error:` line
with exit status 2 for bad input, config overrides before or after --base."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from command_support import only_error_line
from train_support import ROOT, TINY_CONFIG, tiny_overrides

from talkingface.cli_support import split_overrides
from talkingface.commands import main as cli
from talkingface.commands.train import main as train_main
from talkingface.commands.train import parse_args


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_console_script_is_declared() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '[project.scripts]\ntalkingface = "talkingface.commands.main:main"\n' in pyproject
    assert "-e ." in (ROOT / "requirements.txt").read_text().splitlines()


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["--help"], capsys)
    assert rc == 0
    for name in ("preprocess", "train", "lipsync", "evaluate", "synthetic", "cache", "export"):
        assert name in out and name in cli.COMMANDS
    rc, _, err = run([], capsys)
    assert rc == 2 and err.startswith("error: COMMAND:")


@pytest.mark.parametrize("argv", [[name, "--help"] for name in cli.COMMANDS] + [["preprocess", "run", "--help"]])
def test_subcommand_help_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(argv, capsys)
    assert rc == 0
    assert out.startswith(f"usage: talkingface {' '.join(argv[:-1])}")


SPELLINGS = {  # every program spelling -> the subcommand it hands over to ("": the dispatcher itself)
    "talkingface": "",
    "talkingface.commands": "",
    "talkingface.preprocess": "preprocess",
    "talkingface.evaluate": "evaluate",
    "talkingface.synthetic": "synthetic",
    "talkingface.training.latent_cache": "cache",
    "talkingface.training.export": "export",
}


@pytest.mark.parametrize("module", SPELLINGS)
def test_module_spellings_hand_over_to_the_command(module: str) -> None:
    """``python -m talkingface.commands`` runs the command in-process (the source tree on ``PYTHONPATH`` is enough);
    ``python -m talkingface`` and the older module spellings become the installed ``talkingface`` program. Each
    usage line names the subcommand."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    shown = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: talkingface {SPELLINGS[module]}".rstrip())


def test_python_m_talkingface_gives_the_one_error_line() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "talkingface", "lipsync", "--bogus-flag"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: --bogus-flag: unrecognized argument")


BAD_INPUT = {
    "unknown": (["nonsense"], "error: nonsense: unknown command"),
    "preprocess": (["preprocess", "validate", "/no/such/dataset"], "error: /no/such/dataset: dataset root not found"),
    "preprocess-flag": (["preprocess", "run", "in.mp4"], "error: --out: required"),
    "train": (["train", "--gpus", "a,b"], "error: --gpus: 'a,b': GPU indices must be integers"),
    "train-flag": (["train", "--bogus"], "error: --bogus: unrecognized argument"),
    "train-config": (["train", "--base", "/no/such.yaml"], "error: /no/such.yaml: config file not found"),
    "lipsync": (["lipsync", "--video", "/no/v.mp4", "--out", "/tmp/x-talkingface-test.mp4"], "error: /no/v.mp4:"),
    "lipsync-flag": (["lipsync", "--video", "v.mp4"], "error: --out: required with --video"),
    "evaluate": (["evaluate", "--pred", "/no/pred.mp4", "--gt", "/no/gt.mp4"], "error: /no/pred.mp4:"),
    "synthetic": (["synthetic", "--out", "x", "--identities", "0"], "error: --identities: must be positive, got 0"),
    "cache": (["cache", "build", "/no/data", "--config", "/no/c.yaml"], "error: /no/c.yaml: config file not found"),
    "export": (["export", "/no/last.ckpt", "out.safetensors"], "error: /no/last.ckpt: checkpoint not found"),
    "int-flag": (["synthetic", "--out", "x", "--seconds", "abc"], "error: --seconds: invalid float value"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_error_line_and_exit_2(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv, expected = BAD_INPUT[case]
    rc, _, err = run(argv, capsys)
    assert rc == 2, err
    assert only_error_line(err).startswith(expected), err


def test_validate_that_finds_problems_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    rc, out, _ = run(["preprocess", "validate", str(tmp_path / "empty"), "--no-images"], capsys)
    assert rc == 1 and "problem" in out


def test_snake_case_aliases_still_accepted() -> None:
    kebab, _ = parse_args(["--num-nodes", "2", "--run-dir", "r", "--scale-lr", "false"])
    snake, _ = parse_args(["--num_nodes", "2", "--run_dir", "r", "--scale_lr", "false"])
    assert vars(kebab) == vars(snake)
    assert (snake.num_nodes, snake.run_dir, snake.scale_lr) == (2, "r", False)


def test_overrides_before_and_after_base() -> None:
    argv = ["data.batch_size=4", "--base", "a.yaml", "train.max_steps=3", "b.yaml", "-t", "model.scale_lr=false"]
    args, overrides = parse_args(argv)
    assert args.base == ["a.yaml", "b.yaml"] and args.train is True
    assert overrides == ["data.batch_size=4", "train.max_steps=3", "model.scale_lr=false"]
    assert split_overrides(["-t", "x=1", "--gpus", "0,"]) == (["x=1"], ["-t", "--gpus", "0,"])


def test_trainer_check_with_overrides_after_base(tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--base X.yaml key=value`` used to fail with "config file not found: key=value"."""
    assert train_main(["--base", str(TINY_CONFIG), *tiny_overrides(tiny_dataset)]) == 0
    assert train_main([*tiny_overrides(tiny_dataset), "--base", str(TINY_CONFIG)]) == 0
    assert train_main(["--base", str(TINY_CONFIG), *tiny_overrides(tiny_dataset), "data.batchsize=2"]) == 2
    err = capsys.readouterr().err
    assert "config file not found" not in err and err.count("error:") == 1 and "batchsize" in err


def test_options_file_and_its_old_flag(tmp_path: Path) -> None:
    opts = tmp_path / "opts.yaml"
    opts.write_text("gpus: '0,'\nnum-nodes: 3\nlogdir: runs\n")
    for flag in ("--options", "-c", "--config"):
        args, _ = parse_args([flag, str(opts), "--logdir", "mine"])
        assert (args.gpus, args.num_nodes, args.logdir) == ("0,", 3, "mine")
    opts.write_text("bogus: 1\n")
    with pytest.raises(SystemExit):
        parse_args(["--options", str(opts)])
