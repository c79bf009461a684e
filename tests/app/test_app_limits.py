"""``talkingface app``: the limits that bound what one request can cost (upload bytes counted as they arrive,
uploads at a time, duration and frame size of the media, whatever their headers say) and the Host check of a
loopback server, IPv6 included. Tiny generated media; the ASGI app called directly where the bytes read matter."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import select
import socket
import struct
import time
import wave
from collections.abc import Awaitable, Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from app_support import serve
from fastapi import FastAPI
from fastapi.testclient import TestClient

import talkingface.app.server as app_server
from talkingface.app.jobs import RunnerSettings
from talkingface.app.limits import MediaLimits, UploadError, check_sound_decoded, check_video_decoded
from talkingface.app.server import MAX_UPLOADS, AppSettings, create_app
from talkingface.commands import app as app_cli

HEADERS = {"X-Talkingface": "1"}
BOUNDARY = "limits-test-boundary"
CHUNK = 64 * 1024
LIMIT_MB = 0.25  # --max-upload-mb of these tests: 262144 bytes a file
LIMIT = int(LIMIT_MB * 1024 * 1024)
NOWHERE = "/nowhere/model.ckpt"  # a job that gets past the checks fails at once, loading no model


# ------------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def make_app(temp_root: Path, limits: MediaLimits | None = None, **settings: Any) -> Iterator[FastAPI]:
    runner = RunnerSettings(limits=limits or MediaLimits())
    app = create_app(AppSettings(max_upload_mb=LIMIT_MB, runner=runner, temp_dir=temp_root, **settings))
    try:
        yield app
    finally:
        app.state.runner.close()
    assert list(temp_root.iterdir()) == []


def job_folders(temp_root: Path) -> list[Path]:
    (folder,) = temp_root.iterdir()
    return list(folder.iterdir())


def part(name: str, body: bytes = b"", filename: str | None = None, content_type: str = "video/mp4") -> bytes:
    """One multipart part, with its leading boundary."""
    if filename is None:
        head = f'Content-Disposition: form-data; name="{name}"\r\n'
    else:
        head = (
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\nContent-Type: {content_type}\r\n'
        )
    return f"--{BOUNDARY}\r\n{head}\r\n".encode() + body + b"\r\n"


END = f"--{BOUNDARY}--\r\n".encode()
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def sound_bytes(seconds: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(round(seconds * 8000), np.int16).tobytes())
    return buffer.getvalue()


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, read: int, receives: int) -> None:
        self.status, self.headers, self.read, self.receives = status, headers, read, receives
        self.json = json.loads(body) if body else None

    @property
    def message(self) -> str:
        message = str(self.json["message"])
        assert message.startswith("error: ") and "\n" not in message
        return message


async def post(app: FastAPI, headers: dict[str, str], next_chunk: Callable[[], Awaitable[bytes | None]]) -> Answer:
    """``POST /api/jobs`` straight to the ASGI app, the body coming from ``next_chunk`` (None: its end); counts the
    bytes the app read."""
    read = receives = 0
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read, receives
        receives += 1
        chunk = await next_chunk()
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/jobs",
        "raw_path": b"/api/jobs",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {**HEADERS, **headers}.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 7860),
    }
    await app(scope, receive, send)
    start = messages[0]
    answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return Answer(start["status"], answer_headers, body, read, receives)


def chunks(head: bytes, filler: int, tail: bytes = b"") -> Callable[[], Awaitable[bytes | None]]:
    """``head``, then ``filler`` chunks of :data:`CHUNK` bytes, then ``tail``, then the end."""
    pieces = iter([head] + [b"x" * CHUNK] * filler + ([tail] if tail else []))

    async def next_chunk() -> bytes | None:
        return next(pieces, None)

    return next_chunk


# ------------------------------------------------------------------------------------------ upload bytes (streamed)
@pytest.mark.parametrize("with_length", [False, True], ids=["chunked", "content-length"])
def test_a_file_past_the_limit_is_refused_as_its_bytes_arrive(temp_root: Path, with_length: bool) -> None:
    """4 files' worth of one file: refused once its bytes pass the limit, the rest never read, nothing kept."""
    head = part("video_source", b"upload") + part("video", filename="clip.mp4")[:-2]
    filler = 4 * LIMIT // CHUNK
    headers = {"content-type": FORM_TYPE}
    if with_length:  # within the whole body's limit (three files): only counting the file's bytes stops it
        headers["content-length"] = str(len(head) + filler * CHUNK + 2 + len(END))
    with make_app(temp_root) as app:
        answer = asyncio.run(post(app, headers, chunks(head, filler, b"\r\n" + END)))
        assert answer.status == 413
        assert (
            answer.message
            == f"error: clip.mp4: larger than the {LIMIT_MB:g} MB upload limit (the server's --max-upload-mb)"
        )
        assert answer.read <= len(head) + LIMIT + CHUNK  # stopped within a chunk of the limit
        assert answer.headers.get("connection") == "close"  # the server does not read the rest to discard it
        assert job_folders(temp_root) == []  # what was written is gone


def test_a_content_length_past_the_limit_is_refused_unread(temp_root: Path) -> None:
    headers = {"content-type": FORM_TYPE, "content-length": str(10 * LIMIT)}
    with make_app(temp_root) as app:
        answer = asyncio.run(post(app, headers, chunks(b"", 10)))
        assert answer.status == 413 and "upload: larger than the 0.25 MB upload limit" in answer.message
        assert answer.receives == 0 and job_folders(temp_root) == []


def test_bytes_after_the_form_are_cut_at_the_request_limit(temp_root: Path) -> None:
    """The parser skips what follows the last boundary; the body's own limit still stops an endless one."""
    head = part("steps", b"0") + END
    with make_app(temp_root) as app:
        answer = asyncio.run(post(app, {"content-type": FORM_TYPE}, chunks(head, 200)))
        assert answer.status == 413 and answer.message.startswith("error: upload: larger than the 0.25 MB")
        assert answer.read <= 3 * LIMIT + (1 << 20) + CHUNK


def test_an_upload_is_saved_under_its_name_and_unused_files_are_dropped(temp_root: Path) -> None:
    """A form with a file that is used and one that is not (the page's empty file input too)."""
    body = (
        part("video_source", b"sample")
        + part("speech_source", b"upload")
        + part("checkpoint", NOWHERE.encode())
        + part("video", b"unused", filename="clip.mp4")
        + part("landmarks", b"", filename="", content_type="application/octet-stream")
        + part("speech", sound_bytes(0.2), filename="voice.wav", content_type="audio/wav")
        + END
    )
    with make_app(temp_root) as app, TestClient(app) as client:
        r = client.post("/api/jobs", content=body, headers={**HEADERS, "content-type": FORM_TYPE})
        assert r.status_code == 202, r.text
        (folder,) = job_folders(temp_root)
        assert (folder / "speech" / "voice.wav").is_file() and not (folder / "video").exists()


def test_a_third_upload_is_refused_while_two_arrive(temp_root: Path) -> None:
    async def scenario(app: FastAPI) -> tuple[list[Answer], Answer, Answer]:
        release = asyncio.Event()
        started = 0

        def held() -> Callable[[], Awaitable[bytes | None]]:
            pieces = iter([part("video", filename="clip.mp4")[:-2], b"x" * (LIMIT + 1)])

            async def next_chunk() -> bytes | None:
                nonlocal started
                chunk = next(pieces, None)
                if chunk is not None and len(chunk) > LIMIT:
                    started += 1
                    await release.wait()  # an upload still arriving
                return chunk

            return next_chunk

        assert MAX_UPLOADS == 2
        slow = [asyncio.create_task(post(app, {"content-type": FORM_TYPE}, held())) for _ in range(MAX_UPLOADS)]
        while started < MAX_UPLOADS:
            await asyncio.sleep(0.001)
        third = await asyncio.wait_for(post(app, {"content-type": FORM_TYPE}, chunks(part("steps", b"0") + END, 0)), 5)
        release.set()
        held_answers = await asyncio.gather(*slow)
        fourth = await post(app, {"content-type": FORM_TYPE}, chunks(part("steps", b"0") + END, 0))
        return held_answers, third, fourth

    with make_app(temp_root) as app:
        held_answers, third, fourth = asyncio.run(scenario(app))
    assert third.status == 429 and third.receives == 0 and third.headers.get("connection") == "close"
    assert third.message == "error: upload: 2 uploads are already arriving; try again shortly"
    assert [a.status for a in held_answers] == [413, 413]
    assert fourth.status == 400  # the slots are free again: its own problem is answered


CHUNKS_SENT_AT_MOST = 256  # 16 MB


def test_a_chunked_upload_over_a_socket_is_stopped_early(temp_root: Path) -> None:
    """A real server and a raw client sending chunks until it is answered: 413 and the connection closed."""
    request = (
        "POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Talkingface: 1\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: {FORM_TYPE}\r\n\r\n"
    ).encode()
    head = part("video", filename="clip.mp4")[:-2]
    data = b"x" * CHUNK
    sent, answer = 0, b""
    with make_app(temp_root) as app, serve(app) as url:
        with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=10) as conn:
            conn.sendall(request + f"{len(head):x}\r\n".encode() + head + b"\r\n")
            for _ in range(CHUNKS_SENT_AT_MOST):
                if select.select([conn], [], [], 0.005)[0]:
                    break  # answered
                try:
                    conn.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    break
                sent += len(data)
            with contextlib.suppress(ConnectionResetError):
                while chunk := conn.recv(65536):
                    answer += chunk
        assert job_folders(temp_root) == []
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in status.lower()
    assert json.loads(body)["message"].startswith("error: clip.mp4: larger than the 0.25 MB upload limit")
    assert sent < CHUNKS_SENT_AT_MOST * CHUNK  # answered while still sending (kernel buffers hold a few MB)


# ------------------------------------------------------------------------------------------- duration, frame size
def write_mkv(path: Path, frame_times: list[float], size: tuple[int, int] = (32, 24), sound_s: float = 0.0) -> Path:
    """A Matroska file: tiny lossless frames shown at ``frame_times`` (seconds), and ``sound_s`` of silence."""
    import av

    with av.open(str(path), "w", format="matroska") as out:
        video = sound = None
        if frame_times:  # the streams first, then their packets
            video = out.add_stream("ffv1", rate=25)
            video.width, video.height = size
            video.pix_fmt = "yuv420p"
            video.time_base = Fraction(1, 1000)
        if sound_s:
            sound = out.add_stream("pcm_s16le", rate=8000)
            sound.layout = "mono"
        if video is not None:
            for t in frame_times:
                frame = av.VideoFrame.from_ndarray(np.zeros((size[1], size[0], 3), np.uint8), format="rgb24")
                frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
                out.mux(video.encode(frame))
            out.mux(video.encode())
        if sound is not None:
            n = round(sound_s * 8000)
            for i in range(0, n, 800):
                frame = av.AudioFrame.from_ndarray(
                    np.zeros((1, min(800, n - i)), np.int16), format="s16", layout="mono"
                )
                frame.sample_rate, frame.pts, frame.time_base = 8000, i, Fraction(1, 8000)
                out.mux(sound.encode(frame))
            out.mux(sound.encode())
    return path


def claim_duration(path: Path, seconds: float) -> Path:
    """Make the Matroska header say ``seconds`` (its Segment Duration, in ms), whatever the file holds."""
    data = path.read_bytes()
    assert data.count(b"\x44\x89\x88") == 1
    at = data.index(b"\x44\x89\x88") + 3
    path.write_bytes(data[:at] + struct.pack(">d", seconds * 1000) + data[at + 8 :])
    return path


def frames(seconds: float) -> list[float]:
    return [k / 25 for k in range(round(seconds * 25))]


def submit(client: TestClient, files: dict[str, tuple[str, bytes, str]], **fields: str) -> Any:
    return client.post("/api/jobs", files=files, data={"checkpoint": NOWHERE, **fields}, headers=HEADERS)


def wait(client: TestClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def test_media_past_the_limits_are_refused_from_their_headers(temp_root: Path, tmp_path: Path) -> None:
    long_video = write_mkv(tmp_path / "long.mkv", frames(3.0)).read_bytes()
    large_frame = write_mkv(tmp_path / "large.mkv", [0.0], size=(64, 48)).read_bytes()
    loud_video = write_mkv(tmp_path / "talk.mkv", frames(1.0), sound_s=3.0).read_bytes()
    limits = MediaLimits(max_seconds=2.0, max_frame_pixels=64 * 48 - 1)
    with make_app(temp_root, limits) as app, TestClient(app) as client:
        r = submit(client, {"video": ("long.mkv", long_video, "video/x-matroska")})
        assert r.status_code == 413
        assert r.json()["message"] == "error: long.mkv: 3.0 s long; the limit is 2 s (the server's --max-seconds)"
        r = submit(client, {"video": ("large.mkv", large_frame, "video/x-matroska")})
        assert r.status_code == 413
        assert r.json()["message"] == (
            "error: large.mkv: 64x48 frames (3072 pixels); the limit is 3071 pixels (the server's --max-frame-pixels)"
        )
        r = submit(client, {"speech": ("voice.wav", sound_bytes(3.0), "audio/wav")}, video_source="sample")
        assert r.status_code == 413
        assert r.json()["message"] == "error: voice.wav: 3.0 s long; the limit is 2 s (the server's --max-seconds)"
        r = submit(client, {"video": ("talk.mkv", loud_video, "video/x-matroska")}, speech_source="video")
        assert r.status_code == 413 and r.json()["message"].startswith("error: talk.mkv: ")
        assert job_folders(temp_root) == []
        # within the limits: a job, which fails only at the missing checkpoint
        r = submit(client, {"speech": ("voice.wav", sound_bytes(1.5), "audio/wav")}, video_source="sample")
        assert r.status_code == 202
        assert wait(client, r.json()["id"])["message"] == f"error: {NOWHERE}: checkpoint not found"


def test_media_whose_header_lies_are_refused_while_decoding(temp_root: Path, tmp_path: Path) -> None:
    """A header that says 0.5 s over 10 s of frames (or sound): the job fails once decoding passes the limit."""
    video = claim_duration(write_mkv(tmp_path / "forged.mkv", [0.0, 1.0, 10.0]), 0.5).read_bytes()
    sound = claim_duration(write_mkv(tmp_path / "forged-voice.mkv", [], sound_s=10.0), 0.5).read_bytes()
    with make_app(temp_root, MediaLimits(max_seconds=2.0)) as app, TestClient(app) as client:
        r = submit(client, {"video": ("forged.mkv", video, "video/x-matroska")}, speech_source="sample")
        assert r.status_code == 202, r.text
        job = wait(client, r.json()["id"])
        assert job["state"] == "failed"
        assert (
            job["message"] == "error: forged.mkv: longer than the 2 s limit once decoded (the server's --max-seconds)"
        )
        r = submit(client, {"speech": ("forged-voice.mkv", sound, "audio/x-matroska")}, video_source="sample")
        assert r.status_code == 202, r.text
        job = wait(client, r.json()["id"])
        assert (
            job["message"]
            == "error: forged-voice.mkv: longer than the 2 s limit once decoded (the server's --max-seconds)"
        )


def test_decoding_stops_at_the_first_frame_past_the_limit(tmp_path: Path) -> None:
    """The check holds one frame at a time and stops right after the limit (the forged file decodes to 251 frames)."""
    forged = claim_duration(write_mkv(tmp_path / "forged.mkv", [0.0, 1.0, 10.0]), 0.5)
    limits = MediaLimits(max_seconds=2.0)
    seen = 0

    def count() -> None:
        nonlocal seen
        seen += 1

    with pytest.raises(UploadError) as err:
        check_video_decoded(forged, limits, count)
    assert err.value.status == 413 and seen == limits.max_frames + 1 < 100
    check_video_decoded(write_mkv(tmp_path / "ok.mkv", frames(2.0)), limits)  # at the limit: accepted
    check_sound_decoded(write_mkv(tmp_path / "ok-voice.mkv", [], sound_s=2.0), limits)
    with pytest.raises(UploadError, match="its sound is longer than the 2 s limit"):  # sound starting late is padded
        check_sound_decoded(write_mkv(tmp_path / "late.mkv", [], sound_s=2.0), limits, video_start_s=-1.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-seconds", "0"], "error: --max-seconds: must be positive, got 0"),
        (["--max-seconds", "inf"], "error: --max-seconds: must be a finite number, got inf"),
        (["--max-seconds", "nan"], "error: --max-seconds: must be a finite number, got nan"),
        (["--max-frame-pixels", "-1"], "error: --max-frame-pixels: must be positive, got -1"),
        (["--max-upload-mb", "nan"], "error: --max-upload-mb: must be a finite number, got nan"),
    ],
)
def test_cli_checks_the_limits(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:  # refused while parsing (the flag's declared range)
        app_cli.main(args)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == message


def cli_settings(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> AppSettings:
    """The settings ``talkingface app <args>`` serves with (the server itself not run)."""
    import uvicorn

    apps: list[AppSettings] = []
    monkeypatch.setattr(app_server, "create_app", lambda settings: apps.append(settings) or FastAPI())
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)
    assert app_cli.main([*args, "--port", "0"]) == 0
    return apps[-1]


def test_cli_passes_the_media_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = cli_settings(monkeypatch, ["--max-seconds", "5", "--max-frame-pixels", "100"])
    assert settings.runner.limits == MediaLimits(max_seconds=5.0, max_frame_pixels=100)


# ------------------------------------------------------------------------------------------------------ Host check
def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_cli_allows_the_hosts_of_a_loopback_address(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = cli_settings(monkeypatch, ["--host", "127.0.0.2"])
    assert settings.allowed_hosts == ("127.0.0.2", "localhost") and settings.any_checkpoint
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback here (the Host check of ::1 itself is tested without sockets)")
    for host in ("::1", "[::1]"):
        settings = cli_settings(monkeypatch, ["--host", host])
        assert settings.allowed_hosts == ("::1", "localhost") and settings.any_checkpoint


@pytest.mark.parametrize(
    ("allowed", "accepted", "refused"),
    [
        (
            ("::1", "localhost"),
            ["[::1]:7860", "localhost:7860", "[::1]", "LOCALHOST:7860"],
            ["evil.example:7860", "[::2]:7860", "127.0.0.1:7860", "[::1", "::1", ""],
        ),
        (
            ("127.0.0.2", "localhost"),
            ["127.0.0.2:7860", "localhost:7860"],
            ["127.0.0.1:7860", "evil.example:7860", "127.0.0.2.evil.example:7860"],
        ),
    ],
    ids=["ipv6", "127.0.0.2"],
)
def test_a_loopback_server_answers_only_to_its_own_names(
    temp_root: Path, allowed: tuple[str, ...], accepted: list[str], refused: list[str]
) -> None:
    """DNS rebinding: a page of evil.example, its name resolving to this machine, sends Host: evil.example."""
    with make_app(temp_root, allowed_hosts=allowed) as app, TestClient(app) as client:
        for host in accepted:
            assert client.get("/api/options", headers={"host": host}).status_code == 200, host
        for host in refused:
            r = client.get("/api/options", headers={"host": host})
            assert r.status_code == 400, host
            message = r.json()["message"]
            assert message.startswith("error: host: ") and "is not this server's address" in message
            r = client.post("/api/jobs", files={"checkpoint": (None, "/etc/passwd")}, headers={**HEADERS, "host": host})
            assert r.status_code == 400
        assert job_folders(temp_root) == []


def test_a_server_on_127_0_0_2_is_reachable_by_its_address(temp_root: Path) -> None:
    """The Host a browser sends for http://127.0.0.2:PORT is accepted by a real server there."""
    import httpx

    with make_app(temp_root, allowed_hosts=("127.0.0.2", "localhost")) as app, serve(app, "127.0.0.2") as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/api/options").status_code == 200
            host = f"evil.example:{urlsplit(url).port}"
            assert client.get("/api/options", headers={"host": host}).status_code == 400
