"""Errors raised while preprocessing: always name the file and the problem."""

from __future__ import annotations

import os

from talkingface.errors import TalkingFaceError


class PreprocessError(TalkingFaceError, RuntimeError):
    """A problem with one input (video, audio, feature file or option)."""

    def __init__(self, path: str | os.PathLike, problem: str, hint: str | None = None) -> None:
        super().__init__(str(path), problem, hint=hint)
        self.path = str(path)
