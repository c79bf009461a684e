"""Bad input that used to end in a traceback (or a misleading line) ends in one ``error: <where>: <problem>`` line and
exit status 2: a ``--device`` this machine cannot use, configs that are not plain mapping data, a bad override among
several, a checkpoint's unusable recorded sampler, bytes that are no checkpoint, a ``.npy`` header that claims more
data than its file holds, a corrupt whisper weights file, a first stage GroupNorm cannot hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from command_support import one_error, run_cli
from data_fixtures import save_random_hf_whisper, write_video
from golden import TINY_CONFIG

from talkingface.model.image_driven_talkingface.DiffTalk import ConfigError, DiffTalkModel, load_config
from talkingface.model.image_driven_talkingface.DiffTalk.config import SAMPLING_CKPT_KEY, SamplingSetting
from talkingface.model.image_driven_talkingface.DiffTalk.plan import RECORDED, SamplerError, resolve_plan

HUGE_FRAMES = 10**9


# ----------------------------------------------------------------------------- --device


DEVICE_COMMANDS = {
    "lipsync": ["lipsync", "--video", "v.mp4", "--out", "o.mp4"],
    "lipsync-demo": ["lipsync", "--no-progress"],
    "cache": ["cache", "build", "data/HDTF"],
    "evaluate": ["evaluate", "--pred", "p.mp4", "--gt", "g.mp4"],
    "preprocess": ["preprocess", "run", "v.mp4", "--out", "data/HDTF"],
    "app": ["app"],
}


@pytest.mark.parametrize("device", ["bogus", "cuda:99", "xla"])
@pytest.mark.parametrize("name", sorted(DEVICE_COMMANDS))
def test_a_device_this_machine_cannot_use_is_one_line(
    name: str, device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before anything loads or is read (the inputs named here do not exist)."""
    monkeypatch.chdir(tmp_path)
    if name == "app":
        uvicorn = pytest.importorskip("uvicorn")

        def serve(*args: object, **kwargs: object) -> None:
            raise AssertionError("the server must not start")

        monkeypatch.setattr(uvicorn.Server, "run", serve)
    assert run_cli([*DEVICE_COMMANDS[name], "--device", device]) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: --device: {'unknown device' if device == 'bogus' else device}"), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli([*DEVICE_COMMANDS["lipsync"], "--device", "cuda"]) == 2
    line = one_error(capsys)
    assert line.startswith("error: --device: cuda: ") and "CUDA" in line and line.endswith("use --device cpu")


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"model:\n  unet:\n    model_channels: \xff\xfe\n", "not UTF-8 text (byte 0xff"),
        (b"- model\n- data\n", "the top level must be a mapping (model:, data:, ...), not a list"),
        (b"42\n", "the top level must be a mapping"),
        (b"model:\n  unet:\n    model_channels: ${oc.env:HOME}\n", "model.unet.model_channels: '${oc.env:HOME}'"),
        (b"model:\n  unet:\n    model_channels: ${model.unet.model_channels}\n", "interpolations and resolvers"),
    ],
)
def test_a_config_file_that_is_not_plain_mapping_data(
    content: bytes, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_bytes(content)
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        load_config(config)
    assert run_cli(["train", "--base", str(config)]) == 2  # the trainer's command line: one line naming the file
    line = one_error(capsys)
    assert line.startswith(f"error: {config}: ") and problem in line, line


@pytest.mark.parametrize(
    "override, problem",
    [
        ("model.unet.channel_mult=[1,2", "invalid value: did not find expected ',' or ']'"),
        ("model.unet.model_channels=${model.unet.model_channels}", "interpolations and resolvers"),
        ('model.unet.model_channels=${oc.decode:"64"}', "interpolations and resolvers"),
        ("model.unet.bogus=1", "Key 'bogus' not in 'UNetConfig'"),
    ],
)
def test_only_the_bad_override_is_named(override: str, problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    good = ["model.unet.model_channels=64", "model.base_learning_rate=1e-4"]
    with pytest.raises(ConfigError) as info:
        load_config(None, [good[0], override, good[1]])
    assert str(info.value).startswith(f"override {override}: ") and problem in str(info.value)
    assert not any(g in str(info.value) for g in good)
    assert run_cli(["train", *good, override]) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: override {override}: ") and problem in line, line


def test_overrides_one_by_one_still_merge_as_a_dotlist() -> None:
    config = load_config(None, ["model.unet.channel_mult=[1,2]", "model.unet.attention_resolutions=[2]"])
    assert list(config.model.unet.channel_mult) == [1, 2] and list(config.model.unet.attention_resolutions) == [2]


def test_an_options_file_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = tmp_path / "opts.yaml"
    options.write_bytes(b"gpus: \xff\n")
    assert run_cli(["train", "--options", str(options)]) == 2
    assert one_error(capsys).startswith(f"error: --options: {options}: not UTF-8 text")


def test_a_first_stage_groupnorm_cannot_hold_is_refused_by_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    """model.first_stage.ch=33 made the trainer fail deep in GroupNorm with a traceback."""
    with pytest.raises(ConfigError, match=r"model.first_stage.ch x ch_mult must be multiples of 32.*\[33, 66, 132\]"):
        load_config(None, ["model.first_stage.ch=33"])
    assert run_cli(["train", "model.first_stage.ch=33"]) == 2
    assert "model.first_stage.ch x ch_mult must be multiples of 32" in one_error(capsys)


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("kind", ["folder", "random bytes", "other weights"])
def test_a_bad_first_stage_in_training_is_one_line(
    kind: str, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from train_support import tiny_overrides

    first_stage = tmp_path / "vq.ckpt"
    if kind == "folder":
        first_stage.mkdir()
    elif kind == "random bytes":
        first_stage.write_bytes(np.random.default_rng(0).bytes(5000))
    else:
        torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(2, 2)}}, first_stage)
    overrides = [*tiny_overrides(tiny_dataset), f"model.first_stage.ckpt_path={first_stage}"]
    assert run_cli(["train", "--base", str(TINY_CONFIG), *overrides, "-t", "--run-dir", str(tmp_path / "run")]) == 2
    line = one_error(capsys)
    expected = {"folder": "is a folder, not a file", "random bytes": "is not a checkpoint", "other weights": "missing"}
    assert str(first_stage) in line and expected[kind] in line, line
    assert not (tmp_path / "run").exists()


def test_a_recorded_grid_out_of_range_is_the_checkpoints_fault(tiny_model: DiffTalkModel) -> None:
    record = SamplingSetting("ddim", 3, (0, 500, 1200))
    with pytest.raises(SamplerError) as info:
        resolve_plan(tiny_model.alphas_cumprod, recorded=record)
    assert info.value.option == RECORDED and "recorded sampler ddim 3 steps" in str(info.value)
    with pytest.raises(SamplerError) as info:  # --steps 3 picks the recorded grid: still the record's fault
        resolve_plan(tiny_model.alphas_cumprod, steps=3, recorded=record)
    assert info.value.option == RECORDED
    with pytest.raises(SamplerError) as info:  # --steps 0 is the user's own
        resolve_plan(tiny_model.alphas_cumprod, steps=0, recorded=record)
    assert info.value.option == "steps"
    plan, _ = resolve_plan(tiny_model.alphas_cumprod, sampler="dpm++", steps=4, recorded=record)  # a way around it
    assert plan.sampler == "dpm++"


def test_lipsync_names_the_checkpoint_for_its_unusable_record(
    tiny_model: DiffTalkModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "student.ckpt"
    record = {"sampler": "ddim", "steps": 3, "timesteps": [0, 500, 1200]}
    torch.save(
        {"state_dict": tiny_model.state_dict(), "audio_feature_kind": "logmel29", SAMPLING_CKPT_KEY: record}, ckpt
    )
    video = write_video(tmp_path / "person.mp4", seconds=0.12, fps=25)
    argv = ["lipsync", "--video", str(video), "--out", str(tmp_path / "o.mp4"), "--ckpt", str(ckpt)]
    assert run_cli([*argv, "--config", str(TINY_CONFIG), "--no-progress"]) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {ckpt}: its recorded sampler ddim 3 steps"), line
    assert "--steps:" not in line


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(5000), b"\x80\x99" + bytes(100), b"hello\n"])
def test_bytes_that_are_no_checkpoint_are_called_so(content: bytes, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(content)
    assert run_cli(["export", str(ckpt), str(tmp_path / "out.safetensors")]) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {ckpt}: is not a checkpoint") and "Python objects" not in line, line


def test_random_bytes_to_resume_are_no_checkpoint(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not "Python objects beyond tensors" (which suggests the file is a checkpoint of another kind), and said
    before the model is built."""
    from train_support import write_run_folder

    import talkingface.training.run as training_run

    def build_module(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model must not be built")

    monkeypatch.setattr(training_run, "build_module", build_module)
    run_dir = write_run_folder(tiny_dataset, tmp_path / "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(np.random.default_rng(0).bytes(5000))
    assert run_cli(["train", "--resume", str(run_dir), "-t"]) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {last}: is not a checkpoint") and "Python objects" not in line, line


# ----------------------------------------------------------------------------- .npy headers


def huge_npy(path: Path, shape: tuple[int, ...]) -> Path:
    """A .npy whose header claims ``shape`` (float32) but which holds 1 kB of data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(bytes(1024))
    return path


def test_a_landmarks_file_claiming_a_billion_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """np.load would first try to allocate the 544 GB the header asks for (MemoryError)."""
    lms = huge_npy(tmp_path / "lms.npy", (HUGE_FRAMES, 68, 2))
    video = write_video(tmp_path / "person.mp4", seconds=0.12, fps=25)
    argv = ["lipsync", "--video", str(video), "--out", str(tmp_path / "o.mp4"), "--landmarks", str(lms)]
    assert run_cli(argv) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {lms}: unreadable as a .npy array (its header declares shape (1000000000, 68, 2)")
    assert "truncated or corrupt" in line


def test_dataset_features_and_evaluation_landmarks_claiming_a_billion_frames(tmp_path: Path) -> None:
    from talkingface.data.layout import DatasetLayout, LayoutFileError
    from talkingface.evaluate.errors import EvaluationError
    from talkingface.evaluate.landmarks import load_landmarks
    from talkingface.media.errors import PreprocessError
    from talkingface.media.features import make_backend

    layout = DatasetLayout(tmp_path / "HDTF")
    layout.make_folders()
    huge_npy(layout.audio_path(1, 0), (HUGE_FRAMES, 16, 29))
    with pytest.raises(LayoutFileError, match="header declares shape"):
        layout.read_audio(1, 0)
    with pytest.raises(EvaluationError, match="header declares shape"):
        load_landmarks(huge_npy(tmp_path / "eval.npy", (HUGE_FRAMES, 68, 2)))
    backend = make_backend("deepspeech-npy", {"deepspeech_npy": huge_npy(tmp_path / "aud.npy", (HUGE_FRAMES, 16, 29))})
    with pytest.raises(PreprocessError, match="header declares shape"):
        backend.load(tmp_path / "clip.mp4")


def test_npy_header_checks(tmp_path: Path) -> None:
    from talkingface.npy import read_npy

    good = tmp_path / "good.npy"
    np.save(good, np.arange(6, dtype=np.float32).reshape(3, 2))
    assert read_npy(good, (None, 2)).shape == (3, 2)
    with pytest.raises(ValueError, match=r"array of shape \(3, 2\); expected \(N, 68, 2\)"):
        read_npy(good, (None, 68, 2))
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
    with pytest.raises(ValueError, match="an .npz archive"):
        read_npy(tmp_path / "two.npz")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        read_npy(tmp_path / "objects.npy")


# ----------------------------------------------------------------------------- whisper weights


@pytest.mark.parametrize("damage", ["random", "empty", "truncated"])
def test_a_corrupt_transformers_whisper_weights_file_is_named(damage: str, tmp_path: Path) -> None:
    from talkingface.media.errors import PreprocessError
    from talkingface.media.features import make_backend

    folder = save_random_hf_whisper(tmp_path / "whisper")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    damaged = {"random": np.random.default_rng(0).bytes(3000), "empty": b"", "truncated": data[: len(data) // 2]}
    weights.write_bytes(damaged[damage])
    with pytest.raises(PreprocessError) as info:
        make_backend("whisper", {"whisper_model": str(folder)})
    assert str(info.value).startswith(f"{weights}: not a readable safetensors file"), info.value
    assert json.loads((folder / "config.json").read_text())["model_type"] == "whisper"
