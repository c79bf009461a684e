"""``talkingface preprocess {run,validate,finalize} ...`` (also ``python -m talkingface.preprocess``): videos in, the
training layout out (``talkingface.data.writer``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from talkingface.cli_support import (
    EXIT_OK,
    EXIT_PROBLEMS,
    ArgumentParser,
    add_device_option,
    add_feature_options,
    check_device,
    command,
    fail,
    number,
    seed,
)
from talkingface.constants import DEFAULT_IMAGE_SIZE, FPS
from talkingface.data.layout import JPEG_QUALITY as DEFAULT_JPEG_QUALITY
from talkingface.data.layout import DatasetLayout
from talkingface.data.writer import (
    DEFAULT_TEST_RATIO,
    BuildOptions,
    SplitOptions,
    build_dataset,
    check_writable,
    finalize,
    read_done_markers,
    run_lock,
)
from talkingface.media.crop import DEFAULT_CROP_SCALE, DEFAULT_CROP_SHIFT_UP, CropConfig
from talkingface.media.extract import DEFAULT_MAX_AV_GAP_S, DEFAULT_MAX_MISSING
from talkingface.media.face_choice import add_face_options
from talkingface.media.features import BACKEND_KINDS

log = logging.getLogger("talkingface.preprocess")

DESCRIPTION = """\
Turn talking-head videos into the training layout (images/, landmarks/, audio_smooth/, data.txt, meta.json and the
split lists), check a dataset, or rewrite its index after sharded runs.

  talkingface preprocess run videos/ --out data/HDTF --workers 4
  talkingface preprocess validate data/HDTF
  talkingface preprocess finalize data/HDTF

Exit status: 0 done; 1 the command ran and found problems (a failed video, a dataset that does not validate) or could
not finish (a full disk: finished videos are kept, run it again); 2 bad input."""


def _add_split_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("train/test split (by video)")
    g.add_argument("--split-dir", type=Path, help="where data_train.txt / data_test.txt go (default: --out's parent)")
    g.add_argument(
        "--test-ratio",
        type=number(float, min=0, below=1),
        default=DEFAULT_TEST_RATIO,
        help="share of videos in the test list: 0 none, below 1 so that at least one video trains",
    )
    g.add_argument("--seed", type=seed(), default=0, help="seed of the per-video split decision")
    g.add_argument(
        "--test-videos", nargs="+", help="test videos by number, file name or stem (comma lists, or @list.txt)"
    )
    g.add_argument("--train-videos", nargs="+", help="train videos (default: all others)")


def _split(args: argparse.Namespace) -> SplitOptions:
    return SplitOptions(
        split_dir=args.split_dir,
        test_ratio=args.test_ratio,
        seed=args.seed,
        test_videos=tuple(args.test_videos) if args.test_videos else None,
        train_videos=tuple(args.train_videos) if args.train_videos else None,
    )


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m talkingface.preprocess", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="turn videos into the training layout (resumable)")
    run.add_argument("inputs", nargs="+", type=Path, help="video files and/or directories of videos")
    run.add_argument("--out", type=Path, required=True, help="dataset root, e.g. data/HDTF")
    run.add_argument(
        "--size", type=number(int, min=32, max=4096), default=DEFAULT_IMAGE_SIZE, help="side of the saved square frames"
    )
    run.add_argument("--fps", type=number(float, min=1, max=240), default=FPS, help=argparse.SUPPRESS)
    run.add_argument("--audio", type=Path, help="separate audio: a file (one video) or a directory of <stem>.*")
    add_feature_options(
        run,
        BACKEND_KINDS,
        default="mel",
        help="feature backend",
        deepspeech="AD-NeRF aud.npy: a file (one video) or a directory of <stem>.npy",
    )
    add_device_option(run, default="cpu", used_for="of the wav2vec2 / whisper backend")
    run.add_argument(
        "--workers",
        type=number(int, min=0, max=256),
        default=1,
        help="parallel processes, one video each; 0 or 1: one at a time, in this process",
    )
    run.add_argument("--shard", help="i/n: only videos with (number - 1) %% n == i (0-based i)")
    add_face_options(run, max_missing=DEFAULT_MAX_MISSING)
    run.add_argument(
        "--max-av-gap",
        type=number(float, min=0, max=3600),
        default=DEFAULT_MAX_AV_GAP_S,
        help="max audio/video length gap, in seconds",
    )
    run.add_argument("--allow-silent", action="store_true", help="keep videos whose audio is silent")
    run.add_argument(
        "--crop-scale",
        type=number(float, min=1, max=4),
        default=DEFAULT_CROP_SCALE,
        help="crop side / landmark box side: below 1 the crop cuts into the face, above 4 the face is a speck",
    )
    run.add_argument(
        "--crop-shift-up",
        type=number(float, min=-0.5, max=0.5),
        default=DEFAULT_CROP_SHIFT_UP,
        help="upward shift of the crop centre, in crop sides: half a side already puts the face on the edge",
    )
    run.add_argument(
        "--jpeg-quality",
        type=number(int, min=1, max=100),
        default=DEFAULT_JPEG_QUALITY,
        help="quality of the saved frames",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_split_options(run)

    val = sub.add_parser("validate", help="check an existing dataset; exit 1 when there are problems")
    val.add_argument("root", type=Path, help="dataset root, e.g. data/HDTF")
    val.add_argument("--split-dir", type=Path, help="folder of data_train.txt / data_test.txt (default: root's parent)")
    val.add_argument("--no-images", action="store_true", help="skip decoding every image (faster)")
    val.add_argument(
        "--max-report", type=number(int, min=0, max=1_000_000), default=200, help="print at most this many problems"
    )

    fin = sub.add_parser("finalize", help="rewrite data.txt, meta.json and split lists (after sharded runs)")
    fin.add_argument("root", type=Path, help="dataset root, e.g. data/HDTF")
    _add_split_options(fin)
    return parser


def _run(args: argparse.Namespace) -> int:
    check_device(args.device)
    options = BuildOptions(
        fps=args.fps,
        size=args.size,
        audio_features=args.audio_features,
        wav2vec2_model=args.wav2vec2_model,
        whisper_model=args.whisper_model,
        deepspeech_npy=args.deepspeech_npy,
        device=args.device,
        crop=CropConfig(scale=args.crop_scale, shift_up=args.crop_shift_up),
        max_missing=args.max_missing,
        max_av_gap_s=args.max_av_gap,
        allow_silent=args.allow_silent,
        face=args.face,
        jpeg_quality=args.jpeg_quality,
    )
    summary = build_dataset(
        args.inputs,
        args.out,
        options,
        audio=args.audio,
        workers=args.workers,
        shard=args.shard,
        split=_split(args),
        progress=not args.no_progress,
    )
    return EXIT_PROBLEMS if summary.failed else EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from talkingface.data.validate import validate_dataset

    if not args.root.is_dir():
        return fail(args.root, "dataset root not found (not a folder)")
    problems = validate_dataset(args.root, split_dir=args.split_dir, check_images=not args.no_images)
    for problem in problems[: args.max_report]:
        print(problem)
    if len(problems) > args.max_report:
        print(f"... and {len(problems) - args.max_report} more")
    print(f"{args.root}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return EXIT_PROBLEMS if problems else EXIT_OK


def _finalize(args: argparse.Namespace) -> int:
    root = args.root
    if not root.is_dir():
        return fail(root, "dataset root not found (not a folder)")
    if not DatasetLayout(root).meta_path.is_file() and not read_done_markers(root):
        return fail(root, "no dataset here (no meta.json, no finished video in .done/); run preprocess run first")
    check_writable(root, args.split_dir)
    with run_lock(root):
        finalize(root, _split(args))
    return EXIT_OK


@command(disk_full_hint="free space and run again (finished videos are kept)")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command == "run":
        return _run(args)
    if args.command == "validate":
        return _validate(args)
    return _finalize(args)
