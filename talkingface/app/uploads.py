"""The ``POST /api/jobs`` form, read while it arrives: each file goes straight into the job's folder and every limit
is checked as the bytes come, so a body without a length (chunked) is stopped as soon as it passes one.

Only a ``multipart/form-data`` body is a form (what the page's ``FormData`` and ``curl -F`` send): any other body, or
none, is refused (415) before a byte of it is read, so that a stray request cannot start a job with every default.

Limits: ``limit.file_bytes`` per file (``--max-upload-mb``), :data:`MAX_FIELD_BYTES` per text field,
:data:`MAX_FIELDS` text fields, and the whole body at most three files' worth plus :data:`FORM_OVERHEAD` (which also
bounds what a sender could add after the form's last boundary, which the parser skips).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

try:
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # python-multipart before 0.0.13
    from multipart.exceptions import FormParserError  # type: ignore[no-redef]
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

from talkingface.app.limits import UploadError
from talkingface.errors import one_line
from talkingface.media.decode import VIDEO_EXTENSIONS

AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".oga", ".opus", ".webm")
ACCEPT = {
    "video": VIDEO_EXTENSIONS,
    "speech": AUDIO_EXTENSIONS + tuple(s for s in VIDEO_EXTENSIONS if s not in AUDIO_EXTENSIONS),
    "landmarks": (".npy",),
}
MEDIA_TYPES = ("video/", "audio/")
NEUTRAL_TYPES = ("", "application/octet-stream")  # what a browser sends when it does not know the type
MAX_FIELDS = 16
MAX_FIELD_BYTES = 64 * 1024  # a checkpoint path, a number, a choice
FORM_OVERHEAD = 1 << 20  # boundaries, part headers and text fields, on top of the files


@dataclass(frozen=True)
class UploadLimit:
    """``--max-upload-mb``: the bytes of one file, and of the whole request body."""

    mb: float

    @property
    def file_bytes(self) -> int:
        return int(self.mb * 1024 * 1024)

    @property
    def request_bytes(self) -> int:
        return len(ACCEPT) * self.file_bytes + FORM_OVERHEAD

    def too_large(self, subject: str) -> UploadError:
        return UploadError(413, subject, f"larger than the {self.mb:g} MB upload limit (the server's --max-upload-mb)")


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # "video", "speech", "landmarks" -> the saved file
    names: dict[str, str] = field(default_factory=dict)  # the same -> the user's name of the file (for messages)


def safe_name(filename: str | None, fallback: str) -> str:
    """The name a file is saved under: ASCII letters, digits, ``._-`` (others become ``_``), at most 100."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename or "").name).lstrip(".")[-100:]
    return name or fallback


#: What browsers escape in a multipart file name (the HTML standard: ``"`` and line breaks), and what it was.
BROWSER_ESCAPES = {"%22": '"', "%0A": " ", "%0D": " "}


def display_name(filename: str | None, fallback: str) -> str:
    """The user's own name of an upload, as messages show it (``ünï clip.mp4`` stays so): its last path part, on one
    line, without control or format characters (no newline, no right-to-left override), at most 100 characters."""
    name = re.split(r"[/\\]", filename or "")[-1]
    name = re.sub("|".join(BROWSER_ESCAPES), lambda m: BROWSER_ESCAPES[m.group(0)], name)
    name = "".join(c for c in one_line(name) if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    return name[-100:].strip() or fallback


def check_type(what: str, filename: str, content_type: str) -> str:
    """The name to save an upload of field ``what`` under; 415 (naming it by :func:`display_name`) unless its suffix
    and type suit ``what``."""
    name, shown = safe_name(filename, what), display_name(filename, what)
    suffix = Path(name).suffix.lower()
    accepted = ACCEPT[what]
    if suffix not in accepted:
        raise UploadError(
            415, shown, f"unsupported {what} type {suffix or '(none)'!r}; use one of {', '.join(accepted)}"
        )
    content_type = content_type.split(";")[0].strip().lower()
    if what != "landmarks" and content_type not in NEUTRAL_TYPES and not content_type.startswith(MEDIA_TYPES):
        raise UploadError(415, shown, f"sent as {content_type!r}, which is not video or audio")
    return name


async def read_form(content_type: str, body: AsyncIterator[bytes], folder: Path, limit: UploadLimit) -> Form:
    """The multipart form of a request body, its files saved into ``folder/<field>/<their name>``; raises
    :class:`UploadError` at the first problem, having read no further (what it saved stays in ``folder``, for the
    caller to remove), and (415) at once for a body that is not a multipart form."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        sent = f"sent as {kind.decode('latin-1')[:100]!r}" if kind else "no form sent"
        raise UploadError(415, "upload", f"{sent}; send a multipart/form-data form (as the app's page does)")
    if not params.get(b"boundary"):
        raise UploadError(400, "upload", "a multipart form without a boundary")
    parser = _MultipartForm(params[b"boundary"], folder, limit)
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > limit.request_bytes:
                raise limit.too_large("upload")
            parser.write(chunk)
        return parser.finish()
    except FormParserError as err:
        raise UploadError(400, "upload", f"not a valid multipart form ({err})") from err
    finally:
        parser.close()


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    subject: str = ""  # what messages call it: the user's name of a file, else the field's name
    file: BinaryIO | None = None
    is_file: bool = False  # a file part (possibly an empty file input, which is read and dropped)
    size: int = 0
    data: bytearray = field(default_factory=bytearray)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class _MultipartForm:
    """python-multipart's streaming parser, its callbacks writing the files and checking the limits."""

    def __init__(self, boundary: bytes, folder: Path, limit: UploadLimit) -> None:
        self.folder, self.limit = folder, limit
        self.form = Form()
        self.fields = 0
        self.ended = False
        self.part = _Part()
        self.header_name = self.header_value = b""
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }
        self.parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]

    def write(self, chunk: bytes) -> None:
        self.parser.write(chunk)

    def finish(self) -> Form:
        if not self.ended:
            raise UploadError(400, "upload", "the form ended before its last boundary")
        return self.form

    def close(self) -> None:
        if self.part.file is not None:
            self.part.file.close()

    # ---------------------------------------------------------------- callbacks
    def _part_begin(self) -> None:
        self.part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def _header_end(self) -> None:
        self.part.headers[self.header_name.lower()] = self.header_value
        self.header_name = self.header_value = b""

    def _headers_finished(self) -> None:
        part = self.part
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise UploadError(400, "upload", "a form part without a name")
        part.name = part.subject = _text(options[b"name"])
        if b"filename" not in options:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise UploadError(400, "upload", f"more than {MAX_FIELDS} fields")
            return
        part.is_file = True
        if part.name not in ACCEPT:
            raise UploadError(400, part.name, f"unexpected file; send {', '.join(ACCEPT)}")
        filename = _text(options[b"filename"])
        if not filename:
            return  # an empty file input: nothing chosen
        if part.name in self.form.files:
            raise UploadError(400, part.name, "sent twice")
        saved = check_type(part.name, filename, _text(part.headers.get(b"content-type", b"")))
        part.subject = display_name(filename, part.name)
        target = self.folder / part.name / saved
        target.parent.mkdir()
        self.form.files[part.name] = target
        self.form.names[part.name] = part.subject
        part.file = target.open("wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part.is_file:
            part.size += end - start
            if part.size > self.limit.file_bytes:
                raise self.limit.too_large(part.subject)
            if part.file is not None:
                part.file.write(data[start:end])
        else:
            part.data += data[start:end]
            if len(part.data) > MAX_FIELD_BYTES:
                raise UploadError(413, part.subject, f"longer than {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        part = self.part
        if part.file is not None:
            part.file.close()
            part.file = None
        elif not part.is_file:
            self.form.fields[part.name] = _text(bytes(part.data))

    def _end(self) -> None:
        self.ended = True
