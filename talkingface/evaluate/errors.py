"""Errors raised by the evaluation harness: always name the file (or option) and the problem."""

from __future__ import annotations

import os


class EvaluationError(RuntimeError):
    """A problem with one input of the evaluation (a media file, a weight file or an option)."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingWeightsError(EvaluationError):
    """An optional metric was requested without the weight file it needs (nothing is ever downloaded)."""

    def __init__(self, metric: str, option: str, expected: str) -> None:
        self.metric = metric
        self.option = option
        super().__init__(
            option, f"metric {metric!r} needs {expected}; pass it with {option} PATH (nothing is downloaded)"
        )
