"""``talkingface lipsync`` (also ``python demo.py``): portrait video + speech in, lip-synced mp4 out.

A command above two packages: with --video it drives the inference pipeline (``talkingface.inference``), without
it the synthetic demo (``talkingface.synthetic.demo``), which drives the same pipeline. The parser imports neither
(``--help`` stays fast); ``main`` imports them after parsing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from talkingface.cli_support import EXIT_OK, ArgumentParser, command, number, seed
from talkingface.commands import defaults
from talkingface.constants import DEFAULT_IMAGE_SIZE, MODEL_IMAGE_SIZE
from talkingface.media.extract import DEFAULT_MAX_MISSING
from talkingface.media.face_choice import add_face_argument
from talkingface.media.features import BACKEND_KINDS

log = logging.getLogger(__name__)

DESCRIPTION = f"""\
Lip-sync a portrait video to speech: video + speech in, lip-synced mp4 out.

  talkingface lipsync --video person.mp4 --audio speech.wav --out result.mp4
  talkingface lipsync --video person.mp4 --audio speech.wav --out result.mp4 --ckpt exported/difftalk.safetensors
  talkingface lipsync            no arguments: the bundled synthetic demo model on a generated face (CPU, offline)
  talkingface lipsync --stream   the same, the speech played in real time in 40 ms chunks

The model: --ckpt, else {defaults.DEFAULT_CKPT} (first stage {defaults.DEFAULT_FIRST_STAGE}) when it exists, else
the bundled synthetic demo model, with a warning: it was trained on synthetic cartoon faces and will not look right
on real faces. A checkpoint carries its config (a trainer .ckpt, or the metadata of a slim .safetensors export), and
a slim export finds its first stage beside it when its config names a file there; --config and --first-stage-ckpt
override them.

The face is found with dlib, or given with --landmarks (landmarks tracked by another tool, or the synthetic
generator's <clip>.landmarks.npy).

Bad input (no face, audio shorter than one frame, unreadable media, a landmarks file that does not fit the video, a
checkpoint trained on other audio features, an existing output, an output that is one of the inputs, a read-only
output folder) ends with exit status 2 and one line naming the file or flag and the problem; Ctrl-C ends with one
line and exit status 130, leaving no partial output."""


def build_parser() -> ArgumentParser:
    L = defaults.LIPSYNC
    p = ArgumentParser(prog="demo.py", description=DESCRIPTION)
    io = p.add_argument_group("input / output")
    io.add_argument(
        "--video", default=None, help="portrait video (any container FFmpeg reads); omit for the synthetic demo"
    )
    io.add_argument("--audio", default=None, help="driving speech (wav, mp3, m4a, a video, ...); default: the video's")
    io.add_argument(
        "--out", default=None, help="output video (.mp4, .mov or .mkv): H.264 + AAC speech (required with --video)"
    )
    io.add_argument("--frames-dir", default=None, help="also write the frames as PNG into this folder")
    io.add_argument("--overwrite", action="store_true", help="replace --out / --frames-dir when they exist")
    model = p.add_argument_group("model")
    model.add_argument(
        "--ckpt",
        default=None,
        help=f"DiffTalk checkpoint: a trainer .ckpt or a slim .safetensors export (default: {defaults.DEFAULT_CKPT} "
        "when it exists, else the bundled synthetic demo model, which only suits synthetic cartoon faces)",
    )
    model.add_argument(
        "--config",
        metavar="CONFIG.yaml",
        default=None,
        help="DiffTalk config YAML (default: the one stored in the checkpoint; a reference-format .ckpt that stores "
        "none gets the packaged talking-inference.yaml)",
    )
    model.add_argument(
        "--first-stage-ckpt",
        default=None,
        help="VQ first stage, for checkpoints without one (default: the config's model.first_stage.ckpt_path, "
        f"beside the checkpoint when that file is there, else {defaults.DEFAULT_FIRST_STAGE})",
    )
    model.add_argument("--trust-checkpoint", action="store_true", help="allow full unpickling (trusted files only)")
    model.add_argument("--raw-weights", action="store_true", help="use the raw UNet weights instead of the EMA")
    model.add_argument(
        "--audio-features",
        choices=sorted(BACKEND_KINDS),
        default=None,
        help="feature backend; default: the kind recorded in the checkpoint (required when it records none)",
    )
    model.add_argument("--wav2vec2-model", default=None, help="local wav2vec2 CTC model folder (wav2vec2 features)")
    model.add_argument(
        "--whisper-model", default=None, help="local whisper folder, CTranslate2 or transformers (whisper features)"
    )
    model.add_argument("--deepspeech-npy", default=None, help="AD-NeRF aud.npy of the speech (deepspeech features)")
    s = p.add_argument_group("sampling")
    s.add_argument(
        "--sampler",
        choices=defaults.SAMPLERS,
        default=None,
        help="ddim: reference-exact (default: the sampler the checkpoint records, e.g. a distilled student's "
        f"ddim, else {defaults.DEFAULT_SAMPLER})",
    )
    s.add_argument(
        "--steps",
        type=number(int, min=1, max=10_000),
        default=None,
        help="sampler steps, at most the model's diffusion timesteps (reference: ddim 200; default: the "
        f"checkpoint's recorded steps and exact timesteps, e.g. 4 for a distilled student, else "
        f"{defaults.DEFAULT_STEPS})",
    )
    s.add_argument(
        "--eta",
        type=number(float, min=0, max=1),
        default=L["eta"],
        help="DDIM eta: 0 deterministic, 1 as much fresh noise per step as DDPM",
    )
    s.add_argument(
        "--batch-size", type=number(int, min=1, max=1024), default=L["batch_size"], help="frames sampled together"
    )
    s.add_argument(
        "--precision", choices=defaults.PRECISIONS, default=L["precision"], help="the UNet's; auto: bf16 on CUDA"
    )
    s.add_argument(
        "--first-stage-precision",
        choices=defaults.PRECISIONS,
        default=L["first_stage_precision"],
        help="the first stage's encode and decode; auto: bf16 and channels-last on CUDA (within 45 dB of fp32 on "
        "the shipped first stage), fp32 on CPU",
    )
    s.add_argument("--compile", action="store_true", help="torch.compile the UNet (slow first batch)")
    s.add_argument("--seed", type=seed(), default=L["seed"], help="seed of the sampler's noise")
    s.add_argument(
        "--decode-window",
        action="store_true",
        help="decode only the latent window under the pasted mouth region (faster, approximate: the VQ decoder's "
        "normalisation and attention are global)",
    )
    s.add_argument(
        "--decode-margin",
        type=number(int, min=0, max=256),
        default=L["decode_margin"],
        help="latent cells decoded around the pasted region with --decode-window",
    )
    s.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    s.add_argument(
        "--cpu-threads",
        type=number(int, min=0, max=256),
        default=None,
        help="CPU worker threads: the next batch's frame inputs and the last batch's paste-back and encoding run "
        "beside the model (default: min(8, CPUs); 0: all in turn on one thread)",
    )
    o = p.add_argument_group("output video")
    o.add_argument(
        "--crf", type=number(int, min=0, max=51), default=L["crf"], help="H.264 quality (lower is better; 0 lossless)"
    )
    o.add_argument(
        "--x264-preset",
        choices=defaults.X264_PRESETS,
        default=L["x264_preset"],
        help="H.264 speed preset (veryfast keeps up with a GPU; medium gives smaller files)",
    )
    f = p.add_argument_group("face")
    f.add_argument(
        "--reference-frame",
        type=number(int, min=0, max=10_000_000),
        default=None,
        help="video frame giving the identity, counted from 0 (default 1)",
    )
    f.add_argument(
        "--crop-size",
        type=number(int, min=MODEL_IMAGE_SIZE // 4, max=4096),
        default=DEFAULT_IMAGE_SIZE,
        help="face crop side the masks are drawn at, in pixels: at least a quarter of the model's image side (a "
        "512 model: 128); larger than 4096 only costs memory",
    )
    f.add_argument(
        "--feather",
        type=number(float, min=0, max=0.5),
        default=L["feather"],
        help="paste-back feather, a fraction of the crop side (0.5 already blends across the whole crop)",
    )
    f.add_argument(
        "--max-missing",
        type=number(float, min=0, max=1),
        default=DEFAULT_MAX_MISSING,
        help="max fraction of faceless frames",
    )
    add_face_argument(f)
    f.add_argument(
        "--landmarks",
        default=None,
        metavar="FILE",
        help="the video's 68 landmarks from a file instead of dlib: an (N, 68, 2) .npy in video pixels (e.g. the "
        "synthetic generator's <clip>.landmarks.npy), or a folder of <frame>.lms files (68 rows 'x y'; 0.lms, "
        "1.lms, ...); one entry per frame at the video's own frame rate, frames counted from 0; NaN: no face",
    )
    st = p.add_argument_group("streaming")
    st.add_argument(
        "--stream",
        action="store_true",
        help="play the speech into a LipSyncStream in real time, writing frames as they are made (log-mel features, "
        "running normalisation: the frames differ slightly from an offline run); logs the latency at the end",
    )
    st.add_argument(
        "--chunk-ms",
        type=number(float, min=20, max=200),
        default=40.0,
        help="audio chunk length with --stream, in ms (the chunks a live source gives)",
    )
    st.add_argument("--stream-no-wait", action="store_true", help="with --stream: feed the chunks as fast as possible")
    p.add_argument(
        "--demo-student",
        action="store_true",
        help="no --video: the bundled demo model's 4-step distilled student (student4.safetensors, DDIM 4 steps)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _check_input(path: str, what: str) -> None:
    from talkingface.inference.errors import InferenceError

    if not Path(path).is_file():
        raise InferenceError(path, f"{what} not found")


def _check_counts(args: argparse.Namespace) -> None:
    """The counts that must be positive, refused before the model loads. The sampling plan (--sampler, --steps,
    --eta against the model's schedule and the checkpoint's record) is checked once, by the pipeline."""
    from talkingface.inference.errors import InferenceError
    from talkingface.inference.stream import check_chunk_ms

    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise InferenceError(flag, f"must be at least 1, got {value}")
    if args.stream:
        check_chunk_ms(args.chunk_ms)


def _check_outputs_are_not_inputs(args: argparse.Namespace) -> None:
    """--out / --frames-dir must not be an input: with --overwrite the input would be replaced by the result."""
    from talkingface.inference.errors import InferenceError
    from talkingface.inference.model_choice import same_file

    inputs = [("--video", args.video), ("--audio", args.audio), ("--landmarks", args.landmarks)]
    for out in (args.out, args.frames_dir):
        if out is None:
            continue
        for flag, path in inputs:
            if path is not None and same_file(Path(out), Path(path)):
                raise InferenceError(out, f"is the input {flag} {path}; write the result to another path")


def choose_checkpoint(ckpt: str | None, video: str | None = None) -> Path:
    """The checkpoint a run with a user video uses: ``--ckpt``, else ``DEFAULT_CKPT`` when it exists, else the
    bundled synthetic demo model; a warning says when that model is used (chosen or by default) on a ``video`` that
    is not a synthetic clip."""
    from talkingface.inference.model_choice import resolve_checkpoint

    path, warning = resolve_checkpoint(ckpt, video=video)
    if warning is not None:
        log.warning("%s", warning)
    return path


def run(args: argparse.Namespace) -> None:
    from talkingface.inference import LipSyncOptions, LipSyncPipeline
    from talkingface.inference.landmark_file import read_landmarks
    from talkingface.inference.stream import stream_file
    from talkingface.inference.writer import check_output
    from talkingface.media.decode import probe_video
    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference

    options = LipSyncOptions(
        steps=args.steps,
        sampler=args.sampler,
        batch_size=args.batch_size,
        precision=args.precision,
        compile=args.compile,
        seed=args.seed,
        eta=args.eta,
        reference_frame=args.reference_frame,
        crop_size=args.crop_size,
        feather=args.feather,
        max_missing=args.max_missing,
        face=args.face,
        decode_window=args.decode_window,
        decode_margin=args.decode_margin,
        first_stage_precision=args.first_stage_precision,
        cpu_threads=args.cpu_threads,
        crf=args.crf,
        x264_preset=args.x264_preset,
    )
    # cheap checks first: nothing is loaded when the output exists or an input is missing or unreadable
    _check_counts(args)
    _check_outputs_are_not_inputs(args)
    check_output(args.out, args.overwrite)
    if args.frames_dir:
        check_output(args.frames_dir, args.overwrite, directory=True)
    _check_input(args.video, "video")
    probe_video(args.video)
    if args.audio is not None:
        _check_input(args.audio, "audio")
    landmarks = read_landmarks(args.landmarks) if args.landmarks is not None else None
    ckpt = choose_checkpoint(args.ckpt, args.video)
    model = get_difftalk_inference(
        args.config,
        ckpt,
        args.first_stage_ckpt,
        device=args.device,
        use_ema=not args.raw_weights,
        trust_checkpoint=args.trust_checkpoint,
    )
    feature_options = {
        "wav2vec2_model": args.wav2vec2_model,
        "whisper_model": args.whisper_model,
        "deepspeech_npy": args.deepspeech_npy,
    }
    if args.device:
        feature_options["device"] = args.device
    pipe = LipSyncPipeline(
        model,
        audio_features=args.audio_features,
        feature_options=feature_options,
        options=options,
        model_source=str(ckpt),
    )
    common = {
        "frames_dir": args.frames_dir,
        "overwrite": args.overwrite,
        "progress": not args.no_progress,
        "landmarks": landmarks,
    }
    if args.stream:
        stream_file(
            pipe, args.video, args.audio, args.out, chunk_ms=args.chunk_ms, realtime=not args.stream_no_wait, **common
        )
        return
    pipe.run(args.video, args.audio, args.out, **common)


def run_synthetic(args: argparse.Namespace) -> None:
    """No --video: the shipped synthetic demo model on a generated face (talkingface/synthetic/assets)."""
    from talkingface.inference.stream import check_chunk_ms
    from talkingface.synthetic.demo import DEFAULT_OUT, run_synthetic_demo

    if args.stream:
        check_chunk_ms(args.chunk_ms)
    # without --out the demo replaces its own previous result; an explicit --out still needs --overwrite
    run_synthetic_demo(
        args.out or DEFAULT_OUT,
        device=args.device,
        progress=not args.no_progress,
        overwrite=args.overwrite or args.out is None,
        stream_chunk_ms=args.chunk_ms if args.stream else None,
        stream_realtime=not args.stream_no_wait,
        student=args.demo_student,
    )


@command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.video is not None and args.out is None:
        parser.error("argument --out: required with --video")
    if args.video is None and args.landmarks is not None:
        parser.error("argument --landmarks: needs --video")
    if args.video is not None and args.demo_student:
        from talkingface.demo_assets import demo_student_path

        parser.error(f"argument --demo-student: only without --video (with a video: --ckpt {demo_student_path()})")
    if args.stream_no_wait and not args.stream:
        parser.error("argument --stream-no-wait: needs --stream")
    if args.landmarks is not None and not args.face.is_largest:
        parser.error("argument --face: not used with --landmarks (the file already gives one face)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.video is None:
        run_synthetic(args)
    else:
        run(args)
    return EXIT_OK
