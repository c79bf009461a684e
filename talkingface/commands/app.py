"""``talkingface app``: serve the lip-sync web app of :mod:`talkingface.app` (imported after parsing)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

from talkingface.app.limits import DEFAULT_MAX_FRAME_PIXELS, DEFAULT_MAX_SECONDS, MediaLimits
from talkingface.cli_support import EXIT_OK, ArgumentParser, add_device_option, check_device, command, fail, number
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
web page cannot reach it by DNS rebinding.

Ctrl-C (or SIGTERM) stops the server: the running job is cancelled, every temporary file removed, and the command
prints "stopped" and exits with 130 (143 for SIGTERM); a second Ctrl-C stops waiting for a job step that cannot stop
midway (a model loading, a batch being generated)."""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="talkingface app", description=DESCRIPTION)
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=number(int, min=0, max=65535), default=DEFAULT_PORT, help="port (0: any free one)")
    p.add_argument(
        "--ckpt",
        action="append",
        default=[],
        metavar="PATH",
        help="a checkpoint to offer first on the page (repeatable); the default checkpoint and the bundled demo "
        "model are always offered",
    )
    add_device_option(p)
    p.add_argument(
        "--max-upload-mb",
        type=number(float, above=0, max=100_000),
        default=MAX_UPLOAD_MB,
        help="largest accepted upload, per file, in MB; uploads are stored on disk, so at most 100 GB",
    )
    p.add_argument(
        "--max-seconds",
        type=number(float, above=0, max=86_400),
        default=DEFAULT_MAX_SECONDS,
        help="longest accepted video or speech, in seconds (default: %(default)g)",
    )
    p.add_argument(
        "--max-frame-pixels",
        type=number(int, min=1, max=8192 * 8192),
        default=DEFAULT_MAX_FRAME_PIXELS,
        help="largest accepted video frame, width x height in pixels (default: %(default)d, 1920x1080)",
    )
    p.add_argument(
        "--keep-minutes",
        type=number(float, above=0, max=10_080),
        default=60.0,
        help="how long a finished job's result is kept, in minutes (10080: a week)",
    )
    p.add_argument(
        "--sample-seconds",
        type=number(float, above=0, max=600),
        default=SAMPLE_SECONDS,
        help="length of the generated sample clip, in seconds",
    )
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


class Shutdown:
    """The signal handler while serving: the first SIGINT/SIGTERM stops the server and cancels the running job at
    once (it stops at its next frame or batch); another one stops waiting for connections and for the job, and
    silences the server's complaints about the requests it cuts short. Nothing is raised, so no traceback: the command
    then removes the temporary files, prints one line and exits with 128 + the signal."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, server: Any, app: Any) -> None:
        self.server, self.app = server, app  # the uvicorn server, the app (its job runner: app.state.runner)
        self.signum: int | None = None
        self.cancelled = False  # a job was running

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            self.server.should_exit = True
            self.cancelled = self.app.state.runner.cancel_all()
        else:
            logging.getLogger("uvicorn.error").disabled = True  # "Exception in ASGI application" of cut requests
            self.server.force_exit = True
            self.app.state.runner.stop_waiting()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handler while the block runs; once a signal came, further ones are ignored (the command is exiting:
        a Ctrl-C during the interpreter's teardown would kill it with a KeyboardInterrupt)."""
        previous = {sig: signal.signal(sig, self) for sig in self.SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if self.signum is None else signal.SIG_IGN)


def serve(app: Any, sock: socket.socket, url: str) -> int:
    """Serve ``app`` on ``sock`` (at ``url``) until a signal stops it (see :class:`Shutdown`); the exit status."""
    import uvicorn  # the server only when serving (--help stays fast)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # Shutdown's, not uvicorn's: those re-raise the signal once stopped (a KeyboardInterrupt traceback)

    server = Server(uvicorn.Config(app, log_level="warning"))
    stop = Shutdown(server, app)
    with stop.installed():
        log.info("talkingface app: open %s in a browser (Ctrl-C stops it)", url)
        with sock:
            server.run(sockets=[sock])
        if stop.signum is None:
            return EXIT_OK
        stopped = app.state.runner.close()  # done by the app's shutdown, unless a second signal cut it short
        log.info("talkingface app: stopped%s", "; the running job was cancelled" if stop.cancelled else "")
    status = 128 + stop.signum
    if not stopped:  # the job's thread is still inside torch: tearing the interpreter down under it would abort
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(status)
    return status


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # every number in its declared range, nan and inf refused
    check_device(args.device)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
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
    return serve(app, sock, f"http://{shown}:{port}")
