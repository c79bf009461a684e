"""Whisper encoder states as audio features: whisper's own log-mel input and two runners for its encoder.

A whisper model folder is either

* a CTranslate2 (faster-whisper) folder: ``model.bin`` and a ``config.json`` of CTranslate2's layout (``lang_ids``,
  ``suppress_ids``, ...), run with the ``ctranslate2`` package; or
* a Hugging Face ``transformers`` folder: ``config.json`` with ``"model_type": "whisper"`` and its weights
  (``model.safetensors`` or ``pytorch_model.bin``), run with ``transformers``.

The encoder takes exactly ``2 * max_source_positions`` (3000) log-mel frames, 10 ms apart, i.e. 30 s of audio, and
returns half as many states (1500): one every 20 ms, the feature rate of this project. Its two convolutions
(kernel 3, padding 1, strides 1 and 2) centre output ``j`` on mel frame ``2 j``, and mel frame ``k`` is centred on
sample ``160 k`` (the STFT is centred), so state ``j`` is centred at ``j * 20 ms``: the same time as feature frame ``j``
of the log-mel backend. Long audio is cut into 30 s chunks; the last chunk is zero-padded as whisper pads it, and only
the states inside the audio are kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkingface.constants import FEATURE_RATE_HZ, SAMPLE_RATE
from talkingface.errors import one_line
from talkingface.media.errors import PreprocessError
from talkingface.media.windows import n_feature_frames

log = logging.getLogger(__name__)

#: whisper's analysis (``whisper/audio.py``): 25 ms periodic Hann window, 10 ms hop, 80 (large-v3: 128) slaney mels.
WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_N_MELS = 80
WHISPER_FMAX_HZ = 8000.0
#: Seconds of audio per encoder pass, and the mel frames of one pass (``N_FRAMES``).
WHISPER_CHUNK_S = 30
WHISPER_CHUNK_FRAMES = WHISPER_CHUNK_S * SAMPLE_RATE // WHISPER_HOP
#: Log-mel dynamic range kept below the track's maximum (in log10 units), and the input scaling ``(x + 4) / 4``.
WHISPER_LOG_RANGE = 8.0
WHISPER_POWER_FLOOR = 1e-10
#: Encoder width -> whisper model size (the published checkpoints; ``.en`` is added for English-only models).
WHISPER_SIZES = {384: "tiny", 512: "base", 768: "small", 1024: "medium", 1280: "large"}
#: A multilingual whisper vocabulary has at least this many tokens (whisper's ``is_multilingual``).
MULTILINGUAL_VOCAB = 51865
CT2_CONFIG_KEYS = ("lang_ids", "suppress_ids", "suppress_ids_begin", "alignment_heads")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = np.log(6.4) / 27.0
    linear = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(hz, 1e-12) / min_log_hz) / logstep, linear)


def _slaney_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def whisper_mel_filters(n_mels: int = WHISPER_N_MELS) -> np.ndarray:
    """whisper's ``mel_filters.npz``: ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)``, ``(n_mels, 201)``."""
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, WHISPER_N_FFT // 2 + 1)
    edges = _slaney_hz(np.linspace(_slaney_mel(0.0), _slaney_mel(WHISPER_FMAX_HZ), n_mels + 2))
    diff = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / diff[:-1, None]
    upper = ramps[2:] / diff[1:, None]
    bank = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return bank.astype(np.float32)


def whisper_log_mel(
    audio: np.ndarray, n_mels: int = WHISPER_N_MELS, chunk_frames: int = WHISPER_CHUNK_FRAMES
) -> np.ndarray:
    """whisper's encoder input for 16 kHz ``audio``, padded to whole chunks: ``(n_mels, n_chunks * chunk_frames)``.

    As ``whisper.log_mel_spectrogram(audio, padding=N_SAMPLES)`` followed by the chunking of ``transcribe``: the
    audio is followed by zeros, the STFT is centred (reflect padding), the last STFT frame is dropped, the log10 power
    is clamped to the track's maximum minus 8 and scaled by ``(x + 4) / 4``. Mel frame ``k`` is centred on sample
    ``160 k``.
    """
    audio = np.asarray(audio, dtype=np.float32)
    chunk_samples = chunk_frames * WHISPER_HOP
    n_chunks = max(1, -(-len(audio) // chunk_samples))
    padded = np.zeros(n_chunks * chunk_samples + chunk_samples, dtype=np.float32)  # whisper pads 30 s of zeros
    padded[: len(audio)] = audio
    half = WHISPER_N_FFT // 2
    padded = np.pad(padded, (half, half), mode="reflect")
    n_frames = n_chunks * chunk_frames
    frames = np.lib.stride_tricks.sliding_window_view(padded, WHISPER_N_FFT)[::WHISPER_HOP][:n_frames]
    window = np.hanning(WHISPER_N_FFT + 1)[:-1].astype(np.float32)  # periodic, as torch.hann_window
    filters = whisper_mel_filters(n_mels)
    log_spec = np.empty((n_mels, n_frames), dtype=np.float32)
    for lo in range(0, n_frames, chunk_frames):  # one chunk at a time: bounded memory on long audio
        power = np.abs(np.fft.rfft(frames[lo : lo + chunk_frames] * window, axis=1)) ** 2
        log_spec[:, lo : lo + chunk_frames] = np.log10(
            np.maximum(filters @ power.T.astype(np.float32), WHISPER_POWER_FLOOR)
        )
    log_spec = np.maximum(log_spec, log_spec.max() - WHISPER_LOG_RANGE)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------- model folders


@dataclass(frozen=True)
class WhisperEncoder:
    """A loaded whisper encoder: ``encode((B, n_mels, chunk_frames)) -> (B, chunk_frames // 2, dim)``."""

    encode: Callable[[np.ndarray], np.ndarray]
    n_mels: int
    dim: int
    multilingual: bool
    chunk_frames: int
    folder_type: str  # "ctranslate2" or "transformers"

    @property
    def name(self) -> str:
        """``tiny.en``, ``base``, ``large-v3``, ...: the published model size with this width (``custom`` if none)."""
        size = WHISPER_SIZES.get(self.dim, "custom")
        if size == "large" and self.n_mels == 128:
            size = "large-v3"
        return size if self.multilingual or size == "custom" else f"{size}.en"


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PreprocessError(path, f"unreadable ({e})") from None
    if not isinstance(obj, dict):
        raise PreprocessError(path, "expected a JSON object")
    return obj


def whisper_folder_type(folder: str | Path) -> str:
    """``"ctranslate2"`` or ``"transformers"``; raises PreprocessError naming what a whisper folder needs."""
    folder = Path(folder)
    need = (
        "a CTranslate2 whisper folder (model.bin + config.json) or a transformers whisper folder (config.json with "
        'model_type "whisper" + model.safetensors or pytorch_model.bin)'
    )
    if not folder.is_dir():
        raise PreprocessError(folder, f"not a folder; --whisper-model needs {need}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise PreprocessError(folder, f"no config.json; expected {need}")
    config = _read_json(config_path)
    if (folder / "model.bin").is_file() and any(k in config for k in CT2_CONFIG_KEYS):
        return "ctranslate2"
    if config.get("model_type") == "whisper":
        if not any((folder / w).is_file() for w in HF_WEIGHTS):
            raise PreprocessError(folder, f"a transformers whisper config but no weights ({', '.join(HF_WEIGHTS[:2])})")
        return "transformers"
    found = f'model_type "{config["model_type"]}"' if "model_type" in config else "no model_type"
    raise PreprocessError(folder, f"not a whisper model ({found}); expected {need}")


def _preprocessor_mels(folder: Path) -> int | None:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    pre = _read_json(path)
    if (
        int(pre.get("sampling_rate", SAMPLE_RATE)) != SAMPLE_RATE
        or int(pre.get("hop_length", WHISPER_HOP)) != WHISPER_HOP
    ):
        raise PreprocessError(
            path, f"expects {pre.get('sampling_rate')} Hz / hop {pre.get('hop_length')}, not whisper's"
        )
    if "feature_size" not in pre:
        return None
    try:
        return int(pre["feature_size"])
    except (TypeError, ValueError):
        raise PreprocessError(path, f"feature_size {pre['feature_size']!r} is not a number of mel bins") from None


def _missing(package: str, pip: str) -> PreprocessError:
    return PreprocessError(
        "--audio-features whisper", f"this model folder needs the optional package `{package}` (pip install '{pip}')"
    )


def load_ctranslate2_encoder(folder: Path, device: str = "cpu", threads: int = 0) -> WhisperEncoder:
    try:
        import ctranslate2
    except ImportError as e:
        raise _missing("ctranslate2", "ctranslate2>=4.5,<5") from e
    compute_type = "float32" if device == "cpu" else "default"
    try:
        model = ctranslate2.models.Whisper(str(folder), device=device, compute_type=compute_type, intra_threads=threads)
    except (RuntimeError, ValueError) as e:
        raise PreprocessError(folder, f"CTranslate2 cannot load it ({e})") from None
    n_mels = int(model.n_mels)

    def encode(mel: np.ndarray) -> np.ndarray:
        out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32)), to_cpu=True)
        return np.array(out, dtype=np.float32)

    dim = encode(np.zeros((1, n_mels, WHISPER_CHUNK_FRAMES), dtype=np.float32)).shape[-1]
    return WhisperEncoder(encode, n_mels, int(dim), bool(model.is_multilingual), WHISPER_CHUNK_FRAMES, "ctranslate2")


def load_transformers_encoder(folder: Path, device: str = "cpu") -> WhisperEncoder:
    try:
        import torch
        from safetensors import SafetensorError
        from transformers import WhisperConfig, WhisperModel
    except ImportError as e:
        raise _missing("transformers", "transformers>=4.30,<5") from e
    try:
        config = WhisperConfig.from_pretrained(str(folder), local_files_only=True)
        encoder = WhisperModel.from_pretrained(str(folder), local_files_only=True).get_encoder().eval().to(device)
    except SafetensorError as e:  # a corrupt or truncated weights file
        weights = folder / HF_WEIGHTS[0]
        raise PreprocessError(
            weights if weights.is_file() else folder, f"not a readable safetensors file ({e})"
        ) from None
    except Exception as e:  # noqa: BLE001 - transformers, safetensors, torch: each raises its own
        raise PreprocessError(folder, f"transformers cannot load it ({type(e).__name__}: {one_line(e)})") from None
    chunk_frames = 2 * int(config.max_source_positions)

    def encode(mel: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            states = encoder(torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).to(device)).last_hidden_state
        return states.float().cpu().numpy()

    n_mels = int(config.num_mel_bins)  # the encoder's input channels; the preprocessor's are checked against it
    multilingual = int(config.vocab_size) >= MULTILINGUAL_VOCAB
    return WhisperEncoder(encode, n_mels, int(config.d_model), multilingual, chunk_frames, "transformers")


def load_whisper_encoder(folder: str | Path, device: str = "cpu", threads: int = 0) -> WhisperEncoder:
    """The encoder of a CTranslate2 or transformers whisper folder (see :func:`whisper_folder_type`)."""
    folder = Path(folder)
    kind = whisper_folder_type(folder)
    if kind == "ctranslate2":
        encoder = load_ctranslate2_encoder(folder, device, threads)
    else:
        encoder = load_transformers_encoder(folder, device)
    pre_mels = _preprocessor_mels(folder)
    if pre_mels is not None and pre_mels != encoder.n_mels:
        raise PreprocessError(
            folder,
            f"preprocessor_config.json has {pre_mels} mel bins (feature_size) but the model takes {encoder.n_mels} "
            "(num_mel_bins in config.json); the two files come from different whisper models",
        )
    log.info(
        "whisper %s encoder (%s, %d mels, width %d) from %s", encoder.name, kind, encoder.n_mels, encoder.dim, folder
    )
    return encoder


def encoder_states(encoder: WhisperEncoder, audio: np.ndarray) -> np.ndarray:
    """``(round(len(audio) / 320), dim)`` encoder states of 16 kHz ``audio``, state ``j`` centred at ``j * 20 ms``."""
    n_out = n_feature_frames(len(audio), SAMPLE_RATE, FEATURE_RATE_HZ)
    mel = whisper_log_mel(audio, encoder.n_mels, encoder.chunk_frames)
    chunks = mel.reshape(encoder.n_mels, -1, encoder.chunk_frames).transpose(1, 0, 2)
    states = np.concatenate([encoder.encode(chunk[None])[0] for chunk in chunks])
    per_chunk = encoder.chunk_frames // 2
    if states.shape[0] != len(chunks) * per_chunk:
        raise PreprocessError(
            "--whisper-model", f"the encoder returned {states.shape[0]} states for {len(chunks)} chunks"
        )
    return np.ascontiguousarray(states[:n_out], dtype=np.float32)
