"""Sampling options of the lip-sync pipeline: its sampling plan (resolved once, errors naming the flags), the UNet
and first-stage precision, and ``UNetRunner``, the engine's ``eps_wrapper`` for bf16 autocast and ``torch.compile``.

Autocast wraps the UNet calls only: the conditions, the sampler arithmetic and the first stage stay in float32.
The sampler itself is the engine's (``DiffTalkModel.sample`` / ``inpaint`` with the plan); nothing here runs one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import torch

from talkingface.inference.errors import InferenceError
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkConditions, DiffTalkModel
from talkingface.model.image_driven_talkingface.DiffTalk.model import NoisePredictor
from talkingface.model.image_driven_talkingface.DiffTalk.plan import (
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    RECORDED,
    SAMPLERS,
    SamplerError,
    SamplingPlan,
    resolve_plan,
)
from talkingface.model.image_driven_talkingface.DiffTalk.samplers import EpsFn

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SAMPLER",
    "DEFAULT_STEPS",
    "PRECISIONS",
    "SAMPLERS",
    "FirstStageRunner",
    "UNetRunner",
    "plan_sampling",
    "resolve_precision",
]

PRECISIONS = ("auto", "fp32", "bf16")


def plan_sampling(
    model: DiffTalkModel,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float = 0.0,
    timesteps: Sequence[int] | None = None,
    source: str = "the checkpoint",
) -> tuple[SamplingPlan, str | None]:
    """The pipeline's sampling plan, resolved and checked once (``plan.resolve_plan`` on the model's schedule and
    the checkpoint's record, ``model.sampling``), and the line saying why when a record is involved. A bad choice
    raises :class:`InferenceError` naming the flag (``--sampler``, ``--steps``, ``--eta``), or ``source`` (the
    checkpoint's path) when the bad value is the checkpoint's recorded sampler."""
    try:
        return resolve_plan(model.alphas_cumprod, sampler, steps, eta, getattr(model, "sampling", None), timesteps)
    except SamplerError as err:
        if err.option == RECORDED:
            raise InferenceError(
                source, str(err), hint="pass --sampler and --steps to sample otherwise, or re-export the checkpoint"
            ) from None
        raise InferenceError(f"--{err.option}", str(err)) from None


def resolve_precision(precision: str, device: torch.device, flag: str = "--precision") -> torch.dtype | None:
    """The autocast dtype for the UNet or the first stage (None: float32). ``auto``: bf16 on a CUDA device that
    supports it. ``flag``: the option named in the error."""
    if precision not in PRECISIONS:
        raise InferenceError(flag, f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "auto":
        ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if ok else None
    return torch.bfloat16


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


class FirstStageRunner:
    """The first stage's encode and decode as the pipeline runs them (``--first-stage-precision``): under autocast
    (``autocast_dtype``; None: float32), in channels-last memory format on CUDA when in bf16, compiled with
    ``torch.compile`` when asked (whole-latent encode and decode; a window decode changes shape and stays eager).
    Latents and images come back float32; the codebook lookup always runs in float32 (``VectorQuantizer``).

    Channels-last changes the module's parameters' memory format in place (the same values)."""

    def __init__(self, model: DiffTalkModel, autocast_dtype: torch.dtype | None = None, compile: bool = False):
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.channels_last = autocast_dtype is not None and model.device.type == "cuda"
        if self.channels_last:
            model.first_stage_model.to(memory_format=torch.channels_last)
        if compile:
            log.info("compiling the first stage with torch.compile (the first batch is slow)")
        self._encode = torch.compile(model.encode_first_stage, dynamic=False) if compile else model.encode_first_stage
        self._decode = torch.compile(model.decode_first_stage, dynamic=False) if compile else model.decode_first_stage

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.model.device.type, dtype=self.autocast_dtype)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> float32 latents (``DiffTalkModel.encode_first_stage``)."""
        with self.autocast():
            return self._encode(self._layout(images)).float().contiguous()

    @torch.no_grad()
    def decode(
        self, latents: torch.Tensor, window: tuple[int, int, int, int] | None = None, fill: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latents -> float32 images (``decode_first_stage``), or only ``window``'s cells with the rest ``fill``
        (``decode_first_stage_window``)."""
        with self.autocast():
            if window is not None:
                out = self.model.decode_first_stage_window(self._layout(latents), window, fill)
            else:
                out = self._decode(self._layout(latents))
            return out.float().contiguous()
