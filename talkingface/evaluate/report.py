"""Writing a result as JSON, as a markdown report and as a PNG chart of per-frame PSNR and mouth opening.

JSON is strict (no ``NaN``/``Infinity`` tokens): an undefined value (e.g. no face found) is ``null``, an
infinite PSNR (identical frames) is the string ``"inf"``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from talkingface.evaluate.harness import EvalResult, result_to_dict
from talkingface.evaluate.plot import Panel, Series, write_chart

#: Display names, units and the better direction of each metric.
METRIC_INFO: dict[str, tuple[str, str, str]] = {
    "psnr": ("PSNR (face)", "dB", "higher"),
    "ssim": ("SSIM (face)", "", "higher"),
    "mouth_psnr": ("PSNR (mouth)", "dB", "higher"),
    "mouth_ssim": ("SSIM (mouth)", "", "higher"),
    "lmd": ("LMD (mouth landmarks)", "px", "lower"),
    "lmd_norm": ("LMD / eye distance", "", "lower"),
    "lpips": ("LPIPS (face)", "", "lower"),
    "fid": ("FID (face crops)", "", "lower"),
    "lse_c": ("LSE-C (SyncNet confidence)", "", "higher"),
    "lse_d": ("LSE-D (SyncNet distance)", "", "lower"),
    "av_offset": ("AV offset (SyncNet)", "frames", "0"),
}


def jsonable(value: Any) -> Any:
    """Recursively replace NaN by None and +-inf by ``"inf"``/``"-inf"`` (numpy scalars become Python ones)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def write_json(result: EvalResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(result_to_dict(result)), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.1f}"


def summary_rows(result: EvalResult) -> list[tuple[str, str, str, str]]:
    """``(metric, value, spread, better)`` rows for the summary table."""
    rows = []
    for key, stats in result.aggregate.items():
        if key not in METRIC_INFO:
            continue
        name, unit, better = METRIC_INFO[key]
        value = fmt(stats["mean"]) + (f" {unit}" if unit and not math.isnan(stats["mean"]) else "")
        spread = f"median {fmt(stats['median'])}, min {fmt(stats['min'])}, max {fmt(stats['max'])}, n={stats['count']}"
        rows.append((name, value, spread, better))
    for key, value in result.scores.items():
        name, unit, better = METRIC_INFO.get(key, (key, "", ""))
        rows.append((name, fmt(value) + (f" {unit}" if unit else ""), "whole sequence", better))
    return rows


def summary_table(result: EvalResult) -> str:
    """The summary as a plain-text table (the CLI prints it)."""
    rows = [("metric", "mean", "spread", "better")] + summary_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def chart_panels(result: EvalResult) -> list[Panel]:
    """PSNR per frame (face, mouth) and mouth opening (pred vs gt) per frame."""
    pf = result.per_frame
    panels = []
    psnr = [Series(label, pf[key]) for key, label in (("psnr", "face"), ("mouth_psnr", "mouth")) if key in pf]
    if psnr:
        panels.append(Panel("PSNR per frame (higher is better)", "PSNR (dB)", psnr))
    mouth = [
        Series(label, pf[key])
        for key, label in (("mouth_open_gt", "ground truth"), ("mouth_open_pred", "prediction"))
        if key in pf
    ]
    if mouth:
        panels.append(Panel("Mouth opening: inner lips 62-66 / outer eye corners 36-45", "opening", mouth))
    return panels


def write_plot(result: EvalResult, path: str | Path) -> Path | None:
    """The PNG chart, or None when no per-frame series was computed."""
    panels = chart_panels(result)
    if not panels:
        return None
    title = f"{Path(result.pred).name} vs {Path(result.gt).name} - {result.frames} frames"
    return write_chart(path, panels, result.frames, title)


def _rate(fps: float | None) -> str:
    return f"{fps:g} fps" if fps else "none (frame directory)"


def markdown(result: EvalResult, plot: str | Path | None = None, json_path: str | Path | None = None) -> str:
    """A short human report: inputs, the summary table, notes, the chart and the worst frames."""
    h, w = result.size
    lines = [
        "# Evaluation report",
        "",
        f"- prediction: `{result.pred}`",
        f"- ground truth: `{result.gt}`",
        f"- {result.frames} frames at {w}x{h}" + (f", {result.fps:g} fps" if result.fps else ""),
        f"- frame rates: prediction {_rate(result.pred_fps)}, ground truth {_rate(result.gt_fps)}",
        f"- region: {'face crop (box of the ground-truth landmarks)' if result.crop == 'face' else 'full frame'}; "
        "mouth region: box of the ground-truth mouth points 48-67",
        "",
        "| metric | mean | spread | better |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(result)]
    if "lmd" in result.per_frame:
        lines += [
            "",
            "LMD is in pixels at the ground truth's resolution (no alignment); "
            "`LMD / eye distance` divides it by the outer-eye-corner distance.",
        ]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    if plot:
        lines += ["", "## Per frame", "", f"![per-frame PSNR and mouth opening]({Path(plot).name})"]
    if "psnr" in result.per_frame:
        values = result.per_frame["psnr"]
        order = sorted((v, i) for i, v in enumerate(values) if not math.isnan(v))[:5]
        if order:
            lines += ["", "Lowest face PSNR: " + ", ".join(f"frame {i} ({fmt(v)} dB)" for v, i in order)]
    if json_path:
        lines += ["", f"All per-frame values: `{Path(json_path).name}`."]
    return "\n".join(lines) + "\n"


def write_markdown(
    result: EvalResult, path: str | Path, plot: str | Path | None = None, json_path: str | Path | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(result, plot, json_path), encoding="utf-8")
    return path
