"""``talkingface app``: the HTTP API (uploads checked, one-line errors, temp files removed) and the page in a real
headless Chromium driven by Playwright (skipped, saying why, where no browser is installed)."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

import talkingface.app.server as app_server
from talkingface.app.jobs import RunnerSettings
from talkingface.app.server import AppSettings, create_app
from talkingface.commands import app as app_cli
from talkingface.media.decode import load_audio, probe_video
from talkingface.synthetic.demo import make_sample_media
from talkingface.synthetic.export import demo_model_paths
from talkingface.synthetic.generate import sidecar_path

FPS = 25
SAMPLE_SECONDS = 0.6  # 15 frames: the bundled demo model at 2 steps takes a few seconds on CPU
HEADERS = {"X-Talkingface": "1"}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def app_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's sample media, short: a synthetic portrait, another clip's speech and the portrait's landmarks."""
    folder = tmp_path_factory.mktemp("app-media")
    video, speech = make_sample_media(folder, SAMPLE_SECONDS)
    return {"video": video, "speech": speech, "landmarks": sidecar_path(video)}


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """``app`` on a free localhost port, served by uvicorn in a thread (started, then stopped with its lifespan)."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not srv.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.started, "uvicorn did not start"
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            srv.should_exit = True
            thread.join(60)


@contextlib.contextmanager
def make_client(temp_root: Path, keep_s: float = 3600.0, **settings: Any) -> Iterator[httpx.Client]:
    runner = RunnerSettings(sample_seconds=SAMPLE_SECONDS, keep_s=keep_s)
    app = create_app(AppSettings(runner=runner, temp_dir=temp_root, allowed_hosts=("127.0.0.1",), **settings))
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def app_folder(temp_root: Path) -> Path:
    (folder,) = temp_root.iterdir()
    return folder


def wait(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def upload(app_media: dict[str, Path]) -> dict[str, tuple[str, bytes, str]]:
    """The sample's files as a browser sends them (the landmarks as bytes of unknown type)."""
    types = {"video": "video/mp4", "speech": "video/mp4", "landmarks": "application/octet-stream"}
    return {what: (path.name, path.read_bytes(), types[what]) for what, path in app_media.items()}


def assert_one_line(body: dict[str, object]) -> str:
    message = str(body["message"])
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message
    return message


# ------------------------------------------------------------------------------------------------------------- API
def test_options_offer_the_bundled_model_and_samplers(temp_root: Path) -> None:
    with make_client(temp_root) as client:
        options = client.get("/api/options").json()
        page = client.get("/").text
    bundled = str(demo_model_paths()[1])
    assert bundled in [c["path"] for c in options["checkpoints"]]
    assert set(options["samplers"]) == {"ddim", "dpm++"}
    assert ".mp4" in options["accept"]["video"] and ".webm" in options["accept"]["speech"]
    # the page is self-contained: nothing fetched from another origin
    assert not re.search(r"""(src|href|action)\s*=\s*["']?(https?:)?//|@import|url\(|fetch\(["']https?:""", page)


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        ({"video": ("notes.txt", b"hello", "text/plain")}, 415, "error: notes.txt: unsupported video type '.txt'"),
        ({"video": ("clip.mp4", b"<html>", "text/html")}, 415, "error: clip.mp4: sent as 'text/html', which is not"),
        (
            {"speech": ("voice.wav", b"RIFF", "audio/wav")},
            400,
            "error: video: missing; upload a file or choose another",
        ),
        ({"video": ("clip.mp4", b"", "video/mp4")}, 400, "error: clip.mp4: empty file"),
        ({"video": ("clip.mp4", b"x" * 20_000, "video/mp4")}, 413, "error: clip.mp4: larger than the 0.01 MB"),
    ],
)
def test_bad_uploads_are_refused_with_one_line(
    temp_root: Path, files: dict[str, tuple[str, bytes, str]], status: int, message: str
) -> None:
    with make_client(temp_root, max_upload_mb=0.01) as client:
        r = client.post("/api/jobs", files=files, data={"video_source": "upload"}, headers=HEADERS)
        assert r.status_code == status
        assert assert_one_line(r.json()).startswith(message)
        assert list(app_folder(temp_root).iterdir()) == []  # the rejected upload's folder is gone
    assert list(temp_root.iterdir()) == []  # and the app's temp folder at shutdown


def test_oversize_request_refused_before_reading(temp_root: Path) -> None:
    with make_client(temp_root, max_upload_mb=0.01) as client:
        big = {"video": ("clip.mp4", b"x" * 4_000_000, "video/mp4")}
        r = client.post("/api/jobs", files=big, headers=HEADERS)
    assert r.status_code == 413 and "larger than the 0.01 MB upload limit" in assert_one_line(r.json())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": "0"}, "error: steps: must be a whole number of at least 1, got '0'"),
        ({"steps": "2.5"}, "error: steps: must be a whole number of at least 1, got '2.5'"),
        ({"sampler": "euler"}, "error: sampler: unknown 'euler'; choose one of ddim, dpm++"),
        ({"video_source": "camera"}, "error: video_source: must be one of upload, sample, got 'camera'"),
        ({"speech_source": "upload"}, "error: speech: missing; upload a file or choose another speech_source"),
    ],
)
def test_bad_fields(temp_root: Path, data: dict[str, str], message: str) -> None:
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", data=data, headers=HEADERS)
    assert r.status_code == 400 and assert_one_line(r.json()).startswith(message)


def test_requests_without_the_app_header_are_refused(temp_root: Path) -> None:
    """A page of another site can post a form here, but cannot add the header (CORS): it cannot start jobs."""
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", data={"video_source": "sample"})
        assert r.status_code == 403 and "X-Talkingface" in assert_one_line(r.json())
        assert list(app_folder(temp_root).iterdir()) == []


def test_a_public_server_takes_only_the_offered_checkpoints(temp_root: Path) -> None:
    with make_client(temp_root, any_checkpoint=False) as client:
        r = client.post("/api/jobs", data={"checkpoint": "/etc/passwd"}, headers=HEADERS)
        assert r.status_code == 400
        assert assert_one_line(r.json()).startswith("error: checkpoint: not one of the offered ones")
        assert list(app_folder(temp_root).iterdir()) == []


def test_missing_checkpoint_is_one_line_in_the_job(temp_root: Path) -> None:
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", data={"checkpoint": "/nowhere/model.ckpt"}, headers=HEADERS)
        assert r.status_code == 202
        job = wait(client, r.json()["id"])
        assert job["state"] == "failed"
        assert job["message"] == "error: /nowhere/model.ckpt: checkpoint not found"
        assert client.get(f"/api/jobs/{job['id']}/result.mp4").status_code == 409


def test_unreadable_upload_is_named_by_its_own_name(temp_root: Path, app_media: dict[str, Path]) -> None:
    """The job's message names the user's file, not the temp folder it was stored in; no model is loaded."""
    files = {"video": ("holiday.mp4", np.random.default_rng(0).bytes(4096), "video/mp4")}
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", files=files, headers=HEADERS)
        job = wait(client, r.json()["id"])
    assert job["state"] == "failed"
    assert job["message"].startswith("error: holiday.mp4: cannot open as a media file")
    assert str(temp_root) not in job["message"]


@pytest.mark.slow
def test_job_runs_reports_progress_and_files_are_removed(temp_root: Path, app_media: dict[str, Path]) -> None:
    """Upload -> job -> mp4; a second job meanwhile is refused; discarding a job and stopping remove the files."""
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", files=upload(app_media), data={"steps": "2"}, headers=HEADERS)
        assert r.status_code == 202
        job_id = r.json()["id"]
        busy = client.post("/api/jobs", data={"video_source": "sample"}, headers=HEADERS)
        assert busy.status_code == 409
        assert busy.json()["message"] == "error: job: another job is running; wait for it to finish"
        job = wait(client, job_id)
        assert job["state"] == "done", job["message"]
        assert job["done"] == job["total"]
        assert abs(int(job["total"]) - load_audio(app_media["speech"]).seconds * FPS) <= 1
        assert "synthetic cartoon faces" in str(job["warning"])
        result = client.get(str(job["result"]))
        assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
        assert result.content[4:8] == b"ftyp"
        folder = app_folder(temp_root)
        assert (folder / job_id / "result.mp4").is_file()
        assert client.delete(f"/api/jobs/{job_id}", headers=HEADERS).status_code == 204
        assert not (folder / job_id).exists()
        assert client.get(f"/api/jobs/{job_id}").status_code == 404
        # a job left behind (here one with an upload that failed) is removed at shutdown
        r = client.post("/api/jobs", files=upload(app_media), data={"checkpoint": "/nowhere.ckpt"}, headers=HEADERS)
        assert wait(client, r.json()["id"])["state"] == "failed"
        assert (folder / r.json()["id"] / "video" / app_media["video"].name).is_file()
    assert list(temp_root.iterdir()) == []


def test_discarding_a_running_job_cancels_it_and_removes_its_files(temp_root: Path) -> None:
    with make_client(temp_root) as client:
        job_id = client.post("/api/jobs", data={"steps": "2"}, headers=HEADERS).json()["id"]
        assert client.delete(f"/api/jobs/{job_id}", headers=HEADERS).status_code == 204
        assert client.get(f"/api/jobs/{job_id}").status_code == 404
        deadline = time.monotonic() + 60
        while list(app_folder(temp_root).iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(app_folder(temp_root).iterdir()) == []  # removed once the job stopped
        # and the runner is free again once the job has stopped
        while time.monotonic() < deadline:
            r = client.post("/api/jobs", data={"checkpoint": "/nowhere.ckpt"}, headers=HEADERS)
            if r.status_code != 409:
                break
            time.sleep(0.05)
        assert r.status_code == 202


def test_finished_jobs_expire(temp_root: Path) -> None:
    with make_client(temp_root, keep_s=0.0) as client:
        r = client.post("/api/jobs", data={"checkpoint": "/nowhere.ckpt"}, headers=HEADERS)
        job_id = r.json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/api/jobs/{job_id}").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(f"/api/jobs/{job_id}").status_code == 404
        assert list(app_folder(temp_root).iterdir()) == []


# ------------------------------------------------------------------------------------------------------------- CLI
def test_cli_refuses_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert app_cli.main(["--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen there")


def test_cli_checks_its_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_cli.main(["--max-upload-mb", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max-upload-mb: must be positive, got 0"


def test_cli_binds_localhost_and_warns_for_other_addresses(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import uvicorn

    seen: list[tuple[AppSettings, tuple[str, int]]] = []
    apps: list[AppSettings] = []
    monkeypatch.setattr(app_server, "create_app", lambda settings: apps.append(settings) or FastAPI())
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets: seen.append((apps[-1], sockets[0].getsockname()[:2]))
    )
    assert app_cli.main(["--port", "0"]) == 0
    settings, (host, _) = seen[-1]
    assert host == "127.0.0.1" and settings.any_checkpoint and settings.allowed_hosts == ("127.0.0.1", "localhost")
    assert "reachable from other machines" not in caplog.text
    assert app_cli.main(["--host", "0.0.0.0", "--port", "0"]) == 0
    settings, (host, _) = seen[-1]
    assert host == "0.0.0.0" and not settings.any_checkpoint and settings.allowed_hosts is None
    assert "--host 0.0.0.0: the app is reachable from other machines" in caplog.text


def test_loopback_addresses() -> None:
    assert all(app_cli.is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(app_cli.is_loopback(h) for h in ("0.0.0.0", "192.168.1.10", "::", "example.org"))


def test_app_is_a_talkingface_command() -> None:
    from talkingface.cli import COMMANDS

    assert COMMANDS["app"].module == "talkingface.commands.app"


# --------------------------------------------------------------------------------------------------------- browser
def find_chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("no Playwright: pip install playwright (requirements.txt); the browser is Debian's chromium")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium: install Debian's chromium (apt-get install chromium; .ci/run does) to run this")
    return path


@pytest.fixture
def server(temp_root: Path) -> Iterator[str]:
    app = create_app(AppSettings(runner=RunnerSettings(sample_seconds=SAMPLE_SECONDS), temp_dir=temp_root))
    with serve(app) as url:
        yield url


def decoded(path: Path) -> tuple[list[np.ndarray], np.ndarray, int]:
    import av

    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    audio = load_audio(path)
    return frames, audio.samples, audio.sample_rate


@pytest.mark.slow
def test_browser_upload_runs_plays_and_downloads(
    server: str, app_media: dict[str, Path], tmp_path: Path, temp_root: Path
) -> None:
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server)
            page.wait_for_function("document.getElementById('checkpoint').value !== ''")
            assert page.input_value("#checkpoint") == str(demo_model_paths()[1])
            page.set_input_files("#video", str(app_media["video"]))
            page.set_input_files("#speech", str(app_media["speech"]))
            page.set_input_files("#landmarks", str(app_media["landmarks"]))
            # choosing a file switched from the sample
            assert page.is_checked("#video-upload") and page.is_checked("#speech-upload")
            page.fill("#steps", "2")
            page.click("#run")
            page.wait_for_selector("#output:not([hidden])", timeout=120_000)
            assert page.is_hidden("#error")
            assert "synthetic cartoon faces" in page.inner_text("#warning")
            assert page.inner_text("#phase") == "done"
            # the <video> element loads the result (Chromium decodes it)
            page.wait_for_function("document.getElementById('result').readyState >= 1", timeout=30_000)
            played = page.evaluate("document.getElementById('result').duration")
            href = page.get_attribute("#download", "href")
            assert href is not None
            body = page.request.get(server + href).body()

            # a broken upload: the page shows the job's one line
            broken = tmp_path / "broken.mp4"
            broken.write_bytes(np.random.default_rng(0).bytes(4096))
            page.set_input_files("#video", str(broken))
            page.set_input_files("#landmarks", [])
            page.check("#speech-video")
            page.click("#run")
            page.wait_for_selector("#error:not([hidden])", timeout=60_000)
            assert page.inner_text("#error").startswith("error: broken.mp4: cannot open as a media file")
            assert page.is_hidden("#output")
            first_job = href.split("/")[3]  # /api/jobs/ID/result.mp4: the next run discarded it with its files
            assert not (app_folder(temp_root) / first_job).exists()
        finally:
            browser.close()

    out = tmp_path / "downloaded.mp4"
    out.write_bytes(body)
    frames, samples, rate = decoded(out)
    _, speech, speech_rate = decoded(app_media["speech"])
    source = probe_video(app_media["video"])
    speech_s = len(speech) / speech_rate
    assert abs(len(frames) - speech_s * FPS) <= 1
    assert frames[0].shape == (source.height, source.width, 3)
    assert abs(len(samples) / rate - speech_s) <= 1 / FPS
    assert abs(played - speech_s) <= 1 / FPS
    rms, speech_rms = float(np.sqrt(np.mean(samples**2))), float(np.sqrt(np.mean(speech**2)))
    assert rms > 0.01 and 0.5 < rms / speech_rms < 2.0  # the speech, not silence
    # the synthetic frames are not a still image: the mouth moves
    assert max(float(np.abs(f.astype(np.int16) - frames[0]).mean()) for f in frames[1:]) > 0.5


@pytest.mark.slow
def test_browser_microphone_recording_drives_the_sample_face(server: str, tmp_path: Path) -> None:
    """Record from Chromium's fake microphone (webm/opus from MediaRecorder) and lip-sync the sample portrait to it."""
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    fake_microphone = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS + fake_microphone)
        try:
            page = browser.new_page()
            page.goto(server)
            page.wait_for_function("document.getElementById('checkpoint').value !== ''")
            page.click("#record")
            page.wait_for_selector("text=Stop recording")
            page.wait_for_timeout(800)
            page.click("#record")
            page.wait_for_function("document.getElementById('speech').files.length === 1")
            name = page.evaluate("document.getElementById('speech').files[0].name")
            assert name in ("recording.webm", "recording.ogg")
            assert page.is_checked("#speech-upload") and page.is_checked("#video-sample")
            page.fill("#steps", "1")
            page.click("#run")
            page.wait_for_selector("#output:not([hidden])", timeout=120_000)
            recorded = page.evaluate(
                "document.getElementById('speech').files[0].arrayBuffer().then(b => Array.from(new Uint8Array(b)))"
            )
            body = page.request.get(server + str(page.get_attribute("#download", "href"))).body()
        finally:
            browser.close()
    (tmp_path / name).write_bytes(bytes(recorded))
    (tmp_path / "result.mp4").write_bytes(body)
    frames, samples, rate = decoded(tmp_path / "result.mp4")
    speech = load_audio(tmp_path / name)
    assert 0.5 < speech.seconds < 5.0
    assert abs(len(frames) - speech.seconds * FPS) <= 1
    assert abs(len(samples) / rate - speech.seconds) <= 1 / FPS
