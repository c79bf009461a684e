"""LPIPS v0.1 (Zhang et al. 2018) in plain torch, loading published weight files from paths.

Same computation as ``lpips.LPIPS(net=..., version="0.1")``: inputs in ``[-1, 1]`` are shifted and scaled
(``ScalingLayer``), five ReLU outputs of the backbone are unit-normalised over channels, their squared
differences weighted by the 1x1 ``lin0..lin4`` convolutions, averaged spatially and summed.

Weight files (never downloaded):

- backbone: torchvision's ImageNet state dict, ``alexnet-owt-7be5be79.pth`` or ``vgg16-397923af.pth``
  (keys ``features.N.weight``/``bias``; ``classifier.*`` is ignored). A state dict of the ``lpips`` package
  itself (keys ``net.sliceK.N.*`` with N the ``features`` index, ``linK.model.1.weight``) is accepted too.
- linear layers: ``lpips/weights/v0.1/alex.pth`` or ``vgg.pth`` from the PerceptualSimilarity repository
  (keys ``linK.model.1.weight``, shape ``(1, C, 1, 1)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from talkingface.evaluate.errors import EvaluationError

#: Backbone layers as torchvision builds ``features``: ints are 3x3/5x5/11x11 convs (out channels), "M" max-pool.
_ALEX = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool",), ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool",),
         ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",),
         ("conv", 256, 256, 3, 1, 1), ("relu",)]  # fmt: skip
_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
#: Index (in ``features``) of the ReLU after which each LPIPS feature is taken (lpips' ``sliceK`` ends).
TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def _alex_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    for spec in _ALEX:
        if spec[0] == "conv":
            _, cin, cout, k, s, p = spec
            layers.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
        elif spec[0] == "relu":
            layers.append(nn.ReLU())
        else:
            layers.append(nn.MaxPool2d(3, 2))
    return nn.Sequential(*layers)


def _vgg_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers)


class _Linear(nn.Module):
    """``NetLinLayer``: dropout (identity in eval) then a bias-free 1x1 conv to one channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _load(path: str | Path, option: str, what: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(path, f"{what} not found (give it with {option})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem: name the file
        raise EvaluationError(path, f"cannot be read as a torch state dict ({e})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EvaluationError(path, f"expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


class LPIPS(nn.Module):
    """LPIPS distance with an AlexNet (``net="alex"``) or VGG16 (``net="vgg"``) backbone."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in TAPS:
            raise ValueError(f"LPIPS backbone must be 'alex' or 'vgg', got {net!r}")
        self.net_name = net
        self.features = _alex_features() if net == "alex" else _vgg_features()
        for k, c in enumerate(CHANNELS[net]):
            self.add_module(f"lin{k}", _Linear(c))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    @classmethod
    def from_files(cls, backbone: str | Path, linear: str | Path, net: str = "alex") -> LPIPS:
        """Build and load strictly: every backbone conv and every ``linK`` weight must be present and fit."""
        model = cls(net)
        bstate = _load(backbone, "--lpips-backbone", f"LPIPS {net} backbone weights ({BACKBONE_FILES[net]})")
        if any(k.startswith("net.slice") for k in bstate):  # the lpips package's layout keeps features' indices
            bstate = {"features." + k.split(".", 2)[2]: v for k, v in bstate.items() if k.startswith("net.slice")}
        wanted = {f"features.{k}": v for k, v in model.features.state_dict().items()}
        model.features.load_state_dict(_pick(bstate, wanted, backbone))
        lstate = _load(linear, "--lpips-linear", f"LPIPS v0.1 linear weights ({net}.pth)")
        lins = {k: v for k, v in model.state_dict().items() if k.startswith("lin")}
        full = {f"features.{k}": v for k, v in model.features.state_dict().items()}
        full.update(_pick(lstate, lins, linear, keep_prefix=True))
        model.load_state_dict(full)  # strict: every backbone and linear weight accounted for
        return model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image distance ``(B,)`` of ``(B, 3, H, W)`` images in ``[-1, 1]``."""
        fx, fy = self._taps((x - self.shift) / self.scale), self._taps((y - self.shift) / self.scale)
        total = 0.0
        for k, (a, b) in enumerate(zip(fx, fy)):
            d = (_unit_normalize(a) - _unit_normalize(b)) ** 2
            total = total + getattr(self, f"lin{k}")(d).mean(dim=(2, 3))
        return total.flatten()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps, out = TAPS[self.net_name], []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out.append(x)
            if i == taps[-1]:
                break
        return out

    @torch.no_grad()
    def distance_images(self, pred: np.ndarray, gt: np.ndarray) -> float:
        """LPIPS of two RGB uint8 ``(H, W, 3)`` images."""
        device = self.shift.device

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1

        return float(self(t(pred), t(gt))[0])


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def _pick(state: dict, wanted: dict, path: str | Path, keep_prefix: bool = False) -> dict[str, torch.Tensor]:
    """The ``wanted`` keys of ``state`` with matching shapes, else an error listing what is missing or wrong."""
    missing = [k for k in wanted if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in wanted.items()
             if k in state and state[k].shape != v.shape]  # fmt: skip
    if missing or wrong:
        problems = ([f"missing {missing}"] if missing else []) + ([f"mis-shaped {wrong}"] if wrong else [])
        raise EvaluationError(path, "does not fit the LPIPS network: " + "; ".join(problems))
    return {(k if keep_prefix else k.removeprefix("features.")): state[k] for k in wanted}
