"""One config loader: packaged defaults, layered YAMLs + overrides, checks that never change the config, and the
audio feature kind stored once in checkpoints (older checkpoints with a top-level copy still load)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from golden import fill_deterministic
from train_support import ROOT, TINY_CONFIG, tiny_overrides

import talkingface
from talkingface.model.image_driven_talkingface.DiffTalk import ConfigError, get_difftalk_inference, load_config
from talkingface.model.image_driven_talkingface.DiffTalk.config import (
    CONFIG_CKPT_KEY,
    LEGACY_FEATURE_KIND_CKPT_KEY,
    checkpoint_feature_kind,
    config_to_dict,
    default_config_path,
    validate_config,
    with_audio_feature_kind,
)
from talkingface.training.config import TrainingConfig, load_training_config
from talkingface.training.data import check_dataset
from talkingface.training.module import LatentDiffusion

TOP_LEVEL = ROOT / "configs" / "latent-diffusion"
PACKAGED = ROOT / "talkingface" / "configs" / "latent-diffusion"


def test_packaged_defaults_are_the_repository_configs() -> None:
    """One source: the package's ``configs/latent-diffusion`` is a relative symbolic link (committed as one) to the
    repository's ``configs/latent-diffusion``: ``--base configs/...`` and the packaged defaults are one set of files."""
    assert PACKAGED.is_symlink() and os.readlink(PACKAGED) == "../../configs/latent-diffusion"
    assert PACKAGED.resolve() == TOP_LEVEL.resolve() and not TOP_LEVEL.is_symlink()
    top = sorted(p.name for p in TOP_LEVEL.glob("*.yaml"))
    assert "talking-inference.yaml" in top and "talking.yaml" in top
    for name in top:
        assert default_config_path(name).resolve() == (TOP_LEVEL / name).resolve()
        assert not (TOP_LEVEL / name).is_symlink()
    with pytest.raises(ConfigError, match="nope.yaml"):
        default_config_path("nope.yaml")


@pytest.mark.slow
def test_the_wheel_holds_the_configs_as_files(tmp_path: Path) -> None:
    """The link is resolved when the package is built: the wheel holds each config as a file, byte for byte (built
    from a copy of the checkout that keeps the link, so that the build leaves nothing in the repository)."""
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "talkingface", src / "talkingface", symlinks=True, ignore=skip)
    shutil.copytree(TOP_LEVEL, src / "configs" / "latent-diffusion")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    assert (src / "talkingface" / "configs" / "latent-diffusion").is_symlink()
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("talkingface-*.whl")
    assert wheel.name.startswith(f"talkingface-{talkingface.__version__}-")  # the version's one source
    with zipfile.ZipFile(wheel) as z:
        packaged = {
            Path(i.filename).name: z.read(i)
            for i in z.infolist()
            if i.filename.startswith("talkingface/configs/latent-diffusion/")
        }
    assert packaged == {p.name: p.read_bytes() for p in TOP_LEVEL.glob("*.yaml")}


@pytest.mark.slow
def test_defaults_found_without_the_repository(tmp_path: Path) -> None:
    """The package alone (as a non-editable install sees it): no top-level configs/ anywhere above it."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "talkingface", site / "talkingface", ignore=shutil.ignore_patterns("assets", "__pycache__"))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    code = (
        "from talkingface.model.image_driven_talkingface.DiffTalk.config import default_config_path, load_config\n"
        "p = default_config_path(); c = load_config(p); print(p); print(c.model.unet.model_channels)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    path, channels = proc.stdout.split()
    assert Path(path).is_relative_to(site) and int(channels) == 256


def test_layers_merge_left_to_right_and_inputs_are_not_changed(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("data:\n  batch_size: 5\ntrain:\n  max_steps: 7\n")
    layer = {"train": {"max_steps": 8}}
    before = copy.deepcopy(layer)
    cfg = load_training_config([TINY_CONFIG, extra, layer], ["train.seed=3"])
    assert (cfg.data.batch_size, cfg.train.max_steps, cfg.train.seed, cfg.model.unet.model_channels) == (5, 8, 3, 32)
    assert layer == before
    again = load_training_config(cfg, ["train.seed=4"])
    assert (again.train.seed, cfg.train.seed) == (4, 3)  # a new config; the one passed in is unchanged
    model = load_config([TINY_CONFIG, extra, layer, cfg], ["model.unet.num_res_blocks=1"])  # the model-level loader
    assert (model.model.unet.num_res_blocks, cfg.model.unet.num_res_blocks) == (1, 2) and layer == before
    for load in (load_config, load_training_config):
        with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
            load([TINY_CONFIG, tmp_path / "nope.yaml"])


def test_checks_never_change_the_config(tiny_dataset: Path) -> None:
    cfg = load_training_config(TINY_CONFIG, tiny_overrides(tiny_dataset))
    snapshot = config_to_dict(cfg)
    validate_config(cfg)
    meta = check_dataset(cfg)
    assert config_to_dict(cfg) == snapshot  # the dataset's feature kind is not written into the config ...
    assert cfg.model.conditioning.audio_feature_kind is None
    kinded = with_audio_feature_kind(cfg, meta["audio_feature"]["kind"])  # ... the caller makes a new one
    assert kinded.model.conditioning.audio_feature_kind == meta["audio_feature"]["kind"]
    assert config_to_dict(cfg) == snapshot
    with pytest.raises(ConfigError, match="audio_feature_kind"):
        with_audio_feature_kind(kinded, "deepspeech")


def test_synthetic_config_trains_as_the_benchmark_documents() -> None:
    """benchmarks/learnability.py runs the trainer on this config: its training keys are read, not decorative."""
    cfg = load_training_config(TOP_LEVEL / "synthetic.yaml")
    assert cfg.train.gradient_clip_val == 1.0 and cfg.train.lr_warmup_steps == 200
    assert cfg.data.shuffle_audio is False  # the control sets data.shuffle_audio=true on the command line


@pytest.fixture(scope="module")
def tiny_module() -> LatentDiffusion:
    m = LatentDiffusion(load_config(TINY_CONFIG).model).eval()
    fill_deterministic(m)
    return m


def test_feature_kind_is_stored_once(tiny_module: LatentDiffusion) -> None:
    cfg = with_audio_feature_kind(load_config(TINY_CONFIG), "logmel29")
    module = LatentDiffusion(cfg.model, run_config=config_to_dict(cfg))
    checkpoint: dict = {"state_dict": {}, "hyper_parameters": {}}
    module.on_save_checkpoint(checkpoint)
    assert LEGACY_FEATURE_KIND_CKPT_KEY not in checkpoint and "hyper_parameters" not in checkpoint
    assert checkpoint[CONFIG_CKPT_KEY]["model"]["conditioning"]["audio_feature_kind"] == "logmel29"
    assert checkpoint_feature_kind(checkpoint) == "logmel29"
    module.on_load_checkpoint(checkpoint)
    other = LatentDiffusion(with_audio_feature_kind(load_config(TINY_CONFIG), "deepspeech").model)
    with pytest.raises(ValueError, match="logmel29"):
        other.on_load_checkpoint(checkpoint)


@pytest.mark.slow
def test_checkpoint_in_the_old_format_still_loads(tiny_module: LatentDiffusion, tmp_path: Path) -> None:
    """Checkpoints written before this change carry the kind twice: at the top level and in the config."""
    cfg = with_audio_feature_kind(load_config(TINY_CONFIG), "logmel29")
    old = {
        "epoch": 0,
        "global_step": 3,
        "state_dict": tiny_module.state_dict(),
        CONFIG_CKPT_KEY: config_to_dict(cfg),
        LEGACY_FEATURE_KIND_CKPT_KEY: "logmel29",
    }
    path = tmp_path / "old.ckpt"
    torch.save(old, path)
    model = get_difftalk_inference(None, path, device="cpu", use_ema=False)
    assert model.config.conditioning.audio_feature_kind == "logmel29"
    # the top-level entry alone (a config stored without the kind) is still honoured
    no_kind = {**old, CONFIG_CKPT_KEY: config_to_dict(load_config(TINY_CONFIG))}
    assert checkpoint_feature_kind(no_kind) == "logmel29"
    torch.save(no_kind, path)
    model = get_difftalk_inference(None, path, device="cpu", use_ema=False)
    assert model.config.conditioning.audio_feature_kind == "logmel29"
    tiny_module.on_load_checkpoint(old)  # a model config without a kind accepts any


def test_data_constants_come_from_the_config_defaults() -> None:
    from talkingface.data import constants

    d = TrainingConfig()
    c = d.model.conditioning
    assert constants.AUDIO_SMOOTH_SHAPE == (c.audio_smooth_windows, c.audio_window, c.audio_feature_dim)
    assert (constants.MODEL_IMAGE_SIZE, constants.LATENT_SIZE) == (d.data.image_size, d.model.unet.image_size)
    assert constants.REFERENCE_MIN_DISTANCE == d.data.reference_min_distance
    assert len(constants.MODEL_LANDMARK_ROWS) == c.landmark_count  # 39 rows selected from the 68-point layout
