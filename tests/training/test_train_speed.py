"""The fast training path, checked on CPU: a compiled training step (whole UNet or block by block) matches an
eager one, and bf16 autocast stays finite over 100 optimizer steps. (The latent cache's identical losses:
``test_train_latent_cache.py``; the GPU figures: ``benchmarks/device_check.py``, ``benchmarks/train_compile.py``.)

Both use the tiny config at 64 px (16 x 16 latents, the tests' small variant) so that they run in seconds.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo
from golden import SMALL_OVERRIDES, TINY_CONFIG, fill_deterministic

from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkConditions, DiffTalkModel, load_config
from talkingface.training.config import load_training_config
from talkingface.training.run import build_module
from talkingface.training.speed import compile_unet, unet_blocks

SMALL = SMALL_OVERRIDES
ROOT = Path(__file__).resolve().parents[2]
#: torch.compile of the UNet on CPU takes over a minute (tests/benchmarks/test_device_check.py): too slow for each run.
COMPILE_ENV = "TALKINGFACE_TEST_COMPILE"


def small_model(*overrides: str) -> DiffTalkModel:
    torch.set_num_threads(1)
    model = DiffTalkModel(load_config(TINY_CONFIG, [*SMALL, *overrides]).model)
    fill_deterministic(model)
    return model


def batch(model: DiffTalkModel, n: int, seed: int) -> tuple[torch.Tensor, DiffTalkConditions]:
    """Latents and conditions of a random batch (latents as from the latent cache: no first stage in the loop)."""
    g = torch.Generator().manual_seed(seed)
    h, ccfg = model.image_size, model.config.conditioning
    z = torch.randn(n, model.channels, h, h, generator=g)
    cond = DiffTalkConditions(
        audio=model.encode_audio(torch.randn(n, ccfg.audio_smooth_windows, ccfg.audio_window, 29, generator=g)),
        landmarks=model.encode_landmarks(torch.rand(n, ccfg.landmark_count, 2, generator=g) * 64),
        reference=torch.randn(n, model.channels, h, h, generator=g),
        masked=torch.randn(n, model.channels, h, h, generator=g),
    )
    return z, cond


def training_step(model: DiffTalkModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one fixed batch and the UNet's gradient."""
    t = torch.tensor([10, 700])
    noise = torch.randn(2, model.channels, 16, 16, generator=torch.Generator().manual_seed(3))
    z, cond = batch(model, 2, seed=1)
    loss, _ = model.training_loss(z, cond, t=t, noise=noise)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.model.parameters()])


def assert_step_matches(compiled: DiffTalkModel, eager: DiffTalkModel) -> None:
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged by compiling
    (loss, grad), (loss_eager, grad_eager) = training_step(compiled), training_step(eager)
    torch.testing.assert_close(loss, loss_eager, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad, grad_eager, rtol=1e-3, atol=1e-5)


@pytest.mark.skipif(
    os.environ.get(COMPILE_ENV) != "1",
    reason=f"torch.compile on CPU takes over a minute; set {COMPILE_ENV}=1 to run it",
)
@pytest.mark.parametrize("mode", ["full", "blocks"])
def test_compiled_training_step_matches_eager(mode: str) -> None:
    torch._dynamo.reset()
    eager = small_model()
    compiled = copy.deepcopy(eager)
    compile_unet(compiled, mode)
    assert_step_matches(compiled, eager)


@pytest.mark.slow
def test_block_compile_reaches_every_block_and_blocks_alike_share_a_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.compile=blocks`` with a backend that only records dynamo's graphs (no code generation: seconds)."""
    torch._dynamo.reset()
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)  # PyTorch's default; restored afterwards
    graphs: list[torch.fx.GraphModule] = []

    def recording(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        graphs.append(gm)
        return gm.forward

    # num_res_blocks 2: three pairs of blocks are alike (same modules, shapes): input_blocks 1 and 2 (ResBlock
    # 32 -> 32 at 16 x 16), output_blocks 0 and 1 (ResBlock 128 -> 64 and attention at 8 x 8), output_blocks 4 and 5
    # (ResBlock 64 -> 32 at 16 x 16); the other 7 blocks differ
    eager = small_model("model.unet.num_res_blocks=2")
    compiled = copy.deepcopy(eager)
    compile_unet(compiled, "blocks", backend=recording)
    blocks = unet_blocks(compiled.model.diffusion_model)
    assert len(blocks) == 13 and all(b._compiled_call_impl is not None for b in blocks)
    assert_step_matches(compiled, eager)
    # one graph per distinct block: 10, more than dynamo's default limit of 8 per code object (which left blocks eager)
    assert len(graphs) == 10
    training_step(compiled)
    assert len(graphs) == 10  # the next step reuses them


def test_trainer_compiles_as_train_compile_says() -> None:
    """The trainer's ``build_module`` hands ``train.compile`` on: blocks compiles the blocks, not the whole UNet."""
    module = build_module(load_training_config(TINY_CONFIG, [*SMALL, "train.compile=blocks"]), 1e-4)
    unet = module.model.diffusion_model
    assert unet._compiled_call_impl is None
    assert all(b._compiled_call_impl is not None for b in unet_blocks(unet))
    whole = build_module(load_training_config(TINY_CONFIG, [*SMALL, "train.compile=true"]), 1e-4).model.diffusion_model
    assert whole._compiled_call_impl is not None
    assert all(b._compiled_call_impl is None for b in unet_blocks(whole))


def test_compile_modes_off_and_unknown() -> None:
    model = small_model()
    compile_unet(model, False)
    assert all(m._compiled_call_impl is None for m in model.modules())
    with pytest.raises(ValueError, match="blocks or full"):
        compile_unet(model, "fast")


@pytest.mark.slow
def test_bf16_autocast_stays_finite_over_100_steps() -> None:
    model = small_model().train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(5)
    for step in range(100):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z, cond = batch(model, 2, seed=step % 4)
            t = torch.randint(0, model.num_timesteps, (2,), generator=g)
            loss, _ = model.training_loss(z, cond, t=t, noise=torch.randn(z.shape, generator=g))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert torch.isfinite(loss), f"step {step}: loss {loss.item()}"
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.trainable_parameters())
    assert loss.dtype == torch.float32


@pytest.mark.slow
def test_compile_benchmark_prints_its_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks/train_compile.py`` on the small model, blocks compiled with dynamo's ``eager`` backend (graphs
    captured, no code generated), so the script that the GPU check runs cannot rot on CPU."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.recompile_limit)
    spec = importlib.util.spec_from_file_location("train_compile", ROOT / "benchmarks" / "train_compile.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["train_compile"] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    out = tmp_path / "compile.json"
    sets = [a for o in SMALL for a in ("--set", o)]
    argv = ["--tiny", *sets, "--batch-size", "2", "--steps", "1", "--warmup", "0", "--threads", "1"]
    assert bench.main([*argv, "--modes", "eager,blocks", "--backend", "eager", "--json", str(out)]) == 0
    eager, blocks = json.loads(out.read_text())["results"]
    assert (eager["mode"], eager["graphs"], eager["compile_s"]) == ("eager", 0, None)
    assert (blocks["mode"], blocks["graphs"]) == ("blocks", 9)  # the small UNet's 9 blocks all differ
    assert blocks["loss_diff_vs_eager"] < 1e-5 * abs(eager["loss_first_step"])


@pytest.mark.slow
def test_throughput_benchmark_trains_through_the_product_trainer(tmp_path: Path) -> None:
    """``benchmarks/train_throughput.py`` times the Lightning steps ``talkingface train`` runs (its module, trainer,
    precision plugin and callbacks), not a copy of the step: each path's options reach the trainer."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import product_training

    seen: list[tuple[str, bool]] = []
    fit = product_training.fit_steps

    def spy(config, overrides, batch_size, steps, device, cached, compile_backend="inductor"):  # noqa: ANN001, ANN202
        times = fit(config, overrides, batch_size, steps, device, cached, compile_backend)
        trainer_precision = times.module.trainer.precision  # the product's trainer ran the steps
        seen.append((trainer_precision, times.module.channels_last))
        return times

    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["train_throughput"] = bench
    spec.loader.exec_module(bench)
    bench.fit_steps = spy
    out = tmp_path / "throughput.json"
    sets = [a for o in SMALL for a in ("--set", o)]
    assert bench.main(["--tiny", *sets, "--batch-size", "2", "--steps", "1", "--warmup", "1", "--json", str(out)]) == 0
    results = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert seen == [("32-true", False), ("bf16-mixed", True)]
    assert set(results) == {"reference", "fast"}
    assert all(r["samples_per_sec"] > 0 and 0.5 < r["loss"] < 2.0 for r in results.values()), results
