"""A checkpoint carries its config: slim safetensors exports load without --config, the shipped synthetic model
needs no flag at all, and demo.py without --ckpt picks checkpoints/DiffTalk/model.ckpt, else the bundled model
with a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from command_support import one_error
from data_fixtures import write_video, write_wav
from golden import TINY_CONFIG, fill_deterministic

import demo
import talkingface.inference as inference
import talkingface.inference.model_choice as model_choice
from talkingface.model.image_driven_talkingface.DiffTalk import (
    CheckpointError,
    DiffTalkModel,
    export_safetensors,
    get_difftalk_inference,
    load_config,
)
from talkingface.model.image_driven_talkingface.DiffTalk.config import (
    CONFIG_CKPT_KEY,
    config_to_dict,
    with_audio_feature_kind,
)
from talkingface.synthetic.export import demo_model_paths, export_demo_model
from talkingface.training.config import load_training_config

FAST = ["--steps", "2", "--crop-size", "128", "--batch-size", "3", "--no-progress"]
FRAMES = 3  # 0.12 s at 25 fps


def tiny_config(**first_stage: Any):
    cfg = with_audio_feature_kind(load_config(TINY_CONFIG, ["model.unet.num_res_blocks=1"]), "logmel29")
    for key, value in first_stage.items():
        setattr(cfg.model.first_stage, key, value)
    return cfg


def tiny_model(cfg) -> DiffTalkModel:
    torch.manual_seed(0)
    model = DiffTalkModel(cfg.model).eval()
    fill_deterministic(model)
    return model


def save_first_stage(model: DiffTalkModel, path: Path) -> Path:
    torch.save({"state_dict": model.first_stage_model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def demo_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("demo_media")
    return {
        "video": write_video(d / "person.mp4", seconds=FRAMES / 25, fps=25),
        "audio": write_wav(d / "speech.wav", seconds=FRAMES / 25),
    }


def demo_argv(demo_media: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--video", str(demo_media["video"]), "--audio", str(demo_media["audio"]), "--out", str(out), *FAST, *extra]


def synthetic_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "trained on synthetic cartoon faces" in r.getMessage()
    ]


@pytest.fixture
def pipeline_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """LipSyncPipeline replaced by one that records the model and its source and writes nothing."""
    seen: list[dict[str, Any]] = []

    class Spy:
        def __init__(self, model: DiffTalkModel, **kwargs: Any) -> None:
            seen.append({"model": model, **kwargs})

        def run(self, *args: Any, **kwargs: Any) -> None:
            pass

    monkeypatch.setattr(inference, "LipSyncPipeline", Spy)  # the lipsync command imports it when it runs
    return seen


# ---------------------------------------------------------------- loading without a config


def test_trainer_slim_export_loads_without_config(tmp_path: Path) -> None:
    from talkingface.training.export import export_slim
    from talkingface.training.module import LatentDiffusion

    cfg = tiny_config(ckpt_path="vq.pt")
    torch.manual_seed(0)
    module = LatentDiffusion(cfg.model, run_config=config_to_dict(cfg)).eval()
    path = export_slim(module, tmp_path / "difftalk.safetensors")
    save_first_stage(module, tmp_path / "vq.pt")  # named by the config, found beside the export
    loaded = get_difftalk_inference(ckpt=path, device="cpu")
    assert loaded.config == cfg.model
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.first_stage_model.state_dict().values(), module.first_stage_model.state_dict().values())
    )
    # explicit arguments win over the stored config and the file beside the export
    with pytest.raises(CheckpointError, match="elsewhere.pt"):
        get_difftalk_inference(ckpt=path, first_stage_ckpt=tmp_path / "elsewhere.pt", device="cpu")
    with pytest.raises(CheckpointError, match="does not match the model"):
        get_difftalk_inference(TINY_CONFIG, path, first_stage_ckpt=tmp_path / "vq.pt", device="cpu")


def test_synthetic_export_is_self_contained(tmp_path: Path) -> None:
    model = tiny_model(tiny_config())
    fs = save_first_stage(model, tmp_path / "vq.ckpt")
    folder = export_demo_model(model, fs, tmp_path / "assets", metrics={"correlation": 0.5})
    config, ckpt, first_stage = demo_model_paths(folder)
    loaded = get_difftalk_inference(ckpt=ckpt, device="cpu")  # no config, no first stage given
    assert loaded.config == load_config(config).model
    assert loaded.config.first_stage.ckpt_path == first_stage.name
    expected = {k: v.half().float() for k, v in model.first_stage_model.state_dict().items()}
    assert all(torch.equal(loaded.first_stage_model.state_dict()[k], v) for k, v in expected.items())


def test_shipped_model_carries_its_config() -> None:
    from safetensors import safe_open

    config, ckpt, _ = demo_model_paths()
    with safe_open(str(ckpt), framework="pt") as f:
        stored = json.loads(f.metadata()[CONFIG_CKPT_KEY])
    assert load_training_config(stored) == load_training_config(config)  # every section, not only the model


def test_safetensors_without_config_is_one_line_error(
    demo_media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_model(tiny_config())
    path = export_safetensors(model, tmp_path / "bare.safetensors", slim=False)  # no metadata
    with pytest.raises(CheckpointError, match="bare.safetensors.*--config"):
        get_difftalk_inference(ckpt=path, device="cpu")
    assert demo.main(demo_argv(demo_media, tmp_path / "out.mp4", "--ckpt", str(path))) == 2
    line = one_error(capsys)
    assert str(path) in line and "--config" in line, line


# ---------------------------------------------------------------- which model demo.py picks


@pytest.fixture
def default_ckpt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default checkpoint path (``model_choice.DEFAULT_CKPT``) moved to an empty folder under ``tmp_path``."""
    path = tmp_path / "checkpoints" / "DiffTalk" / "model.ckpt"
    monkeypatch.setattr(model_choice, "DEFAULT_CKPT", path)
    return path


def test_without_ckpt_or_default_the_bundled_model_is_used_with_a_warning(
    demo_media: dict[str, Path],
    tmp_path: Path,
    default_ckpt: Path,
    pipeline_spy: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        assert demo.main(demo_argv(demo_media, tmp_path / "out.mp4")) == 0
    config, ckpt, _ = demo_model_paths()
    assert pipeline_spy[0]["model_source"] == str(ckpt)
    assert pipeline_spy[0]["model"].config == load_config(config).model
    (warning,) = synthetic_warnings(caplog)
    assert "will not look right on real faces" in warning and "--ckpt" in warning
    assert "trainer/DiffTalkTrainer.py --base configs/latent-diffusion/talking.yaml -t" in warning
    assert str(default_ckpt) in warning


def test_a_checkpoint_at_the_default_path_is_picked(
    demo_media: dict[str, Path],
    tmp_path: Path,
    default_ckpt: Path,
    pipeline_spy: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = tiny_config()
    model = tiny_model(cfg)
    default_ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), CONFIG_CKPT_KEY: config_to_dict(cfg)}, default_ckpt)
    with caplog.at_level(logging.INFO):
        assert demo.main(demo_argv(demo_media, tmp_path / "out.mp4")) == 0
    assert pipeline_spy[0]["model_source"] == str(default_ckpt)
    loaded = pipeline_spy[0]["model"]
    assert loaded.config == cfg.model  # the config stored in the .ckpt
    expected = model.first_stage_model.state_dict()  # (the UNet now holds the EMA weights)
    assert all(torch.equal(loaded.first_stage_model.state_dict()[k], v) for k, v in expected.items())
    assert not synthetic_warnings(caplog)


def test_bundled_model_needs_no_other_flag_and_warns(
    demo_media: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, ckpt, _ = demo_model_paths()
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.INFO):
        assert demo.main(demo_argv(demo_media, out, "--ckpt", str(ckpt))) == 0  # no --config, no --first-stage-ckpt
    assert out.stat().st_size > 0
    (warning,) = synthetic_warnings(caplog)
    assert f"--ckpt {ckpt}" in warning


def test_shipped_student_is_the_demo_model_distilled_and_records_its_sampler() -> None:
    """student4.safetensors: the demo model's names and shapes, its config (first stage: the shared first_stage.pt),
    and the DDIM 4-step grid of its distillation (the nested grid of 16 steps, trajectory method), which the pipeline
    then uses by default."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
    from talkingface.model.image_driven_talkingface.DiffTalk.config import SAMPLING_CKPT_KEY
    from talkingface.synthetic.export import demo_student_path

    config, ckpt, _ = demo_model_paths()
    student = demo_student_path()
    teacher_sd, student_sd = load_file(str(ckpt)), load_file(str(student))
    assert student_sd.keys() == teacher_sd.keys()
    assert all(student_sd[k].shape == v.shape and student_sd[k].dtype == v.dtype for k, v in teacher_sd.items())
    assert any(not torch.equal(student_sd[k], v) for k, v in teacher_sd.items())  # distilled, not a copy
    with safe_open(str(student), framework="pt") as f:
        meta = f.metadata()
    mine, demo_cfg = load_config(json.loads(meta[CONFIG_CKPT_KEY])).model, load_config(config).model
    for part in ("unet", "first_stage", "conditioning", "diffusion"):  # the architecture (its run's data/lr differ)
        assert getattr(mine, part) == getattr(demo_cfg, part), part
    sampling = json.loads(meta[SAMPLING_CKPT_KEY])
    assert sampling["sampler"] == "ddim" and sampling["timesteps"] == [188, 438, 688, 938]
    assert sampling["method"] == "trajectory" and sampling["teacher_steps"] == 16

    model = get_difftalk_inference(ckpt=student, device="cpu")  # no other argument: config and first stage found
    assert model.sampling is not None and list(model.sampling.timesteps) == [188, 438, 688, 938]


def test_demo_student_flag_runs_the_student_with_its_recorded_sampler(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import talkingface.inference as inference
    from talkingface.synthetic.export import demo_student_path

    seen: list[object] = []

    class FakePipeline:
        def __init__(self, model: object, options: object, **k: object) -> None:
            seen.append((model, options))

        def run(self, video: Path, speech: Path, out: Path, overwrite: bool = False, **k: object) -> object:
            from types import SimpleNamespace

            Path(out).write_bytes(b"result")
            return SimpleNamespace(out=out, n_frames=3)

    monkeypatch.setattr(inference, "LipSyncPipeline", FakePipeline)
    monkeypatch.setenv("TALKINGFACE_DEMO_SECONDS", "0.2")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        assert demo.main(["--no-progress", "--demo-student"]) == 0
    ((model, options),) = seen
    assert options.sampler is None and options.steps is None  # the recorded DDIM 4 steps
    assert list(model.sampling.timesteps) == [188, 438, 688, 938]
    assert demo_student_path().exists()
    with pytest.raises(SystemExit):
        demo.main(["--video", "v.mp4", "--out", "o.mp4", "--demo-student"])


# ---------------------------------------------------------------- the warning: what the file is, not its name


def tagged_and_plain_clips(folder: Path) -> tuple[Path, Path]:
    """A clip of the synthetic generator, and the same frames and sound written without its tag (a user's video)."""
    import av

    from talkingface.inference.writer import VideoWriter
    from talkingface.media.decode import load_audio
    from talkingface.synthetic.demo import make_sample_media

    synthetic, _ = make_sample_media(folder, 0.2)
    with av.open(str(synthetic)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    sound = load_audio(synthetic)
    with VideoWriter(folder / "mine.mp4", 25, sound.samples, sound.sample_rate) as w:
        for frame in frames:
            w.write(frame)
    return synthetic, folder / "mine.mp4"


@pytest.mark.parametrize("spelling", ["absolute", "relative-to-repo", "relative-here", "dotdot", "copy", "symlink"])
def test_demo_model_warning_does_not_depend_on_how_the_path_is_written(
    spelling: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled model warns however its path is spelled, from any working directory, and under another name."""
    from talkingface.model.image_driven_talkingface.DiffTalk.loader import REPO_ROOT

    _, ckpt, _ = demo_model_paths()
    relative = ckpt.relative_to(REPO_ROOT)
    monkeypatch.chdir(REPO_ROOT if spelling in ("relative-here", "dotdot") else tmp_path)
    if spelling == "copy":
        (tmp_path / "renamed.safetensors").write_bytes(ckpt.read_bytes())
    if spelling == "symlink":
        (tmp_path / "linked.safetensors").symlink_to(ckpt)
    given = {
        "absolute": str(ckpt),
        "relative-to-repo": str(relative),  # not in the working directory: found in the repository, as the loader does
        "relative-here": str(relative),
        "dotdot": str(Path("talkingface") / ".." / relative),
        "copy": "renamed.safetensors",
        "symlink": "linked.safetensors",
    }[spelling]
    assert model_choice.is_bundled_model(given)
    path, warning = model_choice.resolve_checkpoint(given)
    assert path == Path(given)
    assert warning is not None and warning.startswith(f"--ckpt {given}: the bundled synthetic demo model")


def test_other_models_do_not_warn(tmp_path: Path) -> None:
    model = tiny_model(tiny_config())
    slim = export_safetensors(model, tmp_path / "model.safetensors", slim=True)  # the demo model's file name
    torch.save({"state_dict": model.state_dict()}, tmp_path / "model.ckpt")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    for path in (slim, tmp_path / "model.ckpt", tmp_path / "junk.safetensors", tmp_path / "missing.safetensors"):
        assert not model_choice.is_bundled_model(path)
        assert model_choice.resolve_checkpoint(str(path)) == (path, None)


def test_the_student_is_the_demo_model_too() -> None:
    from talkingface.synthetic.export import demo_student_path

    assert model_choice.is_bundled_model(demo_student_path())


def test_only_a_video_not_from_the_generator_gets_the_real_faces_warning(tmp_path: Path) -> None:
    synthetic, plain = tagged_and_plain_clips(tmp_path)
    assert model_choice.is_synthetic_video(synthetic) and not model_choice.is_synthetic_video(plain)
    assert not model_choice.is_synthetic_video(tmp_path / "missing.mp4")
    ckpt = str(demo_model_paths()[1])
    assert model_choice.resolve_checkpoint(ckpt, video=synthetic)[1] is None
    _, warning = model_choice.resolve_checkpoint(ckpt, video=plain)
    assert warning is not None and "will not look right on real faces" in warning


def test_cli_warning_from_another_working_directory_with_a_relative_path(
    demo_media: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pipeline_spy: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from talkingface.model.image_driven_talkingface.DiffTalk.loader import REPO_ROOT

    relative = demo_model_paths()[1].relative_to(REPO_ROOT)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        assert demo.main(demo_argv(demo_media, tmp_path / "out.mp4", "--ckpt", str(relative))) == 0
    (warning,) = synthetic_warnings(caplog)
    assert warning.startswith(f"--ckpt {relative}: ")


def test_cli_no_warning_on_a_synthetic_clip(
    tmp_path: Path, pipeline_spy: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    synthetic, _ = tagged_and_plain_clips(tmp_path)
    argv = ["--video", str(synthetic), "--out", str(tmp_path / "out.mp4"), "--ckpt", str(demo_model_paths()[1])]
    with caplog.at_level(logging.INFO):
        assert demo.main([*argv, *FAST]) == 0
    assert not synthetic_warnings(caplog) and len(pipeline_spy) == 1


def test_demo_student_with_a_video_names_the_students_path(capsys: pytest.CaptureFixture[str]) -> None:
    from talkingface.synthetic.export import demo_student_path

    with pytest.raises(SystemExit) as exit_:
        demo.main(["--video", "v.mp4", "--out", "o.mp4", "--demo-student"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --demo-student: only without --video (with a video: --ckpt {demo_student_path()})"
