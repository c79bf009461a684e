"""The evaluation harness end to end: inputs (frame directories, mp4), alignment, reports, plot, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from talkingface.commands.evaluate import main
from talkingface.evaluate import EvalOptions, EvaluationError, MissingWeightsError, evaluate, evaluate_frames
from talkingface.evaluate.media import load_frames, natural_key
from talkingface.evaluate.plot import Panel, Series, draw_chart, nice_ticks
from talkingface.evaluate.report import jsonable

SIZE = 64


def _frames(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB frames (n, SIZE, SIZE, 3)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return np.stack([cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC) for f in small])


def _landmarks(n: int, open_px: np.ndarray | None = None) -> np.ndarray:
    """(n, 68, 2) landmarks inside a SIZE frame; inner-lip gap ``open_px`` per frame."""
    rng = np.random.default_rng(7)
    base = rng.uniform(12, 52, size=(68, 2))
    base[36], base[45] = (20, 24), (44, 24)
    base[48:68] = rng.uniform((24, 38), (40, 50), size=(20, 2))
    lms = np.repeat(base[None], n, axis=0)
    if open_px is not None:
        lms[:, [62, 66], 0] = 32
        lms[:, 62, 1] = 42
        lms[:, 66, 1] = 42 + open_px
    return lms


def _write_dir(path: Path, frames: np.ndarray, pattern: str = "{}.png") -> Path:
    path.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(path / pattern.format(i)), f[..., ::-1])
    return path


def _write_mp4(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)  # lossless RGB: decoded frames equal the input
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_natural_sort_of_frame_directory(tmp_path: Path) -> None:
    frames = _frames(12)
    _write_dir(tmp_path / "d", frames, "frame{}.png")
    assert sorted(["f10", "f2", "f1"], key=natural_key) == ["f1", "f2", "f10"]
    seq = load_frames(tmp_path / "d")
    assert len(seq) == 12 and np.array_equal(seq.frames[10], frames[10])


def test_video_and_directory_inputs_agree(tmp_path: Path) -> None:
    frames = _frames(6)
    video = _write_mp4(tmp_path / "gt.mp4", frames)
    seq = load_frames(video)
    assert len(seq) == 6 and seq.fps == pytest.approx(25)
    assert np.abs(seq.frames[3].astype(int) - frames[3]).max() <= 1
    lms = _landmarks(6)
    opts = EvalOptions(pred_landmarks=lms, gt_landmarks=lms)
    result = evaluate(_write_dir(tmp_path / "pred", frames), video, opts)
    assert result.aggregate["psnr"]["min"] > 45 and result.aggregate["lmd"]["mean"] == 0.0


def test_identical_inputs_and_strict_json(tmp_path: Path) -> None:
    frames = _frames(5)
    d = _write_dir(tmp_path / "gt", frames)
    np.save(tmp_path / "lms.npy", _landmarks(5))
    out = tmp_path / "out" / "report.json"
    argv = [
        "--pred",
        str(d),
        "--gt",
        str(d),
        "--gt-landmarks",
        str(tmp_path / "lms.npy"),
        "--pred-landmarks",
        str(tmp_path / "lms.npy"),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    report = json.loads(text)
    assert report["summary"]["psnr"] == "inf" and report["summary"]["ssim"] == pytest.approx(1.0)
    assert report["summary"]["lmd"] == 0.0 and len(report["per_frame"]["psnr"]) == 5
    assert "| PSNR (face) | ∞ dB |" in out.with_suffix(".md").read_text()
    png = cv2.imread(str(out.with_suffix(".png")))
    assert png is not None and png.shape[1] == 960


def test_known_shift_lmd_and_alignment_notes(tmp_path: Path) -> None:
    gt_frames = _frames(8, seed=1)
    pred_frames = np.stack([cv2.resize(f, (SIZE * 2, SIZE * 2)) for f in _frames(10, seed=2)])
    gt_lms = _landmarks(8, open_px=np.linspace(0, 7, 8))
    pred_lms = _landmarks(10)
    pred_lms[:, 48:68] = gt_lms[:1, 48:68]
    pred_lms[:8, 48:68] = gt_lms[:, 48:68] + (3.0, 4.0)  # 5 px on every mouth point
    pred_lms[2] = np.nan  # "no face found" in frame 2
    result = evaluate(
        _write_dir(tmp_path / "pred", pred_frames),
        _write_dir(tmp_path / "gt", gt_frames),
        EvalOptions(pred_landmarks=pred_lms, gt_landmarks=gt_lms, crop="full"),
    )
    assert result.frames == 8 and result.size == (SIZE, SIZE)
    assert any("frame counts differ" in n for n in result.notes)
    assert any("resized from 128x128 to gt's 64x64" in n for n in result.notes)
    assert any("no predicted face in 1 of 8" in n for n in result.notes)
    assert result.aggregate["lmd"]["mean"] == pytest.approx(5.0) and result.aggregate["lmd"]["count"] == 7
    assert result.aggregate["lmd_norm"]["mean"] == pytest.approx(5.0 / 24.0)
    assert result.per_frame["mouth_open_gt"][-1] == pytest.approx(7.0 / 24.0)
    assert math.isnan(result.per_frame["mouth_open_pred"][2])


def test_face_crop_ignores_background(tmp_path: Path) -> None:
    gt = _frames(3)
    pred = gt.copy()
    pred[:, :, :4] = 255 - pred[:, :, :4]  # background strip left of the landmarks' box
    lms = _landmarks(3)
    face = evaluate_frames(list(pred), list(gt), EvalOptions(pred_landmarks=lms, gt_landmarks=lms))
    full = evaluate_frames(list(pred), list(gt), EvalOptions(pred_landmarks=lms, gt_landmarks=lms, crop="full"))
    assert face.aggregate["psnr"]["mean"] == math.inf
    assert full.aggregate["psnr"]["mean"] < 30


def test_missing_weights_name_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(MissingWeightsError, match="--lpips-backbone"):
        evaluate_frames(list(_frames(1)), list(_frames(1)), EvalOptions(metrics=["lpips"]))
    with pytest.raises(MissingWeightsError, match="--fid-features"):
        evaluate_frames(list(_frames(1)), list(_frames(1)), EvalOptions(metrics=["fid"]))
    with pytest.raises(MissingWeightsError, match="syncnet_v2.model"):
        evaluate_frames(list(_frames(1)), list(_frames(1)), EvalOptions(metrics=["lse"]))
    d = _write_dir(tmp_path / "d", _frames(1))
    assert main(["--pred", str(d), "--gt", str(d), "--metrics", "psnr,lpips"]) == 2
    assert "--lpips-backbone" in capsys.readouterr().err


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="nope.mp4: no such file"):
        load_frames(tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="holds no images"):
        load_frames(tmp_path / "empty")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(EvaluationError, match="junk.mp4"):
        load_frames(tmp_path / "junk.mp4")
    with pytest.raises(EvaluationError, match="unknown metric"):
        evaluate_frames(list(_frames(1)), list(_frames(1)), EvalOptions(metrics=["psnr", "bleu"]))


def test_dlib_detector_on_a_real_face(tmp_path: Path) -> None:
    """The default detector (dlib, face-recognition-models) finds the astronaut's face; identical -> LMD 0."""
    from data_fixtures import face_frames

    frames = face_frames(0.12, 25)[:3]
    result = evaluate_frames(list(frames), list(frames), EvalOptions())
    assert result.aggregate["lmd"]["count"] == 3 and result.aggregate["lmd"]["mean"] == 0.0
    assert result.aggregate["mouth_ssim"]["mean"] == pytest.approx(1.0)
    opening = result.per_frame["mouth_open_gt"][0]
    assert 0.0 <= opening < 0.5


def test_chart_and_json_helpers() -> None:
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    img = draw_chart([Panel("t", "y", [Series("a", [1.0, math.nan, 2.0, math.inf]), Series("b", [0.5] * 4)])], 4)
    assert img.dtype == np.uint8 and (img < 250).any()
    assert jsonable({"a": math.nan, "b": [math.inf, -math.inf, np.float32(1.5)]}) == {
        "a": None,
        "b": ["inf", "-inf", 1.5],
    }


def _steps(seconds: float, fps: int, step_s: float = 0.2) -> np.ndarray:
    """Frames whose content changes every ``step_s`` seconds: the same clip at any rate that divides ``step_s``."""
    palette = _frames(int(round(seconds / step_s)), seed=3)
    return np.stack([palette[int(i / fps / step_s + 1e-9)] for i in range(int(round(seconds * fps)))])


def test_different_frame_rates_are_aligned_by_time(tmp_path: Path) -> None:
    """D8: a 25 fps prediction of a 30 fps ground truth is compared at equal times, not frame by frame."""
    pred = _write_mp4(tmp_path / "pred.mp4", _steps(2.0, 25), fps=25)
    gt = _write_mp4(tmp_path / "gt.mp4", _steps(2.0, 30), fps=30)
    opts = EvalOptions(metrics=["psnr", "ssim"], crop="full")
    frame_by_frame = evaluate_frames(load_frames(pred).frames[:50], load_frames(gt).frames[:50], opts)
    psnr = np.array(frame_by_frame.per_frame["psnr"])
    assert np.mean(psnr < 30) > 0.5  # the content drifts apart without alignment
    result = evaluate(pred, gt, opts)
    assert result.frames == 50 and result.fps == pytest.approx(25)  # both at the pipeline's 25 fps
    assert result.aggregate["psnr"]["min"] > 45 and result.aggregate["ssim"]["min"] > 0.99
    assert (result.pred_fps, result.gt_fps) == (pytest.approx(25), pytest.approx(30))
    assert any("both compared at 25 fps, resampled by time (gt 60 -> 50 frames)" in n for n in result.notes)
    out = tmp_path / "report.json"
    argv = ["--pred", str(pred), "--gt", str(gt), "--metrics", "psnr,ssim", "--crop", "full", "--out", str(out)]
    assert main([*argv, "--no-plot"]) == 0
    report = json.loads(out.read_text())
    assert report["pred_fps"] == pytest.approx(25) and report["gt_fps"] == pytest.approx(30)
    assert "- frame rates: prediction 25 fps, ground truth 30 fps" in out.with_suffix(".md").read_text()


def test_resampled_inputs_carry_their_landmarks(tmp_path: Path) -> None:
    """Per-source-frame landmarks follow their frames through the time alignment."""
    pred = _write_mp4(tmp_path / "pred.mp4", _steps(0.4, 30), fps=30)
    gt = _write_mp4(tmp_path / "gt.mp4", _steps(0.4, 24), fps=24)
    pred_lms = _landmarks(12) + np.arange(12)[:, None, None]  # source frame j shifted by j px
    gt_lms = _landmarks(10) + np.arange(10)[:, None, None] * 2.0  # by 2 j px
    opts = EvalOptions(metrics=["lmd"], crop="full", pred_landmarks=pred_lms, gt_landmarks=gt_lms)
    result = evaluate(pred, gt, opts)
    # frame k at k/25 s shows pred frame 30k//25 and gt frame 24k//25 (k = 0..9: pred ends at 0.4 s)
    shift = [30 * k // 25 - 2 * (24 * k // 25) for k in range(10)]
    assert result.frames == 10 and result.per_frame["lmd"] == pytest.approx([np.hypot(d, d) for d in shift])
    with pytest.raises(EvaluationError, match="holds 8 frames, 9 are needed"):
        evaluate(pred, gt, EvalOptions(metrics=["lmd"], crop="full", pred_landmarks=pred_lms, gt_landmarks=gt_lms[:8]))
