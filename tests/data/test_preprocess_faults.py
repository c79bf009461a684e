"""Fault injection into `preprocess run` (seeded, bounded): kill -9 at random points, disk full, a second run.

A helper process runs the real command with one hook installed (``TF_FAULT=kind:k``): at the k-th call of the hooked
function it kills itself with SIGKILL (or, for ``pause``, waits for a file). The kill points are drawn once from a
seeded generator, so every run of the suite tests the same points.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_fixtures import write_video

from talkingface.commands.preprocess import main
from talkingface.data.layout import FRAME_FILES, DatasetLayout, read_split
from talkingface.data.validate import validate_dataset

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 20  # per video: 0.8 s at 25 fps
VIDEOS = 2

_DRIVER = r"""
import os, pathlib, signal, sys, time
from talkingface.data import layout, writer
from talkingface.commands.preprocess import main

kind, k = os.environ["TF_FAULT"].split(":")
k, calls = int(k), [0]


def hit():
    if calls[0] == k:
        if kind == "pause":  # hold the run (and its lock) until the test lets it go
            pathlib.Path(os.environ["TF_PAUSED"]).touch()
            deadline = time.monotonic() + 60
            while not pathlib.Path(os.environ["TF_GO"]).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    calls[0] += 1


def hook(owner, name, when=lambda *a: True):
    real = getattr(owner, name)

    def hooked(*a, **kw):
        if when(*a):
            hit()
        return real(*a, **kw)

    setattr(owner, name, hooked)


INDEX = ("meta.json", "data.txt", "data_train.txt", "data_test.txt")
if kind in ("frame", "pause"):  # extracting a video into .tmp/<v>
    hook(layout.DatasetLayout, "write_frame")
elif kind == "commit":  # moving a finished video's files from .tmp/<v> into place
    hook(os, "replace", lambda src, *a: f"{os.sep}.tmp{os.sep}" in str(src))
elif kind == "marker":  # all files moved, the done marker not yet written
    hook(writer, "write_json")
elif kind == "moving":  # done marker written, the commit's .moving flag not yet removed
    hook(pathlib.Path, "unlink", lambda self, *a: self.name.endswith(".moving"))
elif kind == "index":  # writing meta.json / data.txt / split lists
    for module in (layout, writer):
        hook(module, "atomic_write_text", lambda path, *a: pathlib.Path(path).name in INDEX)
sys.exit(main(sys.argv[1:]))
"""

_rng = random.Random(9)
#: (hook, k): 2 in the frame extraction, 2 inside the commit moves, the two ends of the marker write, and one of the
#: final index writes (the first run's finalize writes meta.json and data.txt: calls 0 and 1).
KILL_POINTS = [
    ("frame", _rng.randrange(VIDEOS * FRAMES)),
    ("frame", _rng.randrange(VIDEOS * FRAMES)),
    ("commit", _rng.randrange(len(FRAME_FILES) * FRAMES)),
    ("commit", _rng.randrange(len(FRAME_FILES) * FRAMES, VIDEOS * len(FRAME_FILES) * FRAMES)),
    ("marker", _rng.randrange(VIDEOS)),
    ("moving", _rng.randrange(VIDEOS)),
    ("index", _rng.randrange(2, 6)),
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("fault_media")
    return [write_video(d / f"clip{i}.mp4", seconds=FRAMES / 25, fps=25) for i in range(VIDEOS)]


def _argv(clips: list[Path], root: Path) -> list[str]:
    return ["run", *map(str, clips), "--out", str(root), "--size", "64", "--no-progress"]


def _start(fault: str, argv: list[str], **env: str) -> subprocess.Popen:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "TF_FAULT": fault, **env}
    return subprocess.Popen(
        [sys.executable, "-c", _DRIVER, *argv], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _nothing_counted_half(root: Path) -> None:
    """Every frame the index counts (data.txt, the split lists, a 'done' entry of meta.json) has all its files."""
    layout = DatasetLayout(root)
    counts = layout.read_data_txt() if layout.data_txt_path.is_file() else []
    meta = layout.read_meta_if_any()
    for v, entry in (meta.get("videos") or {}).items():
        if entry.get("status") == "done":
            assert int(v) <= len(counts) and counts[int(v) - 1] == entry["frames"], (v, entry, counts)
    for v, n in enumerate(counts, 1):
        for kind in FRAME_FILES:
            missing = [f for f in range(n) if not layout.path(kind, v, f).is_file()]
            assert not missing, f"video {v} counted with {n} frames, {kind.folder} lacks {missing[:5]}"
    for path in layout.split_lists.values():
        if path.is_file():
            videos, frames = read_split(path)
            for v, f in zip(videos, frames, strict=True):
                assert layout.image_path(int(v), int(f)).is_file(), (path, v, f)


def _complete(root: Path) -> None:
    assert validate_dataset(root, progress=False) == []
    _nothing_counted_half(root)
    layout = DatasetLayout(root)
    assert layout.read_data_txt() == [FRAMES] * VIDEOS
    meta = json.loads(layout.meta_path.read_text())
    assert [meta["videos"][str(v)]["frames"] for v in range(1, VIDEOS + 1)] == [FRAMES] * VIDEOS
    for v in range(1, VIDEOS + 1):
        assert sum(1 for _ in layout.video_files(v)) == len(FRAME_FILES) * FRAMES
    listed = [read_split(p) for p in layout.split_lists.values()]
    assert sorted(len(videos) for videos, _ in listed) == [FRAMES - 1, FRAMES - 1]  # one video each, frames 1..19
    assert not (root / ".tmp").exists() and not list((root / ".done").glob("*.moving"))


@pytest.mark.slow
@pytest.mark.parametrize("fault", [f"{kind}:{k}" for kind, k in KILL_POINTS])
def test_kill_9_at_a_seeded_point_then_a_rerun_completes(clips: list[Path], tmp_path: Path, fault: str) -> None:
    root = tmp_path / "data" / "HDTF"
    proc = _start(fault, _argv(clips, root))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"the kill point {fault} was never reached: {err[-2000:]}"
    _nothing_counted_half(root)
    assert main(_argv(clips, root)) == 0
    _complete(root)


def test_disk_full_stops_the_run_in_one_line_and_keeps_finished_videos(
    clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data" / "HDTF"
    assert main(_argv(clips[:1], root)) == 0
    before = {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    real = DatasetLayout.write_frame

    def full(self: DatasetLayout, video: int, frame: int, *a: object, **k: object) -> Path:
        if frame == 7:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.image_path(video, frame)))
        return real(self, video, frame, *a, **k)

    monkeypatch.setattr(DatasetLayout, "write_frame", full)
    capsys.readouterr()
    assert main(_argv(clips, root)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "No space left on device" in err[0], err
    assert "2_7.jpg" in err[0] and "finished videos are kept" in err[0]
    assert not (root / ".tmp" / "2").exists()  # the half video's working files are gone (space back)
    for path, data in before.items():
        if path.name not in ("meta.json", "data.txt"):  # these now also name the pending video 2
            assert path.read_bytes() == data, path
    assert validate_dataset(root, progress=False) == []
    _nothing_counted_half(root)
    monkeypatch.undo()
    assert main(_argv(clips, root)) == 0
    _complete(root)


def test_disk_full_while_writing_the_index_is_one_line(
    clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data" / "HDTF"
    assert main(_argv(clips, root)) == 0
    meta = (root / "meta.json").read_bytes()

    def full(self: DatasetLayout, meta: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.meta_path))

    monkeypatch.setattr(DatasetLayout, "write_meta", full)
    capsys.readouterr()
    assert main(["finalize", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{root / 'meta.json'}: No space left on device" in err[0], err
    assert (root / "meta.json").read_bytes() == meta
    assert validate_dataset(root, progress=False) == []


@pytest.mark.slow
def test_a_second_process_on_the_same_out_exits_2_at_once(clips: list[Path], tmp_path: Path) -> None:
    """Two real processes: the first holds the lock (paused at its first frame); the second exits 2 at once naming
    the lock and touching nothing; the first then finishes a valid dataset."""
    root = tmp_path / "data" / "HDTF"
    paused, go = tmp_path / "paused", tmp_path / "go"
    first = _start("pause:0", _argv(clips, root), TF_PAUSED=str(paused), TF_GO=str(go))
    try:
        deadline = time.monotonic() + 60
        while not paused.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert paused.exists(), first.communicate(timeout=5)
        listing = sorted(root.rglob("*"))
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "talkingface.preprocess", *_argv(clips, root)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and str(root / ".lock") in err[0] and "another run" in err[0], err
        assert time.monotonic() - started < 30
        assert sorted(root.rglob("*")) == listing
    finally:
        go.touch()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    _complete(root)
