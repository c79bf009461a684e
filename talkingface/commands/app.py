"""``talkingface app``: serve the lip-sync web app of :mod:`talkingface.app` (imported after parsing)."""

from __future__ import annotations

import ipaddress
import logging
import math
import socket

from talkingface.app.limits import DEFAULT_MAX_FRAME_PIXELS, DEFAULT_MAX_SECONDS, MediaLimits
from talkingface.cli_support import EXIT_OK, ArgumentParser, check_device, command, fail
from talkingface.commands.defaults import DEFAULT_CKPT, MAX_UPLOAD_MB, SAMPLE_SECONDS

log = logging.getLogger(__name__)

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

DESCRIPTION = f"""\
Serve the lip-sync web app: upload a portrait video and speech (or record it, or pick the generated sample), choose
the checkpoint, sampler and steps, watch the progress, play and download the result.

  talkingface app                  http://127.0.0.1:7860, the default checkpoint or the bundled demo model
  talkingface app --ckpt exported/difftalk.safetensors --port 8080
  talkingface app --host 0.0.0.0   reachable from other machines: no login, so only on a trusted network

The page offers the checkpoints given with --ckpt, {DEFAULT_CKPT} when it exists, and the bundled synthetic demo
model (with its warning: it only suits synthetic cartoon faces). Uploads are checked for type, size (--max-upload-mb,
counted as the bytes arrive; two uploads at a time), duration (--max-seconds) and frame size (--max-frame-pixels);
every job's files live in a temporary folder that is removed when the job is discarded or expires, and when the
server stops. On a loopback address the server answers only to requests naming it (its address or localhost), so a
web page cannot reach it by DNS rebinding."""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="talkingface app", description=DESCRIPTION)
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    p.add_argument(
        "--ckpt",
        action="append",
        default=[],
        metavar="PATH",
        help="a checkpoint to offer first on the page (repeatable); the default checkpoint and the bundled demo "
        "model are always offered",
    )
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument(
        "--max-upload-mb", type=float, default=MAX_UPLOAD_MB, help="largest accepted upload, per file, in MB"
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help="longest accepted video or speech, in seconds (default: %(default)g)",
    )
    p.add_argument(
        "--max-frame-pixels",
        type=int,
        default=DEFAULT_MAX_FRAME_PIXELS,
        help="largest accepted video frame, width x height in pixels (default: %(default)d, 1920x1080)",
    )
    p.add_argument("--keep-minutes", type=float, default=60.0, help="how long a finished job's result is kept")
    p.add_argument("--sample-seconds", type=float, default=SAMPLE_SECONDS, help="length of the generated sample clip")
    return p


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> tuple[str, ...] | None:
    """The Host header names a server listening on ``host`` answers to: its own address and localhost when that is a
    loopback address (so that a web page cannot reach it by DNS rebinding), else None (any)."""
    if not is_loopback(host):
        return None
    address = host.strip("[]")
    address = "127.0.0.1" if address == "localhost" else ipaddress.ip_address(address).compressed
    return (address, "localhost")


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value in (
        ("--max-upload-mb", args.max_upload_mb),
        ("--max-seconds", args.max_seconds),
        ("--max-frame-pixels", args.max_frame_pixels),
        ("--keep-minutes", args.keep_minutes),
        ("--sample-seconds", args.sample_seconds),
    ):
        if not math.isfinite(value):
            return fail(flag, f"must be a finite number, got {value:g}")
        if value <= 0:
            return fail(flag, f"must be positive, got {value:g}")
    check_device(args.device)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    import uvicorn  # the server only when serving (--help stays fast)

    from talkingface.app.jobs import RunnerSettings
    from talkingface.app.server import AppSettings, create_app

    loopback = is_loopback(args.host)
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host.strip("[]"), args.port))
        sock.listen(128)  # a browser opened at once waits while the server starts
    except OSError as err:
        return fail(f"--host {args.host} --port {args.port}", f"cannot listen there ({err.strerror or err})")
    if not loopback:
        log.warning(
            "--host %s: the app is reachable from other machines; it has no login, so anyone who reaches it can run "
            "jobs on this machine (with the offered checkpoints only). Use it only on a trusted network.",
            args.host,
        )
    settings = AppSettings(
        max_upload_mb=args.max_upload_mb,
        runner=RunnerSettings(
            device=args.device,
            sample_seconds=args.sample_seconds,
            keep_s=args.keep_minutes * 60,
            checkpoints=tuple(args.ckpt),
            limits=MediaLimits(max_seconds=args.max_seconds, max_frame_pixels=args.max_frame_pixels),
        ),
        # a loopback server answers only to its own names: a web page cannot reach it by DNS rebinding
        allowed_hosts=allowed_hosts(args.host),
        any_checkpoint=loopback,  # others may only pick among the offered checkpoints, not read server paths
    )
    app = create_app(settings)
    port = sock.getsockname()[1]
    shown = f"[{args.host.strip('[]')}]" if family == socket.AF_INET6 else args.host
    log.info("talkingface app: open http://%s:%d in a browser (Ctrl-C stops it)", shown, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    with sock:
        server.run(sockets=[sock])
    return EXIT_OK
