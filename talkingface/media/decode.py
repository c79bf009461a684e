"""Decoding with PyAV: video frames resampled to a constant rate, audio as 16 kHz mono float32."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from talkingface.constants import FPS, SAMPLE_RATE
from talkingface.media.errors import PreprocessError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Tolerance (seconds) when comparing frame timestamps.
TIME_EPS = 1e-6
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".flv", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv")


def _open(path: Path):
    import av

    if not Path(path).is_file():
        raise PreprocessError(path, "no such file")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        # FFmpeg's own words, without OSError's "[Errno N]" and the path again
        raise PreprocessError(path, f"cannot open as a media file ({getattr(e, 'strerror', None) or e})") from e


def stream_start_s(stream: Any) -> float:
    """When a PyAV stream starts, in seconds, as its header records it (0 when it records none)."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def stream_duration_s(stream: Any, container: Any) -> float | None:
    """The stream's duration, else the container's, in seconds, as the header records them (None when it records
    neither)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / 1e6 if container.duration else None  # in AV_TIME_BASE units


@dataclass(frozen=True)
class VideoProbe:
    """What the container says about its first video stream."""

    width: int
    height: int
    start_s: float
    has_audio: bool
    duration_s: float | None = None  # the stream's (or else the container's) duration, when recorded

    def expected_frames(self, fps: float = FPS) -> int | None:
        """About how many frames :func:`iter_frames` yields at ``fps`` (for a progress bar's total), or None."""
        return None if not self.duration_s else max(1, round(self.duration_s * fps))


def probe_video(path: str | Path) -> VideoProbe:
    """Stream facts needed before decoding; raises PreprocessError when there is no video stream."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise PreprocessError(path, "no video stream")
        stream = container.streams.video[0]
        return VideoProbe(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            start_s=stream_start_s(stream),
            has_audio=bool(container.streams.audio),
            duration_s=stream_duration_s(stream, container),
        )


def _decoded_frames(path: Path, fallback_rate: float = FPS) -> Iterator[tuple[float, float, Any]]:
    """``(presentation time, display duration, frame)`` in seconds for each decoded frame of the first video stream."""
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise PreprocessError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or fallback_rate
        default_duration = 1.0 / float(rate)
        index = 0
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else index * default_duration
                has_duration = frame.duration and frame.time_base
                duration = float(frame.duration * frame.time_base) if has_duration else default_duration
                index += 1
                yield t, duration, frame
        except av.error.FFmpegError as e:
            raise PreprocessError(path, f"video decoding failed after {index} frames ({e})") from e
        if index == 0:
            raise PreprocessError(path, "the video stream has no decodable frames")


def _resample(timed: Iterable[tuple[float, float, T]], fps: float) -> Iterator[tuple[int, T]]:
    """The one frame-rate conversion rule: ``(source index, item)`` for each output frame ``k``.

    Output frame ``k`` shows the source item on screen at ``t0 + k / fps`` (``t0``: the first item's time); the
    output ends where the last item's display ends (like ffmpeg's ``fps`` filter with rounding down).
    """
    t0: float | None = None
    k, index, end = 0, -1, 0.0
    prev: T | None = None
    for index, (t, duration, item) in enumerate(timed):
        if t0 is None:
            t0 = t
        if index > 0:
            while t0 + k / fps < t - TIME_EPS:
                yield index - 1, prev
                k += 1
        prev, end = item, t + duration
    if t0 is not None:
        while t0 + k / fps < end - TIME_EPS:
            yield index, prev
            k += 1


def iter_frames(path: str | Path, fps: float = FPS) -> Iterator[np.ndarray]:
    """Yield RGB uint8 ``(H, W, 3)`` frames resampled to ``fps``.

    Output frame ``k`` shows the source frame on screen at ``t0 + k / fps`` (``t0``: first frame's time);
    the output ends where the last source frame's display ends (like ffmpeg's ``fps`` filter with
    rounding down). Source frames are duplicated or dropped as needed (:func:`map_frames` says which).
    """
    last, rgb = -1, None
    for index, frame in _resample(_decoded_frames(Path(path), fps), fps):
        if index != last:
            last, rgb = index, frame.to_ndarray(format="rgb24")
        yield rgb


@dataclass(frozen=True)
class FrameMap:
    """Which source frame each frame of :func:`iter_frames` shows."""

    source: np.ndarray  # (K,) int64: the source frame shown as output frame k (frames counted from 0 as decoded)
    n_source: int  # frames in the video stream
    source_fps: float  # the stream's average frame rate (0 when the container records none)


def map_frames(path: str | Path, fps: float = FPS) -> FrameMap:
    """Decode the video (without converting the frames) and map the ``fps`` output frames to source frames.

    Uses the same rule as :func:`iter_frames`, so ``iter_frames(path, fps)`` yields source frame ``source[k]``
    as its frame ``k``: per-source-frame data (e.g. landmarks tracked at the video's own rate) becomes
    per-output-frame data by indexing with ``source``.
    """
    path = Path(path)
    probe_rate = 0.0
    with _open(path) as container:
        if container.streams.video:
            stream = container.streams.video[0]
            probe_rate = float(stream.average_rate or stream.guessed_rate or 0.0)
    timings = [(t, duration, None) for t, duration, _ in _decoded_frames(path, fps)]
    source = np.array([index for index, _ in _resample(timings, fps)], dtype=np.int64)
    return FrameMap(source, len(timings), probe_rate)


def count_frames(path: str | Path, fps: float = FPS) -> int:
    return sum(1 for _ in iter_frames(path, fps))


def resample_audio(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling (scipy ``resample_poly``) of a mono signal."""
    if rate_in == rate_out:
        return audio.astype(np.float32)
    from scipy.signal import resample_poly

    g = gcd(int(rate_in), int(rate_out))
    return resample_poly(audio.astype(np.float64), rate_out // g, rate_in // g).astype(np.float32)


@dataclass
class Audio:
    """Mono float32 samples at ``sample_rate``; ``start_s`` is the stream start in the container."""

    samples: np.ndarray
    sample_rate: int
    start_s: float
    source_rate: int
    source_channels: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def check_finite_audio(samples: np.ndarray, rate: int, source: str | Path) -> None:
    """Refuse audio holding NaN or infinite samples (a float WAV can; features, resampling and the AAC encoder
    cannot take them): ``samples`` is ``(n,)`` or ``(channels, n)`` at ``rate``; the error names ``source``, how many
    samples are bad and where the first one is.

    Raises:
        PreprocessError: some sample is not finite.
    """
    bad = ~np.isfinite(samples)
    if not bad.any():
        return
    per_time = bad.reshape(-1, bad.shape[-1]).any(axis=0)
    first = int(np.argmax(per_time))
    found = (("NaN", np.isnan(samples).any()), ("infinite", np.isinf(samples).any()))
    kinds = " or ".join(kind for kind, hit in found if hit)
    n = int(per_time.sum())
    raise PreprocessError(
        source,
        f"audio holds {n} {kinds} sample{'s' if n != 1 else ''}, the first at {first / rate:.3f} s (sample {first}); "
        "a damaged or wrongly written (float) file",
    )


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> Audio:
    """Decode the first audio stream of any container (wav, mp3, aac in mp4, ...), downmix, resample.

    Raises:
        PreprocessError: when the file has no audio stream, cannot be decoded, or holds NaN or infinite samples.
    """
    import av

    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise PreprocessError(path, "no audio stream (give a separate audio file with --audio)")
        stream = container.streams.audio[0]
        start = stream_start_s(stream)
        resampler = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        try:
            for frame in container.decode(stream):
                rate = frame.sample_rate
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as e:
            raise PreprocessError(path, f"audio decoding failed ({e})") from e
    if not chunks:
        raise PreprocessError(path, "the audio stream has no decodable samples")
    channels = chunks[0].shape[0]
    planar = np.concatenate(chunks, axis=1)
    mono = planar.mean(axis=0) if planar.shape[0] > 1 else planar[0]
    if not rate or rate <= 0:
        raise PreprocessError(path, "audio stream has no sample rate")
    check_finite_audio(planar, int(rate), path)
    return Audio(resample_audio(mono, int(rate), sample_rate), sample_rate, start, int(rate), int(channels))


def align_audio(audio: Audio, video_start_s: float) -> np.ndarray:
    """Samples aligned so that sample 0 plays with video frame 0 (zero-pad or trim the head)."""
    offset = int(round((audio.start_s - video_start_s) * audio.sample_rate))
    if offset > 0:
        return np.concatenate([np.zeros(offset, dtype=np.float32), audio.samples])
    if offset < 0:
        return audio.samples[-offset:]
    return audio.samples


def frames_for_seconds(seconds: float, fps: float = FPS) -> int:
    """Whole video frames fully covered by ``seconds`` of audio."""
    return int(math.floor(seconds * fps + TIME_EPS))
