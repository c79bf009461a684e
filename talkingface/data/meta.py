"""What ``meta.json`` says: its keys, the ``audio_feature`` entry and the checks against what a model expects.

Reading and writing the file is :class:`talkingface.data.layout.DatasetLayout`'s job (``read_meta`` /
``write_meta``); this module owns its content.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from talkingface.constants import AUDIO_WINDOW, FEATURE_DIM, FEATURE_RATE_HZ, SMOOTH_WINDOWS
from talkingface.errors import TalkingFaceError

META_VERSION = 1
#: Keys every ``meta.json`` has.
REQUIRED_KEYS = ("audio_feature", "fps", "image_size", "videos")
FRAME_NUMBERING = "videos 1-based, frames 0-based; data.txt 'v n' means frames 0..n-1 exist"


class DatasetMetaError(TalkingFaceError, ValueError):
    """The dataset's metadata is missing, malformed or does not match what the caller expects."""


def audio_feature_spec(kind: str, dim: int = FEATURE_DIM) -> dict[str, Any]:
    """The ``meta.json`` ``audio_feature`` entry for a feature ``kind`` of ``dim`` channels per frame."""
    return {
        "kind": kind,
        "dim": int(dim),
        "window": AUDIO_WINDOW,
        "smooth": SMOOTH_WINDOWS,
        "rate_hz": FEATURE_RATE_HZ,
        "smooth_edge": "zero",
    }


def dataset_meta(settings: Mapping[str, Any], videos: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``meta.json`` object: ``settings`` (``fps``, ``image_size``, ``audio_feature``), per-video entries keyed
    by video number, and ``extra`` keys (such as ``source``)."""
    return {"version": META_VERSION, **settings, "frame_numbering": FRAME_NUMBERING, **extra, "videos": dict(videos)}


def check_meta(meta: Any, path: str | os.PathLike) -> None:
    """Fail unless ``meta`` (read from ``path``) is an object with the keys the loader needs.

    Raises:
        DatasetMetaError: naming ``path``.
    """
    if not isinstance(meta, dict):
        raise DatasetMetaError(f"{path}: expected a JSON object")
    for key in REQUIRED_KEYS:
        if key not in meta:
            raise DatasetMetaError(f"{path}: missing key {key!r}")
    feat = meta["audio_feature"]
    if not isinstance(feat, dict) or "kind" not in feat:
        raise DatasetMetaError(f"{path}: 'audio_feature' must be an object with a 'kind'")


def meta_feature_dim(meta: Mapping[str, Any]) -> int:
    """The dataset's feature dimension (``audio_feature.dim``; datasets that do not record it have 29)."""
    dim = (meta.get("audio_feature") or {}).get("dim", FEATURE_DIM)
    return int(dim) if isinstance(dim, int) and dim > 0 else FEATURE_DIM


def check_feature_kind(meta: Mapping[str, Any], expected_kind: str | Mapping[str, Any] | None) -> None:
    """Fail unless the dataset's audio features are of ``expected_kind`` with the standard window dimensions.

    ``expected_kind`` is a kind name (``"logmel29"``, ``"wav2vec2-ctc29"``, ``"deepspeech29"``,
    ``"whisper-tiny.en-384"``) or a dict with ``kind`` and optionally ``dim``/``window``/``smooth``/``rate_hz`` (a
    model's config gives ``dim``). ``None`` only checks the dimensions. Without an expected ``dim`` any positive
    ``dim`` passes (the files are checked against it when read).

    Raises:
        DatasetMetaError: with both the dataset's and the expected description.
    """
    feat = dict(meta.get("audio_feature") or {})
    expected: dict[str, Any] = audio_feature_spec(feat.get("kind", "?"), meta_feature_dim(meta))
    if isinstance(expected_kind, str):
        expected["kind"] = expected_kind
    elif expected_kind is not None:
        expected.update(expected_kind)
    if "dim" in feat and feat["dim"] != expected["dim"]:
        raise DatasetMetaError(
            f"audio feature dim mismatch: the dataset has {feat.get('kind')!r} features of dim {feat['dim']} but the "
            f"model's model.conditioning.audio_feature_dim is {expected['dim']}"
        )
    for key in ("kind", "dim", "window", "smooth", "rate_hz"):
        if key == "kind" and expected_kind is None:
            continue
        if feat.get(key) != expected.get(key):
            raise DatasetMetaError(
                f"audio feature mismatch: dataset has {key}={feat.get(key)!r} but the model expects "
                f"{key}={expected.get(key)!r} (dataset audio_feature={feat}). Rebuild the dataset with the "
                f"matching --audio-features, or use a model trained on {feat.get('kind')!r} features."
            )
