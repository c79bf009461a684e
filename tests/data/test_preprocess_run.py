"""End to end: real face video (astronaut photo with motion + tones) -> `python -m talkingface.preprocess run`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from data_fixtures import FACE_WINDOW, MOTION_PX, SIZE, copy_dataset, write_video, write_wav
from fs_support import make_read_only

from talkingface.commands.preprocess import main
from talkingface.data import writer
from talkingface.data.validate import validate_dataset
from talkingface.media.decode import count_frames
from talkingface.media.errors import PreprocessError
from talkingface.media.extract import extract_video
from talkingface.media.landmarks import LandmarkDetector


def test_layout_shapes_and_counts(built: Path) -> None:
    assert (built / "data.txt").read_text() == "1 60\n2 50\n"
    meta = json.loads((built / "meta.json").read_text())
    assert meta["audio_feature"] == {
        "kind": "logmel29",
        "dim": 29,
        "window": 16,
        "smooth": 8,
        "rate_hz": 50,
        "smooth_edge": "zero",
    }
    assert meta["fps"] == 25 and meta["image_size"] == SIZE
    assert meta["videos"]["1"]["source"] == "face.mp4" and meta["videos"]["2"]["source"] == "stereo44k.mov"
    for v, n in ((1, 60), (2, 50)):
        names = {f"{v}_{f}" for f in range(n)}
        assert {p.stem for p in (built / "images").glob(f"{v}_*.jpg")} == names
        assert {p.stem for p in (built / "landmarks").glob(f"{v}_*.lms")} == names
        assert {p.stem for p in (built / "audio_smooth").glob(f"{v}_*.npy")} == names
        # 25 fps frame count agrees with the audio length
        assert abs(meta["videos"][str(v)]["audio_seconds"] * 25 - n) < 1
    image = cv2.imread(str(built / "images" / "1_30.jpg"))
    assert image.shape == (SIZE, SIZE, 3)
    assert np.loadtxt(built / "landmarks" / "1_30.lms").shape == (68, 2)
    audio = np.load(built / "audio_smooth" / "2_0.npy")
    assert audio.shape == (8, 16, 29) and audio.dtype == np.float32
    assert np.all(audio[:4] == 0) and np.all(audio[4, :8] == 0) and np.any(audio[4, 8:] != 0)
    train = (built.parent / "data_train.txt").read_text().split()
    test = (built.parent / "data_test.txt").read_text().split()
    assert {n.split("_")[0] for n in train}.isdisjoint({n.split("_")[0] for n in test})
    assert len(train) + len(test) == 59 + 49 and "1_0" not in train + test  # lists start at frame 1
    assert not (built / ".tmp").exists()


def test_validate_passes_and_rerun_skips(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", str(built)]) == 0
    assert validate_dataset(built) == []
    root = copy_dataset(built, tmp_path)
    before = (root / "images" / "1_0.jpg").stat().st_mtime_ns
    media_dir = Path(json.loads((root / "meta.json").read_text())["videos"]["1"]["path"]).parent
    s = writer.build_dataset([media_dir], root, writer.BuildOptions(size=SIZE), progress=False)
    assert (s.skipped, s.done, s.failed) == (2, 0, 0)
    assert (root / "images" / "1_0.jpg").stat().st_mtime_ns == before


@pytest.mark.slow
def test_landmarks_land_on_the_face(source_clips: dict[str, Path]) -> None:
    """Saved landmarks, mapped back through the crop box, match the photo's landmarks moved with the clip."""
    import skimage.data

    photo_lms = LandmarkDetector()(skimage.data.astronaut())
    clip = extract_video(source_clips["face"], size=SIZE, audio=False)
    assert clip.frames.shape == (60, SIZE, SIZE, 3) and clip.landmarks.shape == (60, 68, 2)
    assert not clip.missing.any()
    y0, x0, _, _ = FACE_WINDOW
    n_src = 72
    errors = []
    for k in range(60):
        i = int(np.floor(k * 30 / 25 + 1e-9))  # source frame on screen at k / 25 s
        phase = 2 * np.pi * i / n_src
        dx, dy = round(MOTION_PX[0] * np.sin(phase)), round(MOTION_PX[1] * np.sin(2 * phase))
        expected = photo_lms - [x0 + 20 + dx, y0 + 20 + dy]
        bx, by, side = clip.boxes[k]
        s = SIZE / side
        back = (clip.landmarks[k] + 0.5) / s - 0.5 + [bx, by]
        errors.append(np.abs(back - expected).mean())
    assert np.mean(errors) < 2.5 and np.max(errors) < 5.0
    # the crop is centred on the face and holds all of it
    assert np.all((clip.landmarks > 0) & (clip.landmarks < SIZE))
    np.testing.assert_allclose(clip.landmarks[:, :, 0].mean(), SIZE / 2, atol=SIZE * 0.08)


def test_fps_resampling(source_clips: dict[str, Path]) -> None:
    assert count_frames(source_clips["face"]) == 60
    assert count_frames(source_clips["face"], fps=30) == 72
    assert count_frames(source_clips["stereo"]) == 50


def _bad_run(tmp_path: Path, video: Path, *extra: str) -> tuple[int, Path]:
    root = tmp_path / "data" / "HDTF"
    rc = main(["run", str(video), "--out", str(root), "--size", "64", "--no-progress", *extra])
    return rc, root


@pytest.mark.parametrize(
    "kind,message",
    [
        ("noface", "no face found"),
        ("noaudio", "no audio stream"),
        ("silent", "silent"),
        ("short", "s but video 1.60 s (gap"),
        ("corrupt", "cannot open as a media file"),
    ],
)
def test_bad_inputs_fail_clearly(kind: str, message: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    video = tmp_path / f"{kind}.mp4"
    if kind == "corrupt":
        video.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    else:
        write_video(
            video,
            seconds=1.6,
            fps=25,
            face=kind != "noface",
            audio={"noaudio": None, "silent": "silent"}.get(kind, "tones"),
            audio_seconds=0.3 if kind == "short" else None,
        )
    rc, root = _bad_run(tmp_path, video)
    assert rc == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(str(video) in e and message in e for e in errors), errors
    assert not list((root / "images").glob("*")) if (root / "images").exists() else True
    meta = json.loads((root / "meta.json").read_text())
    assert meta["videos"]["1"]["status"] == "failed" and message in meta["videos"]["1"]["error"]
    if kind == "silent":
        assert _bad_run(tmp_path, video, "--allow-silent")[0] == 0


def test_bad_video_never_destroys_existing(built: Path, tmp_path: Path) -> None:
    root = copy_dataset(built, tmp_path)
    bad = write_video(tmp_path / "noface.mp4", seconds=1.2, fps=25, face=False)
    sources = json.loads((root / "meta.json").read_text())["videos"]
    good = [Path(sources["1"]["path"]), Path(sources["2"]["path"])]
    s = writer.build_dataset([*good, bad], root, writer.BuildOptions(size=SIZE), progress=False)
    assert (s.skipped, s.failed) == (2, 1)
    assert (root / "data.txt").read_text() == "1 60\n2 50\n3 0\n"
    assert validate_dataset(root) == []


def test_missing_input_and_mismatched_settings(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["run", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nope.mp4: no such file" in err[0]
    root = copy_dataset(built, tmp_path)
    video = json.loads((root / "meta.json").read_text())["videos"]["1"]["path"]
    assert main(["run", video, "--out", str(root), "--size", "256", "--no-progress"]) == 2
    assert "image_size=128" in capsys.readouterr().err


@pytest.mark.slow
def test_interrupted_run_resumes(
    source_clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data" / "HDTF"
    real = writer.iter_crops

    def dying(*args, **kwargs):
        for k, item in enumerate(real(*args, **kwargs)):
            if k == 10:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(writer, "iter_crops", dying)
    with pytest.raises(KeyboardInterrupt):
        writer.build_dataset([source_clips["stereo"]], root, writer.BuildOptions(size=64), progress=False)
    monkeypatch.setattr(writer, "iter_crops", real)
    assert not (root / ".done" / "1.json").exists()
    assert not list((root / "images").glob("*")) if (root / "images").exists() else True
    problems = validate_dataset(root, progress=False)
    assert problems  # no data.txt entry yet / no split lists: the half video never looks complete
    # a crash in the middle of the final move: stale files of video 1 with a .moving marker
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "images" / "1_999.jpg").write_bytes(b"stale")
    (root / ".done").mkdir(exist_ok=True)
    (root / ".done" / "1.moving").touch()
    # and a half-written temp dir, as a killed process leaves it
    (root / ".tmp" / "1" / "images").mkdir(parents=True)
    (root / ".tmp" / "1" / "images" / "1_0.jpg").write_bytes(b"half")
    assert any(".tmp" in str(p) for p in validate_dataset(root, progress=False))
    s = writer.build_dataset([source_clips["stereo"]], root, writer.BuildOptions(size=64), progress=False)
    assert (s.done, s.failed) == (1, 0)
    assert validate_dataset(root, progress=False) == []
    assert not (root / ".tmp").exists() and not (root / "images" / "1_999.jpg").exists()


@pytest.mark.slow
def test_shards_workers_separate_audio_and_cli(source_clips: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "data" / "HDTF"
    videos = [str(source_clips["face"]), str(source_clips["stereo"])]
    common = ["--out", str(root), "--size", "64", "--no-progress", "--test-videos", "face.mp4"]
    assert main(["run", *videos, *common, "--shard", "1/2"]) == 0
    assert (root / "data.txt").read_text() == "1 0\n2 50\n"
    wav = write_wav(tmp_path / "face.wav", 2.4, rate=22_050, channels=2)
    assert main(["run", *videos, *common, "--shard", "0/2", "--workers", "2", "--audio", str(tmp_path)]) == 0
    assert (root / "data.txt").read_text() == "1 60\n2 50\n"
    assert json.loads((root / "meta.json").read_text())["videos"]["1"]["audio"] == str(wav.resolve())
    assert (tmp_path / "data" / "data_test.txt").read_text().split()[0] == "1_1"
    out = subprocess.run(
        [sys.executable, "-m", "talkingface.preprocess", "validate", str(root), "--no-images"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr


def test_deepspeech_npy_features_are_used_as_they_are(source_clips: dict[str, Path], tmp_path: Path) -> None:
    aud = np.random.default_rng(0).normal(size=(49, 16, 29)).astype(np.float32)  # one frame shorter than the video
    npy = tmp_path / "stereo44k.npy"
    np.save(npy, aud)
    root = tmp_path / "data" / "HDTF"
    args = ["run", str(source_clips["stereo"]), "--out", str(root), "--size", "64", "--no-progress"]
    assert main([*args, "--audio-features", "deepspeech-npy", "--deepspeech-npy", str(npy)]) == 0
    assert (root / "data.txt").read_text() == "1 49\n"
    np.testing.assert_array_equal(np.load(root / "audio_smooth" / "1_10.npy"), aud[6:14])
    assert json.loads((root / "meta.json").read_text())["audio_feature"]["kind"] == "deepspeech29"
    assert main([*args]) == 2  # mel features into a deepspeech dataset: refused


def test_finalize_refuses_a_folder_without_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for root, words in ((tmp_path / "missing", "not found"), (empty, "no dataset here")):
        capsys.readouterr()
        assert main(["finalize", str(root)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {root}: ") and words in err[0], err
    assert not (tmp_path / "missing").exists() and not list(empty.iterdir())


def test_too_short_videos_are_failed_or_warned_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 1-frame video contributes no listed frame (lists start at frame 1): it fails with the reason. A video
    shorter than the reference distance is kept, with a warning, and counted in the summary."""
    one = write_video(tmp_path / "one.mp4", seconds=0.04, fps=25)
    short = write_video(tmp_path / "short.mp4", seconds=0.8, fps=25)
    caplog.set_level(logging.INFO, logger="talkingface.data.writer")
    root = tmp_path / "data" / "HDTF"
    s = writer.build_dataset([one, short], root, writer.BuildOptions(size=64), progress=False)
    assert (s.done, s.failed, s.short) == (1, 1, 1)
    assert "1 frame" in s.failures["one.mp4"] and "at least 2" in s.failures["one.mp4"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("short.mp4" in w and "20 frames" in w and "reference" in w for w in warnings), warnings
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("summary:")]
    assert "1 shorter than the reference distance" in summary[0], summary
    assert (root / "data.txt").read_text() == "1 0\n2 20\n"


def test_a_different_file_with_a_finished_name_is_redone(
    built: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Done markers record the source's size and mtime: another face.mp4 is not skipped as done, it replaces
    video 1 (with a warning); the unchanged file is still skipped."""
    root = copy_dataset(built, tmp_path)
    other = write_video(tmp_path / "face.mp4", seconds=1.2, fps=25)
    s = writer.build_dataset([other], root, writer.BuildOptions(size=SIZE), progress=False)
    assert (s.done, s.skipped, s.failed) == (1, 0, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(other) in w and "not the file video 1 was made from" in w for w in warnings), warnings
    assert (root / "data.txt").read_text() == "1 30\n2 50\n"
    assert validate_dataset(root, progress=False) == []
    s = writer.build_dataset([other], root, writer.BuildOptions(size=SIZE), progress=False)
    assert (s.done, s.skipped) == (0, 1)


def test_two_datasets_never_share_split_lists(
    built: Path, source_clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second dataset in the same parent folder used to overwrite the first one's data_train.txt/data_test.txt
    while validate of the first still said OK."""
    root = copy_dataset(built, tmp_path)
    lists = {p: p.read_bytes() for p in (root.parent / "data_train.txt", root.parent / "data_test.txt")}
    other = root.parent / "Other"
    args = ["run", str(source_clips["stereo"]), "--out", str(other), "--size", "64", "--no-progress"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data_train.txt" in err[0] and "--split-dir" in err[0], err
    assert {p: p.read_bytes() for p in lists} == lists and not (other / "images").exists()
    # with its own split folder it builds; its lists copied over the first dataset's are detected
    assert main([*args, "--split-dir", str(tmp_path / "other_lists")]) == 0
    assert validate_dataset(other, split_dir=tmp_path / "other_lists", progress=False) == []
    assert validate_dataset(root, progress=False) == []
    (root.parent / "data_train.txt").write_bytes((tmp_path / "other_lists" / "data_train.txt").read_bytes())
    problems = [str(p) for p in validate_dataset(root, progress=False)]
    assert any("data_train.txt" in p and "not the split list this dataset wrote" in p for p in problems), problems
    # finalize of the first dataset refuses to overwrite it too (it is not the list the dataset wrote)
    assert main(["finalize", str(root)]) == 2


def test_one_run_per_out_at_a_time(
    source_clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two concurrent runs on one --out deleted each other's .tmp/<v>: a second run exits 2 at once, naming the
    lock. Shards of one run may share --out (each shard once); finalize waits for no run."""
    import fcntl

    root = tmp_path / "data" / "HDTF"
    root.mkdir(parents=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run in progress holds it
    try:
        capsys.readouterr()
        assert main(["run", str(source_clips["stereo"]), "--out", str(root), "--size", "64", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(root / ".lock") in err[0] and "another run" in err[0], err
        assert not (root / ".tmp").exists() and not (root / ".done").exists()
    finally:
        os.close(fd)
    with writer.run_lock(root, 0, 2), writer.run_lock(root, 1, 2):  # two shards together
        for shard in ((0, 1), (1, 2)):
            with pytest.raises(PreprocessError, match="another run"), writer.run_lock(root, *shard):
                pass
    with writer.run_lock(root, 0, 1):
        pass


@pytest.mark.parametrize("where", ["out", "below-out", "split-dir", "under-a-file"])
def test_read_only_output_folder_is_refused_up_front(
    source_clips: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """D12: a read-only --out (or split folder) is one error line and exit 2 before any video is processed (it was
    a raw traceback). Root writes into a chmod-ed folder anyway: then os.access is made to say what it would say."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "a-file").write_text("x")
    out = {
        "out": locked,
        "below-out": locked / "data" / "HDTF",
        "split-dir": tmp_path / "data" / "HDTF",
        "under-a-file": tmp_path / "a-file" / "HDTF",
    }[where]
    extra = ["--split-dir", str(locked)] if where == "split-dir" else []
    make_read_only(locked, monkeypatch)
    try:
        monkeypatch.setattr(writer, "process_video", lambda *a, **k: pytest.fail("no video may be processed"))
        capsys.readouterr()
        assert (
            main(["run", str(source_clips["stereo"]), "--out", str(out), "--size", "64", "--no-progress", *extra]) == 2
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        words = "is not a folder" if where == "under-a-file" else "not writable"
        assert words in err[0] and str(tmp_path / "a-file" if where == "under-a-file" else locked) in err[0], err
        if where == "split-dir":
            assert "--split-dir" in err[0] and not out.exists()
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_the_detection_bar_has_a_total(source_clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The face-detection pass shows "n/N frames" with an ETA: its total comes from the container's duration."""
    from talkingface.media import extract
    from talkingface.media.decode import probe_video

    assert probe_video(source_clips["face"]).expected_frames(25) == count_frames(source_clips["face"]) == 60
    totals: dict[str, int | None] = {}
    real = extract.tqdm

    def spy(*args: object, **kwargs: object) -> object:
        totals[str(kwargs.get("desc"))] = kwargs.get("total")  # type: ignore[assignment]
        return real(*args, **kwargs)

    monkeypatch.setattr(extract, "tqdm", spy)
    extract.analyse_video(source_clips["stereo"], progress=True)
    assert totals == {"detect stereo44k.mov": 50}
