"""Write a synthetic set into a folder (``talkingface synthetic``): ``OUT/videos/synthetic_<v>.mp4`` (H.264 + AAC)
with ``.landmarks.npy`` (N, 68, 2) and ``.mouth.npy`` (opening, width per frame) sidecars; with ``layout`` also the
training layout ``OUT/dataset/`` (images, landmarks, audio_smooth, data.txt, meta.json, ``mouth/<v>.npy``) and the
split lists ``OUT/data_{train,test}.txt`` (the last ``test_identities`` identities are held out), and
``OUT/synthetic.json`` (the settings).

A non-empty ``OUT`` is refused unless ``overwrite`` is given and it holds only a set this module wrote (see
:mod:`talkingface.synthetic.output`); the new set is then written beside it and takes its place when complete.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

from talkingface.media.errors import PreprocessError
from talkingface.media.features import AudioFeatureBackend, make_backend
from talkingface.paths import replace_folder
from talkingface.synthetic.generate import (
    iter_clips,
    write_clip_video,
    write_layout_meta,
    write_layout_video,
)
from talkingface.synthetic.output import DATASET_DIR, VIDEOS_DIR, is_empty, replace_problem, write_manifest

log = logging.getLogger("talkingface.synthetic")


def held_out_identities(args: argparse.Namespace) -> int:
    """``--test-identities``, or its default: ``identities // 4`` clipped to [1, 2], leaving one to train on."""
    if args.test_identities is not None:
        return args.test_identities
    return min(2, max(1, args.identities // 4), args.identities - 1)


def check_out(out: Path, overwrite: bool) -> tuple[str, str] | None:
    """``("--out", problem)`` when writing into ``out`` would lose files: it is not empty, and it is not a set this
    command wrote or ``overwrite`` is not given. None when ``out`` may be written (or replaced)."""
    real = out.resolve()
    if is_empty(real):
        return None
    problem = replace_problem(real)
    if problem is not None:
        return "--out", f"{out} is not empty and not a synthetic set of this command ({problem}); nothing was replaced"
    if not overwrite:
        return "--out", f"{out} holds a synthetic set; pass --overwrite to replace it"
    return None


def generate(args: argparse.Namespace) -> Path:
    """Write the set into ``args.out``; a set already there (see :func:`check_out`) is replaced only when the new
    one is complete."""
    out = Path(args.out)
    problem = check_out(out, getattr(args, "overwrite", False))
    if problem is not None:
        raise PreprocessError(*problem)
    backend = None
    if args.layout:
        options = {"whisper_model": args.whisper_model, "wav2vec2_model": args.wav2vec2_model}
        backend = make_backend(args.audio_features, options)  # fails before any clip is rendered
    real = out.resolve()
    if is_empty(real):
        _write_set(args, out, backend)
        return out
    work = real.with_name(f".{real.name}.synthetic-{os.getpid()}")
    try:
        _write_set(args, work, backend)
        problem = check_out(out, True)  # writing took a while: out may have changed
        if problem is not None:
            raise PreprocessError(*problem)
        replace_folder(work, real)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _write_set(args: argparse.Namespace, out: Path, backend: AudioFeatureBackend | None) -> None:
    root = out / DATASET_DIR
    settings = {
        "identities": args.identities,
        "seconds": args.seconds,
        "seed": args.seed,
        "videos": not args.no_videos,
        "layout": args.layout,
        "audio_features": args.audio_features if args.layout else None,
        "size": args.size,
        "frame_size": args.frame_size,
        "test_identities": held_out_identities(args) if args.layout else None,
    }
    write_manifest(out, settings)
    counts: list[int] = []
    for v, clip in iter_clips(args.identities, args.seconds, args.seed, args.frame_size, not args.no_progress):
        if not args.no_videos:
            (out / VIDEOS_DIR).mkdir(parents=True, exist_ok=True)
            write_clip_video(clip, out / VIDEOS_DIR / f"synthetic_{v:03d}.mp4")
        if args.layout:
            write_layout_video(root, v, clip, args.size, backend)
        counts.append(clip.n_frames)
    if args.layout:
        test = list(range(args.identities - held_out_identities(args) + 1, args.identities + 1))
        write_layout_meta(root, counts, args.size, test, backend.kind, out, backend.dim)
    log.info("wrote %d clips (%d frames) to %s", len(counts), sum(counts), out)
