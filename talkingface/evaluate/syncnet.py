"""SyncNet lip-sync scores LSE-C / LSE-D (Chung & Zisserman 2016), as Wav2Lip computes them.

The network is ``SyncNetModel.S`` of joonson/syncnet_python (the ``syncnet_v2.model`` weights used by
Wav2Lip's ``evaluation/`` scripts), with the same parameter names so that file loads strictly. The scoring
follows ``SyncNetInstance.evaluate``: 5-frame windows of 224x224 BGR face crops in ``[0, 255]`` (C, T, H, W),
MFCCs (python_speech_features defaults, 16 kHz int16-scaled audio, 100 Hz) in 20-step windows (4 per video
frame), Euclidean distances between video and audio embeddings for offsets ``-vshift..vshift``, averaged
over the clip: LSE-D is the minimum of that mean distance, LSE-C the median minus the minimum, the AV
offset ``vshift - argmin``.

A TorchScript file works too if it has methods ``forward_lip((B, 3, 5, 224, 224)) -> (B, D)`` and
``forward_aud((B, 1, 13, 20)) -> (B, D)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from talkingface.evaluate.errors import EvaluationError

log = logging.getLogger(__name__)

CROP_SIZE = 224
WINDOW = 5  # video frames per SyncNet sample
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
DEFAULT_VSHIFT = 15
#: syncnet_python's crop: box scale 0.4 around the face, padding value 110.
CROP_SCALE = 0.4
PAD_VALUE = 110


def _bn_relu2(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU()]


def _bn_relu3(c: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(c), nn.ReLU()]


class SyncNet(nn.Module):
    """``SyncNetModel.S`` (parameter names ``netcnnaud.*``, ``netfcaud.*``, ``netcnnlip.*``, ``netfclip.*``)."""

    def __init__(self, embedding: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, 3, 1, 1), *_bn_relu2(64), nn.MaxPool2d(1, 1),
            nn.Conv2d(64, 192, 3, 1, 1), *_bn_relu2(192), nn.MaxPool2d(3, (1, 2)),
            nn.Conv2d(192, 384, 3, padding=1), *_bn_relu2(384),
            nn.Conv2d(384, 256, 3, padding=1), *_bn_relu2(256),
            nn.Conv2d(256, 256, 3, padding=1), *_bn_relu2(256), nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 512, (5, 4)), *_bn_relu2(512),
        )  # fmt: skip
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), *_bn_relu3(96), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), *_bn_relu3(256),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), *_bn_relu3(256),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), *_bn_relu3(256),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), *_bn_relu3(256), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(256, 512, (1, 6, 6)), *_bn_relu3(512),
        )  # fmt: skip

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 13, 20)`` MFCC windows -> ``(B, embedding)``."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 5, 224, 224)`` BGR crops in ``[0, 255]`` -> ``(B, embedding)``."""
        return self.netfclip(self.netcnnlip(x).flatten(1))


def load_syncnet(path: str | Path, device: str = "cpu") -> nn.Module:
    """Load ``syncnet_v2.model`` (a state dict, strictly) or a TorchScript SyncNet; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(path, "SyncNet weights not found (--syncnet expects syncnet_v2.model)")
    if _is_torchscript(path):
        try:
            scripted = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as e:
            raise EvaluationError(path, f"cannot load as TorchScript ({e})") from e
        absent = [m for m in ("forward_lip", "forward_aud") if not hasattr(scripted, m)]
        if absent:
            raise EvaluationError(path, f"TorchScript SyncNet lacks {absent} (export them with @torch.jit.export)")
        return scripted
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem: name the file
        raise EvaluationError(path, f"cannot be read as a SyncNet state dict ({e})") from e
    if not isinstance(state, dict):
        raise EvaluationError(path, f"expected a SyncNet state dict, got {type(state).__name__}")
    model = SyncNet()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise EvaluationError(
            path, f"does not fit SyncNetModel.S: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"mis-shaped {wrong[:5]}"
        )  # fmt: skip
    model.load_state_dict(state)
    return model.to(device).eval()


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding ``constants.pkl`` (plain ``torch.save`` zips do not)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("constants.pkl") for name in z.namelist())


def mfcc(signal: np.ndarray, rate: int = 16000) -> np.ndarray:
    """``python_speech_features.mfcc`` with its defaults: ``(frames, 13)``, 25 ms windows every 10 ms,
    pre-emphasis 0.97, 26 mel filters over a 512-point FFT, lifter 22, c0 replaced by the log frame energy."""
    from scipy.fft import dct

    sig = np.asarray(signal, dtype=np.float64)
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])
    flen, fstep, nfft = int(round(0.025 * rate)), int(round(0.01 * rate)), 512
    n = 1 if len(sig) <= flen else 1 + math.ceil((len(sig) - flen) / fstep)
    sig = np.concatenate([sig, np.zeros((n - 1) * fstep + flen - len(sig))])
    idx = np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]
    pspec = np.abs(np.fft.rfft(sig[idx], nfft)) ** 2 / nfft
    energy = pspec.sum(axis=1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    feat = pspec @ mel_filterbank(26, nfft, rate).T
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    ceps = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    ceps *= 1 + 11.0 * np.sin(np.pi * np.arange(13) / 22)
    ceps[:, 0] = np.log(energy)
    return ceps


def mel_filterbank(nfilt: int, nfft: int, rate: int) -> np.ndarray:
    """Triangular mel filters ``(nfilt, nfft // 2 + 1)`` exactly as python_speech_features builds them."""
    mel = np.linspace(0, 2595 * np.log10(1 + (rate / 2) / 700.0), nfilt + 2)
    bins = np.floor((nfft + 1) * (700 * (10 ** (mel / 2595.0) - 1)) / rate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fb


def syncnet_crop(frame: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """syncnet_python's face crop around a face box ``(x0, y0, x1, y1)`` (full frame when None), as 224x224 BGR.

    As ``run_pipeline.crop_video``: half-size ``bs = max(w, h) / 2``, rows ``my - bs .. my + bs (1 + 2 cs)``,
    columns ``mx -+ bs (1 + cs)`` with ``cs = 0.4``, padding with 110 outside the frame.
    """
    import cv2

    if box is not None:
        x0, y0, x1, y1 = box
        bs = max(x1 - x0, y1 - y0) / 2
        my, mx = (y0 + y1) / 2, (x0 + x1) / 2
        bsi = int(bs * (1 + 2 * CROP_SCALE))
        padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), constant_values=PAD_VALUE)
        my, mx = my + bsi, mx + bsi
        frame = padded[int(my - bs) : int(my + bs * (1 + 2 * CROP_SCALE)),
                       int(mx - bs * (1 + CROP_SCALE)) : int(mx + bs * (1 + CROP_SCALE))]  # fmt: skip
    return cv2.resize(frame, (CROP_SIZE, CROP_SIZE))[..., ::-1]


@dataclass
class LSEResult:
    offset: int  # AV offset in frames (vshift - argmin)
    confidence: float  # LSE-C
    min_distance: float  # LSE-D
    mean_distances: np.ndarray  # (2 vshift + 1,) mean distance per offset


def lse_scores(video_emb: torch.Tensor, audio_emb: torch.Tensor, vshift: int = DEFAULT_VSHIFT) -> LSEResult:
    """LSE-C / LSE-D from per-window embeddings ``(N, D)`` (``calc_pdist`` then mean, min, median)."""
    win = 2 * vshift + 1
    padded = torch.nn.functional.pad(audio_emb, (0, 0, vshift, vshift))
    dists = torch.stack([
        torch.nn.functional.pairwise_distance(video_emb[[i]].repeat(win, 1), padded[i : i + win])
        for i in range(len(video_emb))
    ], dim=1)  # fmt: skip
    mdist = dists.mean(dim=1)
    minval, minidx = torch.min(mdist, 0)
    return LSEResult(vshift - int(minidx), float(torch.median(mdist) - minval), float(minval), mdist.numpy())


@torch.no_grad()
def lse_from_crops(
    crops: Sequence[np.ndarray],
    samples: np.ndarray,
    model: nn.Module,
    device: str = "cpu",
    vshift: int = DEFAULT_VSHIFT,
    batch: int = 20,
) -> LSEResult:
    """Score 224x224 BGR crops (25 fps) against 16 kHz int16-scaled mono ``samples``."""
    cc = torch.from_numpy(mfcc(samples).T.copy()).float()[None, None]  # (1, 1, 13, M)
    n = min(len(crops), math.floor(len(samples) / SAMPLES_PER_FRAME))
    last = n - WINDOW
    if last < 1:
        raise ValueError(f"LSE needs more than {WINDOW} frames with audio, got {n}")
    video = torch.from_numpy(np.stack(crops[:n]).astype(np.float32)).permute(3, 0, 1, 2)[None]  # (1, 3, T, H, W)
    vfeat, afeat = [], []
    for i in range(0, last, batch):
        frames = range(i, min(last, i + batch))
        vin = torch.cat([video[:, :, f : f + WINDOW] for f in frames]).to(device)
        ain = torch.cat([cc[..., f * MFCC_PER_FRAME : f * MFCC_PER_FRAME + 20] for f in frames]).to(device)
        vfeat.append(model.forward_lip(vin).cpu())
        afeat.append(model.forward_aud(ain).cpu())
    return lse_scores(torch.cat(vfeat), torch.cat(afeat), vshift)


def lse_from_frames(
    crops: Sequence[np.ndarray],
    audio: str | Path,
    weights: str | Path,
    device: str = "cpu",
    vshift: int = DEFAULT_VSHIFT,
) -> LSEResult:
    """LSE of 224x224 BGR SyncNet crops (see ``syncnet_crop``) against the speech in ``audio`` (any container)."""
    from talkingface.media.decode import load_audio

    model = load_syncnet(weights, device)
    try:
        speech = load_audio(audio, 16000)
    except Exception as e:  # noqa: BLE001 - name the file, whatever the decoder raised
        raise EvaluationError(audio, f"cannot read the speech for LSE ({e})") from e
    samples = np.round(np.clip(speech.samples, -1, 1) * 32767.0)  # what scipy's wavfile.read gives for pcm_s16le
    return lse_from_crops(crops, samples, model, device, vshift)
