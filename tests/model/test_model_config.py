"""Config schema and the paper architecture against the reference state-dict manifest."""

from __future__ import annotations

import ast
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import torch
from vq_manifest import PUBLISHED, manifest_tsv, vq_manifest

from talkingface.model.image_driven_talkingface.DiffTalk import ConfigError, DiffTalkConfig, DiffTalkModel, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "latent-diffusion"
MANIFEST = Path(__file__).resolve().parents[1] / "fixtures" / "difftalk_state_dict.tsv"
VQ_MANIFEST = Path(__file__).resolve().parents[1] / "fixtures" / "vq_f4_first_stage_state_dict.tsv"
VQ_F8_MANIFEST = Path(__file__).resolve().parents[1] / "fixtures" / "vq_f8_first_stage_state_dict.tsv"


def read_manifest(path: Path) -> dict[str, tuple[str, str]]:
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return {key: (shape, dtype) for key, shape, dtype in rows}


def shape_str(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) if t.dim() else "scalar"


@pytest.mark.parametrize("name", ["talking.yaml", "talking-inference.yaml", "talking-tiny.yaml", "talking-512.yaml"])
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


def test_manifest_generator_reproduces_the_measured_vq_f4_manifest() -> None:
    """The key/shape generator written from latent-diffusion's construction rules gives the vq-f4 manifest measured
    on the reference implementation, entry for entry and in order; the vq-f8 fixture is its output for vq-f8."""
    assert manifest_tsv(vq_manifest(**PUBLISHED["vq-f4"])) == VQ_MANIFEST.read_text()
    assert manifest_tsv(vq_manifest(**PUBLISHED["vq-f8"])) == VQ_F8_MANIFEST.read_text()


def test_512_first_stage_matches_vq_f8_manifest() -> None:
    """talking-512.yaml builds latent-diffusion's vq-f8 with the parameter names and shapes of its published
    checkpoint (attention in the last encoder and decoder level), so ``model.ckpt`` loads strictly; the UNet is the
    paper's but for 12 input and 4 output channels, and a 512 image has a 64 x 64 latent."""
    cfg = load_config(CONFIGS / "talking-512.yaml").model
    with torch.device("meta"):
        model = DiffTalkModel(cfg)
    vq = read_manifest(VQ_F8_MANIFEST)
    assert len(vq) == 299
    assert {k: shape_str(v) for k, v in model.first_stage_model.state_dict().items()} == {
        k: s for k, (s, _) in vq.items()
    }
    assert round(sum(p.numel() for p in model.first_stage_model.parameters()) / 1e6, 1) == 67.7
    assert (cfg.first_stage.resolution, model.image_size, model.first_stage_factor) == (512, 64, 8)
    with torch.device("meta"):
        paper = DiffTalkModel(load_config(CONFIGS / "talking.yaml").model)
    ours, theirs = model.model.state_dict(), paper.model.state_dict()
    assert set(ours) == set(theirs)
    differ = {k for k in ours if ours[k].shape != theirs[k].shape}
    assert differ == {
        "diffusion_model.input_blocks.0.0.weight",
        "diffusion_model.out.2.weight",
        "diffusion_model.out.2.bias",
    }
    assert tuple(ours["diffusion_model.input_blocks.0.0.weight"].shape[:2]) == (256, 12)
    assert tuple(ours["diffusion_model.out.2.weight"].shape[:2]) == (4, 256)


def test_attention_levels_must_be_sides_of_the_configured_resolution() -> None:
    """vq-f8's published ``attn_resolutions: [32]`` (sides at 256) would build no attention at 512 and its
    checkpoint would not load: the config names the problem instead."""
    with pytest.raises(ConfigError, match=r"attn_resolutions: \[32\] is not the side of a level at resolution 512"):
        load_config(CONFIGS / "talking-512.yaml", ["model.first_stage.attn_resolutions=[32]"])
    at_256 = load_config(
        CONFIGS / "talking-512.yaml",
        ["model.first_stage.resolution=256", "model.unet.image_size=32", "model.first_stage.attn_resolutions=[32]"],
    )
    with torch.device("meta"):
        built = DiffTalkModel(at_256.model).first_stage_model.state_dict()
    assert {k: shape_str(v) for k, v in built.items()} == {k: s for k, (s, _) in read_manifest(VQ_F8_MANIFEST).items()}


def test_inference_config_is_the_paper_architecture() -> None:
    train, infer = load_config(CONFIGS / "talking.yaml"), load_config(CONFIGS / "talking-inference.yaml")
    assert train.model.unet == infer.model.unet
    assert train.model.first_stage == infer.model.first_stage
    assert train.model.diffusion == infer.model.diffusion


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  unet:\n    model_chanels: 64\n")
    with pytest.raises(ConfigError, match="bad.yaml.*model_chanels"):
        load_config(bad)
    with pytest.raises(ConfigError, match="override model.bogus=1.*bogus"):
        load_config(None, ["model.bogus=1"])


def test_unknown_top_level_key_is_an_error(tmp_path: Path) -> None:
    """The training sections are the only top-level keys beside ``model:`` that the model-level loader lets pass."""
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "talking.yaml").read_text() + "trian:\n  max_steps: 5\n")
    with pytest.raises(ConfigError, match="bad.yaml.*trian"):
        load_config(bad)
    with pytest.raises(ConfigError, match="override bogus.x=1.*bogus"):
        load_config(None, ["bogus.x=1"])
    with pytest.raises(ConfigError, match=r"invalid config \(dict\).*evaluate"):
        load_config({"model": {}, "evaluate": {}})
    with pytest.raises(ConfigError, match="override data=5.*data must be a mapping"):
        load_config(None, ["data=5"])


def test_model_loader_accepts_a_whole_training_config_and_keeps_only_the_model(tmp_path: Path) -> None:
    """A training YAML (model + data + train + distill) or a checkpoint's stored config loads for inference: the
    training sections are left out unchecked (they are the training schema's), the model section is checked."""
    cfg = load_config(CONFIGS / "talking.yaml")
    assert type(cfg) is DiffTalkConfig and [f.name for f in fields(cfg)] == ["model"]
    assert cfg.model.unet.model_channels == 256
    stored = {"model": {"unet": {"num_res_blocks": 1}}, "train": {"key_of_another_version": 1}, "distill": None}
    assert load_config(stored).model.unet.num_res_blocks == 1
    assert load_config(None, ["data.batch_size=many", "model.unet.num_res_blocks=1"]).model.unet.num_res_blocks == 1
    with pytest.raises(ConfigError, match="model_chanels"):
        load_config({**stored, "model": {"unet": {"model_chanels": 64}}})


def test_wrong_type_and_inconsistent_values_are_errors() -> None:
    with pytest.raises(ConfigError, match="model_channels"):
        load_config(None, ["model.unet.model_channels=many"])
    with pytest.raises(ConfigError, match="context_dim"):
        load_config(None, ["model.unet.context_dim=100"])


def test_overrides_apply() -> None:
    cfg = load_config(CONFIGS / "talking.yaml", ["model.unet.model_channels=64", "model.unet.num_res_blocks=3"])
    assert (cfg.model.unet.model_channels, cfg.model.unet.num_res_blocks) == (64, 3)


def test_the_model_package_defines_no_training_config() -> None:
    """The training sections' schema lives in ``talkingface.training.config``; the model package names the sections
    only (``TRAINING_SECTIONS``), and no class of it has a field or name of the training schema."""
    from talkingface.model.image_driven_talkingface.DiffTalk import config

    training_names = {"DataConfig", "TrainConfig", "DistillConfig", "TrainingConfig", "TRAIN_COMPILE_MODES"}
    package = CONFIGS.parents[1] / "talkingface" / "model"
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        defined |= {
            t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
        }
        assert not defined & training_names, (path, defined & training_names)
    schemas = [v for v in vars(config).values() if is_dataclass(v) and v.__module__ == config.__name__]
    assert DiffTalkConfig in schemas
    for schema in schemas:
        assert not {f.name for f in fields(schema)} & set(config.TRAINING_SECTIONS), schema


def test_missing_config_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
