"""The wav2vec2 backend on a locally saved, randomly initialised ``Wav2Vec2ForCTC`` (no pretrained wav2vec2 CTC model
installs offline): the loading path (model, tokenizer vocabulary, feature extractor), the output shapes and the
50 Hz alignment. Random weights say nothing about the features' quality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import frame_labels, speech_track

from talkingface.data.constants import FEATURE_DIM, FEATURE_RATE_HZ, SAMPLE_RATE
from talkingface.media.errors import PreprocessError
from talkingface.media.features import Wav2Vec2Backend, make_backend

#: The character vocabulary of facebook/wav2vec2-base-960h.
VOCAB = {
    "<pad>": 0,
    "<s>": 1,
    "</s>": 2,
    "<unk>": 3,
    "|": 4,
    **{c: i + 5 for i, c in enumerate("ETAONIHSRDLUMWCFGYPBVK'XJQZ")},
}


def save_random_wav2vec2(folder: Path) -> Path:
    """A tiny randomly initialised ``Wav2Vec2ForCTC`` with its tokenizer and feature extractor."""
    transformers = pytest.importorskip("transformers", reason="the wav2vec2 backend needs transformers")
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(VOCAB))
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
    )
    transformers.Wav2Vec2ForCTC(config).save_pretrained(folder)
    transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json")).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Wav2Vec2Backend:
    folder = save_random_wav2vec2(tmp_path_factory.mktemp("wav2vec2"))
    made = make_backend("wav2vec2", {"wav2vec2_model": str(folder)})
    assert isinstance(made, Wav2Vec2Backend)
    return made


def test_shapes_and_chunks(backend: Wav2Vec2Backend) -> None:
    assert backend.kind == "wav2vec2-ctc29" and backend.dim == FEATURE_DIM
    audio = (0.1 * np.random.default_rng(0).standard_normal(int(22.3 * SAMPLE_RATE))).astype(np.float32)
    feats = backend.features(audio)  # two 20 s chunks
    assert feats.shape == (round(22.3 * FEATURE_RATE_HZ), FEATURE_DIM) and np.isfinite(feats).all()
    np.testing.assert_allclose(feats.sum(axis=1), 1.0, atol=1e-5)  # posteriors over the 29 symbols
    windows = backend.frame_windows(audio[:SAMPLE_RATE], 25, Path("x.mp4"))
    assert windows.shape == (25, 16, FEATURE_DIM)


def test_word_onsets_show_near_frame_50t(backend: Wav2Vec2Backend) -> None:
    """A speech-vs-silence direction of the (random) posteriors, learnt on one track, crosses one half near
    ``50 * onset`` on two others (measured: 9 of 10 onsets within 0.5 frames, one noisy crossing 12 frames early)."""
    audio, onsets, lengths = speech_track(100)
    feats = backend.features(audio)
    speech, silence = frame_labels(len(feats), onsets, lengths)
    silence_mean, direction = feats[silence].mean(0), feats[speech].mean(0) - feats[silence].mean(0)
    errors = []
    for seed in (1, 2):
        audio, onsets, _ = speech_track(seed)
        s = (backend.features(audio) - silence_mean) @ direction / (direction @ direction)
        for onset in onsets:
            k = int(round(onset * FEATURE_RATE_HZ))
            j = k - 15 + int(np.argmax(s[k - 15 : k + 16] >= 0.5))
            errors.append(j - 1 + (0.5 - s[j - 1]) / (s[j] - s[j - 1]) - onset * FEATURE_RATE_HZ)
    errors = np.abs(errors)
    assert np.median(errors) < 1.0 and (errors < 2.0).mean() >= 0.8, errors


@pytest.mark.parametrize("damage", ["truncated", "no weights"])
def test_a_broken_model_folder_is_named(tmp_path: Path, damage: str) -> None:
    """Broken weights: one error naming the model folder (not a traceback, not the dataset being built)."""
    folder = save_random_wav2vec2(tmp_path / "w2v-broken")
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        weights.unlink()
    with pytest.raises(PreprocessError, match=r"w2v-broken: cannot load it as a wav2vec2 CTC model \("):
        make_backend("wav2vec2", {"wav2vec2_model": str(folder)})


def test_preprocess_names_the_broken_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from data_fixtures import write_video

    from talkingface.commands.main import main

    folder = save_random_wav2vec2(tmp_path / "w2v-broken")
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    video = write_video(tmp_path / "face.mp4", seconds=0.4, fps=25)
    out = tmp_path / "data" / "HDTF"
    argv = ["preprocess", "run", str(video), "--out", str(out), "--no-progress", "--audio-features", "wav2vec2"]
    assert main([*argv, "--wav2vec2-model", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {folder}: cannot load it as a wav2vec2 CTC model"), err
    assert str(out) not in err[0]
