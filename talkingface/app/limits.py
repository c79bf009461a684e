"""Limits on the work an upload can cause: its duration and its frame size, not only its bytes.

The lip-sync pipeline keeps every 25 fps frame of the source video (in memory, or in a temporary file beyond 1 GiB)
and the whole speech, so a small, well-compressed file could otherwise fill the disk and the memory (20 s of
1080p: 500 frames, 3 GB). The limits are checked twice: from the container's header as soon as the upload has
arrived (``check_*_header``: a 413 answer at once), and while decoding it the way the pipeline will
(``check_*_decoded``: the job fails), because a header can lie. Decoding stops at the first frame or sample past a
limit, so the checks themselves are bounded. Files that cannot be read pass: the job reports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talkingface.constants import FPS
from talkingface.errors import TalkingFaceError
from talkingface.media.decode import iter_frames, stream_duration_s, stream_start_s

DEFAULT_MAX_SECONDS = 60.0
DEFAULT_MAX_FRAME_PIXELS = 1920 * 1080
#: Decoded media may run this much past ``max_seconds`` (codec padding, rounding) before it is refused.
SLACK_S = 0.5
#: Sound beyond these is refused too: they multiply the samples held for a second of speech.
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
#: A video without sound chosen as its own speech: the remedy in the form's words.
NO_SOUND = (
    'has no sound to use as the speech; under Speech, choose "my audio or video file, or a recording" or "the sample"'
)


class UploadError(TalkingFaceError, ValueError):
    """A refused upload or form field: the HTTP ``status`` and the one line ``<subject>: <problem>``."""

    def __init__(self, status: int, subject: str, problem: str) -> None:
        super().__init__(subject, problem)
        self.args = (status, subject, problem)
        self.status = status


@dataclass(frozen=True)
class MediaLimits:
    """How long the video and the speech may be, and how large a video frame (``--max-seconds``,
    ``--max-frame-pixels``)."""

    max_seconds: float = DEFAULT_MAX_SECONDS
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS

    @property
    def max_frames(self) -> int:
        """The most 25 fps frames a video may decode to."""
        return math.ceil((self.max_seconds + SLACK_S) * FPS)

    def check_seconds(self, name: str, seconds: float | None, what: str = "") -> None:
        if seconds is not None and seconds > self.max_seconds:
            raise UploadError(
                413,
                name,
                f"{what}{seconds:.1f} s long; the limit is {self.max_seconds:g} s (the server's --max-seconds)",
            )

    def check_frame(self, name: str, width: int, height: int) -> None:
        if width * height > self.max_frame_pixels:
            raise UploadError(
                413,
                name,
                f"{width}x{height} frames ({width * height} pixels); the limit is {self.max_frame_pixels} pixels "
                "(the server's --max-frame-pixels)",
            )


@contextmanager
def _first_stream(path: Path, kind: str) -> Iterator[tuple[Any, Any] | None]:
    """``(container, its first stream of kind "video" or "audio")`` while the file is open; None when the file does
    not open or has no such stream (it passes: the job reports it, as the lipsync command would)."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        container = None
    if container is None:
        yield None
        return
    with container:
        streams = getattr(container.streams, kind)
        yield (container, streams[0]) if streams else None


def _check_sound_format(name: str, rate: int | None, channels: int | None) -> None:
    if rate and rate > MAX_SAMPLE_RATE:
        raise UploadError(413, name, f"sound at {rate} Hz; the limit is {MAX_SAMPLE_RATE} Hz")
    if channels and channels > MAX_CHANNELS:
        raise UploadError(413, name, f"sound with {channels} channels; the limit is {MAX_CHANNELS}")


def check_video_header(path: Path, limits: MediaLimits, own_sound: bool = False, name: str | None = None) -> None:
    """Refuse (413) a video whose header gives larger frames or a longer duration than ``limits``; with
    ``own_sound`` (its sound is the speech) its sound track as well, and (400) a video without sound. ``name``: what
    messages call the file (default: its file name)."""
    name = name or Path(path).name
    with _first_stream(path, "video") as found:
        if found is None:
            return
        container, stream = found
        limits.check_frame(name, stream.codec_context.width, stream.codec_context.height)
        limits.check_seconds(name, stream_duration_s(stream, container))
        if own_sound and not container.streams.audio:
            raise UploadError(400, name, NO_SOUND)
        if own_sound:
            sound = container.streams.audio[0]
            _check_sound_format(name, sound.codec_context.sample_rate, sound.codec_context.channels)
            seconds = stream_duration_s(sound, container)
            if seconds is not None:  # the speech starts with silence when the sound starts after the picture
                limits.check_seconds(
                    name, max(0.0, stream_start_s(sound) - stream_start_s(stream)) + seconds, "its sound is "
                )


def check_sound_header(path: Path, limits: MediaLimits, name: str | None = None) -> None:
    """Refuse (413) a speech file whose header gives a longer duration than ``limits`` (or an outsize format);
    ``name`` as for :func:`check_video_header`."""
    name = name or Path(path).name
    with _first_stream(path, "audio") as found:
        if found is None:
            return
        container, stream = found
        _check_sound_format(name, stream.codec_context.sample_rate, stream.codec_context.channels)
        limits.check_seconds(name, stream_duration_s(stream, container))


def check_video_decoded(
    path: Path, limits: MediaLimits, check: Callable[[], None] = lambda: None, name: str | None = None
) -> None:
    """Decode the video to 25 fps frames as the pipeline will, refusing (413) it at the first frame past a limit.

    ``check`` is called for every frame (to stop when the job is cancelled). Decoding errors are raised as the
    pipeline raises them (:class:`PreprocessError`). ``name`` as for :func:`check_video_header`.
    """
    name = name or Path(path).name
    for count, rgb in enumerate(iter_frames(path, FPS), start=1):
        check()
        limits.check_frame(name, rgb.shape[1], rgb.shape[0])
        if count > limits.max_frames:
            raise UploadError(
                413,
                name,
                f"longer than the {limits.max_seconds:g} s limit once decoded (the server's --max-seconds)",
            )


def check_sound_decoded(
    path: Path,
    limits: MediaLimits,
    video_start_s: float | None = None,
    check: Callable[[], None] = lambda: None,
    name: str | None = None,
) -> None:
    """Decode the first sound track of ``path``, refusing (413) it once it runs past ``limits.max_seconds``.

    ``video_start_s``: the sound is the video's own, which the pipeline pads with silence when the sound starts
    later than the picture (that silence counts). Files it cannot decode pass: the pipeline reports them. ``name`` as
    for :func:`check_video_header`.
    """
    import av

    name = name or Path(path).name
    with _first_stream(path, "audio") as found:
        if found is None:
            return
        container, stream = found
        seconds = 0.0 if video_start_s is None else max(0.0, stream_start_s(stream) - video_start_s)
        try:
            for frame in container.decode(stream):
                check()
                _check_sound_format(name, frame.sample_rate, len(frame.layout.channels))
                seconds += frame.samples / frame.sample_rate if frame.sample_rate else 0.0
                if seconds > limits.max_seconds + SLACK_S:
                    what = "its sound is longer" if video_start_s is not None else "longer"
                    raise UploadError(
                        413,
                        name,
                        f"{what} than the {limits.max_seconds:g} s limit once decoded (the server's --max-seconds)",
                    )
        except av.error.FFmpegError:
            return
