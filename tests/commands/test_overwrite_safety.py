"""Commands that write a folder or a file replace only what they wrote themselves, and only when asked to.

``cache build --overwrite`` replaces only a latent cache, never the dataset or a folder holding other files;
``export`` never writes over its input and needs ``--overwrite`` for an existing output; ``synthetic`` refuses a
non-empty ``--out`` unless it is a synthetic set and ``--overwrite`` is given. Every refusal is one ``error:`` line,
exit status 2, and leaves every file as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from command_support import only_error_line
from fs_support import tree_bytes
from train_support import TINY_CONFIG, tiny_overrides, write_dataset

from talkingface.commands.cache import main as cache_main
from talkingface.commands.export import main as export_main
from talkingface.commands.synthetic import main as synthetic_main
from talkingface.data.latent_cache import CACHE_FORMAT, META_FILE, read_cache_meta
from talkingface.data.layout import DatasetLayout
from talkingface.data.validate import validate_dataset
from talkingface.model.image_driven_talkingface.DiffTalk.config import CONFIG_CKPT_KEY, config_to_dict, load_config
from talkingface.training.config import load_training_config
from talkingface.training.module import LatentDiffusion

# ------------------------------------------------------------------------------------------------ cache build


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """``tmp_path/HDTF`` (two short videos), its split lists beside it, and an unrelated file there too."""
    root = write_dataset(tmp_path, counts=(3, 2))
    (tmp_path / "notes.txt").write_text("not part of any dataset\n")
    return root


def build_cache(root: Path, out: Path, *extra: str) -> int:
    argv = ["build", str(root), "--out", str(out), "--config", str(TINY_CONFIG), "--allow-random-first-stage"]
    return cache_main([*argv, "--device", "cpu", "--num-workers", "0", *extra, *tiny_overrides(root)])


@pytest.mark.parametrize(
    "where",
    ["root", "images", "inside-images", "parent", "symlink-to-root", "dotdot-root", "root-meta"],
)
def test_cache_out_on_the_dataset_is_refused(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, where: str
) -> None:
    if where == "symlink-to-root":
        (tmp_path / "link").symlink_to(dataset, target_is_directory=True)
    out = {
        "root": dataset,
        "images": dataset / "images",
        "inside-images": dataset / "images" / "latents",
        "parent": tmp_path,
        "symlink-to-root": tmp_path / "link",
        "dotdot-root": dataset / "images" / "..",
        "root-meta": dataset / "meta.json",
    }[where]
    before = tree_bytes(tmp_path)
    capsys.readouterr()
    assert build_cache(dataset, out, "--overwrite") == 2
    line = only_error_line(capsys.readouterr().err)
    assert line.startswith("error: --out: ") and str(out) in line, line
    assert tree_bytes(tmp_path) == before  # the dataset, its lists and the unrelated file are untouched
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-built cache left either


def test_cache_overwrite_replaces_only_a_cache_it_built(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cache = dataset / "latents"  # the default place, a folder of its own in the root
    assert build_cache(dataset, cache) == 0
    assert read_cache_meta(cache)["format"] == CACHE_FORMAT
    capsys.readouterr()
    assert build_cache(dataset, cache) == 2
    line = only_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --out: {cache}") and "--overwrite" in line, line

    # a cache written before the "format" key existed is still read, and rebuilt with --overwrite
    meta_path = cache / META_FILE
    meta = json.loads(meta_path.read_text())
    del meta["format"]
    meta_path.write_text(json.dumps(meta))
    assert read_cache_meta(cache)["counts"] == [3, 2]
    assert build_cache(dataset, cache, "--overwrite") == 0
    assert read_cache_meta(cache)["format"] == CACHE_FORMAT

    # a file of someone else's in the cache folder: not a cache any more, so not replaced
    (cache / "my_notes.txt").write_text("keep me\n")
    before = tree_bytes(tmp_path)
    capsys.readouterr()
    assert build_cache(dataset, cache, "--overwrite") == 2
    line = only_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --out: {cache}") and "my_notes.txt" in line, line
    assert tree_bytes(tmp_path) == before


def test_cache_overwrite_refuses_a_folder_of_other_files(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    other = tmp_path / "results"
    (other / "run1").mkdir(parents=True)
    (other / "run1" / "metrics.json").write_text("{}\n")
    (other / "meta.json").write_text(json.dumps({"version": 1, "note": "a meta.json that is not a cache's"}))
    before = tree_bytes(tmp_path)
    capsys.readouterr()
    assert build_cache(dataset, other, "--overwrite") == 2
    line = only_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --out: {other}") and "not a latent cache" in line, line
    assert tree_bytes(tmp_path) == before


# ------------------------------------------------------------------------------------------------ export


@pytest.fixture(scope="module")
def trainer_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trainer checkpoint (state dict + the run config, as the trainer writes them)."""
    folder = tmp_path_factory.mktemp("export")
    cfg = load_training_config(TINY_CONFIG, tiny_overrides(folder / "HDTF"))
    model = LatentDiffusion(cfg.model, run_config=config_to_dict(cfg))
    path = folder / "last.ckpt"
    torch.save({"state_dict": model.state_dict(), CONFIG_CKPT_KEY: config_to_dict(cfg), "global_step": 1}, path)
    return path


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink", "yaml-is-input"])
def test_export_onto_its_input_is_refused(
    trainer_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture, spelling: str
) -> None:
    ckpt = tmp_path / "run" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(trainer_ckpt.read_bytes())
    if spelling == "symlink":
        (tmp_path / "link.ckpt").symlink_to(ckpt)
    elif spelling == "hardlink":
        os.link(ckpt, tmp_path / "hard.ckpt")
    elif spelling == "yaml-is-input":
        ckpt = ckpt.rename(ckpt.with_suffix(".yaml"))  # the export's config would be written over it
    out = {
        "same": ckpt,
        "dotdot": tmp_path / "run" / ".." / "run" / "last.ckpt",
        "symlink": tmp_path / "link.ckpt",
        "hardlink": tmp_path / "hard.ckpt",
        "yaml-is-input": ckpt.with_suffix(".safetensors"),
    }[spelling]
    before = tree_bytes(tmp_path)
    for overwrite in ([], ["--overwrite"]):  # --overwrite replaces an earlier export, never the input
        capsys.readouterr()
        assert export_main([str(ckpt), str(out), *overwrite]) == 2
        line = only_error_line(capsys.readouterr().err)
        assert "is the checkpoint being exported" in line, line
        assert tree_bytes(tmp_path) == before


def test_export_needs_overwrite_for_an_existing_output(
    trainer_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "difftalk.safetensors"
    out.write_bytes(b"an earlier export")
    capsys.readouterr()
    assert export_main([str(trainer_ckpt), str(out)]) == 2
    line = only_error_line(capsys.readouterr().err)
    assert line == f"error: {out}: exists; pass --overwrite to replace it", line
    assert out.read_bytes() == b"an earlier export" and not out.with_suffix(".yaml").exists()

    assert export_main([str(trainer_ckpt), str(out), "--overwrite"]) == 0
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert CONFIG_CKPT_KEY in f.metadata() and any(k.startswith("model.") for k in f.keys())
    assert load_config(out.with_suffix(".yaml")).model == load_config(TINY_CONFIG, tiny_overrides(Path("x"))).model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["difftalk.safetensors", "difftalk.yaml"]  # no temp files

    # the .yaml beside it is part of the output too
    fresh = tmp_path / "new" / "difftalk.safetensors"
    fresh.parent.mkdir()
    fresh.with_suffix(".yaml").write_text("mine: true\n")
    capsys.readouterr()
    assert export_main([str(trainer_ckpt), str(fresh)]) == 2
    assert "--overwrite" in only_error_line(capsys.readouterr().err) and not fresh.exists()
    assert fresh.with_suffix(".yaml").read_text() == "mine: true\n"


# ------------------------------------------------------------------------------------------------ synthetic


def synthetic(out: Path, *extra: str, identities: int = 2) -> int:
    argv = ["--out", str(out), "--identities", str(identities), "--seconds", "0.2", "--layout", "--no-videos"]
    return synthetic_main(
        [*argv, "--test-identities", "1", "--size", "64", "--frame-size", "96", "--no-progress", *extra]
    )


def test_synthetic_refuses_an_existing_set_without_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "syn"
    assert synthetic(out) == 0
    before = tree_bytes(out)
    capsys.readouterr()
    assert synthetic(out, "--seed", "5", identities=3) == 2
    line = only_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --out: {out}") and "--overwrite" in line, line
    assert tree_bytes(out) == before


def test_synthetic_overwrite_replaces_a_set_it_wrote(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    assert synthetic(out, identities=3) == 0
    assert synthetic(out, "--overwrite", identities=2) == 0
    root = out / "dataset"
    assert DatasetLayout(root).read_data_txt() == [5, 5]
    assert not list((root / "images").glob("3_*"))  # nothing of the old third video is left
    assert validate_dataset(root, progress=False) == []
    assert json.loads((out / "synthetic.json").read_text())["identities"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["syn"]  # no working folder left beside it

    # a set written before synthetic.json existed is recognised by its dataset/meta.json
    (out / "synthetic.json").unlink()
    assert synthetic(out, "--overwrite", identities=2) == 0


@pytest.mark.parametrize("extra", ["notes.txt", "dataset/latents/meta.json", "videos/holiday.mp4"])
def test_synthetic_overwrite_refuses_a_folder_with_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: str
) -> None:
    out = tmp_path / "syn"
    assert synthetic(out) == 0
    (out / extra).parent.mkdir(parents=True, exist_ok=True)
    (out / extra).write_text("keep me\n")
    before = tree_bytes(out)
    capsys.readouterr()
    assert synthetic(out, "--overwrite") == 2
    line = only_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --out: {out}") and "not a synthetic set" in line, line
    assert Path(extra).parts[-1] in line or Path(extra).parts[0] in line, line
    assert tree_bytes(out) == before


def test_synthetic_overwrite_never_replaces_an_unrelated_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "photos" / "a.jpg").write_bytes(b"jpeg")
    (home / "data_train.txt").write_text("1_1\n")  # a name the generator also writes
    before = tree_bytes(home)
    capsys.readouterr()
    assert synthetic(home, "--overwrite") == 2
    assert only_error_line(capsys.readouterr().err).startswith(f"error: --out: {home}")
    assert tree_bytes(home) == before


def test_synthetic_writes_into_an_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert synthetic(out, identities=2) == 0
    assert validate_dataset(out / "dataset", progress=False) == []
