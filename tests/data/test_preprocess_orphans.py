"""D6: the workers of a ``preprocess run --workers 2`` stop when the parent is killed (no orphans left writing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _processes() -> dict[int, tuple[int, str]]:
    """``pid -> (parent pid, state)`` of the live processes (zombies included), from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def _descendants(pid: int) -> set[int]:
    table = _processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pids: set[int]) -> set[int]:
    table = _processes()
    return {p for p in pids if p in table and table[p][1] != "Z"}


@pytest.mark.slow
def test_workers_die_with_a_killed_parent(source_clips: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "data" / "HDTF"
    clips = [str(source_clips["face"]), str(source_clips["stereo"])]
    argv = [sys.executable, "-m", "talkingface.preprocess", "run", *clips]
    argv += ["--out", str(root), "--size", "64", "--no-progress", "--workers", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            workers = {p for p in _descendants(proc.pid) if "spawn_main" in _cmdline(p)}
        assert len(workers) == 2, "the run ended or never started two workers"
        time.sleep(1.0)  # let them start working
        children = _descendants(proc.pid)  # the workers and multiprocessing's helpers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(children) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _alive(children)
        assert not left, [_cmdline(p) for p in left]
        listing = sorted(root.rglob("*"))
        time.sleep(0.5)
        assert sorted(root.rglob("*")) == listing  # nobody writes into --out any more
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the run's whole session: leave nothing behind if the test failed
        except ProcessLookupError:
            pass
