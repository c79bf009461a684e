"""One command for everything that needs a GPU: CUDA correctness, training throughput, inference speed.

    python benchmarks/device_check.py                 # on a GPU machine: paper config, about 6 minutes on an H100
    python benchmarks/device_check.py --smoke         # the same code on CPU with the tiny config (CI runs this)
    python benchmarks/device_check.py --student exported/student.safetensors   # another student's row

Prints one markdown table headed by the device's name and writes the same figures as JSON (``--json``, default
``benchmark-results/device_check.json``, git-ignored, or ``$OUT/device_check.json`` where ``OUT`` is set). Every
part goes through the product's own code:

- **bf16 vs fp32**: the pipeline's ``UNetRunner`` noise prediction under bf16 autocast against float32 (random
  paper-config weights, TF32 off), relative L2 error within ``BF16_TOL``.
- **compiled vs eager**: ``UNetRunner(compile=True)`` against eager, float32, within ``COMPILE_TOL``.
- **fused vs unfused AdamW**: three optimiser steps of ``LatentDiffusion.configure_optimizers`` with the fused
  CUDA kernel and without, largest parameter difference within ``ADAMW_TOL``.
- **DDP step**: ``trainer/DiffTalkTrainer.py --gpus 0, --strategy ddp`` (NCCL on one GPU; gloo with ``--smoke``),
  bf16 mixed precision on a GPU, two steps on a tiny generated dataset; the checkpoint must record them.
- ``benchmarks/inference_fps.py`` on the benchmark clip (the fast default DPM-Solver++ 25 as the baseline, the
  distilled student's recorded sampler at batch 16, 32 and 64 and compiled at 64: by default the shipped 4-step
  student's DDIM grid), with each setting's per-stage table; then the student at batch 32 on a 720p clip;
- ``benchmarks/stream_latency.py --model paper-student``: ``LipSyncStream``'s real-time factor and latency;
- ``benchmarks/train_throughput.py``: reference-equivalent fp32 against the fast path at batch 8, then the fast
  path (eager) at batch 32 and 64; ``benchmarks/train_compile.py``: eager, ``train.compile=blocks`` and ``full``
  at batch 32 (first-step compile time, then step time);

each in a subprocess with its own time limit, their JSON merged here, in that order (the most wanted first:
what does not fit in ``--budget-s`` is skipped and says so).

Exit status: 0 when every check passed, 1 when one failed or a part did not finish.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from talkingface.demo_assets import demo_student_path  # noqa: E402
from talkingface.inference.sampling import UNetRunner  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkConditions, load_config  # noqa: E402
from talkingface.training.module import LatentDiffusion  # noqa: E402

log = logging.getLogger("device_check")

PAPER_CONFIG = ROOT / "configs" / "latent-diffusion" / "talking.yaml"
TINY_CONFIG = ROOT / "configs" / "latent-diffusion" / "talking-tiny.yaml"
BF16_TOL = 0.05  # relative L2 error of the bf16 noise prediction (bf16 keeps 8 mantissa bits)
COMPILE_TOL = 1e-3  # relative L2 error, compiled vs eager float32
ADAMW_TOL = 1e-6  # largest absolute parameter difference after three fused vs unfused AdamW steps (lr 1e-4)


@dataclass
class Row:
    part: str
    figure: str
    ok: bool | None  # None: a measurement without a pass/fail threshold
    seconds: float = 0.0
    data: dict = field(default_factory=dict)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def _model(config: Path, device: torch.device) -> LatentDiffusion:
    """Random paper-config weights. The UNet's zero-initialised layers (its output convolution among them, as in
    latent-diffusion) get small random values: an untrained UNet predicts exactly zero noise, and any two ways of
    computing zero agree."""
    torch.manual_seed(0)
    cfg = load_config(config, ["model.first_stage.ckpt_path=null"])
    model = LatentDiffusion(cfg.model, learning_rate=1e-4)
    with torch.no_grad():
        for p in model.model.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return model.to(device)


def _inputs(model: LatentDiffusion, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, object]:
    c = model.config
    g = torch.Generator().manual_seed(1)
    shape = (batch, c.first_stage.embed_dim, c.unet.image_size, c.unet.image_size)
    cond = DiffTalkConditions(
        audio=torch.randn(batch, c.conditioning.audio_dim, generator=g).to(device),
        landmarks=torch.randn(batch, c.conditioning.landmark_dim, generator=g).to(device),
        reference=torch.randn(shape, generator=g).to(device),
        masked=torch.randn(shape, generator=g).to(device),
    )
    x = torch.randn(shape, generator=g).to(device)
    t = torch.randint(0, model.num_timesteps, (batch,), generator=g).to(device)
    return x, t, cond


def _train_batch(model: LatentDiffusion, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A dataset-shaped batch with cached latents (the trainer's latent-cache path)."""
    c = model.config.conditioning
    g = torch.Generator().manual_seed(2)
    shape = (batch, model.config.first_stage.embed_dim, model.image_size, model.image_size)
    out = {
        "landmarks": torch.rand(batch, c.landmark_count, 2, generator=g) * model.config.first_stage.resolution,
        "audio_smooth": torch.randn(batch, c.audio_smooth_windows, c.audio_window, c.audio_feature_dim, generator=g),
        **{k: torch.randn(shape, generator=g) for k in ("latent", "reference_latent", "masked_latent")},
    }
    return {k: v.to(device) for k, v in out.items()}


def check_bf16(config: Path, device: torch.device) -> Row:
    model = _model(config, device).eval()
    x, t, cond = _inputs(model, 4, device)
    with torch.no_grad():
        ref = UNetRunner(model, None).eps_fn(cond)(x, t)
        low = UNetRunner(model, torch.bfloat16).eps_fn(cond)(x, t)
    if not ref.any():
        raise AssertionError("the fp32 noise prediction is all zeros: the comparison would prove nothing")
    rel = _rel(low, ref)
    finite = bool(torch.isfinite(low).all())
    ok = finite and rel <= BF16_TOL
    return Row("bf16 vs fp32 noise prediction", f"rel L2 {rel:.2e} (tolerance {BF16_TOL})", ok, data={"rel": rel})


def time_unet(config: Path, device: torch.device, batch: int = 16, iters: int = 20) -> Row:
    """Milliseconds per UNet noise prediction (one sampler step of a batch), fp32 vs bf16 autocast, eager."""
    model = _model(config, device).eval()
    x, t, cond = _inputs(model, batch, device)
    ms = {}
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        eps = UNetRunner(model, dtype).eps_fn(cond)
        with torch.no_grad():
            for _ in range(3):
                eps(x, t)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(iters):
                eps(x, t)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        ms[label] = 1000 * (time.perf_counter() - start) / iters
    figure = f"batch {batch}: fp32 {ms['fp32']:.1f} ms, bf16 {ms['bf16']:.1f} ms per step"
    return Row("UNet step time (eager)", figure, None, data=ms)


def check_compile(config: Path, device: torch.device) -> Row:
    model = _model(config, device).eval()
    x, t, cond = _inputs(model, 4, device)
    with torch.no_grad():
        eager = UNetRunner(model, None).eps_fn(cond)(x, t)
        compiled = UNetRunner(model, None, compile=True).eps_fn(cond)(x, t)
    rel = _rel(compiled, eager)
    ok = rel <= COMPILE_TOL
    return Row("compiled vs eager UNet", f"rel L2 {rel:.2e} (tolerance {COMPILE_TOL:g})", ok, data={"rel": rel})


def check_fused_adamw(config: Path, device: torch.device) -> Row:
    """The trainer's optimiser (``configure_optimizers``: fused AdamW on a GPU) against the unfused AdamW, both fed
    the same gradients for three steps, so that only the optimiser kernels differ (recomputing the gradients for
    each would add the GPU backward's own nondeterminism, which Adam magnifies for tiny gradients)."""
    if device.type != "cuda":
        return Row("fused vs unfused AdamW", "skipped: the fused kernel needs CUDA", None)
    model = _model(config, device).train()
    product = model.configure_optimizers()
    if not product.defaults.get("fused"):
        return Row("fused vs unfused AdamW", "configure_optimizers did not pick the fused AdamW on CUDA", False)
    params = [p for p in model.trainable_parameters() if p.requires_grad]
    hyper = {k: product.defaults[k] for k in ("lr", "betas", "eps", "weight_decay")}
    copies = {fused: [p.detach().clone() for p in params] for fused in (True, False)}
    optimizers = {fused: torch.optim.AdamW(copies[fused], **hyper, fused=fused or None) for fused in copies}
    batch = _train_batch(model, 2, device)
    for step in range(3):
        with torch.no_grad():
            for p, q in zip(params, copies[True]):
                p.copy_(q)
        torch.manual_seed(step)
        loss, _ = model.shared_step(batch)
        loss.backward()
        for fused, tensors in copies.items():
            for p, q in zip(params, tensors):
                q.grad = None if p.grad is None else p.grad.detach().clone()
            optimizers[fused].step()
        model.zero_grad(set_to_none=True)
    diff = max(float((a - b).abs().max()) for a, b in zip(copies[True], copies[False]))
    ok = diff <= ADAMW_TOL
    figure = f"max |diff| {diff:.2e} after 3 steps of lr {hyper['lr']:g} (tolerance {ADAMW_TOL:g})"
    return Row("fused vs unfused AdamW, same gradients", figure, ok, data={"max": diff})


def check_ddp(device: torch.device, timeout_s: int) -> Row:
    from train_support import TINY_CONFIG as TEST_CONFIG
    from train_support import TRAINER, tiny_overrides, write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_root = write_dataset(tmp / "data")
        extra: dict[str, object] = {"train.max_steps": 2, "train.ddp_timeout_s": 120}
        if device.type == "cuda":
            devices = ["--gpus", "0,"]
            extra["train.precision"] = "bf16-mixed"
            backend = "NCCL, bf16-mixed"
        else:
            devices = ["--devices", "1"]
            backend = "gloo"
        cmd = [sys.executable, str(TRAINER), "--base", str(TEST_CONFIG), "-t", *devices, "--strategy", "ddp"]
        cmd += ["-l", str(tmp / "logs"), *tiny_overrides(data_root, **extra)]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        env.pop("TALKINGFACE_RUN_DIR", None)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            return Row(f"DDP step ({backend})", f"trainer exited {proc.returncode}: {proc.stderr[-800:]}", False)
        (run,) = list((tmp / "logs").iterdir())
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        step = int(ckpt["global_step"])
        finite = all(bool(torch.isfinite(v).all()) for v in ckpt["state_dict"].values() if v.is_floating_point())
        ok = step == 2 and finite
        figure = f"trainer --strategy ddp: {step} steps, weights finite: {finite}"
        return Row(f"DDP step ({backend})", figure, ok, data={"global_step": step, "finite": finite})


def run_benchmark(name: str, argv: list[str], json_path: Path, timeout_s: int) -> tuple[dict | None, str]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / name), *argv, "--json", str(json_path)]
    log.info("running %s", " ".join(cmd[1:]))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, f"did not finish in {timeout_s} s; output so far:\n{out[-2000:]}"
    text = proc.stdout + ("\n" + proc.stderr[-3000:] if proc.returncode else "")
    # train_compile.py exits 3 after writing its JSON when a mode's first step ran past --timeout (a result)
    if proc.returncode not in (0, 3) or not json_path.is_file():
        return None, f"exited {proc.returncode}:\n{text[-3000:]}"
    return json.loads(json_path.read_text()), proc.stdout


def timed(fn: Callable[[], Row]) -> Row:
    start = time.perf_counter()
    try:
        row = fn()
    except Exception as e:  # a failing check is a result, not the end of the run
        log.error("%s", traceback.format_exc())
        row = Row(getattr(fn, "__name__", "check"), f"raised {type(e).__name__}: {e}", False)
    row.seconds = time.perf_counter() - start
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.info("%s: %s (%.1f s)", row.part, row.figure, row.seconds)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU run of the same code with the tiny config")
    p.add_argument("--json", type=Path, default=None, help="where to write the figures (see above)")
    p.add_argument("--frames", type=int, default=256, help="frames of the inference benchmark clips")
    p.add_argument("--budget-s", type=float, default=540, help="skip the parts that would end after this many seconds")
    p.add_argument("--train-steps", type=int, default=20, help="timed steps of each training path")
    p.add_argument(
        "--detections", type=Path, default=None, help="face landmarks for the inference clip (inference_fps.py)"
    )
    p.add_argument("--detections-720p", type=Path, default=None, help="face landmarks for the 720p inference clip")
    p.add_argument(
        "--student",
        type=Path,
        default=demo_student_path() if demo_student_path().is_file() else None,
        help="a distilled student checkpoint: time its recorded few-step sampler on the benchmark's model (default: "
        "the shipped synthetic 4-step student, i.e. DDIM 4 steps on its grid; the cost does not depend on the weights)",
    )
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: inference, inference720, stream, first_stage, train, train_compile, "
        "bf16, unet, compile, adamw, ddp (correctness: bf16, unet, compile and adamw)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmark-results"
    json_path = args.json or out_dir / "device_check.json"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    if args.smoke:
        device = torch.device("cpu")
        config = TINY_CONFIG
    elif not torch.cuda.is_available():
        print("error: no CUDA device; use --smoke for the CPU run", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
        config = PAPER_CONFIG
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run, tiny config)"
    header = f"device: {name} | torch {torch.__version__} | config {config.name}"
    log.info(header)

    deadline = time.monotonic() + args.budget_s
    rows: list[Row] = []

    def left(need: float) -> bool:
        return time.monotonic() + need <= deadline

    def report() -> None:
        payload = {"device": name, "torch": torch.__version__, "rows": [asdict(r) for r in rows]}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2) + "\n")

    def bench(part: str, script: str, argv: list[str], limit: int, describe: Callable[[dict], list[Row]]) -> None:
        if part in skip:
            return
        limit = int(min(limit, deadline - time.monotonic()))
        if limit < 30:
            rows.append(Row(script, "skipped: out of --budget-s", None))
            return
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            data, text = run_benchmark(script, argv, Path(tmp) / "out.json", limit)
        if data is None:
            log.error("%s: %s", script, text)
            rows.append(Row(script, text.strip().splitlines()[-1] if text.strip() else "no output", False))
        else:
            log.info("%s\n%s", script, text)
            rows.extend(describe(data))
        rows[-1].seconds = time.perf_counter() - start
        report()

    def train_rows(data: dict) -> list[Row]:
        out = []
        for r in data["results"]:
            figure = f"{r['samples_per_sec']:.1f} samples/s, {r['step_ms']:.0f} ms/step, {r['peak_memory_mib']:.0f} MiB"
            out.append(Row(f"train {r['name']} (batch {data['batch_size']})", figure, None, data=r))
        return out

    def inference_rows(data: dict) -> list[Row]:
        out = []
        for r in data["results"]:
            figure = (
                f"{r['fps_generate']:.2f} frames/s generating, {r['fps_end_to_end']:.2f} end to end (video decode "
                f"included), {r['fps_total']:.2f} with face detection"
            )
            stages = r.get("stages") or []
            if stages:
                figure += "; ms/frame: " + ", ".join(f"{x['stage']} {x['ms_per_frame']:.1f}" for x in stages)
            part = f"lipsync {data.get('video_size', '')} {r['setting']}"
            out.append(Row(part, figure, None, data={**r, "preprocess": data["preprocess"]}))
        return out

    def stream_rows(data: dict) -> list[Row]:
        out = []
        for r in data["rows"]:
            figure = (
                f"real-time factor {r['rtf']:.3f}, {r['fps']:.1f} frames/s, frame latency p50 "
                f"{1e3 * r['latency_p50_s']:.0f} ms / p95 {1e3 * r['latency_p95_s']:.0f} ms, audio lag p50 "
                f"{1e3 * r['audio_lag_p50_s']:.0f} ms"
            )
            pace = "real time" if r["realtime"] else "fast"
            out.append(Row(f"stream {data['model']}, {r['chunk_ms']} ms chunks, {pace}", figure, None, data=r))
        return out

    def first_stage_rows(data: dict) -> list[Row]:
        out = []
        for name, r in data["rows"].items():
            figure = (
                f"PSNR bf16 vs fp32: decode {r['decode_psnr_db']:.1f} dB, encode + decode "
                f"{r['encode_decode_psnr_db']:.1f} dB; ms/frame encode {r['encode_ms_fp32']:.2f} -> "
                f"{r['encode_ms_bf16']:.2f}, decode {r['decode_ms_fp32']:.2f} -> {r['decode_ms_bf16']:.2f} "
                f"(batch {data['batch']})"
            )
            out.append(Row(f"first stage bf16 ({name})", figure, None, data=r))
        return out

    def compile_rows(data: dict) -> list[Row]:
        out = []
        for r in data["results"]:
            compiled = f"compile {r['compile_s']:.0f} s, " if r.get("compile_s") is not None else ""
            figure = f"first step {r['first_step_s']:.1f} s ({compiled}{r['graphs']} graphs), "
            figure += f"then {r['step_ms']:.0f} ms/step"
            out.append(Row(f"train step compile={r['mode']} (batch {data['batch_size']})", figure, None, data=r))
        for mode in data.get("timed_out", []):
            out.append(
                Row(f"train step compile={mode} (batch {data['batch_size']})", "first step past --timeout", None)
            )
        return out

    compile_args = ["--batch-size", "32", "--modes", "eager,blocks,full", "--timeout", "150", "--steps", "5"]
    first_stage_args = ["--device", "cuda", "--batch", "32", "--reps", "5"]
    frames = ["--frames", str(args.frames)]
    student = ["--student", str(args.student.resolve())] if args.student else []
    inf_args = [*frames, "--settings", "fast,student", "--student-batches", "16,32,64", "--compile", *student]
    inf720_args = [*frames, "--video-size", "720p", "--settings", "student", "--student-batches", "32", "--no-flops"]
    inf720_args += student
    stream_args = ["--model", "paper-student", "--device", "cuda", "--seconds", "4", "--chunks", "40", "100"]
    stream_args += ["--batch-size", "4", "--threads", "4"]
    train_sweep = [
        ("8", ["--steps", str(args.train_steps), "--batch-size", "8"]),
        ("32", ["--steps", str(args.train_steps), "--batch-size", "32", "--paths", "fast", "--no-compile"]),
        ("64", ["--steps", str(args.train_steps), "--batch-size", "64", "--paths", "fast", "--no-compile"]),
    ]
    if args.smoke:
        from golden import SMALL_OVERRIDES  # the training scripts' smoke runs: the tiny config at 64 px

        small = [a for o in SMALL_OVERRIDES for a in ("--set", o)]
        tiny = ["--tiny", *small, "--frames", "2", "--steps", "1"]
        inf_args = [*tiny, "--settings", "fast,student", "--student-batches", "2", *student]
        inf720_args = [*tiny, "--video-size", "480p", "--settings", "student", "--student-batches", "2", "--no-flops"]
        inf720_args += ["--no-stages", *student]
        stream_args = ["--model", "student", "--device", "cpu", "--seconds", "0.4", "--chunks", "100"]
        stream_args += ["--no-realtime", "--batch-size", "4"]
        train_sweep = [("2", ["--tiny", *small, "--steps", "2", "--warmup", "0"])]
        first_stage_args = ["--device", "cpu", "--batch", "1", "--no-paper"]
        compile_args = ["--tiny", *small, "--batch-size", "1", "--steps", "1", "--warmup", "0"]
        compile_args += ["--modes", "eager,blocks", "--backend", "eager"]
    if args.detections:
        inf_args += ["--detections", str(args.detections)]
    if args.detections_720p:
        inf720_args += ["--detections", str(args.detections_720p)]
    bench("inference", "inference_fps.py", inf_args, 300, inference_rows)
    bench("inference720", "inference_fps.py", inf720_args, 120, inference_rows)
    bench("stream", "stream_latency.py", stream_args, 90, stream_rows)
    bench("first_stage", "first_stage_precision.py", first_stage_args, 60, first_stage_rows)
    for _, argv_b in train_sweep:
        bench("train", "train_throughput.py", argv_b, 150, train_rows)
    bench("train_compile", "train_compile.py", compile_args, 240, compile_rows)
    checks: list[tuple[str, Callable[[], Row], float]] = [
        ("bf16", lambda: check_bf16(config, device), 20),
        ("unet", lambda: time_unet(config, device, *((2, 2) if args.smoke else (16, 20))), 20),
        ("compile", lambda: check_compile(config, device), 90),
        ("adamw", lambda: check_fused_adamw(config, device), 20),
        ("ddp", lambda: check_ddp(device, int(max(30, min(300, deadline - time.monotonic())))), 40),
    ]
    for part, fn, need in checks:
        if part in skip or (part != "ddp" and "correctness" in skip):
            continue
        rows.append(timed(fn) if left(need) else Row(part, "skipped: out of --budget-s", None))
        report()

    print(f"\n{header}\n")
    print("| part | figure | result | seconds |")
    print("| --- | --- | --- | ---: |")
    for r in rows:
        if r.ok is None:
            verdict = "skipped" if r.figure.startswith("skipped") else "measured"
        else:
            verdict = "pass" if r.ok else "FAIL"
        figure = r.figure.replace("\n", " ").replace("|", "/")
        print(f"| {r.part} | {figure} | {verdict} | {r.seconds:.1f} |")
    report()
    print(f"\nJSON: {json_path}")
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
