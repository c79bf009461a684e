"""Every numeric flag of every subcommand and every numeric config field has a declared range, checked before any
work: nan, inf, -inf and a huge value are refused with one line naming the flag or key; 0 and -1 are refused the
same way unless the declared range holds them (``--workers 0``, ``train.max_steps=-1``). Parsing and config checks
only: no model, no media."""

from __future__ import annotations

import argparse
import math
import types
from pathlib import Path
from typing import get_args

import pytest
from command_support import parsers

from talkingface.cli_support import ArgumentParser, NumberType, number
from talkingface.commands import main as cli
from talkingface.model.image_driven_talkingface.DiffTalk.config import (
    MODEL_RANGES,
    ConfigError,
    DiffTalkConfig,
    load_config,
)
from talkingface.ranges import Range, numeric_fields, range_problems
from talkingface.training.config import TRAIN_PRECISIONS, TRAINING_RANGES, TrainingConfig, load_training_config

#: Tried on every numeric flag and field; the first four are never legal.
ALWAYS_BAD = ("nan", "inf", "-inf", "1e12")
MAYBE_BAD = ("0", "-1")


PARSERS = parsers()


def looks_numeric(action: argparse.Action) -> bool:
    """A flag that takes a number: a numeric ``type``, or a number as the default of a flag that takes a value."""
    if action.type in (int, float) or isinstance(action.type, NumberType):
        return True
    takes_value = isinstance(action, argparse._StoreAction) and action.nargs != 0
    default = action.default
    return takes_value and action.type is None and isinstance(default, (int, float)) and not isinstance(default, bool)


def numeric_flags() -> list[tuple[str, str]]:
    """``(parser name, flag)`` of every numeric flag (hidden aliases included)."""
    return [
        (name, action.option_strings[-1])
        for name, parser in PARSERS.items()
        for action in parser._actions
        if action.option_strings and looks_numeric(action)
    ]


def action_of(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def minimal_argv(parser: argparse.ArgumentParser) -> list[str]:
    """The required positionals and options, each given a placeholder (parsing never opens them)."""
    argv: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            raise AssertionError(f"{parser.prog}: sweep its subcommands' parsers instead")
        if not action.option_strings:
            argv.append("x")
        elif action.required:
            argv += [action.option_strings[-1], "x"]
    return argv


def test_the_sweep_finds_the_flags() -> None:
    found = set(numeric_flags())
    expected = {
        ("lipsync", "--eta"),
        ("lipsync", "--crop-size"),
        ("lipsync", "--feather"),
        ("lipsync", "--max-missing"),
        ("preprocess run", "--size"),
        ("preprocess run", "--crop-scale"),
        ("preprocess run", "--test-ratio"),
        ("preprocess run", "--jpeg-quality"),
        ("preprocess run", "--workers"),
        ("preprocess finalize", "--test-ratio"),
        ("synthetic", "--seconds"),
        ("app", "--port"),
        ("app", "--max-upload-mb"),
        ("app", "--keep-minutes"),
        ("app", "--sample-seconds"),
        ("train", "--num_nodes"),  # the hidden alias too
    }
    assert expected <= found, expected - found
    assert len(found) >= 45


@pytest.mark.parametrize("name, flag", numeric_flags(), ids=[" ".join(f) for f in numeric_flags()])
def test_every_numeric_flag_declares_a_bounded_range(name: str, flag: str) -> None:
    action = action_of(PARSERS[name], flag)
    assert isinstance(action.type, NumberType), f"{name} {flag}: use type=number(...) from cli_support"
    assert action.type.range.bounded, f"{name} {flag}: {action.type.range.describe()} has no finite upper bound"


def test_looks_numeric_catches_an_unchecked_flag() -> None:
    p = ArgumentParser(prog="x")
    bare = p.add_argument("--a", type=int)
    untyped = p.add_argument("--b", default=3)
    checked = p.add_argument("--c", type=number(int, min=0, max=9))
    switch = p.add_argument("--d", action="store_true")
    text = p.add_argument("--e", default="3")
    assert [looks_numeric(a) for a in (bare, untyped, checked, switch, text)] == [True, True, True, False, False]


@pytest.mark.parametrize("name", [n for n, p in PARSERS.items() if not p._subparsers], ids=str)
def test_the_defaults_are_in_range(name: str) -> None:
    """Parsing only the required arguments passes every default through its range."""
    parser = PARSERS[name]
    args = parser.parse_args(minimal_argv(parser))
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if isinstance(action.type, NumberType) and value is not None:
            assert value in action.type.range, (name, action.dest, value)


def bad_values(kind: type) -> list[str]:
    return [*ALWAYS_BAD[:3], "1000000000000" if kind is int else "1e12", *MAYBE_BAD]


def sweep_one(parser: argparse.ArgumentParser, flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``"refused"`` (exit 2, one line ``error: <flag>: ...``) or ``"accepted"`` (and then in range)."""
    action = action_of(parser, flag)
    try:
        args = parser.parse_args([*minimal_argv(parser), f"{flag}={value}"])
    except SystemExit as stop:
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert stop.code == 2, (flag, value, err)
        assert len(lines) == 1 and lines[0].startswith(f"error: {flag}: "), (flag, value, err)
        return "refused"
    parsed = getattr(args, action.dest)
    assert isinstance(parsed, (int, float)) and math.isfinite(parsed), (flag, value, parsed)
    assert parsed in action.type.range, (flag, value, parsed)
    return "accepted"


def test_the_flag_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes: dict[tuple[str, str, str], str] = {}
    for name, flag in numeric_flags():
        parser = PARSERS[name]
        action = action_of(parser, flag)
        assert isinstance(action.type, NumberType), f"{name} {flag}: no declared range"
        for value in bad_values(action.type.range.kind):
            outcome = sweep_one(parser, flag, value, capsys)
            outcomes[name, flag, value] = outcome
            if value in ALWAYS_BAD or value == "1000000000000":
                assert outcome == "refused", (name, flag, value)
    # 0 and -1: refused unless declared legal
    assert outcomes["preprocess run", "--workers", "0"] == "accepted"
    assert outcomes["app", "--port", "0"] == "accepted"
    assert outcomes["lipsync", "--eta", "0"] == "accepted"
    assert outcomes["preprocess run", "--jpeg-quality", "0"] == "refused"
    assert outcomes["preprocess run", "--size", "0"] == "refused"
    assert outcomes["lipsync", "--feather", "-1"] == "refused"
    assert outcomes["app", "--max-upload-mb", "0"] == "refused"


@pytest.mark.parametrize(
    "argv, line",
    [
        (["lipsync", "--eta", "nan"], "error: --eta: must be a finite number, got nan"),
        (["lipsync", "--crop-size", "20000"], "error: --crop-size: must be at most 4096, got 20000"),
        (["lipsync", "--feather", "0.6"], "error: --feather: must be at most 0.5, got 0.6"),
        (["lipsync", "--max-missing", "1.5"], "error: --max-missing: must be at most 1, got 1.5"),
        (["preprocess", "run", "v.mp4", "--out", "d", "--size", "0"], "error: --size: must be at least 32, got 0"),
        (["preprocess", "run", "v.mp4", "--out", "d", "--test-ratio", "1"], "error: --test-ratio: must be less than 1"),
        (["preprocess", "run", "v.mp4", "--out", "d", "--jpeg-quality", "101"], "error: --jpeg-quality: must be at"),
        (["preprocess", "run", "v.mp4", "--out", "d", "--workers", "-1"], "error: --workers: must be at least 0"),
        (["synthetic", "--out", "x", "--seconds", "0"], "error: --seconds: must be positive, got 0"),
        (["app", "--port", "65536"], "error: --port: must be at most 65535, got 65536"),
        (["app", "--keep-minutes", "inf"], "error: --keep-minutes: must be a finite number, got inf"),
        (["train", "--num_nodes", "0"], "error: --num_nodes: must be positive, got 0"),
        (["lipsync", "--steps", "2.5"], "error: --steps: invalid int value: '2.5'"),
    ],
)
def test_refusals_through_the_command(argv: list[str], line: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Through ``talkingface``: exit 2 and the contract's one line, before any file is looked at."""
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith(line), err


def test_values_that_skip_the_type_are_checked_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse converts only string defaults; a number from the trainer's options file is range-checked too."""
    options = tmp_path / "opts.yaml"
    options.write_text("devices: 0\n")
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--options", str(options)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --devices: must be positive, got 0"
    p = ArgumentParser(prog="x")
    p.add_argument("--n", type=number(int, min=1, max=9), default=12)
    with pytest.raises(SystemExit):
        p.parse_args([])
    assert capsys.readouterr().err.strip() == "error: --n: must be at most 9, got 12"


def test_help_shows_the_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["preprocess", "run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "quality of the saved frames (1 to 100; default: 95)" in text
    assert "(at least 0, less than 1; default: " in text  # --test-ratio


# ------------------------------------------------------------------------------------------------ the config schema
def test_every_numeric_config_field_declares_a_bounded_range() -> None:
    fields = list(numeric_fields(TrainingConfig))
    declared = {**MODEL_RANGES, **TRAINING_RANGES}
    assert {"data.batch_size", "model.base_learning_rate", "model.unet.channel_mult", "train.max_epochs"} <= set(fields)
    assert sorted(set(fields) - set(declared)) == [], "numeric fields without a range"
    assert sorted(set(declared) - set(fields)) == [], "ranges of no numeric field"
    assert set(numeric_fields(DiffTalkConfig)) == set(MODEL_RANGES)
    assert not [key for key, rng in declared.items() if not rng.bounded]


def config_override(key: str, value: str) -> str:
    """``key=value``; a list field gets a one-item list."""
    default = DiffTalkConfig() if key.startswith("model.") else TrainingConfig()
    node: object = default
    for name in key.split("."):
        node = getattr(node, name)
    return f"{key}=[{value}]" if isinstance(node, list) else f"{key}={value}"


def load_with(key: str, override: str) -> None:
    if key.startswith("model."):
        load_config(None, [override])  # the model-level schema checks its section (inference reads it so)
    else:
        load_training_config(None, [override])


@pytest.mark.slow
def test_the_config_sweep() -> None:
    outcomes: dict[tuple[str, str], str] = {}
    for key, rng in {**MODEL_RANGES, **TRAINING_RANGES}.items():
        for value in bad_values(rng.kind):
            override = config_override(key, value)
            try:
                load_with(key, override)
            except ConfigError as err:
                line = err.cli_line()
                assert "\n" not in line and key in line, (override, line)
                outcomes[key, value] = "refused"
                continue
            outcomes[key, value] = "accepted"
            assert value in MAYBE_BAD and float(value) in rng, override
    assert outcomes["data.num_workers", "0"] == "accepted"
    assert outcomes["train.max_steps", "-1"] == "accepted"
    assert outcomes["train.gradient_clip_val", "0"] == "accepted"
    for refused in ("data.batch_size", "model.diffusion.timesteps", "model.base_learning_rate"):
        assert outcomes[refused, "0"] == "refused"
    assert outcomes["data.num_workers", "-1"] == outcomes["train.gradient_clip_val", "-1"] == "refused"


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_size=0", "data.batch_size must be positive, got 0"),
        ("model.base_learning_rate=nan", "model.base_learning_rate must be a finite number, got nan"),
        ("data.num_workers=-1", "data.num_workers must be at least 0, got -1"),
        ("model.diffusion.timesteps=0", "model.diffusion.timesteps must be at least 2, got 0"),
        ("train.gradient_clip_val=-1", "train.gradient_clip_val must be at least 0, got -1"),
        ("model.unet.channel_mult=[1,0]", "model.unet.channel_mult[1] must be positive, got 0"),
        ("train.max_steps=-5", "train.max_steps must be -1 or positive, got -5"),
        ("train.keep_last_checkpoints=0", "train.keep_last_checkpoints must be null or positive, got 0"),
        ("train.precision=fp8", "train.precision must be one of 32-true, 32, 16-mixed"),
        ("train.limit_val_batches=2.5", "train.limit_val_batches must be a fraction below 1 or a whole number"),
    ],
)
def test_config_refusals_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_training_config(None, [override])
    assert message in err.value.cli_line()


def test_legal_edge_values_load() -> None:
    cfg = load_training_config(
        None, ["train.precision=bf16-mixed", "train.max_epochs=null", "train.max_steps=-1", "data.num_workers=0"]
    )
    assert (cfg.train.precision, cfg.train.max_epochs, cfg.data.num_workers) == ("bf16-mixed", None, 0)
    assert load_training_config(None, ["train.precision=16"]).train.precision == "16"


def test_train_precisions_are_lightnings() -> None:
    from lightning_fabric.plugins.precision.precision import (
        _PRECISION_INPUT_INT,
        _PRECISION_INPUT_STR,
        _PRECISION_INPUT_STR_ALIAS,
    )

    lightning = {
        str(v) for t in (_PRECISION_INPUT_STR, _PRECISION_INPUT_INT, _PRECISION_INPUT_STR_ALIAS) for v in get_args(t)
    }
    assert set(TRAIN_PRECISIONS) == lightning


# ------------------------------------------------------------------------------------------------ Range itself
def test_range_words_and_checks() -> None:
    r = Range(float, above=0, below=1)
    assert [r.problem(v) for v in (0.5, 0, 1, math.nan, True)] == [
        None,
        "must be positive, got 0",
        "must be less than 1, got 1",
        "must be a finite number, got nan",
        "must be a number, got True",
    ]
    assert r.describe() == "positive, less than 1"
    steps = Range(int, min=1, max=10, also=(-1,))
    assert steps.describe() == "-1, or 1 to 10"
    assert [steps.problem(v) for v in (-1, 0, 11, 2.5)] == [
        None,
        "must be -1 or positive, got 0",
        "must be -1 or at most 10, got 11",
        "must be a whole number, got 2.5",
    ]
    with pytest.raises(ValueError, match="invalid int value: 'x'"):
        steps.parse("x")
    with pytest.raises(TypeError):
        Range(int, min=0, above=0)
    assert not Range(float, min=0).bounded and Range(float, min=0, max=1).bounded


def test_range_problems_walks_lists_and_nulls() -> None:
    cfg = TrainingConfig()
    cfg.model.unet.channel_mult = [1, 0, 2]
    cfg.train.keep_last_checkpoints = None
    cfg.data.batch_size = 10**12
    problems = range_problems(cfg, {**MODEL_RANGES, **TRAINING_RANGES})
    assert problems == [
        "model.unet.channel_mult[1] must be positive, got 0",
        "data.batch_size must be at most 4096, got 1000000000000",
    ]


# ------------------------------------------------------------------------------------------------ LipSyncStream
def fake_pipeline() -> types.SimpleNamespace:
    """Just what the constructor reads: a mel backend, the batch size, and the generator it starts."""
    from talkingface.media.features import LogMelBackend

    options = types.SimpleNamespace(batch_size=1, decode_window=False)
    return types.SimpleNamespace(backend=LogMelBackend(), options=options, start_generation=lambda *a, **k: None)


@pytest.mark.parametrize("rate", [math.nan, math.inf, 0, -16_000, 4_000, 1e12, 44_100.5, "16000"])
def test_stream_refuses_absurd_sample_rates(rate: object) -> None:
    from talkingface.inference.errors import InferenceError
    from talkingface.inference.stream import LipSyncStream

    with pytest.raises(InferenceError, match=r"sample_rate: must be .*\(a rate in Hz, 8 kHz to 192 kHz\)"):
        LipSyncStream(fake_pipeline(), None, sample_rate=rate)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100.0, 192_000])
def test_stream_takes_rates_from_8_to_192_khz(rate: float) -> None:
    from talkingface.inference.stream import LipSyncStream

    assert LipSyncStream(fake_pipeline(), None, sample_rate=rate).sample_rate == rate  # type: ignore[arg-type]
