"""The subcommands' help: plain text, every default shown, one meaning per flag name, ``--version``, light parsers
(no torch before parsing), defaults that agree with the library's, and errors in the contract's form."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from command_support import parsers
from train_support import ROOT, TINY_CONFIG

import talkingface
from talkingface.commands import defaults
from talkingface.commands import main as cli

#: Every parser a subcommand has: its own and its sub-subcommands' (``preprocess run``, ``cache build``).
HELP_ARGVS = [[name] for name in cli.COMMANDS] + [["preprocess", sub] for sub in ("run", "validate", "finalize")]
HELP_ARGVS += [["cache", "build"]]


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", HELP_ARGVS, ids=" ".join)
def test_help_is_plain_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(argv, capsys)
    assert text.startswith(f"usage: talkingface {' '.join(argv)}")
    for markup in ("``", ":mod:", ":class:", ":func:", "README", ".py"):  # no reST, no pointers into the sources
        assert markup not in text, (markup, text)


def test_every_option_with_a_default_shows_it() -> None:
    missing = []
    for name, parser in parsers().items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if action.default is None or action.default is False or action.default in ("", [], argparse.SUPPRESS):
                continue  # nothing to show (a 0 default is shown)
            shown = formatter._get_help_string(action) % {"default": action.default}
            if "default" not in shown:
                missing.append(f"{name} {action.option_strings[-1]}")
    assert not missing, missing
    assert parsers()["preprocess run"].format_help().count("default: ") >= 10  # the formatter adds them
    assert "seed of the per-video split decision (0 to 4294967295; default: 0)" in " ".join(
        parsers()["preprocess run"].format_help().split()
    )


def test_train_t_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(help_text(["train"], capsys).split())
    assert "-t [BOOL], --train [BOOL] train (-t, or -t true); without it (default) only check the config" in text


def test_one_meaning_per_flag_name(capsys: pytest.CaptureFixture[str]) -> None:
    """``--config`` is a DiffTalk config YAML wherever it is shown; the trainer's options file is ``--options``
    (``-c`` / ``--config`` stay accepted, unshown); the VQ checkpoint is ``--first-stage-ckpt`` everywhere."""
    texts = {" ".join(argv): help_text(argv, capsys) for argv in HELP_ARGVS}
    for name in ("lipsync", "cache build"):
        assert "--config CONFIG.yaml" in texts[name] and "DiffTalk config YAML" in texts[name]
        assert "--first-stage-ckpt" in texts[name]
    assert (
        "--config" not in texts["train"] and "-c " not in texts["train"] and "--options OPTIONS.yaml" in texts["train"]
    )
    assert "--first-stage " not in texts["cache build"] and "--first-stage FIRST" not in texts["cache build"]
    for old in ("--num_nodes", "--run_dir", "--overwrite_run", "--scale_lr"):
        assert old not in texts["train"]
    shown = {
        name: {s for a in p._actions for s in a.option_strings if a.help != argparse.SUPPRESS}
        for name, p in parsers().items()
    }
    assert [name for name, flags in shown.items() if "--config" in flags] == ["lipsync", "cache build"]


def test_the_old_spellings_still_work(tmp_path: Path) -> None:
    from talkingface.commands.cache import build_parser as cache_parser
    from talkingface.commands.train import parse_args

    new = cache_parser().parse_args(["build", "data", "--first-stage-ckpt", "vq.ckpt"])
    old = cache_parser().parse_args(["build", "data", "--first-stage", "vq.ckpt"])
    assert vars(new) == vars(old) and new.first_stage_ckpt == "vq.ckpt"
    assert cache_parser().parse_args(["build", "data"]).first_stage_ckpt is None
    opts = tmp_path / "opts.yaml"
    opts.write_text("logdir: runs\n")
    for flag in ("--options", "-c", "--config"):
        assert parse_args([flag, str(opts)])[0].logdir == "runs"
    assert parse_args([])[0].options is None


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"talkingface {talkingface.__version__}\n"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--version"])
    assert capsys.readouterr().out == f"talkingface {talkingface.__version__}\n"
    pyproject = (ROOT / "pyproject.toml").read_text()  # the version is written once, in talkingface/__init__.py
    assert '\ndynamic = ["version"]' in pyproject and '\nversion = { attr = "talkingface.__version__" }' in pyproject
    assert '\nversion = "' not in pyproject


def test_parsers_import_no_torch() -> None:
    """Building every subcommand's parser and its help (a fresh interpreter) imports neither torch nor Lightning,
    nor OpenCV, PyAV or FastAPI: ``talkingface COMMAND --help`` answers at once."""
    code = (
        "import importlib, sys\n"
        "from talkingface.commands import main as cli\n"
        "for command in cli.COMMANDS.values():\n"
        "    importlib.import_module(command.module).build_parser().format_help()\n"
        "heavy = ('torch', 'pytorch_lightning', 'lightning', 'cv2', 'av', 'fastapi')\n"
        "print(sorted(cli.COMMANDS), [m for m in heavy if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("] ")[1].strip() == "[]", proc.stdout
    assert "'train'" in proc.stdout and "'lipsync'" in proc.stdout


def test_the_parsers_defaults_are_the_librarys() -> None:
    from talkingface.app.server import DEFAULT_MAX_UPLOAD_MB
    from talkingface.evaluate import harness
    from talkingface.inference import LipSyncOptions, sampling, writer
    from talkingface.model.image_driven_talkingface.DiffTalk import loader, samplers
    from talkingface.synthetic import demo, generate

    assert LipSyncOptions(**defaults.LIPSYNC) == LipSyncOptions()
    assert (defaults.SAMPLERS, defaults.PRECISIONS) == (samplers.SAMPLERS, sampling.PRECISIONS)
    assert (defaults.DEFAULT_SAMPLER, defaults.DEFAULT_STEPS) == (sampling.DEFAULT_SAMPLER, sampling.DEFAULT_STEPS)
    assert defaults.X264_PRESETS == writer.X264_PRESETS
    assert (defaults.DEFAULT_CKPT, defaults.DEFAULT_FIRST_STAGE) == (loader.DEFAULT_CKPT, loader.DEFAULT_FIRST_STAGE)
    assert (defaults.ALL_METRICS, defaults.CHEAP_METRICS, defaults.CROPS) == (
        harness.ALL_METRICS,
        harness.CHEAP_METRICS,
        harness.CROPS,
    )
    assert (defaults.SYNTHETIC_FRAME_SIZE, defaults.SYNTHETIC_CROP_SIZE) == (
        generate.DEFAULT_FRAME_SIZE,
        generate.DEFAULT_CROP_SIZE,
    )
    assert (defaults.MAX_UPLOAD_MB, defaults.SAMPLE_SECONDS) == (DEFAULT_MAX_UPLOAD_MB, demo.DEFAULT_SECONDS)
    # and the lipsync parser passes them on unchanged: parsed defaults -> LipSyncOptions() field by field
    args = parsers()["lipsync"].parse_args([])
    assert {key: getattr(args, key) for key in defaults.LIPSYNC} == defaults.LIPSYNC


def test_errors_name_the_file_or_flag_and_the_next_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from talkingface.model.image_driven_talkingface.DiffTalk import CheckpointError, get_difftalk_inference

    with pytest.raises(CheckpointError) as caught:
        get_difftalk_inference(ckpt=tmp_path / "none.ckpt")
    line = caught.value.cli_line()
    assert line.startswith(f"error: {tmp_path / 'none.ckpt'}: DiffTalk checkpoint not found; put a trained")
    assert "--ckpt PATH" in line
    assert cli.main(["export", str(tmp_path / "last.ckpt"), str(tmp_path / "out.safetensors")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path / 'last.ckpt'}: checkpoint not found; give the path of a trainer .ckpt\n"
    )
    argv = ["cache", "build", str(tmp_path / "data"), "--config", str(TINY_CONFIG), "--device", "cpu"]
    assert cli.main([*argv, "model.first_stage.ckpt_path=null"]) == 2
    err = capsys.readouterr().err
    hint = "pass --first-stage-ckpt models/model.ckpt (or set model.first_stage.ckpt_path)"
    assert err == f"error: --first-stage-ckpt: no first-stage checkpoint; {hint}\n"
    assert not (tmp_path / "data").exists()
