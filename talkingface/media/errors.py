"""Errors raised while preprocessing: always name the file and the problem."""

from __future__ import annotations

import os


class PreprocessError(RuntimeError):
    """A problem with one input (video, audio, feature file or option)."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
