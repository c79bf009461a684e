"""Audio feature backends: D features at 50 Hz (29 unless said), cut into per-video-frame (16, D) windows.

Backends (``--audio-features``):

* ``mel`` -> kind ``logmel29``: 29 log-mel bands, no weights needed (numpy filterbank).
* ``wav2vec2`` -> kind ``wav2vec2-ctc29``: character posteriors of a local wav2vec2 CTC model mapped to
  DeepSpeech's 29 symbols (needs ``transformers`` and a model directory).
* ``deepspeech-npy`` -> kind ``deepspeech29``: AD-NeRF ``aud.npy`` files, ``(N_frames, 16, 29)``, used as they are.
* ``whisper`` -> kind ``whisper-<size>-<width>`` (e.g. ``whisper-tiny.en-384``): the encoder states of a local whisper
  model (CTranslate2 or transformers folder, see :mod:`talkingface.media.whisper`); D is the encoder width.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from talkingface.constants import AUDIO_WINDOW, FEATURE_DIM, FEATURE_RATE_HZ, SAMPLE_RATE
from talkingface.media.errors import PreprocessError
from talkingface.media.whisper import encoder_states, load_whisper_encoder
from talkingface.media.windows import frame_windows, n_feature_frames
from talkingface.npy import read_npy

log = logging.getLogger(__name__)

#: Log-mel analysis: 25 ms Hann window, 20 ms hop (50 Hz), 512-point FFT.
MEL_WIN_LENGTH = 400
MEL_HOP_LENGTH = SAMPLE_RATE // FEATURE_RATE_HZ
MEL_N_FFT = 512
MEL_FMIN_HZ = 55.0
MEL_FMAX_HZ = 7600.0
#: Power floor before the log (about -100 dB for full-scale float audio).
MEL_POWER_FLOOR = 1e-10
#: Standard-deviation floor of the per-utterance normalisation (in dB).
MEL_STD_FLOOR_DB = 1.0

#: DeepSpeech's output alphabet: space, a-z, apostrophe, then the CTC blank (29 symbols).
DEEPSPEECH_ALPHABET = (" ",) + tuple("abcdefghijklmnopqrstuvwxyz") + ("'", "<blank>")
#: Seconds of audio per wav2vec2 forward pass (bounded memory on long videos) and context on each side.
WAV2VEC2_CHUNK_S = 20.0
WAV2VEC2_CONTEXT_S = 1.0
#: wav2vec2's first output frame is centred ~12.5 ms into the audio (400-sample receptive field, 320 hop).
WAV2VEC2_FRAME_OFFSET_S = 0.0125

#: Backend name -> the kind it records; ``whisper`` records ``whisper-<size>-<width>`` (:data:`WHISPER_KIND_PREFIX`).
BACKEND_KINDS = {
    "mel": "logmel29",
    "wav2vec2": "wav2vec2-ctc29",
    "deepspeech-npy": "deepspeech29",
    "whisper": "whisper",
}
WHISPER_KIND_PREFIX = "whisper-"


def backend_for_kind(kind: str) -> str | None:
    """The ``--audio-features`` backend that computes features of ``kind`` (None: no backend here does)."""
    if kind.startswith(WHISPER_KIND_PREFIX):
        return "whisper"
    return next((name for name, k in BACKEND_KINDS.items() if k == kind and name != "whisper"), None)


class AudioFeatureBackend(ABC):
    """Turns a video's audio into one ``(16, dim)`` window per video frame."""

    kind: str = ""
    dim: int = FEATURE_DIM
    #: Whether ``frame_windows`` needs the decoded audio (False: features come from files).
    needs_audio: bool = True

    @abstractmethod
    def frame_windows(self, audio: np.ndarray | None, n_frames: int, source: Path) -> np.ndarray:
        """``(n_frames, 16, dim)`` float32 windows for the video ``source``."""


class RateFeatureBackend(AudioFeatureBackend):
    """A backend that computes ``(M, dim)`` features at 50 Hz from 16 kHz mono audio."""

    @abstractmethod
    def features(self, audio: np.ndarray) -> np.ndarray:
        """``(round(len(audio) / 16000 * 50), dim)`` float32 features; frame ``k`` centred at ``k * 20 ms``."""

    def frame_windows(self, audio: np.ndarray | None, n_frames: int, source: Path) -> np.ndarray:
        if audio is None:
            raise PreprocessError(source, "no audio to compute features from")
        return frame_windows(self.features(audio), n_frames, AUDIO_WINDOW)


# ----------------------------------------------------------------------------------------------- log-mel


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int = FEATURE_DIM,
    n_fft: int = MEL_N_FFT,
    sample_rate: int = SAMPLE_RATE,
    fmin: float = MEL_FMIN_HZ,
    fmax: float = MEL_FMAX_HZ,
) -> np.ndarray:
    """Triangular HTK-mel filters with unit area (Slaney normalisation): ``(n_mels, n_fft // 2 + 1)``."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank *= 2.0 / (upper - lower)  # equal area per band
    return bank.astype(np.float32)


@functools.cache
def analysis_window() -> np.ndarray:
    """The 25 ms Hann window centred in the 512-point FFT frame (computed once, read-only)."""
    window = np.zeros(MEL_N_FFT, dtype=np.float32)
    offset = (MEL_N_FFT - MEL_WIN_LENGTH) // 2
    window[offset : offset + MEL_WIN_LENGTH] = np.hanning(MEL_WIN_LENGTH + 2)[1:-1]
    window.flags.writeable = False
    return window


@functools.cache
def _default_filterbank() -> np.ndarray:
    """:func:`mel_filterbank` of the log-mel backend, computed once (a stream computes log-mel every chunk)."""
    bank = mel_filterbank()
    bank.flags.writeable = False
    return bank


def log_mel_frames(padded: np.ndarray, n_frames: int) -> np.ndarray:
    """dB of ``n_frames`` analysis frames of ``padded``: frame ``k`` is ``padded[k * 320 : k * 320 + 512]``.

    Every step works frame by frame (the mel projection is an ``einsum``, not a BLAS matmul whose rounding depends
    on how many rows it gets), so a frame's value does not depend on the other frames computed with it: computing
    the frames piece by piece (:class:`IncrementalLogMel`) gives exactly the values of one pass.
    """
    frames = np.lib.stride_tricks.sliding_window_view(padded, MEL_N_FFT)[::MEL_HOP_LENGTH][:n_frames]
    power = np.abs(np.fft.rfft(frames * analysis_window(), axis=1)) ** 2
    mel = np.einsum("mk,bk->mb", power, _default_filterbank())
    return (10.0 * np.log10(np.maximum(mel, MEL_POWER_FLOOR))).astype(np.float32)


def log_mel(audio: np.ndarray, n_frames: int | None = None) -> np.ndarray:
    """Un-normalised log-mel power in dB, ``(n_frames, 29)``; frame ``k`` is centred at ``k * 20 ms``."""
    audio = np.asarray(audio, dtype=np.float32)
    if n_frames is None:
        n_frames = n_feature_frames(len(audio), SAMPLE_RATE, FEATURE_RATE_HZ)
    half = MEL_N_FFT // 2
    total = (n_frames - 1) * MEL_HOP_LENGTH + MEL_N_FFT if n_frames > 0 else 0
    padded = np.zeros(max(total, half + len(audio)), dtype=np.float32)
    padded[half : half + len(audio)] = audio  # zero "centre" padding: frame k centred on sample k * hop
    if n_frames == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    return log_mel_frames(padded, n_frames)


class IncrementalLogMel:
    """:func:`log_mel` of audio that arrives in pieces; frame ``k`` needs the samples up to ``k * 320 + 256``.

    ``push(samples, limit)`` returns the dB of the frames that became computable (at most ``limit`` frames in all):
    exactly the values ``log_mel`` gives for the whole audio, as long as the audio goes on past each frame (the
    offline path never pads the right edge of a frame it keeps: it trims the speech to whole video frames).
    Only the samples still needed are kept.
    """

    def __init__(self) -> None:
        self._buffer = np.zeros(MEL_N_FFT // 2, dtype=np.float32)  # the left "centre" padding
        self._offset = 0  # index in the padded signal of _buffer[0]
        self.n_frames = 0

    def push(self, samples: np.ndarray, limit: int | None = None) -> np.ndarray:
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float32)])
        end = self._offset + len(self._buffer)
        available = (end - MEL_N_FFT) // MEL_HOP_LENGTH + 1 if end >= MEL_N_FFT else 0
        if limit is not None:
            available = min(available, limit)
        count = max(available - self.n_frames, 0)
        start = self.n_frames * MEL_HOP_LENGTH - self._offset
        db = (
            log_mel_frames(self._buffer[start : start + (count - 1) * MEL_HOP_LENGTH + MEL_N_FFT], count)
            if count
            else np.zeros((0, FEATURE_DIM), dtype=np.float32)
        )
        self.n_frames += count
        drop = self.n_frames * MEL_HOP_LENGTH - self._offset  # frames from n_frames on start here
        self._buffer, self._offset = self._buffer[drop:], self._offset + drop
        return db


def mel_stats(db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation (floored at :data:`MEL_STD_FLOOR_DB`) of dB frames, ``(1, 29)`` each."""
    return db.mean(axis=0, keepdims=True), np.maximum(db.std(axis=0, keepdims=True), MEL_STD_FLOOR_DB)


def normalize_mel(db: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(db - mean) / std`` as float32 (:func:`mel_stats`)."""
    return ((db - mean) / std).astype(np.float32)


class LogMelBackend(RateFeatureBackend):
    """29 log-mel bands at 50 Hz, normalised per utterance.

    Normalisation: per band, subtract the mean and divide by the standard deviation (floored at 1 dB)
    over the whole track (cepstral mean/variance normalisation). Loudness differences between recordings
    disappear; a silent track maps to all zeros.
    """

    kind = BACKEND_KINDS["mel"]

    def features(self, audio: np.ndarray) -> np.ndarray:
        db = log_mel(audio)
        if len(db) == 0:
            return db
        return normalize_mel(db, *mel_stats(db))


# ----------------------------------------------------------------------------------------------- wav2vec2


def ctc_vocab_to_deepspeech(vocab: dict[str, int], blank_token: str = "<pad>") -> np.ndarray:
    """``(V, 29)`` 0/1 matrix that sums a CTC model's token posteriors into DeepSpeech's 29 symbols.

    ``|`` (word delimiter) and ``" "`` map to space, letters (any case) to a-z, ``'`` to the apostrophe and
    ``blank_token`` to the blank. Other tokens (``<s>``, ``</s>``, ``<unk>``, digits, ...) map nowhere.
    """
    size = max(vocab.values()) + 1
    matrix = np.zeros((size, FEATURE_DIM), dtype=np.float32)
    for token, index in vocab.items():
        if token in ("|", " "):
            column = 0
        elif token == blank_token:
            column = FEATURE_DIM - 1
        elif token == "'":
            column = FEATURE_DIM - 2
        elif len(token) == 1 and token.lower() in DEEPSPEECH_ALPHABET[1:27]:
            column = DEEPSPEECH_ALPHABET.index(token.lower())
        else:
            continue
        matrix[index, column] = 1.0
    if matrix[:, FEATURE_DIM - 1].sum() == 0:
        raise ValueError(f"CTC vocabulary has no blank token {blank_token!r}")
    return matrix


def posteriors_to_deepspeech(logits: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Softmax over the model's vocabulary, summed into 29 symbols and renormalised: ``(T, V) -> (T, 29)``."""
    logits = np.asarray(logits, dtype=np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    probs = probs[:, : mapping.shape[0]] @ mapping
    return (probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


def resample_feature_rate(features: np.ndarray, times_s: np.ndarray, n_frames: int) -> np.ndarray:
    """Linearly interpolate features sampled at ``times_s`` onto ``k / 50 s`` for ``k < n_frames``."""
    target = np.arange(n_frames) / FEATURE_RATE_HZ
    out = np.empty((n_frames, features.shape[1]), dtype=np.float32)
    for d in range(features.shape[1]):
        out[:, d] = np.interp(target, times_s, features[:, d])
    return out


class Wav2Vec2Backend(RateFeatureBackend):
    """DeepSpeech-like character posteriors from a local wav2vec2 CTC checkpoint (``transformers`` format)."""

    kind = BACKEND_KINDS["wav2vec2"]

    def __init__(self, model_path: str | Path | None, device: str = "cpu") -> None:
        if not model_path:
            raise PreprocessError(
                "--wav2vec2-model",
                "the wav2vec2 backend needs a local model directory, e.g. one saved with "
                "`Wav2Vec2ForCTC.from_pretrained('facebook/wav2vec2-base-960h').save_pretrained(DIR)` "
                "together with its processor; pass --wav2vec2-model DIR",
            )
        self.model_path = Path(model_path)
        if not self.model_path.is_dir() or not (self.model_path / "config.json").is_file():
            raise PreprocessError(
                self.model_path, "not a wav2vec2 model directory (expected config.json, weights and vocab.json)"
            )
        try:
            import transformers  # noqa: F401  (lazy: optional dependency)
        except ImportError as e:
            raise PreprocessError(
                "--audio-features wav2vec2",
                "needs the optional package `transformers` (pip install 'transformers>=4.30,<5'); "
                "or use --audio-features mel",
            ) from e
        from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

        self.device = device
        folder = str(self.model_path)
        try:
            self.model = Wav2Vec2ForCTC.from_pretrained(folder, local_files_only=True).eval().to(device)
            self.extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder, local_files_only=True)
            tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(folder, local_files_only=True)
            self.mapping = ctc_vocab_to_deepspeech(tokenizer.get_vocab(), tokenizer.pad_token or "<pad>")
        except Exception as e:  # noqa: BLE001 - transformers, safetensors, torch: each raises its own
            raise PreprocessError(
                self.model_path, f"cannot load it as a wav2vec2 CTC model ({type(e).__name__}: {e})"
            ) from None

    def _logits(self, audio: np.ndarray) -> np.ndarray:
        import torch

        inputs = self.extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(inputs.input_values.to(self.device)).logits[0]
        return logits.float().cpu().numpy()

    def features(self, audio: np.ndarray) -> np.ndarray:
        n_out = n_feature_frames(len(audio), SAMPLE_RATE, FEATURE_RATE_HZ)
        hop = MEL_HOP_LENGTH
        chunk, context = int(WAV2VEC2_CHUNK_S * SAMPLE_RATE), int(WAV2VEC2_CONTEXT_S * SAMPLE_RATE)
        parts, times = [], []
        for start in range(0, max(len(audio), 1), chunk):
            lo = max(0, start - context)
            piece = audio[lo : min(len(audio), start + chunk + context)]
            if len(piece) < MEL_WIN_LENGTH:
                piece = np.pad(piece, (0, MEL_WIN_LENGTH - len(piece)))
            post = posteriors_to_deepspeech(self._logits(piece), self.mapping)
            t = lo / SAMPLE_RATE + WAV2VEC2_FRAME_OFFSET_S + np.arange(len(post)) * hop / SAMPLE_RATE
            keep = (t >= start / SAMPLE_RATE - 0.5 * hop / SAMPLE_RATE) & (
                t < (start + chunk) / SAMPLE_RATE - 0.5 * hop / SAMPLE_RATE
            )
            parts.append(post[keep])
            times.append(t[keep])
        post, t = np.concatenate(parts), np.concatenate(times)
        return resample_feature_rate(post, t, n_out)


# ----------------------------------------------------------------------------------------------- whisper


class WhisperBackend(RateFeatureBackend):
    """The encoder states of a local whisper model at 50 Hz; ``dim`` is the encoder width (384 for tiny).

    The kind names the model size and width (``whisper-tiny.en-384``), so a checkpoint trained on one whisper size
    refuses features of another. It does not tell fine-tunes of one size apart.
    """

    def __init__(self, model_path: str | Path | None, device: str = "cpu") -> None:
        if not model_path:
            raise PreprocessError(
                "--whisper-model",
                "the whisper backend needs a local model folder (CTranslate2/faster-whisper or transformers); "
                "pass --whisper-model DIR",
            )
        import torch

        self.model_path = Path(model_path)
        self.encoder = load_whisper_encoder(self.model_path, device, threads=torch.get_num_threads())
        self.dim = self.encoder.dim
        self.kind = f"{WHISPER_KIND_PREFIX}{self.encoder.name}-{self.dim}"

    def features(self, audio: np.ndarray) -> np.ndarray:
        return encoder_states(self.encoder, audio)


# ----------------------------------------------------------------------------------------------- AD-NeRF npy


class DeepSpeechNpyBackend(AudioFeatureBackend):
    """Existing AD-NeRF DeepSpeech windows: ``<dir>/<video stem>.npy`` or ``<dir>/<video stem>/aud.npy``.

    A single ``.npy`` file may be given instead of a directory when only one video is processed.
    """

    kind = BACKEND_KINDS["deepspeech-npy"]
    needs_audio = False

    def __init__(self, source: str | Path | None) -> None:
        if not source:
            raise PreprocessError("--deepspeech-npy", "the deepspeech-npy backend needs --deepspeech-npy FILE_OR_DIR")
        self.source = Path(source)
        if not self.source.exists():
            raise PreprocessError(self.source, "does not exist")

    def path_for(self, video: Path) -> Path:
        if self.source.is_file():
            return self.source
        for candidate in (self.source / f"{video.stem}.npy", self.source / video.stem / "aud.npy"):
            if candidate.is_file():
                return candidate
        raise PreprocessError(
            video,
            f"no DeepSpeech features for it: expected {self.source / (video.stem + '.npy')} or "
            f"{self.source / video.stem / 'aud.npy'}",
        )

    def load(self, video: Path) -> np.ndarray:
        path = self.path_for(video)
        try:
            windows = read_npy(path)  # the header is checked first: a huge declared shape takes no memory
        except (OSError, ValueError, EOFError) as e:
            raise PreprocessError(path, f"unreadable .npy ({e})") from e
        if windows.ndim != 3 or windows.shape[1:] != (AUDIO_WINDOW, FEATURE_DIM):
            raise PreprocessError(path, f"expected shape (N, {AUDIO_WINDOW}, {FEATURE_DIM}), got {windows.shape}")
        return windows.astype(np.float32)

    def frame_windows(self, audio: np.ndarray | None, n_frames: int, source: Path) -> np.ndarray:
        windows = self.load(source)
        if len(windows) < n_frames:
            pad = np.zeros((n_frames - len(windows),) + windows.shape[1:], dtype=np.float32)
            windows = np.concatenate([windows, pad])
        return windows[:n_frames]


def make_backend(name: str, options: dict[str, Any] | None = None) -> AudioFeatureBackend:
    """Build a backend by its ``--audio-features`` name (``mel``, ``wav2vec2``, ``deepspeech-npy``, ``whisper``).

    ``options``: ``wav2vec2_model``, ``whisper_model``, ``deepspeech_npy``, ``device``.
    """
    options = options or {}
    if name == "mel":
        return LogMelBackend()
    if name == "wav2vec2":
        return Wav2Vec2Backend(options.get("wav2vec2_model"), options.get("device", "cpu"))
    if name == "deepspeech-npy":
        return DeepSpeechNpyBackend(options.get("deepspeech_npy"))
    if name == "whisper":
        return WhisperBackend(options.get("whisper_model"), options.get("device", "cpu"))
    raise PreprocessError("--audio-features", f"unknown backend {name!r}; choose one of {sorted(BACKEND_KINDS)}")
