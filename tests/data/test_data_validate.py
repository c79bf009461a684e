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


# ----------------------------------------------------------------------------- values out of range


def test_validate_reports_landmarks_off_the_image_and_audio_values_out_of_range(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    root = copy_dataset(tiny_dataset, tmp_path)  # 64 px frames, logmel29 features
    assert validate_dataset(root, progress=False) == []
    lms = np.loadtxt(root / "landmarks" / "1_2.lms")
    lms[5] = (99999, -5)
    np.savetxt(root / "landmarks" / "1_2.lms", lms)
    lms = np.loadtxt(root / "landmarks" / "1_3.lms")
    lms[0], lms[67] = (-6, 69), (-3.5, 0)  # within the margin (6.4 px): a face at the edge of its crop
    np.savetxt(root / "landmarks" / "1_3.lms", lms)
    windows = np.load(root / "audio_smooth" / "2_4.npy")
    windows[2, 3, 4] = 1e30
    windows[7, 15, 28] = -2e4
    np.save(root / "audio_smooth" / "2_4.npy", windows)
    windows = np.load(root / "audio_smooth" / "2_5.npy")
    windows[0, 0, 0] = -9000.0  # large, but within the bound
    np.save(root / "audio_smooth" / "2_5.npy", windows)

    problems = [str(p) for p in validate_dataset(root, progress=False)]
    assert len(problems) == 2, problems
    audio, landmark = sorted(problems)
    assert landmark == (
        f"{root / 'landmarks' / '1_2.lms'}: a landmark lies outside the 64x64 image (more than 6.4 px beyond its "
        "edge), the first: landmark 5 at (99999, -5)"
    )
    assert audio == (
        f"{root / 'audio_smooth' / '2_4.npy'}: 2 values with |x| > 10000 (no logmel29 feature comes near it), "
        "the first: 1e+30 at [2, 3, 4]"
    )


def test_posterior_features_must_lie_in_0_1(tmp_path: Path) -> None:
    from train_support import write_dataset

    root = write_dataset(tmp_path, counts=(3, 2), kind="wav2vec2-ctc29")
    rng = np.random.default_rng(0)
    for path in (root / "audio_smooth").iterdir():
        np.save(path, rng.uniform(0, 1, (8, 16, 29)).astype(np.float32))
    assert validate_dataset(root, progress=False) == []
    windows = np.load(root / "audio_smooth" / "1_1.npy")
    windows[1, 2, 3] = 1.5  # a plausible log-mel value, but not a probability
    np.save(root / "audio_smooth" / "1_1.npy", windows)
    (problem,) = validate_dataset(root, progress=False)
    assert str(problem) == (
        f"{root / 'audio_smooth' / '1_1.npy'}: 1 value outside [0, 1] (wav2vec2-ctc29 features are character "
        "posteriors), the first: 1.5 at [1, 2, 3]"
    )
