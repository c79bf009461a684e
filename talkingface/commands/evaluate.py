"""``talkingface evaluate`` (also ``python -m talkingface.evaluate``): compare predicted frames with ground truth and
write a report."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from talkingface.cli_support import EXIT_OK, ArgumentParser, add_device_option, check_device, command, number
from talkingface.commands.defaults import ALL_METRICS, CHEAP_METRICS, CROPS
from talkingface.paths import require_writable

if TYPE_CHECKING:
    from talkingface.evaluate.harness import EvalOptions, EvalResult

log = logging.getLogger("talkingface.evaluate")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m talkingface.evaluate",
        description="PSNR, SSIM (face and mouth), LMD and, given their weight files, LPIPS, FID and SyncNet "
        "LSE-C/LSE-D of a predicted talking-face video against the ground truth. Nothing is downloaded.",
    )
    p.add_argument("--pred", required=True, help="predicted video file or directory of frames (png/jpg)")
    p.add_argument("--gt", required=True, help="ground-truth video file or directory of frames")
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="M",
        help=f"any of {', '.join(ALL_METRICS)} (comma or space "
        f"separated; default: {', '.join(CHEAP_METRICS)} plus every metric whose weights are given)",
    )
    p.add_argument("--out", type=Path, help="report.json to write; report.md and report.png go beside it")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG chart")
    p.add_argument(
        "--crop",
        choices=CROPS,
        default="face",
        help="face: the box of the ground truth's landmarks; full: whole frames (inputs already face crops)",
    )
    p.add_argument(
        "--face-margin",
        type=number(float, min=0, max=2),
        default=0.1,
        help="face box growth per side, fraction of its size",
    )
    p.add_argument(
        "--mouth-margin",
        type=number(float, min=0, max=2),
        default=0.25,
        help="mouth box growth per side, fraction of its size",
    )
    p.add_argument("--pred-landmarks", type=Path, help="precomputed (N,68,2) .npy or directory of .lms files")
    p.add_argument("--gt-landmarks", type=Path, help="precomputed (N,68,2) .npy or directory of .lms files")
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS backbone")
    p.add_argument(
        "--lpips-backbone",
        type=Path,
        help="torchvision AlexNet/VGG16 state dict, e.g. alexnet-owt-7be5be79.pth / vgg16-397923af.pth",
    )
    p.add_argument("--lpips-linear", type=Path, help="LPIPS v0.1 linear layers, e.g. weights/v0.1/alex.pth")
    p.add_argument("--fid-features", type=Path, help="TorchScript feature extractor, e.g. inception-2015-12-05.pt")
    p.add_argument("--syncnet", type=Path, help="SyncNet weights (syncnet_v2.model) or a TorchScript SyncNet")
    p.add_argument("--audio", type=Path, help="speech for LSE (default: the audio stream of --pred)")
    add_device_option(p, default="cpu", used_for="for the network metrics")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    from talkingface.evaluate.harness import EvalOptions
    from talkingface.evaluate.landmarks import load_landmarks

    metrics = None
    if args.metrics:
        metrics = [m.strip() for item in args.metrics for m in item.split(",") if m.strip()]
    return EvalOptions(
        metrics=metrics,
        crop=args.crop,
        face_margin=args.face_margin,
        mouth_margin=args.mouth_margin,
        pred_landmarks=load_landmarks(args.pred_landmarks) if args.pred_landmarks else None,
        gt_landmarks=load_landmarks(args.gt_landmarks) if args.gt_landmarks else None,
        lpips_net=args.lpips_net,
        lpips_backbone=args.lpips_backbone,
        lpips_linear=args.lpips_linear,
        fid_features=args.fid_features,
        syncnet=args.syncnet,
        audio=args.audio,
        device=args.device,
    )


def write_reports(result: EvalResult, out: Path, plot: bool = True) -> list[Path]:
    """``out`` (JSON), the markdown report and (``plot``) the PNG chart beside it: written into a hidden folder there
    first and moved into place once all are written, so that a failure leaves no half-written report."""
    from talkingface.evaluate.report import write_json, write_markdown, write_plot

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.stem}.partial-", dir=out.parent))
    try:
        staged = stage / out.name
        chart = write_plot(result, staged.with_suffix(".png")) if plot else None
        write_json(result, staged)
        md = write_markdown(result, staged.with_suffix(".md"), chart, staged)
        written = []
        for path in (staged, md, chart):
            if path is not None:
                os.replace(path, out.parent / path.name)
                written.append(out.parent / path.name)
        return written
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@command
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from talkingface.evaluate.harness import evaluate
    from talkingface.evaluate.report import summary_table

    out = None
    if args.out:  # checked before the metrics are computed: their result would be lost
        out = args.out if args.out.suffix == ".json" else args.out.with_suffix(".json")
        require_writable(out.parent, hint="give another --out or fix the folder's permissions")
    check_device(args.device)
    result = evaluate(args.pred, args.gt, options_from_args(args))
    print(summary_table(result))
    for note in result.notes:
        print(f"note: {note}")
    if out is not None:
        print("wrote " + ", ".join(map(str, write_reports(result, out, plot=not args.no_plot))))
    return EXIT_OK
