"""``LipSyncStream``: audio chunks in as they arrive, lip-synced frames out in order, with bounded latency.

The offline pipeline sees the whole speech; the stream sees it grow. Output frame ``i`` (shown at ``i / 25`` s) needs

* its audio window: feature frames ``2i - 8 .. 2i + 7``, i.e. 7 feature frames (140 ms) ahead,
* the smoothing: the windows of frames ``i - 4 .. i + 3``, i.e. 3 video frames (120 ms) more,
* the FFT: the last feature frame (centred at ``i / 25 + 260 ms``) reads 256 samples (16 ms) past its centre,

so it can be made once the audio reaches ``i / 25 + 276 ms``; as the offline path keeps only whole 40 ms frames of
speech (the features of a trailing partial frame are zeros there), the stream waits for the end of frame ``i + 6``:
``i / 25 + 280 ms`` (:data:`LOOKAHEAD_FRAMES` = 7 frames). Frames are generated in the offline pipeline's batches
(``options.batch_size``: frames ``0..B-1``, ``B..2B-1``, ...), so a frame may wait ``B - 1`` more frames for its
batch; that grouping is what makes the frames equal the offline ones (the sampler draws the noise of a whole batch
at every step). ``close()`` ends the speech: the last frames get the zero padding the offline path gives them.

Log-mel normalisation: offline, each band is normalised by its mean and standard deviation over the whole speech.
``normalization="running"`` uses those of all the speech heard before the batch is generated (the live default);
``MelStats`` given up front (:meth:`MelStats.of_speech` of a calibration clip or of the whole file) make the frames
equal the offline pipeline's. Only the ``mel`` backend streams.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkingface.constants import AUDIO_WINDOW, FEATURE_DIM, FEATURES_PER_FRAME, FPS, SAMPLE_RATE, SMOOTH_WINDOWS
from talkingface.inference.errors import InferenceError
from talkingface.inference.landmark_file import SourceLandmarks
from talkingface.inference.pipeline import LipSyncPipeline, paste_frame
from talkingface.inference.timeline import n_output_frames, pingpong_indices
from talkingface.inference.video import PreparedVideo
from talkingface.inference.writer import FramesDirWriter, VideoWriter, check_output
from talkingface.media.decode import align_audio, load_audio, probe_video
from talkingface.media.features import (
    MEL_STD_FLOOR_DB,
    IncrementalLogMel,
    LogMelBackend,
    log_mel,
    mel_stats,
    normalize_mel,
)
from talkingface.ranges import Range

log = logging.getLogger(__name__)

#: Samples of 16 kHz audio per output frame (640).
SAMPLES_PER_FRAME = int(SAMPLE_RATE // FPS)
#: Frames of audio the stream waits for past a frame's start: 140 ms window + 120 ms smoothing + 16 ms FFT,
#: rounded up to whole frames.
LOOKAHEAD_FRAMES = 7
#: Longest chunk ``push`` takes (seconds): a live source gives 20-200 ms; a longer one is a file, not a stream.
MAX_CHUNK_S = 10.0
NORMALIZATIONS = ("running", "given")
#: Sample rates ``LipSyncStream`` takes (Hz): telephone speech (8 kHz) to studio audio (192 kHz); a whole number.
SAMPLE_RATES = Range(int, min=8_000, max=192_000)


@dataclass(frozen=True)
class MelStats:
    """Per-band log-mel mean and (floored) standard deviation, ``(1, 29)`` float32 each."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of_speech(cls, samples: np.ndarray) -> MelStats:
        """The statistics the offline pipeline normalises ``samples`` (16 kHz) with: over its whole frames."""
        n = n_output_frames(len(samples))
        if n < 1:
            raise InferenceError("samples", f"{len(samples)} samples are shorter than one video frame")
        if not np.isfinite(samples[: n * SAMPLES_PER_FRAME]).all():
            raise InferenceError("samples", "hold NaN or infinite values")
        return cls(*mel_stats(log_mel(np.asarray(samples, dtype=np.float32)[: n * SAMPLES_PER_FRAME])))


@dataclass
class StreamStats:
    """Timings of a stream. Per chunk: its length, the time ``push`` took (feature extraction and the generation
    of the frames it completed) and the frames it gave (``close()`` apart: ``close_s``). Per frame: its audio lag
    (the speech received when it was made, minus its time ``i / 25``), its compute time (from the call of the
    ``push`` / ``close`` that returned it to the return) and its latency: from when the speech at its time was
    there (the arrival of the chunk holding its first sample, less the rest of that chunk) to its return; the audio
    lag plus the compute time when the stream keeps up with the speech, more when it falls behind."""

    chunk_samples: list[int] = field(default_factory=list)
    chunk_s: list[float] = field(default_factory=list)
    chunk_frames: list[int] = field(default_factory=list)
    frame_audio_lag_s: list[float] = field(default_factory=list)
    frame_latency_s: list[float] = field(default_factory=list)
    frame_compute_s: list[float] = field(default_factory=list)
    close_s: float = 0.0  # the time close() took (the last frames)

    @property
    def n_frames(self) -> int:
        return len(self.frame_audio_lag_s)

    @property
    def audio_s(self) -> float:
        return sum(self.chunk_samples) / SAMPLE_RATE

    @property
    def compute_s(self) -> float:
        return sum(self.chunk_s) + self.close_s

    def summary(self) -> dict[str, float]:
        """p50 / p95 / max of the chunk times, frame audio lags and frame latencies (seconds), frames per second of
        compute, and the real-time factor (compute time / audio time: below 1 keeps up with live speech)."""
        out: dict[str, float] = {"chunks": len(self.chunk_s), "frames": self.n_frames, "audio_s": self.audio_s}
        for name, values in (
            ("chunk", self.chunk_s),
            ("audio_lag", self.frame_audio_lag_s),
            ("latency", self.frame_latency_s),
            ("compute", self.frame_compute_s),
        ):
            if values:
                p50, p95 = np.percentile(values, [50, 95])
                out.update({f"{name}_p50_s": float(p50), f"{name}_p95_s": float(p95), f"{name}_max_s": max(values)})
        out["fps"] = self.n_frames / max(self.compute_s, 1e-9)
        out["rtf"] = self.compute_s / max(self.audio_s, 1e-9)
        return out


def check_streamable(pipeline: LipSyncPipeline) -> None:
    """Only log-mel features are computed chunk by chunk; the other backends need the whole speech."""
    if not isinstance(pipeline.backend, LogMelBackend):
        kind = getattr(pipeline.backend, "kind", type(pipeline.backend).__name__)
        raise InferenceError(
            "--audio-features", f"{kind!r} features cannot be streamed (they need the whole speech); use mel"
        )


class LipSyncStream:
    """Lip-sync a prepared video to speech that arrives in chunks.

    Example::

        pipe = LipSyncPipeline(model, options=LipSyncOptions(batch_size=1))
        stream = LipSyncStream(pipe, pipe.prepare_video("person.mp4"))
        for chunk in microphone():           # float32 mono 16 kHz, e.g. 40 ms each
            for frame in stream.push(chunk):  # RGB uint8 frames of the video's size, in order
                show(frame)
        for frame in stream.close():
            show(frame)

    Args:
        pipeline: the pipeline whose model, options (batch size, sampler, seed, ...) and backend are used; the
            backend must be ``mel``.
        video: the prepared portrait video (``pipeline.prepare_video``).
        normalization: ``"running"`` (the mean and std of the speech heard so far) or a :class:`MelStats`
            (``MelStats.of_speech(samples)`` of the whole speech gives the offline pipeline's frames exactly).
        sample_rate: the rate of the pushed chunks, a whole number of Hz from 8 kHz to 192 kHz
            (:data:`SAMPLE_RATES`); other rates than 16 kHz are resampled as they come (FFmpeg's resampler, which
            differs slightly from the offline one, so frames are then not exactly the offline's).
        clock: the time source of the latency figures.
    """

    def __init__(
        self,
        pipeline: LipSyncPipeline,
        video: PreparedVideo,
        *,
        normalization: str | MelStats = "running",
        sample_rate: int = SAMPLE_RATE,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        problem = SAMPLE_RATES.problem(sample_rate)
        if problem is not None:
            raise InferenceError("sample_rate", f"{problem} (a rate in Hz, 8 kHz to 192 kHz)")
        check_streamable(pipeline)
        if isinstance(normalization, str) and normalization != "running":
            raise InferenceError("normalization", f"must be 'running' or MelStats, got {normalization!r}")
        self.pipeline, self.video, self.normalization = pipeline, video, normalization
        self.sample_rate, self.clock = int(sample_rate), clock
        self.batch_size = pipeline.options.batch_size
        # a source frame seen again keeps its latent: the speech may outlast the video (offline caches then too)
        self._gen = pipeline.start_generation(video, cache=True, window=pipeline.options.decode_window)
        self._mel = IncrementalLogMel()
        self._db = np.zeros((0, FEATURE_DIM), dtype=np.float32)  # dB feature frames _db_start.. still needed
        self._db_start = 0
        self._n_db = 0
        self._sum = np.zeros(FEATURE_DIM)
        self._sum_sq = np.zeros(FEATURE_DIM)
        self._resampler = None if self.sample_rate == SAMPLE_RATE else _Resampler(self.sample_rate)
        self.n_samples = 0  # 16 kHz samples received
        self.n_emitted = 0
        self.closed = False
        self.stats = StreamStats()
        self._arrivals: list[tuple[int, float]] = []  # (first sample, arrival time) of each chunk

    @property
    def audio_frames(self) -> int:
        """Whole frames of speech received (the offline pipeline would make this many frames of it)."""
        return self.n_samples // SAMPLES_PER_FRAME

    def push(self, chunk: np.ndarray, arrived: float | None = None) -> list[np.ndarray]:
        """Add mono float samples (at ``sample_rate``); return the frames they completed (maybe none), in order.

        ``arrived``: when the chunk became available (``clock`` time, e.g. when its last sample was captured), if
        earlier than this call: the frame latencies then count the time the caller kept it."""
        called = self.clock()
        if self.closed:
            raise InferenceError("push", "the stream is closed")
        chunk = np.asarray(chunk)
        if chunk.ndim == 2 and 1 in chunk.shape:
            chunk = chunk.reshape(-1)
        if chunk.ndim != 1 or not np.issubdtype(chunk.dtype, np.floating):
            raise InferenceError("chunk", f"expected mono float samples (n,), got {chunk.dtype} {chunk.shape}")
        if len(chunk) == 0:
            raise InferenceError("chunk", "is empty")
        if len(chunk) > MAX_CHUNK_S * self.sample_rate:
            raise InferenceError(
                "chunk", f"{len(chunk) / self.sample_rate:.1f} s is longer than {MAX_CHUNK_S:g} s; push it in pieces"
            )
        finite = np.isfinite(chunk)
        if not finite.all():
            raise InferenceError(
                "chunk",
                f"holds {int((~finite).sum())} NaN or infinite samples (the first at sample {int(np.argmin(finite))} "
                f"of the chunk, {self.n_samples / SAMPLE_RATE:.3f} s into the stream); nothing of it was used",
            )
        samples = chunk.astype(np.float32) if self._resampler is None else self._resampler(chunk)
        return self._advance(samples, called, called if arrived is None else arrived, final=False)

    def close(self) -> list[np.ndarray]:
        """End the speech: return the remaining frames (the offline path's zero padding at the end)."""
        called = self.clock()
        if self.closed:
            return []
        self.closed = True
        tail = self._resampler(None) if self._resampler is not None else np.zeros(0, np.float32)
        if self.n_samples + len(tail) < SAMPLES_PER_FRAME:
            raise InferenceError(
                "speech", f"{(self.n_samples + len(tail)) / SAMPLE_RATE:.3f} s is shorter than one video frame (40 ms)"
            )
        return self._advance(tail, called, called, final=True)

    # ------------------------------------------------------------------ internals
    def _advance(self, samples: np.ndarray, called: float, arrived: float, final: bool) -> list[np.ndarray]:
        self.n_samples += len(samples)
        if len(samples):
            self._arrivals.append((self.n_samples - len(samples), arrived))
        committed = FEATURES_PER_FRAME * self.audio_frames  # the features of whole frames of speech
        db = self._mel.push(samples, limit=committed)
        self._db = np.concatenate([self._db, db])
        self._n_db += len(db)
        self._sum += db.sum(axis=0, dtype=np.float64)
        self._sum_sq += np.square(db, dtype=np.float64).sum(axis=0)
        frames: list[np.ndarray] = []
        while True:
            start, end = self.n_emitted, self.n_emitted + self.batch_size
            if final:
                end = min(end, self.audio_frames)
                if start >= end:
                    break
            elif self.audio_frames < end - 1 + LOOKAHEAD_FRAMES:
                break
            frames += self._generate(start, end)
        now = self.clock()
        if final:
            self.stats.close_s = now - called
        else:
            self.stats.chunk_samples.append(len(samples))
            self.stats.chunk_s.append(now - called)
            self.stats.chunk_frames.append(len(frames))
        for i in range(self.n_emitted - len(frames), self.n_emitted):
            self.stats.frame_audio_lag_s.append(self.n_samples / SAMPLE_RATE - i / FPS)
            first = i * SAMPLES_PER_FRAME  # spoken at the arrival of its chunk minus the rest of the chunk
            k = next(k for k in range(len(self._arrivals) - 1, -1, -1) if self._arrivals[k][0] <= first)
            end = self._arrivals[k + 1][0] if k + 1 < len(self._arrivals) else self.n_samples
            self.stats.frame_latency_s.append(now - self._arrivals[k][1] + (end - first) / SAMPLE_RATE)
            self.stats.frame_compute_s.append(now - called)
        # forget what the next frames no longer need: chunks before their first sample, features before their windows
        while len(self._arrivals) > 1 and self._arrivals[1][0] <= self.n_emitted * SAMPLES_PER_FRAME:
            self._arrivals.pop(0)
        keep_from = max(0, FEATURES_PER_FRAME * (self.n_emitted - SMOOTH_WINDOWS // 2) - AUDIO_WINDOW // 2)
        if keep_from > self._db_start:
            self._db = self._db[keep_from - self._db_start :]
            self._db_start = keep_from
        return frames

    def _stats(self) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.normalization, MelStats):
            return self.normalization.mean, self.normalization.std
        count = max(self._n_db, 1)
        mean = self._sum / count
        std = np.sqrt(np.maximum(self._sum_sq / count - mean**2, 0.0))
        return mean[None].astype(np.float32), np.maximum(std, MEL_STD_FLOOR_DB)[None].astype(np.float32)

    def _windows(self, start: int, end: int) -> np.ndarray:
        """The smoothed audio windows ``(end - start, 8, 16, 29)`` of frames ``start..end-1`` from the speech so far
        (the offline ``smooth_windows(frame_windows(...))`` once the speech is complete around them); the features
        of frames already made are forgotten."""
        n = self.audio_frames
        half_s, half_w = SMOOTH_WINDOWS // 2, AUDIO_WINDOW // 2
        j = np.arange(start, end)[:, None] + np.arange(-half_s, half_s)[None]  # (b, 8) windows
        k = FEATURES_PER_FRAME * j[..., None] - half_w + np.arange(AUDIO_WINDOW)  # (b, 8, 16) feature frames
        valid = ((j >= 0) & (j < n))[..., None] & (k >= 0) & (k < FEATURES_PER_FRAME * n)
        lo, hi = (int(k[valid].min()), int(k[valid].max()) + 1) if valid.any() else (0, 0)
        feats = normalize_mel(self._db[lo - self._db_start : hi - self._db_start], *self._stats())
        out = np.zeros(valid.shape + (FEATURE_DIM,), dtype=np.float32)
        out[valid] = feats[k[valid] - lo]
        return out

    def _generate(self, start: int, end: int) -> list[np.ndarray]:
        video = self.video
        src = pingpong_indices(end, video.n_frames, start)
        _, faces, alphas = self.pipeline.generate_batch(self._gen, src, self._windows(start, end))
        self.n_emitted = end
        return [paste_frame(video, int(i), faces[j], alphas[j]) for j, i in enumerate(src)]


class _Resampler:
    """Mono float32 at ``rate`` -> 16 kHz, chunk by chunk (FFmpeg's resampler keeps its state between chunks)."""

    def __init__(self, rate: int) -> None:
        import av

        self.rate = rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._pts = 0

    def __call__(self, chunk: np.ndarray | None) -> np.ndarray:
        import av

        frame = None
        if chunk is not None:
            pcm = np.ascontiguousarray(chunk, np.float32)[None]
            frame = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
            frame.sample_rate, frame.pts = self.rate, self._pts
            self._pts += len(chunk)
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def check_chunk_ms(chunk_ms: float) -> None:
    """``--chunk-ms``: 20-200 ms, the chunks a live source gives."""
    if not 20 <= chunk_ms <= 200:
        raise InferenceError("--chunk-ms", f"must be between 20 and 200 (a live source's chunks), got {chunk_ms:g}")


def speech_samples(path: str | Path, from_video: bool = False) -> np.ndarray:
    """The 16 kHz samples of ``path`` aligned as the offline pipeline aligns them (``prepare_speech``)."""
    audio = load_audio(path, SAMPLE_RATE)
    return align_audio(audio, probe_video(path).start_s if from_video else audio.start_s)


def stream_file(
    pipeline: LipSyncPipeline,
    video: str | Path | PreparedVideo,
    audio: str | Path | None,
    out: str | Path | None,
    *,
    frames_dir: str | Path | None = None,
    chunk_ms: float = 40.0,
    realtime: bool = True,
    overwrite: bool = False,
    landmarks: str | Path | SourceLandmarks | None = None,
    progress: bool = False,
) -> StreamStats:
    """Play ``audio`` (default: the video's own track) into a :class:`LipSyncStream` in ``chunk_ms`` chunks, at
    the pace of the wall clock unless not ``realtime``, and write the frames as they come (``out``: mp4 with the
    speech; ``frames_dir``: PNGs). Nothing is left at ``out`` / ``frames_dir`` unless complete. Logs and returns
    the timings (``talkingface lipsync --stream``)."""
    if out is None and frames_dir is None:
        raise InferenceError("out", "give an output video path, a frames folder, or both")
    check_chunk_ms(chunk_ms)
    check_streamable(pipeline)
    out = check_output(out, overwrite) if out is not None else None
    frames_dir = check_output(frames_dir, overwrite, directory=True) if frames_dir is not None else None
    source = audio if audio is not None else (video.path if isinstance(video, PreparedVideo) else video)
    samples = speech_samples(source, from_video=audio is None)
    n = n_output_frames(len(samples))
    if n < 1:
        raise InferenceError(source, f"audio lasts {len(samples) / SAMPLE_RATE:.3f} s, shorter than one video frame")
    if not isinstance(video, PreparedVideo):
        video = pipeline.prepare_video(video, progress=progress, landmarks=landmarks)
    stream = LipSyncStream(pipeline, video)
    step = int(round(chunk_ms / 1000 * SAMPLE_RATE))
    with contextlib.ExitStack() as stack:
        writers: list[VideoWriter | FramesDirWriter] = []
        if out is not None:  # the speech of the whole frames plays along, as offline
            mux = samples[: n * SAMPLES_PER_FRAME]
            writers.append(
                VideoWriter(
                    out,
                    video.fps,
                    mux,
                    SAMPLE_RATE,
                    overwrite=overwrite,
                    crf=pipeline.options.crf,
                    preset=pipeline.options.x264_preset,
                )
            )
        if frames_dir is not None:
            writers.append(FramesDirWriter(frames_dir, overwrite=overwrite))
        for w in writers:
            stack.enter_context(w)
        began = time.perf_counter()
        for pos in range(0, len(samples), step):
            chunk = samples[pos : pos + step]
            spoken = began + (pos + len(chunk)) / SAMPLE_RATE  # the chunk is there once its last sample is spoken
            if realtime:
                time.sleep(max(0.0, spoken - time.perf_counter()))
            for frame in stream.push(chunk, arrived=spoken if realtime else None):
                for w in writers:
                    w.write(frame)
        for frame in stream.close():
            for w in writers:
                w.write(frame)
    s = stream.stats.summary()
    log.info(
        "wrote %s: streamed %d frames in %d chunks of %g ms%s: chunk time p50 %.0f / p95 %.0f / max %.0f ms; frame "
        "latency p50 %.0f / p95 %.0f / max %.0f ms (audio lag p50 %.0f ms, compute p50 %.0f ms); %.2f frames/s, "
        "real-time factor %.2f",
        " and ".join(str(p) for p in (out, frames_dir) if p is not None),
        s["frames"],
        s["chunks"],
        chunk_ms,
        "" if realtime else " (as fast as possible)",
        *(1000 * s[k] for k in ("chunk_p50_s", "chunk_p95_s", "chunk_max_s")),
        *(1000 * s[k] for k in ("latency_p50_s", "latency_p95_s", "latency_max_s")),
        1000 * s["audio_lag_p50_s"],
        1000 * s["compute_p50_s"],
        s["fps"],
        s["rtf"],
    )
    return stream.stats
