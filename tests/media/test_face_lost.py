"""A face that is lost for a while: ``--face N`` takes it back when it reappears (real dlib on a clip of the
astronaut's face covered for a few frames), and the lip-sync pastes a mouth only at boxes a detection supports:
frames without a face keep their source image, except a detector's brief miss between two sightings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import face_at, write_video, write_wav

from talkingface.inference import LipSyncOptions, LipSyncPipeline, prepare_video
from talkingface.inference.pipeline import paste_frame
from talkingface.media.crop import MAX_BRIDGED_GAP, supported_frames
from talkingface.media.errors import PreprocessError
from talkingface.media.extract import analyse_video
from talkingface.media.face_choice import parse_face_choice
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel
from talkingface.synthetic.generate import clip_rng, render_clip, sidecar_path, write_clip_video

#: The clip: the face moves right 12 px a frame (frames 0-5), is covered by a grey card (6-11), and shows again
#: 30 px back from where it was last seen (12-15).
MOVING, HIDDEN, BACK = 6, 6, 4
FACE_DX = [-60 + 12 * t for t in range(MOVING)] + [0] * HIDDEN + [-30] * BACK
WIDTH, HEIGHT, FACE_PX = 320, 240, 100


def test_supported_frames() -> None:
    missing = np.array([1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
    assert MAX_BRIDGED_GAP == 3
    # frame 0: before the first face; 2 and 4-6: brief misses; 8-11: a longer gap; 13: after the last face
    expected = [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    assert supported_frames(missing).astype(int).tolist() == expected
    assert supported_frames(missing, max_gap=0).tolist() == (~missing).tolist()
    assert not supported_frames(np.ones(4, dtype=bool)).any()


@pytest.fixture(scope="module")
def covered_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = face_at(FACE_PX, WIDTH, HEIGHT, [(dx, 0) for dx in FACE_DX])
    for t in range(MOVING, MOVING + HIDDEN):
        x = WIDTH // 2 + FACE_DX[t]
        frames[t, 40:200, x - 70 : x + 70] = 128
    return write_video(tmp_path_factory.mktemp("covered") / "covered.mp4", fps=25, frames=frames, audio=None)


def test_the_chosen_face_is_taken_back_after_it_was_covered(covered_clip: Path) -> None:
    """dlib finds the face again in frame 12; the tracker takes it back there (before, its expected box had moved
    on 12 px a frame for 6 frames and it stayed lost, the rest filled with frame 5's landmarks: 30 px off)."""
    analysis = analyse_video(covered_clip, audio=False, face=parse_face_choice("0"), max_missing=0.5)
    assert analysis.missing.tolist() == [False] * MOVING + [True] * HIDDEN + [False] * BACK
    centre_x = analysis.landmarks[..., 0].mean(axis=1)  # the landmarks' mean x follows the face
    for t in (*range(MOVING), *range(MOVING + HIDDEN, len(FACE_DX))):
        assert abs(centre_x[t] - centre_x[0] - (FACE_DX[t] - FACE_DX[0])) < 6, (t, centre_x.round(1).tolist())
    with pytest.raises(PreprocessError, match=r"--face 0: face not found or lost in 6 of 16 frames \(38% > --max-m"):
        analyse_video(covered_clip, audio=False, face=parse_face_choice("0"))  # --max-missing keeps its meaning


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.abs(a.astype(int) - b.astype(int)).max() > 2)


@pytest.mark.slow
def test_covered_frames_keep_their_source_image(covered_clip: Path, tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    """Through the pipeline with real dlib: the covered frames are the source frames exactly (no mouth pasted on
    the card at a box no detection supports); the frames with the face are lip-synced. Speech for the first 8
    frames (6 with the face, 2 covered): the first stage takes about a second a frame on CPU."""
    face = parse_face_choice("0")
    options = LipSyncOptions(sampler="ddim", steps=1, batch_size=8, crop_size=128, max_missing=0.5, face=face)
    pipe = LipSyncPipeline(tiny_model, audio_features="mel", options=options)
    video = pipe.prepare_video(covered_clip)
    assert video.pasted.tolist() == [True] * MOVING + [False] * HIDDEN + [True] * BACK
    speech = pipe.prepare_speech(write_wav(tmp_path / "speech.wav", seconds=(MOVING + 2) / 25))
    out = list(pipe.generate(video, speech))
    assert len(out) == MOVING + 2
    for t, frame in enumerate(out):
        if video.pasted[t]:
            assert differs(frame, video.frames[t]), t
        else:
            np.testing.assert_array_equal(frame, video.frames[t])


@pytest.fixture(scope="module")
def synthetic_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    d = tmp_path_factory.mktemp("gaps")
    video = write_clip_video(render_clip(clip_rng(0, 1), 10 / 25), d / "synthetic_001.mp4")
    return video, np.load(sidecar_path(video))


def test_only_frames_a_detection_supports_are_pasted(
    synthetic_clip: tuple[Path, np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Landmarks given for frames 1-2, 4 and 9 (NaN: no face): frame 3 is a brief miss between two sightings (its box
    is interpolated and pasted); frame 0 (before the first face) and 5-8 (a gap of 4) keep their source image, though
    --max-missing lets the video through. The paste step of the pipeline and the stream, with a white "face"."""
    video, points = synthetic_clip
    points = points.copy()
    points[[0, 3, 5, 6, 7, 8]] = np.nan
    np.save(tmp_path / "gaps.npy", points)
    prepared = prepare_video(video, crop_size=128, landmarks=tmp_path / "gaps.npy", max_missing=0.7)
    assert any("gaps.npy: 5 frames keep their source image" in r.getMessage() for r in caplog.records)
    pasted = [False, True, True, True, True, False, False, False, False, True]
    assert prepared.pasted.tolist() == pasted
    white, alpha = np.full((64, 64, 3), 255, np.uint8), np.ones((128, 128), np.float32)
    for t in range(prepared.n_frames):
        frame = paste_frame(prepared, t, white, alpha)
        if pasted[t]:
            assert differs(frame, prepared.frames[t]), t
        else:
            np.testing.assert_array_equal(frame, prepared.frames[t])
