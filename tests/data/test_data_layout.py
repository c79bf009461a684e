"""The dataset layout: every file kind round-trips, keeps its on-disk format, and both writers agree on it."""

from __future__ import annotations

import argparse
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from talkingface.data.constants import AUDIO_SMOOTH_SHAPE
from talkingface.data.layout import (
    FRAME_FILES,
    JPEG_QUALITY,
    DatasetLayout,
    LayoutFileError,
    read_split,
    write_split,
)
from talkingface.data.meta import DatasetMetaError, audio_feature_spec, dataset_meta
from talkingface.data.validate import validate_dataset


def _smooth_image(size: int = 64) -> np.ndarray:
    """A smooth RGB gradient (JPEG keeps it within a few levels) with distinct channels."""
    y, x = np.mgrid[0:size, 0:size] / size
    return (np.stack([x, y, 0.5 * (x + y)], axis=-1) * 200 + 20).astype(np.uint8)


def test_frame_round_trip_is_rgb_at_the_layout_quality(tmp_path: Path) -> None:
    layout = DatasetLayout(tmp_path / "HDTF")
    layout.make_folders()
    image = _smooth_image()
    path = layout.write_frame(3, 7, image)
    assert path == tmp_path / "HDTF" / "images" / "3_7.jpg"
    back = layout.read_frame(3, 7)
    assert back.shape == image.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - image).max() <= 4  # channels not swapped: they differ by far more
    resized, width = layout.read_frame_resized(3, 7, 32)
    assert resized.shape == (32, 32, 3) and width == 64
    assert _jpeg_tables(path) == _jpeg_tables(_reference_jpeg(tmp_path, JPEG_QUALITY))
    assert _jpeg_tables(path) != _jpeg_tables(_reference_jpeg(tmp_path, 75))


def test_landmarks_round_trip_in_the_text_format(tmp_path: Path) -> None:
    layout = DatasetLayout(tmp_path)
    layout.make_folders()
    lms = np.random.default_rng(0).uniform(0, 512, (68, 2)).astype(np.float32)
    path = layout.write_landmarks(1, 0, lms)
    lines = path.read_text().splitlines()
    assert len(lines) == 68 and lines[0] == f"{lms[0, 0]:.3f} {lms[0, 1]:.3f}"
    back = layout.read_landmarks(1, 0)
    assert back.dtype == np.float32 and back.shape == (68, 2)
    np.testing.assert_allclose(back, lms, atol=5e-4)
    with pytest.raises(ValueError, match="68"):
        layout.write_landmarks(1, 1, lms[:67])
    path.write_text("1 2\n" * 67)
    with pytest.raises(LayoutFileError, match="expected 68 rows") as err:
        layout.read_landmarks(1, 0)
    assert err.value.path == path


def test_audio_round_trip_and_dtype(tmp_path: Path) -> None:
    layout = DatasetLayout(tmp_path)
    layout.make_folders()
    windows = np.random.default_rng(1).normal(size=AUDIO_SMOOTH_SHAPE).astype(np.float32)
    assert layout.write_audio(2, 5, windows) == tmp_path / "audio_smooth" / "2_5.npy"
    np.testing.assert_array_equal(layout.read_audio(2, 5), windows)
    with pytest.raises(ValueError, match="float32"):
        layout.write_audio(2, 6, windows.astype(np.float64))
    np.save(layout.audio_path(2, 6), windows.astype(np.float64))  # a file written around the layout
    with pytest.raises(LayoutFileError, match="expected float32"):
        layout.read_audio(2, 6)


def test_data_txt_meta_and_splits_round_trip(tmp_path: Path) -> None:
    layout = DatasetLayout(tmp_path / "HDTF")
    layout.write_data_txt([5, 0, 3])
    assert layout.data_txt_path.read_text() == "1 5\n2 0\n3 3\n"
    assert layout.read_data_txt() == [5, 0, 3]
    layout.data_txt_path.write_text("2 5\n")
    with pytest.raises(DatasetMetaError, match="1..K in order"):
        layout.read_data_txt()

    with pytest.raises(DatasetMetaError, match="meta.json: missing"):
        layout.read_meta()
    assert layout.read_meta_if_any() == {}
    settings = {"fps": 25, "image_size": 64, "audio_feature": audio_feature_spec("logmel29")}
    meta = dataset_meta(settings, {"1": {"source": "a.mp4", "status": "done", "frames": 5}})
    layout.write_meta(meta)
    assert layout.read_meta() == meta
    layout.write_meta({**meta, "audio_feature": {"dim": 29}})
    with pytest.raises(DatasetMetaError, match="'kind'"):
        layout.read_meta()

    assert layout.train_list == tmp_path / "data_train.txt"  # split lists sit next to the root by default
    write_split(layout.train_list, [1, 3], [5, 0, 3])
    assert layout.train_list.read_text() == "1_1\n1_2\n1_3\n1_4\n3_1\n3_2\n"  # frame 0 is never listed
    videos, frames = read_split(layout.train_list)
    assert videos.tolist() == [1, 1, 1, 1, 3, 3] and frames.tolist() == [1, 2, 3, 4, 1, 2]
    assert videos.dtype == np.int32
    layout.train_list.write_text("1_1\nx_2\n")
    with pytest.raises(DatasetMetaError, match=":2:"):
        read_split(layout.train_list)


def test_files_are_byte_identical_to_the_writers_before_the_layout(tmp_path: Path) -> None:
    """Datasets written before the layout module existed keep loading: same bytes for the same content."""
    import cv2

    layout = DatasetLayout(tmp_path / "new")
    layout.make_folders()
    image = _smooth_image()
    lms = np.random.default_rng(2).uniform(0, 64, (68, 2)).astype(np.float32)
    windows = np.random.default_rng(3).normal(size=AUDIO_SMOOTH_SHAPE).astype(np.float32)
    old = tmp_path / "old"
    old.mkdir()
    cv2.imwrite(str(old / "1_0.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    np.savetxt(old / "1_0.lms", lms, fmt="%.3f")
    np.save(old / "1_0.npy", windows)
    assert layout.write_frame(1, 0, image).read_bytes() == (old / "1_0.jpg").read_bytes()
    assert layout.write_landmarks(1, 0, lms).read_bytes() == (old / "1_0.lms").read_bytes()
    assert layout.write_audio(1, 0, windows).read_bytes() == (old / "1_0.npy").read_bytes()


@pytest.mark.slow
def test_synthetic_and_preprocessed_datasets_share_one_format(built: Path, tmp_path: Path) -> None:
    """The synthetic generator writes what the preprocessing writes: JPEG quality, landmark text, audio dtype,
    data.txt, meta.json keys and split lists; the layout reads both, and validation passes on both."""
    from talkingface.synthetic.write_set import generate

    args = argparse.Namespace(
        out=tmp_path / "syn", identities=3, seconds=0.6, seed=0, layout=True, no_videos=True, size=64,
        frame_size=96, test_identities=1, no_progress=True, audio_features="mel", whisper_model=None,
        wav2vec2_model=None,
    )  # fmt: skip
    generate(args)
    syn, pre = DatasetLayout(tmp_path / "syn" / "dataset"), DatasetLayout(built)
    assert validate_dataset(syn.root, progress=False) == []
    assert validate_dataset(pre.root, progress=False) == []
    assert _jpeg_tables(syn.image_path(1, 0)) == _jpeg_tables(pre.image_path(1, 0))
    for layout in (syn, pre):
        assert _jpeg_tables(layout.image_path(1, 1)) == _jpeg_tables(_reference_jpeg(tmp_path, JPEG_QUALITY))
        lines = layout.landmarks_path(1, 0).read_text().splitlines()
        assert len(lines) == 68 and all(_is_landmark_line(line) for line in lines)
        assert layout.read_landmarks(1, 0).shape == (68, 2)
        assert layout.read_audio(1, 0).dtype == np.float32
        counts = layout.read_data_txt()
        assert layout.data_txt_path.read_text() == "".join(f"{v} {n}\n" for v, n in enumerate(counts, 1))
        meta = layout.read_meta()
        assert {"version", "fps", "image_size", "audio_feature", "frame_numbering", "videos"} <= set(meta)
        assert meta["audio_feature"] == audio_feature_spec("logmel29")
        for split in (layout.train_list, layout.test_list):
            videos, frames = read_split(split)
            assert len(frames) and frames.min() == 1  # frame 0 stored, never listed
        for kind in FRAME_FILES:
            assert layout.path(kind, 1, 0).is_file()
    assert syn.read_meta()["frame_numbering"] == pre.read_meta()["frame_numbering"]


def _is_landmark_line(line: str) -> bool:
    """``"x y"`` with three decimals each (``numpy.savetxt`` with ``%.3f``)."""
    return re.fullmatch(r"-?\d+\.\d{3} -?\d+\.\d{3}", line) is not None


def _reference_jpeg(tmp_path: Path, quality: int) -> Path:
    """A JPEG written by OpenCV at ``quality`` (the tables depend only on the quality)."""
    import cv2

    path = tmp_path / f"reference_q{quality}.jpg"
    cv2.imwrite(str(path), _smooth_image(), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return path


def _jpeg_tables(path: Path) -> dict[int, list[int]]:
    """The quantization tables of a JPEG: they fix its quality setting."""
    with Image.open(path) as image:
        return {k: list(v) for k, v in image.quantization.items()}


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """meta.json, data.txt, split lists and done markers were 0600 (tempfile); they follow the umask, as images do."""
    from talkingface.data.layout import write_json

    old = os.umask(umask)
    try:
        data = DatasetLayout(tmp_path / "HDTF")
        data.make_folders()
        data.write_frame(1, 0, np.zeros((8, 8, 3), np.uint8))
        data.write_data_txt([1])
        write_split(data.train_list, [1], [1])
        write_json(tmp_path / "HDTF" / ".done" / "1.json", {"frames": 1})
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE(data.image_path(1, 0).stat().st_mode) == expected
    for path in (data.data_txt_path, data.train_list, tmp_path / "HDTF" / ".done" / "1.json"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert sorted(p.name for p in (tmp_path / "HDTF").iterdir()) == [
        ".done",
        "audio_smooth",
        "data.txt",
        "images",
        "landmarks",
    ]
