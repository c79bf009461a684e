"""``talkingface synthetic --out DIR --identities N --seconds S --seed K [--layout]`` (also
``python -m talkingface.synthetic ...``): the command of :mod:`talkingface.synthetic.write_set`, imported after
parsing."""

from __future__ import annotations

import argparse
import logging

from talkingface.cli_support import EXIT_OK, ArgumentParser, add_feature_options, command, fail, number, seed
from talkingface.commands.defaults import SYNTHETIC_CROP_SIZE, SYNTHETIC_FRAME_SIZE

DESCRIPTION = """\
Generate synthetic talking-face videos and datasets.

Writes DIR/videos/synthetic_<v>.mp4 (H.264 + AAC) with .landmarks.npy (N, 68, 2) and .mouth.npy (opening, width per
frame) sidecars; with --layout also the training layout DIR/dataset/ (images, landmarks, audio_smooth, data.txt,
meta.json, mouth/<v>.npy) and the split lists DIR/data_{train,test}.txt (the last --test-identities identities are
held out), and DIR/synthetic.json (the settings).

A non-empty DIR is refused unless --overwrite is given and it holds only a set this command wrote; the new set is then
written beside it and takes its place when complete."""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m talkingface.synthetic",
        description=DESCRIPTION,
    )
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a synthetic set in --out written by this command (never a folder holding anything else)",
    )
    p.add_argument(
        "--identities", type=number(int, min=1, max=10_000), default=8, help="number of identities (one clip each)"
    )
    p.add_argument(
        "--seconds",
        type=number(float, above=0, max=600),
        default=10.0,
        help="length of each clip, in seconds; a clip's frames are held in memory (10 minutes at 160 px: 1.2 GB)",
    )
    p.add_argument("--seed", type=seed(), default=0, help="seed of the identities, the speech and the mouth motion")
    p.add_argument("--layout", action="store_true", help="also write the training layout to OUT/dataset")
    p.add_argument("--no-videos", action="store_true", help="skip the mp4 files (layout only)")
    add_feature_options(
        p, ["mel", "whisper", "wav2vec2"], default="mel", help="feature backend of the layout's audio_smooth files"
    )
    p.add_argument(
        "--size",
        type=number(int, min=32, max=2048),
        default=SYNTHETIC_CROP_SIZE,
        help="saved face-crop side of the layout",
    )
    p.add_argument(
        "--frame-size", type=number(int, min=32, max=4096), default=SYNTHETIC_FRAME_SIZE, help="video frame side"
    )
    p.add_argument(
        "--test-identities",
        type=number(int, min=0, max=10_000),
        help="identities held out in data_test.txt (default: a quarter, at least 1 and at most 2, "
        "always leaving one for training: 1 of 2, 2 of 8, none of 1)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def check_args(args: argparse.Namespace) -> tuple[str, str] | None:
    """``(flag, problem)`` of the first bad combination of options, or None (each number's own range is checked by
    the parser)."""
    from talkingface.synthetic.write_set import held_out_identities

    if not args.layout and args.no_videos:
        return "--no-videos", "nothing to write without --layout"
    if args.layout and not 0 <= held_out_identities(args) < args.identities:
        return "--test-identities", "must be in [0, --identities)"
    return None


@command
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem is not None:
        return fail(*problem)
    from talkingface.synthetic.write_set import generate

    generate(args)
    return EXIT_OK
