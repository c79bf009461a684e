"""DiffTalk as a plain ``nn.Module``: encode conditions, predict noise, training loss, sampling, inpainting.

This is the one engine: the lip-sync pipeline, validation sampling and the learnability benchmark all go through
:meth:`DiffTalkModel.inpaint` / :meth:`DiffTalkModel.sample`; none re-implements encode, condition, sample, decode.

Attribute names are the reference's (``model.diffusion_model``, ``first_stage_model``,
``cond_stage_model_for_audio``, ``cond_stage_model_for_audio_smooth``, ``cond_stage_model_for_ldm``,
``model_ema`` and the schedule buffers), so ``state_dict()`` has exactly the keys of an original checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import VQModel
from .conditions import DiffTalkConditions
from .config import FirstStageConfig, ModelConfig, SamplingSetting
from .ema import LitEma
from .encoders import AudioAttNet, AudioNet, LdmNet
from .plan import SamplingPlan, resolve_plan
from .samplers import EpsFn, run_sampler
from .schedule import extract, linear_sqrt_betas, schedule_buffers
from .unet import UNetModel

log = logging.getLogger(__name__)

#: The noise predictor the samplers wrap: ``(x_t, t, conditions) -> eps`` (the UNet with its conditions).
NoisePredictor = Callable[[torch.Tensor, torch.Tensor, DiffTalkConditions], torch.Tensor]
#: An optional wrapper around the noise predictor, e.g. bf16 autocast and/or ``torch.compile``
#: (``talkingface.inference.sampling.UNetRunner``); it must keep the predictor's signature.
EpsWrapper = Callable[[NoisePredictor], NoisePredictor]


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
    """The DiffTalk latent diffusion model (no training loop; ``talkingface.training.module.LatentDiffusion`` adds
    the Lightning steps)."""

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
        #: The sampler a checkpoint records (a distilled student's), set by the loader; None: no recorded one.
        self.sampling: SamplingSetting | None = None

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
        """(B, 3, H, W) images in [-1, 1] -> (B, C, H/f, W/f) latents (not quantized) x scale_factor
        (f: :attr:`first_stage_factor`)."""
        return self.scale_factor * self.first_stage_model.encode(images)

    @torch.no_grad()
    def decode_first_stage(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images (raw decoder output, roughly [-1, 1], not clamped); quantizes first."""
        return self.first_stage_model.decode(latents / self.scale_factor)

    @property
    def first_stage_factor(self) -> int:
        """Image pixels per latent cell along a side (4 for the paper's vq-f4, 8 for talking-512.yaml's vq-f8)."""
        return self.config.first_stage.resolution // self.image_size

    @torch.no_grad()
    def decode_first_stage_window(
        self, latents: torch.Tensor, window: tuple[int, int, int, int], fill: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode only ``latents[..., y0:y1, x0:x1]`` (``window`` in latent cells) into a full-size frame.

        The rest of the frame is ``fill`` ((B, 3, H, W), e.g. the source frame) or 0. Not exact: the decoder's
        GroupNorm statistics and its mid-block attention see only the window, so its pixels differ slightly from
        :meth:`decode_first_stage` near and (less) far from the window's edges; a margin of latent cells around the
        pixels that are used keeps them close (``benchmarks/decode_window.py`` measures how close).
        """
        y0, y1, x0, x1 = window
        f = self.first_stage_factor
        part = self.decode_first_stage(latents[:, :, y0:y1, x0:x1])
        b, _, h, w = latents.shape
        dtype = torch.promote_types(part.dtype, fill.dtype) if fill is not None else part.dtype
        out = fill.to(dtype).clone() if fill is not None else part.new_zeros(b, part.shape[1], h * f, w * f)
        out[:, :, y0 * f : y1 * f, x0 * f : x1 * f] = part
        return out

    def scale_latents(self, unscaled: torch.Tensor) -> torch.Tensor:
        """Unscaled first-stage latents (e.g. from a latent cache) -> the latents the diffusion model sees."""
        return unscaled * self.scale_factor

    @torch.no_grad()
    def encode_frames(self, image: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents of target frames (``x0``) and of their masked images, encoded in one batch."""
        z = self.encode_first_stage(torch.cat([image, masked]))
        return z[: len(image)], z[len(image) :]

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
        """(B, 39, 2) landmarks in pixels of the model image (``first_stage.resolution``: 256-pixel units for the
        paper's model, 512 for talking-512.yaml's) -> (B, landmark_dim)."""
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
        """Encode raw conditions. ``reference``/``masked`` are (B, 3, R, R) images in [-1, 1] (R: the first
        stage's resolution); pass
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
    def eps_fn(self, conditions: DiffTalkConditions, eps_wrapper: EpsWrapper | None = None) -> EpsFn:
        """The samplers' ``eps_fn(x, t)``: the UNet on ``conditions``, optionally wrapped (autocast, compile),
        returning float32 noise so the sampler state stays float32."""
        predict: NoisePredictor = self.model if eps_wrapper is None else eps_wrapper(self.model)

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return predict(x, t, conditions).float()

        return eps

    def initial_noise(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x_T`` for a batch: standard normal latents drawn on the generator's device, moved to the model's."""
        shape = (batch_size, self.channels, self.image_size, self.image_size)
        gen_device = generator.device if generator is not None else self.device
        return torch.randn(shape, generator=generator, device=gen_device).to(self.device)

    def sampling_plan(
        self,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float = 0.0,
        timesteps: tuple[int, ...] | list[int] | None = None,
    ) -> SamplingPlan:
        """A checked :class:`~.plan.SamplingPlan` on this model's schedule: the given sampler/steps (None: not
        given), else what the checkpoint records (a distilled student's, :attr:`sampling`), else dpm++ 25 steps
        (:func:`~.plan.resolve_plan`). ``timesteps``: an explicit DDIM grid. A bad choice raises
        ``plan.SamplerError`` (a ``ValueError``) naming the option."""
        return resolve_plan(self.alphas_cumprod, sampler, steps, eta, self.sampling, timesteps)[0]

    @torch.no_grad()
    def sample(
        self,
        conditions: DiffTalkConditions,
        plan: SamplingPlan | None = None,
        *,
        x_T: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        eps_wrapper: EpsWrapper | None = None,
    ) -> torch.Tensor:
        """Sample latents with ``plan`` (:meth:`sampling_plan`; None: ``self.sampling_plan()``, e.g.
        ``model.sampling_plan("ddim", 200)`` for the reference's sampler). ``mask`` (B or 1, 1, h, w): 1 keeps
        ``x0``'s region (re-noised each step), 0 generates. ``eps_wrapper`` wraps the noise predictor (e.g. bf16
        autocast, ``torch.compile``).
        """
        plan = plan if plan is not None else self.sampling_plan()
        if x_T is None:
            x_T = self.initial_noise(conditions.batch_size, generator)
        # the sampler state stays in float32 even when the UNet runs under bf16 autocast
        x_T = x_T.to(self.device, torch.float32)
        x0 = x0.float() if x0 is not None else None
        mask = mask.to(x_T.device, torch.float32) if mask is not None else None
        eps = self.eps_fn(conditions, eps_wrapper)
        return run_sampler(plan, eps, self.alphas_cumprod, x_T, x0, mask, generator, progress)

    @torch.no_grad()
    def inpaint(
        self,
        *,
        audio: torch.Tensor,
        landmarks: torch.Tensor,
        reference_latent: torch.Tensor,
        noise: torch.Tensor,
        masked: torch.Tensor | None = None,
        masked_latent: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        image_latent: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        plan: SamplingPlan | None = None,
        generator: torch.Generator | None = None,
        eps_wrapper: EpsWrapper | None = None,
        decode_window: tuple[int, int, int, int] | None = None,
        decode_fill: torch.Tensor | None = None,
        decode: bool = True,
    ) -> torch.Tensor:
        """Frame inputs -> decoded frames: encode, condition, sample, decode (DiffTalk's masked inpainting).

        Args:
            audio: (B, 8, 16, 29) audio windows.  landmarks: (B, 39, 2) in model-image pixels.
            reference_latent: (B or 1, C, h, w) first-stage latent of the reference frame.
            noise: (B, C, h, w) ``x_T`` (e.g. :meth:`initial_noise`).
            masked / masked_latent: the masked frames, (B, 3, H, W) images in [-1, 1] or their latents.
            image / image_latent: the target frames (or their latents); where ``mask`` is 1 their latent is kept.
            mask: (B, 1, h, w), 1 = keep ``image``'s latent (re-noised each step), 0 = generate; None generates
                the whole latent (``image`` is then not needed).
            plan, generator, eps_wrapper: as :meth:`sample`.
            decode_window: ``(y0, y1, x0, x1)`` latent cells to decode (:meth:`decode_first_stage_window`, the
                rest of the frame is ``decode_fill`` or 0); None decodes the whole latent.
            decode: False returns the sampled latents ``(B, C, h, w)`` instead (the caller decodes).

        Returns:
            (B, 3, H, W) float32 frames in [-1, 1] (decoder output clamped), or the latents (``decode=False``).
        """
        if (masked is None) == (masked_latent is None):
            raise ValueError("give exactly one of masked / masked_latent")
        if image is not None and image_latent is not None:
            raise ValueError("give at most one of image / image_latent")
        if mask is not None and image is None and image_latent is None:
            raise ValueError("a mask needs the frames whose region it keeps: give image or image_latent")
        if image is not None and masked is not None:
            image_latent, masked_latent = self.encode_frames(image, masked)
        else:
            if image is not None:
                image_latent = self.encode_first_stage(image)
            if masked is not None:
                masked_latent = self.encode_first_stage(masked)
        b = noise.shape[0]
        conditions = self.encode_conditions(
            audio, landmarks, reference_latent=reference_latent.expand(b, -1, -1, -1), masked_latent=masked_latent
        )
        latents = self.sample(
            conditions,
            plan,
            x_T=noise,
            x0=image_latent if mask is not None else None,
            mask=mask,
            generator=generator,
            eps_wrapper=eps_wrapper,
        )
        if not decode:
            return latents
        if decode_window is not None:
            frames = self.decode_first_stage_window(latents.float(), decode_window, decode_fill)
        else:
            frames = self.decode_first_stage(latents.float())
        return frames.float().clamp(-1.0, 1.0)

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
