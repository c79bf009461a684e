"""Limits on what an upload may cost the server."""

from __future__ import annotations


class UploadError(ValueError):
    """A refused upload or form field: the HTTP ``status`` and the one line ``<subject>: <problem>``."""

    def __init__(self, status: int, subject: str, problem: str) -> None:
        super().__init__(f"{subject}: {problem}")
        self.status = status
