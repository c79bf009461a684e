"""Exponential moving average of the UNet, state-dict compatible with latent-diffusion's ``LitEma``.

Buffers: ``decay``, ``num_updates`` and one shadow per trainable parameter, named like the parameter with the
dots removed (``diffusion_model.time_embed.0.weight`` -> ``diffusion_modeltime_embed0weight``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class LitEma(nn.Module):
    def __init__(self, model: nn.Module, decay: float = 0.9999, use_num_updates: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.register_buffer("decay", torch.tensor(decay, dtype=torch.float32))
        self.register_buffer("num_updates", torch.tensor(0 if use_num_updates else -1, dtype=torch.int))
        self.m_name2s_name: dict[str, str] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                s_name = name.replace(".", "")
                self.m_name2s_name[name] = s_name
                self.register_buffer(s_name, p.detach().clone())
        self._stored: list[torch.Tensor] = []

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        buffers = dict(self.named_buffers())
        params, shadows = [], []
        for name, p in model.named_parameters():
            if name in self.m_name2s_name:
                params.append(p)
                shadows.append(buffers[self.m_name2s_name[name]])
        return params, shadows

    def current_decay(self) -> float:
        """The decay the next update will use (warm-up ``(1+n)/(10+n)`` while counting updates)."""
        decay = float(self.decay)
        if int(self.num_updates) >= 0:
            n = int(self.num_updates) + 1
            decay = min(decay, (1 + n) / (10 + n))
        return decay

    @torch.no_grad()
    def forward(self, model: nn.Module) -> None:
        """One EMA step: ``shadow -= (1 - decay) * (shadow - param)``."""
        decay = self.current_decay()
        if int(self.num_updates) >= 0:
            self.num_updates += 1
        params, shadows = self._pairs(model)
        if shadows:
            torch._foreach_lerp_(shadows, [p.detach().to(s.dtype) for p, s in zip(params, shadows)], 1.0 - decay)

    update = forward

    @torch.no_grad()
    def restart(self, model: nn.Module) -> None:
        """Start over from ``model``'s weights: every shadow := its parameter, and the warm-up counts from zero again
        (the EMA then forgets everything before this call within a few hundred updates)."""
        params, shadows = self._pairs(model)
        for p, s in zip(params, shadows):
            s.copy_(p.detach().to(s.dtype))
        if int(self.num_updates) >= 0:
            self.num_updates.zero_()

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        params, shadows = self._pairs(model)
        for p, s in zip(params, shadows):
            p.copy_(s)

    def store(self, parameters: Iterable[torch.Tensor]) -> None:
        self._stored = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def restore(self, parameters: Iterable[torch.Tensor]) -> None:
        for stored, p in zip(self._stored, parameters):
            p.copy_(stored)
        self._stored = []
