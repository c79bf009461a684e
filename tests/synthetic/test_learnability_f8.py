"""The learnability benchmark at twice the side on a factor-8 first stage (synthetic-f8.yaml: the 512x512 mode at the
synthetic scale): the config, the set's sizes, the side-by-side mouth comparison with the 64 px model, and the whole
run (set, first stage, latent cache, trainer, pipeline evaluation, comparison) at a tiny scale."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from talkingface.commands.synthetic import main as synthetic_main
from talkingface.data.layout import DatasetLayout
from talkingface.data.meta import audio_feature_spec, dataset_meta
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel, load_config
from talkingface.model.image_driven_talkingface.DiffTalk.config import config_to_dict, default_config_path
from talkingface.synthetic.generate import DEFAULT_CROP_SIZE, DEFAULT_FRAME_SIZE
from talkingface.synthetic.learn import evaluate_heldout
from talkingface.synthetic.output import DATASET_DIR
from talkingface.synthetic.sharpness import compare_sharpness
from talkingface.training.config import load_training_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import learnability  # noqa: E402
import sharpness_512  # noqa: E402

F4, F8 = default_config_path("synthetic.yaml"), default_config_path("synthetic-f8.yaml")
#: Shrinks the f8 first stage for the tests (its encodes dominate a tiny run's time); any factor-8 layout will do.
SMALL_F8 = ["model.first_stage.ch=32", "model.first_stage.n_embed=256"]


def test_the_f8_config_doubles_the_side_and_keeps_the_latent_and_the_unet() -> None:
    """synthetic-f8.yaml is synthetic.yaml with twice the image side on a first stage with one more downsampling
    level (factor 8, 4 latent channels as vq-f8): same latent side, same UNet but for its latent channels, same
    conditioning and training."""
    f4, f8 = load_training_config(F4), load_training_config(F8)
    assert f8.model.first_stage.resolution == f8.data.image_size == 2 * f4.model.first_stage.resolution == 128
    assert len(f8.model.first_stage.ch_mult) == len(f4.model.first_stage.ch_mult) + 1
    assert f8.model.unet.image_size == f4.model.unet.image_size == 16
    a, b = config_to_dict(f4), config_to_dict(f8)
    for key in ("in_channels", "out_channels"):
        del a["model"]["unet"][key], b["model"]["unet"][key]
    assert a["model"]["unet"] == b["model"]["unet"]
    assert a["model"]["conditioning"] == b["model"]["conditioning"] and a["train"] == b["train"]
    assert {k: v for k, v in a["data"].items() if k != "image_size"} == {
        k: v for k, v in b["data"].items() if k != "image_size"
    }
    model = DiffTalkModel(load_config(F8, SMALL_F8).model)
    assert model.first_stage_factor == 8
    z = model.first_stage_model.encode(torch.zeros(1, 3, 128, 128))
    assert z.shape == (1, 4, 16, 16)


def test_the_set_is_generated_at_sides_scaled_with_the_config() -> None:
    assert learnability.set_sizes(64) == (DEFAULT_FRAME_SIZE, DEFAULT_CROP_SIZE) == (160, 128)
    assert learnability.set_sizes(128) == (320, 256)
    args = learnability.build_parser().parse_args(["--out", "x", "--crop-size", "200"])
    assert learnability.generation_sizes(args, 128) == (320, 200)
    data = Path("d")
    assert learnability.cache_dir(data, F4) == data / "latents"  # the f4 runs keep their cache
    assert learnability.cache_dir(data, F8) == data / "latents-synthetic-f8"


def _args(*argv: str) -> object:
    return learnability.build_parser().parse_args(["--no-progress", "--threads", "1", *argv])


def test_a_set_saved_below_the_side_or_a_missing_comparison_model_is_refused_before_any_work(tmp_path: Path) -> None:
    root = tmp_path / "data" / DATASET_DIR
    settings = {"audio_feature": audio_feature_spec("logmel29", 29), "fps": 25, "image_size": 64}
    DatasetLayout(root).write_meta(dataset_meta(settings, {}))
    argv = ["--out", str(tmp_path / "run"), "--config", str(F8), "--data", str(tmp_path / "data")]
    with pytest.raises(SystemExit, match=r"error: --data: .* crops of 64 px, smaller than the config's image side 128"):
        learnability.run(_args(*argv))
    with pytest.raises(SystemExit, match=r"error: --compare-with: .*nowhere.* neither a learnability run"):
        learnability.run(_args(*argv, "--compare-with", str(tmp_path / "nowhere")))
    with pytest.raises(SystemExit, match=r"error: --crop-size: 100 is smaller than the config's image side 128"):
        learnability.run(_args(*argv, "--crop-size", "100"))
    assert not (tmp_path / "run" / "first_stage.pt").exists() and sorted(root.iterdir()) == [root / "meta.json"]
    # the 64 px config takes that set
    assert learnability.prepare_data(_args(*argv), tmp_path / "data", False, 64) == root


@pytest.fixture(scope="module")
def doubled_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two identities at the f8 config's sides (320 px frames, 256 px crops), the second held out."""
    out = tmp_path_factory.mktemp("f8set") / "data"
    argv = ["--out", str(out), "--identities", "2", "--seconds", "2.6", "--layout", "--no-videos"]
    assert (
        synthetic_main([*argv, "--test-identities", "1", "--size", "256", "--frame-size", "320", "--no-progress"]) == 0
    )
    return out


@pytest.mark.slow
def test_the_comparison_generates_each_model_as_the_benchmark_and_scores_at_the_larger_side(doubled_set: Path) -> None:
    """Each model's frames are the ones the benchmark's held-out evaluation generates (same rows, same noise: the
    same per-identity r), at its own side; the high model's mouth scores at its side are the evaluation's; the low
    model is scored upsampled at 128 px, and its own ground truth upsampled scores above its generated mouths."""
    torch.manual_seed(0)
    models = {
        "high": DiffTalkModel(load_config(F8, SMALL_F8).model).eval(),
        "low": DiffTalkModel(load_config(F4, ["model.first_stage.ch=32"]).model).eval(),
    }
    root, split = doubled_set / DATASET_DIR, doubled_set / "data_test.txt"
    res = compare_sharpness(models, root, split, max_frames_per_video=12, sample_steps=2, progress=False)
    assert res.side == 128 and res.sides == {"high": 128, "low": 64} and res.frames == 12
    (video,) = res.videos
    assert video.video == 2 and video.skin_tone == 1 and video.frames == 12
    for name, model in models.items():
        ev = evaluate_heldout(model, root, split, 12, 2, progress=False)
        assert ev.correlation_per_video[0] != 0.0  # frames that vary: the equality below is not 0 == 0
        assert video.correlation[name] == pytest.approx(ev.correlation_per_video[0], abs=1e-9)
        assert res.correlation[name] == pytest.approx(ev.correlation, abs=1e-9)
        if name == "high":  # scored on its own frames at its own side: the evaluation's figures (uint8 vs float)
            assert video.generated[name].mouth_psnr == pytest.approx(ev.mouth_psnr, abs=0.3)
            assert video.generated[name].mouth_ssim == pytest.approx(ev.mouth_ssim, abs=0.02)
    assert set(res.truth_at_side) == {"low"}  # the truth at 128 px is the truth itself
    truth_low = res.truth_at_side["low"]
    assert np.isfinite(truth_low.mouth_psnr) and truth_low.mouth_psnr > res.generated["low"].mouth_psnr + 5
    assert all(s > 0 for s in res.seconds_per_frame.values())


@pytest.mark.slow
def test_learnability_f8_smoke_with_the_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One command: a set at twice the sides, a factor-8 first stage trained by the benchmark, its latent cache,
    both variants trained by the trainer at 128 px, evaluated through the pipeline at 128 px, then compared with the
    shipped 64 px model (OUT/sharpness.json and the printed table, checks and cost)."""
    out = tmp_path / "run"
    argv = [
        "--out",
        str(out),
        "--config",
        str(F8),
        "--smoke",
        "--compare-with",
        str(ROOT / "talkingface/synthetic/assets"),
    ]
    argv += [f"--set={o}" for o in SMALL_F8]
    report = learnability.run(_args(*argv))
    assert (report["image_size"], report["latent_size"], report["first_stage_factor"]) == (128, 16, 8)
    assert report["crop_size"] == 256 and DatasetLayout(out / "data" / DATASET_DIR).read_meta()["image_size"] == 256
    assert json.loads((out / "data" / "synthetic.json").read_text())["frame_size"] == 320
    cache = json.loads((out / "data" / "latents-synthetic-f8" / "meta.json").read_text())
    assert cache["latent_shape"] == [4, 16, 16] and cache["image_size"] == 128
    state = torch.load(out / "first_stage.pt", weights_only=True)["state_dict"]
    assert "encoder.down.3.block.0.conv1.weight" in state and "encoder.down.4.block.0.conv1.weight" not in state
    assert state["quantize.embedding.weight"].shape[0] == 256  # --set (n_embed) reached the first stage it trains
    for variant in ("real", "control"):
        snapshot = yaml.safe_load((out / variant / "run" / "configs" / "config.yaml").read_text())
        assert snapshot["model"]["first_stage"]["resolution"] == snapshot["data"]["image_size"] == 128
        assert snapshot["data"]["latent_cache"].endswith("latents-synthetic-f8")
        assert report["variants"][variant]["eval_frames"] == 4
    result = json.loads((out / "sharpness.json").read_text())
    assert (result["side"], result["high"]["side"], result["low"]["side"]) == (128, 128, 64)
    assert (result["high"]["factor"], result["low"]["factor"]) == (8, 4)
    assert [v["video"] for v in result["videos"]] == [2] and result["videos"][0]["group"] == "light"
    assert np.isfinite(result["pooled"]["generated_low"]["mouth_psnr"])
    assert result["checks"]["source"] == "learnability report" and result["checks"]["control_r"] is not None
    cost = result["cost"]["models"]
    assert cost["high"]["gflop_per_frame"] > cost["low"]["gflop_per_frame"] > 0
    assert result["train"]["high"]["steps"] == 3 and result["train"]["low"]["steps"] == 16000  # the shipped model's
    printed = capsys.readouterr().out
    assert "mouths scored at 128 px against the 128 px ground truth" in printed and "cost per frame" in printed
    # the standalone script gives the same comparison from the run folder
    again = tmp_path / "again.json"
    argv = ["--high", str(out), "--low", str(ROOT / "talkingface/synthetic/assets"), "--eval-frames", "4"]
    assert sharpness_512.main([*argv, "--sample-steps", "2", "--json", str(again), "--no-progress"]) == 0
    assert json.loads(again.read_text())["videos"] == result["videos"]
