"""--face largest|N|x,y: parsing, choice among one frame's boxes, tracking across frames, errors, CLI wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import face_frames

from talkingface.commands.lipsync import build_parser
from talkingface.commands.lipsync import main as lipsync_main
from talkingface.commands.preprocess import build_parser as preprocess_parser
from talkingface.media.errors import PreprocessError
from talkingface.media.extract import analyse_video
from talkingface.media.face_choice import (
    LARGEST,
    MAX_EXTRAPOLATE,
    FaceChoice,
    FaceChoiceError,
    FaceTracker,
    iou,
    order_faces,
    parse_face_choice,
    select_face,
)


def box(cx: float, cy: float = 100, side: int = 80) -> tuple[int, int, int, int]:
    h = side // 2
    return (int(cx - h), int(cy - h), int(cx + h), int(cy + h))


LEFT, MIDDLE, RIGHT = box(100), box(300, side=120), box(500)


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("largest", LARGEST),
        (" Largest ", LARGEST),
        ("0", FaceChoice("index", index=0)),
        ("12", FaceChoice("index", index=12)),
        ("320,240", FaceChoice("point", point=(320.0, 240.0))),
        ("10.5, 7", FaceChoice("point", point=(10.5, 7.0))),
    ],
)
def test_parse(text, expected):
    assert parse_face_choice(text) == expected


@pytest.mark.parametrize("text", ["", "biggest", "-1", "1.5", "3,", ",4", "1,2,3", "-3,4", "a,b"])
def test_parse_rejects(text):
    with pytest.raises(ValueError, match="expected 'largest', a face number N"):
        parse_face_choice(text)


def test_str_round_trips():
    for text in ("largest", "2", "320,240", "10.5,7"):
        assert str(parse_face_choice(text)) == text


# ------------------------------------------------------------------ one frame
def test_order_is_left_to_right_by_centre_then_top_to_bottom():
    top, bottom = box(200, cy=50), box(200, cy=300)
    assert order_faces([RIGHT, bottom, LEFT, top]) == [LEFT, top, bottom, RIGHT]


def test_select_largest_index_and_point():
    boxes = [RIGHT, LEFT, MIDDLE]
    assert select_face(boxes, LARGEST) == MIDDLE
    assert [select_face(boxes, FaceChoice("index", index=i)) for i in range(3)] == [LEFT, MIDDLE, RIGHT]
    assert select_face(boxes, parse_face_choice("510,90")) == RIGHT
    assert select_face(boxes, parse_face_choice("60,60")) == LEFT  # on the box's edge


def test_point_inside_two_boxes_takes_the_nearest_centre():
    big, small = box(200, side=300), box(260, side=60)
    assert select_face([big, small], parse_face_choice("255,100")) == small
    assert select_face([big, small], parse_face_choice("120,100")) == big


def test_index_past_the_faces_found_is_an_error_naming_the_option():
    with pytest.raises(FaceChoiceError, match=r"^--face 3: only 2 face\(s\) in frame 4, .*0: \(60, 60\)-\(140, 140\)"):
        select_face([RIGHT, LEFT], FaceChoice("index", index=3), frame=4)


def test_point_on_no_face_is_an_error_naming_the_option():
    with pytest.raises(FaceChoiceError, match=r"^--face 300,400: no face box contains that pixel in frame 0"):
        select_face([LEFT, RIGHT], parse_face_choice("300,400"))


def test_iou():
    assert iou(LEFT, LEFT) == 1.0
    assert iou(LEFT, RIGHT) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


# ------------------------------------------------------------------ tracking
def track(choice: FaceChoice, frames: list[list[tuple[int, int, int, int]]]) -> list:
    tracker = FaceTracker(choice)
    return [tracker.update(boxes) for boxes in frames]


def test_largest_is_per_frame_and_untracked():
    frames = [[LEFT, MIDDLE], [], [box(100, side=200), MIDDLE]]
    assert track(LARGEST, frames) == [MIDDLE, None, box(100, side=200)]


def test_choice_waits_for_the_first_frame_with_faces_then_tracks():
    frames = [[], [LEFT, RIGHT], [box(505), box(105)], [box(110), box(510)]]
    assert track(parse_face_choice("1"), frames) == [None, RIGHT, box(505), box(510)]
    # the point is looked up in the first frame with a face (frame 1), not later ones
    assert track(parse_face_choice("100,100"), frames) == [None, LEFT, box(105), box(110)]


def test_tracks_a_face_that_becomes_smaller_than_the_other():
    """largest would jump to the other face; the tracked choice stays on its face."""
    frames = [[box(100, side=120), box(400, side=80)], [box(100, side=70), box(400, side=130)]]
    assert track(LARGEST, frames)[1] == box(400, side=130)
    assert track(parse_face_choice("0"), frames) == [box(100, side=120), box(100, side=70)]


def crossing(n: int = 21, speed: int = 20) -> tuple[list, list]:
    """Face A walks right from x=100, face B left from x=500: they pass each other at x=300 (frame 10)."""
    a = [box(100 + speed * t, cy=100 + t) for t in range(n)]
    b = [box(500 - speed * t, cy=100 - t) for t in range(n)]
    return a, b


@pytest.mark.parametrize("order", ["ab", "ba"])
def test_faces_that_cross_are_not_swapped(order):
    a, b = crossing()
    frames = [[fa, fb] if order == "ab" else [fb, fa] for fa, fb in zip(a, b)]
    assert track(parse_face_choice("0"), frames) == a  # leftmost in frame 0: A, even once it is on the right
    assert track(parse_face_choice("1"), frames) == b
    assert track(parse_face_choice("500,100"), frames) == b


def test_crossing_with_the_chosen_face_hidden_at_the_crossing():
    """A is not detected in frames 8-9 as B comes near: it is lost rather than swapped for B, then found again
    (its expected box moves on at its last speed). Hidden exactly where B passes, it could be swapped."""
    a, b = crossing()
    frames = [[b[t]] if t in (8, 9) else [a[t], b[t]] for t in range(len(a))]
    got = track(parse_face_choice("0"), frames)
    assert got[:8] == a[:8]
    assert got[8:10] == [None, None]
    assert got[10:] == a[10:]


def test_a_face_that_disappears_is_lost_not_replaced():
    frames = [[LEFT, RIGHT], [RIGHT], [RIGHT], [LEFT, RIGHT]]
    assert track(parse_face_choice("0"), frames) == [LEFT, None, None, LEFT]


def test_a_face_hidden_while_moving_is_taken_back():
    """It moved right 12 px a frame, stopped while hidden for 6 frames: its expected box moves on for
    MAX_EXTRAPOLATE frames only, and its last box takes it back (before: lost for good, the expected box drifting
    ever further right)."""
    seen = [box(100 + 12 * t, side=100) for t in range(6)]
    frames = [[b] for b in seen] + [[]] * 6 + [[seen[-1]]] * 5
    assert track(parse_face_choice("0"), frames) == seen + [None] * 6 + [seen[-1]] * 5


def test_a_face_that_moved_while_hidden_is_taken_back_not_its_neighbour():
    """A (chosen) is hidden for 8 frames and comes back 70 px (0.7 face widths) from where it was last seen: too far
    for IoU, near enough for the re-acquisition; B, always visible 3 widths away, is never taken."""
    a, b = box(100, side=100), box(400, side=100)
    back = box(170, cy=110, side=110)
    frames = [[a, b]] * 3 + [[b]] * 8 + [[back, b]] * 3
    assert track(parse_face_choice("0"), frames) == [a] * 3 + [None] * 8 + [back] * 3


@pytest.mark.parametrize(
    "stranger",
    [box(400, side=100), box(100, side=30), box(100, side=300)],
    ids=["far", "much-smaller", "much-larger"],
)
def test_a_lost_face_is_not_replaced_by_a_face_elsewhere_or_of_another_size(stranger):
    frames = [[box(100, side=100)]] * 2 + [[]] * 3 + [[stranger]] * 3
    assert track(parse_face_choice("0"), frames)[2:] == [None] * 6


def test_a_lost_face_is_not_replaced_by_the_neighbour_that_was_nearer():
    """B was 1.2 widths from A; A hidden, B steps 30 px towards A's spot: still nearer B's own last place."""
    a, b = box(100, side=100), box(220, side=100)
    frames = [[a, b]] * 2 + [[box(190, side=100)]] * 4
    assert track(parse_face_choice("0"), frames) == [a] * 2 + [None] * 4


def test_the_expected_box_moves_on_for_a_few_frames_only():
    tracker = FaceTracker(parse_face_choice("0"))
    for t in range(3):
        tracker.update([box(100 + 10 * t, side=100)])
    assert tracker.expected() == box(130, side=100)  # one frame on at 10 px a frame
    for _ in range(20):
        assert tracker.update([]) is None
    assert tracker.lost and tracker.expected() == box(120 + 10 * MAX_EXTRAPOLATE, side=100)


def test_tracking_error_reports_the_first_frame_with_a_face():
    tracker = FaceTracker(parse_face_choice("2"))
    assert tracker.update([]) is None
    with pytest.raises(FaceChoiceError, match=r"^--face 2: only 1 face\(s\) in frame 1, the first with a face"):
        tracker.update([LEFT])


# ------------------------------------------------------------------ wiring
def test_lipsync_parser_default_and_values():
    args = build_parser().parse_args(["--video", "v.mp4", "--out", "o.mp4"])
    assert args.face == LARGEST
    args = build_parser().parse_args(["--video", "v.mp4", "--out", "o.mp4", "--face", "320,240"])
    assert args.face == FaceChoice("point", point=(320.0, 240.0))


def test_preprocess_parser_takes_face():
    args = preprocess_parser().parse_args(["run", "in", "--out", "o", "--face", "1"])
    assert args.face == FaceChoice("index", index=1)
    assert preprocess_parser().parse_args(["run", "in", "--out", "o"]).face == LARGEST


def test_bad_face_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--video", "v.mp4", "--out", "o.mp4", "--face", "left"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --face: expected 'largest', a face number N")


def test_face_with_landmarks_file_is_refused(capsys):
    with pytest.raises(SystemExit):
        lipsync_main(["--video", "v.mp4", "--out", "o.mp4", "--landmarks", "l.npy", "--face", "1"])
    assert capsys.readouterr().err.strip() == (
        "error: --face: not used with --landmarks (the file already gives one face)"
    )


class ScriptedDetector:
    """Boxes per frame from a script; landmarks: the box's two corners (enough to see which face was followed)."""

    def __init__(self, frames: list[list[tuple[int, int, int, int]]]) -> None:
        self.frames = frames
        self.i = 0

    def detect_boxes(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        boxes = self.frames[self.i]
        self.i += 1
        return boxes

    def landmarks_in_box(self, rgb: np.ndarray, b: tuple[int, int, int, int]) -> np.ndarray:
        pts = np.zeros((68, 2), dtype=np.float32)
        pts[:34] = (b[0], b[1])
        pts[34:] = (b[2], b[3])
        return pts


def two_face_clip(path: Path, n: int = 10) -> Path:
    """The astronaut's face twice, side by side (the right one mirrored): 576 x 288, 25 fps, no audio."""
    import av

    frames = face_frames(n / 25, 25)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 2 * frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for rgb in frames:
            two = np.ascontiguousarray(np.concatenate([rgb, rgb[:, ::-1]], axis=1))
            for packet in stream.encode(av.VideoFrame.from_ndarray(two, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_analyse_video_follows_the_chosen_face_and_fills_lost_frames(tmp_path: Path) -> None:
    video = two_face_clip(tmp_path / "two.mp4", n=5)
    a, b = crossing(n=5, speed=40)
    script = [[a[0], b[0]], [b[1], a[1]], [b[2]], [a[3], b[3]], [a[4], b[4]]]  # A hidden in frame 2
    analysis = analyse_video(video, detector=ScriptedDetector(script), audio=False, face=parse_face_choice("0"))
    assert analysis.missing.tolist() == [False, False, True, False, False]
    for t in (0, 1, 3, 4):
        np.testing.assert_array_equal(analysis.landmarks[t, 0], a[t][:2])
    assert any("--face 0: face not found or lost in 1 of 5 frames" in w for w in analysis.warnings)
    with pytest.raises(PreprocessError, match=r"--face 0: face not found or lost in 1 of 5 frames \(20% > --max-m"):
        analyse_video(
            video, detector=ScriptedDetector(script), audio=False, face=parse_face_choice("0"), max_missing=0.1
        )


def test_analyse_video_names_the_video_and_the_option_when_the_face_is_not_there(tmp_path: Path) -> None:
    video = two_face_clip(tmp_path / "two.mp4", n=2)
    with pytest.raises(PreprocessError, match=r"two.mp4: --face 2: only 2 face\(s\) in frame 0"):
        analyse_video(video, detector=ScriptedDetector([[LEFT, RIGHT]] * 2), audio=False, face=parse_face_choice("2"))


@pytest.mark.slow
def test_two_face_clip_with_dlib(tmp_path: Path) -> None:
    """Real detections: 0 / x,y keep to the left or right face in every frame; largest flips between them."""
    from talkingface.media.landmarks import LandmarkDetector

    video = two_face_clip(tmp_path / "two.mp4")
    detector = LandmarkDetector()
    middle = 288
    for face, right in (("0", False), ("1", True), ("400,100", True), ("150,100", False)):
        xs = analyse_video(video, detector=detector, audio=False, face=parse_face_choice(face)).landmarks[..., 0]
        assert (xs.min() > middle) if right else (xs.max() < middle), face
    largest = analyse_video(video, detector=detector, audio=False).landmarks[..., 0].mean(axis=1)
    assert (largest < middle).any() and (largest > middle).any()  # why the other choices are tracked
    with pytest.raises(PreprocessError, match=r"two.mp4: --face 300,250: no face box contains that pixel in frame 0"):
        analyse_video(video, detector=detector, audio=False, face=parse_face_choice("300,250"))
