"""Shared pytest setup (CPU only, seeded, repository root importable) and the fixtures several test files use.

Session fixtures are built once per run and shared by every test that asks for them, so they are read-only:
``tiny_model`` and ``tiny_dataset`` are checked when the run ends, and a test that changed them fails there. A test
that trains or edits the model takes ``fresh_tiny_model`` (its own copy); one that writes into a dataset makes its own
with ``train_support.write_dataset``. Helpers (plain functions) live in the support modules next to this file
(``golden``, ``train_support``, ``data_fixtures``, ``fs_support``), never in ``test_*.py`` files."""

from __future__ import annotations

import copy
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

#: Torch threads in the test process and (through OMP_NUM_THREADS) in the commands the tests start: one unless
#: TALKINGFACE_TEST_THREADS says more. Two threads on two cores that other work also uses spin-wait for each other:
#: the tiny models' steps then take 2-10x longer than on one thread.
THREADS = max(1, int(os.environ.get("TALKINGFACE_TEST_THREADS", "1")))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data_fixtures import SIZE, write_video  # noqa: E402
from golden import SMALL_OVERRIDES, TINY_CONFIG, fill_deterministic  # noqa: E402

#: The config overrides of ``small_model`` on top of the tiny config.
SMALL_MODEL_OVERRIDES = [*SMALL_OVERRIDES, "model.conditioning.audio_feature_kind=logmel29"]

from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel, load_config  # noqa: E402

torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


# ----------------------------------------------------------------------------- the tiny model


def model_fingerprint(model: torch.nn.Module) -> str:
    """A digest of every state entry (name, dtype, shape, bytes), each module's mode and each parameter's
    ``requires_grad``: equal digests mean the model was not changed."""
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        h.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    h.update(bytes(m.training for m in model.modules()))
    h.update(bytes(p.requires_grad for p in model.parameters()))
    return h.hexdigest()


@pytest.fixture(scope="session")
def tiny_model_as_built() -> DiffTalkModel:
    """The tiny config's model with the reference's deterministic weights, as ``DiffTalkModel`` builds it (training
    mode). Not for tests: they take ``tiny_model`` or ``fresh_tiny_model``."""
    model = DiffTalkModel(load_config(TINY_CONFIG).model)
    fill_deterministic(model)
    return model


@pytest.fixture(scope="session")
def tiny_model(tiny_model_as_built: DiffTalkModel) -> Iterator[DiffTalkModel]:
    """The tiny model in eval mode without gradients, shared by the whole run: read-only (checked at the end)."""
    model = copy.deepcopy(tiny_model_as_built).eval().requires_grad_(False)
    before = model_fingerprint(model)
    yield model
    assert model_fingerprint(model) == before, (
        "a test changed the shared tiny_model (weights, mode or requires_grad): give it fresh_tiny_model"
    )


@pytest.fixture
def fresh_tiny_model(tiny_model_as_built: DiffTalkModel) -> DiffTalkModel:
    """A new copy of the tiny model as built (training mode, deterministic weights) for a test to change."""
    return copy.deepcopy(tiny_model_as_built)


@pytest.fixture(scope="session")
def small_model() -> Iterator[DiffTalkModel]:
    """The tiny config at 64 px (``golden.SMALL_OVERRIDES``: 16 x 16 latents, logmel29 features) with deterministic
    weights, in eval mode without gradients, shared by the whole run: read-only (checked at the end)."""
    config = load_config(TINY_CONFIG, SMALL_MODEL_OVERRIDES)
    model = DiffTalkModel(config.model).eval().requires_grad_(False)
    fill_deterministic(model)
    before = model_fingerprint(model)
    yield model
    assert model_fingerprint(model) == before, "a test changed the shared small_model"


@pytest.fixture(scope="session")
def small_ckpt(small_model: DiffTalkModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_model`` saved as a trainer-style checkpoint that records its config: ``--ckpt`` alone loads it."""
    from talkingface.model.image_driven_talkingface.DiffTalk.config import CONFIG_CKPT_KEY, config_to_dict

    path = tmp_path_factory.mktemp("small_ckpt") / "small.ckpt"
    config = config_to_dict(load_config(TINY_CONFIG, SMALL_MODEL_OVERRIDES))
    torch.save({"state_dict": small_model.state_dict(), CONFIG_CKPT_KEY: config}, path)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_model: DiffTalkModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_model`` saved as a checkpoint that records its audio feature kind (``logmel29``)."""
    path = tmp_path_factory.mktemp("tiny_ckpt") / "tiny.ckpt"
    torch.save({"state_dict": tiny_model.state_dict(), "audio_feature_kind": "logmel29"}, path)
    return path


# ----------------------------------------------------------------------------- the tiny training dataset


def folder_fingerprint(folder: Path) -> dict[str, str]:
    """Relative path -> content digest of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``<tmp>/HDTF`` from ``train_support.write_dataset`` (64 px frames, logmel29 features, split lists next to it),
    shared by the whole run: read-only (checked at the end)."""
    from train_support import write_dataset  # imports Lightning: only where a test asks for the dataset

    root = write_dataset(tmp_path_factory.mktemp("tiny_dataset"))
    before = folder_fingerprint(root.parent)
    yield root
    after = folder_fingerprint(root.parent)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared tiny_dataset (make your own with write_dataset): {changed[:10]}"


# ----------------------------------------------------------------------------- source clips for preprocessing


@pytest.fixture(scope="session")
def source_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two clips to preprocess: ``face`` (30 fps, 48 kHz mono aac) and ``stereo`` (25 fps .mov, 44.1 kHz stereo)."""
    d = tmp_path_factory.mktemp("source_clips")
    return {
        "face": write_video(d / "face.mp4", seconds=2.4, fps=30),  # 30 fps source -> 60 frames at 25 fps
        "stereo": write_video(d / "stereo44k.mov", seconds=2.0, fps=25, rate=44_100, channels=2),
    }


@pytest.fixture(scope="session")
def built(source_clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/HDTF`` built from both source clips with the CLI (read-only for tests: copy before changing it)."""
    from talkingface.commands.preprocess import main

    root = tmp_path_factory.mktemp("built") / "data" / "HDTF"
    clips = [str(source_clips["face"]), str(source_clips["stereo"])]
    assert main(["run", *clips, "--out", str(root), "--size", str(SIZE), "--no-progress"]) == 0
    return root


# ----------------------------------------------------------------------------- the app


@pytest.fixture
def temp_root(tmp_path: Path) -> Path:
    """An empty folder for the app's temporary files."""
    root = tmp_path / "app-temp"
    root.mkdir()
    return root
