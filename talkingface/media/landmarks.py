"""68-point iBUG landmarks with dlib's HOG face detector and the predictor from ``face-recognition-models``."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from talkingface.constants import N_LANDMARKS

log = logging.getLogger(__name__)

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
#: dlib HOG upsampling: 0 (1 finds false faces, e.g. on the badge of skimage's astronaut photo).
DEFAULT_UPSAMPLE = 0
#: Frames are downscaled so that their longer side is at most this before HOG detection (speed).
DEFAULT_DETECT_MAX_SIDE = 640
#: Face boxes narrower than this (pixels) get their landmarks on a patch upscaled to this width: dlib's predictor
#: reads whole pixels, so on a 40 px face its points are coarse (integers) without it.
PREDICT_MIN_BOX_PX = 100

Box = tuple[int, int, int, int]


def default_predictor_path() -> Path:
    """Path of the 68-point predictor shipped by ``face-recognition-models`` (found without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("face-recognition-models is not installed (pip install face-recognition-models)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from face-recognition-models")
    return path


class LandmarkDetector:
    """Find the largest face in an RGB image and return its 68 iBUG landmarks in pixel units.

    To follow another face (``--face``), give :meth:`detect_boxes` to a
    :class:`talkingface.media.face_choice.FaceTracker` and its box to :meth:`landmarks_in_box`.

    ``detector(rgb)`` -> ``(68, 2)`` float32 ``(x, y)`` or ``None`` when no face is found.
    Not picklable (dlib objects): build one per process.
    """

    def __init__(
        self,
        predictor_path: str | Path | None = None,
        upsample: int = DEFAULT_UPSAMPLE,
        detect_max_side: int = DEFAULT_DETECT_MAX_SIDE,
    ) -> None:
        import dlib

        self.predictor_path = Path(predictor_path) if predictor_path else default_predictor_path()
        self.upsample = upsample
        self.detect_max_side = detect_max_side
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(self.predictor_path))
        self._dlib = dlib

    def default_scale(self, width: int, height: int) -> float:
        """Scale of the default pass on ``width x height`` frames: at most 1, longer side ``detect_max_side``."""
        return min(1.0, self.detect_max_side / max(width, height))

    def _detect_rects(self, rgb: np.ndarray) -> tuple[list, float]:
        """dlib's face rectangles on the (downscaled) image and the scale from source pixels to theirs."""
        import cv2

        rgb = _check_rgb(rgb)
        scale = self.default_scale(rgb.shape[1], rgb.shape[0])
        small = rgb
        if scale < 1.0:
            small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return list(self._detector(np.ascontiguousarray(small), self.upsample)), scale

    @staticmethod
    def _to_box(rect, scale: float, x0: int = 0, y0: int = 0) -> Box:
        left, top, right, bottom = (rect.left(), rect.top(), rect.right(), rect.bottom())
        return (
            int(round(left / scale)) + x0,
            int(round(top / scale)) + y0,
            int(round(right / scale)) + x0,
            int(round(bottom / scale)) + y0,
        )

    def detect_boxes_scaled(
        self, rgb: np.ndarray, scale: float, region: Box | None = None, min_score: float = 0.0
    ) -> list[Box]:
        """Face boxes found on ``region`` (default: the whole frame) resized by ``scale`` (above 1: upsampled, so
        that faces smaller than dlib's 80 px window are found), keeping those scoring at least ``min_score``.

        Boxes are ``(left, top, right, bottom)`` in ``rgb``'s pixels, best score first.
        """
        import cv2

        rgb = _check_rgb(rgb)
        x0, y0, x1, y1 = region if region is not None else (0, 0, rgb.shape[1], rgb.shape[0])
        patch = rgb[y0:y1, x0:x1]
        if patch.size == 0:
            return []
        interpolation = cv2.INTER_LINEAR if scale > 1.0 else cv2.INTER_AREA
        image = np.ascontiguousarray(cv2.resize(patch, None, fx=scale, fy=scale, interpolation=interpolation))
        rects, scores, _ = self._detector.run(image, 0, min_score)
        return [self._to_box(rect, scale, x0, y0) for rect, _ in sorted(zip(rects, scores), key=lambda rs: -rs[1])]

    def detect_box(self, rgb: np.ndarray) -> Box | None:
        """Largest face box ``(left, top, right, bottom)`` in ``rgb``'s pixels, or None."""
        rects, scale = self._detect_rects(rgb)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        return self._to_box(rect, scale)

    def detect_boxes(self, rgb: np.ndarray) -> list[Box]:
        """Every face box ``(left, top, right, bottom)`` in ``rgb``'s pixels (dlib's order; may be empty)."""
        rects, scale = self._detect_rects(rgb)
        return [self._to_box(rect, scale) for rect in rects]

    def landmarks_in_box(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        """Run the shape predictor inside a given face box (on an upscaled patch when the box is small)."""
        import cv2

        rgb = _check_rgb(rgb)
        width = box[2] - box[0]
        if width >= PREDICT_MIN_BOX_PX or width <= 0:
            return self._predict(rgb, box)
        h, w = rgb.shape[:2]  # a patch with one box width of margin, upscaled so that the box is PREDICT_MIN_BOX_PX
        x0, y0 = max(box[0] - width, 0), max(box[1] - width, 0)
        x1, y1 = min(box[2] + width, w), min(box[3] + width, h)
        if x1 <= x0 or y1 <= y0:
            return self._predict(rgb, box)
        factor = PREDICT_MIN_BOX_PX / width
        size = (int(round((x1 - x0) * factor)), int(round((y1 - y0) * factor)))
        patch = cv2.resize(rgb[y0:y1, x0:x1], size, interpolation=cv2.INTER_LINEAR)
        fx, fy = size[0] / (x1 - x0), size[1] / (y1 - y0)
        inner = (box[0] - x0) * fx, (box[1] - y0) * fy, (box[2] - x0) * fx, (box[3] - y0) * fy
        points = self._predict(np.ascontiguousarray(patch), tuple(int(round(c)) for c in inner))
        # pixel centres as cv2.resize maps them: patch pixel u covers source x0 + (u + 0.5) / fx - 0.5
        points[:, 0] = x0 + (points[:, 0] + 0.5) / fx - 0.5
        points[:, 1] = y0 + (points[:, 1] + 0.5) / fy - 0.5
        return points

    def _predict(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        shape = self._predictor(rgb, self._dlib.rectangle(*box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32).reshape(N_LANDMARKS, 2)

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        box = self.detect_box(rgb)
        return None if box is None else self.landmarks_in_box(rgb, box)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


_CACHE: dict[tuple, LandmarkDetector] = {}


def shared_detector(predictor_path: str | Path | None = None, upsample: int = DEFAULT_UPSAMPLE) -> LandmarkDetector:
    """A per-process cached detector (loading the predictor takes about a second)."""
    key = (str(predictor_path), upsample)
    if key not in _CACHE:
        _CACHE[key] = LandmarkDetector(predictor_path, upsample)
    return _CACHE[key]
