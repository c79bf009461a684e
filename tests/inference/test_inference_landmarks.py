"""``--landmarks``: landmarks from a file instead of dlib, mapped to the 25 fps frames the pipeline decodes.

The detector is made to fail in every test here: none of them may build it.
"""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest
from command_support import one_error
from data_fixtures import write_video

import demo
from talkingface.data.layout import LANDMARK_FMT
from talkingface.inference import InferenceError, prepare_video
from talkingface.media import landmarks as dlib_landmarks
from talkingface.media.crop import plan_crops
from talkingface.media.decode import iter_frames, map_frames
from talkingface.media.errors import PreprocessError
from talkingface.media.extract import analyse_landmarks, analyse_video
from talkingface.synthetic.generate import clip_rng, render_clip, sidecar_path, write_clip_video

FAST = ["--steps", "2", "--crop-size", "128", "--batch-size", "3", "--no-progress"]
CLIP_FRAMES = 5


@pytest.fixture(autouse=True)
def no_dlib(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dlib landmark detector was built")

    monkeypatch.setattr(dlib_landmarks.LandmarkDetector, "__init__", refuse)
    monkeypatch.setattr(dlib_landmarks, "_CACHE", {})


@pytest.fixture(scope="module")
def landmark_clip(small_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic clip with its ``.landmarks.npy`` sidecar (as ``python -m talkingface.synthetic`` writes it), and
    the 64 px model's checkpoint (it records its config)."""
    d = tmp_path_factory.mktemp("landmarks")
    video = write_clip_video(render_clip(clip_rng(0, 1), CLIP_FRAMES / 25), d / "synthetic_001.mp4")
    return {"video": video, "sidecar": sidecar_path(video), "ckpt": small_ckpt}


def run_demo(clip: dict[str, Path], out: Path, landmarks: Path, **paths: Path) -> int:
    video = paths.get("video", clip["video"])
    argv = ["--video", str(video), "--out", str(out), "--ckpt", str(clip["ckpt"]), "--landmarks", str(landmarks)]
    return demo.main([*argv, *FAST])


def source_frames(video: Path) -> list[np.ndarray]:
    """Every frame of the video at its own rate."""
    with av.open(str(video)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def write_lms_folder(folder: Path, points: np.ndarray) -> Path:
    folder.mkdir()
    for i, lms in enumerate(points):
        np.savetxt(folder / f"{i}.lms", lms, fmt=LANDMARK_FMT)
    return folder


def test_map_frames_picks_the_frames_iter_frames_shows(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v30.mp4", seconds=1.0, fps=30, audio=None)
    frames = map_frames(video)
    assert frames.n_source == 30 and frames.source_fps == 30
    # output frame k (time k / 25) shows source frame floor(k * 30 / 25): 5 of every 6 source frames
    assert frames.source.tolist() == [k * 6 // 5 for k in range(25)]
    src, out = source_frames(video), list(iter_frames(video))
    assert len(out) == len(frames.source)
    for k, rgb in enumerate(out):
        assert [i for i, s in enumerate(src) if np.array_equal(s, rgb)] == [frames.source[k]]
    same = map_frames(write_video(tmp_path / "v25.mp4", seconds=0.4, fps=25, audio=None))
    assert same.source.tolist() == list(range(10)) and same.n_source == 10


def test_boxes_from_landmarks_are_those_of_detections(landmark_clip: dict[str, Path]) -> None:
    """analyse_landmarks plans the crops exactly as analyse_video does from the same points (gaps filled alike)."""
    points = np.load(landmark_clip["sidecar"])
    points[2] = np.nan  # a frame without a face
    rows = iter(points)

    def detector(rgb: np.ndarray) -> np.ndarray | None:
        row = next(rows)
        return None if np.isnan(row).any() else row

    detected = analyse_video(landmark_clip["video"], detector=detector, audio=False, max_missing=0.5)
    given = analyse_landmarks(landmark_clip["video"], points, max_missing=0.5)
    assert given.n_frames == detected.n_frames == CLIP_FRAMES
    np.testing.assert_array_equal(given.boxes, detected.boxes)
    np.testing.assert_array_equal(given.landmarks, detected.landmarks)
    np.testing.assert_array_equal(given.missing, detected.missing)
    assert given.missing.tolist() == [False, False, True, False, False]
    with pytest.raises(PreprocessError, match=r"given.npy: no landmarks in 1 of 5 frames \(20% > --max-missing 10%\)"):
        analyse_landmarks(landmark_clip["video"], points, max_missing=0.1, source="given.npy")


@pytest.mark.slow
def test_synthetic_sidecar_through_the_command(landmark_clip: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    assert run_demo(landmark_clip, out, landmark_clip["sidecar"]) == 0
    assert len(list(iter_frames(out))) >= CLIP_FRAMES  # as long as the clip's own speech track
    prepared = prepare_video(landmark_clip["video"], crop_size=128, landmarks=landmark_clip["sidecar"])
    sidecar = np.load(landmark_clip["sidecar"])
    np.testing.assert_array_equal(prepared.landmarks, sidecar)  # 25 fps video: frame k takes row k
    np.testing.assert_array_equal(prepared.boxes, plan_crops(sidecar))
    assert not prepared.missing.any() and prepared.n_frames == CLIP_FRAMES


def test_lms_folder(landmark_clip: dict[str, Path], tmp_path: Path) -> None:
    sidecar = np.load(landmark_clip["sidecar"])
    folder = write_lms_folder(tmp_path / "lms", sidecar)
    prepared = prepare_video(landmark_clip["video"], crop_size=128, landmarks=folder)
    np.testing.assert_allclose(prepared.landmarks, sidecar, atol=1e-3)
    (folder / "3.lms").unlink()
    with pytest.raises(InferenceError, match=r"lms: no \.lms file for frames \[3\]"):
        prepare_video(landmark_clip["video"], landmarks=folder)


def _frame(points: np.ndarray, i: int, value: float) -> np.ndarray:
    points = points.copy()
    points[i] = value
    return points


def _wide(points: np.ndarray, i: int) -> np.ndarray:
    """Frame ``i``'s points spread over 335 x 40 px: mostly inside the 160 x 160 frame, but twice its size."""
    points = points.copy()
    points[i, :, 0] = np.linspace(-5, 330, 68)
    points[i, :, 1] = np.linspace(60, 100, 68)
    return points


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda p: p[:-1], f"landmarks for {CLIP_FRAMES - 1} frames, but synthetic_001.mp4 has {CLIP_FRAMES} frames"),
        (lambda p: p[:, :67], r"landmarks of shape \(5, 67, 2\); expected \(frames, 68, 2\)"),
        (lambda p: p / 160.0, "not normalised coordinates"),
        (
            lambda p: p * 100,
            r"frame 0: landmarks at x 5[\d.]+\.\.1[\d.]+, y 5[\d.]+\.\.1[\d.]+ lie outside the 160x160 "
            r"video .*\(4 more frames like it\); expected pixels of this video, NaN for a frame without a face$",
        ),
        (
            lambda p: p - 1000,
            r"frame 0: landmarks at x -9[\d.]+\.\.-8[\d.]+, y -9[\d.]+\.\.-8[\d.]+ lie outside the 160x160 video",
        ),
        (lambda p: _frame(p, 3, -1000), r"frame 3: landmarks at x -1000\.\.-1000, y -1000\.\.-1000 lie outside"),
        (lambda p: _frame(p, 2, 0), r"frame 2: all 68 landmarks lie within 2 px \(x 0\.\.0, y 0\.\.0\): a placeholder"),
        (lambda p: _wide(p, 4), r"frame 4: landmarks span 335 x 40 px \(x -5\.\.330, y 60\.\.100\), more than 2 times"),
    ],
    ids=["frame-count", "shape", "normalised", "times-100", "minus-1000", "sentinel", "placeholder", "too-large"],
)
def test_bad_landmarks_file(
    landmark_clip: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], change, problem: str
) -> None:
    bad = tmp_path / "bad.npy"
    np.save(bad, change(np.load(landmark_clip["sidecar"])))
    assert run_demo(landmark_clip, tmp_path / "out.mp4", bad) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {bad}: ")
    assert re.search(problem, line), line
    assert not (tmp_path / "out.mp4").exists()


def test_bad_lms_file_and_missing_path(
    landmark_clip: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_lms_folder(tmp_path / "lms", np.load(landmark_clip["sidecar"]))
    (folder / "1.lms").write_text("1 2\n3 4\n")
    assert run_demo(landmark_clip, tmp_path / "out.mp4", folder) == 2
    assert one_error(capsys) == f"error: {folder / '1.lms'}: expected 68 rows 'x y', got shape (2, 2)"
    assert run_demo(landmark_clip, tmp_path / "out.mp4", tmp_path / "nothing.npy") == 2
    assert one_error(capsys) == f"error: {tmp_path / 'nothing.npy'}: landmarks file or folder not found"
    with pytest.raises(SystemExit) as stop:
        demo.main(["--landmarks", str(landmark_clip["sidecar"])])
    assert stop.value.code == 2
    assert one_error(capsys) == "error: --landmarks: needs --video (a generated clip brings its own)"


def test_landmarks_of_a_30_fps_video_follow_its_frames(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v30.mp4", seconds=0.6, fps=30, audio=None)  # 18 frames -> 15 at 25 fps
    base = np.stack([np.linspace(100, 180, 68), np.linspace(90, 200, 68)], axis=1).astype(np.float32)
    points = np.stack([base + [i, 0] for i in range(18)]).astype(np.float32)  # x: base + the source frame index
    np.save(tmp_path / "v30.npy", points)
    prepared = prepare_video(video, crop_size=128, landmarks=tmp_path / "v30.npy")
    assert prepared.n_frames == 15
    assert (prepared.landmarks[:, 0, 0] - 100).tolist() == [k * 6 // 5 for k in range(15)]
    np.testing.assert_array_equal(prepared.landmarks, points[map_frames(video).source])
    np.save(tmp_path / "short.npy", points[:15])  # one per 25 fps frame: not what the file must hold
    with pytest.raises(InferenceError, match=r"short.npy: landmarks for 15 frames, but v30.mp4 has 18 frames at its"):
        prepare_video(video, landmarks=tmp_path / "short.npy")


@pytest.mark.parametrize(("outside", "accepted"), [(0.4, True), (0.7, True), (0.8, False)])
def test_a_face_at_the_border_may_be_partly_outside(
    landmark_clip: dict[str, Path], tmp_path: Path, outside: float, accepted: bool
) -> None:
    """A face leaving the frame on the left: up to 75% of its landmark box outside is a face at the border."""
    points = np.load(landmark_clip["sidecar"])
    lo, hi = points[..., 0].min(axis=1), points[..., 0].max(axis=1)  # per frame
    points[..., 0] -= (lo + outside * (hi - lo))[:, None]  # `outside` of each frame's box left of x = 0
    np.save(tmp_path / "border.npy", points)
    if not accepted:
        with pytest.raises(InferenceError, match=r"border.npy: frame 0: landmarks at x -4.* lie outside the 160x160"):
            prepare_video(landmark_clip["video"], crop_size=128, landmarks=tmp_path / "border.npy")
        return
    prepared = prepare_video(landmark_clip["video"], crop_size=128, landmarks=tmp_path / "border.npy")
    assert not prepared.missing.any()
    np.testing.assert_array_equal(prepared.landmarks, points)
    assert (prepared.boxes[:, 0] < 0).all()  # the crops reach past the left edge (black there)
