"""Helpers of the app tests (no tests here): an app served by a real uvicorn server on a free port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI


@contextlib.contextmanager
def serve(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free port of ``host`` (a loopback address): its base URL
    ``http://HOST:PORT``, the server started, then stopped with its lifespan."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind((host, 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        try:
            yield f"http://{host}:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(60)
