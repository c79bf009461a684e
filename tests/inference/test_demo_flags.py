"""``talkingface lipsync`` without ``--video`` (the demo on a generated face): every flag is used or refused.

Used: --ckpt (the model), --audio (the speech the generated face speaks), --frames-dir, --steps, --sampler,
--batch-size and the other sampling, face and video options. Refused, with one line naming the flag and why:
--config, --first-stage-ckpt and --trust-checkpoint without --ckpt (the demo model carries its config), --face (a
generated clip shows one face), --demo-student with --ckpt, --chunk-ms without --stream."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from command_support import exit_status, one_error
from data_fixtures import write_wav
from golden import TINY_CONFIG

import demo
from talkingface.constants import DEMO_STEPS

DEMO_SECONDS = "0.2"  # 5 frames of generated face and of generated speech


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[SimpleNamespace]:
    """The demo with a pipeline that records what it was given and writes nothing (the model still loads)."""
    import talkingface.inference as inference
    import talkingface.inference.stream as stream

    calls: list[SimpleNamespace] = []

    class SpyPipeline:
        def __init__(self, model: object, **kwargs: object) -> None:
            calls.append(SimpleNamespace(model=model, **kwargs))

        def run(self, video: Path, audio: Path, out: Path, **kwargs: object) -> None:
            calls[-1].run = SimpleNamespace(video=video, audio=audio, out=out, **kwargs)

    def spy_stream(pipe: SpyPipeline, video: Path, audio: Path, out: Path, **kwargs: object) -> None:
        calls[-1].stream = SimpleNamespace(video=video, audio=audio, out=out, **kwargs)

    monkeypatch.setattr(inference, "LipSyncPipeline", SpyPipeline)
    monkeypatch.setattr(stream, "stream_file", spy_stream)
    monkeypatch.setenv("TALKINGFACE_DEMO_SECONDS", DEMO_SECONDS)
    monkeypatch.delenv("TALKINGFACE_DEMO_STEPS", raising=False)
    monkeypatch.chdir(tmp_path)
    return calls


def test_without_flags_the_demo_model_samples_with_the_demo_defaults(spy: list[SimpleNamespace]) -> None:
    assert demo.main(["--no-progress"]) == 0
    (call,) = spy
    o = call.options
    assert (o.sampler, o.steps, o.batch_size, o.crop_size) == ("dpm++", DEMO_STEPS, 25, 128)
    assert call.model_source.endswith("model.safetensors")
    assert call.run.out == Path("synthetic_demo.mp4") and call.run.frames_dir is None
    assert Path(call.run.audio).name == "speech.mp4"  # the other generated clip's speech


def test_sampling_flags_are_used(spy: list[SimpleNamespace], monkeypatch: pytest.MonkeyPatch) -> None:
    """--steps, --sampler and --batch-size reach the pipeline; --steps wins over TALKINGFACE_DEMO_STEPS."""
    monkeypatch.setenv("TALKINGFACE_DEMO_STEPS", "2")
    argv = ["--no-progress", "--steps", "3", "--sampler", "ddim", "--batch-size", "4", "--eta", "0.5", "--seed", "7"]
    assert demo.main(argv) == 0
    o = spy[-1].options
    assert (o.sampler, o.steps, o.batch_size, o.eta, o.seed) == ("ddim", 3, 4, 0.5, 7)
    assert demo.main(["--no-progress"]) == 0
    assert spy[-1].options.steps == 2  # without --steps, the environment's


def test_streaming_demo_takes_batch_size_and_chunk_ms(spy: list[SimpleNamespace]) -> None:
    assert demo.main(["--no-progress", "--stream", "--stream-no-wait"]) == 0
    assert spy[-1].options.batch_size == 1 and spy[-1].stream.chunk_ms == 40.0  # the stream's defaults
    assert demo.main(["--no-progress", "--stream", "--chunk-ms", "80", "--batch-size", "2"]) == 0
    assert spy[-1].options.batch_size == 2 and spy[-1].stream.chunk_ms == 80.0


def test_frames_dir_and_audio_are_used(spy: list[SimpleNamespace], tmp_path: Path) -> None:
    speech = write_wav(tmp_path / "mine.wav", seconds=0.3)
    assert demo.main(["--no-progress", "--audio", str(speech), "--frames-dir", str(tmp_path / "frames")]) == 0
    run = spy[-1].run
    assert Path(run.audio) == speech and Path(run.frames_dir) == tmp_path / "frames"


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--config", str(TINY_CONFIG)], "--config"),
        (["--first-stage-ckpt", "fs.ckpt"], "--first-stage-ckpt"),
        (["--trust-checkpoint"], "--trust-checkpoint"),
        (["--face", "1"], "--face"),
        (["--chunk-ms", "80"], "--chunk-ms"),
        (["--landmarks", "x.npy"], "--landmarks"),
    ],
)
def test_flags_that_mean_nothing_without_video_are_refused(
    spy: list[SimpleNamespace], capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    assert exit_status(demo.main, ["--no-progress", *argv]) == 2
    assert one_error(capsys).startswith(f"error: {flag}: ")
    assert spy == []  # refused before the model loads


def test_demo_student_with_ckpt_is_refused(
    spy: list[SimpleNamespace], tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_status(demo.main, ["--no-progress", "--demo-student", "--ckpt", str(tiny_ckpt)]) == 2
    assert one_error(capsys).startswith("error: --demo-student: not with --ckpt")


def test_chunk_ms_without_stream_is_refused_with_a_video_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_status(demo.main, ["--video", "v.mp4", "--out", "o.mp4", "--chunk-ms", "80"]) == 2
    assert one_error(capsys) == "error: --chunk-ms: needs --stream"


@pytest.mark.parametrize("name, value", [("STEPS", "many"), ("STEPS", "2.5"), ("SECONDS", "inf"), ("SECONDS", "-1")])
def test_a_bad_demo_environment_value_is_one_line(
    name: str, value: str, spy: list[SimpleNamespace], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(f"TALKINGFACE_DEMO_{name}", value)
    assert demo.main(["--no-progress"]) == 2
    assert one_error(capsys).startswith(f"error: TALKINGFACE_DEMO_{name}: must be a ")
    assert spy == []


@pytest.mark.slow
def test_ckpt_audio_and_frames_dir_animate_the_generated_face(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run: --ckpt's model (the tiny one, its config given) makes the frames of the generated face speaking
    --audio (0.12 s: 3 frames, not the 5 of the generated speech), written to --out and --frames-dir."""
    import talkingface.inference as inference

    seen = []

    class Recording(inference.LipSyncPipeline):
        def __init__(self, model: object, **kwargs: object) -> None:
            super().__init__(model, **kwargs)
            seen.append(self)

    monkeypatch.setattr(inference, "LipSyncPipeline", Recording)
    monkeypatch.setenv("TALKINGFACE_DEMO_SECONDS", DEMO_SECONDS)
    monkeypatch.chdir(tmp_path)
    speech = write_wav(tmp_path / "mine.wav", seconds=0.12)
    out, frames = tmp_path / "out.mp4", tmp_path / "frames"
    argv = ["--no-progress", "--ckpt", str(tiny_ckpt), "--config", str(TINY_CONFIG), "--audio", str(speech)]
    argv += ["--frames-dir", str(frames), "--out", str(out), "--steps", "2", "--sampler", "ddim", "--batch-size", "3"]
    assert demo.main(argv) == 0
    (pipe,) = seen
    assert pipe.model_source == str(tiny_ckpt) and pipe.model.config.unet.model_channels == 32
    assert (pipe.options.steps, pipe.options.sampler, pipe.options.batch_size) == (2, "ddim", 3)
    assert sorted(p.name for p in frames.iterdir()) == [f"{k:06d}.png" for k in range(3)]
    assert out.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "mine.wav", "out.mp4"]
