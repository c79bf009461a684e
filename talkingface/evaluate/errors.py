"""Errors raised by the evaluation harness: always name the file (or option) and the problem."""

from __future__ import annotations

import os

from talkingface.errors import TalkingFaceError


class EvaluationError(TalkingFaceError, RuntimeError):
    """A problem with one input of the evaluation (a media file, a weight file or an option)."""

    def __init__(self, path: str | os.PathLike, problem: str, hint: str | None = None) -> None:
        super().__init__(str(path), problem, hint=hint)
        self.path = str(path)


class MissingWeightsError(EvaluationError):
    """An optional metric was requested without the weight file it needs (nothing is ever downloaded)."""

    def __init__(self, metric: str, option: str, expected: str) -> None:
        self.metric = metric
        self.option = option
        super().__init__(
            option, f"metric {metric!r} needs {expected}", f"pass it with {option} PATH (nothing is downloaded)"
        )
        self.args = (metric, option, expected)
