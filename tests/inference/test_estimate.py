"""The time-left estimate of a lip-sync run: a running average of the batches after the first (warm-up) one, on a
fake clock with known batch durations."""

from __future__ import annotations

import pytest

from talkingface.inference.estimate import TimeLeft, time_estimate

TOLERANCE = 0.30  # the estimate is within 30 % of the time really left


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batch_sizes(total: int, batch_size: int) -> list[int]:
    return [min(batch_size, total - start) for start in range(0, total, batch_size)]


def estimates(durations: list[float], sizes: list[int], batch_size: int, padded: bool = False) -> list[tuple]:
    """``(estimate, truth)`` after each batch whose estimate is given (the truth: the durations still to come)."""
    clock = FakeClock()
    pace = TimeLeft(sum(sizes), batch_size, padded=padded, clock=clock)
    out = []
    for k, (seconds, n) in enumerate(zip(durations, sizes, strict=True)):
        clock.now += seconds
        left = pace.batch_done(n)
        assert pace.seconds_left == left and pace.last_at == clock.now
        out.append((left, sum(durations[k + 1 :])))
    return out


def per_frame_durations(sizes: list[int], first: float, per_frame: list[float]) -> list[float]:
    """A warm-up first batch of ``first`` seconds, then each batch ``n`` frames x its per-frame time."""
    return [first] + [n * per_frame[k % len(per_frame)] for k, n in enumerate(sizes[1:])]


@pytest.mark.parametrize(
    ("first", "per_frame"),
    [
        (40.0, [1.0]),  # the warm-up batch 2.5 x slower than the others (the estimate after it was 2.5 x too long)
        (6.0, [1.0]),  # the first batch faster than the next (paste-back and encoding then share the cores)
        (16.0, [0.8, 1.2, 1.0, 0.9, 1.1]),  # batch times that vary by +-20 %
    ],
)
def test_estimates_from_the_second_batch_are_within_30_percent(first: float, per_frame: list[float]) -> None:
    sizes = batch_sizes(100, 16)  # 6 full batches and a final partial one of 4 frames
    runs = estimates(per_frame_durations(sizes, first, per_frame), sizes, 16)
    assert runs[0][0] is None  # the warm-up batch alone gives no estimate
    assert runs[-1] == (None, 0)  # nothing left
    for k, (left, truth) in enumerate(runs[1:-1], start=2):
        assert left is not None and abs(left - truth) <= TOLERANCE * truth, (k, left, truth)


def test_the_first_batch_alone_would_be_off() -> None:
    """The pattern above is one the old estimate (from the first batch) got wrong by more than 30 %."""
    sizes = batch_sizes(100, 16)
    for first in (40.0, 6.0):
        durations = per_frame_durations(sizes, first, [1.0])
        from_first_batch = first / sizes[0] * (100 - sizes[0])
        assert abs(from_first_batch - sum(durations[1:])) > TOLERANCE * sum(durations[1:])


def test_a_final_partial_batch_takes_its_share_of_a_batch() -> None:
    """The last estimate before a 4-frame batch expects a quarter of a full batch, not a whole one."""
    sizes = [16, 16, 16, 4]
    runs = estimates([30.0, 16.0, 16.0, 4.0], sizes, 16)
    assert runs[2] == (pytest.approx(4.0), 4.0)
    assert runs[1] == (pytest.approx(20.0), 20.0)


def test_padded_batches_cost_a_full_batch_each() -> None:
    """A compiled UNet samples the last batch padded to full size: it costs as much as the others."""
    sizes = [16, 16, 16, 4]
    durations = [30.0, 16.0, 16.0, 16.0]
    runs = estimates(durations, sizes, 16, padded=True)
    assert runs[1] == (pytest.approx(32.0), 32.0) and runs[2] == (pytest.approx(16.0), 16.0)
    per_frame = estimates(durations, sizes, 16)  # counting frames would expect a quarter of it
    assert per_frame[2][0] == pytest.approx(4.0)


def test_one_frame_batches_and_a_single_batch() -> None:
    assert estimates([5.0], [1], 1) == [(None, 0)]
    runs = estimates([9.0, 2.0, 2.0, 2.0], [1, 1, 1, 1], 1)
    assert [r[0] for r in runs] == [None, pytest.approx(4.0), pytest.approx(2.0), None]


def test_the_logged_line() -> None:
    assert time_estimate(None, 32, 25) is None  # no estimate yet
    assert time_estimate(6.0, 0, 25) is None  # nothing left
    assert time_estimate(6.0, 32, 25) == "about 6 s left on CPU for 32 more frames at --steps 25"
    assert time_estimate(360.0, 128, 25) == (
        "about 6 min left on CPU for 128 more frames at --steps 25; --steps 8 would take about 2 min"
    )
    assert time_estimate(99_000.0, 99, 25).endswith("--steps 5 would take about 330 min")  # the fewest offered
