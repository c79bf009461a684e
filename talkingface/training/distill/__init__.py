"""The trainer's distillation modes: a trained DiffTalk (the teacher) into a few-step DDIM student, by progressive
distillation (Salimans & Ho, ICLR 2022; ``distill.method=progressive``, the default) or by trajectory distillation
(``distill.method=trajectory``, :class:`TrajectoryDistillation`: the student's whole unrolled chain regressed on the
teacher's many-step sample).

    python trainer/DiffTalkTrainer.py --base configs/latent-diffusion/talking.yaml -t \\
        distill.teacher=logs/<run>/checkpoints/last.ckpt distill.teacher_steps=16 distill.student_steps=4

Each round halves the DDIM steps (16 -> 8 -> 4): the student starts as a copy of the teacher's EMA weights (so its
parameter names and shapes are the teacher's, and it stays eps-parameterised: the ordinary DDIM sampler runs it),
and learns to do in one DDIM step what the teacher does in two. The student's grid is every other timestep of the
teacher's (``targets.nested_timesteps``); after ``distill.steps_per_round`` optimizer steps the student's EMA
becomes the next round's teacher.

One training step: target latents ``x0`` and conditions from the ordinary batch; a student timestep ``t``; ``x_t``
= ``q_sample(x0, t)`` with the inpainting replacement (kept region := ``x0`` re-noised to ``t``, the samplers'
``inpaint_replace``); two teacher DDIM steps ``t -> t' -> t''`` with the replacement at ``t'``; the closed-form noise
for which one student DDIM step ``t -> t''`` lands on the teacher's ``x_t''`` (``targets.two_step_eps_target``);
the loss on the generated region only, weighted as the paper's truncated SNR (``x0`` MSE x ``max(SNR, 1)``) or
plain eps MSE (``distill.weighting``). The kept region is the rows above the nose tip (the training mask's rows),
a superset of what the pipeline keeps.

Everything else is the trainer's: the LightningModule base, AdamW, clipping, EMA, data module, latent cache,
checkpoints and slim export; checkpoints additionally record the student's sampler (``difftalk_sampling``), and
``distill_state`` (the round, the SHA-256 of the teacher file the run started from, and the round's teacher weights
after the first round) for ``--resume``. A resume in the first round, whose teacher is still the file, refuses a
teacher file that changed since the run started.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import CheckpointError, load_state_dict_strict
from talkingface.model.image_driven_talkingface.DiffTalk.conditions import DiffTalkConditions
from talkingface.model.image_driven_talkingface.DiffTalk.config import ConfigError, ModelConfig, SamplingSetting
from talkingface.model.image_driven_talkingface.DiffTalk.ema import LitEma
from talkingface.model.image_driven_talkingface.DiffTalk.loader import get_difftalk_inference, resolve_path
from talkingface.model.image_driven_talkingface.DiffTalk.model import DiffTalkModel
from talkingface.model.image_driven_talkingface.DiffTalk.plan import SamplerError, SamplingPlan, make_plan
from talkingface.model.image_driven_talkingface.DiffTalk.samplers import ddim_alphas, inpaint_replace
from talkingface.paths import file_sha256
from talkingface.training.config import DistillConfig, TrainingConfig, load_training_config
from talkingface.training.distill.targets import (
    ddim_trajectory,
    distillation_grids,
    two_step_eps_target,
)
from talkingface.training.module import (
    AUDIO_KEY,
    IMAGE_KEY,
    LANDMARKS_KEY,
    LATENT_KEY,
    MASKED_KEY,
    MASKED_LATENT_KEY,
    NOSE_TIP_ROW,
    REFERENCE_KEY,
    REFERENCE_LATENT_KEY,
    LatentDiffusion,
)

log = logging.getLogger(__name__)

#: Top-level checkpoint entry of a distillation run (outside ``state_dict``, so the parameter names stay DiffTalk's).
DISTILL_STATE_KEY = "distill_state"
#: Entry of ``distill_state``: the SHA-256 (hex) of the teacher file, taken when the run started.
TEACHER_SHA256_KEY = "teacher_sha256"
#: Schedule fields the teacher and the student must share (the targets are built on the schedule).
_SCHEDULE_FIELDS = ("timesteps", "beta_schedule", "linear_start", "linear_end", "parameterization")


def check_distill_config(cfg: TrainingConfig) -> TrainingConfig:
    """Fail early on a missing teacher file or an impossible step schedule (``ConfigError`` naming the file or key);
    returns ``cfg`` with ``train.max_steps`` = rounds x ``distill.steps_per_round`` when it was -1."""
    d = cfg.distill
    if not d.teacher:
        return cfg
    path = resolve_path(d.teacher)
    if not path.is_file():
        raise ConfigError(f"{d.teacher}: distill.teacher: teacher checkpoint not found")
    if d.student and not resolve_path(d.student).is_file():
        raise ConfigError(f"{d.student}: distill.student: student checkpoint not found")
    try:
        grids = distillation_grids(d.teacher_steps, d.student_steps, cfg.model.diffusion.timesteps)
    except SamplerError as err:
        raise ConfigError(f"distill.teacher_steps / distill.student_steps: {err}") from None
    rounds = 1 if d.method == "trajectory" else len(grids) - 1
    if cfg.train.max_steps < 0:
        cfg = load_training_config(cfg, [f"train.max_steps={rounds * d.steps_per_round}"])
    return cfg


def load_teacher(cfg: TrainingConfig, key: str = "teacher") -> DiffTalkModel:
    """The teacher (EMA weights, eval mode, frozen, CPU) from ``distill.teacher`` (or another ``distill`` key naming
    a checkpoint, e.g. ``student``): a trainer ``.ckpt`` or a slim ``.safetensors`` export (its first stage from
    ``model.first_stage.ckpt_path`` when that file exists, else as the loader finds it). Its schedule and audio
    feature kind must be the run's."""
    given = getattr(cfg.distill, key)
    assert given is not None
    path = resolve_path(given)
    first_stage = cfg.model.first_stage.ckpt_path
    first_stage = first_stage if first_stage and resolve_path(first_stage).is_file() else None
    try:
        teacher = get_difftalk_inference(ckpt=path, first_stage_ckpt=first_stage, device="cpu", use_ema=True)
    except (CheckpointError, ConfigError) as err:
        raise ConfigError(f"{given}: distill.{key}: {err}") from None
    for name in _SCHEDULE_FIELDS:
        mine, theirs = getattr(cfg.model.diffusion, name), getattr(teacher.config.diffusion, name)
        if mine != theirs:
            raise ConfigError(f"{given}: distill.{key}: its model.diffusion.{name} is {theirs}, the config's is {mine}")
    kind, teacher_kind = cfg.model.conditioning.audio_feature_kind, teacher.config.conditioning.audio_feature_kind
    if kind is not None and teacher_kind is not None and kind != teacher_kind:
        raise ConfigError(f"{given}: distill.{key}: trained on '{teacher_kind}' audio features, the data has '{kind}'")
    return teacher


def kept_region_mask(landmarks: torch.Tensor, latent_size: int, image_size: int) -> torch.Tensor:
    """(B, 1, h, w) latent mask, 1 = keep (rows above the nose tip), 0 = generate (rows from the nose tip down, the
    region the training's masked image hides). ``landmarks``: (B, 39, 2) in model-image pixels."""
    b = landmarks.shape[0]
    rows = torch.arange(latent_size, device=landmarks.device).view(1, latent_size)
    nose = (landmarks[:, NOSE_TIP_ROW, 1] * latent_size / image_size).floor().clamp(0, latent_size - 1)
    keep = (rows < nose.view(b, 1)).float()  # (B, h)
    return keep.view(b, 1, latent_size, 1).expand(b, 1, latent_size, latent_size).contiguous()


def generated_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error over the generated region (``mask`` 0) of (B, C, h, w) latents."""
    generated = 1.0 - mask
    return ((pred - target) ** 2 * generated).sum(dim=(1, 2, 3)) / (
        generated.sum(dim=(1, 2, 3)) * pred.shape[1]
    ).clamp_min(1.0)


def recorded_teacher_grid(teacher: DiffTalkModel, distill: DistillConfig) -> tuple[int, ...] | None:
    """The DDIM grid a distilled teacher records (a student distilled further continues from its own grid, e.g.
    188, 438, 688, 938 -> 438, 938 -> 938), else None (an ordinary teacher: the uniform grid)."""
    sampling = getattr(teacher, "sampling", None)
    if sampling is None or sampling.sampler != "ddim" or not sampling.timesteps:
        return None
    if len(sampling.timesteps) != distill.teacher_steps:
        raise ConfigError(
            f"{distill.teacher}: distill.teacher_steps: the teacher is a distilled student sampled with DDIM "
            f"{len(sampling.timesteps)} steps (timesteps {list(sampling.timesteps)}); set "
            f"distill.teacher_steps={len(sampling.timesteps)}"
        )
    log.info("the teacher records its DDIM grid %s: distilling from it", list(sampling.timesteps))
    return tuple(int(t) for t in sampling.timesteps)


class ProgressiveDistillation(LatentDiffusion):
    """LatentDiffusion whose training step is progressive distillation from ``teacher``.

    The teacher is kept outside the module's state dict and parameters (a plain attribute holding a list), so the
    checkpoints hold exactly a DiffTalk state dict; it follows the module to its device at the start of fitting.

    Args:
        config: the model section (the teacher's architecture).
        teacher: the round-0 teacher (:func:`load_teacher`).
        distill: the ``distill`` section.
        **kwargs: as :class:`LatentDiffusion`.
    """

    def __init__(self, config: ModelConfig, teacher: DiffTalkModel, distill: DistillConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.distill = distill
        self.grids = distillation_grids(
            distill.teacher_steps, distill.student_steps, self.num_timesteps, recorded_teacher_grid(teacher, distill)
        )
        self.rounds = len(self.grids) - 1
        self._teacher = [teacher.eval().requires_grad_(False)]
        # the file the teacher was read from: recorded in the checkpoints, checked when a first-round run resumes
        self.teacher_sha256 = file_sha256(resolve_path(str(distill.teacher)))
        self.round = 0
        self.sampling = self.round_setting(0)

    @property
    def teacher(self) -> DiffTalkModel:
        return self._teacher[0]

    def round_setting(self, r: int) -> SamplingSetting:
        """The sampler of the student of round ``r`` (what a checkpoint written in that round records)."""
        grid = self.grids[r + 1]
        return SamplingSetting(
            sampler="ddim",
            steps=len(grid),
            timesteps=tuple(int(t) for t in grid),
            method=self.distill.method,
            teacher=Path(str(self.distill.teacher)).name,
            teacher_steps=self.distill.teacher_steps,
        )

    # ------------------------------------------------------------------ set-up
    def init_from_teacher(self) -> None:
        """The student := the teacher (EMA UNet, encoders, first stage; strict: same names and shapes), with a fresh
        EMA that starts at those weights."""
        self._init_from(self.teacher, "teacher", str(self.distill.teacher))

    def _init_from(self, source: DiffTalkModel, key: str, path: str) -> None:
        sd = {k: v for k, v in source.state_dict().items() if not k.startswith("model_ema.")}
        sd.update({k: v for k, v in self.state_dict().items() if k.startswith("model_ema.")})
        try:
            load_state_dict_strict(self, sd, source=f"{key} {path}")
        except CheckpointError as err:
            raise ConfigError(f"{path}: distill.{key}: {err}") from None
        if self.use_ema:
            self.model_ema = LitEma(self.model, decay=self.config.diffusion.ema_decay)
        log.info("student initialised from the %s %s", key, path)

    def on_fit_start(self) -> None:
        self.teacher.to(self.device)

    def metrics_plan(self) -> SamplingPlan:
        """Validation samples with the current student's own sampler."""
        s = self.round_setting(self.round)
        return make_plan(s.sampler, s.steps, self.alphas_cumprod, timesteps=s.timesteps)

    # ------------------------------------------------------------------- rounds
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        r = min(self.global_step // self.distill.steps_per_round, self.rounds - 1)
        while self.round < r:
            self.advance_round()

    @torch.no_grad()
    def advance_round(self) -> None:
        """The student's EMA weights become the teacher; the student starts the next round from them, with its EMA
        restarted (warm-up from zero)."""
        teacher = self.teacher
        if self.use_ema:
            self.model_ema.copy_to(self.model)
            # the next round's EMA averages that round's student only: without the restart its warm-up is long over
            # (decay at the config's value) and the final student kept a large share of the previous round's weights
            self.model_ema.restart(self.model)
        teacher.model.load_state_dict(self.model.state_dict())
        for name in ("cond_stage_model_for_audio", "cond_stage_model_for_audio_smooth", "cond_stage_model_for_ldm"):
            getattr(teacher, name).load_state_dict(getattr(self, name).state_dict())
        self.round += 1
        self.sampling = self.round_setting(self.round)
        log.info(
            "distillation round %d/%d: %d -> %d DDIM steps (student timesteps %s)",
            self.round + 1,
            self.rounds,
            len(self.grids[self.round]),
            self.sampling.steps,
            list(self.sampling.timesteps),
        )

    # -------------------------------------------------------------------- steps
    def batch_inputs(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, DiffTalkConditions, DiffTalkConditions, torch.Tensor]:
        """``(x0 latents, the student's conditions, the teacher's conditions (no gradient), kept-region mask)`` of a
        training batch (the latent cache's latents when the batch has them)."""
        z = self._latent(batch, IMAGE_KEY, LATENT_KEY)
        ref = self._latent(batch, REFERENCE_KEY, REFERENCE_LATENT_KEY)
        masked = self._latent(batch, MASKED_KEY, MASKED_LATENT_KEY)
        audio = batch[AUDIO_KEY].to(self.device, non_blocking=True).float()
        landmarks = batch[LANDMARKS_KEY].to(self.device, non_blocking=True).float()
        cond = self.encode_conditions(audio, landmarks, reference_latent=ref, masked_latent=masked)
        with torch.no_grad():
            teacher_cond = self.teacher.encode_conditions(audio, landmarks, reference_latent=ref, masked_latent=masked)
        mask = kept_region_mask(landmarks, z.shape[-1], self.config.first_stage.resolution)
        return z, cond, teacher_cond, mask

    def distill_loss(
        self,
        batch: dict[str, Any],
        student_index: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The distillation loss of a batch. ``student_index`` (B,): which student step of the round's grid (default:
        uniform); ``noise``/``generator``: the draws of ``x_t`` and of the kept-region re-noising."""
        z, cond, teacher_cond, mask = self.batch_inputs(batch)

        grid = self.grids[self.round]  # the teacher's increasing grid; the student's is grid[1::2]
        a_t_all, a_prev_all = ddim_alphas(self.alphas_cumprod, grid)
        b = z.shape[0]
        if student_index is None:
            student_index = torch.randint(0, len(grid) // 2, (b,), device=self.device, generator=generator)
        i = 2 * student_index.to(self.device) + 1  # teacher index of the student's timestep
        grid_t = torch.as_tensor(grid, device=self.device)
        t, t_mid = grid_t[i], grid_t[i - 1]
        a_t, a_mid, a_end = (v.view(b, 1, 1, 1) for v in (a_t_all[i], a_prev_all[i], a_prev_all[i - 1]))

        if noise is None:
            noise = torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
        x_t = inpaint_replace(self.q_sample(z, t, noise), a_t, z, mask, generator)
        with torch.no_grad():
            target = two_step_eps_target(
                self.teacher.eps_fn(teacher_cond), x_t, t, t_mid, a_t, a_mid, a_end, z, mask, generator
            ).float()
        per_sample = generated_mse(self.predict_eps(x_t, t, cond).float(), target, mask)
        if self.distill.weighting == "truncated_snr":  # x0 MSE x max(SNR, 1) == eps MSE x max(1 / SNR, 1)
            per_sample = per_sample * ((1.0 - a_t) / a_t).clamp_min(1.0).view(b)
        loss = per_sample.mean()
        return loss, {"loss_distill": loss.detach(), "round": torch.tensor(float(self.round))}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, parts = self.distill_loss(batch)
        bs = batch[AUDIO_KEY].shape[0]
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, prog_bar=True, on_step=True, batch_size=bs)
        return loss

    # -------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # records self.sampling: the current round's student
        state: dict[str, Any] = {"round": self.round, TEACHER_SHA256_KEY: self.teacher_sha256}
        if self.round > 0:  # the round's teacher is no longer the file's
            state["teacher"] = {
                k: v.detach().cpu()
                for k, v in self.teacher.state_dict().items()
                if not k.startswith(("model_ema.", "first_stage_model."))
            }
        checkpoint[DISTILL_STATE_KEY] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get(DISTILL_STATE_KEY) or {}
        self.round = int(state.get("round", 0))
        self.check_teacher_file(state.get(TEACHER_SHA256_KEY))
        if "teacher" in state:
            load_round_teacher(self.teacher, state["teacher"])
        self.sampling = self.round_setting(self.round)

    def check_teacher_file(self, recorded: object) -> None:
        """On resume: the teacher file must be the one the run started from (``recorded``, its SHA-256) while the
        round's teacher is that file (the first round); later rounds' teachers come from the checkpoint. A checkpoint
        that records no checksum (older versions) resumes with a warning."""
        teacher, now = str(self.distill.teacher), self.teacher_sha256
        if not isinstance(recorded, str):
            if self.round == 0:
                log.warning(
                    "%s: the checkpoint records no checksum of the teacher (written by an older version), so it "
                    "cannot be checked that this is the file the run started from; continuing with it",
                    teacher,
                )
            return
        if recorded == now:
            return
        if self.round == 0:
            raise ConfigError(
                f"{teacher}: the teacher changed since this run started (sha256 {recorded[:16]}... recorded, "
                f"{now[:16]}... now); put the original teacher file back to resume, or start a new run "
                "(another --run-dir) to distil this one"
            )
        log.warning(
            "%s: the teacher file changed since this run started; round %d's teacher comes from the checkpoint, so "
            "the run continues with it",
            teacher,
            self.round + 1,
        )
        self.teacher_sha256 = recorded  # the run's teacher is still the one it started from


class TrajectoryDistillation(ProgressiveDistillation):
    """LatentDiffusion whose training step regresses the student's whole DDIM chain on the teacher's.

    Progressive distillation trains each student step on ``x_t`` drawn from the forward process of the data; at
    sampling time the student's later steps start from its own earlier outputs instead, and the small errors of
    every step add up (the synthetic progressive 4-step student lost 1.2 dB of mouth PSNR that way). Here one
    training step draws ``x_T``, runs the teacher's DDIM over its grid (``distill.teacher_steps`` steps, no
    gradient) and the student's over its own (``distill.student_steps``, the nested grid: 16 -> 188, 438, 688, 938),
    both with the inpainting replacement before every model call, and takes the latent MSE between the two results
    on the generated region, with the gradient through the student's unrolled chain (multistep knowledge
    distillation, after Luhman & Luhman 2021, "Knowledge distillation in iterative generative models for improved
    sampling speed"). One round.

    The student starts from ``student`` (e.g. a progressive student, whose recorded grid must be the run's) or else
    from the teacher. Memory: the unrolled chain keeps the activations of ``student_steps`` UNet calls.
    """

    def __init__(
        self,
        config: ModelConfig,
        teacher: DiffTalkModel,
        distill: DistillConfig,
        student: DiffTalkModel | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, teacher, distill, **kwargs)
        self.grids = [self.grids[0], self.grids[-1]]  # the teacher's grid and the student's: one round
        self.rounds = 1
        self.sampling = self.round_setting(0)
        self._student = [student] if student is not None else []
        if student is not None and student.sampling is not None and student.sampling.timesteps:
            recorded = [int(t) for t in student.sampling.timesteps]
            if recorded != [int(t) for t in self.grids[1]]:
                raise ConfigError(
                    f"{distill.student}: distill.student: it records the DDIM grid {recorded}, this run trains "
                    f"the grid {[int(t) for t in self.grids[1]]} (distill.teacher_steps={distill.teacher_steps}, "
                    f"distill.student_steps={distill.student_steps})"
                )

    def init_from_teacher(self) -> None:
        """The student := ``distill.student`` when given, else the teacher (strict), with a fresh EMA."""
        if self._student:
            self._init_from(self._student[0], "student", str(self.distill.student))
            self._student.clear()  # the weights are copied; drop the extra model
        else:
            super().init_from_teacher()

    def distill_loss(
        self,
        batch: dict[str, Any],
        student_index: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The trajectory loss of a batch. ``noise``: ``x_T`` (default: drawn); ``generator``: that draw and the
        kept-region re-noising (the teacher's and the student's chains each draw their own); ``student_index`` is
        unused (every student step is in the chain)."""
        z, cond, teacher_cond, mask = self.batch_inputs(batch)
        if noise is None:
            noise = torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
        teacher_grid, student_grid = self.grids
        with torch.no_grad():
            target = ddim_trajectory(
                self.teacher.eps_fn(teacher_cond), self.alphas_cumprod, noise, teacher_grid, z, mask, generator
            )

        def student_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.predict_eps(x, t, cond).float()

        pred = ddim_trajectory(student_eps, self.alphas_cumprod, noise, student_grid, z, mask, generator)
        loss = generated_mse(pred.float(), target.float(), mask).mean()
        return loss, {"loss_distill": loss.detach(), "round": torch.tensor(0.0)}


#: Teacher weights a checkpoint's ``distill_state`` leaves out: the teacher has no EMA of its own and shares the
#: student's frozen first stage.
ROUND_TEACHER_SKIPPED = ("model_ema.", "first_stage_model.")


def load_round_teacher(teacher: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a round's teacher saved in ``distill_state`` into ``teacher``: every key but those under
    :data:`ROUND_TEACHER_SKIPPED` must be there and no other; otherwise ``CheckpointError`` with both key lists."""
    result = teacher.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(ROUND_TEACHER_SKIPPED)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{DISTILL_STATE_KEY}: the saved round teacher does not match the model: missing keys {missing}, "
            f"unexpected keys {list(result.unexpected_keys)}"
        )
