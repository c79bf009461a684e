"""The one family of errors: every error the package raises for the user to act on is a :class:`TalkingFaceError`.

An error says where (the file or flag, or None), what the problem is and, where there is one, the next step::

    raise InferenceError("person.mp4", "no face in 40 of 50 frames", hint="pass --face x,y or another video")

``str(err)`` is ``"<where>: <problem>"``, followed by ``"; <next step>"`` when there is one, so that every reader of
the message (a log, the web app, a caller's ``except``) gets the next step too; :meth:`TalkingFaceError.cli_line` is
the command line's one line ``error: <where>: <problem>; <next step>``. Each subclass keeps the built-in base it had
before (``ConfigError`` is also a ``ValueError``), so code that catches the built-in still catches it. This module
imports nothing of the package: every layer can raise these.
"""

from __future__ import annotations

import errno

#: The exit status of bad input (see ``talkingface.cli_support``).
EXIT_USAGE = 2
#: ``OSError.errno`` values of a full disk (or a full quota).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


class TalkingFaceError(Exception):
    """Bad input, or a step that failed in a way the user can act on.

    ``TalkingFaceError(where, problem, hint=None)``: ``where`` the file or flag (or None), ``problem`` the text,
    ``hint`` the next step (or None). ``TalkingFaceError(message)`` (one argument, the older form) takes a message
    that already starts with its file or flag. :attr:`exit_status` is the command's exit status (2: bad input).
    """

    exit_status: int = EXIT_USAGE

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        if len(args) >= 2:
            where, problem = args[0], args[1]
            self.where: str | None = None if where is None else str(where)
            self.problem = str(problem)
        else:
            self.where = None
            self.problem = str(args[0]) if args else ""
        self.hint = hint

    def __str__(self) -> str:
        text = self.problem if self.where is None else f"{self.where}: {self.problem}"
        return f"{text}; {self.hint}" if self.hint else text

    def cli_line(self) -> str:
        """The one line a command prints: ``error: <where>: <problem>`` and ``; <next step>`` when there is one."""
        return f"error: {one_line(self)}"
