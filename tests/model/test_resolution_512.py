"""DiffTalk at another image side with a factor-8 first stage (talking-512.yaml, latent-diffusion vq-f8): model
inputs, dataset items and checks at the real 512 side, then training, the latent cache, validation sampling,
distillation and the lip-sync pipeline end to end with a tiny factor-8 model at 128 px (16 x 16 latents)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from data_fixtures import face_landmarks, write_video, write_wav
from train_support import F8_BASE, F8_SIDE, ROOT, TINY_CONFIG, f8_overrides, tiny_overrides, write_dataset

from talkingface.commands.cache import main as cache_main
from talkingface.commands.train import main as train_main
from talkingface.data.dataset import TalkDataset
from talkingface.data.masks import inference_mask
from talkingface.inference import InferenceError, LipSyncOptions, LipSyncPipeline, LipSyncStream, MelStats
from talkingface.inference.blend import mouth_alpha, paste_back
from talkingface.inference.inputs import frame_inputs
from talkingface.inference.stream import speech_samples
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel, get_difftalk_inference, load_config
from talkingface.model.image_driven_talkingface.DiffTalk.config import first_stage_source
from talkingface.training.config import load_training_config
from talkingface.training.data import check_dataset
from talkingface.training.module import LatentDiffusion

CONFIG_512 = F8_BASE[0]


# ----------------------------------------------------------------------------- the real 512 side, no model run


def test_frame_inputs_of_the_512_model() -> None:
    """A 512 crop is the model image itself (no resize): landmarks in its pixels, the masked image from landmark 33
    down, the mask drawn at 512 and resized to the 64 x 64 latent; a 1024 crop is halved."""
    cfg = load_config(CONFIG_512).model
    size, latent = cfg.first_stage.resolution, cfg.unet.image_size
    crop = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    lms = face_landmarks(512)
    inputs = frame_inputs(crop, lms, size, latent)
    assert inputs.image.shape == (1, 512, 512, 3) and inputs.mask.shape == (1, 64, 64)
    assert np.array_equal(inputs.image[0], crop)
    rows = np.concatenate([lms[0:4], lms[13:48]])
    assert np.allclose(inputs.landmarks[0], rows)  # 512-pixel units
    row = int(lms[33, 1])
    assert not inputs.masked[0, row:].any() and np.array_equal(inputs.masked[0, :row], crop[:row])
    assert np.array_equal(inputs.mask[0], inference_mask(lms, size=64, canvas=512))
    assert inputs.mask[0].min() == 0 and inputs.mask[0, 2, 2] == 1

    big = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    halved = frame_inputs(big, lms * 2, size, latent)
    assert halved.image.shape == (1, 512, 512, 3) and np.allclose(halved.landmarks[0], rows)


def test_dataset_items_and_checks_at_512(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A dataset saved at 512 passes talking-512.yaml's checks and yields 512 images with landmarks in 512-pixel
    units; one saved at 64 px is accepted with a warning that names the --size to rebuild it with."""
    root = write_dataset(tmp_path / "d512", counts=(3, 2), size=512)
    overrides = [f"data.root={root}", f"data.train_list={root.parent / 'data_train.txt'}"]
    overrides += [f"data.val_list={root.parent / 'data_test.txt'}", "data.reference_min_distance=1"]
    cfg = load_training_config(CONFIG_512, overrides)
    caplog.set_level(logging.WARNING, logger="talkingface.training.data")
    check_dataset(cfg)
    assert not [r for r in caplog.records if "upscaled" in r.getMessage()]
    item = TalkDataset(root, root.parent / "data_train.txt", image_size=cfg.data.image_size, reference_min_distance=1)[
        1
    ]
    assert item["image"].shape == item["image_mask"].shape == (512, 512, 3)
    frame = int(item["name"].split("_")[1])
    assert np.allclose(item["landmarks"][21], 8 * np.array([4 + 30 * 0.8 + 0.1 * frame, 10 + 30 * 0.6]), atol=1e-3)
    masked_rows = (item["image_mask"] == -1).all(axis=(1, 2))
    assert masked_rows[8 * 28 :].all() and not masked_rows[: 8 * 28 - 1].any()  # from the nose tip (row 224) down

    small = write_dataset(tmp_path / "d64", counts=(3, 2))
    check_dataset(load_training_config(CONFIG_512, [o.replace(str(root), str(small)) for o in overrides]))
    (warning,) = [r.getMessage() for r in caplog.records if "upscaled" in r.getMessage()]
    assert "saved at 64 px are upscaled to the model's 512 px" in warning and "--size 512" in warning


def test_pipeline_takes_its_image_side_and_crop_floor_from_the_model() -> None:
    """The pipeline's model image side is the first stage's resolution (512 here), and --crop-size is checked
    against it: 100 px is too small for a 512 model and fine for a 256 one."""
    for config, side in (([CONFIG_512, TINY_CONFIG], 512), (TINY_CONFIG, 256)):
        model = DiffTalkModel(load_config(config).model)
        pipe = LipSyncPipeline(model, audio_features="mel", options=LipSyncOptions(crop_size=100))
        assert pipe.model_image_size == side
        if side == 512:
            with pytest.raises(InferenceError, match="--crop-size"):
                pipe._check_options()
        else:
            pipe._check_options()


# ----------------------------------------------------------------------------- factor 8 end to end (128 px)


def test_validation_region_follows_the_nose_tip_in_model_pixels() -> None:
    """The validation's ``region_*`` metrics start at the nose tip given in pixels of the model's 128 px image (a
    prediction equal to the target from that row down scores infinite region PSNR, one that differs there not)."""
    cfg = load_training_config(F8_BASE, f8_overrides(Path("unused"))).model
    model = LatentDiffusion(cfg, val_metrics_steps=1).eval()
    g = torch.Generator().manual_seed(0)
    batch = {
        k: torch.rand(1, F8_SIDE, F8_SIDE, 3, generator=g) * 2 - 1 for k in ("image", "reference_img", "image_mask")
    }
    batch["landmarks"] = torch.rand(1, 39, 2, generator=g) * F8_SIDE
    batch["landmarks"][0, 21, 1] = 70.0  # the nose tip's row
    batch["audio_smooth"] = torch.randn(1, 8, 16, 29, generator=g)
    with torch.no_grad():
        target = model._images(batch, "image")
    model.decode_first_stage = lambda latents: target.clone()  # a "perfect" generator, then a spoiled one
    original = target.clone()
    target[:, :, :69] = 0.0
    assert model.sample_metrics(batch)["region_psnr"] == float("inf")
    target.copy_(original)
    target[:, :, 71:] = 0.0
    assert np.isfinite(model.sample_metrics(batch)["region_psnr"])


class Metrics(pl.Callback):
    """Keeps the metrics logged by validation."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.values.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


@pytest.fixture(scope="module")
def f8_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two training steps of the factor-8 model on a dataset saved at 128 px, with a sample grid and a validation
    (sampled PSNR/SSIM) after the second."""
    tmp = tmp_path_factory.mktemp("f8")
    root = write_dataset(tmp, size=F8_SIDE)
    run = tmp / "run"
    extra = {
        "train.max_steps": 2,
        "train.val_check_interval": 2,
        "train.image_log_every_n_steps": 2,
        "train.image_log_ddim_steps": 2,
        "train.val_metrics_steps": 2,
    }
    metrics = Metrics()
    base = ["--base", *map(str, F8_BASE)]
    assert train_main([*base, "-t", "--run-dir", str(run), *f8_overrides(root, **extra)], [metrics]) == 0
    return {"root": root, "run": run, "metrics": metrics.values, "tmp": tmp, "base": base}


@pytest.mark.slow
def test_training_and_validation_sampling_at_factor_8(f8_run: dict[str, Any]) -> None:
    import cv2

    model = get_difftalk_inference(ckpt=f8_run["run"] / "checkpoints" / "last.ckpt", device="cpu")
    fs = model.config.first_stage
    assert (fs.resolution, fs.embed_dim, model.image_size, model.first_stage_factor) == (128, 4, 16, 8)
    assert {"val/psnr", "val/ssim", "val/region_psnr", "val/region_ssim"} <= set(f8_run["metrics"])
    assert all(np.isfinite(f8_run["metrics"][k]) for k in ("val/psnr", "val/ssim"))
    (grid,) = (f8_run["run"] / "images" / "train").glob("step-*.png")
    assert cv2.imread(str(grid)).shape == (2 + 2 * (F8_SIDE + 2), 2 + 4 * (F8_SIDE + 2), 3)


@pytest.mark.slow
def test_latent_cache_and_a_cached_step_at_factor_8(f8_run: dict[str, Any]) -> None:
    root, tmp = f8_run["root"], f8_run["tmp"]
    model = get_difftalk_inference(ckpt=f8_run["run"] / "checkpoints" / "last.ckpt", device="cpu")
    vq = tmp / "vq.ckpt"
    torch.save({"state_dict": model.first_stage_model.state_dict()}, vq)
    cache = tmp / "latents"
    argv = ["build", str(root), "--out", str(cache), "--config", str(CONFIG_512), "--first-stage", str(vq)]
    widths = {"model.unet.model_channels": 32, "model.unet.num_head_channels": 8, "model.first_stage.ch": 32}
    overrides = f8_overrides(root, **widths)  # the tiny config's widths on talking-512.yaml alone
    assert cache_main([*argv, "--device", "cpu", "--batch-size", "8", "--num-workers", "0", *overrides]) == 0
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["latent_shape"] == [4, 16, 16] and meta["image_size"] == F8_SIDE == meta["frame_size"]
    split = root.parent / "data_train.txt"
    image = TalkDataset(root, split, image_size=F8_SIDE)[0]["image"]
    cached = TalkDataset(root, split, image_size=F8_SIDE, latent_cache=cache)[0]["latent"]
    with torch.no_grad():
        z = model.first_stage_model.encode(torch.from_numpy(image).permute(2, 0, 1)[None])
    assert cached.shape == (4, 16, 16)
    np.testing.assert_allclose(cached, z[0].numpy(), rtol=1e-4, atol=1e-4)
    extra = {"data.latent_cache": cache, "model.first_stage.ckpt_path": vq, "train.max_steps": 1}
    assert train_main([*f8_run["base"], "-t", "-l", str(tmp / "cached"), *f8_overrides(root, **extra)]) == 0


@pytest.mark.slow
def test_distillation_step_at_factor_8(f8_run: dict[str, Any]) -> None:
    """The kept region of the distillation loss follows the model's image side (nose tip in 128-pixel units)."""
    extra = {
        "distill.teacher": f8_run["run"] / "checkpoints" / "last.ckpt",
        "distill.teacher_steps": 2,
        "distill.student_steps": 1,
        "distill.steps_per_round": 1,
    }
    out = f8_run["tmp"] / "student"
    assert train_main([*f8_run["base"], "-t", "--run-dir", str(out), *f8_overrides(f8_run["root"], **extra)]) == 0
    student = get_difftalk_inference(ckpt=out / "checkpoints" / "last.ckpt", device="cpu")
    assert student.sampling is not None and student.sampling.steps == 1 and student.first_stage_factor == 8


@pytest.mark.slow
def test_lipsync_pipeline_at_factor_8(f8_run: dict[str, Any], tmp_path: Path) -> None:
    """``LipSyncPipeline.run`` with the trained factor-8 checkpoint: 128 px crops, 16 x 16 latents; the source is
    kept outside the feathered mouth, whole-frame and window decodes alike; streaming gives the same frames."""
    import cv2

    model = get_difftalk_inference(ckpt=f8_run["run"] / "checkpoints" / "last.ckpt", device="cpu")
    video = write_video(tmp_path / "person.mp4", seconds=0.12, fps=25)  # 3 frames
    speech = write_wav(tmp_path / "speech.wav", seconds=0.08)  # 2 frames
    for window in (False, True):
        options = LipSyncOptions(sampler="ddim", steps=2, batch_size=2, crop_size=F8_SIDE, seed=3, decode_window=window)
        pipe = LipSyncPipeline(model, options=options)
        assert pipe.model_image_size == F8_SIDE
        prepared = pipe.prepare_video(video)
        frames = tmp_path / f"frames-{window}"
        result = pipe.run(prepared, speech, frames_dir=frames, progress=False)
        assert result.n_frames == 2
        for k, i in enumerate(result.source_indices):
            got = cv2.imread(str(frames / f"{k:06d}.png"))[..., ::-1]
            src = prepared.frames[i]
            _, lms = prepared.crop(int(i))
            face = np.full((F8_SIDE, F8_SIDE, 3), 255, np.uint8)
            region = paste_back(np.zeros_like(src), face, mouth_alpha(lms, F8_SIDE), prepared.boxes[i]).any(axis=2)
            assert np.array_equal(got[~region], src[~region])
            assert np.abs(got[region].astype(int) - src[region]).mean() > 1  # the mouth is generated
    samples = speech_samples(speech)  # the stream gives the offline frames (whole-file statistics)
    offline = list(pipe.generate(prepared, pipe.prepare_speech(speech)))
    stream = LipSyncStream(pipe, prepared, normalization=MelStats.of_speech(samples))
    streamed = [*stream.push(samples), *stream.close()]
    assert len(streamed) == len(offline) == 2 and all(np.array_equal(a, b) for a, b in zip(streamed, offline))


def test_a_missing_first_stage_names_what_to_download(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The trainer's error for a missing first-stage checkpoint names the published model the config describes."""
    assert "vq-f4.zip" in first_stage_source(load_config(None).model.first_stage)
    assert "vq-f8.zip" in first_stage_source(load_config(CONFIG_512).model.first_stage)
    assert "trained with this" in first_stage_source(load_config(TINY_CONFIG).model.first_stage)
    root = write_dataset(tmp_path, size=F8_SIDE)
    missing = tmp_path / "models" / "vq-f8" / "model.ckpt"
    vq_f8 = {"model.first_stage.ch": 128, "model.first_stage.num_res_blocks": 2, "model.first_stage.ckpt_path": missing}
    overrides = f8_overrides(root, **vq_f8)
    assert train_main(["--base", *map(str, F8_BASE), "-t", "-l", str(tmp_path / "logs"), *overrides]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "https://ommer-lab.com/files/latent-diffusion/vq-f8.zip" in err


@pytest.mark.slow
def test_resolution_cost_counts_the_same_unet_and_a_3x_first_stage(tmp_path: Path) -> None:
    """benchmarks/resolution_cost.py (FLOPs only) on the paper-size configs: the 512 model's UNet costs what the
    256 one's does per evaluation (64x64 latents both), its first stage about 3x; a frame's extra cost shrinks with
    the number of steps."""
    spec = importlib.util.spec_from_file_location("resolution_cost", ROOT / "benchmarks" / "resolution_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "cost.json"
    assert module.main(["--no-time", "--json", str(out)]) == 0
    base, hi = json.loads(out.read_text())["gflops"].values()
    assert hi["unet"] / base["unet"] == pytest.approx(1.0, abs=1e-3) and base["unet"] > 300
    first_stage = (2 * hi["encode"] + hi["decode"]) / (2 * base["encode"] + base["decode"])
    assert 2.5 < first_stage < 3.5
    extra = [row["extra"] for row in json.loads(out.read_text())["flop_rows"] if "extra" in row]
    assert extra == sorted(extra) and extra[0] < 0.05  # 200 DDIM steps: under 5 % more; fewer steps: more


def test_the_tiny_vq_f4_overrides_stay_factor_4(tmp_path: Path) -> None:
    """The factor-8 overrides change the first stage only where they say (the vq-f4 tests' model is untouched)."""
    root = tmp_path / "HDTF"
    f4 = load_training_config(TINY_CONFIG, tiny_overrides(root)).model
    f8 = load_training_config(F8_BASE, f8_overrides(root)).model
    assert (f4.first_stage.resolution // f4.unet.image_size, f8.first_stage.resolution // f8.unet.image_size) == (4, 8)
    assert (f8.first_stage.ch_mult, f8.first_stage.attn_resolutions, f8.unet.in_channels) == ([1, 2, 2, 4], [16], 12)
