"""A small first stage for the synthetic model: the DiffTalk ``VQModel`` trained on synthetic frames.

The released latent-diffusion ``vq-f4`` weights are not available offline and a random first stage does not
reconstruct images, so the synthetic demo model brings its own: encoder and decoder are trained as a continuous
autoencoder (L1 + L2, latents perturbed by a little noise so the decoder tolerates sampling error), then the
codebook is set by k-means of encoder outputs, so ``decode(quantize=True)`` works like the released model's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from talkingface.model.image_driven_talkingface.DiffTalk.autoencoder import VQModel
from talkingface.model.image_driven_talkingface.DiffTalk.config import FirstStageConfig
from talkingface.model.image_driven_talkingface.DiffTalk.model import build_first_stage

log = logging.getLogger(__name__)

#: The six orders of the RGB channels (colour augmentation of the first-stage training images).
_CHANNEL_ORDERS = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


@dataclass
class FirstStageResult:
    model: VQModel
    latent_std: float  # std of encoder outputs: 1 / scale_factor for the diffusion model
    recon_l1: float  # mean |x - decode(encode(x))| (quantized) on the training images, in [-1, 1] units
    seconds: float


def _gamma_encode(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """``[-1, 1]`` intensities -> gamma-encoded ``[0, 1]`` (a floor keeps the gradient finite at black)."""
    return (((x + 1) / 2).clamp(min=0) + 1e-3) ** (1.0 / gamma)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Plain Lloyd k-means of ``(N, D)`` points; empty clusters are re-seeded from random points."""
    centres = x[torch.randperm(len(x), generator=generator)[:k]].clone()
    if len(centres) < k:  # fewer points than codes: repeat with jitter
        extra = centres[torch.randint(len(centres), (k - len(centres),), generator=generator)]
        centres = torch.cat([centres, extra + 1e-3 * torch.randn(extra.shape, generator=generator)])
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        centres = torch.where(empty[:, None], centres, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            centres[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=generator)]
    return centres


def train_first_stage(
    images: torch.Tensor,
    cfg: FirstStageConfig,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 1e-3,
    latent_noise: float = 0.1,
    colour_augment: bool = True,
    kmeans_points: int = 20_000,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
    gamma: float | None = None,
    recon_images: int = 512,
) -> FirstStageResult:
    """Train a ``VQModel`` on ``images`` ((N, 3, R, R) in [-1, 1], e.g. frames and their masked versions).

    Returns the model in eval mode with its codebook set, and the latent std (use ``scale_factor = 1 / std``).
    ``colour_augment`` permutes the RGB channels of each training image at random (6 orders), so the autoencoder
    meets skin, hair and background colours beyond those of the few training identities and reconstructs held-out
    identities without snapping their colours to the training palette. Random draws come from a CPU generator
    seeded with ``seed`` whatever the ``device``; the returned model is on the CPU.

    ``gamma``: also take the loss on gamma-encoded intensities (``((x + 1) / 2) ** (1 / gamma)``), which weighs
    differences between dark colours up. In linear intensities a dark mouth on dark skin differs from the skin by a
    tenth of what it does on light skin, and a plain L1 + L2 autoencoder learned to smear it away (the first stage
    then erased the mouth of the darkest held-out identities before any diffusion).

    ``recon_images``: how many of ``images`` (the first ones) the reported quantized L1 is measured on.
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    images = images.to(device)
    vq = build_first_stage(cfg).to(device)
    params = [p for n, p in vq.named_parameters() if not n.startswith("quantize.")]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    vq.train()
    bar = tqdm(range(steps), desc="first stage", unit="step", disable=not progress)
    for _ in bar:
        x = images[torch.randint(len(images), (batch_size,), generator=gen).to(device)]
        if colour_augment:
            order = _CHANNEL_ORDERS[torch.randint(len(_CHANNEL_ORDERS), (batch_size,), generator=gen)].to(device)
            x = torch.gather(x, 1, order[:, :, None, None].expand_as(x))
        z = vq.encode(x)
        z_noisy = z + latent_noise * z.detach().std() * torch.randn(z.shape, generator=gen).to(device)
        rec = vq.decode(z_noisy, quantize=False)
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        if gamma:
            g_rec, g_x = _gamma_encode(rec, gamma), _gamma_encode(x, gamma)
            loss = loss + F.l1_loss(g_rec, g_x) + F.mse_loss(g_rec, g_x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    vq.eval()
    with torch.no_grad():
        zs = torch.cat([vq.encode(images[i : i + 256]) for i in range(0, len(images), 256)])
        pool = zs
        if colour_augment:  # the codebook covers the augmented colours too
            order = _CHANNEL_ORDERS[torch.randint(len(_CHANNEL_ORDERS), (len(images),), generator=gen)].to(device)
            shuffled = torch.gather(images, 1, order[:, :, None, None].expand_as(images))
            pool = torch.cat([zs, *(vq.encode(shuffled[i : i + 256]) for i in range(0, len(images), 256))])
        flat = pool.permute(0, 2, 3, 1).reshape(-1, zs.shape[1])
        pick = flat[torch.randperm(len(flat), generator=gen)[:kmeans_points].to(device)].cpu()
        vq.quantize.embedding.weight.copy_(kmeans(pick, cfg.n_embed, 10, gen).to(device))
        n = min(len(images), recon_images)
        rec = torch.cat([vq.decode(zs[i : min(i + 128, n)]) for i in range(0, n, 128)])
        recon = float((rec - images[:n]).abs().mean())
    vq.requires_grad_(False)
    result = FirstStageResult(vq.cpu(), float(zs.std()), recon, time.perf_counter() - t0)
    log.info(
        "first stage: %d steps in %.0f s, quantized L1 %.4f, latent std %.3f",
        steps,
        result.seconds,
        recon,
        result.latent_std,
    )
    return result


def save_first_stage(vq: VQModel, path: str | Path) -> Path:
    """Save as ``{"state_dict": <VQ keys without prefix>}`` (what ``load_first_stage`` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.detach().cpu().contiguous() for k, v in vq.state_dict().items()}}, path)
    return path
