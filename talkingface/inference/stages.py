"""Where a lip-sync run's time goes: wall-clock seconds per stage, for the benchmarks' per-stage tables.

``StageClock(sync=True)`` waits for the device before and after every stage, so GPU work is charged to the stage
that queued it (that wait slows the run a little: profile in a separate pass). Stages timed from several threads
(the pipelined loop's input and paste-back workers) add up; their sum can then exceed the run's wall time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import torch

#: The pipeline's stages in the order a frame goes through them.
STAGES = (
    "inputs",  # CPU: crops, masks, landmarks, paste-back alphas
    "upload",  # host -> device copies of the frame inputs
    "encode",  # first-stage encode of the frames and masked images
    "sample",  # the sampler's UNet evaluations
    "decode",  # first-stage decode
    "download",  # device -> host copy of the generated faces
    "paste",  # CPU paste-back into the source frames
    "write",  # H.264 + AAC encoding (and PNG frames)
)

STAGE_LABELS = {
    "inputs": "CPU frame inputs (crops, masks, landmarks, alphas)",
    "upload": "host-to-device copies",
    "encode": "first-stage encode (frames and masked images)",
    "sample": "UNet evaluations (sampler)",
    "decode": "first-stage decode",
    "download": "device-to-host copy",
    "paste": "CPU paste-back",
    "write": "video encoding (H.264 + AAC)",
}


class StageClock:
    """Accumulates seconds per stage (thread-safe). ``device``: synchronised around each stage when ``sync``."""

    def __init__(self, device: torch.device | str | None = None, sync: bool = True) -> None:
        self.device = torch.device(device) if device is not None else None
        self.sync = sync
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def _wait(self) -> None:
        if self.sync and self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._wait()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._wait()
            dt = time.perf_counter() - t0
            with self._lock:
                self.seconds[name] = self.seconds.get(name, 0.0) + dt

    def table(self, n_frames: int, wall_s: float) -> list[dict[str, float | str]]:
        """Rows ``{stage, label, ms_per_frame, share}`` in pipeline order; ``share`` of ``wall_s``."""
        rows = []
        for name in (*STAGES, *sorted(set(self.seconds) - set(STAGES))):
            if name in self.seconds:
                s = self.seconds[name]
                rows.append(
                    {
                        "stage": name,
                        "label": STAGE_LABELS.get(name, name),
                        "ms_per_frame": 1e3 * s / max(n_frames, 1),
                        "share": s / max(wall_s, 1e-9),
                    }
                )
        return rows


@contextlib.contextmanager
def timed(clock: StageClock | None, name: str) -> Iterator[None]:
    """``clock.stage(name)``, or nothing without a clock."""
    if clock is None:
        yield
    else:
        with clock.stage(name):
            yield
