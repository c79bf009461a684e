"""``talkingface app``: the limits that bound what one request can cost (upload bytes counted as they arrive,
uploads at a time). The ASGI app called directly where the bytes read matter."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import select
import socket
import threading
import time
import wave
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from talkingface.app.jobs import RunnerSettings
from talkingface.app.server import MAX_UPLOADS, AppSettings, create_app

HEADERS = {"X-Talkingface": "1"}
BOUNDARY = "limits-test-boundary"
CHUNK = 64 * 1024
LIMIT_MB = 0.25  # --max-upload-mb of these tests: 262144 bytes a file
LIMIT = int(LIMIT_MB * 1024 * 1024)
NOWHERE = "/nowhere/model.ckpt"  # a job that gets past the checks fails at once, loading no model


# ------------------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def temp_root(tmp_path: Path) -> Path:
    root = tmp_path / "app-temp"
    root.mkdir()
    return root


@contextlib.contextmanager
def make_app(temp_root: Path, **settings: Any) -> Iterator[FastAPI]:
    app = create_app(AppSettings(max_upload_mb=LIMIT_MB, runner=RunnerSettings(), temp_dir=temp_root, **settings))
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
        assert answer.message == f"error: clip.mp4: larger than the {LIMIT_MB:g} MB upload limit (--max-upload-mb)"
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


@contextlib.contextmanager
def serve(app: FastAPI, host: str = "127.0.0.1") -> Iterator[int]:
    """``app`` served by uvicorn in a thread on a free port of ``host`` (a loopback address)."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind((host, 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        try:
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
            thread.join(30)


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
    with make_app(temp_root) as app, serve(app) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
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
