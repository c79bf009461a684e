"""``LatentDiffusion``: the DiffTalk engine as a Lightning module (training orchestration only).

A thin shell over :class:`~talkingface.model.image_driven_talkingface.DiffTalk.model.DiffTalkModel` (it subclasses
it, so the state dict keys are the reference's): batches to engine inputs, the Lightning steps, the EMA hook, the
optimizer, logging and checkpoint hooks. No diffusion maths here: losses are the engine's ``training_loss``,
validation sampling its ``inpaint``.

Semantics follow the reference trainer (``sstzal/DiffTalk`` ``ddpm_talking.py``): AdamW over the UNet and the
three condition encoders (the VQ first stage stays frozen), the simple eps loss, the EMA of the UNet updated after
every optimizer step, validation loss with and without EMA. Checkpoints carry one plain top-level entry next to
Lightning's: ``difftalk_config`` (the whole config as a dict, audio feature kind included), so that they load
with ``torch.load(..., weights_only=True)`` and ``get_difftalk_inference`` rebuilds the right model.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from einops import rearrange

from talkingface.constants import MODEL_LANDMARK_ROWS, NOSE_TIP
from talkingface.metrics.batch import batch_metrics
from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import CheckpointError, check_feature_kind
from talkingface.model.image_driven_talkingface.DiffTalk.conditions import DiffTalkConditions
from talkingface.model.image_driven_talkingface.DiffTalk.config import (
    CONFIG_CKPT_KEY,
    SAMPLING_CKPT_KEY,
    ModelConfig,
    checkpoint_feature_kind,
)
from talkingface.model.image_driven_talkingface.DiffTalk.model import DiffTalkModel
from talkingface.model.image_driven_talkingface.DiffTalk.plan import (
    DDIM,
    DPM_SOLVER_PP,
    IMAGE_LOG_DDIM_STEPS,
    VALIDATION_STEPS,
    SamplingPlan,
    make_plan,
)

log = logging.getLogger(__name__)

# batch keys written by the dataset (channels-last images in [-1, 1], as the reference dataset yields them)
IMAGE_KEY, REFERENCE_KEY, MASKED_KEY = "image", "reference_img", "image_mask"
LANDMARKS_KEY, AUDIO_KEY = "landmarks", "audio_smooth"
# optional keys of a precomputed first-stage latent cache (unscaled first-stage latents)
LATENT_KEY, REFERENCE_LATENT_KEY, MASKED_LATENT_KEY = "latent", "reference_latent", "masked_latent"
# the nose tip (iBUG 30) among the model's 39 landmarks (rows 0-3, then 13-47): the training mask hides the
# rows from it down, which is the region the model has to generate
NOSE_TIP_ROW = MODEL_LANDMARK_ROWS.index(NOSE_TIP)


def fused_adamw_supported(params: list[torch.nn.Parameter]) -> bool:
    """The fused AdamW kernel is used for parameters on a GPU."""
    return all(p.is_cuda for p in params)


class LatentDiffusion(DiffTalkModel, pl.LightningModule):
    """DiffTalk with Lightning steps: AdamW over UNet + condition encoders, EMA after every optimizer step.

    Args:
        config: the model section of the config.
        learning_rate: the (already scaled) AdamW learning rate; default ``config.base_learning_rate``.
        run_config: the whole config as a plain dict (``config_to_dict``), stored in every checkpoint.
        channels_last: keep UNet activations and weights in channels-last memory format (faster convs on GPU).
        fused_optimizer: use the fused CUDA AdamW kernel when the parameters are on a GPU.
        validation_seed: validation noise and timesteps are drawn from a generator seeded with
            ``validation_seed + batch_idx``, so validation losses are comparable across epochs.
        val_metrics_batches: on this many validation batches per epoch, sample frames with the EMA weights
            (DPM-Solver++, ``val_metrics_steps`` steps), decode them and log PSNR/SSIM against the target frame,
            on the whole frame and on the generated region (``val/psnr``, ``val/region_ssim``, ...). 0: off.
        lr_warmup_steps: the learning rate rises linearly from ``lr / lr_warmup_steps`` to ``lr`` over this many
            optimizer steps (0: constant, as the reference).
    """

    def __init__(
        self,
        config: ModelConfig | None = None,
        learning_rate: float | None = None,
        run_config: dict[str, Any] | None = None,
        channels_last: bool = False,
        fused_optimizer: bool = True,
        validation_seed: int = 1234,
        val_metrics_batches: int = 1,
        val_metrics_steps: int = VALIDATION_STEPS,
        lr_warmup_steps: int = 0,
    ) -> None:
        super().__init__(config)
        self.learning_rate = self.config.base_learning_rate if learning_rate is None else learning_rate
        self.run_config = run_config
        self.channels_last = channels_last
        self.fused_optimizer = fused_optimizer
        self.validation_seed = validation_seed
        self.val_metrics_batches = val_metrics_batches
        self.val_metrics_steps = val_metrics_steps
        self.lr_warmup_steps = int(lr_warmup_steps)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ batches
    def _images(self, batch: dict[str, Any], key: str) -> torch.Tensor:
        x = batch[key]
        if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
            x = rearrange(x, "b h w c -> b c h w")
        return x.to(self.device, memory_format=torch.contiguous_format).float()

    def _latent(self, batch: dict[str, Any], image_key: str, latent_key: str) -> torch.Tensor:
        if latent_key in batch:
            z = self.scale_latents(batch[latent_key].to(self.device, non_blocking=True).float())
        else:
            z = self.encode_first_stage(self._images(batch, image_key))
        return z.contiguous(memory_format=torch.channels_last) if self.channels_last else z

    def get_input(self, batch: dict[str, Any]) -> tuple[torch.Tensor, DiffTalkConditions]:
        """Latents of the target frame and its encoded conditions from a dataset batch.

        Uses the cached latents (``latent``, ``reference_latent``, ``masked_latent``) when the batch has them,
        otherwise encodes the images with the frozen first stage.
        """
        z = self._latent(batch, IMAGE_KEY, LATENT_KEY)
        cond = self.encode_conditions(
            batch[AUDIO_KEY].to(self.device, non_blocking=True).float(),
            batch[LANDMARKS_KEY].to(self.device, non_blocking=True).float(),
            reference_latent=self._latent(batch, REFERENCE_KEY, REFERENCE_LATENT_KEY),
            masked_latent=self._latent(batch, MASKED_KEY, MASKED_LATENT_KEY),
        )
        return z, cond

    def shared_step(
        self, batch: dict[str, Any], t: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z, cond = self.get_input(batch)
        return self.training_loss(z, cond, t=t, noise=noise)

    # -------------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, parts = self.shared_step(batch)
        bs = batch[AUDIO_KEY].shape[0]
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, prog_bar=True, on_step=True, batch_size=bs)
        return loss

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Validation loss with the training weights and with the EMA weights, on the same noise and timesteps."""
        bs = batch[AUDIO_KEY].shape[0]
        z, cond = self.get_input(batch)
        gen = torch.Generator(device=self.device).manual_seed(self.validation_seed + batch_idx)
        t = torch.randint(0, self.num_timesteps, (bs,), device=self.device, generator=gen)
        noise = torch.randn(z.shape, device=self.device, generator=gen, dtype=z.dtype)
        _, parts = self.training_loss(z, cond, t=t, noise=noise)
        self.log_dict({f"val/{k}": v for k, v in parts.items()}, on_epoch=True, batch_size=bs, sync_dist=True)
        if self.use_ema:
            with self.ema_scope():
                _, parts_ema = self.training_loss(z, cond, t=t, noise=noise)
            self.log_dict(
                {f"val/{k}_ema": v for k, v in parts_ema.items()}, on_epoch=True, batch_size=bs, sync_dist=True
            )

        if batch_idx < self.val_metrics_batches:
            metrics = self.sample_metrics(batch, batch_idx)
            self.log_dict({f"val/{k}": v for k, v in metrics.items()}, on_epoch=True, batch_size=bs, sync_dist=True)

    def _inpaint_batch(self, batch: dict[str, Any], plan: SamplingPlan, **sampling: Any) -> torch.Tensor:
        """Frames generated by the engine from a batch's conditions (no kept region: the whole latent is
        sampled, as the reference's validation samples), with the EMA weights and the model in eval mode."""
        was_training = self.training
        self.eval()
        try:
            with self.ema_scope():
                return self.inpaint(
                    audio=batch[AUDIO_KEY].to(self.device, non_blocking=True).float(),
                    landmarks=batch[LANDMARKS_KEY].to(self.device, non_blocking=True).float(),
                    reference_latent=self._latent(batch, REFERENCE_KEY, REFERENCE_LATENT_KEY),
                    masked_latent=self._latent(batch, MASKED_KEY, MASKED_LATENT_KEY),
                    plan=plan,
                    **sampling,
                )
        finally:
            self.train(was_training)

    def metrics_plan(self) -> SamplingPlan:
        """The sampling plan of the validation samples: DPM-Solver++ with ``val_metrics_steps`` steps."""
        return make_plan(DPM_SOLVER_PP, self.val_metrics_steps, self.alphas_cumprod)

    @torch.no_grad()
    def sample_metrics(self, batch: dict[str, Any], batch_idx: int = 0) -> dict[str, float]:
        """PSNR/SSIM of frames sampled with the EMA weights against the batch's target frames (whole frame, and
        ``region_*`` on the rows from the nose tip down, which the masked input hides)."""
        b = batch[AUDIO_KEY].shape[0]
        gen = torch.Generator(device=self.device).manual_seed(self.validation_seed + 100_000 + batch_idx)
        noise = self.initial_noise(b, gen)
        pred = self._inpaint_batch(batch, self.metrics_plan(), noise=noise, generator=gen)
        if IMAGE_KEY in batch:
            target = self._images(batch, IMAGE_KEY)
        else:
            target = self.decode_first_stage(self._latent(batch, IMAGE_KEY, LATENT_KEY))
        _, _, h, w = target.shape
        region = torch.zeros(b, h, w, device=target.device)
        scale = h / float(self.config.first_stage.resolution)  # landmarks are in model-image pixels
        for i, y in enumerate(batch[LANDMARKS_KEY][:, NOSE_TIP_ROW, 1].tolist()):
            region[i, min(max(int(y * scale), 0), h - 1) :] = 1
        return batch_metrics(pred.float(), target, region=region)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the EMA update (once per optimizer step, before any callback sees the batch
        end, so checkpoints written at a batch end hold the EMA of that step). The reference updates after every
        batch; without gradient accumulation that is the same."""
        super().optimizer_step(*args, **kwargs)
        if self.use_ema:
            self.model_ema(self.model)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        params = [p for p in self.trainable_parameters() if p.requires_grad]
        fused = self.fused_optimizer and fused_adamw_supported(params) and not self._clips_under_amp()
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, fused=fused or None)
        if self.lr_warmup_steps <= 0:
            return optimizer
        warmup = self.lr_warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _clips_under_amp(self) -> bool:
        """True when Lightning will clip gradients under mixed precision (``16-mixed``/``bf16-mixed``): its AMP
        plugin refuses to clip for an optimizer that unscales internally, which the fused AdamW does, so the
        multi-tensor AdamW is used instead (found on an H100: ``train.precision=bf16-mixed`` crashed at step 1)."""
        trainer = getattr(self, "_trainer", None)
        if trainer is None or not (trainer.gradient_clip_val or 0) > 0:
            return False
        from pytorch_lightning.plugins.precision import MixedPrecision

        if isinstance(trainer.precision_plugin, MixedPrecision):
            log.info("mixed precision with gradient clipping: using the multi-tensor AdamW instead of the fused one")
            return True
        return False

    # -------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the config and feature kind (and a recorded sampler, e.g. a distilled student's) as plain Python
        values (``weights_only``-loadable)."""
        checkpoint.pop("hyper_parameters", None)
        if self.run_config is not None:
            checkpoint[CONFIG_CKPT_KEY] = self.run_config  # holds the feature kind (model.conditioning)
        if self.sampling is not None:
            checkpoint[SAMPLING_CKPT_KEY] = self.sampling.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        try:
            check_feature_kind(checkpoint_feature_kind(checkpoint), self.config.conditioning.audio_feature_kind)
        except CheckpointError as err:
            raise ValueError(str(err)) from None

    # -------------------------------------------------------------------- images
    @torch.no_grad()
    def log_images(
        self,
        batch: dict[str, Any],
        max_images: int = 8,
        ddim_steps: int = IMAGE_LOG_DDIM_STEPS,
        ddim_eta: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Images for a sample grid, (N, 3, H, W) in [-1, 1]: ``inputs``, ``reference``, ``masked`` and
        ``samples`` (DDIM with the EMA weights, decoded), like the reference's ``log_images``.

        When the batch holds cached latents instead of images, the first three are decoded from the latents.
        """
        n = min(max_images, batch[AUDIO_KEY].shape[0])
        small = {k: v[:n] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        out: dict[str, torch.Tensor] = {}
        for name, image_key, latent_key in (
            ("inputs", IMAGE_KEY, LATENT_KEY),
            ("reference", REFERENCE_KEY, REFERENCE_LATENT_KEY),
            ("masked", MASKED_KEY, MASKED_LATENT_KEY),
        ):
            if image_key in small:
                out[name] = self._images(small, image_key)
            else:
                out[name] = self.decode_first_stage(self._latent(small, image_key, latent_key).float())
        noise = self.initial_noise(n, generator)
        plan = make_plan(DDIM, ddim_steps, self.alphas_cumprod, eta=ddim_eta)
        out["samples"] = self._inpaint_batch(small, plan, noise=noise, generator=generator)
        return {k: v.float().clamp(-1.0, 1.0) for k, v in out.items()}
