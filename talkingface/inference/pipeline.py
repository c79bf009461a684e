"""``LipSyncPipeline``: portrait video + speech in, lip-synced video out (DiffTalk masked-inpainting inference).

Semantics follow the reference inference (``scripts/inference.py`` with ``talk_data_ref_smooth_inference.py``):
per output frame, the face crop of the (ping-ponged) source frame gives the kept region ``x0`` and the masked
image, the speech gives the audio window, one reference frame of the video (frame 1 by default) the identity;
the engine (``DiffTalkModel.inpaint``) generates the jaw/mouth polygon and decodes, and the crop is pasted back.

:func:`reference_latent`, :func:`inpaint_frames` and :func:`to_uint8` are the frame-input path shared with the
learnability benchmark (``talkingface.synthetic.learn``), so its evidence describes this pipeline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from talkingface.constants import DEFAULT_IMAGE_SIZE, FPS, MODEL_IMAGE_SIZE
from talkingface.inference.blend import DEFAULT_FEATHER, mouth_alpha, paste_back, paste_window
from talkingface.inference.errors import InferenceError
from talkingface.inference.estimate import TimeLeft, time_estimate
from talkingface.inference.features import resolve_feature_backend
from talkingface.inference.inputs import FrameInputs, frame_inputs, resize_bicubic, to_unit_tensor
from talkingface.inference.landmark_file import SourceLandmarks
from talkingface.inference.sampling import FirstStageRunner, UNetRunner, plan_sampling, resolve_precision
from talkingface.inference.speech import Speech, prepare_speech
from talkingface.inference.stages import StageClock, timed
from talkingface.inference.threads import BackgroundSink, SerialSink
from talkingface.inference.timeline import pingpong_indices
from talkingface.inference.video import PreparedVideo, prepare_video
from talkingface.inference.writer import (
    DEFAULT_CRF,
    DEFAULT_X264_PRESET,
    X264_PRESETS,
    FramesDirWriter,
    VideoWriter,
    check_output,
)
from talkingface.media.extract import DEFAULT_MAX_MISSING
from talkingface.media.face_choice import LARGEST, FaceChoice
from talkingface.media.landmarks import LandmarkDetector
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel
from talkingface.model.image_driven_talkingface.DiffTalk.model import EpsWrapper
from talkingface.model.image_driven_talkingface.DiffTalk.plan import SamplingPlan

log = logging.getLogger(__name__)

#: The reference inference takes ``<video>_1.jpg`` (the second frame) as the reference image.
DEFAULT_REFERENCE_FRAME = 1
#: Source-frame latents are cached (on the model's device, ~100 kB a frame) for videos up to this many frames.
LATENT_CACHE_FRAMES = 4096
#: Latent cells decoded around the paste-back region with ``decode_window``: what the decoder's convolutions need
#: (with its GroupNorm statistics and attention made local, margin 4 keeps the pasted pixels within 1 level on the
#: shipped synthetic first stage, margin 2 on the tiny config). The rest of the error is those global parts
#: (``benchmarks/decode_window.py``).
DEFAULT_DECODE_MARGIN = 4


#: The most ``--cpu-threads`` accepted.
MAX_CPU_THREADS = 256


def default_reference_frame(n_frames: int) -> int:
    """The reference frame the reference inference takes: frame 1 (frame 0 for a one-frame video)."""
    return min(DEFAULT_REFERENCE_FRAME, n_frames - 1)


def _to_device(model: DiffTalkModel, array: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.to(model.device, non_blocking=True)
    return torch.from_numpy(np.require(array, requirements=["C", "W"])).to(model.device)


def _images(model: DiffTalkModel, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` images -> float32 ``(B, 3, H, W)`` in [-1, 1] on the model's device (converted there,
    bit for bit as :func:`~talkingface.inference.inputs.to_unit`)."""
    return to_unit_tensor(_to_device(model, images))


@torch.no_grad()
def reference_latent(
    model: DiffTalkModel, crop: np.ndarray, first_stage: FirstStageRunner | None = None
) -> torch.Tensor:
    """First-stage latent ``(1, C, h, w)`` of a reference crop (uint8 ``(S, S, 3)``), resized as the loader does.
    ``first_stage``: how to run the first stage (default: float32, eager)."""
    image = _images(model, resize_bicubic(crop, model.config.first_stage.resolution)[None])
    return (first_stage or FirstStageRunner(model)).encode(image)


@torch.no_grad()
def encode_frames(
    model: DiffTalkModel, inputs: FrameInputs, first_stage: FirstStageRunner | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """First-stage latents of the frames (``x0``) and of their masked images, in one batched encode (as
    ``DiffTalkModel.encode_frames``). ``first_stage``: how to run the first stage (default: float32, eager)."""
    n = len(inputs.image)
    z = (first_stage or FirstStageRunner(model)).encode(
        torch.cat([_images(model, inputs.image), _images(model, inputs.masked)])
    )
    return z[:n], z[n:]


@torch.no_grad()
def inpaint_frames(
    model: DiffTalkModel,
    inputs: FrameInputs,
    audio: np.ndarray | torch.Tensor,
    reference: torch.Tensor,
    noise: torch.Tensor,
    latents: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    plan: SamplingPlan | None = None,
    generator: torch.Generator | None = None,
    eps_wrapper: EpsWrapper | None = None,
    decode_window: tuple[int, int, int, int] | None = None,
    first_stage: FirstStageRunner | None = None,
    clock: StageClock | None = None,
) -> torch.Tensor:
    """Generated frames ``(B, 3, R, R)`` in [-1, 1] from a batch of frame inputs and audio windows ``(B, 8, 16, 29)``.

    ``inputs``: numpy arrays or tensors (already on the model's device or pinned). ``reference``: the reference
    latent (:func:`reference_latent`); ``noise``: ``x_T``; ``latents``: the frames' and masked images' latents when
    already encoded (:func:`encode_frames`), else they are encoded here. ``decode_window``: decode only these latent
    cells (:func:`~talkingface.inference.blend.paste_window`); the rest of each frame is its source image. None
    decodes the whole latent. ``plan``: the sampling plan (None: ``model.sampling_plan()``). ``first_stage``: how
    the first stage encodes and decodes (precision, layout, compile; default float32, eager). ``clock``: time the
    encode, sample and decode stages (:class:`~talkingface.inference.stages.StageClock`).
    """
    first_stage = first_stage or FirstStageRunner(model)
    if latents is None:
        with timed(clock, "encode"):
            latents = encode_frames(model, inputs, first_stage)
    image_latent, masked_latent = latents
    with timed(clock, "sample"):
        sampled = model.inpaint(
            audio=_to_device(model, audio),
            landmarks=_to_device(model, inputs.landmarks),
            reference_latent=reference,
            noise=noise,
            image_latent=image_latent,
            masked_latent=masked_latent,
            mask=_to_device(model, inputs.mask[:, None]),
            plan=plan,
            generator=generator,
            eps_wrapper=eps_wrapper,
            decode=False,
        )
    with timed(clock, "decode"):
        fill = _images(model, inputs.image) if decode_window is not None else None
        return first_stage.decode(sampled.float(), decode_window, fill).clamp(-1.0, 1.0)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` frames in [-1, 1] -> ``(B, H, W, 3)`` uint8 RGB, truncating as the reference inference."""
    faces = (torch.clamp((frames + 1.0) / 2.0, 0.0, 1.0) * 255.0).to(torch.uint8)
    return faces.permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class LipSyncOptions:
    """Sampling and preprocessing settings (the defaults are the fast ones the demo uses).

    ``sampler``/``steps`` None: the checkpoint's recorded sampler (a distilled student's, ``model.sampling``),
    else dpm++ 25 steps (``sampling.plan_sampling``, resolved once per run into a ``SamplingPlan``)."""

    steps: int | None = None
    sampler: str | None = None  # "ddim" (reference-exact) or "dpm++"
    timesteps: tuple[int, ...] | None = None  # an explicit DDIM grid (default: the recorded one when it applies)
    batch_size: int = 16
    precision: str = "auto"  # "auto" (bf16 on CUDA), "fp32", "bf16" (autocast around the UNet only)
    # the first stage's encode and decode: "auto" (bf16 autocast and channels-last on CUDA), "fp32", "bf16"
    first_stage_precision: str = "auto"
    compile: bool = False  # torch.compile the UNet
    seed: int = 0
    eta: float = 0.0  # DDIM only
    reference_frame: int | None = None  # None: frame 1 (frame 0 for a one-frame video)
    crop_size: int = DEFAULT_IMAGE_SIZE  # face crop side the masks are drawn at (as the saved dataset frames)
    feather: float = DEFAULT_FEATHER  # paste-back feather, fraction of the crop side
    max_missing: float = DEFAULT_MAX_MISSING  # fail when more video frames than this have no face
    face: FaceChoice = LARGEST  # which face to sync (--face largest|N|x,y), tracked across frames
    crf: int = DEFAULT_CRF  # H.264 quality
    x264_preset: str = DEFAULT_X264_PRESET  # H.264 speed preset
    # CPU worker threads of the pipelined loop (frame inputs of the next batch and paste-back/encoding of the
    # previous one overlap the model's work); None: min(8, CPUs); 0: everything in turn on the calling thread
    cpu_threads: int | None = None
    # decode only the latent window under the paste-back region (+ margin cells): approximate, the VQ decoder's
    # GroupNorm and mid-block attention are global (see benchmarks/decode_window.py), so off by default
    decode_window: bool = False
    decode_margin: int = DEFAULT_DECODE_MARGIN


@dataclass
class LipSyncResult:
    """What ``run`` produced, with its timings."""

    out: Path | None
    frames_dir: Path | None
    n_frames: int
    fps: float
    source_indices: np.ndarray  # (n_frames,) source video frame of each output frame
    reference_frame: int
    preprocess_s: float
    generate_s: float  # sampling, decoding, paste-back and encoding
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.n_frames / self.fps

    @property
    def fps_generate(self) -> float:
        """Frames per second without preprocessing."""
        return self.n_frames / max(self.generate_s, 1e-9)

    @property
    def fps_total(self) -> float:
        """Frames per second including preprocessing."""
        return self.n_frames / max(self.preprocess_s + self.generate_s, 1e-9)


@dataclass
class Generation:
    """What stays fixed while one video's frames are generated batch after batch
    (:meth:`LipSyncPipeline.start_generation`); the generator's state moves on with every batch."""

    video: PreparedVideo
    reference: torch.Tensor  # first-stage latent of the reference frame
    generator: torch.Generator
    runner: UNetRunner
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None  # source frame -> (latent, masked latent)
    plan: SamplingPlan
    window: bool  # decode only the latent window under the paste-back region
    first_stage: FirstStageRunner | None = None  # how the first stage runs (precision, layout, compile)


@dataclass
class BatchInputs:
    """The CPU side of one batch (:meth:`LipSyncPipeline.prepare_batch`), ready before the model needs it."""

    src: np.ndarray  # (n,) source frame of each output frame
    crops: list[tuple[np.ndarray, np.ndarray]]  # (crop, landmarks in crop pixels) per frame
    alphas: list[np.ndarray]  # paste-back alpha per frame
    rows: np.ndarray  # rows of the model batch (n, or the compiled batch size: the last frame repeated)
    inputs: FrameInputs  # the model batch's inputs (numpy, or pinned tensors for a CUDA model)


@dataclass
class BatchResult:
    """A generated batch: its source frames, their crops, the generated faces (uint8) and paste-back alphas."""

    src: np.ndarray
    crops: list[tuple[np.ndarray, np.ndarray]]
    faces: np.ndarray
    alphas: list[np.ndarray]


def paste_frame(video: PreparedVideo, index: int, face: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Output frame from source frame ``index``: the generated ``face`` pasted with ``alpha`` at its box, or the
    source image unchanged where no face detection supports the box (``video.pasted``)."""
    if not video.pasted[index]:
        return np.array(video.frames[index], dtype=np.uint8, copy=True)
    return paste_back(video.frames[index], face, alpha, video.boxes[index])


def cpu_thread_count(requested: int | None) -> int:
    """Worker threads of the pipelined loop: ``requested``, or min(8, CPUs) when None (0: the serial loop)."""
    if requested is None:
        return min(8, os.cpu_count() or 1)
    return requested


def _map(pool: Executor | None, fn: Callable[..., Any], *items: Sequence[Any]) -> list[Any]:
    """``[fn(*args) for args in zip(*items)]``, on ``pool``'s threads when given (same order, same results)."""
    if pool is None:
        return [fn(*args) for args in zip(*items)]
    return list(pool.map(fn, *items))


class LipSyncPipeline:
    """Lip-sync a portrait video to speech with a DiffTalk model.

    Example::

        model = get_difftalk_inference(ckpt="checkpoints/DiffTalk/model.ckpt")
        pipe = LipSyncPipeline(model)
        result = pipe.run("person.mp4", "speech.wav", "result.mp4")

    Args:
        model: a DiffTalk model in eval mode (e.g. from ``get_difftalk_inference``).
        audio_features: ``--audio-features`` backend name or kind; required when the model records none,
            checked against the recorded kind otherwise.
        feature_options: backend options (``wav2vec2_model``, ``whisper_model``, ``deepspeech_npy``, ``device``).
        options: sampling and preprocessing settings.
        detector: a landmark detector to reuse (default: the shared dlib one).
        model_source: the checkpoint path, for messages.
    """

    def __init__(
        self,
        model: DiffTalkModel,
        *,
        audio_features: str | None = None,
        feature_options: dict[str, Any] | None = None,
        options: LipSyncOptions | None = None,
        detector: LandmarkDetector | None = None,
        model_source: str = "model",
    ) -> None:
        self.model = model
        self.options = options or LipSyncOptions()
        self.detector = detector
        self.model_source = model_source
        conditioning = model.config.conditioning
        self.backend = resolve_feature_backend(
            conditioning.audio_feature_kind,
            audio_features,
            feature_options,
            model_source,
            conditioning.audio_feature_dim,
        )
        self._runners: dict[tuple[torch.dtype | None, bool], UNetRunner] = {}
        self._first_stages: dict[tuple[torch.dtype | None, bool], FirstStageRunner] = {}
        #: set a :class:`~talkingface.inference.stages.StageClock` to time each stage (the benchmarks do)
        self.clock: StageClock | None = None

    @property
    def model_image_size(self) -> int:
        """Side of the images the model sees: its first stage's resolution (256 for the paper's DiffTalk, 512 for
        talking-512.yaml's)."""
        first_stage = getattr(getattr(self.model, "config", None), "first_stage", None)
        return int(getattr(first_stage, "resolution", MODEL_IMAGE_SIZE))

    # ------------------------------------------------------------------ inputs
    def prepare_video(
        self, video: str | Path, progress: bool = False, landmarks: str | Path | SourceLandmarks | None = None
    ) -> PreparedVideo:
        """Decode the video at 25 fps and find the face in every frame (dlib), or take it from ``landmarks``.

        ``landmarks``: an ``(N, 68, 2)`` ``.npy`` or a folder of ``<frame>.lms`` files in video pixels, one per
        frame at the video's own rate (see :mod:`talkingface.inference.landmark_file`); dlib is then not used.
        """
        return prepare_video(
            video,
            crop_size=self.options.crop_size,
            detector=self.detector,
            max_missing=self.options.max_missing,
            landmarks=landmarks,
            face=self.options.face,
            progress=progress,
            on_frame=self.video_frame_prepared,
        )

    def video_frame_prepared(self, step: str, done: int, total: int | None) -> None:
        """Called by :meth:`prepare_video` after every frame of its passes: ``step`` the pass (the face search or the
        frame decoding, see :func:`~talkingface.inference.video.prepare_video`), ``done`` its frames so far, ``total``
        the expected number (None when unknown). A hook for subclasses (progress, cancelling: an exception raised here
        stops the preparation and propagates); the default does nothing."""

    def prepare_speech(self, audio: str | Path, from_video: bool = False) -> Speech:
        """Decode the speech and compute the model's audio windows (one per output frame)."""
        return prepare_speech(audio, self.backend, from_video=from_video, fps=FPS)

    def sampling_plan(self) -> SamplingPlan:
        """The plan this pipeline samples with: the options' sampler/steps/eta/timesteps, else the checkpoint's
        recorded ones (``model.sampling``), else dpm++ 25 (:func:`~talkingface.inference.sampling.plan_sampling`).
        Raises :class:`InferenceError` naming the flag when the options are not a valid plan."""
        o = self.options
        return plan_sampling(self.model, o.sampler, o.steps, o.eta, o.timesteps, self.model_source)[0]

    def _check_options(self) -> SamplingPlan:
        """Check the options (raising :class:`InferenceError` naming the flag) and return the sampling plan, with
        the line that says why when the checkpoint records a sampler."""
        o = self.options
        plan, why = plan_sampling(self.model, o.sampler, o.steps, o.eta, o.timesteps, self.model_source)
        if why:
            log.info("%s", why)
        resolve_precision(o.precision, self.model.device)
        if o.batch_size < 1:
            raise InferenceError("--batch-size", f"must be at least 1, got {o.batch_size}")
        if o.decode_margin < 0:
            raise InferenceError("--decode-margin", f"must be at least 0, got {o.decode_margin}")
        if o.crop_size < self.model_image_size // 4:
            raise InferenceError("--crop-size", f"too small ({o.crop_size}); use e.g. {DEFAULT_IMAGE_SIZE}")
        resolve_precision(o.first_stage_precision, self.model.device, "--first-stage-precision")
        if o.cpu_threads is not None and not 0 <= o.cpu_threads <= MAX_CPU_THREADS:
            raise InferenceError("--cpu-threads", f"must be 0..{MAX_CPU_THREADS}, got {o.cpu_threads}")
        if not 0 <= o.crf <= 51:
            raise InferenceError("--crf", f"must be 0..51 (H.264 quality, lower is better), got {o.crf}")
        if o.x264_preset not in X264_PRESETS:
            raise InferenceError(
                "--x264-preset", f"unknown preset {o.x264_preset!r}; choose one of {', '.join(X264_PRESETS)}"
            )
        return plan

    def reference_index(self, video: PreparedVideo) -> int:
        r = self.options.reference_frame
        if r is None:
            return default_reference_frame(video.n_frames)
        if not 0 <= r < video.n_frames:
            raise InferenceError(
                video.path,
                f"--reference-frame {r} is outside its frames 0..{video.n_frames - 1} (at {video.fps:g} fps)",
            )
        return r

    def _runner(self) -> UNetRunner:
        key = (resolve_precision(self.options.precision, self.model.device), self.options.compile)
        if key not in self._runners:
            self._runners[key] = UNetRunner(self.model, *key)
        return self._runners[key]

    # -------------------------------------------------------------- generation
    def first_stage(self) -> FirstStageRunner:
        """How the first stage runs (``first_stage_precision``; compiled with ``compile``, once per setting)."""
        o = self.options
        key = (resolve_precision(o.first_stage_precision, self.model.device, "--first-stage-precision"), o.compile)
        if key not in self._first_stages:
            self._first_stages[key] = FirstStageRunner(self.model, *key)
        return self._first_stages[key]

    @torch.no_grad()
    def reference_latent(self, video: PreparedVideo, first_stage: FirstStageRunner | None = None) -> torch.Tensor:
        """First-stage latent ``(1, C, h, w)`` of the reference frame (once per video; 64 x 64 for DiffTalk)."""
        crop, _ = video.crop(self.reference_index(video))
        return reference_latent(self.model, crop, first_stage or self.first_stage())

    @torch.no_grad()
    def _target_latents(
        self, gen: Generation, src: np.ndarray, inputs: FrameInputs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """First-stage latents of the target frames (``x0``) and of their masked images, one batched encode of the
        frames not in the generation's cache."""
        cache = gen.cache
        todo = [j for j, i in enumerate(src) if cache is None or int(i) not in cache]
        if todo:
            with timed(self.clock, "encode"):
                z, zm = encode_frames(self.model, inputs.take(np.asarray(todo)), gen.first_stage)
            fresh = {j: (z[k], zm[k]) for k, j in enumerate(todo)}
            if cache is not None:
                cache.update({int(src[j]): pair for j, pair in fresh.items()})
        else:
            fresh = {}
        if len(fresh) == len(src):
            return z, zm
        pairs = [fresh[j] if j in fresh else cache[int(i)] for j, i in enumerate(src)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def start_generation(
        self, video: PreparedVideo, cache: bool, window: bool = False, plan: SamplingPlan | None = None
    ) -> Generation:
        """What :meth:`generate_batch` keeps from batch to batch for ``video``: the reference latent, the seeded
        noise generator (drawn batch after batch), the UNet runner, the sampler. ``cache``: keep source-frame
        latents (the ping-pong shows frames again); ``window``: decode only the latent window under the paste-back
        region. ``plan``: the sampling plan when the caller has checked the options already (None: check them
        here)."""
        plan = plan if plan is not None else self._check_options()
        first_stage = self.first_stage()
        return Generation(
            video=video,
            reference=self.reference_latent(video, first_stage),
            generator=torch.Generator().manual_seed(self.options.seed),
            runner=self._runner(),
            cache={} if cache and video.n_frames <= LATENT_CACHE_FRAMES else None,
            plan=plan,
            window=window,
            first_stage=first_stage,
        )

    def prepare_batch(self, gen: Generation, src: np.ndarray, pool: Executor | None = None) -> BatchInputs:
        """The CPU side of a batch: crops, landmarks, masks and paste-back alphas of the source frames ``src``
        (per frame on ``pool``'s threads when given), pinned for a CUDA model. Touches no model state, so it runs
        on a worker thread while the model works on the batch before."""
        o, video = self.options, gen.video
        size, latent = self.model_image_size, self.model.image_size
        with timed(self.clock, "inputs"):
            crops = _map(pool, video.crop, [int(i) for i in src])
            alphas = _map(pool, lambda c: mouth_alpha(c[1], video.crop_size, o.feather), crops)
            inputs = FrameInputs.stack(_map(pool, lambda c: frame_inputs(c[0], c[1], size, latent), crops))
            n = len(src)
            rows = np.arange(n)
            if o.compile and n < o.batch_size:  # one static shape for the compiled UNet: repeat the last frame
                rows = np.r_[rows, np.full(o.batch_size - n, n - 1)]
                inputs = inputs.take(rows)
            if self.model.device.type == "cuda":
                inputs = inputs.pinned()
        return BatchInputs(np.asarray(src), crops, alphas, rows, inputs)

    @torch.no_grad()
    def generate_faces(self, gen: Generation, batch: BatchInputs, windows: np.ndarray) -> np.ndarray:
        """The model's side of a batch: its audio windows ``(n, 8, 16, 29)`` and prepared inputs -> the generated
        faces ``(n, R, R, 3)`` uint8 (R: the model's image size)."""
        o, model = self.options, self.model
        n, rows = len(batch.src), batch.rows
        with timed(self.clock, "upload"):
            inputs = batch.inputs.to(model.device)
            audio = _to_device(model, windows[rows])
        latents = self._target_latents(gen, batch.src[rows], inputs)
        noise = model.initial_noise(len(rows), gen.generator)
        size, latent = self.model_image_size, model.image_size
        decode_window = paste_window(batch.alphas, size, latent, o.decode_margin) if gen.window else None
        pixels = inpaint_frames(
            model,
            inputs,
            audio,
            gen.reference,
            noise,
            latents,
            plan=gen.plan,
            generator=gen.generator,
            eps_wrapper=gen.runner,
            decode_window=decode_window,
            first_stage=gen.first_stage,
            clock=self.clock,
        )
        with timed(self.clock, "download"):
            return to_uint8(pixels[:n])

    @torch.no_grad()
    def generate_batch(
        self, gen: Generation, src: np.ndarray, windows: np.ndarray
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, list[np.ndarray]]:
        """One batch: the source frames ``src`` with their audio windows ``(n, 8, 16, 29)`` -> their ``(crop,
        landmarks)``, the generated faces (uint8) and their paste-back alphas. The same batches with the same
        ``gen`` give the same frames: the sampler draws noise for the whole batch at every step."""
        batch = self.prepare_batch(gen, src)
        return batch.crops, self.generate_faces(gen, batch, windows), batch.alphas

    @contextlib.contextmanager
    def _threads(self) -> Iterator[tuple[Executor | None, Executor | None]]:
        """``(prefetch, pool)``: one thread preparing the next batch and ``cpu_threads`` workers for per-frame CPU
        work, or ``(None, None)`` for the serial loop (``cpu_threads=0``)."""
        n = cpu_thread_count(self.options.cpu_threads)
        if n == 0:
            yield None, None
            return
        prefetch = ThreadPoolExecutor(1, thread_name_prefix="talkingface-inputs")
        pool = ThreadPoolExecutor(n, thread_name_prefix="talkingface-cpu")
        try:
            yield prefetch, pool
        finally:
            prefetch.shutdown(wait=True, cancel_futures=True)
            pool.shutdown(wait=True, cancel_futures=True)

    @torch.no_grad()
    def _batches(
        self,
        video: PreparedVideo,
        speech: Speech,
        progress: bool,
        window: bool = False,
        pools: tuple[Executor | None, Executor | None] = (None, None),
        plan: SamplingPlan | None = None,
    ) -> Iterator[BatchResult]:
        """The batches in order. ``window``: decode only the latent window under the batch's paste-back region.
        ``pools``: ``(prefetch, pool)`` from :meth:`_threads`: with them, batch k + 1's inputs are prepared while
        batch k is generated (the same frames as the serial loop: the model sees the same inputs in the same
        order). ``plan``: the checked sampling plan (None: check the options here)."""
        o, model = self.options, self.model
        prefetch, pool = pools
        indices = pingpong_indices(speech.n_frames, video.n_frames)
        # the ping-pong shows source frames again: keep their latents when the speech outlasts the video
        gen = self.start_generation(video, cache=len(indices) > video.n_frames, window=window, plan=plan)
        starts = list(range(0, len(indices), o.batch_size))

        def prepare(k: int) -> BatchInputs:
            return self.prepare_batch(gen, indices[starts[k] : starts[k] + o.batch_size], pool)

        bar = tqdm(total=len(indices), desc="lip-sync", unit="frame", disable=not progress, leave=False)
        pace = TimeLeft(len(indices), o.batch_size, padded=o.compile)
        pending = prefetch.submit(prepare, 0) if prefetch is not None else None
        with bar:
            for k, start in enumerate(starts):
                batch = pending.result() if pending is not None else prepare(k)
                if prefetch is not None and k + 1 < len(starts):
                    pending = prefetch.submit(prepare, k + 1)
                n = len(batch.src)
                faces = self.generate_faces(gen, batch, speech.windows[start : start + n])
                left = pace.batch_done(n)
                if pace.batches == 2 and model.device.type == "cpu":  # the first estimate without the warm-up
                    estimate = time_estimate(left, len(indices) - pace.done, gen.plan.steps)
                    if estimate:
                        log.info("%s", estimate)
                yield BatchResult(batch.src, batch.crops, faces, batch.alphas)
                bar.update(n)

    @torch.no_grad()
    def faces(self, video: PreparedVideo, speech: Speech, progress: bool = False) -> Iterator[np.ndarray]:
        """Yield the ``speech.n_frames`` generated face crops (RGB uint8 at the model's image size), in order.

        The whole latent is decoded (``decode_window`` applies to :meth:`generate` only)."""
        with self._threads() as pools:
            for batch in self._batches(video, speech, progress, pools=pools):
                yield from batch.faces

    def paste_batch(self, video: PreparedVideo, batch: BatchResult, pool: Executor | None = None) -> list[np.ndarray]:
        """The output frames of a batch: its generated faces pasted back into their source frames (on ``pool``);
        a frame whose box no face detection supports (``video.pasted``) keeps its source image."""
        with timed(self.clock, "paste"):
            src = [int(i) for i in batch.src]
            return _map(pool, lambda j, i: paste_frame(video, i, batch.faces[j], batch.alphas[j]), range(len(src)), src)

    def generation_started(self, total: int) -> None:
        """Called by :meth:`run` before the first batch, with the number of frames to make (a hook for
        subclasses: progress reports; the default does nothing)."""

    def frames_written(self, n: int) -> None:
        """Called by :meth:`run` after ``n`` more frames were written (on the writer thread when pipelined; an
        exception raised here stops the run like any error and leaves no output). The default does nothing."""

    @torch.no_grad()
    def generate(self, video: PreparedVideo, speech: Speech, progress: bool = False) -> Iterator[np.ndarray]:
        """Yield the ``speech.n_frames`` output frames (RGB uint8, the source video's size) in order."""
        with self._threads() as pools:
            for batch in self._batches(video, speech, progress, window=self.options.decode_window, pools=pools):
                yield from self.paste_batch(video, batch, pools[1])

    def run(
        self,
        video: str | Path | PreparedVideo,
        audio: str | Path | Speech | None = None,
        out: str | Path | None = None,
        *,
        frames_dir: str | Path | None = None,
        overwrite: bool = False,
        progress: bool = True,
        landmarks: str | Path | SourceLandmarks | None = None,
    ) -> LipSyncResult:
        """Lip-sync ``video`` to ``audio`` (default: the video's own track) and write ``out`` (mp4 with the speech).

        Inputs may be paths or already prepared (``prepare_video`` / ``prepare_speech``) to reuse preprocessing.
        ``frames_dir`` also writes the frames as PNG. Nothing is left at ``out`` / ``frames_dir`` unless complete.
        ``landmarks``: the video's landmarks from a file instead of dlib (see :meth:`prepare_video`).

        Raises:
            InferenceError, PreprocessError: a bad input, naming the file and the problem.
        """
        if out is None and frames_dir is None:
            raise InferenceError("out", "give an output video path, a frames folder, or both")
        out = check_output(out, overwrite) if out is not None else None
        frames_dir = check_output(frames_dir, overwrite, directory=True) if frames_dir is not None else None
        plan = self._check_options()
        if landmarks is not None and isinstance(video, PreparedVideo):
            name = landmarks.path if isinstance(landmarks, SourceLandmarks) else landmarks
            raise InferenceError(name, "give the landmarks to prepare_video, not with an already prepared video")
        t0 = time.perf_counter()
        if not isinstance(audio, Speech):
            source = audio if audio is not None else (video.path if isinstance(video, PreparedVideo) else video)
            audio = self.prepare_speech(source, from_video=audio is None)
        t_speech = time.perf_counter()
        if not isinstance(video, PreparedVideo):
            video = self.prepare_video(video, progress=progress, landmarks=landmarks)
        t_video = time.perf_counter()
        indices = pingpong_indices(audio.n_frames, video.n_frames)
        if audio.n_frames > video.n_frames:
            log.info(
                "speech (%d frames) is longer than the video (%d): playing the video back and forth",
                audio.n_frames,
                video.n_frames,
            )
        ref_index = self.reference_index(video)
        writers: list[VideoWriter | FramesDirWriter] = []
        if out is not None:
            writers.append(
                VideoWriter(
                    out,
                    video.fps,
                    audio.mux_samples,
                    audio.mux_rate,
                    overwrite=overwrite,
                    crf=self.options.crf,
                    preset=self.options.x264_preset,
                )
            )
        if frames_dir is not None:
            writers.append(FramesDirWriter(frames_dir, overwrite=overwrite))
        t1 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            for w in writers:
                stack.enter_context(w)
            pools = stack.enter_context(self._threads())

            def write(batch: BatchResult) -> None:
                frames = self.paste_batch(video, batch, pools[1])
                with timed(self.clock, "write"):
                    for frame in frames:
                        for w in writers:
                            w.write(frame)
                self.frames_written(len(frames))

            # paste-back and encoding of batch k on one thread while batch k + 1 is generated (serial: in turn)
            sink = BackgroundSink(write, name="talkingface-writer") if pools[0] is not None else SerialSink(write)
            self.generation_started(audio.n_frames)
            with sink:
                batches = self._batches(video, audio, progress, self.options.decode_window, pools, plan)
                for batch in batches:
                    sink.put(batch)
        t2 = time.perf_counter()
        result = LipSyncResult(
            out=out,
            frames_dir=frames_dir,
            n_frames=audio.n_frames,
            fps=video.fps,
            source_indices=indices,
            reference_frame=ref_index,
            preprocess_s=t_video - t0,
            generate_s=t2 - t1,
            timings={"speech_s": t_speech - t0, "video_s": t_video - t_speech, "generate_s": t2 - t1},
        )
        log.info(
            "wrote %s: %d frames (%.2f s) in %.1f s: %.2f frames/s generating, %.2f frames/s including preprocessing",
            " and ".join(str(p) for p in (out, frames_dir) if p is not None),
            result.n_frames,
            result.seconds,
            result.preprocess_s + result.generate_s,
            result.fps_generate,
            result.fps_total,
        )
        return result
