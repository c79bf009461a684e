"""The training sections of a DiffTalk config (``data:``, ``train:``, ``distill:``), their checks and their loader.

:class:`TrainingConfig` is the model-level :class:`~talkingface.model.image_driven_talkingface.DiffTalk.config.
DiffTalkConfig` (the ``model:`` section) plus these sections; :func:`load_training_config` is the one config loader
with this schema, so unknown keys and wrong types in any section are errors naming the file or the override, as for
``model:``. Checkpoints store the whole training config (``config_to_dict``) under ``difftalk_config``; inference
reads its ``model:`` section with the model-level loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from talkingface.constants import IMAGE_LOG_DDIM_STEPS, MODEL_IMAGE_SIZE, REFERENCE_MIN_DISTANCE, VALIDATION_STEPS
from talkingface.model.image_driven_talkingface.DiffTalk.config import ConfigSource, DiffTalkConfig, load_config
from talkingface.ranges import SEED, Range, range_problems


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
    image_log_ddim_steps: int = IMAGE_LOG_DDIM_STEPS
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
    val_metrics_steps: int = VALIDATION_STEPS  # DPM-Solver++ steps of those samples


#: ``train.precision`` values: Lightning's (``lightning_fabric.plugins.precision.precision._PRECISION_INPUT``, as
#: strings; ``tests/test_ranges.py`` checks the list against the installed Lightning), so that a typo is refused when
#: the config loads, not when the trainer starts.
TRAIN_PRECISIONS = (
    "32-true",
    "32",
    "16-mixed",
    "16",
    "bf16-mixed",
    "bf16",
    "16-true",
    "bf16-true",
    "64-true",
    "64",
    "transformer-engine",
    "transformer-engine-float16",
)

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


#: The range of every numeric field of the ``data:``, ``train:`` and ``distill:`` sections, checked when a config loads
#: (:meth:`TrainingConfig.problems`); ``tests/test_ranges.py`` fails for a numeric field missing here. ``also``: the
#: special values (-1: no limit, or Lightning's "all").
TRAINING_RANGES: dict[str, Range] = {
    "data.batch_size": Range(int, min=1, max=4096),
    "data.num_workers": Range(int, min=0, max=256),  # 0: load in the training process
    "data.image_size": Range(int, min=8, max=4096),
    "data.reference_min_distance": Range(int, min=0, max=1_000_000),  # frames
    "data.seed": SEED,
    "train.max_epochs": Range(int, min=1, max=10_000_000, also=(-1,)),  # null or -1: no limit
    "train.max_steps": Range(int, min=1, max=10**9, also=(-1,)),  # -1: no limit (or train.max_epochs)
    "train.accumulate_grad_batches": Range(int, min=1, max=4096),
    "train.gradient_clip_val": Range(float, min=0, max=1e6),  # 0: no clipping
    "train.log_every_n_steps": Range(int, min=1, max=10**9),
    "train.val_check_interval": Range(float, above=0, max=1e9),  # below 1: fraction of an epoch; else batches
    "train.check_val_every_n_epoch": Range(int, min=1, max=1_000_000),
    "train.limit_val_batches": Range(float, min=0, max=1e9),  # 0: no validation; below 1: fraction; else batches
    "train.checkpoint_every_n_steps": Range(int, min=0, max=10**9),  # 0: last.ckpt only when training ends
    "train.keep_last_checkpoints": Range(int, min=1, max=1_000_000),
    "train.image_log_every_n_steps": Range(int, min=0, max=10**9),  # 0: no image logs
    "train.image_log_max_images": Range(int, min=1, max=1024),
    "train.image_log_ddim_steps": Range(int, min=1, max=10_000),
    "train.seed": SEED,
    "train.num_sanity_val_steps": Range(int, min=0, max=1_000_000, also=(-1,)),  # -1: the whole validation set
    "train.ddp_timeout_s": Range(int, min=1, max=7 * 86_400),
    "train.lr_warmup_steps": Range(int, min=0, max=10**9),
    "train.validation_seed": SEED,
    "train.val_metrics_batches": Range(int, min=0, max=1_000_000),  # 0: off
    "train.val_metrics_steps": Range(int, min=1, max=10_000),
    "distill.teacher_steps": Range(int, min=2, max=10_000),
    "distill.student_steps": Range(int, min=1, max=10_000),
    "distill.steps_per_round": Range(int, min=1, max=10**9),
}


@dataclass
class TrainingConfig(DiffTalkConfig):
    """The whole config of a training run: ``model`` (the model-level config) + ``data``, ``train``, ``distill``
    (the model package's ``TRAINING_SECTIONS``, in that order)."""

    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def problems(self) -> list[str]:
        """The model's problems, then the training sections': fields outside their range (:data:`TRAINING_RANGES`),
        then the cross-field problems (:func:`training_problems`)."""
        return super().problems() + range_problems(self, TRAINING_RANGES) + training_problems(self)


def training_problems(config: TrainingConfig) -> list[str]:
    """Cross-field problems of the ``distill`` and ``train`` sections that the schema types and ranges cannot
    express."""
    problems = []
    if config.train.precision not in TRAIN_PRECISIONS:
        problems.append(f"train.precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {config.train.precision!r}")
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
    for key in ("val_check_interval", "limit_val_batches"):
        value = getattr(config.train, key)
        if value is not None and value >= 1 and not float(value).is_integer():
            problems.append(f"train.{key} must be a fraction below 1 or a whole number of batches, got {value:g}")
    if config.train.compile not in TRAIN_COMPILE_MODES:
        problems.append(f"train.compile must be false, blocks or full (true: full), got {config.train.compile!r}")
    return problems


def load_training_config(
    source: ConfigSource | Sequence[ConfigSource] | None = None, overrides: Sequence[str] | None = None
) -> TrainingConfig:
    """The config loader with the training schema: YAML paths, dicts or configs merged left to right onto
    :class:`TrainingConfig`, then ``key.sub=value`` overrides. Unknown keys and wrong types in any section, and the
    cross-field problems of the model and training sections, raise ``ConfigError`` naming the file or override."""
    return load_config(source, overrides, schema=TrainingConfig)
