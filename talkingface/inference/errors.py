"""Errors of the inference pipeline: always name the file (or option) and the problem, on one line."""

from __future__ import annotations

import os


class InferenceError(RuntimeError):
    """A problem with one input of the lip-sync pipeline (a media file, the checkpoint, the output or an option)."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
