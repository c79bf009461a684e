"""Dataset / DataModule semantics on a small synthetic layout (no video decoding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from talkingface.data.constants import AUDIO_SMOOTH_SHAPE, MODEL_LANDMARK_ROWS, REFERENCE_MIN_DISTANCE
from talkingface.data.datamodule import TalkDataModule
from talkingface.data.dataset import TalkDataset, draw_reference
from talkingface.data.layout import DatasetLayout, write_split
from talkingface.data.masks import inference_mask
from talkingface.data.meta import DatasetMetaError, audio_feature_spec, dataset_meta

SAVED = 128  # saved frame side; the model side is 256, so scaler = 0.5
COUNTS = (150, 70)


def _landmarks(v: int, f: int) -> np.ndarray:
    """Distinct, face-like 68 points: x from row index, y from 20 + row, shifted per frame."""
    rows = np.arange(68, dtype=np.float32)
    return np.stack([10 + rows * 1.5 + 0.01 * f, 20 + rows + 0.1 * v], axis=1)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = DatasetLayout(tmp_path_factory.mktemp("synthetic") / "HDTF")
    data.make_folders()
    rng = np.random.default_rng(0)
    videos = {}
    for v, n in enumerate(COUNTS, 1):
        for f in range(n):
            data.write_frame(v, f, np.full((SAVED, SAVED, 3), (v * 40, f % 256, 128), np.uint8))
            data.write_landmarks(v, f, _landmarks(v, f))
            data.write_audio(v, f, rng.normal(size=AUDIO_SMOOTH_SHAPE).astype(np.float32))
        videos[str(v)] = {"source": f"v{v}.mp4", "frames": n, "status": "done"}
    settings = {"audio_feature": audio_feature_spec("logmel29"), "fps": 25, "image_size": SAVED}
    data.write_meta(dataset_meta(settings, videos))
    data.write_data_txt(COUNTS)
    write_split(data.train_list, [1], COUNTS)
    write_split(data.test_list, [2], COUNTS)
    return data.root


def test_item_keys_shapes_and_ranges(layout: Path) -> None:
    item = TalkDataset(layout, layout.parent / "data_train.txt")[10]
    for key in ("image", "reference_img", "image_mask"):
        assert item[key].shape == (256, 256, 3) and item[key].dtype == np.float32
        assert item[key].min() >= -1 and item[key].max() <= 1
    assert item["landmarks"].shape == (39, 2) and item["landmarks"].dtype == np.float32
    assert item["audio_smooth"].shape == (8, 16, 29) and item["audio_smooth"].dtype == np.float32
    assert item["name"] == "1_11"


def test_landmark_rows_and_scaling(layout: Path) -> None:
    item = TalkDataset(layout, layout.parent / "data_train.txt")[4]  # 1_5
    lm = DatasetLayout(layout).read_landmarks(1, 5)
    expected = np.concatenate([lm[0:4], lm[13:48]]) * (256 / SAVED)
    np.testing.assert_allclose(item["landmarks"], expected, rtol=1e-6)
    assert list(MODEL_LANDMARK_ROWS) == [0, 1, 2, 3] + list(range(13, 48))


def test_training_mask_rows(layout: Path) -> None:
    item = TalkDataset(layout, layout.parent / "data_train.txt")[0]  # 1_1
    lm = DatasetLayout(layout).read_landmarks(1, 1)
    row = int(lm[30, 1] / (SAVED / 256))
    assert 0 < row < 256
    assert np.all(item["image_mask"][row:] == -1.0)  # zeroed -> -1 after scaling
    # above the row: the image, as uint8 (the reference casts image*mask to uint8)
    np.testing.assert_array_equal(item["image_mask"][:row], item["image"][:row])


def test_reference_frame_is_far_and_seeded(layout: Path) -> None:
    ds = TalkDataset(layout, layout.parent / "data_train.txt", seed=3)
    refs = []
    for i in range(0, len(ds), 7):
        item = ds[i]
        v, f = (int(x) for x in item["name"].split("_"))
        rv, rf = (int(x) for x in item["reference_name"].split("_"))
        assert rv == v and abs(rf - f) >= REFERENCE_MIN_DISTANCE and 1 <= rf < COUNTS[0]
        refs.append(rf)
    again = TalkDataset(layout, layout.parent / "data_train.txt", seed=3)
    assert [again.reference_frame(i) for i in range(0, len(ds), 7)] == refs


@pytest.mark.parametrize("count,d", [(150, 60), (200, 60), (130, 60), (20, 5)])
def test_draw_reference_covers_exactly_the_reference_candidates(count: int, d: int) -> None:
    for frame in range(1, count):
        candidates = set(range(1, count)) - set(range(frame - d, frame + d))
        rng = np.random.default_rng(frame)
        drawn = {draw_reference(frame, count, d, rng) for _ in range(400)}
        if candidates:
            assert drawn <= candidates
            if len(candidates) <= 20:
                assert drawn == candidates
        else:  # too short: the farthest frame
            assert drawn == {1 if frame - 1 >= count - 1 - frame else count - 1}


def test_short_video_falls_back_to_farthest(layout: Path) -> None:
    ds = TalkDataset(layout, layout.parent / "data_test.txt")  # video 2 has 70 frames
    item = ds[34]  # 2_35: nothing is 60 frames away inside 1..69
    assert item["reference_name"] in ("2_1", "2_69")


def test_inference_mask_polygon() -> None:
    lm = np.zeros((68, 2), np.float32)
    jaw = np.linspace(np.pi, 2 * np.pi, 17)
    lm[:17] = np.stack([128 + 90 * np.cos(jaw), 140 - 90 * np.sin(jaw)], axis=1)  # chin at the bottom
    lm[33] = (128, 150)
    mask = inference_mask(lm, 64)
    assert mask.shape == (64, 64) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert mask[50, 32] == 0  # mouth/chin region is generated
    assert mask[5, 5] == 1 and mask[10, 32] == 1  # corners and forehead are kept


def test_flat_memory_storage(layout: Path) -> None:
    ds = TalkDataset(layout, layout.parent / "data_train.txt")
    assert ds.videos.dtype == np.int32 and ds.frames.dtype == np.int32 and ds.counts.dtype == np.int32
    assert not any(isinstance(v, list | dict | tuple) and len(v) == len(ds) for v in vars(ds).values())


def test_datamodule_loaders(layout: Path) -> None:
    dm = TalkDataModule(
        layout,
        layout.parent / "data_train.txt",
        layout.parent / "data_test.txt",
        4,
        0,
        seed=1,
        expected_audio_feature="logmel29",
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 256, 256, 3) and batch["image"].dtype == torch.float32
    assert batch["audio_smooth"].shape == (4, 8, 16, 29) and len(batch["name"]) == 4
    assert len(dm.train_dataloader()) == (COUNTS[0] - 1) // 4  # drop_last
    assert len(dm.val_dataloader()) == -(-(COUNTS[1] - 1) // 4)


def test_datamodule_check_fails_early(layout: Path, tmp_path: Path) -> None:
    train, test = layout.parent / "data_train.txt", layout.parent / "data_test.txt"
    with pytest.raises(DatasetMetaError, match="deepspeech29"):
        TalkDataModule(layout, train, test, 2, 0, expected_audio_feature="deepspeech29").setup("fit")
    bad = tmp_path / "bad.txt"
    bad.write_text("1_1\n1_999\n")
    with pytest.raises(DatasetMetaError, match="1_999"):
        TalkDataModule(layout, bad, test, 2, 0).setup("fit")
    with pytest.raises(DatasetMetaError, match="missing"):
        TalkDataModule(layout, tmp_path / "none.txt", test, 2, 0).setup("fit")
    with pytest.raises(DatasetMetaError, match="meta.json"):
        DatasetLayout(tmp_path).read_meta()
    with pytest.raises(DatasetMetaError, match="meta.json"):  # a latent cache folder that is not one
        TalkDataModule(layout, train, test, 2, 0, latent_cache=tmp_path / "x").setup("fit")


@pytest.mark.parametrize("damage", ["truncated_jpeg", "nan_audio"])
def test_a_damaged_file_is_named_by_the_dataset(layout: Path, tmp_path: Path, damage: str) -> None:
    """A truncated JPEG (cv2 decodes it, PIL refuses it) or NaN audio fails the item with the file's name."""
    import shutil

    root = tmp_path / "HDTF"
    shutil.copytree(layout, root)
    data = DatasetLayout(root)
    if damage == "truncated_jpeg":
        path = data.image_path(1, 5)
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path = data.audio_path(1, 5)
        windows = np.load(path)
        windows[0, 0, 0] = np.nan
        np.save(path, windows)
    write_split(tmp_path / "list.txt", [1], {1: 6})
    dataset = TalkDataset(root, tmp_path / "list.txt", reference_min_distance=1)
    assert dataset.videos[4] == 1 and dataset.frames[4] == 5
    with pytest.raises(DatasetMetaError, match=str(path)):
        dataset[4]


def test_shuffle_audio_gives_each_item_another_items_audio(layout: Path) -> None:
    """data.shuffle_audio (the learnability control): a fixed, seeded permutation of the split's audio windows;
    images, landmarks and names stay the item's own."""
    split = layout.parent / "data_train.txt"
    plain = TalkDataset(layout, split, seed=3)
    shuffled = TalkDataset(layout, split, seed=3, shuffle_audio=True)
    again = TalkDataset(layout, split, seed=3, shuffle_audio=True)
    n = len(plain)
    assert sorted(shuffled.audio_source.tolist()) == list(range(n))  # a permutation: same audio statistics
    assert (shuffled.audio_source != np.arange(n)).mean() > 0.9
    assert (shuffled.audio_source == again.audio_source).all()  # seeded
    for i in (0, 7, n - 1):
        a, b = plain[i], shuffled[i]
        assert a["name"] == b["name"] and np.array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(b["audio_smooth"], plain[int(shuffled.audio_source[i])]["audio_smooth"])
