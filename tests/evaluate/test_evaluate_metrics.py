"""PSNR / SSIM / LMD: known values on synthetic inputs and agreement with scikit-image and torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from talkingface.evaluate.landmarks import lmd, lmd_frame, mouth_opening
from talkingface.evaluate.metrics import batch_metrics
from talkingface.metrics.image import psnr, psnr_image, ssim, ssim_image
from talkingface.metrics.regions import mouth_box, points_box


def _pair(rng: np.random.Generator, shape: tuple[int, ...], noise: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish uint8 image and a noisy copy (so SSIM is neither ~0 nor ~1)."""
    base = rng.integers(0, 256, size=shape).astype(np.float64)
    base = (base + np.roll(base, 1, 0) + np.roll(base, 1, 1)) / 3
    gt = base.astype(np.uint8)
    pred = np.clip(base + rng.normal(0, noise, size=shape), 0, 255).astype(np.uint8)
    return pred, gt


def _sk_ssim(pred: np.ndarray, gt: np.ndarray, data_range: float) -> float:
    return structural_similarity(
        pred,
        gt,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
        data_range=data_range,
    )


def test_identical_frames_give_inf_psnr_and_unit_ssim() -> None:
    img = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    assert psnr_image(img, img) == math.inf
    assert ssim_image(img, img) == pytest.approx(1.0, abs=1e-12)
    t = torch.rand(2, 3, 32, 32) * 2 - 1
    out = batch_metrics(t, t.clone())
    assert out["psnr"] == math.inf and out["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_psnr_known_value() -> None:
    gt = np.full((16, 16, 3), 100, np.uint8)
    pred = gt + np.uint8(5)  # MSE 25 -> 10 log10(255^2 / 25)
    assert psnr_image(pred, gt) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)


@pytest.mark.parametrize("shape", [(64, 64, 3), (37, 51, 3), (11, 11, 3), (96, 80, 1)])
@pytest.mark.parametrize("noise", [4.0, 30.0])
def test_uint8_matches_skimage(shape: tuple[int, ...], noise: float) -> None:
    pred, gt = _pair(np.random.default_rng(1), shape, noise)
    assert psnr_image(pred, gt) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=255), abs=1e-4)
    assert ssim_image(pred, gt) == pytest.approx(_sk_ssim(pred, gt, 255), abs=1e-4)


def test_float_images_use_unit_range_and_match_skimage() -> None:
    pred, gt = _pair(np.random.default_rng(2), (48, 40, 3), 12.0)
    pf, gf = pred / 255.0, gt / 255.0
    assert ssim_image(pf, gf) == pytest.approx(_sk_ssim(pf, gf, 1.0), abs=1e-4)
    assert psnr_image(pf, gf) == pytest.approx(peak_signal_noise_ratio(gf, pf, data_range=1.0), abs=1e-4)


def test_batch_matches_torchmetrics_psnr_and_skimage_ssim() -> None:
    from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr

    rng = np.random.default_rng(3)
    pairs = [_pair(rng, (64, 64, 3), 10.0) for _ in range(3)]
    pred = torch.tensor(np.stack([p for p, _ in pairs]), dtype=torch.float64).permute(0, 3, 1, 2) / 255
    gt = torch.tensor(np.stack([g for _, g in pairs]), dtype=torch.float64).permute(0, 3, 1, 2) / 255
    ours = psnr(pred, gt)
    for i in range(3):
        ref = tm_psnr(pred[i : i + 1], gt[i : i + 1], data_range=1.0)
        assert float(ours[i]) == pytest.approx(float(ref), abs=1e-4)
        sk = _sk_ssim(pairs[i][0] / 255.0, pairs[i][1] / 255.0, 1.0)
        assert float(ssim(pred, gt)[i]) == pytest.approx(sk, abs=1e-4)
    # batch_metrics takes [-1, 1] float32 tensors and reports the [0, 1]-range means
    out = batch_metrics(pred.float() * 2 - 1, gt.float() * 2 - 1)
    assert out["psnr"] == pytest.approx(float(ours.mean()), abs=1e-3)
    assert out["ssim"] == pytest.approx(float(ssim(pred, gt).mean()), abs=1e-4)


def _face_landmarks(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    lms = rng.uniform(0.2 * size, 0.8 * size, size=(68, 2))
    lms[36], lms[45] = (0.3 * size, 0.35 * size), (0.7 * size, 0.35 * size)
    lms[48:68] = rng.uniform((0.35 * size, 0.6 * size), (0.65 * size, 0.8 * size), size=(20, 2))
    return lms


def test_batch_metrics_mouth_and_region() -> None:
    rng = np.random.default_rng(4)
    gt = torch.rand(2, 3, 64, 64) * 2 - 1
    pred = gt.clone()
    pred[:, :, :8] = -gt[:, :, :8]  # damage only the top rows: far from the mouth
    lms = torch.tensor(np.stack([_face_landmarks(rng) for _ in range(2)]))
    region = torch.zeros(2, 1, 64, 64)
    region[:, :, 40:] = 1
    out = batch_metrics(pred, gt, landmarks=lms, region=region)
    assert set(out) == {"psnr", "ssim", "mouth_psnr", "mouth_ssim", "region_psnr", "region_ssim"}
    assert out["mouth_psnr"] == math.inf and out["region_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert out["psnr"] < 30
    with pytest.raises(ValueError, match="landmarks must be"):
        batch_metrics(pred, gt, landmarks=lms[:, :39])


def test_lmd_known_shift() -> None:
    gt = _face_landmarks(np.random.default_rng(5))
    pred = gt.copy()
    pred[48:68] += (3.0, 4.0)  # every mouth point moves by 5 px
    pred[:48] += 50.0  # points outside the mouth do not count
    assert lmd_frame(pred, gt) == pytest.approx(5.0)
    per = lmd([pred, gt, None], [gt, gt, gt])
    assert per[0] == pytest.approx(5.0) and per[1] == 0.0 and math.isnan(per[2])
    assert np.nanmean(per) == pytest.approx(2.5)


def test_mouth_opening_is_normalised_by_eye_distance() -> None:
    lms = np.zeros((68, 2))
    lms[36], lms[45] = (10, 20), (50, 20)  # 40 px apart
    lms[62], lms[66] = (30, 40), (30, 50)  # 10 px apart
    assert mouth_opening(lms) == pytest.approx(0.25)
    assert math.isnan(mouth_opening(None))


def test_boxes_are_clipped_and_at_least_one_ssim_window() -> None:
    pts = np.array([[1.0, 1.0], [3.0, 2.0]])
    x0, y0, x1, y1 = points_box(pts, (100, 80), margin=0.0)
    assert (x0, y0) == (0, 0) and x1 - x0 >= 11 and y1 - y0 >= 11
    lms = _face_landmarks(np.random.default_rng(6))
    x0, y0, x1, y1 = mouth_box(lms, (64, 64))
    mouth = lms[48:68]
    assert x0 <= mouth[:, 0].min() and x1 > mouth[:, 0].max() and y0 <= mouth[:, 1].min() and y1 > mouth[:, 1].max()
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
