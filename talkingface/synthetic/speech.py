"""Speech-like audio made in code: a glottal pulse train with intonation through vowel formant resonators,
syllable envelopes and pauses; plus the per-video-frame mouth opening and width that follow it.

Mouth opening is the syllable envelope times the vowel's openness (a > o > e > u > i) and the width follows the
vowel (i wide, u narrow), so both are functions of what log-mel features see: energy and formants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from talkingface.constants import FPS, SAMPLE_RATE

#: Vowel -> (F1, F2, F3) formant frequencies in Hz (adult averages).
VOWEL_FORMANTS: dict[str, tuple[float, float, float]] = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (270.0, 2290.0, 3010.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
}
#: Vowel -> mouth openness at full loudness (fraction of the largest opening).
VOWEL_OPENNESS: dict[str, float] = {"a": 1.0, "o": 0.8, "e": 0.6, "u": 0.45, "i": 0.35}
#: Vowel -> mouth width factor at full loudness (1 = the closed mouth's width).
VOWEL_WIDTH: dict[str, float] = {"a": 1.0, "o": 0.82, "e": 1.08, "u": 0.72, "i": 1.18}
VOWELS = tuple(VOWEL_FORMANTS)
FORMANT_BANDWIDTHS_HZ = (90.0, 110.0, 150.0)


@dataclass
class SpeechTrack:
    """Mono audio at ``sample_rate`` and, per 25 fps video frame, the mouth opening (0..1) and width factor."""

    audio: np.ndarray  # (samples,) float32 in [-1, 1]
    sample_rate: int
    opening: np.ndarray  # (frames,) float32 in [0, 1]
    width: np.ndarray  # (frames,) float32 around 1

    @property
    def n_frames(self) -> int:
        return len(self.opening)


def _resonator(signal: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    """Second-order formant resonator (unit gain at DC-normalised peak)."""
    r = np.exp(-np.pi * bandwidth / sr)
    theta = 2.0 * np.pi * freq / sr
    a = [1.0, -2.0 * r * np.cos(theta), r * r]
    b = [1.0 - r]
    return lfilter(b, a, signal)


def _glottal_source(n: int, f0: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A band-limited-ish sawtooth pulse train following the ``f0`` contour (Hz per sample), with jitter."""
    phase = np.cumsum(f0 * (1.0 + 0.01 * rng.standard_normal(n)) / sr)
    saw = (phase % 1.0) - 0.5
    return np.diff(saw, prepend=saw[0]) * -1.0 + 0.05 * saw  # sharp closures: a rich harmonic spectrum


def synthesize_speech(
    seconds: float,
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
    fps: float = FPS,
    f0_hz: float | None = None,
) -> SpeechTrack:
    """Words of 1-3 syllables with pauses, each syllable a vowel with a smooth loudness envelope.

    Args:
        seconds: track length.
        rng: the random source (all randomness comes from it).
        f0_hz: mean pitch; default drawn in 100-220 Hz.
    """
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0_mean = float(f0_hz if f0_hz is not None else rng.uniform(100.0, 220.0))
    f0 = f0_mean * (
        1.0
        + 0.12 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * np.pi))
        + 0.05 * np.sin(2 * np.pi * rng.uniform(1.0, 3.0) * t + rng.uniform(0, 2 * np.pi))
    )
    source = _glottal_source(n, f0, sample_rate, rng)
    audio = np.zeros(n, dtype=np.float64)
    envelope = np.zeros(n, dtype=np.float64)
    openness = np.zeros(n, dtype=np.float64)
    width = np.ones(n, dtype=np.float64)
    pos = int(rng.uniform(0.1, 0.4) * sample_rate)
    rate = rng.uniform(0.85, 1.2)  # speaking rate of this speaker
    while pos < n:
        for _ in range(int(rng.integers(1, 4))):  # syllables of one word
            dur = int(rng.uniform(0.16, 0.32) / rate * sample_rate)
            if pos + dur > n:
                break
            vowel = VOWELS[int(rng.integers(len(VOWELS)))]
            loud = rng.uniform(0.6, 1.0)
            tau = np.linspace(0.0, 1.0, dur)
            env = loud * np.sin(np.pi * tau) ** 0.8
            seg = source[pos : pos + dur]
            shaped = np.zeros(dur)
            for freq, bw, gain in zip(VOWEL_FORMANTS[vowel], FORMANT_BANDWIDTHS_HZ, (1.0, 0.6, 0.3), strict=True):
                shaped += gain * _resonator(seg, freq * rng.uniform(0.95, 1.05), bw, sample_rate)
            shaped /= np.abs(shaped).max() + 1e-9
            burst = int(0.03 * sample_rate)  # a consonant-like noise onset
            if rng.random() < 0.6 and burst < dur:
                noise = rng.standard_normal(burst) * np.linspace(0.25, 0.0, burst)
                shaped[:burst] += np.diff(noise, prepend=0.0)
            audio[pos : pos + dur] += env * shaped
            envelope[pos : pos + dur] = np.maximum(envelope[pos : pos + dur], env)
            openness[pos : pos + dur] = VOWEL_OPENNESS[vowel]
            width[pos : pos + dur] = 1.0 + env * (VOWEL_WIDTH[vowel] - 1.0)
            pos += dur + int(rng.uniform(0.0, 0.04) * sample_rate)
        pos += int(rng.choice([rng.uniform(0.08, 0.25), rng.uniform(0.3, 0.7)]) * sample_rate)  # pause
    audio += 0.002 * rng.standard_normal(n)  # room noise: silence is not digital zero
    audio *= 0.5 / max(np.abs(audio).max(), 1e-9)
    n_frames = int(round(seconds * fps))
    per_frame = sample_rate / fps
    opening = np.zeros(n_frames, dtype=np.float32)
    widths = np.ones(n_frames, dtype=np.float32)
    mouth = envelope * openness
    for i in range(n_frames):  # the 40 ms centred on the frame's time (where its audio window is centred)
        lo, hi = max(int((i - 0.5) * per_frame), 0), min(int((i + 0.5) * per_frame), n)
        if hi > lo:
            opening[i] = mouth[lo:hi].mean()
            widths[i] = width[lo:hi].mean()
    return SpeechTrack(audio.astype(np.float32), sample_rate, np.clip(opening, 0.0, 1.0), widths)
