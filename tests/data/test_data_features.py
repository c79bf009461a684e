"""Audio features: log-mel, wav2vec2 vocabulary mapping and errors, DeepSpeech npy import, resampling, meta checks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from talkingface.data.constants import FEATURE_DIM, SAMPLE_RATE
from talkingface.data.meta import DatasetMetaError, audio_feature_spec, check_feature_kind
from talkingface.media.decode import resample_audio
from talkingface.media.errors import PreprocessError
from talkingface.media.features import (
    DEEPSPEECH_ALPHABET,
    DeepSpeechNpyBackend,
    LogMelBackend,
    Wav2Vec2Backend,
    ctc_vocab_to_deepspeech,
    log_mel,
    mel_filterbank,
    posteriors_to_deepspeech,
    resample_feature_rate,
)


def _tone(freq: float, seconds: float = 2.0, rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_mel_filterbank_shape_and_order() -> None:
    bank = mel_filterbank()
    assert bank.shape == (FEATURE_DIM, 257) and (bank >= 0).all()
    peaks = bank.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > peaks[0]


def test_logmel_rate_and_tone_band() -> None:
    db = log_mel(_tone(1000.0))
    assert db.shape == (100, FEATURE_DIM)  # 2 s at 50 Hz
    freqs = np.linspace(0, SAMPLE_RATE / 2, 257)
    band_of_1k = mel_filterbank()[:, np.argmin(np.abs(freqs - 1000))].argmax()
    assert db[50].argmax() == band_of_1k


def test_logmel_backend_normalised_and_silence_is_zero() -> None:
    feats = LogMelBackend().features(_tone(440.0) * np.linspace(0, 1, 2 * SAMPLE_RATE, dtype=np.float32))
    assert feats.dtype == np.float32 and feats.shape == (100, FEATURE_DIM)
    np.testing.assert_allclose(feats.mean(axis=0), 0, atol=1e-4)
    assert np.all(LogMelBackend().features(np.zeros(SAMPLE_RATE, np.float32)) == 0)
    win = LogMelBackend().frame_windows(_tone(440.0), 50, Path("x.mp4"))
    assert win.shape == (50, 16, FEATURE_DIM)


def test_resample_audio_keeps_frequency() -> None:
    x = _tone(1000.0, 1.0, 44_100)
    y = resample_audio(x, 44_100, SAMPLE_RATE)
    assert len(y) == SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) - 1000) <= 1


#: facebook/wav2vec2-base-960h's vocabulary order.
WAV2VEC2_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ETAOINSHRDLCUMWFGYPBVK'XJQZ")
WAV2VEC2_VOCAB = {t: i for i, t in enumerate(WAV2VEC2_TOKENS)}


def test_ctc_vocab_maps_to_deepspeech_alphabet() -> None:
    mapping = ctc_vocab_to_deepspeech(WAV2VEC2_VOCAB)
    assert mapping.shape == (32, FEATURE_DIM)
    assert mapping[4, 0] == 1  # "|" -> space
    assert mapping[0, 28] == 1  # pad -> blank
    assert mapping[WAV2VEC2_VOCAB["'"], 27] == 1  # apostrophe
    assert mapping[5, DEEPSPEECH_ALPHABET.index("e")] == 1
    assert mapping[1:4].sum() == 0  # <s>, </s>, <unk> map nowhere
    assert (mapping.sum(axis=0) == 1).all()  # every DeepSpeech symbol has exactly one source


def test_posteriors_sum_to_one_and_resampling_to_50hz() -> None:
    rng = np.random.default_rng(0)
    post = posteriors_to_deepspeech(rng.normal(size=(49, 32)), ctc_vocab_to_deepspeech(WAV2VEC2_VOCAB))
    np.testing.assert_allclose(post.sum(axis=1), 1, atol=1e-5)
    times = 0.0125 + 0.02 * np.arange(49)
    out = resample_feature_rate(post, times, 50)
    assert out.shape == (50, FEATURE_DIM)
    np.testing.assert_allclose(out[10], post[9] * 0.625 + post[10] * 0.375, atol=1e-6)


def test_wav2vec2_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PreprocessError, match="--wav2vec2-model"):
        Wav2Vec2Backend(None)
    with pytest.raises(PreprocessError, match="nowhere"):
        Wav2Vec2Backend(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails even where it is installed
    with pytest.raises(PreprocessError, match="pip install 'transformers"):
        Wav2Vec2Backend(tmp_path)


def test_deepspeech_npy_import(tmp_path: Path) -> None:
    aud = np.random.default_rng(0).normal(size=(40, 16, FEATURE_DIM)).astype(np.float32)
    (tmp_path / "clip").mkdir()
    np.save(tmp_path / "clip" / "aud.npy", aud)
    backend = DeepSpeechNpyBackend(tmp_path)
    np.testing.assert_array_equal(backend.frame_windows(None, 40, Path("videos/clip.mp4")), aud)
    with pytest.raises(PreprocessError, match="other.npy"):
        backend.load(Path("other.mp4"))
    np.save(tmp_path / "bad.npy", np.zeros((4, 16, 30), np.float32))
    with pytest.raises(PreprocessError, match=r"bad\.npy.*expected shape"):
        backend.load(Path("bad.mp4"))


def test_check_feature_kind() -> None:
    meta = {"audio_feature": audio_feature_spec("logmel29")}
    check_feature_kind(meta, "logmel29")
    check_feature_kind(meta, None)
    with pytest.raises(DatasetMetaError, match="deepspeech29"):
        check_feature_kind(meta, "deepspeech29")
    with pytest.raises(DatasetMetaError, match="window"):
        check_feature_kind({"audio_feature": {**audio_feature_spec("logmel29"), "window": 8}}, None)


def test_feature_dim_other_than_29(tmp_path: Path) -> None:
    """A whisper-sized dataset: meta.json's dim is checked against the model's, and the layout reads (8, 16, dim)."""
    from talkingface.data.layout import DatasetLayout, LayoutFileError

    meta = {"audio_feature": audio_feature_spec("whisper-tiny.en-384", 384)}
    check_feature_kind(meta, None)
    check_feature_kind(meta, {"kind": "whisper-tiny.en-384", "dim": 384, "window": 16, "smooth": 8})
    with pytest.raises(DatasetMetaError, match="dim 384 but the model's model.conditioning.audio_feature_dim is 29"):
        check_feature_kind(meta, {"dim": 29})
    with pytest.raises(DatasetMetaError, match="dim 29 but the model's model.conditioning.audio_feature_dim is 384"):
        check_feature_kind({"audio_feature": audio_feature_spec("logmel29")}, {"dim": 384})
    layout = DatasetLayout(tmp_path)
    layout.make_folders()
    layout.write_meta({"fps": 25, "image_size": 64, "videos": {}, **meta})
    layout.write_audio(1, 0, np.zeros((8, 16, 384), np.float32))
    layout.write_audio(1, 1, np.zeros((8, 16, FEATURE_DIM), np.float32))
    assert DatasetLayout(tmp_path).audio_shape == (8, 16, 384)
    assert DatasetLayout(tmp_path).read_audio(1, 0).shape == (8, 16, 384)
    with pytest.raises(LayoutFileError, match=r"expected float32 \(8, 16, 384\), got float32 \(8, 16, 29\)"):
        DatasetLayout(tmp_path).read_audio(1, 1)
    assert DatasetLayout(tmp_path, feature_dim=FEATURE_DIM).read_audio(1, 1).shape == (8, 16, FEATURE_DIM)
    with pytest.raises(ValueError, match="expected float32"):
        layout.write_audio(1, 2, np.zeros((16, 384), np.float32))
