"""Checkpoint loading (strict, weights_only), first-stage init, safetensors export and the inference API."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from golden import TINY_CONFIG, load_golden

from talkingface.model.image_driven_talkingface.DiffTalk import (
    CheckpointError,
    DiffTalkModel,
    export_safetensors,
    get_difftalk_inference,
    load_config,
    load_first_stage,
)


def reference_style_ckpt(model: DiffTalkModel, path: Path, extra: dict | None = None) -> Path:
    """A Lightning file shaped like the reference trainer's: state_dict plus bookkeeping entries."""
    torch.save(
        {
            "epoch": 3,
            "global_step": 1234,
            "pytorch-lightning_version": "1.2.5",
            "state_dict": model.state_dict(),
            **(extra or {}),
        },
        path,
    )
    return path


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_reference_format_loads_strictly(tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    path = reference_style_ckpt(tiny_model, tmp_path / "model.ckpt")
    loaded = get_difftalk_inference(TINY_CONFIG, path, device="cpu", use_ema=False)
    assert same_weights(loaded, tiny_model)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


@pytest.mark.slow
def test_use_ema_puts_ema_weights_in_unet(tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    path = reference_style_ckpt(tiny_model, tmp_path / "model.ckpt")
    loaded = get_difftalk_inference(TINY_CONFIG, path, device="cpu", use_ema=True)
    g = load_golden()
    o, i = g["outputs"], g["inputs"]
    from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkConditions

    cond = DiffTalkConditions(audio=o["c_audio"], landmarks=o["c_ldm"], reference=o["c_ref"], masked=o["c_mask"])
    with torch.no_grad():
        eps = loaded.predict_eps(o["x_noisy"], i["t"], cond)
    assert float((eps - o["eps_ema"]).abs().max() / o["eps_ema"].abs().max()) < 1e-4


def test_missing_and_unexpected_keys_are_listed(tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    sd = dict(tiny_model.state_dict())
    sd.pop("cond_stage_model_for_ldm.encoder_fc1.0.weight")
    sd["model.diffusion_model.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError) as err:
        get_difftalk_inference(TINY_CONFIG, path, device="cpu")
    text = str(err.value)
    assert "missing keys (1)" in text and "cond_stage_model_for_ldm.encoder_fc1.0.weight" in text
    assert "unexpected keys (1)" in text and "model.diffusion_model.extra.weight" in text


@pytest.mark.slow
def test_shape_mismatch_is_reported(tmp_path: Path) -> None:
    other = DiffTalkModel(load_config(TINY_CONFIG, ["model.unet.model_channels=64"]).model)
    path = reference_style_ckpt(other, tmp_path / "wide.ckpt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        get_difftalk_inference(TINY_CONFIG, path, device="cpu")


def test_pickled_objects_need_trust(tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    path = reference_style_ckpt(tiny_model, tmp_path / "pickled.ckpt", {"hyper_parameters": argparse.Namespace(a=1)})
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        get_difftalk_inference(TINY_CONFIG, path, device="cpu")
    loaded = get_difftalk_inference(TINY_CONFIG, path, device="cpu", use_ema=False, trust_checkpoint=True)
    assert same_weights(loaded, tiny_model)


def test_missing_checkpoint_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoints/DiffTalk/model.ckpt"):
        get_difftalk_inference(TINY_CONFIG, tmp_path / "absent.ckpt", device="cpu")


def test_released_first_stage_file_initialises_vq(tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    """models/model.ckpt: VQ keys without prefix plus loss.* entries, which are ignored."""
    vq = {k: v.clone() for k, v in tiny_model.first_stage_model.state_dict().items()}
    vq["loss.discriminator.main.0.weight"] = torch.zeros(2, 2)
    vq["loss.logvar"] = torch.zeros(())
    path = tmp_path / "vq.ckpt"
    torch.save({"state_dict": vq}, path)
    fresh = DiffTalkModel(load_config(TINY_CONFIG).model)
    load_first_stage(fresh, path)
    assert same_weights(fresh.first_stage_model, tiny_model.first_stage_model)
    vq.pop("quant_conv.bias")
    torch.save({"state_dict": vq}, path)
    with pytest.raises(CheckpointError, match="quant_conv.bias"):
        load_first_stage(fresh, path)


@pytest.mark.slow
def test_slim_safetensors_export_round_trip(tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    slim = export_safetensors(tiny_model, tmp_path / "difftalk.safetensors", slim=True)
    vq = tmp_path / "vq.ckpt"
    torch.save({"state_dict": tiny_model.first_stage_model.state_dict()}, vq)
    with pytest.raises(CheckpointError, match="--first-stage-ckpt"):
        get_difftalk_inference(TINY_CONFIG, slim, first_stage_ckpt=tmp_path / "none.ckpt", device="cpu")
    loaded = get_difftalk_inference(TINY_CONFIG, slim, first_stage_ckpt=vq, device="cpu", use_ema=True)
    with tiny_model.ema_scope():
        expected = {k: v.clone() for k, v in tiny_model.model.state_dict().items()}
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in expected.items())
    assert same_weights(loaded.first_stage_model, tiny_model.first_stage_model)
    full = export_safetensors(tiny_model, tmp_path / "full.safetensors", slim=False)
    assert same_weights(get_difftalk_inference(TINY_CONFIG, full, device="cpu", use_ema=False), tiny_model)


def test_feature_kind_is_carried_and_checked(tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    path = reference_style_ckpt(tiny_model, tmp_path / "m.ckpt", {"audio_feature_kind": "logmel29"})
    model = get_difftalk_inference(TINY_CONFIG, path, device="cpu")
    assert model.config.conditioning.audio_feature_kind == "logmel29"
    cfg = load_config(TINY_CONFIG, ["model.conditioning.audio_feature_kind=deepspeech"])
    with pytest.raises(CheckpointError, match="logmel29"):
        get_difftalk_inference(cfg, path, device="cpu")


def test_safetensors_metadata_carries_config_and_feature_kind(tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    """A slim export made for another architecture is rebuilt from its own metadata, with no config given."""
    import json

    from talkingface.model.image_driven_talkingface.DiffTalk.config import config_to_dict

    cfg = load_config(TINY_CONFIG, ["model.unet.num_res_blocks=1"])
    other = DiffTalkModel(cfg.model)
    meta = {"difftalk_config": json.dumps(config_to_dict(cfg)), "audio_feature_kind": "logmel29"}
    path = export_safetensors(other, tmp_path / "slim.safetensors", slim=True, metadata=meta)
    vq = tmp_path / "vq.ckpt"
    torch.save({"state_dict": other.first_stage_model.state_dict()}, vq)
    loaded = get_difftalk_inference(None, path, first_stage_ckpt=vq, device="cpu")
    assert loaded.config.unet.num_res_blocks == 1
    assert loaded.config.conditioning.audio_feature_kind == "logmel29"
