"""``LipSyncStream``: incremental log-mel, frames equal to the offline pipeline's with whole-file statistics, order,
count and the latency bound, running normalisation, bad chunks, and ``lipsync --stream`` end to end (tiny model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import tone_track, write_video, write_wav
from golden import TINY_CONFIG

import demo
from talkingface.inference import InferenceError, LipSyncOptions, LipSyncPipeline, LipSyncStream, MelStats
from talkingface.inference.stream import LOOKAHEAD_FRAMES, speech_samples
from talkingface.inference.timeline import n_output_frames, pingpong_indices
from talkingface.media.features import DeepSpeechNpyBackend, IncrementalLogMel, LogMelBackend, log_mel
from talkingface.media.windows import smooth_windows
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel

FPS, RATE, HOP = 25, 16_000, 640
#: Frames of audio a frame waits for (7 x 40 ms = 280 ms), as docs/inference.md (Streaming) explains.
FLOOR_S = LOOKAHEAD_FRAMES / FPS


@pytest.fixture(scope="module")
def stream_setup(small_model: DiffTalkModel, tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 64 px model (the bookkeeping and the bit-exact comparison do not depend on the side); ``lipsync --stream``
    runs the tiny model's checkpoint."""
    d = tmp_path_factory.mktemp("stream")
    options = LipSyncOptions(
        sampler="dpm++", steps=2, batch_size=2, crop_size=128, seed=7, decode_window=True, decode_margin=0
    )
    pipe = LipSyncPipeline(small_model, audio_features="mel", options=options)
    video = write_video(d / "person.mp4", seconds=0.12, fps=25)  # 3 frames: the ping-pong shows them again
    wav = write_wav(d / "speech.wav", seconds=10.3 / FPS)  # 10 frames and a partial one the offline path drops
    return {"pipe": pipe, "prepared": pipe.prepare_video(video), "video": video, "wav": wav, "ckpt": tiny_ckpt}


def feed(stream: LipSyncStream, samples: np.ndarray, rng: np.random.Generator, lo: int = 320, hi: int = 3200) -> list:
    """Push ``samples`` in random chunks of ``lo..hi`` samples; return the frames, push by push, then the close."""
    out, pos = [], 0
    while pos < len(samples):
        chunk = samples[pos : pos + int(rng.integers(lo, hi + 1))]
        pos += len(chunk)
        out.append(stream.push(chunk, arrived=pos / stream.sample_rate))  # the audio clock: a live source's pace
    return out + [stream.close()]


def offline_windows(samples: np.ndarray) -> np.ndarray:
    n = n_output_frames(len(samples))
    return smooth_windows(LogMelBackend().frame_windows(samples[: n * HOP], n, Path("x")))


@pytest.fixture
def recorded(stream_setup: dict, monkeypatch: pytest.MonkeyPatch) -> list:
    """Stand in for the generation (the windows and source frames each batch gets are recorded): tests of the
    bookkeeping run in milliseconds."""
    calls: list = []

    def generate_batch(gen: object, src: np.ndarray, windows: np.ndarray) -> tuple:
        calls.append((src.copy(), windows.copy()))
        n = len(src)
        return [None] * n, np.zeros((n, 8, 8, 3), np.uint8), [np.zeros((8, 8), np.float32)] * n

    monkeypatch.setattr(stream_setup["pipe"], "generate_batch", generate_batch)
    return calls


class Clock:
    """A clock that reads the audio time of a stream."""

    stream: LipSyncStream | None = None

    def __call__(self) -> float:
        return 0.0 if self.stream is None else self.stream.n_samples / RATE


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Tones under a syllable envelope, louder over time, with noise: the statistics drift as they do live."""
    x = tone_track(seconds, RATE)[0] * np.linspace(0.3, 1.0, int(round(seconds * RATE)), dtype=np.float32)
    return x + 0.01 * np.random.default_rng(seed).standard_normal(len(x)).astype(np.float32)


def test_incremental_log_mel_equals_offline() -> None:
    rng = np.random.default_rng(0)
    for _ in range(8):
        n = int(rng.integers(1, 80))
        audio = (0.1 * rng.standard_normal(n * HOP + int(rng.integers(0, HOP)))).astype(np.float32)
        inc, parts, pos = IncrementalLogMel(), [], 0
        while pos < len(audio):
            step = int(rng.integers(320, 3201))  # 20-200 ms
            parts.append(inc.push(audio[pos : pos + step], limit=2 * (min(pos + step, len(audio)) // HOP)))
            pos += step
        assert np.array_equal(np.concatenate(parts), log_mel(audio[: n * HOP]))  # bit-exact, whole frames only


@pytest.mark.slow
def test_whole_file_stats_give_the_offline_frames(stream_setup: dict) -> None:
    pipe, prepared, wav = stream_setup["pipe"], stream_setup["prepared"], stream_setup["wav"]
    offline = list(pipe.generate(prepared, pipe.prepare_speech(wav)))
    samples = speech_samples(wav)
    stream = LipSyncStream(pipe, prepared, normalization=MelStats.of_speech(samples))
    pushes = feed(stream, samples, np.random.default_rng(1))
    frames = [f for batch in pushes for f in batch]
    assert len(frames) == len(offline) == n_output_frames(len(samples)) == 10
    assert sum(map(len, pushes[:-1])) >= 4  # batches came out while the speech was still arriving
    for got, want in zip(frames, offline):
        assert np.array_equal(got, want)  # bit-exact: same features, same batches, same noise draws
    assert not np.array_equal(frames[0], frames[1])


@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_order_count_and_latency_bound(stream_setup: dict, recorded: list, batch_size: int) -> None:
    """Each frame comes once the speech reaches its time + 280 ms (never earlier: its windows are complete), at most
    one batch and one chunk later; with whole-file statistics its windows are the offline ones exactly."""
    pipe = stream_setup["pipe"]
    pipe.options.batch_size, rng = batch_size, np.random.default_rng(batch_size)
    try:
        samples = speechlike(2.0 + rng.uniform(0, 0.04))
        clock = Clock()  # the audio time: generation takes no time here
        stream = LipSyncStream(pipe, stream_setup["prepared"], normalization=MelStats.of_speech(samples), clock=clock)
        clock.stream = stream
        pushes = feed(stream, samples, rng)
    finally:
        pipe.options.batch_size = 2
    n = n_output_frames(len(samples))
    assert sum(map(len, pushes)) == n == stream.stats.n_frames
    src = np.concatenate([s for s, _ in recorded])
    assert np.array_equal(src, pingpong_indices(n, stream_setup["prepared"].n_frames))
    assert np.array_equal(np.concatenate([w for _, w in recorded]), offline_windows(samples))
    live = stream.stats.n_frames - len(pushes[-1])
    lags = np.array(stream.stats.frame_audio_lag_s[:live])
    assert live >= n - LOOKAHEAD_FRAMES - batch_size
    assert lags.min() >= FLOOR_S - 1e-9 and lags.max() <= FLOOR_S + (batch_size - 1) / FPS + 3200 / RATE + 1e-9
    # from the speech at a frame's time to the frame: its audio lag, as generation took no time
    np.testing.assert_allclose(stream.stats.frame_latency_s[:live], lags, atol=1e-9)
    summary = stream.stats.summary()
    assert summary["frames"] == n and summary["chunks"] == len(pushes) - 1 and summary["rtf"] > 0


def test_running_normalisation_converges_to_the_whole_file(stream_setup: dict, recorded: list) -> None:
    """Running statistics: early frames differ from the offline windows (documented in NOTES_stream.md), the
    difference shrinks as speech accumulates, and the last frames use the whole-file statistics."""
    samples = speechlike(6.0, seed=3)
    stream = LipSyncStream(stream_setup["pipe"], stream_setup["prepared"])
    feed(stream, samples, np.random.default_rng(3))
    got = np.concatenate([w for _, w in recorded])
    diff = np.abs(got - offline_windows(samples)).reshape(len(got), -1).max(axis=1)
    assert diff[:10].max() > 0.1  # the first frames see little speech
    assert diff[-20:].max() < 0.5 * diff[:10].max()
    mean, std = stream._stats()
    whole = MelStats.of_speech(samples)
    np.testing.assert_allclose(mean, whole.mean, atol=1e-3)
    np.testing.assert_allclose(std, whole.std, atol=1e-3)


def test_other_sample_rates_are_resampled_as_they_come(stream_setup: dict, recorded: list) -> None:
    samples = speechlike(1.0)
    hi = np.interp(np.arange(3 * len(samples)) / 3, np.arange(len(samples)), samples).astype(np.float32)
    stream = LipSyncStream(stream_setup["pipe"], stream_setup["prepared"], sample_rate=48_000)
    pushes = feed(stream, hi, np.random.default_rng(4), 960, 9600)
    assert sum(map(len, pushes)) == n_output_frames(len(samples)) == 25


def test_bad_chunks_and_backends(stream_setup: dict, recorded: list, tmp_path: Path) -> None:
    pipe = stream_setup["pipe"]
    stream = LipSyncStream(pipe, stream_setup["prepared"])
    for chunk, problem in (
        (np.zeros(0, np.float32), "chunk: is empty"),
        (np.zeros((640, 2), np.float32), r"mono float samples \(n,\), got float32 \(640, 2\)"),
        (np.zeros(640, np.int16), "mono float samples"),
        (np.full(640, np.nan, np.float32), "NaN"),
        (np.zeros(11 * RATE, np.float32), "longer than 10 s"),
    ):
        with pytest.raises(InferenceError, match=problem):
            stream.push(chunk)
    assert stream.push(np.zeros((320, 1), np.float32)) == []  # a column is mono too
    with pytest.raises(InferenceError, match="shorter than one video frame"):
        stream.close()
    with pytest.raises(InferenceError, match="the stream is closed"):
        stream.push(np.zeros(320, np.float32))
    with pytest.raises(InferenceError, match="normalization: must be 'running' or MelStats"):
        LipSyncStream(pipe, stream_setup["prepared"], normalization="whole")
    (tmp_path / "aud.npy").write_bytes(b"")
    backend, pipe.backend = pipe.backend, DeepSpeechNpyBackend(tmp_path / "aud.npy")
    try:
        with pytest.raises(InferenceError, match="--audio-features: 'deepspeech29' features cannot be streamed"):
            LipSyncStream(pipe, stream_setup["prepared"])
    finally:
        pipe.backend = backend


@pytest.mark.slow
def test_stream_cli_writes_an_mp4_with_audio_and_nothing_partial_on_error(
    stream_setup: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import av

    caplog.set_level("INFO", logger="talkingface.inference.stream")
    speech = write_wav(tmp_path / "speech.wav", seconds=5 / FPS)
    argv = ["--video", str(stream_setup["video"]), "--audio", str(speech), "--ckpt", str(stream_setup["ckpt"])]
    argv += ["--config", str(TINY_CONFIG), "--steps", "1", "--crop-size", "128", "--batch-size", "3", "--no-progress"]
    argv += ["--decode-window", "--decode-margin", "0", "--stream", "--stream-no-wait", "--chunk-ms", "20"]
    out = tmp_path / "out.mp4"
    assert demo.main([*argv, "--out", str(out)]) == 0
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.audio[0].codec_context.name == "aac"
        assert sum(1 for _ in c.decode(video=0)) == 5
        assert c.duration / 1e6 == pytest.approx(5 / FPS, abs=0.03)
    assert "streamed 5 frames in 10 chunks of 20 ms (as fast as possible)" in caplog.text

    with pytest.raises(SystemExit) as exit_info:  # refused while parsing (the flag's declared range)
        demo.main([*argv, "--out", str(tmp_path / "x.mp4"), "--chunk-ms", "500"])
    assert exit_info.value.code == 2 and "error: --chunk-ms: must be at most 200, got 500" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--stream-no-wait"])
    assert exit_info.value.code == 2 and "error: --stream-no-wait: needs --stream" in capsys.readouterr().err

    def fail(self: LipSyncStream) -> list:
        raise InferenceError("speech", "broken on purpose")

    monkeypatch.setattr(LipSyncStream, "close", fail)
    assert demo.main([*argv, "--out", str(tmp_path / "y.mp4"), "--frames-dir", str(tmp_path / "frames")]) == 2
    assert "error: speech: broken on purpose" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "speech.wav"]
