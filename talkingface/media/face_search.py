"""Face search over one video: dlib's default pass, and an upsampled retry for faces too small for it.

dlib's HOG detector scans an 80 px window, so at the default pass (frames downscaled to a longer side of at most
640 px, see :class:`~talkingface.media.landmarks.LandmarkDetector`) it finds faces from about 55-80 px *after* the
downscale: 55 px in a 176 x 144 clip, 170-240 px in a 1080p one. A :class:`FaceSearch` keeps the default pass and
adds a retry on frames where it finds nothing:

* **Full retry**: the whole frame upsampled by :data:`RETRY_SCALE` (2x: a 40 px face becomes 80 px), the upsampled
  image capped at :data:`RETRY_MAX_PIXELS` (a 1080p frame fits at 2x; larger frames get a smaller factor, so their
  smallest findable face is larger). Upsampled images show false faces (a badge, a pattern) that dlib scores low:
  the retry keeps detections scoring at least :data:`RETRY_MIN_SCORE` (real faces score about 1 or more).
* **Memory per video**: once the retry has found the faces, the search stays in *small-face mode*: it skips the
  default pass (which would miss them again) and searches only around the known faces (each box widened by
  :data:`REGION_MARGIN` of its width on every side), upsampled so that the smallest is :data:`REGION_FACE_PX`
  wide: a few milliseconds per frame whatever the frame size. It leaves that mode when the faces grow large enough
  for the default pass, or when they are lost (then the default pass runs again, and the full retry). The known
  faces are those of the last frame with any, and those not seen since for up to :data:`FORGET_FRAMES` frames: a
  face hidden for a moment while another stays in view is still searched where it was.
* **No blind retries**: a large face (one the default pass finds) that is missed for a moment (turned, covered,
  blurred) is not searched upsampled: size is not why it was missed. Only after :data:`RECENT_FRAMES` without it
  does the full retry run, as it does from the start of a video.
* **Back-off**: while full retries keep finding nothing (a stretch without a face), after :data:`FREE_RETRIES` of
  them in a row the next one waits :data:`RETRY_EVERY` frames, then twice as long each time, up to
  :data:`MAX_WAIT` frames, so a video without faces costs the default pass and a small fraction of a full retry
  per frame.

The first time the retry finds faces in a video, one INFO line says so (not one per frame).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from talkingface.media.face_choice import iou
from talkingface.media.landmarks import Box, LandmarkDetector

log = logging.getLogger(__name__)

#: The smallest face width (source pixels) the retry is meant to find.
MIN_FACE_PX = 40
#: dlib's HOG window (pixels): faces are found from about this width on the image it scans.
HOG_WINDOW_PX = 80
#: Upsampling of the full retry: a MIN_FACE_PX face becomes HOG_WINDOW_PX wide.
RETRY_SCALE = HOG_WINDOW_PX / MIN_FACE_PX
#: Largest upsampled image (pixels) a retry scans: a 1920 x 1080 frame at 2x (about 1 s on one CPU core).
RETRY_MAX_PIXELS = 3840 * 2160
#: Retry detections scoring below this are dropped (false faces on upsampled images score about 0-0.2).
RETRY_MIN_SCORE = 0.4
#: The search around known faces looks this far (in face widths) beyond each box: at 25 fps a face moves far less
#: between two frames; when it moves more, the full retry finds it.
REGION_MARGIN = 0.5
#: The search around known faces upsamples so that the smallest of them is this wide (comfortably above 80 px).
REGION_FACE_PX = 100
#: Faces at least this wide on the default pass's image are left to it (small-face mode ends).
DEFAULT_FACE_PX = 100
#: A retry must upsample at least this much more than the default pass to find anything it did not.
GAIN = 1.2
#: A large face missed for up to this many frames (1 s at 25 fps) gets no full retry.
RECENT_FRAMES = 25
#: Full retries in a row that may find nothing before the back-off starts ...
FREE_RETRIES = 2
#: ... then the next one waits this many frames, twice as long after each further miss, ...
RETRY_EVERY = 12
#: ... and at most this many (2 s at 25 fps).
MAX_WAIT = 50
#: A face not seen for this many frames (5 s at 25 fps) is no longer searched around in small-face mode.
FORGET_FRAMES = 125


class FaceSearch:
    """A :class:`LandmarkDetector` with per-video memory: the default pass, then an upsampled retry (module doc).

    It answers like the detector (``search(rgb)`` -> landmarks or None, :meth:`detect_boxes`,
    :meth:`landmarks_in_box`), so :func:`~talkingface.media.extract.analyse_video` uses either. Call it on the
    frames of one video in order; build a new one per video.
    """

    def __init__(self, detector: LandmarkDetector, source: str | Path = "video") -> None:
        self.detector = detector
        self.source = str(source)
        self.frames = 0  # frames searched
        self.retried = 0  # frames whose faces only the retry found
        self.small = False  # small-face mode: the default pass is skipped
        self._known: list[tuple[Box, int]] = []  # the faces searched around: (box, frame it was last seen)
        self._last: list[Box] = []  # the faces of the last frame that had any ...
        self._last_frame = -1  # ... its index ...
        self._last_small = False  # ... and whether they were too small for the default pass
        self._misses = 0  # full retries in a row that found nothing
        self._wait = 0  # frames to go before the next full retry may run
        self._announced = False

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        boxes = self.detect_boxes(rgb)
        if not boxes:
            return None
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        return self.landmarks_in_box(rgb, box)

    def landmarks_in_box(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        return self.detector.landmarks_in_box(rgb, box)

    def detect_boxes(self, rgb: np.ndarray) -> list[Box]:
        """Every face box ``(left, top, right, bottom)`` in this frame (the next of the video), or ``[]``."""
        self.frames += 1
        boxes = self._search(rgb)
        if boxes:
            h, w = rgb.shape[:2]
            self._last, self._last_frame = boxes, self.frames - 1
            self._remember(boxes)
            self._last_small = max(b[2] - b[0] for b in boxes) * self.detector.default_scale(w, h) < DEFAULT_FACE_PX
        return boxes

    def _remember(self, boxes: list[Box]) -> None:
        """This frame's faces, and the faces seen within FORGET_FRAMES that none of them overlaps."""
        now = self.frames - 1
        older = [
            (box, seen)
            for box, seen in self._known
            if now - seen <= FORGET_FRAMES and not any(iou(box, b) > 0 for b in boxes)
        ]
        self._known = [(b, now) for b in boxes] + older

    def retry_scale(self, width: int, height: int) -> float:
        """Upsampling of a full retry on ``width x height`` frames (RETRY_SCALE, less where the cap binds)."""
        return min(RETRY_SCALE, math.sqrt(RETRY_MAX_PIXELS / (width * height)))

    def smallest_face_px(self, width: int, height: int) -> float:
        """About the narrowest face (source pixels) a full retry finds on ``width x height`` frames."""
        return HOG_WINDOW_PX / self.retry_scale(width, height)

    def _search(self, rgb: np.ndarray) -> list[Box]:
        h, w = rgb.shape[:2]
        default_scale = self.detector.default_scale(w, h)
        if not self.small:
            boxes = self.detector.detect_boxes(rgb)
            if boxes:
                return boxes
        full_scale = self.retry_scale(w, h)
        if full_scale <= GAIN * default_scale:  # the cap leaves nothing to gain over the default pass
            return []
        if self._last:
            boxes, scale = self._around_last(rgb, default_scale)
            if boxes:
                return self._found(boxes, default_scale, scale, "around the last face", (w, h))
        if self.small:  # the small faces are lost: a large one (a cut to a close-up) shows in the default pass
            self.small = False
            boxes = self.detector.detect_boxes(rgb)
            if boxes:
                return boxes
        if self._last and not self._last_small and self.frames - 1 - self._last_frame <= RECENT_FRAMES:
            return []  # a large face missed for a moment: upsampling would not bring it back
        if self._wait > 0:
            self._wait -= 1
            return []
        boxes = self.detector.detect_boxes_scaled(rgb, full_scale, min_score=RETRY_MIN_SCORE)
        if not boxes:
            self._misses += 1
            if self._misses >= FREE_RETRIES:
                self._wait = min(RETRY_EVERY * 2 ** (self._misses - FREE_RETRIES), MAX_WAIT)
            return []
        where = f"whole frame, {round(w * full_scale)}x{round(h * full_scale)} px"
        return self._found(boxes, default_scale, full_scale, where, (w, h))

    def _around_last(self, rgb: np.ndarray, default_scale: float) -> tuple[list[Box], float]:
        """Search the region around the known faces, upsampled so that the smallest is REGION_FACE_PX wide."""
        h, w = rgb.shape[:2]
        known = [box for box, _ in self._known]
        smallest = min(b[2] - b[0] for b in known)
        scale = min(RETRY_SCALE, REGION_FACE_PX / max(smallest, 1))
        region = _union([_widened(b) for b in known])
        x0, y0, x1, y1 = max(region[0], 0), max(region[1], 0), min(region[2], w), min(region[3], h)
        if x1 <= x0 or y1 <= y0:
            return [], scale
        scale = min(scale, math.sqrt(RETRY_MAX_PIXELS / ((x1 - x0) * (y1 - y0))))
        if scale <= GAIN * default_scale:  # no finer than the default pass, which found nothing
            return [], scale
        return self.detector.detect_boxes_scaled(rgb, scale, (x0, y0, x1, y1), min_score=RETRY_MIN_SCORE), scale

    def _found(
        self, boxes: list[Box], default_scale: float, scale: float, where: str, size: tuple[int, int]
    ) -> list[Box]:
        self._misses = self._wait = 0
        self.retried += 1
        widest = max(b[2] - b[0] for b in boxes)
        self.small = widest * default_scale < DEFAULT_FACE_PX
        if not self._announced:
            self._announced = True
            w, h = size
            log.info(
                "%s: frame %d has no face at the default scale (%dx%d); searched again at %.3gx the frame size (%s), "
                "it has a face box %d px wide. In this video, frames without a face at the default scale are searched "
                "upsampled (faces down to about %d px)",
                self.source,
                self.frames - 1,
                round(w * default_scale),
                round(h * default_scale),
                scale,
                where,
                widest,
                round(self.smallest_face_px(w, h)),
            )
        return boxes


def _widened(box: Box) -> Box:
    """``box`` with REGION_MARGIN of its width (height) added on each side."""
    w, h = round(REGION_MARGIN * (box[2] - box[0])), round(REGION_MARGIN * (box[3] - box[1]))
    return box[0] - w, box[1] - h, box[2] + w, box[3] + h


def _union(boxes: list[Box]) -> Box:
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)
