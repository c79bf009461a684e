"""Two-process DDP training on CPU (gloo) through the real command line, with a hard timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_support import ROOT, TINY_CONFIG, TRAINER, tiny_overrides


@pytest.mark.slow
def test_two_process_cpu_ddp_writes_one_checkpoint(tiny_dataset: Path, tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    extra = {"train.max_steps": 2, "train.ddp_timeout_s": 60, "data.batch_size": 1}
    cmd = [sys.executable, str(TRAINER), "--base", str(TINY_CONFIG), "-t", "--devices", "2", "--strategy", "ddp"]
    cmd += ["-l", str(logdir), *tiny_overrides(tiny_dataset, **extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("TALKINGFACE_RUN_DIR", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = list(logdir.iterdir())  # both processes used the same run folder
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    # lr scaled by 2 processes x batch 1 x accumulate 1
    assert abs(ckpt["optimizer_states"][0]["param_groups"][0]["lr"] - 2e-4) < 1e-12
    assert "[rank 1]" not in proc.stderr or "ERROR" not in proc.stderr
