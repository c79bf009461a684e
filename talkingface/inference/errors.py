"""Errors of the inference pipeline: always name the file (or option) and the problem, on one line."""

from __future__ import annotations

import os

from talkingface.errors import TalkingFaceError


class InferenceError(TalkingFaceError, RuntimeError):
    """A problem with one input of the lip-sync pipeline (a media file, the checkpoint, the output or an option)."""

    def __init__(self, path: str | os.PathLike, problem: str, hint: str | None = None) -> None:
        super().__init__(str(path), problem, hint=hint)
        self.path = str(path)
