"""The conditions of DiffTalk, by name, and the one place where their order (which the weights depend on)
is defined."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class DiffTalkConditions:
    """Encoded conditions for a batch.

    audio: (B, audio_dim) smoothed audio embedding.  landmarks: (B, landmark_dim) landmark embedding.
    reference: (B, C, h, w) latent of the reference image.  masked: (B, C, h, w) latent of the masked target.
    """

    audio: torch.Tensor
    landmarks: torch.Tensor
    reference: torch.Tensor
    masked: torch.Tensor

    def context(self) -> torch.Tensor:
        """Cross-attention context: one token, concat(audio, landmarks) -> (B, 1, audio_dim + landmark_dim)."""
        return torch.cat([self.audio, self.landmarks], dim=1).unsqueeze(1)

    def concat(self, x: torch.Tensor) -> torch.Tensor:
        """UNet input: concat(noisy latent, masked-image latent, reference latent) along channels."""
        return torch.cat([x, self.masked, self.reference], dim=1)

    @property
    def batch_size(self) -> int:
        return self.audio.shape[0]

    def to(self, *args, **kwargs) -> DiffTalkConditions:
        return DiffTalkConditions(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def __getitem__(self, index: slice | torch.Tensor) -> DiffTalkConditions:
        return DiffTalkConditions(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def cat(items: list[DiffTalkConditions]) -> DiffTalkConditions:
        return DiffTalkConditions(
            **{f.name: torch.cat([getattr(c, f.name) for c in items], dim=0) for f in fields(DiffTalkConditions)}
        )
