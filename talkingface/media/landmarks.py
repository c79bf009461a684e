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

    def _detect_rects(self, rgb: np.ndarray) -> tuple[list, float]:
        """dlib's face rectangles on the (downscaled) image and the scale from source pixels to theirs."""
        import cv2

        rgb = _check_rgb(rgb)
        scale = 1.0
        small = rgb
        if max(rgb.shape[:2]) > self.detect_max_side:
            scale = self.detect_max_side / max(rgb.shape[:2])
            small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return list(self._detector(np.ascontiguousarray(small), self.upsample)), scale

    @staticmethod
    def _to_box(rect, scale: float) -> tuple[int, int, int, int]:
        return tuple(int(round(c / scale)) for c in (rect.left(), rect.top(), rect.right(), rect.bottom()))

    def detect_box(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """Largest face box ``(left, top, right, bottom)`` in ``rgb``'s pixels, or None."""
        rects, scale = self._detect_rects(rgb)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        return self._to_box(rect, scale)

    def detect_boxes(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Every face box ``(left, top, right, bottom)`` in ``rgb``'s pixels (dlib's order; may be empty)."""
        rects, scale = self._detect_rects(rgb)
        return [self._to_box(rect, scale) for rect in rects]

    def landmarks_in_box(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Run the shape predictor inside a given face box."""
        rgb = _check_rgb(rgb)
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
