"""Does the doubled side pay? A synthetic DiffTalk at 128 px (factor-8 first stage, synthetic-f8.yaml: the 512x512
mode at the synthetic scale) against the 64 px one (factor 4, synthetic.yaml: the 256x256 mode), on the same held-out
identities and frames.

    python benchmarks/sharpness_512.py --high runs/f8 --low talkingface/synthetic/assets
    python benchmarks/sharpness_512.py --high runs/f8 --low runs/learn9-real --device cuda --json runs/f8/s.json

``--high`` and ``--low`` are each a learnability run folder (``benchmarks/learnability.py --out``: its
``real/model`` and ``report.json``) or a model folder (``config.yaml``, ``model.safetensors``, ``first_stage.pt``,
e.g. the shipped ``talkingface/synthetic/assets``). ``benchmarks/learnability.py --compare-with MODEL`` runs this at
the end of its training. Both models generate the held-out frames of the high run's set (``--data``) at their own
side through the pipeline's frame path (:mod:`talkingface.synthetic.sharpness`); the low model's mouths are upsampled
with the pipeline's bicubic resampling and both are scored against the ground truth at the high side: mouth-box
PSNR/SSIM, per identity and pooled, next to each model's r, the control's r of the high run and the checks
(per-identity r >= 0.85 in every skin-tone group, shuffled-audio control <= 0.3). Then the cost per frame: FLOPs of
both configs (``benchmarks/inference_fps.stage_gflops``, as ``benchmarks/resolution_cost.py`` counts them) and the
seconds per frame measured here, with the training seconds per step the runs recorded. Writes the JSON (default
``HIGH/sharpness.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from inference_fps import stage_gflops  # noqa: E402
from resolution_cost import per_frame  # noqa: E402

from talkingface.constants import DEMO_STEPS  # noqa: E402
from talkingface.demo_assets import demo_model_paths  # noqa: E402
from talkingface.synthetic.face import TONE_GROUPS  # noqa: E402
from talkingface.synthetic.generate import tone_group  # noqa: E402
from talkingface.synthetic.output import DATASET_DIR  # noqa: E402

log = logging.getLogger("sharpness_512")

#: The checks of the comparison: per-identity r of the real model in every skin-tone group, and the control's r.
MIN_IDENTITY_R = 0.85
MAX_CONTROL_R = 0.3


def model_source(path: Path, flag: str) -> tuple[Path, dict[str, Any] | None]:
    """``(model folder, learnability report or None)`` of a run folder (its ``real/model``) or a model folder;
    exits with ``error: FLAG: ...`` when ``path`` is neither."""
    if (path / "report.json").is_file() and (path / "real" / "model").is_dir():
        return path / "real" / "model", json.loads((path / "report.json").read_text())
    if all(p.is_file() for p in demo_model_paths(path)):
        return path, None
    raise SystemExit(
        f"error: {flag}: {path} is neither a learnability run folder (report.json, real/model) nor a model folder "
        "(config.yaml, model.safetensors, first_stage.pt)"
    )


def _metrics(model_dir: Path) -> dict[str, Any]:
    """The model's own ``metrics.json`` (written by the learnability export), or {}."""
    path = model_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def checks(report: dict[str, Any] | None, videos: list[dict[str, Any]]) -> dict[str, Any]:
    """The checks on the high run: per-identity r of its real variant (from its report, else the comparison's own
    figures) against :data:`MIN_IDENTITY_R` in every skin-tone group, and its control's pooled r against
    :data:`MAX_CONTROL_R` (None without a report that has one)."""
    real = (report or {}).get("variants", {}).get("real")
    rows = real["videos"] if real else [{"skin_tone": v["skin_tone"], "correlation": v["r"]} for v in videos]
    groups: dict[str, list[float]] = {g: [] for g in TONE_GROUPS}
    for row in rows:
        if row.get("skin_tone") is not None:
            groups[tone_group(int(row["skin_tone"]))].append(float(row["correlation"]))
    by_group = {g: (min(rs) if rs else None) for g, rs in groups.items()}
    control = (report or {}).get("variants", {}).get("control")
    control_r = float(control["correlation"]) if control else None
    return {
        "source": "learnability report" if real else "this comparison",
        "min_identity_r_by_group": by_group,
        "identity_r_ok": all(r is not None and r >= MIN_IDENTITY_R for r in by_group.values()),
        "control_r": control_r,
        "control_r_max_identity": max(control["correlation_per_video"]) if control else None,
        "control_ok": None if control_r is None else control_r <= MAX_CONTROL_R,
    }


def cost(models: dict[str, Any], steps: int, seconds: dict[str, float], device: str) -> dict[str, Any]:
    """FLOPs per frame of each model's config (``steps`` UNet evaluations, 2 encodes, 1 decode) and the seconds per
    frame measured by the comparison on ``device``."""
    out: dict[str, Any] = {"steps": steps, "device": device, "models": {}}
    for name, model in models.items():
        stages = stage_gflops(None, 0, model.config)[0]
        out["models"][name] = {
            "gflop_per_frame": per_frame(stages, steps),
            "gflop_stages": {k: stages[k] for k in ("unet", "encode", "decode")},
            "seconds_per_frame": seconds[name],
        }
    return out


def compare(
    high: Path,
    low: Path,
    data: Path | None = None,
    eval_frames: int = 100,
    sample_steps: int = DEMO_STEPS,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """The comparison as a JSON-ready dict (see the module docstring)."""
    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
    from talkingface.synthetic.sharpness import compare_sharpness

    high_dir, high_report = model_source(high, "--high")
    low_dir, low_report = model_source(low, "--low")
    if data is None:
        if high_report is None:
            raise SystemExit("error: --data: needed when --high is a model folder")
        data = Path(high_report["data"])
    if not (data / DATASET_DIR).is_dir():
        raise SystemExit(f"error: --data: {data} holds no synthetic set ({DATASET_DIR}/)")
    models = {
        "high": get_difftalk_inference(*demo_model_paths(high_dir), device=device),
        "low": get_difftalk_inference(*demo_model_paths(low_dir), device=device),
    }
    sides = {name: m.config.first_stage.resolution for name, m in models.items()}
    if sides["high"] <= sides["low"]:
        raise SystemExit(f"error: --high: its side {sides['high']} is not larger than --low's {sides['low']}")
    res = compare_sharpness(
        models, data / DATASET_DIR, data / "data_test.txt", eval_frames, sample_steps, seed=seed, progress=progress
    )
    control = ((high_report or {}).get("variants", {}).get("control") or {}).get("videos", [])
    control_r = {int(c["video"]): float(c["correlation"]) for c in control}
    videos = []
    for v in res.videos:
        row: dict[str, Any] = {"video": v.video, "skin_tone": v.skin_tone, "frames": v.frames}
        row["group"] = tone_group(v.skin_tone) if v.skin_tone is not None else None
        row["r"] = v.correlation["high"]
        row["r_low"] = v.correlation["low"]
        row["control_r"] = control_r.get(v.video)
        row |= {f"{k}_{s}": asdict(getattr(v, k)[s]) for k in ("generated", "first_stage") for s in ("high", "low")}
        row["truth_at_low_side"] = asdict(v.truth_at_side["low"])
        videos.append(row)
    train = {}
    for name, report, model_dir in (("high", high_report, high_dir), ("low", low_report, low_dir)):
        real = (report or {}).get("variants", {}).get("real") or _metrics(model_dir)
        steps_done = real.get("steps_done")
        train[name] = {
            "train_seconds": real.get("train_seconds"),
            "steps": steps_done,
            "seconds_per_step": real["train_seconds"] / steps_done
            if steps_done and real.get("train_seconds")
            else None,
            "device": (report or {}).get("train_device"),
            "first_stage_seconds": (report or {}).get("first_stage", {}).get("seconds"),
            "first_stage_device": (report or {}).get("first_stage", {}).get("device"),
        }
    name = (
        torch.cuda.get_device_name(0) if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} torch threads)"
    )
    return {
        "high": {"model": str(high_dir), "side": sides["high"], "factor": models["high"].first_stage_factor},
        "low": {"model": str(low_dir), "side": sides["low"], "factor": models["low"].first_stage_factor},
        "data": str(data),
        "side": res.side,
        "frames": res.frames,
        "eval_frames_per_identity": eval_frames,
        "sample_steps": sample_steps,
        "seed": seed,
        "videos": videos,
        "pooled": {
            "r": res.correlation["high"],
            "r_low": res.correlation["low"],
            "control_r": ((high_report or {}).get("variants", {}).get("control") or {}).get("correlation"),
            **{f"{k}_{s}": asdict(getattr(res, k)[s]) for k in ("generated", "first_stage") for s in ("high", "low")},
            "truth_at_low_side": asdict(res.truth_at_side["low"]),
        },
        "checks": checks(high_report, videos),
        "cost": cost(models, sample_steps, res.seconds_per_frame, name),
        "train": train,
    }


def _f(x: float | None, fmt: str) -> str:
    return "—" if x is None else f"{x:{fmt}}"


def print_report(result: dict[str, Any]) -> None:
    """The comparison as Markdown tables."""
    hi, lo = result["high"]["side"], result["low"]["side"]
    fh, fl = result["high"]["factor"], result["low"]["factor"]
    print(
        f"\nHeld-out identities of {result['data']}, {result['eval_frames_per_identity']} frames each, DPM-Solver++ "
        f"{result['sample_steps']} steps; mouths scored at {hi} px against the {hi} px ground truth ({lo} px results "
        "upsampled bicubic)\n"
    )
    print(
        f"| identity | Monk bin | group | r {hi} | control r {hi} | r {lo} | mouth PSNR {hi} | {lo}↑ | "
        f"mouth SSIM {hi} | {lo}↑ | first stage PSNR {hi} (f{fh}) | {lo}↑ (f{fl}) | truth at {lo}↑ PSNR |"
    )
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [*result["videos"], {"video": "pooled", "skin_tone": None, "group": "", **result["pooled"]}]
    for v in rows:
        print(
            f"| {v['video']} | {_f(v['skin_tone'], 'd')} | {v['group'] or ''} | {v['r']:.3f} | "
            f"{_f(v['control_r'], '.3f')} | {v['r_low']:.3f} | {v['generated_high']['mouth_psnr']:.2f} | "
            f"{v['generated_low']['mouth_psnr']:.2f} | {v['generated_high']['mouth_ssim']:.3f} | "
            f"{v['generated_low']['mouth_ssim']:.3f} | {v['first_stage_high']['mouth_psnr']:.2f} | "
            f"{v['first_stage_low']['mouth_psnr']:.2f} | {v['truth_at_low_side']['mouth_psnr']:.2f} |"
        )
    c = result["checks"]
    groups = ", ".join(f"{g} {_f(r, '.3f')}" for g, r in c["min_identity_r_by_group"].items())
    print(
        f"\nper-identity r >= {MIN_IDENTITY_R} in every skin-tone group ({c['source']}; lowest: {groups}): "
        f"{'PASS' if c['identity_r_ok'] else 'FAIL'}"
    )
    verdict = "no control run" if c["control_ok"] is None else ("PASS" if c["control_ok"] else "FAIL")
    print(
        f"shuffled-audio control r <= {MAX_CONTROL_R} (pooled {_f(c['control_r'], '.3f')}, largest per identity "
        f"{_f(c['control_r_max_identity'], '.3f')}): {verdict}"
    )
    k = result["cost"]
    m = k["models"]
    gh, gl = m["high"]["gflop_per_frame"], m["low"]["gflop_per_frame"]
    sh, sl = m["high"]["seconds_per_frame"], m["low"]["seconds_per_frame"]
    print(
        f"\ncost per frame, {k['steps']} steps: {lo} px (f{fl}) {gl:.1f} GFLOP, {hi} px (f{fh}) {gh:.1f} GFLOP "
        f"(x{gh / gl:.2f}); measured on {k['device']}: {lo} px {sl * 1e3:.1f} ms, {hi} px {sh * 1e3:.1f} ms "
        f"(x{sh / sl:.2f})"
    )
    for name, side in (("low", lo), ("high", hi)):
        t = result["train"][name]
        if t["seconds_per_step"]:
            fs = ""
            if t["first_stage_seconds"]:
                fs = f", first stage {t['first_stage_seconds']:.0f} s on {t['first_stage_device']}"
            print(
                f"training, {side} px: {t['seconds_per_step'] * 1e3:.0f} ms per step ({t['steps']} steps in "
                f"{t['train_seconds']:.0f} s, {t['device'] or 'device not recorded'}){fs}"
            )


def compare_runs(high: Path, low: Path, args: argparse.Namespace, json_path: Path) -> dict[str, Any]:
    """``benchmarks/learnability.py --compare-with``: the comparison with the learnability run's settings."""
    result = compare(
        high,
        low,
        Path(args.data) if args.data else None,
        args.eval_frames,
        args.sample_steps or DEMO_STEPS,
        args.seed,
        "cuda" if args.gpus else "cpu",
        not args.no_progress,
    )
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--high", type=Path, required=True, help="the larger-side run or model folder (e.g. runs/f8)")
    p.add_argument("--low", type=Path, required=True, help="the smaller-side one (e.g. talkingface/synthetic/assets)")
    p.add_argument("--data", type=Path, default=None, help="the synthetic set (default: the --high run's)")
    p.add_argument("--eval-frames", type=int, default=100, help="held-out frames per identity")
    p.add_argument("--sample-steps", type=int, default=DEMO_STEPS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="e.g. cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="default: HIGH/sharpness.json (HIGH a run folder)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    json_path = args.json or (args.high / "sharpness.json" if (args.high / "report.json").is_file() else None)
    if json_path is None:
        raise SystemExit("error: --json: needed when --high is a model folder")
    result = compare(
        args.high,
        args.low,
        args.data,
        args.eval_frames,
        args.sample_steps,
        args.seed,
        args.device,
        not args.no_progress,
    )
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
