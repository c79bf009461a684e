"""Which audio feature backend to use: the kind the checkpoint was trained with, checked against the user's choice."""

from __future__ import annotations

import logging
from typing import Any

from talkingface.inference.errors import InferenceError
from talkingface.media.features import BACKEND_KINDS, AudioFeatureBackend, make_backend

log = logging.getLogger(__name__)

#: Older or hand-written names of the feature kinds (the config comment uses "deepspeech").
KIND_ALIASES = {"deepspeech": "deepspeech29", "logmel": "logmel29", "wav2vec2-ctc": "wav2vec2-ctc29"}
#: Backend name (``--audio-features``) of each kind.
BACKEND_BY_KIND = {kind: name for name, kind in BACKEND_KINDS.items()}
OPTION = "--audio-features"


def feature_kind(name: str) -> str:
    """Normalise a backend name (``mel``) or kind (``logmel29``, ``deepspeech``) to its kind (``logmel29``)."""
    kind = BACKEND_KINDS.get(name, KIND_ALIASES.get(name, name))
    if kind not in BACKEND_BY_KIND:
        choices = ", ".join(sorted(BACKEND_KINDS))
        raise InferenceError(OPTION, f"unknown audio feature kind {name!r}; backends: {choices}")
    return kind


def resolve_feature_backend(
    model_kind: str | None,
    requested: str | None = None,
    options: dict[str, Any] | None = None,
    model_source: str = "model",
) -> AudioFeatureBackend:
    """The backend producing the features the model was trained on.

    Args:
        model_kind: ``model.config.conditioning.audio_feature_kind`` (None for reference-format checkpoints).
        requested: the user's ``--audio-features`` (backend name or kind), or None to follow the model.
        options: backend options (``wav2vec2_model``, ``deepspeech_npy``, ``device``) for ``make_backend``.
        model_source: the checkpoint path, for messages.
    Raises:
        InferenceError: when neither names a kind, a kind is unknown, or the two differ.
    """
    if model_kind is None and requested is None:
        raise InferenceError(
            model_source,
            f"the checkpoint records no audio feature kind (a reference-format checkpoint?); pass {OPTION} "
            f"{'|'.join(sorted(BACKEND_KINDS))} naming the features it was trained on",
        )
    if model_kind is not None:
        try:
            trained = feature_kind(model_kind)
        except InferenceError:
            raise InferenceError(
                model_source, f"trained on audio features {model_kind!r}, which no backend here computes"
            ) from None
    wanted = feature_kind(requested) if requested is not None else trained
    if model_kind is not None and wanted != trained:
        raise InferenceError(
            model_source,
            f"trained on {trained!r} audio features but {OPTION} {requested} computes {wanted!r}; "
            f"use {OPTION} {BACKEND_BY_KIND[trained]} or a checkpoint trained on {wanted!r}",
        )
    if model_kind is None:
        log.warning("%s records no audio feature kind: trusting %s %s (%s)", model_source, OPTION, requested, wanted)
    return make_backend(BACKEND_BY_KIND[wanted], options)
