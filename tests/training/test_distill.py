"""Distillation: progressive (the closed-form target, the nested schedule) and trajectory (the differentiable
unrolled chain), the trainer's distillation modes end to end on a tiny model, and the student's recorded sampler as
the pipeline's and the CLI's default."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from data_fixtures import write_video, write_wav
from safetensors import safe_open
from train_support import TINY_CONFIG, InterruptAt, tiny_overrides

import demo
import talkingface.inference as inference
from talkingface.commands.train import main
from talkingface.inference import LipSyncOptions, LipSyncPipeline
from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import load_difftalk_checkpoint
from talkingface.model.image_driven_talkingface.DiffTalk.config import SAMPLING_CKPT_KEY, load_config
from talkingface.model.image_driven_talkingface.DiffTalk.plan import SamplerError, ddim_timesteps, make_plan
from talkingface.model.image_driven_talkingface.DiffTalk.samplers import ddim_alphas, ddim_sample
from talkingface.model.image_driven_talkingface.DiffTalk.schedule import linear_sqrt_betas, schedule_buffers
from talkingface.training.config import load_training_config
from talkingface.training.distill.targets import (
    ddim_trajectory,
    distillation_grids,
    nested_timesteps,
    two_step_eps_target,
)
from talkingface.training.module import LatentDiffusion

ALPHAS = schedule_buffers(linear_sqrt_betas(1000, 0.0015, 0.0195))["alphas_cumprod"]


def ddim(steps: int, timesteps: Any = None) -> Any:
    return make_plan("ddim", steps, ALPHAS, timesteps=timesteps)


def toy_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic, nonlinear stand-in for a teacher's noise prediction (depends on x and t): the exact noise
    prediction for x0 ~ N(0, 1), ``sqrt(1 - alpha_bar_t) x``, plus a nonlinear term, so latents stay O(1)."""
    w = torch.linspace(-1.0, 1.0, x.shape[1]).view(1, -1, 1, 1)
    exact = (1.0 - ALPHAS[t]).sqrt().view(-1, 1, 1, 1) * x
    return exact + 0.2 * torch.tanh(x * w + t.view(-1, 1, 1, 1).float() / 1000.0 + 0.3 * x.roll(1, dims=-1))


def student_from_teacher(teacher_grid: np.ndarray, generator: torch.Generator, x0: torch.Tensor, mask: torch.Tensor):
    """The ideal student: at each of its timesteps, the closed-form target of two teacher steps."""
    a_t_all, a_prev_all = ddim_alphas(ALPHAS, teacher_grid)
    position = {int(t): i for i, t in enumerate(teacher_grid)}

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        i = position[int(t[0])]
        t_mid = torch.full_like(t, int(teacher_grid[i - 1]))
        return two_step_eps_target(
            toy_eps, x, t, t_mid, a_t_all[i], a_prev_all[i], a_prev_all[i - 1], x0, mask, generator
        )

    return eps


# ----------------------------------------------------------------------------- (a) the closed-form target


def test_one_student_step_with_the_target_reproduces_two_teacher_steps_with_inpainting() -> None:
    """DDIM with 8 teacher steps and DDIM with 4 student steps (the nested grid) whose eps is the closed-form
    target give the same latents to 1e-5, kept region replacement included (same generator draws); the uniform
    4-step grid does not (the nesting matters), and the kept region really is re-noised x0, not the noise."""
    g = torch.Generator().manual_seed(0)
    x_T, x0 = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    teacher_grid = ddim_timesteps(8)
    student_grid = nested_timesteps(teacher_grid)

    teacher = ddim_sample(toy_eps, ALPHAS, x_T, ddim(8), x0=x0, mask=mask, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    eps = student_from_teacher(teacher_grid, gen, x0, mask)
    student = ddim_sample(eps, ALPHAS, x_T, ddim(4, student_grid), x0=x0, mask=mask, generator=gen)
    assert float((student - teacher).abs().max()) < 1e-5

    gen = torch.Generator().manual_seed(5)  # the uniform 4-step grid (even teacher indices) does not reproduce it
    uniform = ddim_sample(
        student_from_teacher(teacher_grid, gen, x0, mask), ALPHAS, x_T, ddim(4), x0=x0, mask=mask, generator=gen
    )
    assert float((uniform - teacher).abs().max()) > 1e-3
    other_noise = ddim_sample(
        toy_eps, ALPHAS, x_T, ddim(8), x0=x0, mask=mask, generator=torch.Generator().manual_seed(6)
    )
    kept, generated = mask.bool().expand_as(x_T), ~mask.bool().expand_as(x_T)
    assert float((other_noise - teacher)[kept].abs().max()) > 1e-3  # the kept region is re-noised each step
    no_mask = ddim_sample(toy_eps, ALPHAS, x_T, ddim(8))
    assert float((no_mask - teacher)[generated].abs().max()) > 1e-3  # and the replacement reaches the rest


# ----------------------------------------------------------------------------- (b) the nested schedule


def test_nested_schedule_halves_the_teacher_grid_each_round() -> None:
    grids = distillation_grids(16, 4)
    assert [len(g) for g in grids] == [16, 8, 4]
    assert grids[0].tolist()[:4] == [1, 63, 126, 188]  # 16 uniform steps (the reference's "16" has 17)
    assert distillation_grids(8, 2)[0].tolist() == ddim_timesteps(8).tolist()  # the reference grid where T % N == 0
    for teacher, student in zip(grids, grids[1:], strict=False):
        assert student.tolist() == teacher[1::2].tolist()
        assert student[-1] == teacher[-1]  # both start from the teacher's noisiest timestep
        assert set(student.tolist()) <= set(teacher.tolist())
        # every student step t -> t'' spans exactly two teacher steps t -> t' -> t''
        for j in range(1, len(student)):
            between = [t for t in teacher if student[j - 1] < t < student[j]]
            assert len(between) == 1
    # the uniform grid of N/2 steps is not the student's: it is off by one teacher step
    assert ddim_timesteps(4).tolist() == [1, 251, 501, 751] and distillation_grids(8, 4)[1].tolist() == [
        126,
        376,
        626,
        876,
    ]
    for teacher_steps, student_steps in ((16, 3), (12, 4), (4, 4), (5, 1)):
        with pytest.raises(SamplerError):
            distillation_grids(teacher_steps, student_steps)


# ----------------------------------------------------------------------------- (c) the trainer end to end

STUDENT_GRID = distillation_grids(8, 2)[-1].tolist()


class Losses(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, *args: Any) -> None:
        self.values.append(float(outputs["loss"]))


@pytest.fixture(scope="module")
def runs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A one-step teacher trained by the trainer, then a two-round distillation (8 -> 4 -> 2 DDIM steps) of it."""
    tmp = tmp_path_factory.mktemp("distill")
    data_root = tiny_dataset
    teacher_run = tmp / "teacher"
    argv = ["--base", str(TINY_CONFIG), "-t", "--run-dir", str(teacher_run)]
    assert main([*argv, *tiny_overrides(data_root, **{"train.max_steps": 1})]) == 0
    teacher = teacher_run / "checkpoints" / "last.ckpt"

    student_run = tmp / "student"
    losses = Losses()
    extra = {
        "distill.teacher": teacher,
        "distill.teacher_steps": 8,
        "distill.student_steps": 2,
        "distill.steps_per_round": 2,
        "train.export_slim_on_end": True,
        "train.val_check_interval": 4,
    }
    argv = ["--base", str(TINY_CONFIG), "-t", "--run-dir", str(student_run), *tiny_overrides(data_root, **extra)]
    assert main(argv, extra_callbacks=[losses]) == 0
    ckpts = student_run / "checkpoints"
    return {
        "teacher": teacher,
        "student": ckpts / "last.ckpt",
        "slim": ckpts / "difftalk_ema.safetensors",
        "losses": losses.values,
        "data_root": data_root,
        "tmp": tmp,
    }


@pytest.mark.slow
def test_distillation_steps_give_an_ordinary_difftalk_checkpoint_that_records_its_sampler(
    runs: dict[str, Any],
) -> None:
    assert len(runs["losses"]) == 4 and all(np.isfinite(runs["losses"])), runs["losses"]
    teacher = torch.load(runs["teacher"], map_location="cpu", weights_only=True)
    student = torch.load(runs["student"], map_location="cpu", weights_only=True)
    t_sd, s_sd = teacher["state_dict"], student["state_dict"]
    assert s_sd.keys() == t_sd.keys()
    assert all(s_sd[k].shape == t_sd[k].shape for k in t_sd)
    assert student["global_step"] == 4  # max_steps -1: 2 rounds x 2 steps
    assert student[SAMPLING_CKPT_KEY]["steps"] == 2 and student[SAMPLING_CKPT_KEY]["timesteps"] == STUDENT_GRID
    assert student["distill_state"]["round"] == 1 and "teacher" in student["distill_state"]
    # the EMA restarted at the round boundary: it averages the last round's student only (was 4: both rounds)
    assert int(s_sd["model_ema.num_updates"]) == 2
    # the student started from the teacher: same first stage, and the UNet moved from there
    fs = [k for k in t_sd if k.startswith("first_stage_model.")]
    assert fs and all(torch.equal(s_sd[k], t_sd[k]) for k in fs)
    assert any(not torch.equal(s_sd[k], t_sd[k]) for k in t_sd if k.startswith("model.diffusion_model."))

    cfg = load_config(student["difftalk_config"])  # a plain DiffTalk model, strict load
    plain = LatentDiffusion(cfg.model)
    load_difftalk_checkpoint(plain, runs["student"])

    with safe_open(str(runs["slim"]), framework="pt") as f:
        meta = f.metadata()
    recorded = json.loads(meta[SAMPLING_CKPT_KEY])
    assert recorded == {
        "sampler": "ddim",
        "steps": 2,
        "timesteps": STUDENT_GRID,
        "method": "progressive",
        "teacher": "last.ckpt",
        "teacher_steps": 8,
    }
    assert "difftalk_config" in meta


# ----------------------------------------------------------------------------- (d) pipeline and CLI defaults


def test_pipeline_defaults_to_the_recorded_sampler_and_an_explicit_choice_wins(
    runs: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    student = get_difftalk_inference(ckpt=runs["student"], device="cpu")
    teacher = get_difftalk_inference(ckpt=runs["teacher"], device="cpu")
    assert student.sampling is not None and list(student.sampling.timesteps) == STUDENT_GRID
    assert teacher.sampling is None

    def sampling(model: Any, **options: Any) -> tuple[str, int, Any]:
        plan = LipSyncPipeline(model, options=LipSyncOptions(**options)).sampling_plan()
        return plan.sampler, plan.steps, list(plan.timesteps) if plan.explicit else None

    assert sampling(student) == ("ddim", 2, STUDENT_GRID)
    assert sampling(student, steps=5) == ("ddim", 5, None)  # the uniform 5-step grid
    assert sampling(student, sampler="dpm++") == ("dpm++", 25, None)
    assert sampling(student, sampler="ddim", steps=2) == ("ddim", 2, STUDENT_GRID)
    assert sampling(teacher) == ("dpm++", 25, None)  # no record: exactly as before
    assert sampling(teacher, sampler="ddim", steps=2) == ("ddim", 2, None)


@pytest.fixture
def sampling_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, Any]]:
    """The CLI's LipSyncPipeline, recording what it would sample with instead of running."""
    seen: list[tuple[str, int, Any]] = []

    class Spy(LipSyncPipeline):
        def run(self, *args: Any, **kwargs: Any) -> None:
            plan = self._check_options()
            seen.append((plan.sampler, plan.steps, list(plan.timesteps) if plan.explicit else None))

    monkeypatch.setattr(inference, "LipSyncPipeline", Spy)  # the lipsync command imports it when it runs
    return seen


def test_cli_uses_the_students_sampler_unless_steps_are_given(
    runs: dict[str, Any], sampling_spy: list, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video = write_video(tmp_path / "person.mp4", seconds=0.12, fps=25)
    audio = write_wav(tmp_path / "speech.wav", seconds=0.12)
    argv = ["--video", str(video), "--audio", str(audio), "--out", str(tmp_path / "o.mp4"), "--no-progress"]
    caplog.set_level(logging.INFO)
    assert demo.main([*argv, "--ckpt", str(runs["slim"]), "--first-stage-ckpt", str(runs["student"])]) == 0
    assert demo.main([*argv, "--ckpt", str(runs["student"]), "--steps", "5"]) == 0
    assert demo.main([*argv, "--ckpt", str(runs["teacher"])]) == 0
    assert sampling_spy == [("ddim", 2, STUDENT_GRID), ("ddim", 5, None), ("dpm++", 25, None)]
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("sampling as the checkpoint records: ddim 2 steps") for m in said), said
    assert any(m.startswith("--steps 5 given: sampling with ddim 5 steps instead of") for m in said), said


# ----------------------------------------------------------------------------- (e) a bad teacher path


def test_missing_teacher_is_one_error_line(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-teacher.ckpt"
    argv = ["--base", str(TINY_CONFIG), "-t", "-l", str(tmp_path / "logs"), f"distill.teacher={missing}"]
    assert main([*argv, *tiny_overrides(tiny_dataset)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: distill.teacher: teacher checkpoint not found"], err
    assert not (tmp_path / "logs").exists()  # failed before any run folder was made


def test_resume_refuses_a_round_teacher_with_missing_weights(runs: dict[str, Any]) -> None:
    """A checkpoint's saved round teacher loads only when complete (bar the EMA and first-stage keys it leaves out):
    a missing weight is an error naming the key, not a silently half-loaded teacher."""
    from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import CheckpointError
    from talkingface.training.distill import load_round_teacher

    student = torch.load(runs["student"], map_location="cpu", weights_only=True)
    saved = dict(student["distill_state"]["teacher"])
    teacher = LatentDiffusion(load_config(student["difftalk_config"]).model)
    load_round_teacher(teacher, saved)  # complete: loads
    key = next(k for k in saved if k.startswith("model.diffusion_model."))
    assert torch.equal(teacher.state_dict()[key], saved[key])
    del saved[key]
    with pytest.raises(CheckpointError, match="missing keys") as err:
        load_round_teacher(teacher, saved)
    assert key in str(err.value)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_round_teacher(teacher, {**student["distill_state"]["teacher"], "bogus.weight": torch.zeros(1)})


@pytest.mark.slow
def test_a_distilled_student_distils_further_from_its_own_grid(
    runs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A student as teacher: the next rounds halve the grid it records (not the uniform grid of its step count, which
    it was never trained on), and a teacher_steps that disagrees with that grid is one error line."""
    grids = distillation_grids(4, 1, teacher_grid=[188, 438, 688, 938])
    assert [g.tolist() for g in grids] == [[188, 438, 688, 938], [438, 938], [938]]
    with pytest.raises(SamplerError):
        distillation_grids(4, 1, teacher_grid=[188, 438, 938])
    with pytest.raises(SamplerError):
        distillation_grids(2, 1, teacher_grid=[700, 300])

    tmp, data_root = runs["tmp"], runs["data_root"]
    run = tmp / "further"
    extra = {"distill.teacher": runs["student"], "distill.teacher_steps": 2, "distill.student_steps": 1}
    extra["distill.steps_per_round"] = 1
    argv = ["--base", str(TINY_CONFIG), "-t", "--run-dir", str(run), *tiny_overrides(data_root, **extra)]
    assert main(argv) == 0
    further = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert further[SAMPLING_CKPT_KEY]["timesteps"] == STUDENT_GRID[1::2]  # the 2-step student's grid, halved
    assert STUDENT_GRID[1::2] != distillation_grids(2, 1)[-1].tolist()  # (the uniform route would differ)

    wrong = {**extra, "distill.teacher_steps": 4, "distill.student_steps": 2}
    argv = ["--base", str(TINY_CONFIG), "-t", "--run-dir", str(tmp / "wrong"), *tiny_overrides(data_root, **wrong)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "set distill.teacher_steps=2" in err[0], err


def test_learnability_evaluates_a_student_with_its_own_steps_unless_told() -> None:
    """``--sampler recorded`` without ``--sample-steps`` is the student's own grid (it used to be 20 uniform DDIM
    steps, silently: the benchmark's default)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import learnability

    def steps(*argv: str) -> Any:
        return learnability.resolve_sample_steps(learnability.build_parser().parse_args(["--out", "o", *argv]))

    assert steps("--sampler", "recorded").sample_steps == 0  # -> the recorded steps and timesteps
    assert steps("--sampler", "recorded", "--sample-steps", "8").sample_steps == 8
    assert steps().sample_steps == learnability.DEFAULT_SAMPLE_STEPS == 20
    assert steps("--sampler", "ddim").sample_steps == 20


# ----------------------------------------------------------------------------- (e) trajectory distillation


def test_the_unrolled_chain_is_the_ddim_sampler_and_passes_gradients_to_every_step() -> None:
    """``ddim_trajectory`` is ``ddim_sample`` (eta 0, explicit grid, inpainting, same generator draws) with the
    gradient kept: a per-step scale on the noise prediction gets a gradient at every student timestep."""
    grid = distillation_grids(16, 4)[-1]
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, :3] = 1.0
    sampled = ddim_sample(toy_eps, ALPHAS, x_T, ddim(4, grid), x0, mask, torch.Generator().manual_seed(5))
    scales = torch.ones(len(grid), requires_grad=True)
    index = {int(t): i for i, t in enumerate(grid)}

    def scaled(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return toy_eps(x, t) * scales[index[int(t[0])]]

    unrolled = ddim_trajectory(scaled, ALPHAS, x_T, grid, x0, mask, torch.Generator().manual_seed(5))
    assert torch.allclose(unrolled, sampled, atol=1e-6)
    ((unrolled - x0) ** 2).mean().backward()
    assert scales.grad is not None and bool((scales.grad.abs() > 0).all()), scales.grad
    # a different kept-region draw changes the result: the generator is really used
    other = ddim_trajectory(toy_eps, ALPHAS, x_T, grid, x0, mask, torch.Generator().manual_seed(6))
    assert not torch.allclose(other, sampled)


def trajectory_module(tmp: Path, data_root: Path, teacher: Path, **extra: object) -> Any:
    """A trajectory-distillation module and one training batch, built as the trainer builds them."""
    from talkingface.training.data import build_datamodule
    from talkingface.training.distill import TrajectoryDistillation, check_distill_config
    from talkingface.training.run import build_module

    values = {"distill.teacher": teacher, "distill.method": "trajectory", "distill.teacher_steps": 8}
    values.update({"distill.student_steps": 2, **extra})
    cfg = check_distill_config(load_training_config(TINY_CONFIG, tiny_overrides(data_root, **values)))
    module = build_module(cfg, 1e-3)
    assert isinstance(module, TrajectoryDistillation)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    return module, next(iter(datamodule.train_dataloader()))


@pytest.mark.slow
def test_trajectory_loss_is_the_gap_between_the_chains_and_training_closes_it(runs: dict[str, Any]) -> None:
    """The loss is the generated-region MSE between the student's 2-step chain and the teacher's 8-step chain from
    the same noise; a few optimizer steps on one batch shrink it (the gradient reaches the student through the
    unrolled chain)."""
    torch.manual_seed(0)
    module, batch = trajectory_module(runs["tmp"] / "traj-loss", runs["data_root"], runs["teacher"])
    assert [g.tolist() for g in module.grids] == [distillation_grids(8, 2)[0].tolist(), STUDENT_GRID]
    noise = torch.randn(2, 3, 16, 16)

    def loss() -> torch.Tensor:
        return module.distill_loss(batch, noise=noise, generator=torch.Generator().manual_seed(3))[0]

    with torch.no_grad():
        start = float(loss())
    assert start > 1e-5
    optimizer = torch.optim.Adam(module.model.parameters(), lr=2e-5)
    for _ in range(30):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        end = float(loss())
    assert end < 0.5 * start, (start, end)


@pytest.mark.slow
def test_trajectory_run_continues_a_progressive_student_and_records_its_method(
    runs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """``distill.method=trajectory distill.student=...``: one round of ``steps_per_round`` steps from the given
    student's weights, an ordinary checkpoint recording the same grid with method ``trajectory``; a student whose
    recorded grid is not the run's, a missing student file and a student with the progressive method are one
    error line each. Interrupted, it resumes where it stopped."""
    tmp, data_root = runs["tmp"], runs["data_root"]
    run = tmp / "trajectory"
    extra = {"distill.teacher": runs["teacher"], "distill.method": "trajectory", "distill.student": runs["student"]}
    extra.update({"distill.teacher_steps": 8, "distill.student_steps": 2, "distill.steps_per_round": 3})
    extra["train.export_slim_on_end"] = True
    argv = ["--base", str(TINY_CONFIG), "-t", "--run-dir", str(run), *tiny_overrides(data_root, **extra)]
    capsys.readouterr()
    assert main(argv, extra_callbacks=[InterruptAt(1)]) == 128 + signal.SIGINT  # Ctrl-C, then --resume
    stopped = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    teacher_sha256 = hashlib.sha256(Path(runs["teacher"]).read_bytes()).hexdigest()
    assert stopped["global_step"] == 2 and stopped["distill_state"] == {"round": 0, "teacher_sha256": teacher_sha256}
    steps = Losses()
    assert main(["--resume", str(run), "-t"], extra_callbacks=[steps]) == 0
    assert len(steps.values) == 1  # the one step left, from the checkpoint (not restarted from distill.student)
    out = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert out["global_step"] == 3  # max_steps -1: one round
    assert out[SAMPLING_CKPT_KEY]["timesteps"] == STUDENT_GRID and out[SAMPLING_CKPT_KEY]["method"] == "trajectory"
    progressive = torch.load(runs["student"], map_location="cpu", weights_only=True)["state_dict"]
    teacher = torch.load(runs["teacher"], map_location="cpu", weights_only=True)["state_dict"]
    assert out["state_dict"].keys() == teacher.keys()
    # it started from the progressive student's EMA weights: nearer to them than to the teacher's
    key = next(k for k in teacher if k.startswith("model.diffusion_model.") and teacher[k].ndim == 4)
    ema_key = "model_ema." + key[len("model.") :].replace(".", "")
    start = progressive[ema_key]
    assert not torch.equal(start, teacher[ema_key])
    moved = out["state_dict"][key]
    assert (moved - start).norm() < (moved - teacher[ema_key]).norm()
    with safe_open(str(run / "checkpoints" / "difftalk_ema.safetensors"), framework="pt") as f:
        recorded = json.loads(f.metadata()[SAMPLING_CKPT_KEY])
    assert recorded["timesteps"] == STUDENT_GRID and recorded["method"] == "trajectory"

    def one_error(name: str, **changes: object) -> str:
        values = {**extra, **changes}
        argv = ["--base", str(TINY_CONFIG), "-t", "--run-dir", str(tmp / name), *tiny_overrides(data_root, **values)]
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        return err[0]

    wrong_grid = one_error("wrong-grid", **{"distill.teacher_steps": 16, "distill.student_steps": 2})
    assert "distill.student" in wrong_grid and str(STUDENT_GRID) in wrong_grid
    missing = tmp / "no-such-student.ckpt"
    assert one_error("missing", **{"distill.student": missing}) == (
        f"error: {missing}: distill.student: student checkpoint not found"
    )
    assert "distill.student" in one_error("progressive", **{"distill.method": "progressive"})


# ----------------------------------------------------------------------------- (f) the teacher file on resume


@pytest.mark.slow
def test_resume_in_the_first_round_refuses_a_changed_teacher_file(
    runs: dict[str, Any], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The checkpoints record the SHA-256 of the teacher file; resuming in the first round (whose teacher is that
    file) with another file at its path is one error line, exit 2, and the checkpoint is untouched. A checkpoint that
    records no checksum (older versions) resumes with a warning."""
    tmp = runs["tmp"] / "teacher-changed"
    teacher = tmp / "teacher.ckpt"
    tmp.mkdir()
    shutil.copyfile(runs["teacher"], teacher)
    run = tmp / "run"
    extra = {"distill.teacher": teacher, "distill.teacher_steps": 4, "distill.student_steps": 2}
    extra["distill.steps_per_round"] = 3  # one round of 3 steps
    argv = ["--base", str(TINY_CONFIG), "-t", "--run-dir", str(run), *tiny_overrides(runs["data_root"], **extra)]
    assert main(argv, extra_callbacks=[InterruptAt(1)]) == 128 + signal.SIGINT
    last = run / "checkpoints" / "last.ckpt"
    stopped = torch.load(last, map_location="cpu", weights_only=True)
    original = hashlib.sha256(teacher.read_bytes()).hexdigest()
    assert stopped["distill_state"] == {"round": 0, "teacher_sha256": original}

    # another file at the teacher's path: the same architecture, one weight changed
    ckpt = torch.load(teacher, map_location="cpu", weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.startswith("model.diffusion_model."))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1e-3
    torch.save(ckpt, teacher)
    changed = hashlib.sha256(teacher.read_bytes()).hexdigest()
    before = last.read_bytes()
    capsys.readouterr()
    assert main(["--resume", str(run), "-t"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {teacher}: the teacher changed since this run started (sha256 {original[:16]}... recorded, "
        f"{changed[:16]}... now); put the original teacher file back to resume, or start a new run (another "
        "--run-dir) to distil this one"
    ], err
    assert last.read_bytes() == before

    # an older checkpoint without the checksum: resumes, with a warning
    del stopped["distill_state"]["teacher_sha256"]
    torch.save(stopped, last)
    caplog.set_level(logging.WARNING)
    steps = Losses()
    assert main(["--resume", str(run), "-t"], extra_callbacks=[steps]) == 0
    assert len(steps.values) == 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith(f"{teacher}: the checkpoint records no checksum of the teacher") for m in warned), warned
    done = torch.load(last, map_location="cpu", weights_only=True)
    assert done["distill_state"]["teacher_sha256"] == changed  # the file it continued with
