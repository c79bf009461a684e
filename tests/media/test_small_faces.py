"""Small faces: dlib's HOG detector (for real, no mocks) misses faces under about 55 px at the default pass; the
per-video face search finds them down to 40 px on upsampled frames, says so once, and the crops of small faces
come with a warning naming the face and the upscale.

The clips show skimage's astronaut photo scaled so that dlib's face box is 40-100 px wide (in this photo dlib's
default pass finds the face from about 55 px: 60 and 100 px are found without the retry, 40 and 50 px need it)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (
    PHOTO_FACE_BOX,
    face_frames,
    face_free_frames,
    on_canvas,
    small_face_frames,
    write_video,
    write_wav,
)

from talkingface.commands import main as cli
from talkingface.media import face_search as fs
from talkingface.media.crop import SOFT_UPSCALE, upscale_warning
from talkingface.media.decode import iter_frames
from talkingface.media.extract import analyse_video
from talkingface.media.face_choice import FaceTracker, parse_face_choice
from talkingface.media.face_search import FaceSearch
from talkingface.media.landmarks import LandmarkDetector, shared_detector

SEARCH_LOG = "talkingface.media.face_search"


@pytest.fixture(scope="module")
def detector() -> LandmarkDetector:
    return shared_detector()


def clip(tmp_path: Path, face_px: float, width: int, height: int, n: int = 4, audio: str | None = None) -> Path:
    """An h264 clip (25 fps) of the astronaut with a ``face_px`` face in ``width x height`` frames."""
    frames = small_face_frames(face_px, width, height, n)
    return write_video(tmp_path / f"face{face_px}_{width}x{height}.mp4", fps=25, frames=frames, audio=audio)


def decoded(path: Path) -> list[np.ndarray]:
    return list(iter_frames(path))


class Counting:
    """Counts the detector's passes (the detection itself is dlib's)."""

    def __init__(self, detector: LandmarkDetector, monkeypatch: pytest.MonkeyPatch) -> None:
        self.default = 0
        self.scaled: list[tuple[float, tuple[int, int, int, int] | None]] = []
        default, scaled = detector.detect_boxes, detector.detect_boxes_scaled

        def count_default(rgb):
            self.default += 1
            return default(rgb)

        def count_scaled(rgb, scale, region=None, min_score=0.0):
            self.scaled.append((scale, region))
            return scaled(rgb, scale, region, min_score)

        monkeypatch.setattr(detector, "detect_boxes", count_default)
        monkeypatch.setattr(detector, "detect_boxes_scaled", count_scaled)

    @property
    def full(self) -> int:
        return sum(region is None for _, region in self.scaled)


def search_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SEARCH_LOG]


@pytest.mark.parametrize(
    "face_px,width,height,found",
    [(100, 176, 144, True), (100, 640, 360, True), (60, 176, 144, True), (50, 176, 144, False), (40, 176, 144, False)],
)
def test_the_default_pass_alone_misses_small_faces(
    detector: LandmarkDetector, tmp_path: Path, face_px: int, width: int, height: int, found: bool
) -> None:
    """Why the retry exists: at the default pass dlib finds 60 and 100 px faces, never 40 or 50 px ones."""
    for rgb in decoded(clip(tmp_path, face_px, width, height)):
        boxes = detector.detect_boxes(rgb)
        assert bool(boxes) == found
        if found:
            assert abs((boxes[0][2] - boxes[0][0]) - face_px) < 0.3 * face_px


@pytest.mark.parametrize("face_px,width,height", [(40, 176, 144), (50, 176, 144), (40, 640, 360)])
def test_the_search_finds_small_faces_upsampled_and_says_so_once(
    detector: LandmarkDetector,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    face_px: int,
    width: int,
    height: int,
) -> None:
    video = clip(tmp_path, face_px, width, height, n=6)
    search = FaceSearch(detector, video.name)
    caplog.set_level(logging.INFO, logger=SEARCH_LOG)
    for rgb in decoded(video):
        boxes = search.detect_boxes(rgb)
        assert len(boxes) == 1
        left, top, right, bottom = boxes[0]
        assert abs((right - left) - face_px) < 0.3 * face_px
        assert abs((left + right) / 2 - width / 2) < 0.3 * face_px and abs((top + bottom) / 2 - height / 2) < face_px
    assert search.retried == 6 and search.small
    lines = search_records(caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{video.name}: frame 0 has no face at the default scale ({width}x{height});")
    assert f"searched again at 2x the frame size (whole frame, {2 * width}x{2 * height} px)" in lines[0]
    assert "searched upsampled (faces down to about 40 px)" in lines[0]


def test_large_faces_never_take_the_retry(
    detector: LandmarkDetector, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = clip(tmp_path, 100, 640, 360)
    counts = Counting(detector, monkeypatch)
    search = FaceSearch(detector, video.name)
    caplog.set_level(logging.INFO, logger=SEARCH_LOG)
    assert all(search.detect_boxes(rgb) for rgb in decoded(video))
    assert counts.default == 4 and counts.scaled == [] and search.retried == 0
    assert search_records(caplog) == []


def test_once_small_the_search_skips_the_default_pass_and_looks_around_the_face(
    detector: LandmarkDetector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-video memory: one default pass and one full retry (frame 0); then only the region around the face."""
    video = clip(tmp_path, 40, 640, 360, n=5)
    counts = Counting(detector, monkeypatch)
    search = FaceSearch(detector, video.name)
    assert all(search.detect_boxes(rgb) for rgb in decoded(video))
    assert counts.default == 1 and counts.full == 1
    regions = [region for _, region in counts.scaled if region is not None]
    assert len(regions) == 4
    for x0, y0, x1, y1 in regions:  # about 3 face widths, around the centre of the frame
        assert x1 - x0 < 200 and y1 - y0 < 200 and x0 < 320 < x1 and y0 < 180 < y1


def test_frames_without_faces_back_off_the_full_retry(
    detector: LandmarkDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A face-free stretch costs the default pass on every frame and few full retries; no false faces."""
    background = on_canvas(face_frames(30 / 25, 25, face=False), 176, 144)
    counts = Counting(detector, monkeypatch)
    search = FaceSearch(detector, "flag")
    assert not any(search.detect_boxes(rgb) for rgb in background)
    assert counts.default == 30
    # frames 0 and 1, then one RETRY_EVERY frames later (frame 14); the next would wait twice as long (frame 39)
    assert (fs.FREE_RETRIES, fs.RETRY_EVERY) == (2, 12) and counts.full == 3


def test_a_large_face_missed_for_a_moment_is_not_searched_upsampled(
    detector: LandmarkDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upsampling cannot bring back a large face (turned or covered): no retry for RECENT_FRAMES, then the usual."""
    face = small_face_frames(150, 640, 360, 5)
    gone = face_free_frames(640, 360, 30)
    counts = Counting(detector, monkeypatch)
    search = FaceSearch(detector, "turned")
    found = [bool(search.detect_boxes(rgb)) for rgb in np.concatenate([face, gone])]
    assert found == [True] * 5 + [False] * 30
    # none in the RECENT_FRAMES after frame 4, then two (frames 31 and 32) before the back-off
    assert fs.RECENT_FRAMES == 25 and counts.full == 2 and len(counts.scaled) == 2


def test_a_lost_small_face_hands_back_to_the_default_pass(detector: LandmarkDetector) -> None:
    """Small face, then a cut to a face-free shot, then a close-up: each found by the cheapest pass that can."""
    small = small_face_frames(40, 176, 144, 3)
    empty = on_canvas(face_frames(3 / 25, 25, face=False), 176, 144)
    close = small_face_frames(100, 176, 144, 3)
    search = FaceSearch(detector, "cuts")
    found = [bool(search.detect_boxes(rgb)) for rgb in np.concatenate([small, empty, close])]
    assert found == [True] * 3 + [False] * 3 + [True] * 3
    assert search.retried == 3 and not search.small


def test_a_small_face_hidden_while_another_stays_is_searched_where_it_was(detector: LandmarkDetector) -> None:
    """Two 40 px faces; the right one is covered in frames 3-6. The search around the known faces keeps looking
    where it was (before, it looked only around the face still in view and never found it again)."""
    half = small_face_frames(40, 176, 144, 10, motion=0)
    frames = np.ascontiguousarray(np.concatenate([half, half[:, :, ::-1]], axis=2))
    frames[3:7, 30:110, 216:312] = 128  # a grey card over the right face
    search = FaceSearch(detector, "two")
    tracker = FaceTracker(parse_face_choice("1"))
    found = [search.detect_boxes(rgb) for rgb in frames]
    assert [len(boxes) for boxes in found] == [2] * 3 + [1] * 4 + [2] * 3
    assert search.small and search.retried == 10
    followed = [tracker.update(boxes) for boxes in found]
    assert followed[3:7] == [None] * 4
    for box in followed[:3] + followed[7:]:
        assert box is not None and abs((box[0] + box[2]) / 2 - (352 - 88)) < 10  # the right face (mirrored)


def test_the_cap_on_the_upsampled_image(detector: LandmarkDetector) -> None:
    search = FaceSearch(detector)
    assert search.retry_scale(176, 144) == search.retry_scale(1920, 1080) == 2.0
    assert search.smallest_face_px(1920, 1080) == 40
    assert search.retry_scale(3840, 2160) == pytest.approx(1.0)  # a 4K frame is not upsampled past the cap
    assert search.smallest_face_px(3840, 2160) == pytest.approx(80)


def test_landmarks_of_a_small_face_are_subpixel_and_close_to_the_full_photo(detector: LandmarkDetector) -> None:
    """On small boxes the predictor runs on an upscaled patch: sub-pixel points, near the full-resolution ones."""
    import skimage.data

    photo = skimage.data.astronaut()
    truth = detector.landmarks_in_box(photo, PHOTO_FACE_BOX)
    face_px = 40
    frame = small_face_frames(face_px, 176, 144, 1, motion=0)[0]
    found = FaceSearch(detector)(frame)
    assert found is not None
    assert not np.allclose(found, np.round(found))  # dlib alone gives whole pixels
    s = face_px / (PHOTO_FACE_BOX[2] - PHOTO_FACE_BOX[0])
    scaled = (truth + 0.5) * s - 0.5
    offset = np.median(found - scaled, axis=0)  # the frame's own origin
    assert np.abs(found - scaled - offset).mean() < 0.6


def test_upscale_warning_names_the_face_and_the_crop() -> None:
    lms = np.zeros((5, 68, 2), dtype=np.float32)
    lms[:, :, 0] = np.linspace(100, 145, 68)  # 45 px wide
    boxes = np.tile(np.array([80, 60, 81], dtype=np.int32), (5, 1))
    message = upscale_warning("clip.mp4", lms, boxes, 256)
    assert message is not None and message.startswith(
        "clip.mp4: face is 45 px wide; its 256-px crop is upscaled 3.2x from 81 px of the video, so the result will "
        "be soft"
    )
    assert upscale_warning("clip.mp4", lms, boxes, int(81 * SOFT_UPSCALE)) is None


def test_analyse_video_warns_once_about_soft_crops(tmp_path: Path) -> None:
    small = analyse_video(clip(tmp_path, 45, 176, 144), audio=False, image_size=256)
    soft = [w for w in small.warnings if "so the result will be soft" in w]
    assert len(soft) == 1
    face, size, factor, side = re.search(
        r"face is (\d+) px wide; its (\d+)-px crop is upscaled ([\d.]+)x from (\d+)", soft[0]
    ).groups()
    assert 40 <= int(face) <= 55 and size == "256" and float(factor) == pytest.approx(256 / int(side), abs=0.06)
    large = analyse_video(clip(tmp_path, 100, 640, 360), audio=False, image_size=256)
    assert not any("soft" in w for w in large.warnings)


def test_lipsync_preparation_takes_a_small_face_clip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What `talkingface lipsync` runs on its video: no 'no face found' error, one retry line, one soft warning."""
    from talkingface.inference.video import prepare_video

    video = clip(tmp_path, 45, 176, 144, n=8)
    caplog.set_level(logging.INFO)
    prepared = prepare_video(video, crop_size=256)
    assert prepared.n_frames == 8 and not prepared.missing.any()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("searched again at 2x" in m for m in messages) == 1
    assert sum("crop is upscaled" in m and "face is" in m for m in messages) == 1
    crop, lms = prepared.crop(0)
    assert crop.shape == (256, 256, 3) and lms.min() > 0 and lms.max() < 256


def test_preprocess_run_takes_a_small_face_clip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`talkingface preprocess run` on a 176 x 144 clip with a 45 px face: done, every frame written."""
    video = clip(tmp_path, 45, 176, 144, n=40, audio="tones")
    root = tmp_path / "data" / "HDTF"
    caplog.set_level(logging.INFO)
    assert cli.main(["preprocess", "run", str(video), "--out", str(root), "--size", "256", "--no-progress"]) == 0
    assert (root / "data.txt").read_text() == "1 40\n"
    assert len(list((root / "images").glob("1_*.jpg"))) == 40
    messages = [r.getMessage() for r in caplog.records]
    assert sum("searched again at 2x" in m for m in messages) == 1
    assert any("its 256-px crop is upscaled" in m for m in messages)


def test_a_40_px_face_in_a_1080p_clip(detector: LandmarkDetector, tmp_path: Path) -> None:
    """The default pass scans 1080p frames at 640 x 360 (faces from about 170 px); the retry at 3840 x 2160 finds
    a 40 px face, and the region around it keeps later frames cheap."""
    video = clip(tmp_path, 40, 1920, 1080, n=3)
    frames = decoded(video)
    assert not detector.detect_boxes(frames[0])
    search = FaceSearch(detector, video.name)
    for rgb in frames:
        boxes = search.detect_boxes(rgb)
        assert len(boxes) == 1 and abs((boxes[0][2] - boxes[0][0]) - 40) < 12
        assert abs((boxes[0][0] + boxes[0][2]) / 2 - 960) < 20


@pytest.mark.slow
def test_lipsync_command_on_a_small_face_clip(tiny_ckpt: Path, tmp_path: Path) -> None:
    from golden import TINY_CONFIG

    video = clip(tmp_path, 45, 176, 144, n=3)
    speech = write_wav(tmp_path / "speech.wav", seconds=3 / 25)
    out = tmp_path / "out.mp4"
    fast = ["--steps", "2", "--crop-size", "128", "--batch-size", "3", "--no-progress", "--config", str(TINY_CONFIG)]
    argv = ["lipsync", "--video", str(video), "--audio", str(speech), "--out", str(out), "--ckpt", str(tiny_ckpt)]
    assert cli.main([*argv, *fast]) == 0
    assert len(decoded(out)) == 3
