"""Speech holding NaN or infinite samples (a float WAV can): refused when decoded, with one ``error:`` line naming
the file, exit 2, before any frame is generated and with nothing written; the stream refuses such chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import tone_track, write_video
from golden import TINY_CONFIG
from scipy.io import wavfile

from talkingface.commands import main as cli
from talkingface.inference import InferenceError, LipSyncOptions, LipSyncPipeline, LipSyncStream, MelStats
from talkingface.media.decode import load_audio
from talkingface.media.errors import PreprocessError
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel

RATE = 16_000


def float_wav(path: Path, bad: float, rate: int = RATE, channels: int = 1, at: int = 1000) -> Path:
    """A float32 WAV of 0.2 s of tones whose sample ``at`` (of channel 0) is ``bad``."""
    track = tone_track(0.2, rate, channels)
    track[0, at] = bad
    wavfile.write(path, rate, np.ascontiguousarray(track.T if channels > 1 else track[0]))
    return path


@pytest.mark.parametrize(
    ("bad", "kind", "rate", "channels"),
    [(np.nan, "NaN", RATE, 1), (np.inf, "infinite", RATE, 1), (-np.inf, "infinite", 44_100, 2)],
)
def test_load_audio_refuses_nan_and_inf(tmp_path: Path, bad: float, kind: str, rate: int, channels: int) -> None:
    wav = float_wav(tmp_path / "speech.wav", bad, rate, channels)
    assert wavfile.read(wav)[1].dtype == np.float32
    with pytest.raises(PreprocessError) as info:
        load_audio(wav)
    message = str(info.value)
    assert message.startswith(f"{wav}: audio holds 1 {kind} sample, the first at {1000 / rate:.3f} s (sample 1000)")


def test_finite_float_audio_still_loads(tmp_path: Path) -> None:
    wav = float_wav(tmp_path / "speech.wav", 0.5)
    assert np.isfinite(load_audio(wav).samples).all()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("nonfinite") / "face.mp4", seconds=0.12, fps=25, audio=None)


@pytest.mark.parametrize("stream", [False, True], ids=["offline", "stream"])
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_lipsync_refuses_the_speech_before_generating(
    video: Path,
    tiny_ckpt: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
    bad: float,
) -> None:
    wav = float_wav(tmp_path / "speech.wav", bad)

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("a frame was generated from non-finite speech")

    monkeypatch.setattr(LipSyncPipeline, "generate_faces", no_generation)
    out, frames = tmp_path / "out.mp4", tmp_path / "frames"
    argv = ["lipsync", "--video", str(video), "--audio", str(wav), "--out", str(out), "--frames-dir", str(frames)]
    argv += ["--ckpt", str(tiny_ckpt), "--config", str(TINY_CONFIG), "--steps", "2", "--no-progress"]
    if stream:
        argv += ["--stream", "--stream-no-wait"]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {wav}: audio holds 1 "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav"]  # no output, no partial file


def test_the_stream_refuses_non_finite_chunks_and_stats(tiny_model: DiffTalkModel, video: Path) -> None:
    options = LipSyncOptions(sampler="dpm++", steps=2, batch_size=2, crop_size=128)
    pipe = LipSyncPipeline(tiny_model, audio_features="mel", options=options)
    stream = LipSyncStream(pipe, pipe.prepare_video(video))
    good = tone_track(0.05, RATE)[0]
    assert stream.push(good) == []
    for bad in (np.nan, np.inf, -np.inf):
        chunk = good.copy()
        chunk[[7, 9]] = bad
        with pytest.raises(InferenceError, match=r"^chunk: holds 2 NaN or infinite samples \(the first at sample 7 "):
            stream.push(chunk)
    assert stream.n_samples == len(good)  # nothing of a refused chunk was taken
    samples = tone_track(0.2, RATE)[0]
    samples[100] = np.nan
    with pytest.raises(InferenceError, match="samples: hold NaN or infinite values"):
        MelStats.of_speech(samples)
