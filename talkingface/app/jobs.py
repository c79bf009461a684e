"""Lip-sync jobs of the web app: one at a time in a background thread, with progress, each in its own temp folder.

A job holds its uploads, the sample clip (when the user picked it) and the result in ``<root>/<id>/``; the folder is
removed when the job is cancelled (once it has stopped), when it is discarded, when a finished job is older than
``keep_s`` and when the runner closes. A cancelled job stops before its next batch and stays listed (state
``cancelled``, without files) until it expires or is discarded.

The time left while generating is a running average of the batches after the first one
(:class:`~talkingface.inference.estimate.TimeLeft`); what a job reports contains no server path.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkingface.app.limits import NO_SOUND, MediaLimits, UploadError, check_sound_decoded, check_video_decoded
from talkingface.app.wording import page_wording
from talkingface.cli_support import one_line
from talkingface.demo_assets import ASSETS_DIR
from talkingface.errors import TalkingFaceError
from talkingface.inference import LipSyncOptions, LipSyncPipeline, PreparedVideo, Speech
from talkingface.inference.estimate import TimeLeft
from talkingface.inference.landmark_file import SourceLandmarks, read_landmarks
from talkingface.inference.model_choice import is_bundled_model, is_synthetic_video, resolve_checkpoint
from talkingface.inference.video import FACE_SEARCH
from talkingface.media.decode import probe_video
from talkingface.model.image_driven_talkingface.DiffTalk import (
    CheckpointError,
    DiffTalkModel,
    get_difftalk_inference,
)
from talkingface.model.image_driven_talkingface.DiffTalk.loader import REPO_ROOT, resolve_path
from talkingface.synthetic.demo import DEMO_CROP_SIZE, make_sample_media
from talkingface.synthetic.generate import sidecar_path

log = logging.getLogger(__name__)

#: The product's bad-input errors: their message (and next step) is the one line the page shows.
INPUT_ERRORS = (TalkingFaceError,)
#: Sub-folders of a job folder that hold the user's files under their own names (stripped from messages).
INPUT_DIRS = ("video", "speech", "landmarks", "sample")
RESULT_NAME = "result.mp4"
#: Finished jobs kept at most (the oldest are discarded first), besides the age limit.
MAX_KEPT = 8

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
#: The page's notice when the bundled demo model is about to animate the user's own video (not a synthetic clip).
DEMO_MODEL_NOTICE = (
    "The model in use is the bundled demo model. It learned only synthetic cartoon faces, so on a real face the "
    "mouth will not look right. Real faces need a model trained on real videos; the server's operator can add one."
)
#: Why a job is refused while another one runs.
BUSY = "the server is busy with another job; wait for it to finish"


class BusyError(TalkingFaceError, RuntimeError):
    """Another job is running."""


class JobCancelledError(TalkingFaceError, RuntimeError):
    """The job was cancelled (discarded or the server is shutting down)."""


@dataclass(frozen=True)
class JobRequest:
    """What the user asked for. ``video`` None: the generated sample portrait (``sample_seconds`` long, with its
    landmarks); ``speech`` None: the generated sample speech when ``sample_speech``, else the video's own audio
    track. ``checkpoint``/``sampler``/``steps`` None: the defaults (as ``talkingface lipsync`` without ``--ckpt``/
    ``--sampler``/``--steps``)."""

    video: Path | None = None
    speech: Path | None = None
    landmarks: Path | None = None
    sample_speech: bool = True
    checkpoint: str | None = None
    sampler: str | None = None
    steps: int | None = None
    #: "video", "speech", "landmarks" -> the user's own name of the upload, which messages show (the file on disk
    #: has a sanitised name: ``ünï.mp4`` is saved as ``_n_.mp4``)
    names: dict[str, str] = field(default_factory=dict)

    def uploads(self) -> list[tuple[str, Path]]:
        """``(field, saved file)`` of the uploaded files."""
        files = (("video", self.video), ("speech", self.speech), ("landmarks", self.landmarks))
        return [(what, path) for what, path in files if path is not None]


@dataclass
class Job:
    id: str
    folder: Path
    request: JobRequest
    state: str = QUEUED
    phase: str = "waiting"
    done: int = 0
    total: int = 0
    message: str = ""
    warning: str | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None  # when it began running (clock time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    pace: TimeLeft | None = None  # while generating: the time left
    clock: Callable[[], float] = time.monotonic

    @property
    def result(self) -> Path:
        return self.folder / RESULT_NAME

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    @property
    def elapsed_s(self) -> float | None:
        """Seconds it has run (until it finished); None before it started."""
        if self.started is None:
            return None
        return (self.finished if self.finished is not None else self.clock()) - self.started

    @property
    def seconds_left(self) -> float | None:
        """While generating: the estimated seconds left, counted down since the last batch (at least 1)."""
        if self.state != RUNNING or self.pace is None or self.pace.seconds_left is None:
            return None
        return max(1.0, self.pace.seconds_left - (self.clock() - self.pace.last_at))

    def to_json(self) -> dict[str, Any]:
        elapsed, left = self.elapsed_s, self.seconds_left
        return {
            "id": self.id,
            "state": self.state,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "message": self.message,
            "warning": self.warning,
            "elapsed_s": None if elapsed is None else round(elapsed, 1),
            "seconds_left": None if left is None else round(left),
            "result": f"/api/jobs/{self.id}/result.mp4" if self.state == DONE else None,
        }

    def user_message(self, err: BaseException) -> str:
        """``error: <file>: <problem>`` on one line, naming uploads by their own names instead of temp paths, and
        the bundled model and the repository's files by their paths in the repository; command-line flags are
        worded as the form (:func:`~talkingface.app.wording.page_wording`)."""
        text = one_line(err)
        request = self.request
        # the user's names go in last, as placeholders until then: page_wording must not reword a name ("--x.mp4")
        uploads = [(path, request.names[what]) for what, path in request.uploads() if what in request.names]
        names = [name for _, name in uploads]
        for i, (path, _) in enumerate(uploads):
            text = text.replace(str(path), f"\0{i}\0")
        folder = re.escape(str(self.folder))
        text = re.sub(folder + r"/(?:" + "|".join(INPUT_DIRS) + r")/", "", text)
        text = text.replace(str(self.folder) + "/", "")
        # a file named without its folder ("... but _n_.mp4 has 15 frames"), where no other upload has its saved name
        saved = [path.name for path, _ in uploads]
        shown = {path.name: i for i, (path, _) in enumerate(uploads) if saved.count(path.name) == 1}
        if shown:
            bare = re.compile(r"(?<![\w./-])(" + "|".join(map(re.escape, shown)) + r")(?![\w.-])")
            text = bare.sub(lambda m: f"\0{shown[m.group(1)]}\0", text)
        text = page_wording(scrub_paths(text))
        return "error: " + re.sub(r"\0(\d+)\0", lambda m: names[int(m.group(1))], text)


def scrub_paths(text: str) -> str:
    """``text`` with the server's own folders (the bundled model's, the repository's) as relative paths."""
    for folder, shown in ((ASSETS_DIR, "talkingface/synthetic/assets"), (REPO_ROOT, ".")):
        text = text.replace(str(folder) + "/", shown + "/").replace(str(folder), shown)
    return text


@dataclass(frozen=True)
class RunnerSettings:
    device: str | None = None  # None: cuda when available, else cpu
    sample_seconds: float = 4.0
    keep_s: float = 3600.0  # finished jobs (and their files) are kept this long
    checkpoints: tuple[str, ...] = ()  # extra checkpoints offered on the page (``--ckpt``)
    limits: MediaLimits = field(default_factory=MediaLimits)  # duration and frame size of the uploads


class _ProgressPipeline(LipSyncPipeline):
    """The lip-sync pipeline reporting its phase and the frames written to a job, and stopping when it is cancelled."""

    def __init__(self, model: DiffTalkModel, job: Job, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.job = job

    def _check(self) -> None:
        if self.job.cancel.is_set():
            raise JobCancelledError(self.job.id)

    def prepare_speech(self, audio: str | Path, from_video: bool = False) -> Speech:
        self._check()
        self.job.phase = "reading the speech"
        speech = super().prepare_speech(audio, from_video)
        self._check()
        return speech

    def prepare_video(
        self, video: str | Path, progress: bool = False, landmarks: str | Path | SourceLandmarks | None = None
    ) -> PreparedVideo:
        self._check()
        self.job.phase = "finding the face" if landmarks is None else "reading the video"
        return super().prepare_video(video, progress, landmarks)

    def video_frame_prepared(self, step: str, done: int, total: int | None) -> None:
        if step == FACE_SEARCH:
            self.job.phase = f"finding the face: frame {done}" + (f" of {total}" if total and done <= total else "")
        self._check()  # a cancel stops the face search (and the decoding) at the next frame

    def generation_started(self, total: int) -> None:
        self._check()
        o = self.options
        self.job.pace = TimeLeft(total, o.batch_size, padded=o.compile, clock=self.job.clock)
        self.job.total, self.job.done, self.job.phase = total, 0, "generating"

    def generate_faces(self, *args: Any, **kwargs: Any) -> np.ndarray:
        self._check()  # a cancel stops the run before its next batch
        return super().generate_faces(*args, **kwargs)

    def frames_written(self, n: int) -> None:
        self._check()  # nothing is kept of a cancelled run
        self.job.done += n
        if self.job.pace is not None:
            self.job.pace.batch_done(n)
        if self.job.done >= self.job.total:
            self.job.phase = "finishing the video"

    def generate(self, video: PreparedVideo, speech: Speech, progress: bool = False) -> Iterator[np.ndarray]:
        self.generation_started(speech.n_frames)
        for frame in super().generate(video, speech, progress):
            self._check()
            yield frame
            self.frames_written(1)


class JobRunner:
    """Runs one job at a time in a daemon thread; keeps finished jobs until they expire or are discarded."""

    def __init__(self, root: Path, settings: RunnerSettings | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings = settings or RunnerSettings()
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._current: Job | None = None  # the job of the thread (kept when it is discarded while it runs)
        self._model: tuple[tuple[str, float, str | None], DiffTalkModel] | None = None
        self._stop_waiting = threading.Event()

    # ------------------------------------------------------------------ jobs
    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its (created) folder, for the uploads, before the job is submitted."""
        job_id = secrets.token_hex(8)
        folder = self.root / job_id
        folder.mkdir()
        return job_id, folder

    def busy(self) -> bool:
        """A job runs (or a cancelled or discarded one is still stopping)."""
        with self._lock:
            return self._busy()

    def _busy(self) -> bool:
        running = self._current is not None and self._current.active
        return running or any(job.active for job in self._jobs.values())

    def submit(self, job_id: str, folder: Path, request: JobRequest) -> Job:
        """Start a job; raises :class:`BusyError` (and removes ``folder``) while another one runs."""
        self.sweep()
        with self._lock:
            if self._busy():
                shutil.rmtree(folder, ignore_errors=True)
                raise BusyError(BUSY)
            job = Job(job_id, folder, request)
            self._jobs[job_id] = self._current = job
            self._thread = threading.Thread(
                target=self._run, args=(job,), name=f"talkingface-job-{job_id}", daemon=True
            )
            self._thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        self.sweep()
        with self._lock:
            return self._jobs.get(job_id)

    def discard(self, job_id: str) -> bool:
        """Cancel the job if it runs and remove it with its files (a running job's folder goes when it stops)."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        job.cancel.set()
        if not job.active:
            shutil.rmtree(job.folder, ignore_errors=True)
        return True

    def cancel(self, job_id: str) -> Job | None:
        """Stop the job if it is queued or running (before its next batch; its files go once it has stopped and it
        stays listed as ``cancelled``), else discard it with its files. Returns the job while it stops, else None."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.active:
                job.cancel.set()
                job.phase = "cancelling"
                return job
        self.discard(job_id)
        return None

    def sweep(self) -> None:
        """Discard finished jobs older than ``keep_s``, and the oldest beyond :data:`MAX_KEPT`."""
        with self._lock:
            finished = sorted((j for j in self._jobs.values() if j.finished is not None), key=lambda j: j.finished)
            expired = [j for j in finished if j.clock() - j.finished > self.settings.keep_s]
            expired += [j for j in finished[: max(0, len(finished) - MAX_KEPT)] if j not in expired]
        for job in expired:
            self.discard(job.id)

    def cancel_all(self) -> bool:
        """Cancel every queued or running job (without waiting for it to stop); returns whether there was one."""
        with self._lock:
            jobs = [job for job in [*self._jobs.values(), self._current] if job is not None and job.active]
        for job in jobs:
            job.cancel.set()
            job.phase = "cancelling"
        return bool(jobs)

    def stop_waiting(self) -> None:
        """Make :meth:`close` stop waiting for the running job (a second Ctrl-C): it removes the files at once."""
        self._stop_waiting.set()

    def close(self, timeout: float = 30.0) -> bool:
        """Cancel the running job, wait for it (up to ``timeout`` seconds, or until :meth:`stop_waiting`) and remove
        every job's files. Returns whether the job thread has stopped (False: it is still inside a step that cannot
        stop midway, such as loading a model)."""
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            thread = self._thread
        for job in jobs:
            job.cancel.set()
        deadline = time.monotonic() + timeout
        while thread is not None and thread.is_alive() and not self._stop_waiting.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            thread.join(min(left, 0.1))  # in slices: a signal handler can run in between
        shutil.rmtree(self.root, ignore_errors=True)
        return thread is None or not thread.is_alive()

    # ------------------------------------------------------------------ work
    def _run(self, job: Job) -> None:
        job.state, job.started = RUNNING, job.clock()
        outcome = (FAILED, "failed", "error: internal error; see the server log")
        try:
            self._execute(job)
            outcome = (DONE, "done", "")
        except JobCancelledError:
            outcome = (CANCELLED, "cancelled", "cancelled")
        except INPUT_ERRORS as err:
            outcome = (FAILED, "failed", job.user_message(err))
            log.warning("job %s: %s", job.id, outcome[2])
        except Exception as err:  # a bug, not a bad input: still one line on the page, the traceback in the log
            log.exception("job %s failed", job.id)
            detail = job.user_message(err).removeprefix("error: ")
            outcome = (FAILED, "failed", f"error: internal error ({type(err).__name__}): {detail}; see the server log")
        finally:
            with self._lock:
                discarded = job.id not in self._jobs
            if discarded or outcome[0] == CANCELLED:  # nobody will ask for its files
                shutil.rmtree(job.folder, ignore_errors=True)
            # the end is told once the files are gone: a page that sees "cancelled" finds nothing left
            job.finished = job.clock()
            job.state, job.phase, job.message = outcome

    def load_model(self, path: Path) -> DiffTalkModel:
        """The model of ``path`` (the last one loaded is kept while the file is unchanged)."""
        resolved = resolve_path(path).resolve()
        if not resolved.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        key = (str(resolved), resolved.stat().st_mtime, self.settings.device)
        if self._model is None or self._model[0] != key:
            self._model = None  # free the previous one first
            self._model = (key, get_difftalk_inference(None, resolved, device=self.settings.device))
        return self._model[1]

    def _execute(self, job: Job) -> None:
        request = job.request
        ckpt, _ = resolve_checkpoint(request.checkpoint, flag="checkpoint")
        # the user's own video (not a synthetic clip) with the demo model: a notice in plain words on the page
        if request.video is not None and is_bundled_model(ckpt) and not is_synthetic_video(request.video):
            job.warning = DEMO_MODEL_NOTICE
        landmarks = None
        limits = self.settings.limits

        def check() -> None:
            if job.cancel.is_set():
                raise JobCancelledError(job.id)

        # checks first, as the lipsync command: a bad upload loads no model; decoding stops at the first frame or
        # sample past a limit, so the pipeline never holds more than the limits allow
        if request.video is not None or request.speech is not None:
            job.phase = "checking the uploads"
        names = request.names
        if request.video is not None:
            source = probe_video(request.video)
            check_video_decoded(request.video, limits, check, name=names.get("video"))
            if request.speech is None and not request.sample_speech:  # the video's own sound is the speech
                if not source.has_audio:
                    raise UploadError(400, names.get("video", request.video.name), NO_SOUND)
                check_sound_decoded(
                    request.video, limits, video_start_s=source.start_s, check=check, name=names.get("video")
                )
            if request.landmarks is not None:
                landmarks = read_landmarks(request.landmarks)
        if request.speech is not None:
            check_sound_decoded(request.speech, limits, check=check, name=names.get("speech"))
        job.phase = "loading the model"
        check()
        model = self.load_model(ckpt)  # cannot stop midway: a cancel takes effect once it is loaded
        check()
        video, speech = request.video, request.speech
        if video is None or (speech is None and request.sample_speech):
            job.phase = "making the sample clip"
            (job.folder / "sample").mkdir()
            sample_video, sample_speech = make_sample_media(job.folder / "sample", self.settings.sample_seconds)
            if video is None:  # as the no-argument demo: the generator's landmarks instead of dlib
                video, landmarks = sample_video, read_landmarks(sidecar_path(sample_video))
            if speech is None and request.sample_speech:
                speech = sample_speech
            check()
        # the bundled model was trained on the synthetic layout's 128-pixel crops: draw its masks at that size
        crop = {"crop_size": DEMO_CROP_SIZE} if is_bundled_model(ckpt) else {}
        options = LipSyncOptions(sampler=request.sampler, steps=request.steps, **crop)
        pipe = _ProgressPipeline(
            model,
            job,
            options=options,
            feature_options={"device": self.settings.device} if self.settings.device else None,
            model_source=str(ckpt),
        )
        pipe.run(video, speech, job.result, progress=False, landmarks=landmarks)
