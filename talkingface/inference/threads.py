"""Worker threads of the pipelined lip-sync loop: a bounded, ordered background consumer that hands its errors back.

The generating thread puts each finished batch; one background thread consumes them in order (paste-back and
encoding) while the next batch is generated. At most ``depth`` batches wait, so memory stays bounded however long
the video. An error in the consumer is raised in the producer at its next ``put`` (or at ``close``); an error or
Ctrl-C in the producer stops the consumer after the batch in hand, before the output files are finalised or removed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

_END = object()
#: Seconds between checks of the consumer's health while the producer waits for room in the queue.
POLL_S = 0.1


class BackgroundSink:
    """``with BackgroundSink(consume) as sink: sink.put(item)``: ``consume(item)`` runs on one background thread, in
    order. Leaving the block normally waits for every item and raises the consumer's error, if any; leaving it with
    an exception stops the consumer after its current item (the rest are dropped) and joins it."""

    def __init__(self, consume: Callable[[Any], None], depth: int = 2, name: str = "talkingface-sink") -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._consume = consume
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> BackgroundSink:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None or self._stop.is_set():
                continue  # drain without work until the end marker
            try:
                self._consume(item)
            except BaseException as err:  # handed to the producer
                self._error = err

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: Any) -> None:
        """Queue ``item``; waits while ``depth`` items wait; raises the consumer's error as soon as there is one."""
        while True:
            self._check()
            try:
                self._queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _finish(self) -> None:
        # the consumer drains everything after an error or a stop, so the end marker always finds room
        while self._thread.is_alive():
            try:
                self._queue.put(_END, timeout=POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._stop.set()
            self._finish()
            return
        self._finish()
        self._check()


class SerialSink:
    """:class:`BackgroundSink`'s interface, consuming on the calling thread (the serial loop)."""

    def __init__(self, consume: Callable[[Any], None]) -> None:
        self._consume = consume

    def __enter__(self) -> SerialSink:
        return self

    def put(self, item: Any) -> None:
        self._consume(item)

    def __exit__(self, *exc: object) -> None:
        return None
