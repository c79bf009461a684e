"""``talkingface app``: the HTTP API (uploads checked, one-line errors, temp files removed) and the page in a real
headless Chromium driven by Playwright (skipped, saying why, where no browser is installed)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from app_support import serve
from data_fixtures import write_video
from fastapi import FastAPI

import talkingface.app.server as app_server
from talkingface.app.jobs import RunnerSettings
from talkingface.app.limits import UploadError
from talkingface.app.server import AppSettings, create_app
from talkingface.commands import app as app_cli
from talkingface.inference.video import FACE_SEARCH, FRAME_DECODING, prepare_video
from talkingface.media.decode import load_audio, probe_video
from talkingface.synthetic.demo import make_sample_media
from talkingface.synthetic.export import demo_model_paths
from talkingface.synthetic.generate import sidecar_path

FPS = 25
SAMPLE_SECONDS = 0.6  # 15 frames: the bundled demo model at 2 steps takes a few seconds on CPU
HEADERS = {"X-Talkingface": "1"}
ROOT = Path(__file__).resolve().parents[2]
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


def form(**fields: str) -> dict[str, tuple[None, str]]:
    """Text fields as a multipart form (what the page sends), for httpx's ``files=``."""
    return {name: (None, value) for name, value in fields.items()}


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
        icons = [client.get(path) for path in ("/favicon.ico", "/favicon.svg")]
    offered = {c["id"]: c["label"] for c in options["checkpoints"]}
    assert offered["demo"] == "the bundled demo model (synthetic cartoon faces only)"
    assert offered["demo-student"].startswith("the bundled demo model, 4-step student")
    assert options["any_checkpoint"] is True
    assert all(r.status_code == 200 and r.headers["content-type"] == "image/svg+xml" for r in icons)
    assert icons[0].text.startswith("<svg") and 'href="/favicon.svg"' in page
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
            "error: video: no file chosen; choose a video file, or the sample",
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
        ({"speech_source": "upload"}, "error: speech: no file chosen; choose a file or record one, or use another"),
    ],
)
def test_bad_fields(temp_root: Path, data: dict[str, str], message: str) -> None:
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", files=form(**data), headers=HEADERS)
    assert r.status_code == 400 and assert_one_line(r.json()).startswith(message)


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"json": {"steps": "2"}}, "sent as 'application/json'"),
        ({"data": {"steps": "2"}}, "sent as 'application/x-www-form-urlencoded'"),
        ({"content": b"steps=2", "headers": {"content-type": "text/plain"}}, "sent as 'text/plain'"),
        ({}, "no form sent"),
    ],
    ids=["json", "urlencoded", "text", "no-body"],
)
def test_a_request_that_is_not_a_multipart_form_starts_no_job(temp_root: Path, body: dict[str, Any], sent: str) -> None:
    """Only the page's kind of form starts a job: a JSON, url-encoded or empty body is refused, not run with every
    default."""
    with make_client(temp_root) as client:
        headers = {**HEADERS, **body.pop("headers", {})}
        r = client.post("/api/jobs", headers=headers, **body)
        assert r.status_code == 415
        assert (
            assert_one_line(r.json())
            == f"error: upload: {sent}; send a multipart/form-data form (as the app's page does)"
        )
        assert list(app_folder(temp_root).iterdir()) == []  # no job, no folder
        assert client.post("/api/jobs", files=form(checkpoint="/nowhere.ckpt"), headers=HEADERS).status_code == 202


def test_requests_without_the_app_header_are_refused(temp_root: Path) -> None:
    """A page of another site can post a form here, but cannot add the header (CORS): it cannot start jobs."""
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", files=form(video_source="sample"))
        assert r.status_code == 403 and "X-Talkingface" in assert_one_line(r.json())
        assert list(app_folder(temp_root).iterdir()) == []


def test_a_public_server_takes_only_the_offered_checkpoints(temp_root: Path) -> None:
    with make_client(temp_root, any_checkpoint=False) as client:
        assert client.get("/api/options").json()["any_checkpoint"] is False
        r = client.post("/api/jobs", files=form(checkpoint="/etc/passwd"), headers=HEADERS)
        assert r.status_code == 400
        assert assert_one_line(r.json()).startswith("error: checkpoint: not one of the offered ones")
        assert list(app_folder(temp_root).iterdir()) == []


def test_checkpoints_are_chosen_by_id() -> None:
    from talkingface.app.server import _checkpoint, checkpoint_choices
    from talkingface.synthetic.export import demo_student_path

    choices = checkpoint_choices(("/elsewhere/a/model.ckpt", "/elsewhere/b/model.ckpt"))
    assert [c.id for c in choices][:2] == ["ckpt-1", "ckpt-2"]
    assert [c.label for c in choices][:2] == ["model.ckpt", "model.ckpt (ckpt-2)"]  # told apart, no folders shown
    assert _checkpoint("demo", choices, any_checkpoint=False) == str(demo_model_paths()[1])
    assert _checkpoint("demo-student", choices, any_checkpoint=False) == str(demo_student_path())
    assert _checkpoint("ckpt-2", choices, any_checkpoint=False) == "/elsewhere/b/model.ckpt"
    assert _checkpoint(" ", choices, any_checkpoint=False) is None  # the default
    assert _checkpoint("/mine.ckpt", choices, any_checkpoint=True) == "/mine.ckpt"
    with pytest.raises(UploadError, match="not one of the offered ones"):
        _checkpoint("/mine.ckpt", choices, any_checkpoint=False)


def test_missing_checkpoint_is_one_line_in_the_job(temp_root: Path) -> None:
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", files=form(checkpoint="/nowhere/model.ckpt"), headers=HEADERS)
        assert r.status_code == 202
        job = wait(client, r.json()["id"])
        assert job["state"] == "failed"
        assert job["message"] == "error: /nowhere/model.ckpt: checkpoint not found"
        assert client.get(f"/api/jobs/{job['id']}/result.mp4").status_code == 409


@pytest.mark.parametrize("name", ["holiday.mp4", "ünï clip.mp4"])
def test_unreadable_upload_is_named_by_its_own_name(temp_root: Path, name: str) -> None:
    """The job's message names the user's file as they named it (not the temp folder it was stored in, nor the
    ASCII name it was saved under); no model is loaded."""
    files = {"video": (name, np.random.default_rng(0).bytes(4096), "video/mp4")}
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", files=files, headers=HEADERS)
        job = wait(client, r.json()["id"])
    assert job["state"] == "failed"
    assert job["message"] == f"error: {name}: cannot open as a media file (Invalid data found when processing input)"
    assert str(temp_root) not in job["message"] and "Errno" not in job["message"]


@pytest.mark.parametrize(
    ("filename", "shown"),
    [
        ("ünï.txt", "ünï.txt"),
        ("日本語の動画.txt", "日本語の動画.txt"),
        ("C:\\Users\\me\\ünï.txt", "ünï.txt"),  # a browser that sends the whole path: its last part
        ('say "hi"\n.txt', 'say "hi" .txt'),  # as browsers send them: %22 and %0A
        ("break\u202egnp.txt", "breakgnp.txt"),  # no right-to-left override (shown as "breaktxt.png")
    ],
)
def test_a_refused_upload_is_named_as_the_user_named_it(temp_root: Path, filename: str, shown: str) -> None:
    with make_client(temp_root) as client:
        files = {"video": (filename, b"hello", "video/mp4")}
        r = client.post("/api/jobs", files=files, data={"video_source": "upload"}, headers=HEADERS)
    assert r.status_code == 415
    assert assert_one_line(r.json()) == f"error: {shown}: unsupported video type '.txt'; use one of " + ", ".join(
        app_server.ACCEPT["video"]
    )


def test_display_names_are_one_line() -> None:
    from talkingface.app.uploads import display_name, safe_name

    assert display_name("a\tb\r\nc\x00.mp4", "video") == "a b c.mp4"
    assert display_name("x" * 200 + ".mp4", "video") == "x" * 96 + ".mp4"  # the end kept: the suffix
    assert display_name("\u200f", "video") == "video"
    assert safe_name("ünï.mp4", "video") == "_n_.mp4"  # the file on disk keeps an ASCII name


def test_a_video_without_sound_as_its_own_speech_is_refused_in_the_forms_words(temp_root: Path, tmp_path: Path) -> None:
    """The page names the form's choices, not the command line's ``--audio``."""
    silent = write_video(tmp_path / "silent.mp4", 0.4, 25, audio=None)
    files = {"video": ("stumm ünï.mp4", silent.read_bytes(), "video/mp4")}
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", files=files, data={"speech_source": "video"}, headers=HEADERS)
        assert r.status_code == 400
        assert assert_one_line(r.json()) == (
            'error: stumm ünï.mp4: has no sound to use as the speech; under Speech, choose "my audio or video file, '
            'or a recording" or "the sample"'
        )
        assert list(app_folder(temp_root).iterdir()) == []


@pytest.mark.slow
def test_job_runs_reports_progress_and_files_are_removed(temp_root: Path, app_media: dict[str, Path]) -> None:
    """Upload -> job -> mp4; a second job meanwhile is refused; discarding a job and stopping remove the files."""
    with make_client(temp_root) as client:
        r = client.post("/api/jobs", files=upload(app_media), data={"steps": "2"}, headers=HEADERS)
        assert r.status_code == 202
        job_id = r.json()["id"]
        busy = client.post("/api/jobs", files=form(video_source="sample"), headers=HEADERS)
        assert busy.status_code == 409
        assert busy.json()["message"] == "error: job: the server is busy with another job; wait for it to finish"
        job = wait(client, job_id)
        assert job["state"] == "done", job["message"]
        assert job["done"] == job["total"]
        assert abs(int(job["total"]) - load_audio(app_media["speech"]).seconds * FPS) <= 1
        assert job["warning"] is None  # the uploaded clip is the synthetic generator's: the demo model suits it
        assert float(job["elapsed_s"]) > 0 and job["seconds_left"] is None
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


def test_cancelling_a_running_job_stops_it_and_removes_its_files(temp_root: Path) -> None:
    """DELETE of a running job cancels it: it stays listed as cancelled, without files, and the runner is free."""
    with make_client(temp_root) as client:
        job_id = client.post("/api/jobs", files=form(steps="2"), headers=HEADERS).json()["id"]
        r = client.delete(f"/api/jobs/{job_id}", headers=HEADERS)
        assert r.status_code == 202 and r.json()["phase"] == "cancelling"
        job = wait(client, job_id)
        assert job["state"] == "cancelled" and job["phase"] == "cancelled" and job["message"] == "cancelled"
        assert job["warning"] is None  # the sample clip with the bundled model: no notice
        assert list(app_folder(temp_root).iterdir()) == []  # its files went when it stopped
        r = client.post("/api/jobs", files=form(checkpoint="/nowhere.ckpt"), headers=HEADERS)
        assert r.status_code == 202  # the runner is free again
        wait(client, r.json()["id"])
        assert client.delete(f"/api/jobs/{job_id}", headers=HEADERS).status_code == 204  # a finished one: discarded
        assert client.get(f"/api/jobs/{job_id}").status_code == 404


def test_prepare_video_reports_every_frame_of_both_passes(app_media: dict[str, Path]) -> None:
    """``prepare_video(on_frame=...)`` hears of every frame of the face search and of the decoding, in order; an
    exception raised there stops the search at that frame."""
    points = np.load(app_media["landmarks"])
    found = iter(points)
    calls: list[tuple[str, int, int | None]] = []
    prepared = prepare_video(
        app_media["video"], crop_size=128, detector=lambda rgb: next(found), on_frame=lambda *c: calls.append(c)
    )
    n = prepared.n_frames
    assert n == len(points) > 3
    expected = probe_video(app_media["video"]).expected_frames(FPS)
    assert calls == [(FACE_SEARCH, i, expected) for i in range(1, n + 1)] + [
        (FRAME_DECODING, i, n) for i in range(1, n + 1)
    ]
    searched: list[int] = []

    class StopError(Exception):
        pass

    def stop_at_3(step: str, done: int, total: int | None) -> None:
        searched.append(done)
        if done == 3:
            raise StopError

    with pytest.raises(StopError):
        prepare_video(app_media["video"], detector=lambda rgb: points[0], on_frame=stop_at_3)
    assert searched == [1, 2, 3]


def test_a_cancel_during_the_face_search_stops_it_at_the_next_frame(
    tmp_path: Path, app_media: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The face search (dlib: about 0.1 s a frame on a CPU, half a minute for a minute of video) checks for a cancel
    after every frame: a job cancelled there frees the server at once, instead of searching the rest of the video."""
    import talkingface.media.extract as extract
    from talkingface.app.jobs import CANCELLED, JobRequest, JobRunner

    runner = JobRunner(tmp_path / "jobs", RunnerSettings(sample_seconds=SAMPLE_SECONDS))
    job_id, folder = runner.new_folder()
    searched: list[int] = []

    def detector(rgb: np.ndarray) -> None:  # finds no face: a search run to its end fails the job
        searched.append(len(searched) + 1)
        if len(searched) == 3:
            assert runner.cancel(job_id) is not None  # the job is running
        return None

    monkeypatch.setattr(extract, "shared_detector", lambda: detector)
    files = {}
    for what in ("video", "speech"):
        (folder / what).mkdir()
        files[what] = Path(shutil.copy(app_media[what], folder / what))
    job = runner.submit(job_id, folder, JobRequest(video=files["video"], speech=files["speech"]))
    deadline = time.monotonic() + 120  # a generous bound: loading the model comes first
    while runner.busy() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.state == CANCELLED, job.message
    assert searched == [1, 2, 3]  # not one frame searched after the cancel
    assert not runner.busy() and not folder.exists()
    runner.close()


@pytest.mark.slow
def test_cancel_stops_within_one_batch(temp_root: Path) -> None:
    """A 51-frame job (batches of 16) cancelled once its first batch is written stops before its next batch."""
    runner = RunnerSettings(sample_seconds=2.0)
    app = create_app(AppSettings(runner=runner, temp_dir=temp_root))
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        job_id = client.post("/api/jobs", files=form(steps="2"), headers=HEADERS).json()["id"]
        deadline = time.monotonic() + 120
        while (job := client.get(f"/api/jobs/{job_id}").json())["done"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job["state"] == "running" and 0 < job["done"] < job["total"] and job["total"] > 32
        cancelled = client.delete(f"/api/jobs/{job_id}", headers=HEADERS)
        assert cancelled.status_code == 202
        job = wait(client, job_id)
        assert job["state"] == "cancelled"
        assert job["done"] <= cancelled.json()["done"] + 16 < job["total"]  # at most the batch under way
        assert list(app_folder(temp_root).iterdir()) == []


def test_a_users_own_video_with_the_demo_model_gets_a_plain_notice(temp_root: Path, tmp_path: Path) -> None:
    """The user's video (not a synthetic clip) with the bundled model: a notice in plain words, no command line."""
    from talkingface.app.jobs import DEMO_MODEL_NOTICE

    video = write_video(tmp_path / "me.mp4", seconds=0.2, fps=FPS)
    files = {"video": ("me.mp4", video.read_bytes(), "video/mp4")}
    with make_client(temp_root) as client:
        job_id = client.post("/api/jobs", files=files, data={"checkpoint": "demo"}, headers=HEADERS).json()["id"]
        deadline = time.monotonic() + 60  # the notice comes first: no need to wait for the rest
        while (job := client.get(f"/api/jobs/{job_id}").json())["warning"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if client.delete(f"/api/jobs/{job_id}", headers=HEADERS).status_code == 202:  # (else it had ended)
            wait(client, job_id)
    assert job["warning"] == DEMO_MODEL_NOTICE
    assert "--" not in DEMO_MODEL_NOTICE and "trainer" not in DEMO_MODEL_NOTICE and "/" not in DEMO_MODEL_NOTICE


def test_time_left_counts_down_between_batches_and_elapsed_stops_when_done() -> None:
    from talkingface.app.jobs import DONE, RUNNING, Job, JobRequest
    from talkingface.inference.estimate import TimeLeft

    now = [100.0]
    job = Job("j", Path("unused"), JobRequest(), state=RUNNING, clock=lambda: now[0])
    job.started = 100.0
    job.pace = TimeLeft(48, 16, clock=job.clock)
    for seconds in (30.0, 10.0):  # a warm-up batch, then 10 s a batch: 10 s left
        now[0] += seconds
        job.pace.batch_done(16)
    assert job.to_json()["seconds_left"] == 10 and job.to_json()["elapsed_s"] == 40.0
    now[0] += 4.0
    assert job.to_json()["seconds_left"] == 6
    now[0] += 60.0  # a slow batch: never below 1 s while running
    assert job.to_json()["seconds_left"] == 1
    job.state, job.finished = DONE, now[0]
    now[0] += 50.0
    assert job.to_json()["seconds_left"] is None and job.to_json()["elapsed_s"] == 104.0


def test_messages_name_no_server_folder(tmp_path: Path) -> None:
    from talkingface.app.jobs import Job, JobRequest
    from talkingface.demo_assets import ASSETS_DIR
    from talkingface.model.image_driven_talkingface.DiffTalk import CheckpointError
    from talkingface.model.image_driven_talkingface.DiffTalk.loader import REPO_ROOT

    job = Job("j", tmp_path / "j", JobRequest())
    broken = CheckpointError(f"{ASSETS_DIR / 'model.safetensors'}: broken; see {REPO_ROOT / 'README.md'}")
    assert job.user_message(broken) == (
        "error: talkingface/synthetic/assets/model.safetensors: broken; see ./README.md"
    )
    upload = CheckpointError(f"{tmp_path / 'j' / 'video' / 'me.mp4'}: no face")
    assert job.user_message(upload) == "error: me.mp4: no face"


def test_job_messages_use_the_forms_words_and_the_users_file_names(tmp_path: Path) -> None:
    """What the library words for the command line (``--audio``, ``--max-missing``, ``--steps``) reaches the page in
    the form's words, naming the uploads as the user named them (their files on disk have ASCII names)."""
    from talkingface.app.jobs import Job, JobRequest
    from talkingface.app.wording import page_wording
    from talkingface.inference.errors import InferenceError
    from talkingface.media.errors import PreprocessError

    folder = tmp_path / "j"
    video, speech = folder / "video" / "_n_.mp4", folder / "speech" / "voix_.wav"
    job = Job("j", folder, JobRequest(video=video, speech=speech, names={"video": "ünï.mp4", "speech": "voix·.wav"}))
    no_sound = PreprocessError(video, "no audio stream (give a separate audio file with --audio)")
    assert job.user_message(no_sound) == (
        'error: ünï.mp4: no audio stream; under Speech, choose "my audio or video file, or a recording" or "the sample"'
    )
    no_face = PreprocessError(video, "no face found in 30 of 100 frames (30% > --max-missing 20%); first misses at [0]")
    assert job.user_message(no_face) == (
        "error: ünï.mp4: no face found in 30 of 100 frames (30% > the 20% allowed); first misses at [0]"
    )
    assert job.user_message(InferenceError(speech, "silent")) == "error: voix·.wav: silent"
    mismatch = InferenceError("lms.npy", f"landmarks for 5 frames, but {video.name} has 15 frames")
    assert job.user_message(mismatch) == "error: lms.npy: landmarks for 5 frames, but ünï.mp4 has 15 frames"
    flag_like = Job("k", folder, JobRequest(video=folder / "video" / "--audio.mp4", names={"video": "--audio.mp4"}))
    assert flag_like.user_message(PreprocessError(flag_like.request.video, "bad")) == "error: --audio.mp4: bad"
    assert job.user_message(InferenceError("--steps", "must be at most 500")) == "error: Steps: must be at most 500"
    pickled = "pass --trust-checkpoint, or re-export it; or pass --ckpt PATH"
    assert page_wording(pickled) == (
        'pass the "trust checkpoint" option of talkingface lipsync, or re-export it; or choose another Checkpoint'
    )
    kept = "3.0 s long; the limit is 2 s (the server's --max-seconds)"  # the operator's setting, named as such
    assert page_wording(kept) == kept


ABSOLUTE_PATH = re.compile(r"(?<![\w.:])/(?!api/)[\w.-]+/[\w./-]+")


def absolute_paths(text: str) -> list[str]:
    """Absolute file paths in an API answer (the API's own URLs, /api/..., are not paths)."""
    return ABSOLUTE_PATH.findall(text)


@pytest.mark.slow
def test_no_answer_holds_a_server_path(temp_root: Path, app_media: dict[str, Path]) -> None:
    """Every answer of a session (options, a job from start to result, a failed upload, refusals) names no server
    path: not the repository, not the bundled model's folder, not the temp folders."""
    assert absolute_paths('{"a": "/work/x/talkingface/synthetic/assets/model.safetensors", "b": "/api/jobs/1"}') == [
        "/work/x/talkingface/synthetic/assets/model.safetensors"
    ]
    answers: list[str] = []
    with make_client(temp_root) as client:

        def keep(r: httpx.Response) -> httpx.Response:
            answers.append(r.text)
            return r

        keep(client.get("/api/options"))
        job_id = keep(client.post("/api/jobs", files=form(checkpoint="demo", steps="1"), headers=HEADERS)).json()["id"]
        keep(client.post("/api/jobs", files=form(video_source="sample"), headers=HEADERS))  # busy
        while keep(client.get(f"/api/jobs/{job_id}")).json()["state"] in ("queued", "running"):
            time.sleep(0.1)
        assert client.get(f"/api/jobs/{job_id}").json()["state"] == "done"
        broken = {"video": ("holiday.mp4", np.random.default_rng(0).bytes(4096), "video/mp4")}
        failed = keep(client.post("/api/jobs", files=broken, headers=HEADERS)).json()["id"]
        keep(client.get(f"/api/jobs/{wait(client, failed)['id']}"))
        keep(client.post("/api/jobs", files=form(steps="0"), headers=HEADERS))
        keep(client.get("/api/jobs/nothing"))
        keep(client.delete(f"/api/jobs/{job_id}", headers=HEADERS))
    assert len(answers) > 8
    found = [path for text in answers for path in absolute_paths(text)]
    assert not found, found


def test_finished_jobs_expire(temp_root: Path) -> None:
    with make_client(temp_root, keep_s=0.0) as client:
        r = client.post("/api/jobs", files=form(checkpoint="/nowhere.ckpt"), headers=HEADERS)
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
    with pytest.raises(SystemExit) as stop:  # refused while parsing (the flag's declared range)
        app_cli.main(["--max-upload-mb", "0"])
    assert stop.value.code == 2
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


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_stops_the_app_cleanly(tmp_path: Path, presses: int) -> None:
    """Ctrl-C while a job generates: one line (no traceback), exit status 130, the job cancelled and every temporary
    file removed; a second Ctrl-C (stop waiting for the batch under way) ends the same way."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "talkingface", "app", "--port", "0", "--sample-seconds", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        url = re.search(r"open (http://\S+) in a browser", first)
        assert url, first
        with httpx.Client(base_url=url.group(1), timeout=60) as client:
            job_id = client.post("/api/jobs", files=form(steps="2"), headers=HEADERS).json()["id"]
            assert len(list(temp.iterdir())) == 1  # the app's temp folder
            deadline = time.monotonic() + 120
            while (job := client.get(f"/api/jobs/{job_id}").json())["phase"] != "generating":
                assert job["state"] == "running" and time.monotonic() < deadline, job
                time.sleep(0.05)
        for _ in range(presses):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                time.sleep(0.05)  # the second one while the server shuts down
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "INFO talkingface app: stopped; the running job was cancelled", stderr
    assert proc.returncode == 130
    assert list(temp.iterdir()) == []  # the job's uploads, sample and partial result, and the app's folder


def test_loopback_addresses() -> None:
    assert all(app_cli.is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(app_cli.is_loopback(h) for h in ("0.0.0.0", "192.168.1.10", "::", "example.org"))


def test_app_is_a_talkingface_command() -> None:
    from talkingface.commands.main import COMMANDS

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


def watch_failures(page: Any) -> list[str]:
    """The page's GET requests answered 4xx/5xx (a missing favicon, say), as they come."""
    failures: list[str] = []

    def seen(r: Any) -> None:
        if r.status >= 400 and r.request.method == "GET":
            failures.append(f"{r.status} {r.url}")

    page.on("response", seen)
    return failures


@contextlib.contextmanager
def browser_page(server: str, *chromium_args: str) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page on the app at ``server`` once its form has its model list, and the page's failed GETs
    (:func:`watch_failures`); the browser is closed at the end."""
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[*CHROMIUM_ARGS, *chromium_args])
        try:
            page = browser.new_page()
            failures = watch_failures(page)
            page.goto(server)
            page.wait_for_function("document.getElementById('checkpoint').value !== ''")
            yield page, failures
        finally:
            browser.close()


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
    with browser_page(server) as (page, failures):
        assert page.input_value("#checkpoint") == "demo"
        assert "synthetic cartoon faces only" in page.inner_text("#checkpoint")
        assert str(ROOT) not in page.content()  # no server path on the page
        page.set_input_files("#video", str(app_media["video"]))
        page.set_input_files("#speech", str(app_media["speech"]))
        page.set_input_files("#landmarks", str(app_media["landmarks"]))
        # choosing a file switched from the sample
        assert page.is_checked("#video-upload") and page.is_checked("#speech-upload")
        page.fill("#steps", "2")
        page.click("#run")
        page.wait_for_selector("#output:not([hidden])", timeout=120_000)
        assert page.is_hidden("#error")
        assert page.is_hidden("#warning")  # a synthetic clip with the demo model: nothing to warn about
        assert re.fullmatch(r"done in \d+ s", page.inner_text("#phase")), page.inner_text("#phase")
        assert page.is_hidden("#cancel") and page.is_enabled("#run")
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
        assert page.inner_text("#error") == (
            "error: broken.mp4: cannot open as a media file (Invalid data found when processing input)"
        )
        assert page.is_hidden("#output")
        first_job = href.split("/")[3]  # /api/jobs/ID/result.mp4: the next run discarded it with its files
        assert not (app_folder(temp_root) / first_job).exists()

        # "my audio" without a file: the form's words, not the API's field names
        page.check("#speech-upload")
        page.set_input_files("#speech", [])
        page.click("#run")
        page.wait_for_function("document.getElementById('error').textContent.includes('Speech')")
        assert page.inner_text("#error").startswith("error: Speech: no file chosen")
        assert "_source" not in page.inner_text("#error")
        assert not failures, failures  # the favicon too

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
    fake_microphone = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    with browser_page(server, *fake_microphone) as (page, _):
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
    (tmp_path / name).write_bytes(bytes(recorded))
    (tmp_path / "result.mp4").write_bytes(body)
    frames, samples, rate = decoded(tmp_path / "result.mp4")
    speech = load_audio(tmp_path / name)
    assert 0.5 < speech.seconds < 5.0
    assert abs(len(frames) - speech.seconds * FPS) <= 1
    assert abs(len(samples) / rate - speech.seconds) <= 1 / FPS


@pytest.mark.slow
def test_browser_reload_reattaches_and_cancel_stops_the_job(temp_root: Path) -> None:
    """Start a job, reload the page mid-job: it shows the job's progress again (not "busy"); Cancel stops it, the
    page says cancelled, its files are gone and a new run is taken."""
    runner = RunnerSettings(sample_seconds=2.0)  # 51 frames in 4 batches
    app = create_app(AppSettings(runner=runner, temp_dir=temp_root))
    with serve(app) as server, browser_page(server) as (page, failures):
        page.fill("#steps", "20")
        page.click("#run")
        page.wait_for_selector("#cancel:not([hidden])")
        job_id = page.evaluate("localStorage.getItem('talkingface-job')")
        assert job_id and (app_folder(temp_root) / job_id).is_dir()
        page.wait_for_function("document.getElementById('phase').textContent.startsWith('generating: frame')")

        page.reload()
        page.wait_for_function(
            "document.getElementById('phase').textContent.startsWith('generating: frame')", timeout=60_000
        )
        assert re.fullmatch(r"generating: frame \d+ of 5\d(, about \d+ (s|min \d+ s) left)?", page.inner_text("#phase"))
        assert page.is_visible("#cancel") and page.is_disabled("#run") and page.is_hidden("#error")
        assert page.is_hidden("#warning")  # the sample with the bundled model: no notice

        page.click("#cancel")
        page.wait_for_function("document.getElementById('phase').textContent === 'cancelled'", timeout=60_000)
        assert page.is_hidden("#cancel") and page.is_enabled("#run") and page.is_hidden("#error")
        assert list(app_folder(temp_root).iterdir()) == []  # the job's files are gone
        state = page.request.get(f"{server}/api/jobs/{job_id}").json()
        assert state["state"] == "cancelled" and state["done"] < state["total"]

        page.reload()  # a cancelled job stays cancelled after a reload
        page.wait_for_function("document.getElementById('phase').textContent === 'cancelled'")
        page.fill("#steps", "1")
        page.click("#run")  # and the server takes the next job
        page.wait_for_selector("#output:not([hidden])", timeout=120_000)
        assert page.is_hidden("#error")
        assert not failures, failures
