"""Config schema and the paper architecture against the reference state-dict manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from talkingface.model.image_driven_talkingface.DiffTalk import ConfigError, DiffTalkModel, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "latent-diffusion"
MANIFEST = Path(__file__).resolve().parent / "fixtures" / "difftalk_state_dict.tsv"
VQ_MANIFEST = Path(__file__).resolve().parent / "fixtures" / "vq_f4_first_stage_state_dict.tsv"


def read_manifest(path: Path) -> dict[str, tuple[str, str]]:
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return {key: (shape, dtype) for key, shape, dtype in rows}


def shape_str(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) if t.dim() else "scalar"


@pytest.mark.parametrize("name", ["talking.yaml", "talking-inference.yaml", "talking-tiny.yaml"])
def test_shipped_configs_load(name: str) -> None:
    """Every value a shipped YAML sets reaches the typed config (none is dropped or renamed on the way)."""
    import yaml

    cfg = load_config(CONFIGS / name)
    raw = yaml.safe_load((CONFIGS / name).read_text())

    def walk(node: object, section: object, where: str) -> int:
        if not isinstance(node, dict):
            value = list(section) if isinstance(section, tuple) else section
            assert value == node, f"{name}: {where} is {value!r} in the loaded config, {node!r} in the file"
            return 1
        return sum(walk(v, getattr(section, k), f"{where}.{k}") for k, v in node.items())

    assert walk(raw["model"], cfg.model, "model") > 0


def test_paper_config_matches_reference_manifest() -> None:
    """Keys, shapes and dtypes of the paper model equal the reference's 1,625-entry state dict."""
    with torch.device("meta"):
        model = DiffTalkModel(load_config(CONFIGS / "talking.yaml").model)
    manifest = read_manifest(MANIFEST)
    sd = model.state_dict()
    assert set(sd) == set(manifest)
    got = {k: (shape_str(v), str(v.dtype).replace("torch.", "")) for k, v in sd.items()}
    assert got == manifest
    unet = sum(p.numel() for p in model.model.parameters())
    vq = sum(p.numel() for p in model.first_stage_model.parameters())
    assert round(unet / 1e6, 2) == 530.15 and round(vq / 1e6, 1) == 55.3


def test_first_stage_matches_vq_f4_manifest() -> None:
    with torch.device("meta"):
        model = DiffTalkModel(load_config(CONFIGS / "talking.yaml").model)
    vq = read_manifest(VQ_MANIFEST)
    assert {k: shape_str(v) for k, v in model.first_stage_model.state_dict().items()} == {
        k: s for k, (s, _) in vq.items()
    }


def test_inference_config_is_the_paper_architecture() -> None:
    train, infer = load_config(CONFIGS / "talking.yaml"), load_config(CONFIGS / "talking-inference.yaml")
    assert train.model.unet == infer.model.unet
    assert train.model.first_stage == infer.model.first_stage
    assert train.model.diffusion == infer.model.diffusion


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  unet:\n    model_chanels: 64\n")
    with pytest.raises(ConfigError, match="model_chanels"):
        load_config(bad)
    with pytest.raises(ConfigError, match="bogus"):
        load_config(None, ["data.bogus=1"])


def test_wrong_type_and_inconsistent_values_are_errors() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, ["data.batch_size=many"])
    with pytest.raises(ConfigError, match="context_dim"):
        load_config(None, ["model.unet.context_dim=100"])


def test_train_compile_modes() -> None:
    """``train.compile``: false, true (the whole UNet, as before "blocks" existed), blocks, full; nothing else."""
    modes = [load_config(None, [f"train.compile={v}"]).train.compile for v in ("false", "true", "blocks", "full")]
    assert modes == [False, True, "blocks", "full"]
    with pytest.raises(ConfigError, match="train.compile must be false, blocks or full"):
        load_config(None, ["train.compile=fast"])
    with pytest.raises(ConfigError, match="compile"):
        load_config(None, ["train.compile=2"])


def test_overrides_apply() -> None:
    cfg = load_config(CONFIGS / "talking.yaml", ["model.unet.model_channels=64", "data.batch_size=3"])
    assert cfg.model.unet.model_channels == 64 and cfg.data.batch_size == 3


def test_missing_config_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
