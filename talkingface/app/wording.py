"""Messages shown on the page in the form's words: the lip-sync library words its errors for the command line
(``--audio``, ``--max-missing``), which the page has no use for.

A flag the form has a field for becomes the field's label (``--steps`` -> ``Steps``); a remedy worded for the command
line is worded for the form; any other flag is named as an option of ``talkingface lipsync`` (something the page does
not offer), never as text to type. The server's own limits (``the server's --max-seconds``) stay as they are: they
name what the operator of the server sets.
"""

from __future__ import annotations

import re

#: Flags of ``talkingface lipsync`` that the form has a field for -> the field's label on the page.
FORM_LABELS = {
    "video": "Portrait video",
    "audio": "Speech",
    "landmarks": "Face landmarks",
    "ckpt": "Checkpoint",
    "sampler": "Sampler",
    "steps": "Steps",
}
#: The choices of the form's Speech field, for remedies that ask for another speech.
OTHER_SPEECH = 'under Speech, choose "my audio or video file, or a recording" or "the sample"'
#: Remedies worded for the command line -> the page's words (applied before the flags are renamed).
REWORDED = (
    (re.compile(r"\s*\(give a separate audio file with --audio\)"), f"; {OTHER_SPEECH}"),
    (re.compile(r"--max-missing (\d+%)"), r"the \1 allowed"),
    (re.compile(r"\b(?:pass|give) --ckpt PATH\b"), "choose another Checkpoint"),
)
#: A flag with its metavar (``--ckpt PATH``), unless it is one of the server's own (``the server's --max-seconds``).
FLAG = re.compile(r"(?<!the server's )(?<![\w-])--([a-z][a-z0-9-]*)(?: [A-Z][A-Z_]*\b)?")


def _flag(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in FORM_LABELS:
        return FORM_LABELS[name]
    return f'the "{name.replace("-", " ")}" option of talkingface lipsync'


def page_wording(text: str) -> str:
    """``text`` with the command line's flags and remedies in the form's words (see the module docstring)."""
    for pattern, replacement in REWORDED:
        text = pattern.sub(replacement, text)
    return FLAG.sub(_flag, text)
