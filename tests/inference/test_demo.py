"""demo.py end to end on a tiny model with deterministic weights, and one test per bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from command_support import one_error
from data_fixtures import write_video, write_wav
from fs_support import make_read_only
from golden import TINY_CONFIG

import demo
from talkingface.media.decode import iter_frames
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--steps", "2", "--crop-size", "128", "--batch-size", "3", "--no-progress", "--config", str(TINY_CONFIG)]
VIDEO_FRAMES = 3  # 0.12 s at 25 fps
SPEECH_FRAMES = 5  # longer than the video: exercises the ping-pong


@pytest.fixture(scope="module")
def assets(tiny_model: DiffTalkModel, tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("demo")
    torch.save({"state_dict": tiny_model.state_dict()}, d / "reference_format.ckpt")  # records no feature kind
    return {
        "ckpt": tiny_ckpt,
        "ref_ckpt": d / "reference_format.ckpt",
        "video": write_video(d / "person.mp4", seconds=VIDEO_FRAMES / 25, fps=25),
        "speech": write_wav(d / "speech.wav", seconds=SPEECH_FRAMES / 25),
    }


def run_demo(assets: dict[str, Path], out: Path, *extra: str, **paths: Path) -> int:
    video, speech, ckpt = (paths.get(k, assets[k]) for k in ("video", "speech", "ckpt"))
    argv = ["--video", str(video), "--audio", str(speech), "--out", str(out), "--ckpt", str(ckpt), *FAST, *extra]
    return demo.main(argv)


def no_leftovers(folder: Path, allowed: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == allowed


@pytest.mark.slow
def test_demo_writes_lipsynced_video(assets: dict[str, Path], tmp_path: Path) -> None:
    out, frames_dir = tmp_path / "result.mp4", tmp_path / "frames"
    out.write_bytes(b"an older result")  # replaced thanks to --overwrite
    assert run_demo(assets, out, "--overwrite", "--frames-dir", str(frames_dir)) == 0
    no_leftovers(tmp_path, {"result.mp4", "frames"})
    assert sorted(p.name for p in frames_dir.iterdir()) == [f"{k:06d}.png" for k in range(SPEECH_FRAMES)]

    import av

    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert len(c.streams.audio) == 1 and c.streams.audio[0].codec_context.name == "aac"
        assert c.duration / 1e6 == pytest.approx(SPEECH_FRAMES / 25, abs=0.03)
    got = list(iter_frames(out))
    src = list(iter_frames(assets["video"]))
    assert len(got) == SPEECH_FRAMES and got[0].shape == src[0].shape
    # ping-pong: 0 1 2 1 0. Above the nose and below the chin the frame is the source's, up to codec loss;
    # the mouth (random weights: noise) is not.
    for k, i in enumerate([0, 1, 2, 1, 0]):
        diff = np.abs(got[k].astype(np.int16) - src[i].astype(np.int16))
        assert diff[:70].mean() < 4.0 and diff[190:].mean() < 4.0
        assert diff[110:140, 120:160].mean() > 15.0


@pytest.mark.slow
def test_refuses_existing_output_without_overwrite(assets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    out.write_bytes(b"keep me")
    cmd = [sys.executable, str(ROOT / "demo.py"), "--video", str(assets["video"]), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {out}: already exists; pass --overwrite to replace it"]
    assert out.read_bytes() == b"keep me"


@pytest.mark.slow
def test_no_face(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "flag.mp4", seconds=0.12, fps=25, face=False)
    assert run_demo(assets, tmp_path / "out.mp4", video=video) == 2
    line = one_error(capsys)
    assert str(video) in line and "no face" in line
    no_leftovers(tmp_path, {"flag.mp4"})


def test_audio_shorter_than_one_frame(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    speech = write_wav(tmp_path / "blip.wav", seconds=0.02)
    assert run_demo(assets, tmp_path / "out.mp4", speech=speech) == 2
    line = one_error(capsys)
    assert str(speech) in line and "shorter than one video frame" in line
    no_leftovers(tmp_path, {"blip.wav"})


@pytest.mark.parametrize("which", ["video", "speech"])
def test_unreadable_media(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, which: str) -> None:
    broken = tmp_path / ("broken.mp4" if which == "video" else "broken.wav")
    broken.write_bytes(np.random.default_rng(0).bytes(4096))
    assert run_demo(assets, tmp_path / "out.mp4", **{which: broken}) == 2
    line = one_error(capsys)
    assert str(broken) in line and "cannot open as a media file" in line
    no_leftovers(tmp_path, {broken.name})


def test_speech_without_audio_stream(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mute = write_video(tmp_path / "mute.mp4", seconds=0.12, fps=25, audio=None)
    assert run_demo(assets, tmp_path / "out.mp4", speech=mute) == 2
    line = one_error(capsys)
    assert str(mute) in line and "no audio stream" in line


def test_unsupported_output_format(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_demo(assets, tmp_path / "out.gif") == 2
    assert "unsupported output format '.gif'" in one_error(capsys)


def test_feature_kind_mismatch(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_demo(assets, tmp_path / "out.mp4", "--audio-features", "wav2vec2") == 2
    line = one_error(capsys)
    assert str(assets["ckpt"]) in line and "'logmel29'" in line and "'wav2vec2-ctc29'" in line
    no_leftovers(tmp_path, set())


def test_unrecorded_feature_kind_needs_option(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run_demo(assets, tmp_path / "out.mp4", ckpt=assets["ref_ckpt"]) == 2
    line = one_error(capsys)
    assert str(assets["ref_ckpt"]) in line and "--audio-features" in line


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink"])
def test_refuses_output_that_is_an_input(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, spelling: str, overwrite: bool
) -> None:
    """--out resolving to --video (other spelling, symlink) is refused, with --overwrite too: the input stays."""
    video = tmp_path / "in.mp4"
    video.write_bytes(assets["video"].read_bytes())
    original = video.read_bytes()
    out = {"same": video, "dotdot": tmp_path / "sub" / ".." / "in.mp4", "symlink": tmp_path / "link.mp4"}[spelling]
    (tmp_path / "sub").mkdir()
    if spelling == "symlink":
        out.symlink_to(video)
    extra = ["--overwrite"] if overwrite else []
    assert run_demo(assets, out, *extra, video=video) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {out}: ") and "--video" in line and "--overwrite" not in line
    assert video.read_bytes() == original


@pytest.mark.parametrize("flag", ["--audio", "--landmarks"])
def test_refuses_output_or_frames_dir_that_is_an_input(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, flag: str
) -> None:
    speech = tmp_path / "speech.mp4"
    speech.write_bytes(assets["video"].read_bytes())
    lms = tmp_path / "lms"
    lms.mkdir()
    (lms / "0.lms").write_text("1 2\n")
    if flag == "--audio":
        assert run_demo(assets, speech, "--overwrite", speech=speech) == 2
        assert flag in one_error(capsys)
    # --frames-dir resolving to the landmarks folder (or to an input file)
    assert run_demo(assets, tmp_path / "out.mp4", "--landmarks", str(lms), "--frames-dir", str(lms), "--overwrite") == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {lms}: ") and "--landmarks" in line
    assert (lms / "0.lms").read_text() == "1 2\n" and speech.is_file()


@pytest.mark.parametrize("which", ["out", "frames-dir", "synthetic"])
def test_read_only_output_folder_is_refused_up_front(
    assets: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    import talkingface.model.image_driven_talkingface.DiffTalk as DiffTalk

    locked = tmp_path / "locked"
    locked.mkdir()
    make_read_only(locked, monkeypatch)
    try:

        def no_model(*a: object, **k: object) -> None:
            raise AssertionError("the model must not load")

        monkeypatch.setattr(DiffTalk, "get_difftalk_inference", no_model)  # the command's and the synthetic demo's
        if which == "synthetic":
            assert demo.main(["--out", str(locked / "result.mp4"), "--no-progress"]) == 2
        elif which == "out":
            out, extra = locked / "result.mp4", []
        else:
            out, extra = tmp_path / "result.mp4", ["--frames-dir", str(locked / "frames")]
        if which != "synthetic":
            assert run_demo(assets, out, *extra) == 2
        line = one_error(capsys)
        assert str(locked) in line and "not writable" in line
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_leaves_no_partial_output(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from talkingface.inference.writer import VideoWriter

    real_write = VideoWriter.write

    def write_then_interrupt(self: VideoWriter, rgb: np.ndarray) -> None:
        real_write(self, rgb)
        raise KeyboardInterrupt

    monkeypatch.setattr(VideoWriter, "write", write_then_interrupt)
    assert run_demo(assets, tmp_path / "out.mp4", "--frames-dir", str(tmp_path / "frames")) == 130
    assert one_error(capsys) == "error: interrupted"
    no_leftovers(tmp_path, set())


@pytest.mark.parametrize(
    "flag, value, sampler", [("--steps", "0", "dpm++"), ("--steps", "-3", "ddim"), ("--batch-size", "0", "dpm++")]
)
def test_bad_steps_or_batch_size_before_the_model_loads(
    assets: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    flag: str,
    value: str,
    sampler: str,
) -> None:
    import talkingface.model.image_driven_talkingface.DiffTalk as DiffTalk

    def no_model(*a: object, **k: object) -> None:
        raise AssertionError("the model must not load")

    monkeypatch.setattr(DiffTalk, "get_difftalk_inference", no_model)
    with pytest.raises(SystemExit) as stop:  # refused while parsing (the flag's declared range)
        run_demo(assets, tmp_path / "out.mp4", "--sampler", sampler, flag, value)
    assert stop.value.code == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {flag}: ") and value in line
    no_leftovers(tmp_path, set())


@pytest.fixture
def fake_synthetic_pipeline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The no-argument demo with its real model and media but a pipeline that only checks and touches --out."""
    import talkingface.inference as inference
    from talkingface.inference.writer import check_output

    written: list[Path] = []

    class FakePipeline:
        def __init__(self, *a: object, **k: object) -> None:
            pass

        def run(self, video: Path, speech: Path, out: Path, overwrite: bool = False, **k: object) -> object:
            from types import SimpleNamespace

            path = check_output(out, overwrite)
            path.write_bytes(b"result")
            written.append(path)
            return SimpleNamespace(out=path, n_frames=3)

    monkeypatch.setattr(inference, "LipSyncPipeline", FakePipeline)
    monkeypatch.setenv("TALKINGFACE_DEMO_SECONDS", "0.2")
    monkeypatch.chdir(tmp_path)
    return written


def test_synthetic_demo_says_what_it_makes_and_leaves_wrote_to_the_pipeline(
    fake_synthetic_pipeline: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The demo says at INFO what it makes; the "wrote" line is the pipeline's alone (not the demo's too, nor the
    writer's for the generated clips in the temp folder)."""
    import logging

    with caplog.at_level(logging.DEBUG):
        assert demo.main(["--no-progress"]) == 0
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    (making,) = [r for r in info if r.name == "talkingface.synthetic.demo" and r.getMessage().startswith("making ")]
    assert making.levelno == logging.INFO and "synthetic_demo.mp4" in making.getMessage()
    assert not [r.getMessage() for r in info if r.getMessage().startswith("wrote ")]
    clips = [r for r in caplog.records if r.getMessage().startswith("wrote ") and "portrait.mp4" in r.getMessage()]
    assert clips and all(r.levelno == logging.DEBUG for r in clips)  # the generator's clips: debug only


def test_synthetic_demo_logs_each_line_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real no-argument demo with the 4-step student: "sampling as the checkpoint records" and "wrote
    synthetic_demo.mp4" once each (they were logged twice: options checked twice, result reported in two layers)."""
    import logging

    monkeypatch.setenv("TALKINGFACE_DEMO_SECONDS", "0.2")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        assert demo.main(["--no-progress", "--demo-student"]) == 0
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len([m for m in said if m.startswith("sampling as the checkpoint records")]) == 1, said
    assert len([m for m in said if m.startswith("wrote ")]) == 1, said
    assert len([m for m in said if "synthetic_demo.mp4" in m]) == 2, said  # "making ..." and "wrote ..."
    assert len(said) == len(set(said)), said


def test_second_synthetic_demo_replaces_its_own_output(fake_synthetic_pipeline: list[Path], tmp_path: Path) -> None:
    assert demo.main(["--no-progress"]) == 0
    assert demo.main(["--no-progress"]) == 0  # its own previous result does not stop it
    assert fake_synthetic_pipeline == [Path("synthetic_demo.mp4")] * 2
    assert demo.main(["--no-progress", "--out", "synthetic_demo.mp4"]) == 2  # an explicit --out needs --overwrite
    assert demo.main(["--no-progress", "--out", "synthetic_demo.mp4", "--overwrite"]) == 0


def test_demo_default_output_is_git_ignored() -> None:
    from talkingface.synthetic.demo import DEFAULT_OUT

    proc = subprocess.run(["git", "check-ignore", "-q", str(DEFAULT_OUT)], cwd=ROOT, timeout=30)
    if proc.returncode == 128:
        pytest.skip("not a git checkout")
    assert proc.returncode == 0, f"{DEFAULT_OUT} is not in .gitignore"
