"""``talkingface lipsync`` (also ``python demo.py``): portrait video + speech in, lip-synced mp4 out.

A command above two packages: with --video it drives the inference pipeline (``talkingface.inference``), without
it the synthetic demo (``talkingface.synthetic.demo``), which drives the same pipeline. The parser imports neither
(``--help`` stays fast); ``main`` imports them after parsing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from talkingface.cli_support import (
    EXIT_OK,
    ArgumentParser,
    add_device_option,
    add_feature_options,
    check_device,
    command,
    number,
    seed,
)
from talkingface.commands import defaults
from talkingface.constants import DEFAULT_IMAGE_SIZE, MODEL_IMAGE_SIZE
from talkingface.media.extract import DEFAULT_MAX_MISSING
from talkingface.media.face_choice import add_face_options
from talkingface.media.features import BACKEND_KINDS

if TYPE_CHECKING:
    from talkingface.inference import LipSyncOptions
    from talkingface.inference.landmark_file import SourceLandmarks
    from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel

log = logging.getLogger(__name__)

DESCRIPTION = f"""\
Lip-sync a portrait video to speech: video + speech in, lip-synced mp4 out.

  talkingface lipsync --video person.mp4 --audio speech.wav --out result.mp4
  talkingface lipsync --video person.mp4 --audio speech.wav --out result.mp4 --ckpt exported/difftalk.safetensors
  talkingface lipsync            no arguments: the bundled synthetic demo model on a generated face (CPU, offline)
  talkingface lipsync --stream   the same, the speech played in real time in 40 ms chunks
  talkingface lipsync --audio speech.wav --ckpt model.ckpt   the generated face speaking speech.wav, by model.ckpt

Without --video the face is generated: --audio, --ckpt, --frames-dir and the sampling, face-crop and video options
apply to it; --config, --first-stage-ckpt and --trust-checkpoint need --ckpt, --landmarks and --face need --video.

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
line and exit status 130, SIGTERM (kill, timeout) with exit status 143, leaving no partial output."""


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
    add_feature_options(
        model,
        BACKEND_KINDS,
        default=None,
        help="feature backend; default: the kind recorded in the checkpoint (required when it records none)",
        deepspeech="AD-NeRF aud.npy of the speech (for --audio-features deepspeech-npy)",
    )
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
    add_device_option(s)
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
    add_face_options(f, max_missing=DEFAULT_MAX_MISSING)
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


def _options(args: argparse.Namespace, **instead: object) -> LipSyncOptions:
    """The sampling, face and video options of the flags; ``instead``: other defaults for the flags not given."""
    from talkingface.inference import LipSyncOptions

    values = {
        name: getattr(args, name)
        for name in (
            "steps",
            "sampler",
            "batch_size",
            "precision",
            "compile",
            "seed",
            "eta",
            "reference_frame",
            "crop_size",
            "feather",
            "max_missing",
            "face",
            "decode_window",
            "decode_margin",
            "first_stage_precision",
            "cpu_threads",
            "crf",
            "x264_preset",
        )
    }
    given = getattr(args, "given", set())
    values.update({name: value for name, value in instead.items() if name not in given})
    return LipSyncOptions(**values)  # type: ignore[arg-type]


def _check_cheap(args: argparse.Namespace, out: str | Path, out_overwrite: bool) -> None:
    """The checks that need no model, first: nothing is loaded when the output exists or an input is missing."""
    from talkingface.inference.writer import check_output
    from talkingface.media.decode import probe_video

    check_device(args.device)
    _check_outputs_are_not_inputs(args)
    check_output(out, out_overwrite)
    if args.frames_dir:
        check_output(args.frames_dir, args.overwrite, directory=True)
    if args.video is not None:
        _check_input(args.video, "video")
        probe_video(args.video)
    if args.audio is not None:
        _check_input(args.audio, "audio")


def _lipsync(
    args: argparse.Namespace,
    model: DiffTalkModel,
    model_source: str,
    options: LipSyncOptions,
    video: str | Path,
    audio: str | Path | None,
    out: str | Path,
    landmarks: SourceLandmarks | None,
    overwrite: bool,
) -> None:
    """The pipeline on ``video`` and ``audio``, offline or (--stream) chunk by chunk: the one wiring of both modes."""
    from talkingface.inference import LipSyncPipeline
    from talkingface.inference.stream import stream_file

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
        model_source=model_source,
    )
    common = {
        "frames_dir": args.frames_dir,
        "overwrite": overwrite,
        "progress": not args.no_progress,
        "landmarks": landmarks,
    }
    if args.stream:
        stream_file(pipe, video, audio, out, chunk_ms=args.chunk_ms, realtime=not args.stream_no_wait, **common)
        return
    pipe.run(video, audio, out, **common)


def run(args: argparse.Namespace) -> None:
    from talkingface.inference.landmark_file import read_landmarks
    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference

    _check_cheap(args, args.out, args.overwrite)
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
    _lipsync(args, model, str(ckpt), _options(args), args.video, args.audio, args.out, landmarks, args.overwrite)


def run_synthetic(args: argparse.Namespace) -> None:
    """No --video: a generated synthetic face speaking --audio (else the speech of another generated clip), animated
    by --ckpt, else by the shipped synthetic demo model or its student (talkingface/synthetic/assets). Every flag
    that means something without a video is used; the demo's own defaults (its crop side, 25 frames a batch, 1 when
    streaming, dpm++ with its steps for the demo model) stand in for the flags not given."""
    import tempfile

    from talkingface.inference.landmark_file import read_landmarks
    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
    from talkingface.synthetic.demo import (
        DEFAULT_OUT,
        DEMO_CROP_SIZE,
        demo_inputs,
        demo_seconds,
        demo_steps,
        load_demo_model,
    )

    out = args.out or DEFAULT_OUT
    # without --out the demo replaces its own previous result; an explicit --out (or --frames-dir) needs --overwrite
    _check_cheap(args, out, args.overwrite or args.out is None)
    seconds = demo_seconds()
    instead: dict[str, object] = {"crop_size": DEMO_CROP_SIZE, "batch_size": 1 if args.stream else 25}
    if args.ckpt is not None:  # the user's model samples as it records, or with the package's defaults
        model_source = args.ckpt
        model = get_difftalk_inference(
            args.config,
            args.ckpt,
            args.first_stage_ckpt,
            device=args.device,
            use_ema=not args.raw_weights,
            trust_checkpoint=args.trust_checkpoint,
        )
    else:
        if not args.demo_student:  # the student samples as it records (DDIM, 4 steps)
            instead.update(sampler="dpm++", steps=demo_steps())
        model, ckpt = load_demo_model(student=args.demo_student, device=args.device, use_ema=not args.raw_weights)
        model_source = str(ckpt)
    options = _options(args, **instead)
    with tempfile.TemporaryDirectory(prefix="talkingface-demo-") as tmp:
        video, audio, landmarks = demo_inputs(Path(tmp), seconds, out, args.audio)
        overwrite = args.overwrite or args.out is None
        _lipsync(args, model, model_source, options, video, audio, out, read_landmarks(landmarks), overwrite)


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations of the flags given on the command line ``argv`` (a default is not "given")."""
    unset = object()
    namespace = argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != argparse.SUPPRESS})
    parser.parse_args(argv, namespace=namespace)  # argparse fills in a default only where the namespace has none
    return {dest for dest, value in vars(namespace).items() if value is not unset}


#: Flags that mean something only with --ckpt when there is no --video, and why: the demo model is a safetensors
#: file that carries its config and names its first stage.
_CKPT_ONLY = {
    "config": ("--config", "the demo model carries its own config"),
    "first_stage_ckpt": ("--first-stage-ckpt", "the demo model finds its own first stage"),
    "trust_checkpoint": ("--trust-checkpoint", "the demo model is safetensors: nothing to unpickle"),
}


def _check_flag_combinations(parser: ArgumentParser, args: argparse.Namespace) -> None:
    if args.video is not None and args.out is None:
        parser.error("argument --out: required with --video")
    if args.video is None:
        if args.landmarks is not None:
            parser.error("argument --landmarks: needs --video (a generated clip brings its own)")
        if args.ckpt is None:
            for dest, (flag, why) in _CKPT_ONLY.items():
                if dest in args.given:
                    parser.error(f"argument {flag}: only with --ckpt ({why})")
        if not args.face.is_largest:
            parser.error("argument --face: needs --video (a generated clip shows one face)")
        if args.demo_student and args.ckpt is not None:
            parser.error("argument --demo-student: not with --ckpt (which names the model to use)")
    if args.video is not None and args.demo_student:
        from talkingface.demo_assets import demo_student_path

        parser.error(f"argument --demo-student: only without --video (with a video: --ckpt {demo_student_path()})")
    if args.stream_no_wait and not args.stream:
        parser.error("argument --stream-no-wait: needs --stream")
    if "chunk_ms" in args.given and not args.stream:
        parser.error("argument --chunk-ms: needs --stream")
    if args.landmarks is not None and not args.face.is_largest:
        parser.error("argument --face: not used with --landmarks (the file already gives one face)")


@command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = given_flags(parser, argv)
    _check_flag_combinations(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.video is None:
        run_synthetic(args)
    else:
        run(args)
    return EXIT_OK
