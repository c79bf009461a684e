"""A parametric cartoon face: 68 iBUG landmarks from identity + mouth state + head pose, drawn with cv2.

Every drawn feature is a polygon through the landmarks (or through points of the same face model), so the
landmarks match the drawing by construction. Face coordinates: origin between the eyes, x right, y down, unit =
half the face width; ``pose`` maps them to frame pixels (centre, scale, roll).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: The largest mouth opening (inner-lip gap at opening 1.0) in face units.
MAX_OPENING = 0.34
#: Fraction of the inner-lip opening by which the chin (jaw points 5-11) drops.
JAW_DROP = 0.3
_JAW_WEIGHTS = np.array([0.25, 0.55, 0.85, 1.0, 0.85, 0.55, 0.25])  # jaw points 5..11
#: Mouth interior colour (RGB): far darker than every skin, lip and nose colour (luminance 0.04 against >= 0.1 for
#: the nose line of the darkest skin), so pixel statistics measure the opening on every skin tone.
MOUTH_INTERIOR = (30, 0, 10)
_SHIFT = 4  # cv2 sub-pixel bits
#: Skin tones light to dark: the 10 steps of the Monk Skin Tone scale (index = tone bin 0..9).
SKIN_TONES = np.array(
    [
        (0xF6, 0xED, 0xE4),
        (0xF3, 0xE7, 0xDB),
        (0xF7, 0xEA, 0xD0),
        (0xEA, 0xDA, 0xBA),
        (0xD7, 0xBD, 0x96),
        (0xA0, 0x7E, 0x56),
        (0x82, 0x5C, 0x43),
        (0x60, 0x41, 0x34),
        (0x3A, 0x31, 0x2A),
        (0x29, 0x24, 0x20),
    ]
)
#: Skin-tone groups of the ceiling report: bins of :data:`SKIN_TONES`.
TONE_GROUPS = {"light": (0, 1, 2), "medium": (3, 4, 5, 6), "dark": (7, 8, 9)}
_HAIR = np.array([(20, 16, 14), (60, 40, 25), (110, 70, 35), (180, 140, 80), (200, 200, 195), (140, 40, 20)])
_EYES = np.array([(60, 90, 140), (70, 110, 60), (80, 50, 30), (40, 30, 20), (100, 120, 130)])


@dataclass(frozen=True)
class FaceIdentity:
    """Shape, colours and head placement of one synthetic person."""

    face_width: float  # jaw half-width (face units; the unit is nominal half-width)
    face_height: float  # chin distance below the eye line
    eye_spacing: float
    eye_size: float
    brow_height: float
    nose_length: float
    mouth_y: float
    mouth_half_width: float
    lip_thickness: float
    skin: tuple[int, int, int]
    skin_tone: int  # bin of SKIN_TONES (0 lightest .. 9 darkest) the skin colour was jittered from
    hair: tuple[int, int, int]
    hair_volume: float
    lip: tuple[int, int, int]
    iris: tuple[int, int, int]
    background: tuple[tuple[int, int, int], tuple[int, int, int]]
    center: tuple[float, float]  # head centre as a fraction of the frame
    scale: float  # face unit as a fraction of the frame side
    motion: tuple[float, ...]  # head-motion frequencies (Hz) and phases


def _jitter(rng: np.random.Generator, rgb: np.ndarray, amount: float) -> tuple[int, int, int]:
    c = np.clip(rgb + rng.normal(0.0, amount, 3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def luminance(rgb: np.ndarray | tuple[int, int, int]) -> np.ndarray:
    """Luminance ``Y`` in [0, 1] (Rec. 601 weights) of RGB values (uint8 scale, last axis = channel)."""
    c = np.asarray(rgb, dtype=np.float32) / 255.0
    return 0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]


def _lip_colour(skin: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    """Reddish lip, clearly lighter than the mouth interior (luminance >= 95)."""
    base = np.array(skin, dtype=float) * rng.uniform(0.7, 0.85) + np.array([50.0, -10.0, 0.0])
    c = np.clip(base, 0, 255)
    lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
    if lum < 95:
        c = np.clip(c + (95 - lum), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def sample_identity(rng: np.random.Generator, skin_tone: int | None = None) -> FaceIdentity:
    """A random identity (all randomness from ``rng``) with the skin tone bin ``skin_tone`` of :data:`SKIN_TONES`
    (0 lightest .. 9 darkest; random when None). The rest of the identity does not depend on ``skin_tone``."""
    drawn = int(rng.integers(len(SKIN_TONES)))  # drawn either way, so the other features stay the same
    tone = drawn if skin_tone is None else int(skin_tone)
    if not 0 <= tone < len(SKIN_TONES):
        raise ValueError(f"skin_tone must be in [0, {len(SKIN_TONES)}), got {skin_tone}")
    skin = _jitter(rng, SKIN_TONES[tone].astype(float), 3.0)
    bg_a = tuple(int(v) for v in rng.integers(30, 230, 3))
    bg_b = tuple(int(v) for v in np.clip(np.array(bg_a) + rng.integers(-60, 60, 3), 0, 255))
    return FaceIdentity(
        face_width=float(rng.uniform(0.9, 1.08)),
        face_height=float(rng.uniform(1.35, 1.55)),
        eye_spacing=float(rng.uniform(0.38, 0.46)),
        eye_size=float(rng.uniform(0.14, 0.19)),
        brow_height=float(rng.uniform(0.24, 0.34)),
        nose_length=float(rng.uniform(0.5, 0.6)),
        mouth_y=float(rng.uniform(0.9, 1.0)),
        mouth_half_width=float(rng.uniform(0.3, 0.38)),
        lip_thickness=float(rng.uniform(0.06, 0.1)),
        skin=skin,
        skin_tone=tone,
        hair=_jitter(rng, _HAIR[rng.integers(len(_HAIR))].astype(float), 6.0),
        hair_volume=float(rng.uniform(0.05, 0.35)),
        lip=_lip_colour(skin, rng),
        iris=_jitter(rng, _EYES[rng.integers(len(_EYES))].astype(float), 10.0),
        background=(bg_a, bg_b),  # type: ignore[arg-type]
        center=(float(rng.uniform(0.45, 0.55)), float(rng.uniform(0.42, 0.5))),
        scale=float(rng.uniform(0.17, 0.2)),
        motion=tuple(float(v) for v in np.r_[rng.uniform(0.1, 0.4, 3), rng.uniform(0, 2 * np.pi, 3)]),
    )


def head_pose(identity: FaceIdentity, t: float, frame_size: int) -> tuple[float, float, float, float]:
    """Small head motion: ``(cx, cy, unit_px, roll_rad)`` at time ``t`` seconds."""
    fx, fy, fr, px, py, pr = identity.motion
    cx = (identity.center[0] + 0.02 * np.sin(2 * np.pi * fx * t + px)) * frame_size
    cy = (identity.center[1] + 0.015 * np.sin(2 * np.pi * fy * t + py)) * frame_size
    roll = np.deg2rad(3.0) * np.sin(2 * np.pi * fr * t + pr)
    return float(cx), float(cy), identity.scale * frame_size, float(roll)


def face_landmarks_local(identity: FaceIdentity, opening: float, width: float) -> np.ndarray:
    """``(68, 2)`` landmarks in face units for a mouth ``opening`` (0..1) and ``width`` factor."""
    p = np.zeros((68, 2))
    fw, fh = identity.face_width, identity.face_height
    # jaw 0-16: an ellipse arc from the left temple via the chin to the right temple
    phi = np.pi + 0.15 - np.arange(17) * (np.pi + 0.3) / 16
    jaw_cy = 0.05
    p[:17, 0] = fw * np.cos(phi)
    p[:17, 1] = jaw_cy + (fh - jaw_cy) * np.sin(phi)
    gap = MAX_OPENING * opening
    p[5:12, 1] += JAW_DROP * gap * _JAW_WEIGHTS
    # brows 17-21 (image left, outer -> inner), 22-26 (inner -> outer)
    es, ez = identity.eye_spacing, identity.eye_size
    bx = np.linspace(-es - 1.3 * ez, -es + 1.1 * ez, 5)
    by = -identity.brow_height - 0.06 * np.sin(np.linspace(0.2, np.pi - 0.2, 5))
    p[17:22] = np.column_stack([bx, by])
    p[22:27] = np.column_stack([-bx[::-1], by[::-1]])
    # nose: bridge 27-30, bottom 31-35
    nl = identity.nose_length
    p[27:31] = np.column_stack([np.zeros(4), np.linspace(0.03, nl, 4)])
    p[31:36] = np.column_stack([np.linspace(-0.17, 0.17, 5), nl + 0.08 - 0.03 * np.abs(np.linspace(-1, 1, 5))])
    # eyes 36-41 and 42-47 (corner, two upper, corner, two lower)
    ang = np.array([np.pi, 2 * np.pi / 3, np.pi / 3, 0.0, -np.pi / 3, -2 * np.pi / 3])
    eye = np.column_stack([ez * np.cos(ang), -0.45 * ez * np.sin(ang)])
    p[36:42] = eye + [-es, 0.0]
    right = eye.copy()
    right[:, 0] *= -1  # mirrored: 42 is the inner corner
    p[42:48] = right + [es, 0.0]
    # lips: outer 48-59, inner 60-67
    mw = identity.mouth_half_width * width
    my, th = identity.mouth_y, identity.lip_thickness
    up, lo = my - 0.25 * gap, my + 0.75 * gap  # inner upper / lower lip lines
    corner_y = my + 0.15 * gap
    p[48] = (-mw, corner_y)
    p[54] = (mw, corner_y)
    ux = np.array([-0.6, -0.25, 0.0, 0.25, 0.6]) * mw
    p[49:54] = np.column_stack([ux, up - th * np.array([0.7, 1.05, 0.8, 1.05, 0.7])])
    lx = np.array([0.6, 0.3, 0.0, -0.3, -0.6]) * mw
    p[55:60] = np.column_stack([lx, lo + 1.25 * th * np.array([0.7, 0.95, 1.0, 0.95, 0.7])])
    p[60] = (-0.82 * mw, corner_y)
    p[64] = (0.82 * mw, corner_y)
    p[61:64] = np.column_stack([np.array([-0.4, 0.0, 0.4]) * mw, up - 0.01 * np.array([0.5, 1.0, 0.5])])
    p[65:68] = np.column_stack([np.array([0.4, 0.0, -0.4]) * mw, lo + 0.02 * np.array([0.6, 1.0, 0.6])])
    return p


def to_frame(points: np.ndarray, pose: tuple[float, float, float, float]) -> np.ndarray:
    """Face units -> frame pixels (rotation by roll, scale, translation)."""
    cx, cy, unit, roll = pose
    c, s = np.cos(roll), np.sin(roll)
    rot = np.array([[c, -s], [s, c]])
    return (points @ rot.T) * unit + np.array([cx, cy])


def face_landmarks(
    identity: FaceIdentity, opening: float, width: float, pose: tuple[float, float, float, float]
) -> np.ndarray:
    """``(68, 2)`` float32 landmarks in frame pixels."""
    return to_frame(face_landmarks_local(identity, opening, width), pose).astype(np.float32)


def _poly(img: np.ndarray, pts: np.ndarray, colour: tuple[int, ...]) -> None:
    cv2.fillPoly(img, [np.round(pts * (1 << _SHIFT)).astype(np.int32)], colour, cv2.LINE_AA, _SHIFT)


def _line(img: np.ndarray, pts: np.ndarray, colour: tuple[int, ...], thickness: int, closed: bool = False) -> None:
    cv2.polylines(img, [np.round(pts * (1 << _SHIFT)).astype(np.int32)], closed, colour, thickness, cv2.LINE_AA, _SHIFT)


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + rx * np.cos(a), cy + ry * np.sin(a)])


def _background(identity: FaceIdentity, size: int) -> np.ndarray:
    a, b = (np.array(c, dtype=np.float32) for c in identity.background)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    return np.broadcast_to(a * (1 - ramp) + b * ramp, (size, size, 3)).astype(np.uint8).copy()


def draw_face(
    identity: FaceIdentity, landmarks_local: np.ndarray, pose: tuple[float, float, float, float], frame_size: int
) -> np.ndarray:
    """Draw the face with landmarks ``landmarks_local`` (face units) at ``pose``: ``(S, S, 3)`` uint8 RGB."""
    img = _background(identity, frame_size)
    lm = landmarks_local
    fw = identity.face_width
    f = lambda pts: to_frame(np.asarray(pts, dtype=float), pose)  # noqa: E731
    unit = pose[2]
    # neck and shoulders, hair behind the head
    _poly(img, f([[-0.45, 0.9], [0.45, 0.9], [0.55, 3.0], [-0.55, 3.0]]), tuple(int(c * 0.85) for c in identity.skin))
    _poly(img, f([[-2.2, 2.4], [2.2, 2.4], [2.6, 4.0], [-2.6, 4.0]]), identity.hair[::-1])
    hv = identity.hair_volume
    _poly(img, f(_ellipse_points(0.0, -0.35, fw + 0.15 + hv, 1.05 + hv)), identity.hair)
    # face: the jaw points, closed over the forehead by an arc
    top = np.linspace(0.15, np.pi - 0.15, 15)
    forehead = np.column_stack([fw * np.cos(top), 0.05 - 1.05 * np.sin(top)])
    _poly(img, f(np.vstack([lm[:17], forehead])), identity.skin)
    # hairline fringe
    fringe = np.column_stack([0.95 * fw * np.cos(top), -0.55 - (0.5 + 0.3 * hv) * np.sin(top)])
    _poly(img, f(np.vstack([fringe, forehead[::-1]])), identity.hair)
    # eyes: white through the eye landmarks, iris and pupil at the eye centre
    thick = max(1, int(round(0.04 * unit)))
    for rows in (slice(36, 42), slice(42, 48)):
        eye = f(lm[rows])
        _poly(img, eye, (245, 245, 240))
        centre = eye.mean(axis=0)
        r = 0.33 * np.linalg.norm(eye[3] - eye[0])
        _poly(img, _ellipse_points(centre[0], centre[1], r, r, 24), identity.iris)
        _poly(img, _ellipse_points(centre[0], centre[1], 0.45 * r, 0.45 * r, 16), (15, 15, 15))
        _line(img, eye, (40, 30, 30), 1, closed=True)
    _line(img, f(lm[17:22]), identity.hair, thick + 1)
    _line(img, f(lm[22:27]), identity.hair, thick + 1)
    nose_col = tuple(int(c * 0.7) for c in identity.skin)
    _line(img, f(lm[27:31]), nose_col, max(1, thick - 1))
    _line(img, f(np.vstack([lm[31:36]])), nose_col, thick)
    # lips: the outer polygon in lip colour, the inner polygon dark (the open mouth)
    _poly(img, f(lm[48:60]), identity.lip)
    _poly(img, f(lm[60:68]), MOUTH_INTERIOR)
    _line(img, f(lm[[60, 61, 62, 63, 64]]), tuple(int(c * 0.75) for c in identity.lip), 1)
    return img


#: Luminance of :data:`MOUTH_INTERIOR`: the dark end of :func:`darkness`.
INTERIOR_LUMINANCE = float(luminance(MOUTH_INTERIOR))


def darkness(image: np.ndarray, skin_luminance: float) -> np.ndarray:
    """Per-pixel darkness of an RGB image (uint8, or float in [0, 1]) relative to its skin: 1 for the mouth interior,
    0 from halfway between the interior and the skin luminance ``s`` upwards, so the same on every skin tone:

    ``clip((hi - Y) / (hi - lo), 0, 1)`` with ``lo = i + 0.15 (s - i)``, ``hi = i + 0.5 (s - i)``, ``i`` the interior
    luminance and ``Y`` the pixel's. Skin, the neck (0.85 s), lips and the nose line (0.7 s) count 0.
    """
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    lum = 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    i = INTERIOR_LUMINANCE
    span = max(float(skin_luminance) - i, 0.05)  # a skin no lighter than the interior: a fixed small span
    lo, hi = i + 0.15 * span, i + 0.5 * span
    return np.clip((hi - lum) / (hi - lo), 0.0, 1.0)


def darkness_absolute(image: np.ndarray) -> np.ndarray:
    """The former per-pixel darkness ``clip((0.3 - Y) / 0.3, 0, 1)`` with a fixed threshold: it counts dark skin
    (Monk tones 9-10, ``Y`` ~ 0.13-0.2) as mouth interior. Kept to show that failure in the tests."""
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    lum = 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    return np.clip((0.3 - lum) / 0.3, 0.0, 1.0)


def video_mouth_width(landmarks: np.ndarray) -> float:
    """Median mouth-corner distance (landmarks 48-54) over the frames ``(N, 68, 2)`` of one video: the fixed
    scale of :func:`mouth_opening_px` for that video."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 68, 2)
    return float(np.median(np.linalg.norm(lm[:, 54] - lm[:, 48], axis=1)))


def _box(image: np.ndarray, cx: float, cy: float, x: tuple[float, float], y: tuple[float, float], w: float):
    """The pixels of ``image`` in ``[cx + x0 w, cx + x1 w) x [cy + y0 w, cy + y1 w)`` (at least one pixel)."""
    h, wd = image.shape[:2]
    x0 = min(max(int(round(cx + x[0] * w)), 0), wd - 1)
    y0 = min(max(int(round(cy + y[0] * w)), 0), h - 1)
    x1 = min(max(int(round(cx + x[1] * w)), x0 + 1), wd)
    y1 = min(max(int(round(cy + y[1] * w)), y0 + 1), h)
    return image[y0:y1, x0:x1]


def skin_luminance_px(image: np.ndarray, nose_bottom: np.ndarray, mouth_width: float) -> float:
    """The skin luminance of a face image, from its pixels: the median luminance of two cheek patches beside the
    nose bottom (``0.4``-``0.7`` widths to each side, ``0.35``-``0.05`` widths above landmark 33), clear of the
    nose, the eyes and the mouth; placed without the frame's mouth landmarks."""
    cx, cy, w = float(nose_bottom[0]), float(nose_bottom[1]), float(mouth_width)
    img = image.astype(np.float32) if image.dtype == np.uint8 else image.astype(np.float32) * 255.0
    cheeks = [_box(img, cx, cy, xs, (-0.35, -0.05), w) for xs in ((-0.7, -0.4), (0.4, 0.7))]
    return float(np.median(np.concatenate([luminance(c).ravel() for c in cheeks])))


def mouth_opening_px(
    image: np.ndarray, nose_bottom: np.ndarray, mouth_width: float, skin_luminance: float | None = None
) -> float:
    """Mouth opening measured on pixels only: the dark mass in a box below the nose bottom (landmark 33) divided by
    the video's mouth width, in pixels (the dark area over the mouth width; proportional to the inner-lip gap,
    about 0.6 x the gap for the lens-shaped inner lips of :func:`face_landmarks_local`).

    The box (``±0.75`` widths across, ``0.1``-``1.3`` widths below the nose bottom) is placed by a landmark that does
    not move with speech and sized by a per-video constant (:func:`video_mouth_width`), so the measure of a
    generated frame depends on its pixels alone, not on the true mouth landmarks of that frame. Darkness is relative
    to the skin (:func:`darkness`); its luminance is measured on the same image (:func:`skin_luminance_px`) unless
    given, so dark skin does not read as an open mouth and the interior counts 1 on every skin tone.
    """
    w = float(mouth_width)
    if skin_luminance is None:
        skin_luminance = skin_luminance_px(image, nose_bottom, w)
    return float(darkness(mouth_box(image, nose_bottom, w), skin_luminance).sum() / max(w, 1.0))


def mouth_box(image: np.ndarray, nose_bottom: np.ndarray, mouth_width: float) -> np.ndarray:
    """The pixels :func:`mouth_opening_px` measures: ``±0.75`` widths across, ``0.1``-``1.3`` widths below the nose
    bottom (landmark 33)."""
    return _box(image, float(nose_bottom[0]), float(nose_bottom[1]), (-0.75, 0.75), (0.1, 1.3), float(mouth_width))
