"""Frames per second of face detection (box + 68 landmarks per frame): the default pass alone against the face search
that the preprocessing and lip-sync run (the default pass, and an upsampled retry where it finds no face).

    python benchmarks/face_detect_speed.py                 # 50 frames per clip, about a minute on one CPU core
    python benchmarks/face_detect_speed.py --frames 100 --json face_detect.json

The clips are built here (no downloads): skimage's astronaut photo scaled so that dlib's face box has the given
width, moving a little, in 1920 x 1080 and 176 x 144 frames, encoded to h264 and decoded by the product's decoder
(only the detection is timed). Also a 1080p clip without a face (skimage's coffee photo, panning): the retry's
back-off bounds its cost there.
Printed per clip: frames/s and the frames with a face for the default pass alone ("baseline", what detection
did before the retry) and for the face search, and how many frames the retry answered. One thread (dlib's
detector uses one core).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from data_fixtures import face_free_frames, small_face_frames, write_video  # noqa: E402

from talkingface.media.decode import iter_frames  # noqa: E402
from talkingface.media.face_search import FaceSearch  # noqa: E402
from talkingface.media.landmarks import LandmarkDetector  # noqa: E402

#: (name, face box width in px or None for no face, width, height)
CLIPS = (
    ("1080p, 300 px face", 300, 1920, 1080),
    ("1080p, 45 px face", 45, 1920, 1080),
    ("1080p, no face", None, 1920, 1080),
    ("176x144, 45 px face", 45, 176, 144),
)


def build_clip(folder: Path, face_px: int | None, width: int, height: int, n: int) -> list[np.ndarray]:
    if face_px is None:
        frames = face_free_frames(width, height, n)
    else:
        frames = small_face_frames(face_px, width, height, n, motion=6.0)
    path = write_video(folder / f"clip_{face_px}_{width}x{height}.mp4", fps=25, frames=frames, audio=None)
    return list(iter_frames(path))


def timed(detect: object, frames: list[np.ndarray]) -> tuple[float, int]:
    """(frames/s, frames with a face) of ``detect(rgb) -> landmarks | None`` over ``frames``."""
    start = time.perf_counter()
    found = sum(detect(rgb) is not None for rgb in frames)  # type: ignore[operator]
    return len(frames) / (time.perf_counter() - start), found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=50, help="frames per clip (25 fps)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    detector = LandmarkDetector()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, face_px, width, height in CLIPS:
            frames = build_clip(Path(tmp), face_px, width, height, args.frames)
            detector(frames[0])  # warm-up
            base_fps, base_found = timed(detector, frames)
            search = FaceSearch(detector, name)
            search_fps, search_found = timed(search, frames)
            results.append(
                {
                    "clip": name,
                    "frames": len(frames),
                    "baseline_fps": round(base_fps, 1),
                    "baseline_found": base_found,
                    "search_fps": round(search_fps, 1),
                    "search_found": search_found,
                    "retried": search.retried,
                }
            )
    print(
        "| clip | frames | default pass alone: frames/s (with a face) | face search: frames/s (with a face) | "
        "answered by the retry |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['clip']} | {r['frames']} | {r['baseline_fps']} ({r['baseline_found']}) | "
            f"{r['search_fps']} ({r['search_found']}) | {r['retried']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
