"""Sampling options of the lip-sync pipeline: sampler/step checks that name the flags, the UNet precision, and
``UNetRunner``, the engine's ``eps_wrapper`` for bf16 autocast and ``torch.compile``.

Autocast wraps the UNet calls only: the conditions, the sampler arithmetic and the first stage stay in float32.
The sampler itself is the engine's (``DiffTalkModel.sample`` / ``inpaint``); nothing here picks one by name.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from talkingface.inference.errors import InferenceError
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkConditions, DiffTalkModel
from talkingface.model.image_driven_talkingface.DiffTalk.model import NoisePredictor
from talkingface.model.image_driven_talkingface.DiffTalk.samplers import SAMPLERS, EpsFn, SamplerError, check_sampler

log = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "SAMPLERS", "UNetRunner", "check_steps", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the UNet (None: float32). ``auto``: bf16 on a CUDA device that supports it."""
    if precision not in PRECISIONS:
        raise InferenceError("--precision", f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "auto":
        ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if ok else None
    return torch.bfloat16


def check_steps(sampler: str, steps: int, num_timesteps: int, eta: float = 0.0) -> None:
    """The engine's sampler check, with its message naming the flag (``--sampler``, ``--steps``, ``--eta``)."""
    try:
        check_sampler(sampler, steps, eta, num_timesteps)
    except SamplerError as err:
        raise InferenceError(f"--{err.option}", str(err)) from None


class UNetRunner:
    """An ``eps_wrapper`` for ``DiffTalkModel.sample`` / ``inpaint``: runs the noise predictor (compiled with
    ``torch.compile`` when asked, once per predictor) under autocast and returns float32 noise."""

    def __init__(self, model: DiffTalkModel, autocast_dtype: torch.dtype | None = None, compile: bool = False):
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.compile = compile
        self._compiled: tuple[NoisePredictor, NoisePredictor] | None = None

    def _autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.autocast_dtype)

    def _compiled_net(self, predict: NoisePredictor) -> NoisePredictor:
        if self._compiled is None or self._compiled[0] is not predict:
            log.info("compiling the UNet with torch.compile (the first batch is slow)")
            self._compiled = (predict, torch.compile(predict, dynamic=False))
        return self._compiled[1]

    def __call__(self, predict: NoisePredictor) -> NoisePredictor:
        net = self._compiled_net(predict) if self.compile else predict

        def wrapped(x: torch.Tensor, t: torch.Tensor, conditions: DiffTalkConditions) -> torch.Tensor:
            with self._autocast(x.device.type):
                out = net(x, t, conditions)
            return out.float()

        return wrapped

    def eps_fn(self, conditions: DiffTalkConditions) -> EpsFn:
        """The samplers' ``eps_fn(x, t)`` on ``conditions`` through this wrapper (for checks and benchmarks)."""
        return self.model.eps_fn(conditions, eps_wrapper=self)
