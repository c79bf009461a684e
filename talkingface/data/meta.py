"""Dataset metadata (``meta.json``), ``data.txt`` and split-list helpers shared by writer, loader and validator."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from talkingface.data.constants import (
    AUDIO_WINDOW,
    DATA_TXT,
    FEATURE_DIM,
    FEATURE_RATE_HZ,
    META_JSON,
    SMOOTH_WINDOWS,
)


class DatasetMetaError(ValueError):
    """The dataset's metadata is missing, malformed or does not match what the caller expects."""


def audio_feature_spec(kind: str) -> dict[str, Any]:
    """The ``meta.json`` ``audio_feature`` entry for a feature ``kind``."""
    return {
        "kind": kind,
        "dim": FEATURE_DIM,
        "window": AUDIO_WINDOW,
        "smooth": SMOOTH_WINDOWS,
        "rate_hz": FEATURE_RATE_HZ,
        "smooth_edge": "zero",
    }


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_dataset_meta(root: str | os.PathLike) -> dict[str, Any]:
    """Read and sanity-check ``<root>/meta.json``.

    Raises:
        DatasetMetaError: naming the file, when it is absent, not JSON, or lacks the required keys.
    """
    path = Path(root) / META_JSON
    if not path.is_file():
        raise DatasetMetaError(
            f"{path}: missing. Build the dataset with `python -m talkingface.preprocess run ... --out {root}`."
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetMetaError(f"{path}: unreadable ({e})") from e
    if not isinstance(meta, dict):
        raise DatasetMetaError(f"{path}: expected a JSON object")
    for key in ("audio_feature", "fps", "image_size", "videos"):
        if key not in meta:
            raise DatasetMetaError(f"{path}: missing key {key!r}")
    feat = meta["audio_feature"]
    if not isinstance(feat, dict) or "kind" not in feat:
        raise DatasetMetaError(f"{path}: 'audio_feature' must be an object with a 'kind'")
    return meta


def check_feature_kind(meta: Mapping[str, Any], expected_kind: str | Mapping[str, Any] | None) -> None:
    """Fail unless the dataset's audio features are of ``expected_kind`` with the standard dimensions.

    ``expected_kind`` is a kind name (``"logmel29"``, ``"wav2vec2-ctc29"``, ``"deepspeech29"``) or a dict with
    ``kind`` and optionally ``dim``/``window``/``smooth``/``rate_hz``. ``None`` only checks the dimensions.

    Raises:
        DatasetMetaError: with both the dataset's and the expected description.
    """
    feat = dict(meta.get("audio_feature") or {})
    expected: dict[str, Any] = audio_feature_spec(feat.get("kind", "?"))
    if isinstance(expected_kind, str):
        expected["kind"] = expected_kind
    elif expected_kind is not None:
        expected.update(expected_kind)
    for key in ("kind", "dim", "window", "smooth", "rate_hz"):
        if key == "kind" and expected_kind is None:
            continue
        if feat.get(key) != expected.get(key):
            raise DatasetMetaError(
                f"audio feature mismatch: dataset has {key}={feat.get(key)!r} but the model expects "
                f"{key}={expected.get(key)!r} (dataset audio_feature={feat}). Rebuild the dataset with the "
                f"matching --audio-features, or use a model trained on {feat.get('kind')!r} features."
            )


def read_data_txt(root: str | os.PathLike) -> list[int]:
    """Frame counts per video from ``data.txt``: element ``v - 1`` is video ``v``'s count (as the reference reads it).

    Raises:
        DatasetMetaError: when the file is missing, a line is malformed, or lines are not ``1..K`` in order.
    """
    path = Path(root) / DATA_TXT
    if not path.is_file():
        raise DatasetMetaError(f"{path}: missing")
    counts: list[int] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            raise DatasetMetaError(f"{path}:{lineno}: expected 'video frame_count', got {line!r}")
        v, n = int(parts[0]), int(parts[1])
        if v != len(counts) + 1:
            raise DatasetMetaError(
                f"{path}:{lineno}: video {v} on line {len(counts) + 1}; the loader indexes data.txt by "
                "line (line v holds video v), so videos must be 1..K in order"
            )
        counts.append(n)
    return counts


def format_data_txt(counts: Iterable[int]) -> str:
    return "".join(f"{v} {n}\n" for v, n in enumerate(counts, 1))


def parse_name(name: str) -> tuple[int, int]:
    """``"<v>_<f>" -> (v, f)``; raises ValueError for anything else."""
    v, sep, f = name.partition("_")
    if not sep or not v.isdigit() or not f.isdigit():
        raise ValueError(f"not a '<video>_<frame>' name: {name!r}")
    return int(v), int(f)


def default_split_dir(root: str | os.PathLike) -> Path:
    """Where split lists go by default: the dataset root's parent (``data/`` for ``data/HDTF``)."""
    return Path(root).resolve().parent
