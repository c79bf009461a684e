"""Which audio feature backend to use: the kind the checkpoint was trained with, checked against the user's choice."""

from __future__ import annotations

import logging
from typing import Any

from talkingface.inference.errors import InferenceError
from talkingface.media.features import BACKEND_KINDS, AudioFeatureBackend, backend_for_kind, make_backend

log = logging.getLogger(__name__)

#: Older or hand-written names of the feature kinds (the config comment uses "deepspeech").
KIND_ALIASES = {"deepspeech": "deepspeech29", "logmel": "logmel29", "wav2vec2-ctc": "wav2vec2-ctc29"}
OPTION = "--audio-features"
#: The option naming the model folder of the backends that need one.
MODEL_OPTION = {"whisper": "--whisper-model", "wav2vec2": "--wav2vec2-model"}


def feature_kind(name: str) -> str:
    """Normalise a backend name (``mel``) or kind (``logmel29``, ``deepspeech``, ``whisper-tiny.en-384``) to a kind.

    ``whisper`` (the backend name) stays ``whisper``: its kind depends on the model folder.
    """
    kind = BACKEND_KINDS.get(name, KIND_ALIASES.get(name, name))
    if kind != "whisper" and backend_for_kind(kind) is None:
        choices = ", ".join(sorted(BACKEND_KINDS))
        raise InferenceError(OPTION, f"unknown audio feature kind {name!r}; backends: {choices}")
    return kind


def resolve_feature_backend(
    model_kind: str | None,
    requested: str | None = None,
    options: dict[str, Any] | None = None,
    model_source: str = "model",
    feature_dim: int | None = None,
) -> AudioFeatureBackend:
    """The backend producing the features the model was trained on.

    Args:
        model_kind: ``model.config.conditioning.audio_feature_kind`` (None for reference-format checkpoints).
        requested: the user's ``--audio-features`` (backend name or kind), or None to follow the model.
        options: backend options (``wav2vec2_model``, ``whisper_model``, ``deepspeech_npy``, ``device``).
        model_source: the checkpoint path, for messages.
        feature_dim: the model's ``audio_feature_dim``; the backend's features must have it.
    Raises:
        InferenceError: when neither names a kind, a kind is unknown, or the two differ (a whisper model folder of
        another size than the checkpoint's included).
    """
    if model_kind is None and requested is None:
        raise InferenceError(
            model_source,
            f"the checkpoint records no audio feature kind (a reference-format checkpoint?); pass {OPTION} "
            f"{'|'.join(sorted(BACKEND_KINDS))} naming the features it was trained on",
        )
    trained = None
    if model_kind is not None:
        try:
            trained = feature_kind(model_kind)
        except InferenceError:
            raise InferenceError(
                model_source, f"trained on audio features {model_kind!r}, which no backend here computes"
            ) from None
    wanted = feature_kind(requested) if requested is not None else trained
    name = "whisper" if wanted == "whisper" else backend_for_kind(wanted)
    if trained is not None and backend_for_kind(trained) != name:
        raise InferenceError(
            model_source,
            f"trained on {trained!r} audio features but {OPTION} {requested} computes {wanted!r}; "
            f"use {OPTION} {backend_for_kind(trained)} or a checkpoint trained on {wanted!r}",
        )
    if model_kind is None:
        log.warning("%s records no audio feature kind: trusting %s %s (%s)", model_source, OPTION, requested, wanted)
    backend = make_backend(name, options)
    computed = backend.kind
    folder = f" {MODEL_OPTION[name]} {(options or {}).get(name + '_model')}" if name in MODEL_OPTION else ""
    if trained not in (None, "whisper") and computed != trained:
        raise InferenceError(
            model_source, f"trained on {trained!r} audio features but {OPTION} {name}{folder} computes {computed!r}"
        )
    if wanted not in (None, "whisper") and computed != wanted:
        raise InferenceError(OPTION, f"{requested} asked for {wanted!r} but {name}{folder} computes {computed!r}")
    if feature_dim is not None and backend.dim != feature_dim:
        raise InferenceError(
            model_source,
            f"the model's model.conditioning.audio_feature_dim is {feature_dim} but {OPTION} {name} computes "
            f"{backend.dim} features per frame ({computed!r})",
        )
    return backend
