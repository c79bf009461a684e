"""Masks of the reference loaders: the training half-face mask and the inference jaw polygon mask."""

from __future__ import annotations

import numpy as np

from talkingface.constants import INFERENCE_MASK_ROWS, LATENT_SIZE, MODEL_IMAGE_SIZE, TRAIN_MASK_LANDMARK


def training_mask(landmarks68: np.ndarray, scaler: float, size: int = MODEL_IMAGE_SIZE) -> np.ndarray:
    """``(size, size, 1)`` float mask: 1 above landmark 30 (nose tip), 0 from its row down.

    ``landmarks68`` are in saved-frame pixels, ``size`` is the model's image side and ``scaler = saved side / size``
    (reference: ``mask[int(lm[30, 1] / scaler):, :] = 0``). The row is clamped at 0 (the reference would wrap
    around).
    """
    mask = np.ones((size, size, 1), dtype=np.float64)
    row = max(int(landmarks68[TRAIN_MASK_LANDMARK, 1] / scaler), 0)
    mask[row:] = 0.0
    return mask


def inference_mask(landmarks68: np.ndarray, size: int = LATENT_SIZE, canvas: int = MODEL_IMAGE_SIZE) -> np.ndarray:
    """``(size, size)`` float32: 0 inside the polygon of jaw points 2..14 and nose bottom 33 (generated), 1 outside.

    As in ``talk_data_ref_smooth_inference.py``: the polygon (integer vertices of ``landmarks68``, in pixels of the
    ``canvas``-sided crop) is filled on a ``canvas`` image, then resized to the latent side ``size`` with PIL bicubic
    (values stay 0/1). The pipeline draws at the crop side and resizes to the model's latent side, whatever the
    model's image side (64 x 64 for both the 256 and the 512 DiffTalk).
    """
    import cv2
    from PIL import Image

    points = np.asarray(landmarks68)[list(INFERENCE_MASK_ROWS)].astype(np.int32)
    full = np.ones((canvas, canvas), dtype=np.float64)
    full = cv2.fillPoly(full, pts=[points], color=0)
    full = (full > 0).astype(np.uint8)
    small = Image.fromarray(full).resize((size, size), resample=Image.BICUBIC)
    return np.asarray(small).astype(np.float32)
