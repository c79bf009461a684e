"""Typed configuration of the DiffTalk model and the one config loader.

YAML files are merged onto these dataclasses with OmegaConf, so a misspelled or unknown key is an error that
names the key and the file. A config is plain data: a mapping of UTF-8 YAML, read as written; OmegaConf's
interpolations and resolvers (``${...}``) are refused, in files and overrides alike. Magic numbers of the
architecture (16x29 audio windows, 8-window smoothing, 39 landmarks) are named fields here.

This module holds the model-level schema (:class:`DiffTalkConfig`: the ``model:`` section, all that inference
needs). The loader is generic over the schema: ``talkingface.training.config`` adds the training sections
(``data:``, ``train:``, ``distill:``) with their own schema and checks, and loads the same YAML files with it. The
model-level loader accepts those sections and leaves them out (:data:`TRAINING_SECTIONS`).
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from talkingface.constants import (
    AUDIO_WINDOW,
    FEATURE_DIM,
    LATENT_SIZE,
    MODEL_LANDMARK_ROWS,
    SMOOTH_WINDOWS,
)
from talkingface.errors import TalkingFaceError, one_line
from talkingface.ranges import Range, range_problems

#: The repository root of a source checkout; only a fallback for relative model/checkpoint paths
#: (``resolve_path``), never needed for the packaged default configs.
REPO_ROOT = Path(__file__).resolve().parents[4]
#: Package that ships the default YAMLs (``talkingface/configs/latent-diffusion/*.yaml``, package data): a link to the
#: repository's top-level ``configs/latent-diffusion/``, one source (tests/model/test_config_loading.py checks it).
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
    """The frozen VQ autoencoder (latent-diffusion ``vq-f4`` by default; ``vq-f8`` in ``talking-512.yaml``).

    ``resolution`` is the side of the images the model sees; ``attn_resolutions`` are sides of the encoder's levels
    at that resolution (``resolution`` halved per level), as in latent-diffusion, where they decide at build time
    which levels get attention blocks. A published first stage trained at 256 keeps its parameters at another side
    when its attention levels are renamed by that side: vq-f8's ``[32]`` at 256 (its last level) is ``[64]`` at 512.
    """

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


#: The published latent-diffusion VQ first stages the shipped configs name, told apart by ``(embed_dim, n_embed, ch,
#: ch_mult, num_res_blocks)``: each zip holds the ``model.ckpt`` that ``model.first_stage.ckpt_path`` points at.
PUBLISHED_FIRST_STAGES = {
    "vq-f4": ((3, 8192, 128, (1, 2, 4), 2), "https://ommer-lab.com/files/latent-diffusion/vq-f4.zip"),
    "vq-f8": ((4, 16384, 128, (1, 2, 2, 4), 2), "https://ommer-lab.com/files/latent-diffusion/vq-f8.zip"),
}


def first_stage_source(cfg: FirstStageConfig) -> str:
    """What a user downloads for the first stage ``cfg`` describes: latent-diffusion's vq-f4 or vq-f8 (with the
    URL), else a first stage trained with this config."""
    key = (cfg.embed_dim, cfg.n_embed, cfg.ch, tuple(cfg.ch_mult), cfg.num_res_blocks)
    for name, (fields_, url) in PUBLISHED_FIRST_STAGES.items():
        if key == fields_:
            return f"the latent-diffusion {name} model.ckpt ({url}, unzipped)"
    return "a VQ first stage trained with this model.first_stage config"


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


#: The range of every numeric field of the ``model:`` section (a list field: of each item), checked when a config
#: loads (:meth:`DiffTalkConfig.problems`); ``tests/test_ranges.py`` fails for a numeric field missing here. The
#: caps are far above any model that fits in memory: they refuse typos (``1e12``), not large models.
MODEL_RANGES: dict[str, Range] = {
    "model.base_learning_rate": Range(float, above=0, max=1),
    "model.diffusion.timesteps": Range(int, min=2, max=10_000),
    "model.diffusion.linear_start": Range(float, above=0, below=1),  # betas: each in (0, 1)
    "model.diffusion.linear_end": Range(float, above=0, below=1),
    "model.diffusion.scale_factor": Range(float, above=0, max=100),
    "model.diffusion.l_simple_weight": Range(float, min=0, max=1000),
    "model.diffusion.original_elbo_weight": Range(float, min=0, max=1000),
    "model.diffusion.ema_decay": Range(float, min=0, max=1),
    "model.unet.image_size": Range(int, min=1, max=1024),
    "model.unet.in_channels": Range(int, min=1, max=256),
    "model.unet.out_channels": Range(int, min=1, max=256),
    "model.unet.model_channels": Range(int, min=32, max=4096),
    "model.unet.attention_resolutions": Range(int, min=1, max=1024),
    "model.unet.num_res_blocks": Range(int, min=1, max=16),
    "model.unet.channel_mult": Range(int, min=1, max=64),
    "model.unet.num_head_channels": Range(int, min=1, max=4096),
    "model.unet.transformer_depth": Range(int, min=1, max=64),
    "model.unet.context_dim": Range(int, min=1, max=8192),
    "model.unet.dropout": Range(float, min=0, below=1),
    "model.first_stage.embed_dim": Range(int, min=1, max=256),
    "model.first_stage.n_embed": Range(int, min=1, max=2**20),
    "model.first_stage.z_channels": Range(int, min=1, max=256),
    "model.first_stage.resolution": Range(int, min=8, max=4096),
    "model.first_stage.in_channels": Range(int, min=1, max=16),
    "model.first_stage.out_ch": Range(int, min=1, max=16),
    "model.first_stage.ch": Range(int, min=1, max=4096),
    "model.first_stage.ch_mult": Range(int, min=1, max=64),
    "model.first_stage.num_res_blocks": Range(int, min=1, max=16),
    "model.first_stage.attn_resolutions": Range(int, min=1, max=4096),
    "model.first_stage.dropout": Range(float, min=0, below=1),
    "model.conditioning.audio_feature_dim": Range(int, min=1, max=8192),
    "model.conditioning.audio_window": Range(int, min=1, max=1024),
    "model.conditioning.audio_smooth_windows": Range(int, min=1, max=256),
    "model.conditioning.audio_dim": Range(int, min=1, max=8192),
    "model.conditioning.audio_attention_dim": Range(int, min=1, max=8192),
    "model.conditioning.landmark_count": Range(int, min=1, max=68),  # of the 68-point layout
    "model.conditioning.landmark_dim": Range(int, min=1, max=8192),
}

#: Top-level sections of a config YAML that belong to training (``talkingface.training.config`` has their schema).
#: The model-level loader accepts them and leaves them out; any other unknown top-level key is an error.
TRAINING_SECTIONS = ("data", "train", "distill")


@dataclass
class DiffTalkConfig:
    """The model-level config: the ``model:`` section, all that building and running DiffTalk needs.

    ``talkingface.training.config.TrainingConfig`` subclasses it with the training sections (``data``, ``train``,
    ``distill``). A schema's :meth:`problems` lists the cross-field problems that its types cannot express."""

    model: ModelConfig = field(default_factory=ModelConfig)

    def problems(self) -> list[str]:
        """Problems of this config (empty: valid): fields outside their range (:data:`MODEL_RANGES`), then the
        cross-field problems; :func:`load_config` raises with them."""
        return range_problems(self, MODEL_RANGES) + model_problems(self.model)


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


C = TypeVar("C", bound=DiffTalkConfig)
ConfigSource = str | Path | Mapping[str, Any] | DictConfig | DiffTalkConfig


@functools.cache
def _schema(schema: type[DiffTalkConfig]) -> DictConfig:
    """The schema as a struct OmegaConf node, built once per schema (building it is most of a load's time); read
    only: every merge makes a new node, so the cached one is never changed."""
    cfg = OmegaConf.structured(schema)
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _without_sections(node: Any, sections: Sequence[str], origin: str) -> Any:
    """``node`` (a fresh OmegaConf node, changed in place) without the top-level ``sections``; each must be a mapping
    or null."""
    if not isinstance(node, DictConfig):
        return node  # not a mapping at all: the merge names the problem
    for key in sections:
        if key in node:
            if not isinstance(node.get(key), (DictConfig, type(None))):
                raise ConfigError(f"{origin}: invalid config: {key} must be a mapping (a training section)")
            node.pop(key)
    return node


def _interpolation(node: Any, prefix: str = "") -> tuple[str, str] | None:
    """The first ``(key, value)`` of ``node`` (a plain container) whose string value is an OmegaConf interpolation or
    resolver call (``${...}``), or None."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        name = f"{prefix}.{key}" if prefix and isinstance(key, str) else f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, str) and "${" in value:
            return name, value
        found = _interpolation(value, name)
        if found is not None:
            return found
    return None


def _plain_node(node: Any, origin: str, ignored: Sequence[str]) -> DictConfig:
    """``node`` (a fresh OmegaConf node) checked to be plain data: a mapping at the top (``model:``, ``data:``, ...),
    no interpolation or resolver anywhere (``${...}``: a config is read as written, never evaluated), without the
    ``ignored`` top-level sections."""
    if not isinstance(node, DictConfig):
        kind = "a list" if isinstance(node, ListConfig) else f"a {type(node).__name__}"
        raise ConfigError(origin, f"invalid config: the top level must be a mapping (model:, data:, ...), not {kind}")
    found = _interpolation(OmegaConf.to_container(node, resolve=False))
    if found is not None:
        key, value = found
        raise ConfigError(
            origin,
            f"{key}: {value!r}: interpolations and resolvers (${{...}}) are not read; configs are plain data, write "
            "the value itself",
        )
    return _without_sections(node, ignored, origin)


def _read_yaml(path: Path) -> DictConfig | ListConfig:
    """A config file as an OmegaConf node (a mapping or a list: the caller checks which), read as UTF-8 text."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None
    try:
        return OmegaConf.load(io.StringIO(text))
    except yaml.YAMLError as err:  # e.g. a !!python tag: refused by the safe loader, never executed
        raise ConfigError(path, f"invalid YAML: {yaml_problem(err)}") from None
    except OSError as err:  # OmegaConf's word for a number or a boolean at the top (text read already)
        raise ConfigError(path, "invalid config: the top level must be a mapping (model:, data:, ...)") from err


def _merge_one(cfg: DictConfig, source: ConfigSource, ignored: Sequence[str]) -> DictConfig:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            return OmegaConf.merge(cfg, _plain_node(_read_yaml(path), str(path), ignored))
        except OmegaConfBaseException as err:
            raise ConfigError(f"{path}: invalid config: {' '.join(str(err).split())}") from None
    try:  # a copy as a plain node: a config object of another schema merges like its dict
        node = OmegaConf.create(config_to_dict(source) if isinstance(source, DiffTalkConfig) else source)
        return OmegaConf.merge(cfg, _plain_node(node, "config (dict)", ignored))
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid config (dict): {' '.join(str(err).split())}") from None


def _merge_override(cfg: DictConfig, override: str, ignored: Sequence[str]) -> DictConfig:
    """``cfg`` with one ``key.sub=value`` override merged in; a bad override raises ``ConfigError`` naming it alone."""
    origin = f"override {override}"
    try:
        node = OmegaConf.from_dotlist([override])
    except yaml.YAMLError as err:  # the value is YAML: e.g. an unclosed list "[1,2"
        raise ConfigError(origin, f"invalid value: {yaml_problem(err)}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(origin, one_line(err)) from None
    try:
        return OmegaConf.merge(cfg, _plain_node(node, origin, ignored))
    except OmegaConfBaseException as err:
        raise ConfigError(origin, one_line(err)) from None


@overload
def load_config(
    source: ConfigSource | Sequence[ConfigSource] | None = None, overrides: Sequence[str] | None = None
) -> DiffTalkConfig: ...


@overload
def load_config(
    source: ConfigSource | Sequence[ConfigSource] | None = None,
    overrides: Sequence[str] | None = None,
    *,
    schema: type[C],
) -> C: ...


def load_config(
    source: ConfigSource | Sequence[ConfigSource] | None = None,
    overrides: Sequence[str] | None = None,
    *,
    schema: type[DiffTalkConfig] = DiffTalkConfig,
) -> DiffTalkConfig:
    """The one config loader: YAML paths, dicts or configs merged left to right onto ``schema`` (nothing: the paper
    defaults), then ``key.sub=value`` overrides (OmegaConf dotlist), e.g. ``model.unet.model_channels=64``.

    Returns a new ``schema`` instance (default: the model-level :class:`DiffTalkConfig`); nothing passed in is
    changed. Unknown keys and wrong types raise ``ConfigError`` naming the file or the override, and so do the
    schema's cross-field :meth:`~DiffTalkConfig.problems`. The training sections (:data:`TRAINING_SECTIONS`) that
    ``schema`` has no field for are accepted and left out, unchecked: ``talkingface.training.config`` checks them.
    """
    if source is None:
        sources: list[ConfigSource] = []
    elif isinstance(source, (str, Path, Mapping, DictConfig, DiffTalkConfig)):
        sources = [source]
    else:
        sources = list(source)
    ignored = [name for name in TRAINING_SECTIONS if name not in {f.name for f in fields(schema)}]
    cfg = _schema(schema)
    for item in sources:
        cfg = _merge_one(cfg, item, ignored)
    for override in overrides or ():
        cfg = _merge_override(cfg, override, ignored)
    names = [str(s) if isinstance(s, (str, Path)) else type(s).__name__ for s in sources]
    origin = " + ".join(names + (["overrides"] if overrides else [])) or "defaults"
    try:
        config = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:  # e.g. a required value left out ("???")
        raise ConfigError(origin, f"invalid config: {one_line(err)}") from None
    assert isinstance(config, schema)
    validate_config(config, origin)
    return config


def validate_config(config: DiffTalkConfig, origin: str = "config") -> None:
    """Raise ``ConfigError`` naming ``origin`` with every cross-field problem of ``config`` (its schema's
    :meth:`~DiffTalkConfig.problems`)."""
    problems = config.problems()
    if problems:
        raise ConfigError(f"{origin}: invalid config: " + "; ".join(problems))


def model_problems(m: ModelConfig) -> list[str]:
    """Cross-field problems of the ``model`` section that the schema types cannot express."""
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
    fs = m.first_stage
    widths = [fs.ch * mult for mult in fs.ch_mult]
    if any(w % 32 for w in widths):
        problems.append(
            f"model.first_stage.ch x ch_mult must be multiples of 32 (GroupNorm with 32 groups), got {widths}"
        )
    sides = [fs.resolution // 2**i for i in range(len(fs.ch_mult))]
    stray = [r for r in fs.attn_resolutions if r not in sides]
    if stray:
        problems.append(
            f"model.first_stage.attn_resolutions: {stray} is not the side of a level at resolution {fs.resolution} "
            f"(levels {sides}); e.g. vq-f8's [32] at 256 is [64] at 512"
        )
    latent = m.first_stage.resolution // 2 ** (len(m.first_stage.ch_mult) - 1)
    if latent != m.unet.image_size:
        problems.append(
            f"model.unet.image_size ({m.unet.image_size}) must equal the first-stage latent size ({latent})"
        )
    return problems


def config_to_dict(config: DiffTalkConfig) -> dict[str, Any]:
    """Plain-Python dict of a config of any schema (safe for ``torch.load(weights_only=True)`` and YAML)."""
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


def with_audio_feature_kind(config: C, kind: str) -> C:
    """A copy of ``config`` (of the same schema) whose ``model.conditioning.audio_feature_kind`` is ``kind``; raises
    ``ConfigError`` when the config already names another kind. ``config`` itself is left unchanged."""
    current = config.model.conditioning.audio_feature_kind
    if current not in (None, kind):
        raise ConfigError(f"model.conditioning.audio_feature_kind: the config says '{current}', but found '{kind}'")
    return load_config(config, [f"model.conditioning.audio_feature_kind={kind}"], schema=type(config))


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
