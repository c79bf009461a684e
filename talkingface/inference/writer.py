"""Write the result: H.264 (+ AAC speech) into a temporary file next to the output, renamed when complete."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from talkingface.inference.errors import InferenceError

log = logging.getLogger(__name__)

#: Containers that take H.264 + AAC.
OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv")
#: Video encoders in order of preference (the first one available is used).
VIDEO_CODECS = ("libx264", "libopenh264", "mpeg4")
AUDIO_CODEC = "aac"
DEFAULT_CRF = 18
#: libx264 speed presets (``--x264-preset``). ``veryfast`` encodes 720p about 3.5 times faster than ``medium`` at
#: the same CRF (6.7 vs 23.7 ms a frame on 2 CPU cores), so encoding keeps up with a GPU.
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
DEFAULT_X264_PRESET = "veryfast"
AUDIO_CHUNK = 1024
FRAME_PATTERN = "{:06d}.png"


def _partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial-{os.getpid()}{target.suffix}")


def check_output(path: str | Path, overwrite: bool = False, *, directory: bool = False) -> Path:
    """Fail early when ``path`` exists (unless ``overwrite``), has an unsupported suffix, or its folder is missing
    or not writable."""
    path = Path(path)
    if not directory and path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InferenceError(
            path, f"unsupported output format {path.suffix!r}; use one of {', '.join(OUTPUT_SUFFIXES)}"
        )
    if not path.parent.is_dir():
        raise InferenceError(path, f"the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):  # the result is written next to it, then renamed
        raise InferenceError(path, f"the folder {path.parent} is not writable")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise InferenceError(path, "already exists; pass --overwrite to replace it")
        if directory and not path.is_dir():
            raise InferenceError(path, "exists and is not a folder")
        if not directory and path.is_dir():
            raise InferenceError(path, "is a folder")
        if directory and any(not p.name.endswith(".png") or p.is_dir() for p in path.iterdir()):
            raise InferenceError(path, "holds files other than frames; refusing to replace it")
    return path


def pick_video_codec() -> str:
    import av

    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # PyAV raises different types across versions for unknown codecs
            continue
        return name
    raise InferenceError("av", f"none of the video encoders {', '.join(VIDEO_CODECS)} is available in this FFmpeg")


class VideoWriter:
    """``with VideoWriter(out, fps, audio, rate) as w: w.write(rgb)``; the file appears at ``out`` only on success.

    Frames are RGB uint8 ``(H, W, 3)``, all of one size; odd sizes are padded by one edge pixel (4:2:0 needs even).
    ``metadata``: container tags (e.g. ``{"comment": ...}``; mp4 keeps the standard ones: title, comment, ...).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        audio: np.ndarray | None = None,
        sample_rate: int = 48_000,
        *,
        overwrite: bool = False,
        crf: int = DEFAULT_CRF,
        preset: str = DEFAULT_X264_PRESET,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if preset not in X264_PRESETS:
            raise InferenceError("--x264-preset", f"unknown preset {preset!r}; choose one of {', '.join(X264_PRESETS)}")
        self.preset = preset
        self.path = check_output(path, overwrite)
        self.partial = _partial_path(self.path)
        self.fps = fps
        self.audio = audio
        self.sample_rate = int(sample_rate)
        self.crf = crf
        self.metadata = dict(metadata or {})
        self.n_frames = 0
        self.codec = pick_video_codec()
        self._container = None
        self._vstream = None
        self._astream = None
        self._audio_done = 0
        self._pad = (0, 0)

    def __enter__(self) -> VideoWriter:
        import av

        try:
            self._container = av.open(str(self.partial), "w")
        except (av.error.FFmpegError, OSError) as e:
            raise InferenceError(self.path, f"cannot write ({e})") from e
        self._container.metadata.update(self.metadata)
        return self

    def _open_streams(self, height: int, width: int) -> None:
        """Both streams must exist before the first packet is muxed (the header is written then)."""
        self._pad = (height % 2, width % 2)
        if any(self._pad):
            log.info("%s: padding %dx%d frames to even sizes for 4:2:0 video", self.path, width, height)
        stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height = width + self._pad[1], height + self._pad[0]
        stream.pix_fmt = "yuv420p"
        if self.codec == "libx264":
            stream.options = {"crf": str(self.crf), "preset": self.preset}
        else:
            stream.bit_rate = 8_000_000
        self._vstream = stream
        if self.audio is not None and len(self.audio):
            self._astream = self._container.add_stream(AUDIO_CODEC, rate=self.sample_rate)
            self._astream.layout = "mono"

    def write(self, rgb: np.ndarray) -> None:
        import av

        if self._vstream is None:
            self._open_streams(rgb.shape[0], rgb.shape[1])
        if any(self._pad):
            rgb = np.pad(rgb, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.n_frames
        for packet in self._vstream.encode(frame):
            self._container.mux(packet)
        self.n_frames += 1
        self._write_audio(int(round(self.n_frames / self.fps * self.sample_rate)))  # interleave with the video

    def _write_audio(self, until: int) -> None:
        """Encode the speech up to sample ``until`` in whole encoder chunks (the tail when ``until`` is the end)."""
        import av

        if self._astream is None:
            return
        end = len(self.audio)
        while self._audio_done < min(until, end):
            stop = min(self._audio_done + AUDIO_CHUNK, end)
            if stop - self._audio_done < AUDIO_CHUNK and until < end:
                break
            chunk = np.ascontiguousarray(self.audio[self._audio_done : stop], dtype=np.float32)[None]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.pts = self._audio_done
            for packet in self._astream.encode(frame):
                self._container.mux(packet)
            self._audio_done = stop

    def _finish(self) -> None:
        if self._vstream is None:
            raise InferenceError(self.path, "no frames were generated")
        for packet in self._vstream.encode():
            self._container.mux(packet)
        if self._astream is not None:
            self._write_audio(len(self.audio))
            for packet in self._astream.encode():
                self._container.mux(packet)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self._finish()
        except BaseException:
            self._discard()
            raise
        else:
            if exc_type is not None:
                self._discard()
                return
            self._container.close()
            self._container = None
            os.replace(self.partial, self.path)
            # the caller reports the result (the pipeline's summary, the generator's count): only a debug line here
            log.debug("wrote %s (%d frames, %s)", self.path, self.n_frames, self.codec)

    def _discard(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the container may be half-initialised; the file goes anyway
                pass
            self._container = None
        self.partial.unlink(missing_ok=True)


class FramesDirWriter:
    """PNG frames ``000000.png, ...`` into a temporary sibling folder, renamed to ``path`` on success."""

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = check_output(path, overwrite, directory=True)
        self.partial = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self.n_frames = 0

    def __enter__(self) -> FramesDirWriter:
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir()
        return self

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        target = self.partial / FRAME_PATTERN.format(self.n_frames)
        if not cv2.imwrite(str(target), np.ascontiguousarray(rgb[..., ::-1])):
            raise InferenceError(target, "cannot write the frame")
        self.n_frames += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            shutil.rmtree(self.partial, ignore_errors=True)
            return
        if self.path.is_dir():
            shutil.rmtree(self.path)  # check_output verified it only holds frames
        os.replace(self.partial, self.path)
