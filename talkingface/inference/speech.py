"""The driving speech: 16 kHz samples for the features, the per-frame audio windows, and the track to mux."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkingface.constants import FPS, SAMPLE_RATE
from talkingface.inference.errors import InferenceError
from talkingface.inference.timeline import n_output_frames
from talkingface.media.decode import align_audio, load_audio, probe_video
from talkingface.media.extract import SILENCE_PEAK
from talkingface.media.features import AudioFeatureBackend
from talkingface.media.windows import smooth_windows

log = logging.getLogger(__name__)

#: Sample rates the AAC encoder takes as they are; anything else is muxed at 48 kHz.
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
MUX_FALLBACK_RATE = 48_000


@dataclass
class Speech:
    """Speech driving ``n_frames`` output frames."""

    path: Path
    samples: np.ndarray  # 16 kHz mono float32, trimmed to n_frames / fps seconds
    windows: np.ndarray  # (n_frames, 8, 16, D) float32 smoothed audio windows (the model's audio input)
    mux_samples: np.ndarray  # mono float32 at mux_rate, trimmed likewise (what the output video plays)
    mux_rate: int
    fps: float = FPS

    @property
    def n_frames(self) -> int:
        return len(self.windows)

    @property
    def seconds(self) -> float:
        return self.n_frames / self.fps


def prepare_speech(
    path: str | Path, backend: AudioFeatureBackend, *, from_video: bool = False, fps: float = FPS
) -> Speech:
    """Decode ``path`` (any container with an audio stream), compute the model's audio windows, keep a mux copy.

    Args:
        from_video: the speech is the video's own track: align it with the first video frame.
    Raises:
        PreprocessError: unreadable file or no audio stream.  InferenceError: less than one frame of audio.
    """
    path = Path(path)
    audio = load_audio(path, SAMPLE_RATE)
    start = probe_video(path).start_s if from_video else audio.start_s
    samples = align_audio(audio, start)
    n = n_output_frames(len(samples), SAMPLE_RATE, fps)
    if n < 1:
        raise InferenceError(
            path, f"audio lasts {len(samples) / SAMPLE_RATE:.3f} s, shorter than one video frame ({1000 / fps:.0f} ms)"
        )
    if float(np.abs(samples).max()) < SILENCE_PEAK:
        log.warning("%s: the audio is silent; the mouth will not move", path)
    samples = samples[: int(round(n / fps * SAMPLE_RATE))]
    windows = smooth_windows(backend.frame_windows(samples, n, path))
    mux_rate = audio.source_rate if audio.source_rate in AAC_RATES else MUX_FALLBACK_RATE
    if mux_rate == SAMPLE_RATE:
        mux = samples
    else:
        hi = load_audio(path, mux_rate)
        mux = align_audio(hi, start)[: int(round(n / fps * mux_rate))]
    return Speech(path, samples, windows.astype(np.float32), mux.astype(np.float32), int(mux_rate), fps)
