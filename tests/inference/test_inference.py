"""The inference package: timeline, reference-loader inputs, paste-back, feature-kind checks, atomic writers and
the ``LipSyncPipeline`` API on a tiny model with deterministic weights."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from data_fixtures import face_landmarks, write_video, write_wav

from talkingface.data.masks import inference_mask
from talkingface.inference import InferenceError, LipSyncOptions, LipSyncPipeline
from talkingface.inference.blend import mouth_alpha, paste_back
from talkingface.inference.features import resolve_feature_backend
from talkingface.inference.inputs import frame_inputs
from talkingface.inference.sampling import UNetRunner, plan_sampling
from talkingface.inference.timeline import n_output_frames, pingpong_indices
from talkingface.inference.writer import FramesDirWriter, VideoWriter
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel


def test_timeline() -> None:
    assert pingpong_indices(9, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert pingpong_indices(3, 5).tolist() == [0, 1, 2]
    assert pingpong_indices(3, 1).tolist() == [0, 0, 0]
    assert n_output_frames(16_000) == 25 and n_output_frames(639) == 0 and n_output_frames(640) == 1


def test_frame_inputs_follow_the_reference_inference_loader() -> None:
    size = 512
    crop = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    lms = face_landmarks(size)
    inputs = frame_inputs(crop, lms)
    assert inputs.image.shape == (1, 256, 256, 3) and inputs.mask.shape == (1, 64, 64)
    row = int(lms[33, 1] / 2)  # scaler 512 / 256; landmark 33 at inference (30 in training)
    assert not inputs.masked[0, row:].any() and np.array_equal(inputs.masked[0, :row], inputs.image[0, :row])
    assert np.allclose(inputs.landmarks[0], np.concatenate([lms[0:4], lms[13:48]]) / 2)
    assert np.array_equal(inputs.mask[0], inference_mask(lms, size=64, canvas=size))  # drawn at the crop size
    assert inputs.mask[0, 45, 32] == 0 and inputs.mask[0, 5, 5] == 1


def test_paste_back_keeps_source_pixels_outside_the_feathered_mouth() -> None:
    lms = face_landmarks(128)
    alpha = mouth_alpha(lms, 128)
    assert alpha[90, 64] == pytest.approx(1.0) and alpha[10, 10] == 0.0 and 0 < alpha.max() <= 1
    frame = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    box = np.array([250, -20, 100])  # partly outside the frame
    out = paste_back(frame, np.full((256, 256, 3), 7, np.uint8), alpha, box)
    touched = np.any(out != frame, axis=2)
    assert touched.any() and not touched[:, :250].any()
    visible_alpha = cv2.resize(alpha, (100, 100), interpolation=cv2.INTER_LINEAR)[20:, :50]  # rows 0-79, cols 250+
    assert not touched[0:80, 250:][visible_alpha == 0].any()


def test_feature_kind_resolution() -> None:
    assert resolve_feature_backend("logmel29").kind == "logmel29"
    assert resolve_feature_backend(None, "mel").kind == "logmel29"
    assert resolve_feature_backend("logmel29", "logmel29").kind == "logmel29"
    with pytest.raises(InferenceError, match="ckpt.pt: trained on 'logmel29' audio features but"):
        resolve_feature_backend("logmel29", "deepspeech-npy", model_source="ckpt.pt")
    with pytest.raises(InferenceError, match="records no audio feature kind"):
        resolve_feature_backend(None, None)
    with pytest.raises(InferenceError, match="which no backend here computes"):
        resolve_feature_backend("mfcc13")


def test_step_checks(tiny_model: DiffTalkModel) -> None:
    assert plan_sampling(tiny_model, "dpm++", 25)[0].steps == 25
    assert plan_sampling(tiny_model, "ddim", 200)[0].timesteps[:3] == (1, 6, 11)
    for sampler, steps in (("ddim", 0), ("ddim", 600), ("dpm++", 1000)):
        with pytest.raises(InferenceError, match="--steps"):
            plan_sampling(tiny_model, sampler, steps)
    with pytest.raises(InferenceError, match="--sampler"):
        plan_sampling(tiny_model, "euler", 10)


def test_writers_leave_nothing_when_interrupted(tmp_path: Path) -> None:
    frame = np.zeros((33, 47, 3), np.uint8)  # odd sizes are padded
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "a.mp4", 25, np.zeros(1600, np.float32), 16_000) as w:
            w.write(frame)
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with FramesDirWriter(tmp_path / "frames") as f:
            f.write(frame)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with VideoWriter(tmp_path / "a.mp4", 25, np.zeros(1600, np.float32), 16_000) as w:
        w.write(frame)
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_bf16_autocast_around_the_unet(tiny_model: DiffTalkModel) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 64, 64, generator=g)
    cond = tiny_model.encode_conditions(
        torch.randn(2, 8, 16, 29, generator=g),
        256 * torch.rand(2, 39, 2, generator=g),
        reference_latent=z,
        masked_latent=z,
    )
    t = torch.tensor([10, 900])
    full = UNetRunner(tiny_model).eps_fn(cond)(z, t)
    half = UNetRunner(tiny_model, torch.bfloat16).eps_fn(cond)(z, t)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert float((half - full).norm() / full.norm()) < 0.05


@pytest.mark.slow
def test_pipeline_api(tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    video = write_video(tmp_path / "person.mp4", seconds=0.12, fps=25)  # 3 frames
    speech = write_wav(tmp_path / "speech.wav", seconds=0.08)  # 2 frames
    options = LipSyncOptions(sampler="ddim", steps=2, batch_size=2, precision="bf16", crop_size=128, seed=3)
    pipe = LipSyncPipeline(tiny_model, audio_features="mel", options=options)
    prepared = pipe.prepare_video(video)
    own = pipe.prepare_speech(video, from_video=True)  # the video's own track (the demo's default --audio)
    assert own.n_frames == 3 and own.windows.shape == (3, 8, 16, 29) and own.mux_rate == 48_000
    assert prepared.n_frames == 3 and pipe.reference_index(prepared) == 1
    result = pipe.run(prepared, speech, frames_dir=tmp_path / "frames", progress=False)
    assert result.n_frames == 2 and result.source_indices.tolist() == [0, 1] and result.out is None
    assert result.fps_total <= result.fps_generate
    for k, i in enumerate(result.source_indices):
        got = cv2.imread(str(tmp_path / "frames" / f"{k:06d}.png"))[..., ::-1]
        src = prepared.frames[i]
        _, lms = prepared.crop(int(i))
        region = paste_back(
            np.zeros_like(src), np.full((256, 256, 3), 255, np.uint8), mouth_alpha(lms, 128), prepared.boxes[i]
        ).any(axis=2)
        assert np.array_equal(got[~region], src[~region])  # exactly the source outside the feathered mouth
        assert np.abs(got[region].astype(int) - src[region]).mean() > 10  # random weights: the mouth changes
    with pytest.raises(InferenceError, match="already exists"):
        pipe.run(prepared, speech, frames_dir=tmp_path / "frames", progress=False)
    pipe.options.reference_frame = 7
    with pytest.raises(InferenceError, match=r"person.mp4: --reference-frame 7 is outside its frames 0..2"):
        pipe.run(prepared, speech, out=tmp_path / "x.mp4", progress=False)
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_cpu_time_estimate_after_the_second_batch(
    tiny_model: DiffTalkModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On CPU one INFO line after the second batch (the first one is a warm-up) says how long the rest takes (the
    line's wording and the estimate itself: tests/inference/test_estimate.py)."""
    from talkingface.inference import pipeline

    video = write_video(tmp_path / "person.mp4", seconds=0.12, fps=25)  # 3 frames
    speech = write_wav(tmp_path / "speech.wav", seconds=0.12)  # 3 frames: 3 batches of 1
    options = LipSyncOptions(sampler="ddim", steps=2, batch_size=1, crop_size=128)
    pipe = LipSyncPipeline(tiny_model, audio_features="mel", options=options)
    caplog.set_level("INFO", logger=pipeline.log.name)
    pipe.run(video, speech, frames_dir=tmp_path / "frames", progress=False)
    lines = [r.getMessage() for r in caplog.records if "left on CPU" in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith("for 1 more frames at --steps 2"), lines
