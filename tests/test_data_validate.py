"""`validate` finds every kind of problem and names the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import copy_dataset

from talkingface.commands.preprocess import main
from talkingface.data.validate import validate_dataset


def _damage(root: Path, kind: str) -> tuple[str, str]:
    """Apply one kind of damage; return (file that must be named, words of the message)."""
    if kind == "missing_image":
        (root / "images" / "1_7.jpg").unlink()
        return "images/1_7.jpg", "missing"
    if kind == "extra_file":
        (root / "landmarks" / "1_60.lms").write_text("0 0\n" * 68)
        return "landmarks/1_60.lms", "extra file"
    if kind == "stray_file":
        (root / "images" / "notes.txt").write_text("x")
        return "images/notes.txt", "unexpected file"
    if kind == "unreadable_image":
        (root / "images" / "2_3.jpg").write_bytes(b"not a jpeg")
        return "images/2_3.jpg", "unreadable image"
    if kind == "truncated_image":  # cv2 decodes it (with a warning); PIL, like the loader, refuses it
        path = root / "images" / "2_3.jpg"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return "images/2_3.jpg", "truncated"
    if kind == "nan_audio":
        windows = np.load(root / "audio_smooth" / "1_5.npy")
        windows[2, 3, 4] = np.nan
        np.save(root / "audio_smooth" / "1_5.npy", windows)
        return "audio_smooth/1_5.npy", "non-finite"
    if kind == "bad_landmarks":
        np.savetxt(root / "landmarks" / "1_2.lms", np.zeros((67, 2)))
        return "landmarks/1_2.lms", "expected 68 rows"
    if kind == "bad_audio":
        np.save(root / "audio_smooth" / "2_4.npy", np.zeros((8, 16, 29), np.float64))
        return "audio_smooth/2_4.npy", "expected float32"
    if kind == "count_mismatch":
        (root / "data.txt").write_text("1 60\n2 49\n")
        return "audio_smooth/2_49.npy", "extra file"
    if kind == "bad_data_txt":
        (root / "data.txt").write_text("2 50\n1 60\n")
        return "data.txt", "must be 1..K in order"
    if kind == "bad_split":
        with open(root.parent / "data_test.txt", "a") as f:
            f.write("2_500\n")
        return "data_test.txt:", "'2_500': not a frame"
    if kind == "no_meta":
        (root / "meta.json").unlink()
        return "meta.json", "missing"
    if kind == "wrong_size_meta":
        meta = json.loads((root / "meta.json").read_text())
        meta["image_size"] = 256
        (root / "meta.json").write_text(json.dumps(meta))
        return "images/1_0.jpg", "meta.json says 256"
    if kind == "leftover_tmp":
        (root / ".tmp" / "3" / "images").mkdir(parents=True)
        return ".tmp", "interrupted run"
    raise AssertionError(kind)


KINDS = [
    "missing_image",
    "extra_file",
    "stray_file",
    "unreadable_image",
    "truncated_image",
    "nan_audio",
    "bad_landmarks",
    "bad_audio",
    "count_mismatch",
    "bad_data_txt",
    "bad_split",
    "no_meta",
    "wrong_size_meta",
    "leftover_tmp",
]


@pytest.mark.parametrize("kind", KINDS)
def test_validate_reports_each_problem_with_its_file(kind: str, built: Path, tmp_path: Path) -> None:
    root = copy_dataset(built, tmp_path)
    path, words = _damage(root, kind)
    problems = [str(p) for p in validate_dataset(root, progress=False)]
    assert any(path in p and words in p for p in problems), problems


def test_validate_cli_exit_code(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = copy_dataset(built, tmp_path)
    _damage(root, "missing_image")
    _damage(root, "bad_audio")
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    assert "images/1_7.jpg: missing" in out and "audio_smooth/2_4.npy" in out and "2 problem(s)" in out
