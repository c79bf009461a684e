"""Condition encoders of DiffTalk: audio (AudioNet + AudioAttNet) and landmarks (LdmNet).

Parameter names match the reference (``encoder_conv``, ``encoder_fc1``, ``attentionConvNet``, ``attentionNet``).
"""

from __future__ import annotations

import torch
from torch import nn

LEAKY_SLOPE = 0.02


class AudioNet(nn.Module):
    """Encodes one window of ``win_size`` feature frames x ``feature_dim`` channels into a ``dim_aud`` vector."""

    def __init__(self, dim_aud: int = 64, win_size: int = 16, feature_dim: int = 29, feature_window: int = 16) -> None:
        super().__init__()
        self.win_size = win_size
        self.feature_window = feature_window
        self.encoder_conv = nn.Sequential(
            nn.Conv1d(feature_dim, 32, 3, stride=2, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE, True),
            nn.Conv1d(32, 32, 3, stride=2, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE, True),
            nn.Conv1d(32, 64, 3, stride=2, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE, True),
            nn.Conv1d(64, 64, 3, stride=2, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE, True),
        )
        self.encoder_fc1 = nn.Sequential(nn.Linear(64, 64), nn.LeakyReLU(LEAKY_SLOPE, True), nn.Linear(64, dim_aud))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, feature_window, feature_dim) -> (N, dim_aud)."""
        centre, half = self.feature_window // 2, self.win_size // 2
        x = x[:, centre - half : centre + half, :].transpose(1, 2)
        x = self.encoder_conv(x)
        return self.encoder_fc1(x.flatten(1))


class AudioAttNet(nn.Module):
    """Attention over ``seq_len`` neighbouring window embeddings (temporal smoothing), scored from the first
    ``dim_aud`` channels."""

    def __init__(self, dim_aud: int = 32, seq_len: int = 8) -> None:
        super().__init__()
        self.dim_aud = dim_aud
        self.seq_len = seq_len
        layers: list[nn.Module] = []
        for c_in, c_out in ((dim_aud, 16), (16, 8), (8, 4), (4, 2), (2, 1)):
            layers += [nn.Conv1d(c_in, c_out, 3, stride=1, padding=1), nn.LeakyReLU(LEAKY_SLOPE, True)]
        self.attentionConvNet = nn.Sequential(*layers)
        self.attentionNet = nn.Sequential(nn.Linear(seq_len, seq_len), nn.Softmax(dim=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, seq_len, D) -> (B, D)."""
        score = self.attentionConvNet(x[..., : self.dim_aud].transpose(1, 2))  # (B, 1, seq_len)
        weights = self.attentionNet(score)
        return torch.matmul(weights, x).squeeze(1)


class LdmNet(nn.Module):
    """MLP over the flattened ``num_points`` x 2 landmark coordinates."""

    def __init__(self, dim_out: int = 64, num_points: int = 39) -> None:
        super().__init__()
        self.encoder_fc1 = nn.Sequential(
            nn.Linear(num_points * 2, 128),
            nn.LeakyReLU(LEAKY_SLOPE, True),
            nn.Linear(128, dim_out),
            nn.LeakyReLU(LEAKY_SLOPE, True),
            nn.Linear(dim_out, dim_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder_fc1(x.reshape(x.shape[0], -1))
