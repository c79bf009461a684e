"""The first stage in bf16 (``--first-stage-precision``) against float32: how far the frames move, and the time.

    python benchmarks/first_stage_precision.py            # the shipped synthetic first stage and the paper config
    python benchmarks/first_stage_precision.py --device cuda --batch 32

For each first stage, the benchmark clip's face crops (4 frames of the synthetic portrait at the first stage's
resolution) are encoded and decoded by ``DiffTalkModel.encode_first_stage`` / ``decode_first_stage`` under the
pipeline's own ``FirstStageRunner`` in bf16 and in float32; printed: the PSNR of the bf16 frames
against the float32 ones (uint8, as the pipeline writes them) for the decode alone and for encode + decode, the
relative error of the latents, and the milliseconds per frame of each (``--batch`` frames at a time; on CUDA with
the first stage in channels-last, as the pipeline puts it). The paper config has random weights (its published
first stage is not bundled): its figures bound the arithmetic, and its codebook lookup is random, so a latent that
moves a little can pick another code there; a trained codebook is far apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from data_fixtures import face_frames  # noqa: E402

from talkingface.inference.model_choice import resolve_checkpoint  # noqa: E402
from talkingface.inference.pipeline import to_uint8  # noqa: E402
from talkingface.inference.sampling import FirstStageRunner  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk import (  # noqa: E402
    DiffTalkModel,
    get_difftalk_inference,
    load_config,
)
from talkingface.model.image_driven_talkingface.DiffTalk.config import default_config_path  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def timed_ms(fn: object, device: torch.device, frames: int, reps: int) -> float:
    fn()  # type: ignore[operator]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()  # type: ignore[operator]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1e3 * (time.perf_counter() - start) / reps / frames


@torch.no_grad()
def measure(name: str, model: DiffTalkModel, device: torch.device, batch: int, reps: int) -> dict[str, float]:
    import cv2

    model = model.to(device).eval()
    r = model.config.first_stage.resolution
    faces = np.stack([cv2.resize(f, (r, r), interpolation=cv2.INTER_AREA) for f in face_frames(0.16, 25)])
    x = (torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1.0).to(device)
    fp32 = FirstStageRunner(model)
    z32 = fp32.encode(x)
    d32 = to_uint8(fp32.decode(z32).clamp(-1, 1))
    bf16 = FirstStageRunner(model, torch.bfloat16)  # channels-last on CUDA, as the pipeline runs it
    z16 = bf16.encode(x)
    dec16 = to_uint8(bf16.decode(z32).clamp(-1, 1))
    both16 = to_uint8(bf16.decode(z16).clamp(-1, 1))
    row = {
        "decode_psnr_db": psnr(d32, dec16),
        "encode_decode_psnr_db": psnr(d32, both16),
        "latent_rel_err": float((z16 - z32).norm() / z32.norm()),
    }
    xb = x[torch.arange(batch) % len(x)]
    zb = z32[torch.arange(batch) % len(x)]
    for label, runner in (("fp32", fp32), ("bf16", bf16)):
        row[f"encode_ms_{label}"] = timed_ms(lambda r=runner: r.encode(xb), device, batch, reps)
        row[f"decode_ms_{label}"] = timed_ms(lambda r=runner: r.decode(zb), device, batch, reps)
    print(
        f"| {name} | {r} | {row['decode_psnr_db']:.1f} | {row['encode_decode_psnr_db']:.1f} | "
        f"{row['latent_rel_err']:.4f} | {row['encode_ms_fp32']:.2f} / {row['encode_ms_bf16']:.2f} | "
        f"{row['decode_ms_fp32']:.2f} / {row['decode_ms_bf16']:.2f} |"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2, help="frames per timed call")
    p.add_argument("--reps", type=int, default=1, help="timed calls")
    p.add_argument("--no-paper", action="store_true", help="only the shipped first stage")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"first stage bf16 vs fp32 on {where}; batch {args.batch}")
    print(
        "| first stage | side | decode PSNR (dB) | encode + decode PSNR (dB) | latent rel. error "
        "| encode ms/frame fp32 / bf16 | decode ms/frame fp32 / bf16 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    n = (args.batch, args.reps)
    path, _ = resolve_checkpoint(None)
    rows = {"shipped": measure("shipped synthetic demo model", get_difftalk_inference(ckpt=str(path)), device, *n)}
    if not args.no_paper:
        cfg = load_config(default_config_path(), ["model.first_stage.ckpt_path=null"]).model
        rows["paper"] = measure("paper config (random weights)", DiffTalkModel(cfg), device, *n)
    if args.json:
        args.json.write_text(json.dumps({"device": where, "batch": args.batch, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
