"""``LatentDiffusion``: the DiffTalk model as a Lightning module (training orchestration only)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from einops import rearrange

from .conditions import DiffTalkConditions
from .config import ModelConfig
from .model import DiffTalkModel

# batch keys written by the dataset (channels-last images in [-1, 1], as the reference dataset yields them)
IMAGE_KEY, REFERENCE_KEY, MASKED_KEY = "image", "reference_img", "image_mask"
LANDMARKS_KEY, AUDIO_KEY = "landmarks", "audio_smooth"
# optional keys of a precomputed first-stage latent cache
LATENT_KEY, REFERENCE_LATENT_KEY, MASKED_LATENT_KEY = "latent", "reference_latent", "masked_latent"


class LatentDiffusion(DiffTalkModel, pl.LightningModule):
    """DiffTalk with Lightning steps: AdamW over UNet + condition encoders, EMA after every step."""

    def __init__(self, config: ModelConfig | None = None, learning_rate: float | None = None) -> None:
        super().__init__(config)
        self.learning_rate = self.config.base_learning_rate if learning_rate is None else learning_rate

    # ------------------------------------------------------------------ batches
    def _images(self, batch: dict[str, Any], key: str) -> torch.Tensor:
        x = batch[key]
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = rearrange(x, "b h w c -> b c h w")
        return x.to(self.device, memory_format=torch.contiguous_format).float()

    def get_input(self, batch: dict[str, Any]) -> tuple[torch.Tensor, DiffTalkConditions]:
        """Latents of the target frame and its encoded conditions from a dataset batch."""

        def latent(image_key: str, latent_key: str) -> torch.Tensor:
            if latent_key in batch:
                return batch[latent_key].to(self.device).float() * self.scale_factor
            return self.encode_first_stage(self._images(batch, image_key))

        z = latent(IMAGE_KEY, LATENT_KEY)
        cond = self.encode_conditions(
            batch[AUDIO_KEY].to(self.device).float(),
            batch[LANDMARKS_KEY].to(self.device).float(),
            reference_latent=latent(REFERENCE_KEY, REFERENCE_LATENT_KEY),
            masked_latent=latent(MASKED_KEY, MASKED_LATENT_KEY),
        )
        return z, cond

    def shared_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z, cond = self.get_input(batch)
        return self.training_loss(z, cond)

    # -------------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, parts = self.shared_step(batch)
        bs = batch[AUDIO_KEY].shape[0]
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, prog_bar=True, on_step=True, batch_size=bs)
        return loss

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        bs = batch[AUDIO_KEY].shape[0]
        _, parts = self.shared_step(batch)
        self.log_dict({f"val/{k}": v for k, v in parts.items()}, on_epoch=True, batch_size=bs, sync_dist=True)
        if self.use_ema:
            with self.ema_scope():
                _, parts_ema = self.shared_step(batch)
            self.log_dict(
                {f"val/{k}_ema": v for k, v in parts_ema.items()}, on_epoch=True, batch_size=bs, sync_dist=True
            )

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        if self.use_ema:
            self.model_ema(self.model)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.trainable_parameters(), lr=self.learning_rate)
