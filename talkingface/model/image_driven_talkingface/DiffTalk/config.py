"""Typed configuration of DiffTalk: one schema for the trainer, the loader and inference.

YAML files are merged onto these dataclasses with OmegaConf, so a misspelled or unknown key is an error that
names the key and the file. Magic numbers of the architecture (16x29 audio windows, 8-window smoothing,
39 landmarks) are named fields here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Union

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from talkingface.constants import (
    AUDIO_WINDOW,
    FEATURE_DIM,
    LATENT_SIZE,
    MODEL_IMAGE_SIZE,
    MODEL_LANDMARK_ROWS,
    REFERENCE_MIN_DISTANCE,
    SMOOTH_WINDOWS,
)
from talkingface.errors import TalkingFaceError

#: The repository root of a source checkout; only a fallback for relative model/checkpoint paths
#: (``resolve_path``), never needed for the packaged default configs.
REPO_ROOT = Path(__file__).resolve().parents[4]
#: Package that ships the default YAMLs (``talkingface/configs/latent-diffusion/*.yaml``, package data); the
#: top-level ``configs/`` of the repository holds identical copies (tests/test_cli.py checks they stay identical).
CONFIG_PACKAGE = "talkingface.configs"
CONFIG_SUBDIR = "latent-diffusion"
#: Plain top-level entry of trainer checkpoints (and safetensors metadata) that holds the whole config as a dict.
#: The audio feature kind lives inside it (``model.conditioning.audio_feature_kind``), and only there.
CONFIG_CKPT_KEY = "difftalk_config"
#: Plain top-level entry of a distilled student's trainer checkpoint (and JSON metadata entry of its slim export):
#: the sampler it was distilled for (:class:`SamplingSetting`). Checkpoints without it sample as before.
SAMPLING_CKPT_KEY = "difftalk_sampling"
#: Top-level copy of the feature kind written by older checkpoints (and reference-format ones): read, never written.
LEGACY_FEATURE_KIND_CKPT_KEY = "audio_feature_kind"


class ConfigError(TalkingFaceError, ValueError):
    """A configuration file or override is invalid."""


@dataclass
class DiffusionConfig:
    timesteps: int = 1000
    beta_schedule: str = "linear"  # betas = linspace(sqrt(linear_start), sqrt(linear_end)) ** 2
    linear_start: float = 0.0015
    linear_end: float = 0.0195
    parameterization: str = "eps"
    scale_factor: float = 1.0
    loss_type: str = "l2"
    l_simple_weight: float = 1.0
    original_elbo_weight: float = 0.0
    use_ema: bool = True
    ema_decay: float = 0.9999


@dataclass
class UNetConfig:
    image_size: int = LATENT_SIZE
    in_channels: int = 9  # noisy latent + masked-image latent + reference latent, 3 channels each
    out_channels: int = 3
    model_channels: int = 256
    attention_resolutions: list[int] = field(default_factory=lambda: [8, 4, 2])
    num_res_blocks: int = 2
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    num_head_channels: int = 32
    transformer_depth: int = 1
    context_dim: int = 128  # audio embedding + landmark embedding
    dropout: float = 0.0
    gradient_checkpointing: bool = False


@dataclass
class FirstStageConfig:
    """The frozen VQ autoencoder (latent-diffusion ``vq-f4``)."""

    ckpt_path: str | None = "models/model.ckpt"
    embed_dim: int = 3
    n_embed: int = 8192
    z_channels: int = 3
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=list)
    dropout: float = 0.0


@dataclass
class ConditioningConfig:
    # Which audio features the model consumes (e.g. "deepspeech", "logmel29"). null: taken from the dataset
    # when training starts and stored in the checkpoint; inference refuses audio of another kind.
    audio_feature_kind: str | None = None
    audio_feature_dim: int = FEATURE_DIM  # channels per 50 Hz feature frame (DeepSpeech: 29 logits; whisper tiny: 384)
    audio_window: int = AUDIO_WINDOW  # feature frames per 25 fps video frame
    audio_smooth_windows: int = SMOOTH_WINDOWS  # neighbouring windows attended over
    audio_dim: int = 64  # AudioNet output
    audio_attention_dim: int = 32  # channels AudioAttNet scores from
    landmark_count: int = len(MODEL_LANDMARK_ROWS)  # 39: rows 0-3 and 13-47 of the 68-point layout
    landmark_dim: int = 64  # LdmNet output


@dataclass
class ModelConfig:
    base_learning_rate: float = 1.0e-6
    scale_lr: bool = True  # lr = base_learning_rate * gpus * batch_size * accumulate_grad_batches
    # accepted so that the reference's YAMLs load unchanged; read by nothing (the trainer keeps last.ckpt and the
    # EMA export, and the batch's image key is always "image")
    monitor: str = "val/loss_simple_ema"
    first_stage_key: str = "image"
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    first_stage: FirstStageConfig = field(default_factory=FirstStageConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)


@dataclass
class DataConfig:
    root: str = "data/HDTF"
    train_list: str = "data/data_train.txt"
    val_list: str = "data/data_test.txt"
    batch_size: int = 8
    num_workers: int = 12
    image_size: int = MODEL_IMAGE_SIZE
    reference_min_distance: int = REFERENCE_MIN_DISTANCE
    latent_cache: str | None = None
    seed: int = 0
    # control experiment: training items get the audio of other items (a fixed permutation), so audio is no cue
    shuffle_audio: bool = False


@dataclass
class TrainConfig:
    max_epochs: int | None = None
    max_steps: int = -1
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float = 0.1
    benchmark: bool = True
    log_every_n_steps: int = 50
    val_check_interval: float | None = None  # < 1: fraction of an epoch; >= 1: every N training batches
    check_val_every_n_epoch: int | None = 1
    limit_val_batches: float | None = None  # < 1: fraction of the validation set; >= 1: number of batches
    checkpoint_every_n_steps: int = 5000
    keep_last_checkpoints: int | None = None  # keep the newest K step-N.ckpt (None: all); last.ckpt always stays
    image_log_every_n_steps: int = 5000
    image_log_max_images: int = 8
    image_log_ddim_steps: int = 50
    # torch.compile the UNet in place (checkpoint keys are unchanged): false (eager), "blocks" (each UNet block on its
    # own, static shapes: a shorter first step) or "full" / true (the whole UNet at once); see TRAIN_COMPILE_MODES
    compile: bool | str = False
    channels_last: bool = False
    seed: int = 23
    num_sanity_val_steps: int = 2
    fused_optimizer: bool = True  # fused CUDA AdamW (same maths); ignored on CPU
    tf32: bool = False  # TF32 matmuls/convs on Ampere+ GPUs (false: PyTorch's defaults, as the reference)
    ddp_timeout_s: int = 1800  # collective timeout: a stuck rank fails instead of hanging forever
    find_unused_parameters: bool = False
    lr_warmup_steps: int = 0  # linear learning-rate warm-up from 0 over this many optimizer steps (0: none)
    export_slim_on_end: bool = True  # write checkpoints/difftalk_ema.safetensors when training ends
    validation_seed: int = 1234  # validation noise/timesteps are fixed, so val losses are comparable
    val_metrics_batches: int = 1  # validation batches per epoch sampled for PSNR/SSIM (0: off)
    val_metrics_steps: int = 10  # DPM-Solver++ steps of those samples


#: ``train.compile`` values: ``True`` is ``"full"`` (the switch was a boolean before ``"blocks"`` existed).
TRAIN_COMPILE_MODES = (False, True, "blocks", "full")

#: ``distill.method`` values.
DISTILL_METHODS = ("progressive", "trajectory")


@dataclass
class DistillConfig:
    """Distillation of a trained DiffTalk (the teacher) into a few-step DDIM student; the trainer runs it when
    ``teacher`` is set (``talkingface.training.distill``). ``progressive``: Salimans & Ho (ICLR 2022), rounds that
    halve the steps; ``trajectory``: the student's whole unrolled DDIM chain regressed on the teacher's many-step
    sample from the same noise (multistep knowledge distillation, after Luhman & Luhman 2021), one round."""

    teacher: str | None = None  # trainer .ckpt or slim .safetensors of the teacher; null: ordinary training
    method: str = "progressive"  # "progressive" (rounds halving the steps) or "trajectory" (one unrolled round)
    student: str | None = None  # trajectory: the student's starting weights (e.g. a progressive student); null: teacher
    teacher_steps: int = 16  # DDIM steps of the first teacher (the reference's uniform grid)
    student_steps: int = 4  # DDIM steps of the final student; teacher_steps / student_steps a power of 2
    steps_per_round: int = 2000  # optimizer steps per halving round (train.max_steps -1: rounds x this)
    # loss on the generated region: "truncated_snr" (the paper's x0 MSE weighted max(SNR, 1)) or "eps" (plain
    # MSE between the student's and the target noise, as the teacher was trained)
    weighting: str = "truncated_snr"


@dataclass
class DiffTalkConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass(frozen=True)
class SamplingSetting:
    """The sampler a checkpoint was made for (a distilled student's): the pipeline's default when the user names
    no ``--sampler``/``--steps``. ``timesteps``: the exact increasing DDIM grid (``steps`` entries)."""

    sampler: str
    steps: int
    timesteps: tuple[int, ...]
    method: str | None = None
    teacher: str | None = None
    teacher_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "steps": self.steps,
            "timesteps": list(self.timesteps),
            "method": self.method,
            "teacher": self.teacher,
            "teacher_steps": self.teacher_steps,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def checkpoint_sampling(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> SamplingSetting | None:
    """The :class:`SamplingSetting` a checkpoint records under ``difftalk_sampling`` (a dict in a trainer
    checkpoint, JSON in safetensors metadata), or None; raises ``ConfigError`` naming ``source`` when malformed."""
    stored = checkpoint.get(SAMPLING_CKPT_KEY)
    if stored is None:
        return None
    try:
        value = json.loads(stored) if isinstance(stored, str) else stored
        timesteps = tuple(int(t) for t in value["timesteps"])
        setting = SamplingSetting(
            sampler=str(value["sampler"]),
            steps=int(value["steps"]),
            timesteps=timesteps,
            method=value.get("method"),
            teacher=value.get("teacher"),
            teacher_steps=value.get("teacher_steps"),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{source}: malformed '{SAMPLING_CKPT_KEY}' entry ({err})") from None
    if setting.steps != len(setting.timesteps):
        raise ConfigError(f"{source}: '{SAMPLING_CKPT_KEY}' says {setting.steps} steps but lists {timesteps}")
    return setting


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line, without the file name (the caller puts it first): problem and position."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _schema() -> DictConfig:
    cfg = OmegaConf.structured(DiffTalkConfig)
    OmegaConf.set_struct(cfg, True)
    return cfg


ConfigSource = Union[str, Path, Mapping[str, Any], DictConfig, "DiffTalkConfig"]


def _merge_one(cfg: DictConfig, source: ConfigSource) -> DictConfig:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            return OmegaConf.merge(cfg, OmegaConf.load(path))
        except OmegaConfBaseException as err:
            raise ConfigError(f"{path}: invalid config: {' '.join(str(err).split())}") from None
        except yaml.YAMLError as err:  # e.g. a !!python tag: refused by the safe loader, never executed
            raise ConfigError(f"{path}: invalid YAML: {yaml_problem(err)}") from None
    if isinstance(source, DiffTalkConfig):
        return OmegaConf.merge(cfg, OmegaConf.structured(source))
    try:
        return OmegaConf.merge(cfg, source)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid config (dict): {' '.join(str(err).split())}") from None


def load_config(
    source: ConfigSource | Sequence[ConfigSource] | None = None,
    overrides: Sequence[str] | None = None,
) -> DiffTalkConfig:
    """The one config loader: YAML paths, dicts or configs merged left to right onto the schema (nothing: the paper
    defaults), then ``key.sub=value`` overrides (OmegaConf dotlist), e.g. ``model.unet.model_channels=64``.

    Returns a new ``DiffTalkConfig``; nothing passed in is changed. Unknown keys and wrong types raise
    ``ConfigError`` naming the file or the override.
    """
    if source is None:
        sources: list[ConfigSource] = []
    elif isinstance(source, (str, Path, Mapping, DictConfig, DiffTalkConfig)):
        sources = [source]
    else:
        sources = list(source)
    cfg = _schema()
    for item in sources:
        cfg = _merge_one(cfg, item)
    if overrides:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as err:
            raise ConfigError(f"override {' '.join(overrides)}: {' '.join(str(err).split())}") from None
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, DiffTalkConfig)
    names = [str(s) if isinstance(s, (str, Path)) else type(s).__name__ for s in sources]
    validate_config(config, " + ".join(names + (["overrides"] if overrides else [])) or "defaults")
    return config


def validate_config(config: DiffTalkConfig, origin: str = "config") -> None:
    """Cross-field checks that the schema types cannot express."""
    m = config.model
    problems = []
    if m.diffusion.parameterization != "eps":
        problems.append("model.diffusion.parameterization: only 'eps' is supported (as in DiffTalk)")
    if m.diffusion.beta_schedule != "linear":
        problems.append("model.diffusion.beta_schedule: only 'linear' (linear in sqrt(beta)) is supported")
    if m.diffusion.loss_type not in ("l2", "l1"):
        problems.append("model.diffusion.loss_type must be 'l2' or 'l1'")
    if m.unet.in_channels != 3 * m.first_stage.embed_dim:
        problems.append("model.unet.in_channels must be 3 x first_stage.embed_dim (noisy, masked, reference latents)")
    if m.unet.out_channels != m.first_stage.embed_dim:
        problems.append("model.unet.out_channels must equal model.first_stage.embed_dim")
    if m.unet.context_dim != m.conditioning.audio_dim + m.conditioning.landmark_dim:
        problems.append("model.unet.context_dim must equal conditioning.audio_dim + conditioning.landmark_dim")
    if m.conditioning.audio_attention_dim > m.conditioning.audio_dim:
        problems.append("model.conditioning.audio_attention_dim must be <= audio_dim")
    if m.unet.model_channels % 32:
        problems.append("model.unet.model_channels must be a multiple of 32 (GroupNorm with 32 groups)")
    latent = m.first_stage.resolution // 2 ** (len(m.first_stage.ch_mult) - 1)
    if latent != m.unet.image_size:
        problems.append(
            f"model.unet.image_size ({m.unet.image_size}) must equal the first-stage latent size ({latent})"
        )
    d = config.distill
    if d.method not in DISTILL_METHODS:
        problems.append(f"distill.method must be one of {', '.join(DISTILL_METHODS)}, got {d.method!r}")
    if d.student and d.method != "trajectory":
        problems.append("distill.student: only distill.method=trajectory starts from a separate student")
    if d.weighting not in ("truncated_snr", "eps"):
        problems.append(f"distill.weighting must be 'truncated_snr' or 'eps', got {d.weighting!r}")
    ratio = d.teacher_steps // max(d.student_steps, 1)
    if (
        d.student_steps < 1
        or d.teacher_steps <= d.student_steps
        or d.teacher_steps % d.student_steps
        or ratio & (ratio - 1)
    ):
        problems.append(
            f"distill.teacher_steps / distill.student_steps must be a power of 2 (at least 2), "
            f"got {d.teacher_steps} / {d.student_steps}"
        )
    if d.steps_per_round < 1:
        problems.append(f"distill.steps_per_round must be at least 1, got {d.steps_per_round}")
    if config.train.compile not in TRAIN_COMPILE_MODES:
        problems.append(f"train.compile must be false, blocks or full (true: full), got {config.train.compile!r}")
    keep = config.train.keep_last_checkpoints
    if keep is not None and keep < 1:
        problems.append(f"train.keep_last_checkpoints must be null (keep all) or at least 1, got {keep}")
    if problems:
        raise ConfigError(f"{origin}: invalid config: " + "; ".join(problems))


def config_to_dict(config: DiffTalkConfig) -> dict[str, Any]:
    """Plain-Python dict (safe for ``torch.load(weights_only=True)`` and YAML)."""
    out = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
    assert isinstance(out, dict)
    return out


def save_config(config: DiffTalkConfig, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))


def default_config_path(name: str = "talking-inference.yaml") -> Path:
    """A default config shipped inside the package (found the same way in a checkout and in an installed wheel)."""
    path = Path(str(files(CONFIG_PACKAGE).joinpath(CONFIG_SUBDIR, name)))
    if not path.is_file():
        raise ConfigError(f"{name}: no such packaged config (in {path.parent})")
    return path


def with_audio_feature_kind(config: DiffTalkConfig, kind: str) -> DiffTalkConfig:
    """A copy of ``config`` whose ``model.conditioning.audio_feature_kind`` is ``kind``; raises ``ConfigError`` when
    the config already names another kind. ``config`` itself is left unchanged."""
    current = config.model.conditioning.audio_feature_kind
    if current not in (None, kind):
        raise ConfigError(f"model.conditioning.audio_feature_kind: the config says '{current}', but found '{kind}'")
    return load_config(config, [f"model.conditioning.audio_feature_kind={kind}"])


def checkpoint_config(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The config a trainer checkpoint (or slim safetensors export) stores under ``difftalk_config``, if any."""
    stored = checkpoint.get(CONFIG_CKPT_KEY)
    if isinstance(stored, str):  # safetensors metadata not yet decoded
        try:
            stored = json.loads(stored)
        except json.JSONDecodeError:
            return None
    return stored if isinstance(stored, dict) else None


def checkpoint_feature_kind(checkpoint: Mapping[str, Any]) -> str | None:
    """The audio feature kind a checkpoint was trained on: from its stored config, else (checkpoints written
    before the kind was stored only there, and reference-format ones given a kind) the top-level entry."""
    stored = checkpoint_config(checkpoint)
    if stored is not None:
        kind = stored.get("model", {}).get("conditioning", {}).get("audio_feature_kind")
        if isinstance(kind, str):
            return kind
    legacy = checkpoint.get(LEGACY_FEATURE_KIND_CKPT_KEY)
    return legacy if isinstance(legacy, str) else None
