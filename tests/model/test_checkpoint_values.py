"""Weights that are not finite floating point numbers (NaN, inf, a float parameter stored as integers) are refused
by every loader with the file and the first offending entries; the model's own integer buffers still load."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from golden import TINY_CONFIG

from talkingface.model.image_driven_talkingface.DiffTalk import (
    CheckpointError,
    DiffTalkModel,
    export_safetensors,
    get_difftalk_inference,
    load_first_stage,
)
from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import (
    FIRST_STAGE_PREFIX,
    check_state_dict,
    unusable_weights,
)

KEY = "model.diffusion_model.out.2.weight"


def with_nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[:12] = float("nan")
    return t


def with_inf(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[3] = float("inf")
    t.view(-1)[5] = float("-inf")
    return t


def as_int64(t: torch.Tensor) -> torch.Tensor:
    return t.round().to(torch.int64)


DAMAGE: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "nan": (with_nan, "12 NaN values"),
    "inf": (with_inf, "2 infinite values"),
    "int": (as_int64, "integer dtype int64 where floating point weights are expected"),
}


def damaged(tiny_ckpt: Path, tmp_path: Path, kind: str, key: str = KEY) -> Path:
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    ckpt["state_dict"][key] = DAMAGE[kind][0](ckpt["state_dict"][key])
    path = tmp_path / f"{kind}.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_trainer_checkpoint_with_unusable_weights_is_refused(tiny_ckpt: Path, tmp_path: Path, kind: str) -> None:
    path = damaged(tiny_ckpt, tmp_path, kind)
    with pytest.raises(CheckpointError) as err:
        get_difftalk_inference(TINY_CONFIG, path, device="cpu")
    text = str(err.value)
    assert text.startswith(f"{path}: refused: 1 weight tensor(s)"), text
    assert f"{KEY}: {DAMAGE[kind][1]}" in text and "\n" not in text, text


@pytest.mark.slow
def test_the_good_checkpoint_and_integer_buffers_still_load(tiny_ckpt: Path, tmp_path: Path) -> None:
    """``model_ema.num_updates`` is an integer buffer of the model: an int64 copy of it (as other writers store it)
    is not a float weight stored as integers."""
    model = get_difftalk_inference(TINY_CONFIG, tiny_ckpt, device="cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    assert {k for k, v in ckpt["state_dict"].items() if not v.is_floating_point()} == {"model_ema.num_updates"}
    ckpt["state_dict"]["model_ema.num_updates"] = ckpt["state_dict"]["model_ema.num_updates"].to(torch.int64)
    torch.save(ckpt, tmp_path / "int64-counter.ckpt")
    get_difftalk_inference(TINY_CONFIG, tmp_path / "int64-counter.ckpt", device="cpu")


def test_the_message_lists_the_first_entries_and_counts_the_rest(tiny_model: DiffTalkModel) -> None:
    sd = dict(tiny_model.state_dict())
    keys = [k for k in sd if k.startswith("model.diffusion_model.")][:7]
    for k in keys:
        sd[k] = torch.full_like(sd[k], float("nan"))
    problems = unusable_weights(tiny_model.state_dict(), sd)
    assert [p.split(":")[0] for p in problems] == keys  # in the checkpoint's order
    with pytest.raises(CheckpointError, match=r"^many.ckpt: refused: 7 weight tensor\(s\).*\.\.\. and 2 more") as err:
        check_state_dict(tiny_model, sd, source="many.ckpt")
    assert keys[4] in str(err.value) and keys[5] not in str(err.value)


def test_a_slim_safetensors_export_with_inf_is_refused(tiny_model: DiffTalkModel, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    vq = tmp_path / "vq.ckpt"
    torch.save({"state_dict": tiny_model.first_stage_model.state_dict()}, vq)
    good = export_safetensors(tiny_model, tmp_path / "good.safetensors")
    get_difftalk_inference(TINY_CONFIG, good, first_stage_ckpt=vq, device="cpu")
    sd = load_file(str(good))
    key = "cond_stage_model_for_ldm." + next(
        k for k, v in tiny_model.cond_stage_model_for_ldm.state_dict().items() if v.is_floating_point()
    )
    sd[key] = with_inf(sd[key])
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(bad))}: refused: .*{key}: 2 infinite values"):
        get_difftalk_inference(TINY_CONFIG, bad, first_stage_ckpt=vq, device="cpu")


@pytest.mark.parametrize("kind", ["nan", "int"])
def test_a_first_stage_file_with_unusable_weights_is_refused(
    tiny_model: DiffTalkModel, tmp_path: Path, kind: str
) -> None:
    sd = {k: v.clone() for k, v in tiny_model.first_stage_model.state_dict().items()}
    key = "decoder.conv_out.weight"
    sd[key] = DAMAGE[kind][0](sd[key])
    vq = tmp_path / "vq.ckpt"
    torch.save({"state_dict": sd}, vq)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(vq))}: refused: .*{key}: {DAMAGE[kind][1]}"):
        load_first_stage(DiffTalkModel(tiny_model.config), vq)
    # the same VQ weights inside a full checkpoint: named with their prefix
    full = dict(tiny_model.state_dict())
    full[FIRST_STAGE_PREFIX + key] = sd[key]
    torch.save({"state_dict": full}, tmp_path / "full.ckpt")
    with pytest.raises(CheckpointError, match=rf"{FIRST_STAGE_PREFIX}{key}: {DAMAGE[kind][1]}"):
        get_difftalk_inference(TINY_CONFIG, tmp_path / "full.ckpt", device="cpu")
