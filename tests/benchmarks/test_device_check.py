"""The GPU check's own code, run on CPU (``benchmarks/device_check.py --smoke``), so it cannot rot between GPUs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _device_check():
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "benchmarks" / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_run_passes_and_writes_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "check.json"
    # compile is left out for time (its first CPU compile takes over a minute); the rest runs as on a GPU
    assert _device_check().main(["--smoke", "--skip", "compile", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {r["part"]: r for r in report["rows"]}
    assert rows["bf16 vs fp32 noise prediction"]["ok"] is True
    assert 0 < rows["bf16 vs fp32 noise prediction"]["data"]["rel"] < 0.05  # a real difference, not zeros
    assert rows["DDP step (gloo)"]["ok"] is True
    assert {"train reference (batch 2)", "train fast (batch 2)"} <= rows.keys()
    lipsync = [p for p in rows if p.startswith("lipsync ")]
    # the fast default and, by default, the shipped 4-step student; then the student on a larger clip
    assert len(lipsync) == 3, lipsync
    assert sum("distilled student (timesteps [188, 438, 688, 938])" in p for p in lipsync) == 2, lipsync
    assert any(p.startswith("lipsync 854x480 ") for p in lipsync), lipsync
    fast = next(r for p, r in rows.items() if "fast default" in p)
    stages = {s["stage"]: s for s in fast["data"]["stages"]}  # where each frame's time went
    assert {"inputs", "encode", "sample", "decode", "paste", "write"} <= stages.keys()
    assert all(s["ms_per_frame"] > 0 for s in stages.values())
    assert fast["data"]["fps_end_to_end"] <= fast["data"]["fps_generate"]
    (stream,) = [r for p, r in rows.items() if p.startswith("stream ")]
    assert stream["data"]["rtf"] > 0
    assert rows["first stage bf16 (shipped)"]["data"]["encode_decode_psnr_db"] >= 45
    assert {"train step compile=eager (batch 1)", "train step compile=blocks (batch 1)"} <= rows.keys()
    assert all(r["ok"] is not False for r in report["rows"])


def test_untrained_unet_is_perturbed_so_comparisons_mean_something() -> None:
    dc = _device_check()
    model = dc._model(dc.TINY_CONFIG, torch.device("cpu")).eval()
    x, t, cond = dc._inputs(model, 2, torch.device("cpu"))
    with torch.no_grad():
        eps = model.predict_eps(x, t, cond)
    assert eps.abs().mean() > 1e-3


@pytest.mark.slow
def test_fused_adamw_check_compares_the_optimisers_on_the_same_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA-only check, run with the CPU fused kernel (torch >= 2.4) by pretending the device is a GPU."""
    from talkingface.training import module as training_module

    dc = _device_check()
    monkeypatch.setattr(training_module, "fused_adamw_supported", lambda params: True)
    cpu = torch.device("cpu")
    make, batch = dc._model, dc._train_batch
    monkeypatch.setattr(dc, "_model", lambda config, device: make(config, cpu))
    monkeypatch.setattr(dc, "_train_batch", lambda model, n, device: batch(model, n, cpu))

    class FakeCuda:
        type = "cuda"

    row = dc.check_fused_adamw(dc.TINY_CONFIG, FakeCuda())
    assert row.ok is True, row.figure
    assert row.data["max"] <= dc.ADAMW_TOL
