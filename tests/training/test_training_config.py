"""The training config: ``data:``, ``train:``, ``distill:`` on top of the model-level config, loaded by the same loader
with the training schema; unknown keys, wrong types and cross-field problems are errors naming the file or override."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from train_support import ROOT, TINY_CONFIG

from talkingface.demo_assets import demo_model_paths
from talkingface.model.image_driven_talkingface.DiffTalk import ConfigError, DiffTalkConfig, load_config
from talkingface.model.image_driven_talkingface.DiffTalk.config import (
    CONFIG_CKPT_KEY,
    TRAINING_SECTIONS,
    config_to_dict,
    save_config,
    with_audio_feature_kind,
)
from talkingface.training.config import (
    DataConfig,
    DistillConfig,
    TrainConfig,
    TrainingConfig,
    load_training_config,
)

CONFIGS = ROOT / "configs" / "latent-diffusion"


def test_the_training_schema_is_the_model_schema_plus_the_training_sections() -> None:
    assert issubclass(TrainingConfig, DiffTalkConfig)
    assert [f.name for f in fields(TrainingConfig)] == ["model", *TRAINING_SECTIONS]
    cfg = TrainingConfig()
    assert (type(cfg.data), type(cfg.train), type(cfg.distill)) == (DataConfig, TrainConfig, DistillConfig)


@pytest.mark.parametrize(
    "name", ["talking.yaml", "talking-tiny.yaml", "synthetic.yaml", "synthetic-f8.yaml", "talking-512.yaml"]
)
def test_every_value_of_every_section_reaches_the_training_config(name: str) -> None:
    cfg = load_training_config(CONFIGS / name)
    raw = yaml.safe_load((CONFIGS / name).read_text())
    assert set(raw) <= {"model", *TRAINING_SECTIONS}

    def walk(node: object, section: object, where: str) -> int:
        if not isinstance(node, dict):
            assert section == node, f"{name}: {where} is {section!r} in the loaded config, {node!r} in the file"
            return 1
        return sum(walk(v, getattr(section, k), f"{where}.{k}") for k, v in node.items())

    assert all(walk(raw[key], getattr(cfg, key), key) > 0 for key in raw)
    assert load_config(CONFIGS / name).model == cfg.model  # the model-level loader reads the same model


def test_the_512_config_is_the_paper_config_but_for_the_first_stage_and_the_image_side() -> None:
    """talking-512.yaml changes only the first stage (vq-f8), the UNet's latent channels and ``data.image_size``:
    training, distillation, the UNet's width and the conditioning stay the paper's."""
    paper = config_to_dict(load_training_config(CONFIGS / "talking.yaml"))
    hi = config_to_dict(load_training_config(CONFIGS / "talking-512.yaml"))

    def leaves(node: dict, where: str = "") -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in node.items():
            out.update(leaves(v, f"{where}{k}.") if isinstance(v, dict) else {f"{where}{k}": v})
        return out

    a, b = leaves(paper), leaves(hi)
    changed = {k for k in a if a[k] != b[k]}
    first_stage = {"ckpt_path", "embed_dim", "n_embed", "z_channels", "resolution", "ch_mult", "attn_resolutions"}
    assert changed == {f"model.first_stage.{k}" for k in first_stage} | {
        "model.unet.in_channels",
        "model.unet.out_channels",
        "data.image_size",
    }
    assert (b["data.image_size"], b["model.first_stage.resolution"], b["model.unet.image_size"]) == (512, 512, 64)


@pytest.mark.parametrize("section", TRAINING_SECTIONS)
def test_unknown_keys_in_the_training_sections_are_errors(tmp_path: Path, section: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"{section}:\n  bogus_key: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml.*bogus_key"):
        load_training_config(bad)
    with pytest.raises(ConfigError, match=f"override {section}.bogus_key=1.*bogus_key"):
        load_training_config(TINY_CONFIG, [f"{section}.bogus_key=1"])
    with pytest.raises(ConfigError, match="bogus_key"):
        load_training_config({section: {"bogus_key": 1}})
    load_config(bad)  # the model-level loader leaves the section to training


def test_unknown_model_and_top_level_keys_stay_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_chanels"):
        load_training_config(None, ["model.unet.model_chanels=64"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("evaluate:\n  fid: true\n")
    with pytest.raises(ConfigError, match="bad.yaml.*evaluate"):
        load_training_config(bad)


def test_wrong_types_are_errors() -> None:
    for override, key in [
        ("data.batch_size=many", "batch_size"),
        ("train.max_steps=lots", "max_steps"),
        ("distill.teacher_steps=many", "teacher_steps"),
        ("data=5", "data"),
    ]:
        with pytest.raises(ConfigError, match=key):
            load_training_config(None, [override])


def test_train_compile_modes() -> None:
    """``train.compile``: false, true (the whole UNet, as before "blocks" existed), blocks, full; nothing else."""
    modes = [
        load_training_config(None, [f"train.compile={v}"]).train.compile for v in ("false", "true", "blocks", "full")
    ]
    assert modes == [False, True, "blocks", "full"]
    with pytest.raises(ConfigError, match="train.compile must be false, blocks or full"):
        load_training_config(None, ["train.compile=fast"])
    with pytest.raises(ConfigError, match="compile"):
        load_training_config(None, ["train.compile=2"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["distill.method=rounds"], "distill.method must be one of progressive, trajectory, got 'rounds'"),
        (["distill.student=s.ckpt"], "distill.student: only distill.method=trajectory"),
        (["distill.weighting=l1"], "distill.weighting must be 'truncated_snr' or 'eps'"),
        (["distill.teacher_steps=12"], r"must be a power of 2 \(at least 2\), got 12 / 4"),
        (["distill.teacher_steps=4"], "must be a power of 2 .*got 4 / 4"),
        (["distill.student_steps=0"], "must be a power of 2 .*got 16 / 0"),
        (["distill.steps_per_round=0"], "distill.steps_per_round must be positive, got 0"),
        (["train.keep_last_checkpoints=0"], "train.keep_last_checkpoints must be null"),
    ],
)
def test_training_cross_field_checks(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_training_config(TINY_CONFIG, overrides)
    load_config(TINY_CONFIG, overrides)  # the model-level loader does not check the training sections


def test_cross_field_checks_pass_a_valid_distillation_and_report_every_problem_at_once() -> None:
    ok = ["distill.method=trajectory", "distill.student=s.ckpt", "distill.teacher_steps=8", "distill.student_steps=2"]
    assert load_training_config(TINY_CONFIG, ok).distill.student == "s.ckpt"
    with pytest.raises(ConfigError, match="talking-tiny.yaml.*context_dim.*train.compile") as err:
        load_training_config(TINY_CONFIG, ["model.unet.context_dim=100", "train.compile=fast"])
    assert str(err.value).count(";") == 1


def test_config_to_dict_and_save_config_round_trip_both_schemas(tmp_path: Path) -> None:
    full = load_training_config(TINY_CONFIG, ["data.batch_size=3", "train.compile=blocks", "distill.teacher=t.ckpt"])
    stored = config_to_dict(full)
    assert list(stored) == ["model", *TRAINING_SECTIONS]
    assert load_training_config(stored) == full and load_training_config(full) == full
    save_config(full, tmp_path / "full.yaml")
    assert load_training_config(tmp_path / "full.yaml") == full
    model = load_config(stored)  # inference reads a checkpoint's stored config: the model section only
    assert type(model) is DiffTalkConfig and model.model == full.model
    assert config_to_dict(model) == {"model": stored["model"]}
    save_config(model, tmp_path / "model.yaml")
    assert load_config(tmp_path / "model.yaml") == model
    widened = load_training_config(model)  # a model-level config gets the training defaults
    assert widened.model == full.model and widened.data == DataConfig()


def test_the_audio_feature_kind_copy_keeps_the_schema() -> None:
    full = load_training_config(TINY_CONFIG, ["data.batch_size=3"])
    kinded = with_audio_feature_kind(full, "logmel29")
    assert type(kinded) is TrainingConfig and kinded.data.batch_size == 3
    assert (
        kinded.model.conditioning.audio_feature_kind == "logmel29"
        and full.model.conditioning.audio_feature_kind is None
    )
    assert type(with_audio_feature_kind(load_config(TINY_CONFIG), "logmel29")) is DiffTalkConfig


def test_a_config_stored_before_the_split_loads_with_both_loaders() -> None:
    """The shipped demo model's metadata holds the whole config (model, data, train) as written before the training
    sections moved out of the model package."""
    from safetensors import safe_open

    config, ckpt, _ = demo_model_paths()
    with safe_open(str(ckpt), framework="pt") as f:
        stored = json.loads(f.metadata()[CONFIG_CKPT_KEY])
    assert {"model", "data", "train"} <= set(stored)
    full = load_training_config(stored)
    assert full == load_training_config(config)
    assert full.data.batch_size == stored["data"]["batch_size"] and full.train.seed == stored["train"]["seed"]
    assert load_config(stored).model == full.model
