"""Synthetic talking faces: landmarks match the drawing, determinism, mp4 + training layout, benchmark smoke, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
import yaml

from talkingface.data.constants import NOSE_BOTTOM
from talkingface.data.dataset import TalkDataset
from talkingface.data.validate import validate_dataset
from talkingface.synthetic.face import (
    MOUTH_INTERIOR,
    draw_face,
    face_landmarks,
    face_landmarks_local,
    head_pose,
    mouth_opening_px,
    sample_identity,
    video_mouth_width,
)
from talkingface.synthetic.generate import clip_rng, render_clip

ROOT = Path(__file__).resolve().parents[2]
SIZE = 160


def _dark_mask(img: np.ndarray) -> np.ndarray:
    """Pixels close to the mouth-interior colour."""
    return np.abs(img.astype(int) - np.array(MOUTH_INTERIOR)).max(axis=2) < 12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mouth_interior_lies_inside_inner_lip_polygon(seed: int) -> None:
    rng = np.random.default_rng(seed)
    identity = sample_identity(rng)
    for opening, width in ((0.4, 1.0), (0.8, 0.8), (1.0, 1.15)):
        pose = head_pose(identity, 0.7 * seed, SIZE)
        img = draw_face(identity, face_landmarks_local(identity, opening, width), pose, SIZE)
        lm = face_landmarks(identity, opening, width, pose)
        inner = np.zeros((SIZE, SIZE), np.uint8)
        cv2.fillPoly(inner, [np.round(lm[60:68]).astype(np.int32)], 1)
        inner = cv2.dilate(inner, np.ones((3, 3), np.uint8))  # anti-aliased edges
        dark = _dark_mask(img)
        assert dark.sum() > 5, "an open mouth shows its dark interior"
        assert (dark & (inner == 0)).sum() == 0, "dark interior pixels outside the inner-lip polygon"
        # and the polygon is mostly dark (the drawing fills it)
        core = cv2.erode(inner, np.ones((3, 3), np.uint8), iterations=2).astype(bool)
        assert dark[core].mean() > 0.75  # the upper inner lip line is drawn over its top edge


def test_pixel_opening_tracks_landmark_opening() -> None:
    clip = render_clip(clip_rng(0, 1), seconds=4.0, frame_size=SIZE)
    gap = clip.landmarks[:, 66, 1] - clip.landmarks[:, 62, 1]  # inner-lip gap in pixels
    width = video_mouth_width(clip.landmarks)
    measured = np.array(
        [mouth_opening_px(f, lm[NOSE_BOTTOM], width) for f, lm in zip(clip.frames, clip.landmarks, strict=True)]
    )
    assert clip.speech.opening.max() > 0.5 and (clip.speech.opening < 0.02).any(), "speech has loud and silent parts"
    assert np.corrcoef(gap, clip.speech.opening)[0, 1] > 0.99
    assert np.corrcoef(measured, gap)[0, 1] > 0.98
    # dark area / mouth width: proportional to the inner-lip gap (the inner lips are a lens, about 0.6 x gap now
    # that the interior counts 1 on every skin tone; the former absolute threshold counted it ~0.7, giving ~0.4)
    ratio = measured[clip.speech.opening > 0.3] / gap[clip.speech.opening > 0.3]
    assert 0.45 < ratio.mean() < 0.75 and ratio.std() < 0.1 * ratio.mean()


def test_pixel_opening_ignores_the_true_mouth_landmarks() -> None:
    """The measure reads the pixels, a landmark that does not move with speech (33) and a per-video width:
    a closed-mouth frame measures (almost) zero whatever the true opening of that frame was."""
    clip = render_clip(clip_rng(0, 1), seconds=2.0, frame_size=SIZE)
    width = video_mouth_width(clip.landmarks)
    closed = int(np.argmin(clip.speech.opening))
    wide = int(np.argmax(clip.speech.opening))
    assert mouth_opening_px(clip.frames[closed], clip.landmarks[wide][NOSE_BOTTOM], width) < 0.2 * mouth_opening_px(
        clip.frames[wide], clip.landmarks[wide][NOSE_BOTTOM], width
    )


def test_generation_is_deterministic() -> None:
    a = render_clip(clip_rng(7, 3), seconds=0.5, frame_size=96)
    b = render_clip(clip_rng(7, 3), seconds=0.5, frame_size=96)
    c = render_clip(clip_rng(7, 4), seconds=0.5, frame_size=96)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.speech.audio, b.speech.audio)
    assert not np.array_equal(a.frames, c.frames)


def test_cli_writes_videos_and_a_valid_layout(tmp_path: Path) -> None:
    from talkingface.commands.synthetic import main

    out = tmp_path / "syn"
    argv = ["--out", str(out), "--identities", "2", "--seconds", "1.2", "--seed", "3", "--layout", "--no-progress"]
    argv += ["--test-identities", "1"]
    assert main(argv) == 0
    video = out / "videos" / "synthetic_001.mp4"
    with av.open(str(video)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.audio
    lms = np.load(out / "videos" / "synthetic_001.landmarks.npy")
    assert lms.shape == (30, 68, 2)
    assert validate_dataset(out / "dataset", progress=False) == []
    item = TalkDataset(out / "dataset", out / "data_train.txt", image_size=64)[0]
    assert item["image"].shape == (64, 64, 3) and item["landmarks"].shape == (39, 2)
    assert item["audio_smooth"].shape == (8, 16, 29)
    assert 0 < item["landmarks"].min() and item["landmarks"].max() < 64
    assert (out / "data_test.txt").read_text().startswith("2_1\n")


@pytest.mark.slow
def test_learnability_benchmark_smoke(tmp_path: Path) -> None:
    """The benchmark trains through the product's trainer (its run folders, checkpoints and config snapshots are
    the trainer's) and evaluates with the learning-curve callback."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import learnability

    report = learnability.run(
        learnability.build_parser().parse_args(
            [
                "--out",
                str(tmp_path / "run"),
                "--smoke",
                "--no-progress",
                "--threads",
                "1",
                "--export",
                str(tmp_path / "export"),
                "--eval-every",
                "2",
            ]
        )
    )
    for variant in ("real", "control"):
        v = report["variants"][variant]
        # a constant prediction (a collapsed model or a broken mouth measure) gives a NaN correlation
        assert np.isfinite(v["correlation"]) and np.isfinite(v["mouth_psnr"])
        assert v["eval_frames"] == 4
        assert [p["step"] for p in v["curve"]] == [2, 3]  # the learning curve: every 2 steps and the last
        assert {"correlation", "mouth_psnr", "first_stage_l1", "skin_luminance", "pause_frames"} <= set(v["videos"][0])
        run = tmp_path / "run" / variant / "run"
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 3  # trained by trainer/DiffTalkTrainer.py's entry point
        snapshot = yaml.safe_load((run / "configs" / "config.yaml").read_text())
        assert snapshot["data"]["shuffle_audio"] is (variant == "control")
        assert snapshot["data"]["latent_cache"] and snapshot["train"]["lr_warmup_steps"] == 200
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "report.json").is_file()
    # the model saved at each curve point loads for inference
    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
    from talkingface.synthetic.export import demo_model_paths

    model = get_difftalk_inference(*demo_model_paths(tmp_path / "run" / "control" / "model"), device="cpu")
    assert not model.training
    # --resume goes on with the trainer's own --resume, and the curve goes on
    again = learnability.build_parser().parse_args(
        ["--out", str(tmp_path / "run"), "--smoke", "--no-progress", "--threads", "1", "--variants", "real"]
        + ["--eval-every", "2", "--steps", "4", "--resume", "--set", "train.log_every_n_steps=1"]
    )
    report = learnability.run(again)
    assert [p["step"] for p in report["variants"]["real"]["curve"]] == [2, 3, 4]
    snapshot = yaml.safe_load((tmp_path / "run" / "real" / "run" / "configs" / "config.yaml").read_text())
    assert snapshot["train"]["log_every_n_steps"] == 1  # --set reached the trainer
    ckpt = torch.load(tmp_path / "run" / "real" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    # --evaluate: the same held-out figures for a saved model, without training
    argv = ["--out", str(tmp_path / "eval"), "--data", str(tmp_path / "run" / "data"), "--no-progress"]
    argv += ["--evaluate", str(tmp_path / "run" / "control" / "model"), "--eval-frames", "4", "--sample-steps", "2"]
    assert learnability.main(argv) == 0
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert evaluation["eval_frames"] == 4 and "correlation_first_stage" in evaluation["videos"][0]


@pytest.mark.slow
def test_no_argument_demo_writes_an_mp4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from talkingface.synthetic.export import demo_model_paths

    if not demo_model_paths()[1].is_file():
        pytest.fail("the shipped synthetic demo model is missing (talkingface/synthetic/assets)")
    monkeypatch.setenv("TALKINGFACE_DEMO_SECONDS", "0.8")
    monkeypatch.setenv("TALKINGFACE_DEMO_STEPS", "2")
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(ROOT))
    import demo

    assert demo.main(["--no-progress"]) == 0
    out = tmp_path / "synthetic_demo.mp4"
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 20 and frames[0].shape == (160, 160, 3)
    assert demo.main(["--no-progress"]) == 0  # the no-argument demo replaces its own output
    assert demo.main(["--no-progress", "--out", str(out)]) == 2  # an explicit --out is refused when it exists ...
    assert demo.main(["--no-progress", "--out", str(out), "--overwrite"]) == 0  # ... unless --overwrite


#: Per-identity r the shipped model must reach on the unseen clips of :func:`shipped_heldout`.
SHIPPED_MIN_R = 0.8
#: Per-identity r of the pixel measure on the ground truth passed through the shipped first stage alone: what diffusion
#: can reach. The former first stage (width 32, 2,500 steps) read 0.76 and 0.12 on the two darkest tones (it smeared
#: their mouths away before any diffusion); this guards against a first stage that loses a skin tone again.
FIRST_STAGE_MIN_R = 0.85


@pytest.fixture(scope="module")
def shipped_heldout(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shipped model on clips 8-11 of generator seed 2024 (never seen in training, which used seed 0): skin-tone
    bins 7, 8, 9 and 0, evaluated as the learnability benchmark does (pipeline frame path, EMA weights)."""
    import torch

    from talkingface.commands.synthetic import main as synthetic_main
    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
    from talkingface.synthetic.export import demo_model_paths
    from talkingface.synthetic.learn import evaluate_heldout

    if not demo_model_paths()[1].is_file():
        pytest.fail("the shipped synthetic demo model is missing (talkingface/synthetic/assets)")
    data = tmp_path_factory.mktemp("shipped") / "heldout"
    # 2 s (50 frames) a clip: first-stage encodes and decodes are most of the cost; every identity still has 20-33
    # pause frames and r >= 0.92 (0.93-0.96 on 3 s clips)
    argv = ["--out", str(data), "--identities", "11", "--seconds", "2", "--seed", "2024", "--layout", "--no-videos"]
    assert synthetic_main([*argv, "--test-identities", "4", "--no-progress"]) == 0
    torch.manual_seed(0)
    model = get_difftalk_inference(*demo_model_paths(), device="cpu")
    res = evaluate_heldout(model, data / "dataset", data / "data_test.txt", 50, sample_steps=10, progress=False)
    return {v.skin_tone: v for v in res.videos}


@pytest.mark.slow
@pytest.mark.parametrize("tone", [0, 7, 8, 9])
def test_shipped_model_mouth_follows_unseen_speech_per_skin_tone(shipped_heldout: dict, tone: int) -> None:
    """Regression guard for the whole conditioning path (audio windows, landmarks, masks, reference, sampler), per
    identity and skin tone, the lightest and the three darkest: the generated mouth follows speech it never heard on
    a face it never saw, and the first stage keeps that mouth."""
    v = shipped_heldout[tone]
    who = f"identity {v.video} (skin tone {tone}, luminance {v.skin_luminance:.2f})"
    assert v.correlation_gt_pixels > 0.9, f"{who}: the measure itself fails (r {v.correlation_gt_pixels:.2f})"
    assert v.correlation_first_stage > FIRST_STAGE_MIN_R, (
        f"{who}: the first stage alone loses the mouth (measure through it r = {v.correlation_first_stage:.2f})"
    )
    assert v.correlation > SHIPPED_MIN_R, f"{who}: the mouth follows the speech with r = {v.correlation:.2f} only"


@pytest.mark.slow
def test_shipped_model_closes_the_mouth_in_silence(shipped_heldout: dict) -> None:
    """In the pauses of the speech the generated mouth is as closed as the truth, within ``SILENCE_TOLERANCE`` of
    the truth's speech opening (both read by the same pixel measure), on every tone."""
    from talkingface.synthetic.learn import SILENCE_TOLERANCE

    for tone, v in sorted(shipped_heldout.items()):
        assert v.pause_frames >= 5, f"skin tone {tone}: only {v.pause_frames} pause frames"
        assert v.silence_residual < SILENCE_TOLERANCE, (
            f"identity {v.video} (skin tone {tone}): the mouth stays open in the pauses "
            f"({v.silence_residual:.2f} of the speech opening)"
        )


@pytest.mark.parametrize("identities,held_out", [(1, 0), (2, 1), (4, 1), (8, 2), (20, 2)])
def test_default_test_identities_leave_training_identities(identities: int, held_out: int) -> None:
    from talkingface.commands.synthetic import build_parser, check_args
    from talkingface.synthetic.write_set import held_out_identities

    args = build_parser().parse_args(["--out", "x", "--identities", str(identities), "--layout"])
    assert check_args(args) is None and held_out_identities(args) == held_out


def test_small_layout_with_default_split(tmp_path: Path) -> None:
    """The original failure: two identities with the default --test-identities (then 2) was refused."""
    from talkingface.commands.synthetic import main

    out = tmp_path / "D"
    assert (
        main(["--out", str(out), "--identities", "2", "--seconds", "2", "--layout", "--no-videos", "--no-progress"])
        == 0
    )
    assert (out / "data_test.txt").read_text().startswith("2_1\n")
    assert (out / "data_train.txt").read_text().startswith("1_1\n")


@pytest.mark.slow
def test_first_stage_gamma_loss_trains_reproducibly() -> None:
    """``gamma`` (the loss also on gamma-encoded intensities, ``--first-stage-gamma``) runs, stays finite, and a
    seed gives the same model."""
    import torch

    from talkingface.model.image_driven_talkingface.DiffTalk.config import default_config_path, load_config
    from talkingface.synthetic.first_stage import train_first_stage

    cfg = load_config(default_config_path("synthetic.yaml")).model.first_stage
    images = torch.rand(24, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    kwargs = {"steps": 2, "batch_size": 4, "kmeans_points": 2000, "progress": False, "gamma": 2.2}
    a = train_first_stage(images, cfg, **kwargs)
    b = train_first_stage(images, cfg, **kwargs)
    assert np.isfinite(a.recon_l1) and a.recon_l1 == b.recon_l1
