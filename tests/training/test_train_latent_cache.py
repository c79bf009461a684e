"""The latent cache: built by its command, checked against the model, same loss as encoding on the fly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate
from train_support import TINY_CONFIG, tiny_overrides, write_dataset

from talkingface.commands.cache import main as cache_main
from talkingface.commands.train import main as train_main
from talkingface.data.dataset import TalkDataset
from talkingface.data.latent_cache import LatentCacheError, check_latent_cache
from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import load_first_stage
from talkingface.model.image_driven_talkingface.DiffTalk.config import load_config
from talkingface.training.module import LatentDiffusion


@pytest.fixture(scope="module")
def cache_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, list[str]]:
    tmp = tmp_path_factory.mktemp("cache")
    root = write_dataset(tmp)
    overrides = tiny_overrides(root)
    model = LatentDiffusion(load_config(TINY_CONFIG, overrides).model)
    vq = tmp / "vq.ckpt"
    torch.save({"state_dict": model.first_stage_model.state_dict()}, vq)
    cache = tmp / "latents"
    argv = ["build", str(root), "--out", str(cache), "--config", str(TINY_CONFIG), "--first-stage", str(vq)]
    assert cache_main([*argv, "--device", "cpu", "--batch-size", "5", "--num-workers", "0", *overrides]) == 0
    return root, vq, cache, overrides


def test_cached_latents_give_the_same_loss(cache_setup: tuple[Path, Path, Path, list[str]]) -> None:
    root, vq, cache, overrides = cache_setup
    cfg = load_config(TINY_CONFIG, overrides)
    model = LatentDiffusion(cfg.model).eval()
    load_first_stage(model, vq)
    split = root.parent / "data_train.txt"
    plain = TalkDataset(root, split, image_size=64, reference_min_distance=4, seed=3)
    cached = TalkDataset(root, split, image_size=64, reference_min_distance=4, seed=3, latent_cache=cache)
    items = [3, 7, 0]
    a = default_collate([plain[i] for i in items])
    b = default_collate([cached[i] for i in items])
    assert "image" not in b and b["latent"].shape == (3, 3, 16, 16)
    assert a["reference_name"] == b["reference_name"]
    torch.testing.assert_close(a["landmarks"], b["landmarks"])
    t = torch.tensor([5, 500, 900])
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss_a, _ = model.shared_step(a, t=t, noise=noise)
        loss_b, _ = model.shared_step(b, t=t, noise=noise)
        torch.testing.assert_close(model.get_input(a)[0], model.get_input(b)[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)


def test_cache_is_checked_and_used_by_the_trainer(
    cache_setup: tuple[Path, Path, Path, list[str]], tmp_path: Path
) -> None:
    root, vq, cache, overrides = cache_setup
    cfg = load_config(TINY_CONFIG, overrides)
    other = LatentDiffusion(cfg.model)
    with torch.no_grad():
        next(other.first_stage_model.parameters()).add_(0.01)  # other first-stage weights
    with pytest.raises(LatentCacheError, match="other first-stage weights"):
        check_latent_cache(cache, root, cfg.model, other.first_stage_model)
    with pytest.raises(LatentCacheError, match="latents of shape"):
        check_latent_cache(cache, root, load_config(TINY_CONFIG).model)
    extra = {"data.latent_cache": cache, "model.first_stage.ckpt_path": vq, "train.max_steps": 2}
    argv = ["--base", str(TINY_CONFIG), "-t", "-l", str(tmp_path), *tiny_overrides(root, **extra)]
    assert train_main(argv) == 0
    bad = {**extra, "model.first_stage.ckpt_path": tmp_path / "other.ckpt"}
    torch.save({"state_dict": other.first_stage_model.state_dict()}, tmp_path / "other.ckpt")
    argv = ["--base", str(TINY_CONFIG), "-t", "-l", str(tmp_path / "x"), *tiny_overrides(root, **bad)]
    assert train_main(argv) == 2


def test_old_command_points_to_the_builder() -> None:
    """``python -m talkingface.data.latent_cache`` (the reader's module) fails and names the builder's command."""
    done = subprocess.run(
        [sys.executable, "-m", "talkingface.data.latent_cache", "build", "data/HDTF"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2 and "python -m talkingface.training.latent_cache build" in done.stderr


def test_cached_items_collate_without_the_read_only_warning(cache_setup: tuple[Path, Path, Path, list[str]]) -> None:
    """The cache is memory-mapped read-only; items hold writable copies, so collating them raises no torch warning
    ("The given NumPy array is not writable") in every training run."""
    import warnings

    root, _, cache, _ = cache_setup
    ds = TalkDataset(root, root.parent / "data_train.txt", image_size=64, latent_cache=cache)
    item = ds[0]
    assert item["latent"].flags.writeable and item["masked_latent"].flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default_collate([ds[0], ds[1]])
