"""The web app's HTTP side: one self-contained page and a small JSON API (FastAPI).

    GET    /                          the page (static/index.html: no CDN, no external fonts or scripts)
    GET    /favicon.ico, /favicon.svg the app's icon (SVG)
    GET    /api/options               checkpoints ({id, label}), samplers, upload limits and accepted file types
    POST   /api/jobs                  multipart form -> 202 {id, state, ...}; a bad upload -> 4xx {message};
                                      any other body (JSON, url-encoded, none) -> 415, no job
    GET    /api/jobs/{id}             {state, phase, done, total, message, warning, elapsed_s, seconds_left, result}
    GET    /api/jobs/{id}/result.mp4  the lip-synced video (once state is "done")
    DELETE /api/jobs/{id}             a queued or running job: cancel it (202, the job; it stops before its next
                                      batch, its files go, it stays listed as "cancelled"); else discard it and
                                      its files (204)

Form fields of ``POST /api/jobs``: the files ``video``, ``speech`` and ``landmarks`` (optional ``.npy`` in video
pixels, instead of dlib); ``video_source`` ("upload" or "sample": the generated synthetic portrait; default: upload
when a video is sent), ``speech_source`` ("upload", "sample": the generated speech, or "video": the video's own
track; default: upload when a speech file is sent, else the sample with the sample video, else the video's own);
``checkpoint`` (the id of an offered one, or on a loopback server a checkpoint path on the server), ``sampler``,
``steps`` (empty: the defaults, as ``talkingface lipsync`` without those flags).

No answer holds an absolute path of the server: checkpoints are offered by id and label, and messages name uploads by
their own names and the repository's files by their relative paths.

POST and DELETE need the header ``X-Talkingface: 1``, which a page of another site cannot send without the server's
consent (CORS), so such a page cannot start jobs here. Every error is ``{"message": "error: <what>: <problem>"}``.

Limits: a file larger than ``--max-upload-mb`` is refused (413) as soon as its bytes pass the limit, the body being
read as it arrives (a chunked one too; a Content-Length above the limit is refused unread); at most
:data:`MAX_UPLOADS` uploads arrive at once (429); a video or speech longer than ``--max-seconds``, or video frames
larger than ``--max-frame-pixels``, are refused (413) when the file's header says so, else the job fails when
decoding finds it (see :mod:`talkingface.app.limits`). With ``allowed_hosts`` (a server on a loopback address) a
request whose Host header names another host is refused (400).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from talkingface.app.jobs import BUSY, DONE, BusyError, JobRequest, JobRunner, RunnerSettings
from talkingface.app.limits import MediaLimits, UploadError, check_sound_header, check_video_header
from talkingface.app.uploads import ACCEPT, Form, UploadLimit, read_form
from talkingface.cli_support import one_line
from talkingface.demo_assets import demo_model_paths, demo_student_path
from talkingface.inference.model_choice import is_bundled_model
from talkingface.inference.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
from talkingface.model.image_driven_talkingface.DiffTalk.loader import DEFAULT_CKPT, resolve_path

log = logging.getLogger(__name__)

VIDEO_SOURCES = ("upload", "sample")  # the user's video, or the generated sample portrait
SPEECH_SOURCES = ("upload", "sample", "video")  # the user's file (or recording), the sample speech, the video's own
CSRF_HEADER = "x-talkingface"
DEFAULT_MAX_UPLOAD_MB = 200.0
#: Uploads received at once; more are refused (429) rather than queued.
MAX_UPLOADS = 2


@dataclass(frozen=True)
class AppSettings:
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB  # per file
    runner: RunnerSettings = field(default_factory=RunnerSettings)  # with the media limits (duration, frame size)
    temp_dir: Path | None = None  # where the app's temp folder goes (default: the system's)
    # Host header names accepted, without port (an IPv6 address with or without brackets); None: any. Against DNS
    # rebinding: a web page cannot make a browser send this server's own address as the Host of its requests.
    allowed_hosts: tuple[str, ...] | None = None
    any_checkpoint: bool = True  # False: only the offered checkpoints (a server reachable by others)


CARTOON_ONLY = " (synthetic cartoon faces only)"
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="15" fill="#f2c9a0"/>'
    '<circle cx="11" cy="12" r="2" fill="#333"/><circle cx="21" cy="12" r="2" fill="#333"/>'
    '<ellipse cx="16" cy="22" rx="6" ry="3.5" fill="#b03a48"/></svg>'
)


@dataclass(frozen=True)
class CheckpointChoice:
    id: str  # what the form sends
    label: str  # what the page shows (no absolute server path)
    path: str  # the file, on the server only


def checkpoint_choices(extra: tuple[str, ...] = ()) -> list[CheckpointChoice]:
    """The checkpoints the page offers, the default first: ``--ckpt`` ones, the default checkpoint when it exists,
    and the bundled synthetic demo model always (then its 4-step student)."""
    named = [(f"ckpt-{i + 1}", path, Path(path).name) for i, path in enumerate(extra)]
    if resolve_path(DEFAULT_CKPT).is_file():
        named.append(("default", str(DEFAULT_CKPT), f"the trained model ({DEFAULT_CKPT})"))
    named.append(("demo", str(demo_model_paths()[1]), "the bundled demo model"))
    if demo_student_path().is_file():
        named.append(("demo-student", str(demo_student_path()), "the bundled demo model, 4-step student (faster)"))
    seen: set[Path] = set()
    choices: list[CheckpointChoice] = []
    for key, path, label in named:
        resolved = resolve_path(path).resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        if any(c.label == label for c in choices):  # two --ckpt files of one name
            label = f"{label} ({key})"
        choices.append(CheckpointChoice(key, label + (CARTOON_ONLY if is_bundled_model(path) else ""), path))
    return choices


def _checkpoint(value: str, choices: list[CheckpointChoice], any_checkpoint: bool) -> str | None:
    """The checkpoint path a form's ``checkpoint`` names: an offered one's id (or path), else, where the server takes
    any checkpoint, the path itself; empty: None (the default)."""
    value = value.strip()
    if not value:
        return None
    for choice in choices:
        if value in (choice.id, choice.path):
            return choice.path
    if not any_checkpoint:
        raise UploadError(400, "checkpoint", "not one of the offered ones (this server takes only those)")
    return value


def _choice(fields: dict[str, str], key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = fields.get(key, "").strip() or default
    if value not in allowed:
        raise UploadError(400, key, f"must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _optional_int(fields: dict[str, str], key: str) -> int | None:
    value = fields.get(key, "").strip()
    if not value:
        return None
    if not re.fullmatch(r"\d+", value) or int(value) < 1:
        raise UploadError(400, key, f"must be a whole number of at least 1, got {value!r}")
    return int(value)


def _job_request(form: Form, choices: list[CheckpointChoice], any_checkpoint: bool) -> JobRequest:
    """The job a ``POST /api/jobs`` form asks for (see the module docstring); the files it does not use are removed.
    ``choices``: the offered checkpoints; ``any_checkpoint``: a checkpoint path on the server is taken too."""
    fields, files = form.fields, form.files
    video_from = _choice(fields, "video_source", "upload" if "video" in files else "sample", VIDEO_SOURCES)
    speech_default = "upload" if "speech" in files else ("sample" if video_from == "sample" else "video")
    speech_from = _choice(fields, "speech_source", speech_default, SPEECH_SOURCES)
    sampler = fields.get("sampler", "").strip() or None
    if sampler is not None and sampler not in SAMPLERS:
        raise UploadError(
            400, "sampler", f"unknown {sampler!r}; choose one of {', '.join(SAMPLERS)}, or leave it empty"
        )
    steps = _optional_int(fields, "steps")
    wanted = {"video": video_from == "upload", "speech": speech_from == "upload", "landmarks": video_from == "upload"}
    used: dict[str, Path | None] = dict.fromkeys(ACCEPT)
    for what, path in files.items():
        if not wanted[what]:
            shutil.rmtree(path.parent, ignore_errors=True)
        elif path.stat().st_size == 0:
            raise UploadError(400, form.names[what], "empty file")
        else:
            used[what] = path
    if wanted["video"] and used["video"] is None:
        raise UploadError(400, "video", "no file chosen; choose a video file, or the sample")
    if wanted["speech"] and used["speech"] is None:
        raise UploadError(400, "speech", "no file chosen; choose a file or record one, or use another speech")
    return JobRequest(
        video=used["video"],
        speech=used["speech"],
        landmarks=used["landmarks"],
        sample_speech=speech_from == "sample",
        checkpoint=_checkpoint(fields.get("checkpoint", ""), choices, any_checkpoint),
        sampler=sampler,
        steps=steps,
        names={what: form.names[what] for what, path in used.items() if path is not None},
    )


def _check_media_headers(request: JobRequest, limits: MediaLimits) -> None:
    """Refuse (413) uploads whose headers already say they are too long or too large (decoding checks again), and
    (400) a video without sound chosen as its own speech."""
    if request.video is not None:
        own_sound = request.speech is None and not request.sample_speech
        check_video_header(request.video, limits, own_sound=own_sound, name=request.names.get("video"))
    if request.speech is not None:
        check_sound_header(request.speech, limits, name=request.names.get("speech"))


#: A request refused because a job runs has its body read (and dropped) up to this many bytes before the answer, so
#: that a small form still in flight does not make the closing socket reset the connection before the client reads
#: the answer.
DRAIN_BYTES = 1 << 20


async def _drain(request: Request, limit: int = DRAIN_BYTES) -> bool:
    """Read and drop the request body up to ``limit`` bytes; True when it was read to its end."""
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                return False
    except ClientDisconnect:
        return False
    return True


def _error(status: int, message: str, close: bool = False) -> JSONResponse:
    """The API's error answer; ``close``: the request body was not read to its end, so the connection is closed
    (rather than reading the rest only to discard it)."""
    headers = {"Connection": "close"} if close else None
    return JSONResponse({"message": f"error: {message}"}, status_code=status, headers=headers)


def normal_host(name: str) -> str:
    """A host name in lower case, or an IP address in its short form (IPv6 without brackets)."""
    try:
        return ipaddress.ip_address(name.strip("[]")).compressed
    except ValueError:
        return name.lower()


def host_name(header: str) -> str | None:
    """The host of a ``Host`` header without its port (see :func:`normal_host`); None when it is malformed."""
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^\[\]:/@\s]+))(?::\d{1,5})?", header)
    if match is None:
        return None
    return normal_host(match.group(1) or match.group(2))


class HostCheck:
    """ASGI middleware: a 400 answer to requests whose ``Host`` header is not one of ``allowed``, so that a web page
    whose own name resolves to this machine (DNS rebinding) cannot use the API. Unlike Starlette's
    TrustedHostMiddleware it reads an IPv6 Host (``[::1]:7860``)."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = {normal_host(name) for name in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = Headers(scope=scope).get("host", "")
            if host_name(header) not in self.allowed:
                names = ", ".join(sorted(f"[{n}]" if ":" in n else n for n in self.allowed))
                shown = one_line(header)[:100] or "(none)"
                response = _error(400, f"host: {shown!r} is not this server's address (it answers to {names})")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: AppSettings | None = None) -> FastAPI:
    """The app; its job runner (and temp folder) lives until the app shuts down."""
    settings = settings or AppSettings()
    root = Path(tempfile.mkdtemp(prefix="talkingface-app-", dir=settings.temp_dir))
    runner = JobRunner(root, settings.runner)
    upload_limit = UploadLimit(settings.max_upload_mb)
    receiving = 0  # uploads being received (one event loop: no lock needed)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            runner.close()

    app = FastAPI(title="talkingface", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runner = runner
    if settings.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    page = resources.files("talkingface.app").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/favicon.ico")
    @app.get("/favicon.svg")
    def favicon() -> Response:
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/options")
    def options() -> dict[str, object]:
        return {
            "checkpoints": [{"id": c.id, "label": c.label} for c in checkpoint_choices(settings.runner.checkpoints)],
            "any_checkpoint": settings.any_checkpoint,
            "samplers": list(SAMPLERS),
            "default_sampling": f"{DEFAULT_SAMPLER} {DEFAULT_STEPS} steps",
            "max_upload_mb": settings.max_upload_mb,
            "max_seconds": settings.runner.limits.max_seconds,
            "max_frame_pixels": settings.runner.limits.max_frame_pixels,
            "accept": {k: list(v) for k, v in ACCEPT.items()},
            "sample_seconds": settings.runner.sample_seconds,
        }

    @app.post("/api/jobs", status_code=202)
    async def submit(request: Request) -> Response:
        nonlocal receiving
        if request.headers.get(CSRF_HEADER) != "1":
            return _error(
                403, f"request: needs the header {CSRF_HEADER.title()}: 1 (sent by the app's page)", close=True
            )
        if runner.busy():  # a small form is read first: closing on unread bytes can reset the answer away
            return _error(409, f"job: {BUSY}", close=not await _drain(request))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > upload_limit.request_bytes:
            return _error(413, str(upload_limit.too_large("upload")), close=True)
        if receiving >= MAX_UPLOADS:  # nothing of a refused upload is read: that is the point of the limit
            return _error(429, f"upload: {MAX_UPLOADS} uploads are already arriving; try again shortly", close=True)
        job_id, folder = runner.new_folder()
        receiving += 1
        complete = False  # the body was read to its end
        try:
            form = await read_form(request.headers.get("content-type", ""), request.stream(), folder, upload_limit)
            complete = True
            choices = checkpoint_choices(settings.runner.checkpoints)
            job_request = _job_request(form, choices, settings.any_checkpoint)
            await run_in_threadpool(_check_media_headers, job_request, settings.runner.limits)
        except UploadError as err:
            shutil.rmtree(folder, ignore_errors=True)
            return _error(err.status, str(err), close=not complete)
        except ClientDisconnect:
            shutil.rmtree(folder, ignore_errors=True)
            return _error(400, "upload: the connection closed before the form was complete", close=True)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            receiving -= 1
        try:
            job = runner.submit(job_id, folder, job_request)
        except BusyError as err:
            return _error(409, f"job: {err}")
        return JSONResponse(job.to_json(), status_code=202)

    def _missing(job_id: str) -> JSONResponse:
        keep_min = settings.runner.keep_s / 60
        return _error(404, f"job {job_id}: not found (finished jobs are kept {keep_min:g} min)")

    @app.get("/api/jobs/{job_id}")
    def status(job_id: str) -> Response:
        job = runner.get(job_id)
        return JSONResponse(job.to_json()) if job is not None else _missing(job_id)

    @app.get("/api/jobs/{job_id}/result.mp4")
    def result(job_id: str) -> Response:
        job = runner.get(job_id)
        if job is None:
            return _missing(job_id)
        if job.state != DONE or not job.result.is_file():
            return _error(409, f"job {job_id}: no result ({job.state})")
        return FileResponse(job.result, media_type="video/mp4", filename=f"talkingface-{job_id}.mp4")

    @app.delete("/api/jobs/{job_id}")
    def cancel(job_id: str, request: Request) -> Response:
        if request.headers.get(CSRF_HEADER) != "1":
            return _error(403, f"request: needs the header {CSRF_HEADER.title()}: 1 (sent by the app's page)")
        if runner.get(job_id) is None:
            return _missing(job_id)
        stopping = runner.cancel(job_id)
        return JSONResponse(stopping.to_json(), status_code=202) if stopping is not None else Response(status_code=204)

    return app
