"""DiffTalk as a plain ``nn.Module``: encode conditions, predict noise, training loss, sampling.

Attribute names are the reference's (``model.diffusion_model``, ``first_stage_model``,
``cond_stage_model_for_audio``, ``cond_stage_model_for_audio_smooth``, ``cond_stage_model_for_ldm``,
``model_ema`` and the schedule buffers), so ``state_dict()`` has exactly the keys of an original checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import VQModel
from .conditions import DiffTalkConditions
from .config import FirstStageConfig, ModelConfig
from .ema import LitEma
from .encoders import AudioAttNet, AudioNet, LdmNet
from .samplers import ddim_sample, dpm_solver_pp_sample
from .schedule import extract, linear_sqrt_betas, schedule_buffers
from .unet import UNetModel

log = logging.getLogger(__name__)


def build_first_stage(cfg: FirstStageConfig) -> VQModel:
    """The VQ first stage (untrained) from the ``model.first_stage`` config."""
    return VQModel(
        embed_dim=cfg.embed_dim,
        n_embed=cfg.n_embed,
        z_channels=cfg.z_channels,
        resolution=cfg.resolution,
        in_channels=cfg.in_channels,
        out_ch=cfg.out_ch,
        ch=cfg.ch,
        ch_mult=cfg.ch_mult,
        num_res_blocks=cfg.num_res_blocks,
        attn_resolutions=cfg.attn_resolutions,
        dropout=cfg.dropout,
    )


class DiffusionWrapper(nn.Module):
    """Holds the UNet as ``diffusion_model`` and feeds it the conditions in the order the weights expect."""

    def __init__(self, unet: UNetModel) -> None:
        super().__init__()
        self.diffusion_model = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: DiffTalkConditions) -> torch.Tensor:
        return self.diffusion_model(cond.concat(x), t, context=cond.context())


class DiffTalkModel(nn.Module):
    """The DiffTalk latent diffusion model (no training loop; see ``LatentDiffusion`` for Lightning)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = config or ModelConfig()
        self.config = config
        dcfg, ucfg, fcfg, ccfg = config.diffusion, config.unet, config.first_stage, config.conditioning
        self.num_timesteps = dcfg.timesteps
        self.scale_factor = dcfg.scale_factor
        self.channels = ucfg.out_channels
        self.image_size = ucfg.image_size

        self.model = DiffusionWrapper(
            UNetModel(
                image_size=ucfg.image_size,
                in_channels=ucfg.in_channels,
                model_channels=ucfg.model_channels,
                out_channels=ucfg.out_channels,
                num_res_blocks=ucfg.num_res_blocks,
                attention_resolutions=ucfg.attention_resolutions,
                channel_mult=ucfg.channel_mult,
                num_head_channels=ucfg.num_head_channels,
                transformer_depth=ucfg.transformer_depth,
                context_dim=ucfg.context_dim,
                dropout=ucfg.dropout,
                gradient_checkpointing=ucfg.gradient_checkpointing,
            )
        )
        self.use_ema = dcfg.use_ema
        if self.use_ema:
            self.model_ema = LitEma(self.model, decay=dcfg.ema_decay)

        for name, value in schedule_buffers(
            linear_sqrt_betas(dcfg.timesteps, dcfg.linear_start, dcfg.linear_end)
        ).items():
            self.register_buffer(name, value)

        self.first_stage_model = build_first_stage(fcfg)
        self.first_stage_model.eval()
        self.first_stage_model.requires_grad_(False)

        self.cond_stage_model_for_audio = AudioNet(
            dim_aud=ccfg.audio_dim,
            win_size=ccfg.audio_window,
            feature_dim=ccfg.audio_feature_dim,
            feature_window=ccfg.audio_window,
        )
        self.cond_stage_model_for_audio_smooth = AudioAttNet(
            dim_aud=ccfg.audio_attention_dim, seq_len=ccfg.audio_smooth_windows
        )
        self.cond_stage_model_for_ldm = LdmNet(dim_out=ccfg.landmark_dim, num_points=ccfg.landmark_count)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> DiffTalkModel:
        super().train(mode)
        self.first_stage_model.eval()  # frozen: never in training mode
        return self

    @property
    def device(self) -> torch.device:
        return self.betas.device

    # ------------------------------------------------------------ first stage
    @torch.no_grad()
    def encode_first_stage(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, C, H/4, W/4) latents (not quantized) x scale_factor."""
        return self.scale_factor * self.first_stage_model.encode(images)

    @torch.no_grad()
    def decode_first_stage(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images (raw decoder output, roughly [-1, 1], not clamped); quantizes first."""
        return self.first_stage_model.decode(latents / self.scale_factor)

    # ------------------------------------------------------------- conditions
    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, smooth, window, dim) audio features, e.g. (B, 8, 16, 29) -> (B, audio_dim)."""
        ccfg = self.config.conditioning
        expected = (ccfg.audio_smooth_windows, ccfg.audio_window, ccfg.audio_feature_dim)
        if tuple(audio.shape[1:]) != expected:
            raise ValueError(
                f"audio features must have shape (B, {', '.join(map(str, expected))}), got {tuple(audio.shape)}"
            )
        b = audio.shape[0]
        per_window = self.cond_stage_model_for_audio(audio.reshape(-1, ccfg.audio_window, ccfg.audio_feature_dim))
        return self.cond_stage_model_for_audio_smooth(per_window.reshape(b, ccfg.audio_smooth_windows, -1))

    def encode_landmarks(self, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 39, 2) landmarks in 256-pixel units -> (B, landmark_dim)."""
        n = self.config.conditioning.landmark_count
        if tuple(landmarks.shape[1:]) != (n, 2):
            raise ValueError(f"landmarks must have shape (B, {n}, 2), got {tuple(landmarks.shape)}")
        return self.cond_stage_model_for_ldm(landmarks)

    def encode_conditions(
        self,
        audio: torch.Tensor,
        landmarks: torch.Tensor,
        reference: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
        *,
        reference_latent: torch.Tensor | None = None,
        masked_latent: torch.Tensor | None = None,
    ) -> DiffTalkConditions:
        """Encode raw conditions. ``reference``/``masked`` are (B, 3, 256, 256) images in [-1, 1]; pass
        ``reference_latent``/``masked_latent`` instead to reuse first-stage latents (e.g. a latent cache)."""
        if (reference is None) == (reference_latent is None) or (masked is None) == (masked_latent is None):
            raise ValueError("give exactly one of reference / reference_latent and one of masked / masked_latent")
        if reference_latent is None:
            reference_latent = self.encode_first_stage(reference)
        if masked_latent is None:
            masked_latent = self.encode_first_stage(masked)
        return DiffTalkConditions(
            audio=self.encode_audio(audio),
            landmarks=self.encode_landmarks(landmarks),
            reference=reference_latent,
            masked=masked_latent,
        )

    # --------------------------------------------------------------- diffusion
    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, conditions: DiffTalkConditions) -> torch.Tensor:
        """UNet noise prediction for noisy latents ``x_t`` at integer timesteps ``t`` (B,)."""
        return self.model(x_t, t, conditions)

    def q_sample(self, latents: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(latents) if noise is None else noise
        return (
            extract(self.sqrt_alphas_cumprod, t, latents.ndim) * latents
            + extract(self.sqrt_one_minus_alphas_cumprod, t, latents.ndim) * noise
        )

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (
            extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
            - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps
        )

    def training_loss(
        self,
        latents: torch.Tensor,
        conditions: DiffTalkConditions,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reference's simple loss: mean squared error between the predicted and the true noise.

        Returns ``(loss, parts)`` where ``parts`` has ``loss_simple`` and ``loss_vlb`` (weighted by
        ``original_elbo_weight``, 0 for DiffTalk) unreduced over nothing but the batch mean.
        """
        dcfg = self.config.diffusion
        if t is None:
            t = torch.randint(0, self.num_timesteps, (latents.shape[0],), device=latents.device)
        noise = torch.randn_like(latents) if noise is None else noise
        x_noisy = self.q_sample(latents, t, noise)
        pred = self.predict_eps(x_noisy, t, conditions).float()
        target = noise.float()
        if dcfg.loss_type == "l2":
            per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        else:
            per_sample = (pred - target).abs().mean(dim=(1, 2, 3))
        loss_simple = per_sample.mean()
        loss = dcfg.l_simple_weight * loss_simple
        parts = {"loss_simple": loss_simple.detach()}
        if dcfg.original_elbo_weight:
            loss_vlb = (self._lvlb_weights().to(per_sample.device)[t] * per_sample).mean()
            loss = loss + dcfg.original_elbo_weight * loss_vlb
            parts["loss_vlb"] = loss_vlb.detach()
        parts["loss"] = loss.detach()
        return loss, parts

    def _lvlb_weights(self) -> torch.Tensor:
        alphas = 1.0 - self.betas
        w = self.betas**2 / (2 * self.posterior_variance * alphas * (1 - self.alphas_cumprod))
        w[0] = w[1]
        return w

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        conditions: DiffTalkConditions,
        steps: int = 200,
        eta: float = 0.0,
        x_T: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampler: str = "ddim",
        progress: bool = False,
    ) -> torch.Tensor:
        """Sample latents. ``mask`` (B or 1, 1, h, w): 1 keeps ``x0``'s region (re-noised each step), 0 generates.

        ``sampler`` is ``"ddim"`` (reference-exact) or ``"dpm++"`` (DPM-Solver++ 2M, fewer steps).
        """
        b = conditions.batch_size
        if x_T is None:
            shape = (b, self.channels, self.image_size, self.image_size)
            gen_device = generator.device if generator is not None else self.device
            x_T = torch.randn(shape, generator=generator, device=gen_device).to(self.device)
        # the sampler state stays in float32 even when the UNet runs under bf16 autocast
        x_T = x_T.to(self.device, torch.float32)
        x0 = x0.float() if x0 is not None else None
        mask = mask.to(x_T.device, torch.float32) if mask is not None else None

        def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.predict_eps(x, t, conditions).float()

        if sampler == "ddim":
            return ddim_sample(eps_fn, self.alphas_cumprod, x_T, steps, eta, x0, mask, generator, progress)
        if sampler in ("dpm++", "dpmpp", "dpm-solver++"):
            if eta:
                raise ValueError("the DPM-Solver++ sampler is deterministic: eta must be 0")
            return dpm_solver_pp_sample(eps_fn, self.alphas_cumprod, x_T, steps, x0, mask, generator, progress)
        raise ValueError(f"unknown sampler {sampler!r}: use 'ddim' or 'dpm++'")

    # ---------------------------------------------------------------------- EMA
    @contextmanager
    def ema_scope(self, context: str | None = None) -> Iterator[None]:
        """Temporarily swap the EMA weights into the UNet."""
        if self.use_ema:
            self.model_ema.store(self.model.parameters())
            self.model_ema.copy_to(self.model)
            if context:
                log.info("%s: switched to EMA weights", context)
        try:
            yield
        finally:
            if self.use_ema:
                self.model_ema.restore(self.model.parameters())
                if context:
                    log.info("%s: restored training weights", context)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """UNet and condition encoders (the first stage stays frozen)."""
        return [
            *self.model.parameters(),
            *self.cond_stage_model_for_audio.parameters(),
            *self.cond_stage_model_for_audio_smooth.parameters(),
            *self.cond_stage_model_for_ldm.parameters(),
        ]
