"""How long a lip-sync run still takes: a running average of the measured batches, the first one left out.

The first batch pays for the warm-up (allocations, first kernel launches, a compiled UNet's tracing, the threads
starting) and is often 1.5 to 2.5 times slower than the next ones; later batches can also run slower than the first
one once paste-back and encoding share the cores. So the estimate waits for the second batch and then divides the
time since the end of the first batch by the frames made since then: a running average of the per-frame time, which
gives a final partial batch its share (on a CPU the work of a batch grows with its frames). A compiled UNet samples
every batch at full size (the last one padded): then the batches left are counted, not the frames.

The estimate covers the batches; what runs after the last one (its paste-back and the end of the video file) is
short next to sampling on a CPU and is not counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["LONG_ON_CPU_S", "MIN_SUGGESTED_STEPS", "TimeLeft", "duration", "time_estimate"]

#: On CPU, a generation estimated to take longer than this (seconds) gets a suggestion of fewer ``--steps``.
LONG_ON_CPU_S = 120.0
#: The fewest ``--steps`` the suggestion offers.
MIN_SUGGESTED_STEPS = 5


class TimeLeft:
    """The seconds left of a run of ``total`` frames made in batches of ``batch_size``.

    Call :meth:`batch_done` with each batch's frames as it finishes; it returns the estimate (None after the first
    batch, and once nothing is left to make). ``padded``: every batch costs a full one (a compiled UNet pads the
    last batch). ``clock``: the time source (seconds), for tests.
    """

    def __init__(
        self,
        total: int,
        batch_size: int,
        *,
        padded: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.batch_size, self.padded, self.clock = int(total), max(1, int(batch_size)), padded, clock
        self.done = 0
        self.batches = 0
        self.seconds_left: float | None = None
        self.last_at = clock()  # when the last batch finished (or the estimate began)
        self._since: tuple[float, int, int] | None = None  # (time, frames, batches) at the end of the first batch

    def batch_done(self, n: int) -> float | None:
        """``n`` more frames were made; returns the estimated seconds left (also kept in :attr:`seconds_left`)."""
        now = self.last_at = self.clock()
        self.done += int(n)
        self.batches += 1
        if self._since is None:
            self._since = (now, self.done, self.batches)
            self.seconds_left = None
            return None
        t0, frames0, batches0 = self._since
        left = max(0, self.total - self.done)
        if left == 0:
            self.seconds_left = None
            return None
        if self.padded:
            per_batch = (now - t0) / (self.batches - batches0)
            self.seconds_left = per_batch * math.ceil(left / self.batch_size)
        else:
            per_frame = (now - t0) / max(1, self.done - frames0)
            self.seconds_left = per_frame * left
        return self.seconds_left


def duration(seconds: float) -> str:
    """``"40 s"``, or ``"3 min"`` from 90 s on."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def time_estimate(left_s: float | None, frames_left: int, steps: int) -> str | None:
    """The line logged on CPU once the estimate is known (see :class:`TimeLeft`): the time left, and, when it is long,
    a number of steps that would take about :data:`LONG_ON_CPU_S` (sampling time grows with ``--steps``)."""
    if left_s is None or frames_left <= 0:
        return None
    line = f"about {duration(left_s)} left on CPU for {frames_left} more frames at --steps {steps}"
    suggested = max(MIN_SUGGESTED_STEPS, int(steps * LONG_ON_CPU_S / left_s)) if left_s > LONG_ON_CPU_S else steps
    if suggested < steps:
        line += f"; --steps {suggested} would take about {duration(left_s * suggested / steps)}"
    return line
