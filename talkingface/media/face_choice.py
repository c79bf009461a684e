"""Which face to follow when a video shows several: ``--face largest|N|x,y``, and a tracker over detected boxes.

* ``largest`` (default): in every frame, the detection with the largest box, independently per frame (as before).
* ``N``: the N-th face, counted from 0, left to right by box centre x (ties: top to bottom by centre y), in the
  first frame where any face is found; then tracked.
* ``x,y``: the face whose box contains the pixel ``(x, y)`` (source video pixels) in the first frame where any face
  is found (the nearest box centre when several boxes contain it); then tracked.

Tracking: in each later frame the tracker takes the detection whose box overlaps (IoU) the chosen face's expected
box the most: its last box moved on by its last per-frame motion, so faces that pass each other are not swapped.
When no detection overlaps it by at least :data:`MIN_IOU`, the face is lost in that frame (``None``: a frame without
the face, within ``--max-missing``; the tracker never answers with a box no detection gives), and the tracker keeps
looking for it:

* its expected box moves on at its last motion for at most :data:`MAX_EXTRAPOLATE` frames, then stays put (a face
  hidden for a while is not sought ever further away);
* a detection overlapping the expected box or the face's last box by :data:`MIN_IOU` takes it back;
* so does, failing that, the nearest detection of about its size (within :data:`REACQUIRE_SIZE`) whose centre lies
  within :data:`REACQUIRE_DISTANCE` face widths of where the face was last seen, and nearer to that spot than to
  where any other face was seen then (a face that moved or turned while hidden, not its neighbour).

There is no appearance model: a face hidden exactly while another one passes over its expected place can be
swapped for it.

Everything here works on boxes ``(left, top, right, bottom)`` in pixels; no detector is needed.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass

from talkingface.cli_support import number
from talkingface.errors import TalkingFaceError

Box = tuple[int, int, int, int]

#: A detection continues the tracked face when its IoU with the expected box is at least this.
MIN_IOU = 0.3
#: A lost face's expected box moves on at its last motion for at most this many frames.
MAX_EXTRAPOLATE = 5
#: A lost face is taken back by a detection whose centre lies within this many face widths of its last centre ...
REACQUIRE_DISTANCE = 1.0
#: ... and whose width is within this factor of its last width.
REACQUIRE_SIZE = 2.0

_POINT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")


class FaceChoiceError(TalkingFaceError, ValueError):
    """The chosen face is not in the video (``--face N`` past the faces found, ``--face x,y`` on no face)."""


@dataclass(frozen=True)
class FaceChoice:
    """A parsed ``--face`` value: ``kind`` is ``"largest"``, ``"index"`` (``index``) or ``"point"`` (``point``)."""

    kind: str = "largest"
    index: int | None = None
    point: tuple[float, float] | None = None

    @property
    def is_largest(self) -> bool:
        return self.kind == "largest"

    def __str__(self) -> str:
        if self.kind == "index":
            return str(self.index)
        if self.kind == "point":
            x, y = self.point  # type: ignore[misc]
            return f"{x:g},{y:g}"
        return "largest"


LARGEST = FaceChoice()


def parse_face_choice(text: str) -> FaceChoice:
    """``"largest"``, ``"N"`` (0-based, left to right) or ``"x,y"`` (pixels) -> :class:`FaceChoice`.

    Raises:
        ValueError: anything else (the message says what is accepted).
    """
    value = text.strip().lower()
    if value == "largest":
        return LARGEST
    if value.isdigit():
        return FaceChoice("index", index=int(value))
    m = _POINT.match(value)
    if m:
        x, y = float(m.group(1)), float(m.group(2))
        if x >= 0 and y >= 0:
            return FaceChoice("point", point=(x, y))
    raise ValueError(
        f"expected 'largest', a face number N (0 = leftmost) or a pixel 'x,y' of the first frame, got {text!r}"
    )


def _face_type(text: str) -> FaceChoice:
    try:
        return parse_face_choice(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_face_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, max_missing: float) -> None:
    """``--max-missing`` (default ``max_missing``) and ``--face largest|N|x,y`` (parsed to a :class:`FaceChoice`;
    default ``largest``), shared by the commands that look for a face in a video."""
    parser.add_argument(
        "--max-missing",
        type=number(float, min=0, max=1),
        default=max_missing,
        help="max fraction of faceless frames",
    )
    parser.add_argument(
        "--face",
        type=_face_type,
        default=LARGEST,
        metavar="largest|N|x,y",
        help="which face when several are visible: the largest in each frame (default); N: the N-th face counted "
        "from 0, left to right by box centre, in the first frame with a face; x,y: the face whose box contains "
        "that pixel there. N and x,y are then tracked by box overlap and taken back when they reappear; frames "
        "where the face is lost count against --max-missing",
    )


def area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def centre(box: Sequence[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(left, top, right, bottom)`` boxes (0 when either is empty)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def order_faces(boxes: Sequence[Box]) -> list[Box]:
    """Boxes in ``--face N`` order: left to right by centre x, ties top to bottom by centre y."""
    return sorted(boxes, key=lambda b: (centre(b)[0], centre(b)[1]))


def _describe(boxes: Sequence[Box]) -> str:
    return ", ".join(f"{i}: ({b[0]}, {b[1]})-({b[2]}, {b[3]})" for i, b in enumerate(order_faces(boxes)))


def select_face(boxes: Sequence[Box], choice: FaceChoice, frame: int = 0) -> Box:
    """The face ``choice`` picks among one frame's ``boxes`` (non-empty). ``frame`` is only used in errors.

    Raises:
        FaceChoiceError: no face number ``N`` or no box containing ``x,y``; names what was found.
    """
    if not boxes:
        raise ValueError("select_face needs at least one box")
    if choice.kind == "largest":
        return max(boxes, key=area)
    ordered = order_faces(boxes)
    if choice.kind == "index":
        if choice.index is None or choice.index >= len(ordered):
            raise FaceChoiceError(
                f"--face {choice}: only {len(ordered)} face(s) in frame {frame}, the first with a face "
                f"(numbered from 0, left to right: {_describe(ordered)})"
            )
        return ordered[choice.index]
    x, y = choice.point  # type: ignore[misc]
    inside = [b for b in ordered if b[0] <= x <= b[2] and b[1] <= y <= b[3]]
    if not inside:
        raise FaceChoiceError(
            f"--face {choice}: no face box contains that pixel in frame {frame}, the first with a face "
            f"(faces found: {_describe(ordered)})"
        )
    return min(inside, key=lambda b: (centre(b)[0] - x) ** 2 + (centre(b)[1] - y) ** 2)


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    (ax, ay), (bx, by) = centre(a), centre(b)
    return ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5


class FaceTracker:
    """Follow the chosen face frame by frame: ``tracker.update(boxes)`` -> its box in this frame, or None.

    ``largest`` picks the largest box in each frame (no tracking). ``N`` and ``x,y`` choose in the first frame
    with any box (:func:`select_face`, which may raise :class:`FaceChoiceError`), then follow that face by IoU and
    take it back after it was lost (module docstring). The box returned is always one of ``boxes``.
    """

    def __init__(self, choice: FaceChoice = LARGEST, min_iou: float = MIN_IOU) -> None:
        self.choice = choice
        self.min_iou = min_iou
        self.frame = 0
        self._last: Box | None = None  # the face's last box seen
        self._others: list[Box] = []  # the other faces' boxes in that frame
        self._velocity = (0.0, 0.0)  # its per-frame motion (centre) between its last two sightings
        self._since = 0  # frames since it was last seen

    @property
    def lost(self) -> bool:
        """The face was chosen and is not in the last frame."""
        return self._last is not None and self._since > 0

    def expected(self) -> tuple[float, float, float, float] | None:
        """Where the face should be in the next frame: its last box moved on by its motion (for at most
        :data:`MAX_EXTRAPOLATE` frames)."""
        if self._last is None:
            return None
        dx, dy = (v * min(self._since + 1, MAX_EXTRAPOLATE) for v in self._velocity)
        left, top, right, bottom = self._last
        return left + dx, top + dy, right + dx, bottom + dy

    def _match(self, boxes: Sequence[Box]) -> Box | None:
        """The detection that continues the face, or None."""
        expected = self.expected()
        assert expected is not None and self._last is not None
        if self._since == 0:
            scored = [(iou(expected, b), b) for b in boxes]
        else:
            scored = [(max(iou(expected, b), iou(self._last, b)), b) for b in boxes]
        score, box = max(scored, key=lambda s: s[0], default=(0.0, None))
        if box is not None and score >= self.min_iou:
            return box
        if self._since == 0:
            return None
        return self._reacquire(boxes)

    def _reacquire(self, boxes: Sequence[Box]) -> Box | None:
        """The nearest detection of about the lost face's size near where it was last seen, unless nearer to where
        another face was then."""
        last = self._last
        assert last is not None
        width = max(last[2] - last[0], 1)
        candidates = []
        for b in boxes:
            ratio = max(b[2] - b[0], 1) / width
            d = _distance(b, last)
            if not 1 / REACQUIRE_SIZE <= ratio <= REACQUIRE_SIZE or d > REACQUIRE_DISTANCE * width:
                continue
            if any(_distance(b, other) <= d for other in self._others):
                continue
            candidates.append((d, b))
        return min(candidates, key=lambda c: c[0])[1] if candidates else None

    def update(self, boxes: Sequence[Box]) -> Box | None:
        frame, self.frame = self.frame, self.frame + 1
        if self.choice.is_largest:
            return max(boxes, key=area) if boxes else None
        if self._last is None:
            if not boxes:
                return None
            self._last = select_face(boxes, self.choice, frame)
            self._others = [b for b in boxes if b != self._last]
            return self._last
        box = self._match(boxes)
        if box is None:
            self._since += 1
            return None
        (cx0, cy0), (cx1, cy1) = centre(self._last), centre(box)
        steps = self._since + 1
        self._velocity = ((cx1 - cx0) / steps, (cy1 - cy0) / steps)
        self._last, self._since = box, 0
        self._others = [b for b in boxes if b != box]
        return box
