"""Model inputs of one frame, as the reference inference loader (``talk_data_ref_smooth_inference.py``) builds them.

From a saved-resolution crop ``(S, S)`` and its 68 landmarks (crop pixels):

* ``image``: the crop resized to the model's side ``R`` (``model.first_stage.resolution``: 256 for the paper's
  model, 512 for talking-512.yaml's) with PIL bicubic; its first-stage latent is ``x0``, the kept region;
* ``masked``: ``image`` with every row from landmark **33** (nose bottom) down set to black (the training loader
  uses landmark 30; the inference loader 33);
* ``landmarks``: rows 0-3 and 13-47 divided by ``S / R`` (pixels of the ``R x R`` model image);
* ``mask``: 0 inside the polygon of jaw points 2..14 and landmark 33 drawn at ``S x S``, resized to the latent side
  (64 x 64 for both; 1 = keep ``x0``, 0 = generate).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from talkingface.constants import LATENT_SIZE, MODEL_IMAGE_SIZE, MODEL_LANDMARK_ROWS, NOSE_BOTTOM
from talkingface.data.masks import inference_mask

#: Landmark whose row starts the blacked-out lower face of the masked image at inference.
INFERENCE_MASKED_IMAGE_LANDMARK = NOSE_BOTTOM


@dataclass
class FrameInputs:
    """Inputs of a batch of ``B`` frames (numpy, channels last for images)."""

    image: np.ndarray  # (B, R, R, 3) uint8, R: the model's image side
    masked: np.ndarray  # (B, R, R, 3) uint8
    landmarks: np.ndarray  # (B, 39, 2) float32, R-pixel units
    mask: np.ndarray  # (B, h, h) float32, 1 = keep (h: the latent side)

    @staticmethod
    def stack(items: list[FrameInputs]) -> FrameInputs:
        return FrameInputs(*(np.concatenate([getattr(i, f.name) for i in items]) for f in fields(FrameInputs)))

    def take(self, rows: np.ndarray) -> FrameInputs:
        return FrameInputs(*(getattr(self, f.name)[rows] for f in fields(self)))

    def pinned(self) -> FrameInputs:
        """The arrays as page-locked CPU tensors (host-to-device copies can then overlap the GPU's work)."""
        return FrameInputs(
            *(
                torch.from_numpy(np.require(getattr(self, f.name), requirements=["C", "W"])).pin_memory()
                for f in fields(self)
            )
        )

    def to(self, device: torch.device) -> FrameInputs:
        """The arrays as tensors on ``device`` (uint8 images stay uint8: they become floats there)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, torch.Tensor):
                value = torch.from_numpy(np.require(value, requirements=["C", "W"]))
            out.append(value.to(device, non_blocking=True))
        return FrameInputs(*out)


def resize_bicubic(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB resized to ``size x size`` with PIL bicubic (the reference loader's resampling)."""
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), resample=Image.BICUBIC), dtype=np.uint8)


def masked_image(image: np.ndarray, landmarks68: np.ndarray, scaler: float) -> np.ndarray:
    """``image`` (model-side pixels) with rows from ``int(landmark 33 y / scaler)`` down zeroed (clamped at row 0)."""
    row = max(int(landmarks68[INFERENCE_MASKED_IMAGE_LANDMARK, 1] / scaler), 0)
    out = image.copy()
    out[row:] = 0
    return out


def frame_inputs(
    crop: np.ndarray, landmarks68: np.ndarray, size: int = MODEL_IMAGE_SIZE, latent_size: int = LATENT_SIZE
) -> FrameInputs:
    """Inputs of one frame from its ``(S, S, 3)`` uint8 crop and ``(68, 2)`` landmarks in crop pixels.

    ``size`` / ``latent_size``: the model's image and latent sides (256 / 64 for the paper's DiffTalk, 512 / 64 for
    talking-512.yaml's; smaller models, e.g. the synthetic demo model, use their first stage's resolution and latent
    size)."""
    side = crop.shape[1]  # the reference's "h" is PIL's width; crops are square
    scaler = side / size
    image = resize_bicubic(crop, size)
    return FrameInputs(
        image=image[None],
        masked=masked_image(image, landmarks68, scaler)[None],
        landmarks=(landmarks68[list(MODEL_LANDMARK_ROWS)] / scaler).astype(np.float32)[None],
        mask=inference_mask(landmarks68, size=latent_size, canvas=side)[None],
    )


#: ``x / 127.5 - 1`` of every uint8 value, computed as :func:`to_unit` always has (float64, then float32): indexing
#: it gives bit for bit the same values, with no float64 image in between.
UNIT_TABLE = (np.arange(256) / 127.5 - 1.0).astype(np.float32)


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 ``(B, H, W, 3)`` -> float32 ``(B, 3, H, W)`` in [-1, 1] (the loader's ``x / 127.5 - 1``)."""
    return np.ascontiguousarray(UNIT_TABLE[images].transpose(0, 3, 1, 2))


_UNIT_TABLES: dict[torch.device, torch.Tensor] = {}


def to_unit_tensor(images: torch.Tensor) -> torch.Tensor:
    """:func:`to_unit` on a uint8 ``(B, H, W, 3)`` tensor, on its device (a quarter of the bytes cross to a GPU):
    float32 ``(B, 3, H, W)``, the same values bit for bit."""
    table = _UNIT_TABLES.get(images.device)
    if table is None:
        table = _UNIT_TABLES[images.device] = torch.from_numpy(UNIT_TABLE).to(images.device)
    return table[images.long()].permute(0, 3, 1, 2).contiguous()
