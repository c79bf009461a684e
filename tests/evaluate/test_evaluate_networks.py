"""FID (Fréchet distance), LPIPS and SyncNet LSE: closed forms, strict weight loading, tiny random networks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from talkingface.evaluate import EvalOptions, EvaluationError, evaluate
from talkingface.evaluate.fid import feature_statistics, fid_from_frames, frechet_distance
from talkingface.evaluate.lpips import LPIPS
from talkingface.evaluate.syncnet import SyncNet, load_syncnet, lse_from_crops, lse_scores, mfcc, syncnet_crop

# ---------------------------------------------------------------- FID


def test_frechet_distance_closed_forms() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    d1, d2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expected, rel=1e-9)
    a = rng.normal(size=(5, 5))
    s = a @ a.T + np.eye(5)  # S2 = 4 S1 -> Tr(S1 + 4 S1 - 2 * 2 S1) = Tr(S1)
    assert frechet_distance(np.zeros(5), s, np.ones(5), 4 * s) == pytest.approx(5 + np.trace(s), rel=1e-9)
    assert frechet_distance(np.ones(5), s, np.ones(5), s) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(9 + 1 + 4 - 4)  # 1-D: (s1 - s2)^2


def test_frechet_distance_of_samples_and_singular_covariances() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, size=(20000, 3))
    y = rng.normal(2, 2, size=(20000, 3))  # closed form: 3 * 4 + 3 * (1 + 4 - 4) = 15
    assert frechet_distance(*feature_statistics(x), *feature_statistics(y)) == pytest.approx(15, rel=0.02)
    few = rng.normal(size=(3, 8))  # rank-deficient covariance: still finite and real
    assert math.isfinite(frechet_distance(*feature_statistics(few), *feature_statistics(few[::-1] + 0.1)))


class _TinyFeatures(nn.Module):
    """A stand-in TorchScript extractor with the NVIDIA interface (``return_features``)."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert return_features
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_fid_from_frames_with_torchscript_extractor(tmp_path: Path) -> None:
    path = tmp_path / "features.pt"
    torch.jit.script(_TinyFeatures()).save(str(path))
    rng = np.random.default_rng(2)
    a = [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(12)]
    b = [np.clip(f.astype(int) + 60, 0, 255).astype(np.uint8) for f in a]
    assert fid_from_frames(a, a, path) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_frames(a, b, path) > 100
    with pytest.raises(EvaluationError, match="TorchScript"):
        fid_from_frames(a, a, tmp_path / "missing.pt")


# ---------------------------------------------------------------- LPIPS

ALEX_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}


def _alex_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, (cout, cin, k) in ALEX_CONVS.items():
        state[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) / math.sqrt(cin * k * k)
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.1
    state["classifier.1.weight"] = torch.zeros(4, 4)  # torchvision's classifier: ignored
    return state


def _lin_state(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate((64, 192, 384, 256, 256))
    }


def _reference_lpips(x: torch.Tensor, y: torch.Tensor, w: dict, lin: dict) -> torch.Tensor:
    """LPIPS v0.1 written out layer by layer from the paper/reference code, for comparison."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(z: torch.Tensor) -> list[torch.Tensor]:
        z = (z - shift) / scale
        r1 = F.relu(F.conv2d(z, w["features.0.weight"], w["features.0.bias"], stride=4, padding=2))
        r2 = F.relu(F.conv2d(F.max_pool2d(r1, 3, 2), w["features.3.weight"], w["features.3.bias"], padding=2))
        r3 = F.relu(F.conv2d(F.max_pool2d(r2, 3, 2), w["features.6.weight"], w["features.6.bias"], padding=1))
        r4 = F.relu(F.conv2d(r3, w["features.8.weight"], w["features.8.bias"], padding=1))
        r5 = F.relu(F.conv2d(r4, w["features.10.weight"], w["features.10.bias"], padding=1))
        return [r1, r2, r3, r4, r5]

    total = 0
    for k, (a, b) in enumerate(zip(feats(x), feats(y))):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total = total + (((a - b) ** 2) * lin[f"lin{k}.model.1.weight"]).sum(1).mean(dim=(1, 2))
    return total


def test_lpips_alex_loads_torchvision_names_and_matches_reference(tmp_path: Path) -> None:
    w, lin = _alex_state(), _lin_state()
    torch.save(w, tmp_path / "alexnet.pth")
    torch.save(lin, tmp_path / "alex.pth")
    net = LPIPS.from_files(tmp_path / "alexnet.pth", tmp_path / "alex.pth", "alex")
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.allclose(net(x, y), _reference_lpips(x, y, w, lin), rtol=1e-5, atol=1e-6)
    assert torch.allclose(net(x, x), torch.zeros(2))
    img = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert net.distance_images(img, img) == 0.0
    # the lpips package's own layout (net.sliceK.N.*) is accepted too
    sliced = {f"net.slice{s}.{i}.{p}": w[f"features.{i}.{p}"] for s, i in zip(range(1, 6), (0, 3, 6, 8, 10))
              for p in ("weight", "bias")}  # fmt: skip
    torch.save({**sliced, **lin}, tmp_path / "lpips_full.pth")
    net2 = LPIPS.from_files(tmp_path / "lpips_full.pth", tmp_path / "lpips_full.pth", "alex")
    assert torch.allclose(net2(x, y), net(x, y))


def test_lpips_errors_name_file_and_keys(tmp_path: Path) -> None:
    w = _alex_state()
    del w["features.8.weight"]
    torch.save(w, tmp_path / "bad.pth")
    torch.save(_lin_state(), tmp_path / "alex.pth")
    with pytest.raises(EvaluationError, match=r"bad.pth: .*missing \['features.8.weight'\]"):
        LPIPS.from_files(tmp_path / "bad.pth", tmp_path / "alex.pth")
    with pytest.raises(EvaluationError, match="--lpips-backbone"):
        LPIPS.from_files(tmp_path / "none.pth", tmp_path / "alex.pth")


def test_lpips_vgg_parameter_names_are_torchvision_s() -> None:
    names = {k for k in LPIPS("vgg").state_dict() if k.startswith("features.")}
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    assert names == {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")}


# ---------------------------------------------------------------- SyncNet


def test_syncnet_shapes_and_strict_loading(tmp_path: Path) -> None:
    net = SyncNet().eval()
    with torch.no_grad():
        assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert net.forward_lip(torch.rand(1, 3, 5, 224, 224) * 255).shape == (1, 1024)
    state = net.state_dict()
    assert "netcnnlip.0.weight" in state and state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    torch.save(state, tmp_path / "syncnet_v2.model")
    assert isinstance(load_syncnet(tmp_path / "syncnet_v2.model"), SyncNet)
    state["netfcaud.3.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.model")
    with pytest.raises(EvaluationError, match="bad.model: .*mis-shaped \\['netfcaud.3.weight'\\]"):
        load_syncnet(tmp_path / "bad.model")


def test_lse_scores_find_the_offset() -> None:
    emb = torch.randn(30, 8)
    same = lse_scores(emb, emb.clone(), vshift=5)
    assert same.offset == 0 and same.min_distance == pytest.approx(0.0, abs=1e-4) and same.confidence > 1
    audio = torch.cat([emb[2:], torch.randn(2, 8)])  # audio leads the video by 2 frames
    shifted = lse_scores(emb, audio, vshift=5)
    assert shifted.offset == 2 and len(shifted.mean_distances) == 11


class _TinySync(nn.Module):
    """Random stand-in with SyncNet's interface; checks the input layout it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.lip = nn.Linear(3 * 5, 4)
        self.aud = nn.Linear(13 * 20, 4)

    @torch.jit.export
    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, 5, 224, 224)
        return self.lip(x.mean(dim=(3, 4)).flatten(1) / 255)

    @torch.jit.export
    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, 13, 20)
        return self.aud(x.flatten(1) / 100)


def test_lse_with_tiny_network_and_torchscript_end_to_end(tmp_path: Path) -> None:
    from data_fixtures import write_video

    model = _TinySync().eval()
    crops = [syncnet_crop(np.full((64, 48, 3), i * 20, np.uint8), (10, 10, 30, 40)) for i in range(10)]
    assert crops[0].shape == (224, 224, 3)
    samples = np.round(np.random.default_rng(4).normal(0, 2000, 16000 * 10 // 25))
    result = lse_from_crops(crops, samples, model, vshift=2)
    assert math.isfinite(result.confidence) and result.min_distance >= 0 and -2 <= result.offset <= 2
    assert mfcc(samples).shape == (39, 13)  # 1 + ceil((6400 - 400) / 160)

    scripted = tmp_path / "syncnet_ts.pt"
    torch.jit.script(model).save(str(scripted))
    video = write_video(tmp_path / "clip.mp4", seconds=0.6, fps=25)
    result = evaluate(video, video, EvalOptions(metrics=["psnr", "lse"], crop="full", syncnet=scripted))
    assert set(result.scores) == {"lse_c", "lse_d", "av_offset"} and math.isfinite(result.scores["lse_d"])
    assert result.aggregate["psnr"]["mean"] == math.inf


def test_mfcc_matches_python_speech_features(fixtures_dir: Path) -> None:
    """Golden values from the package SyncNet's reference uses (not a dependency of ours), made once with::

        sig = np.round(np.random.default_rng(5).normal(0, 3000, 4000)).astype(np.int16)
        np.save("tests/fixtures/mfcc_python_speech_features.npy", python_speech_features.mfcc(sig, 16000))

    with python_speech_features 0.6 (the latest release)."""
    sig = np.round(np.random.default_rng(5).normal(0, 3000, 4000)).astype(np.int16)
    expected = np.load(fixtures_dir / "mfcc_python_speech_features.npy")
    assert expected.shape == (24, 13)
    np.testing.assert_allclose(mfcc(sig), expected, atol=1e-8)
