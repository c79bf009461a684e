"""SIGTERM (``kill``, ``timeout``, a scheduler) ends a command as Ctrl-C does: one line, exit status 143, and the
writers' clean-up runs, so no ``.partial-*`` output, half-made video or half-made run folder is left behind.

Each command runs in a child process that pauses at a chosen point (after the first frame is written, in the middle
of a video, before the first training step) and says so on stdout; the test then sends SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from data_fixtures import write_video, write_wav
from golden import TINY_CONFIG

from talkingface.cli_support import EXIT_TERMINATED, Terminated, command, sigterm_as_interrupt

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
READY = "READY"


def start(body: str, *argv: str, cwd: Path) -> subprocess.Popen[str]:
    """``python -c`` of ``body`` (which patches a function to print READY and wait) with ``argv``."""
    code = f"import sys, time\nsys.path[:0] = [{str(ROOT)!r}, {str(TESTS)!r}]\n" + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def terminate_when_ready(proc: subprocess.Popen[str]) -> str:
    """Wait for the child's READY line, send SIGTERM, and return its stderr once it has ended."""
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != READY:  # it ended (or failed) before the point the test waits for
            proc.kill()
            _, err = proc.communicate(timeout=60)
            pytest.fail(f"the command did not reach the pause: {line!r}\n{err[-3000:]}")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return err


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ----------------------------------------------------------------------------- the handler itself


def test_sigterm_takes_ctrl_c_s_way_out_and_the_handler_is_restored(capsys: pytest.CaptureFixture[str]) -> None:
    """Inside a command SIGTERM raises Terminated (a KeyboardInterrupt: every Ctrl-C clean-up runs), reported as
    one line with exit status 143; the handler before (the default) is back afterwards."""
    seen: list[BaseException] = []

    @command
    def main() -> int:
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        try:
            signal.raise_signal(signal.SIGTERM)
        except BaseException as err:  # what a writer's clean-up sees
            seen.append(err)
            raise
        return 0

    before = signal.getsignal(signal.SIGTERM)
    if before != signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler in this test process")
    assert main() == EXIT_TERMINATED == 143
    assert capsys.readouterr().err == "error: terminated (SIGTERM)\n"
    assert len(seen) == 1 and isinstance(seen[0], KeyboardInterrupt) and isinstance(seen[0], Terminated)
    assert signal.getsignal(signal.SIGTERM) == before


def test_an_own_sigterm_handler_is_left_alone() -> None:
    """A process that handles SIGTERM itself (a server, a scheduler's wrapper) keeps its handler."""

    def own(signum: int, frame: object) -> None:
        pass

    before = signal.signal(signal.SIGTERM, own)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is own
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, before)


# ----------------------------------------------------------------------------- the commands


@pytest.mark.slow
def test_sigterm_during_lipsync_leaves_no_partial_output(tiny_ckpt: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "person.mp4", seconds=0.2, fps=25)
    speech = write_wav(tmp_path / "speech.wav", seconds=0.4)
    out, frames = tmp_path / "result.mp4", tmp_path / "frames"
    body = """
        from talkingface.inference.writer import VideoWriter
        real = VideoWriter.write
        def write_then_wait(self, rgb):
            real(self, rgb)
            print("READY", flush=True)
            time.sleep(600)
        VideoWriter.write = write_then_wait
        from talkingface.commands.main import main
        sys.exit(main(sys.argv[1:]))
    """
    argv = ["lipsync", "--video", str(video), "--audio", str(speech), "--out", str(out), "--frames-dir", str(frames)]
    argv += ["--ckpt", str(tiny_ckpt), "--config", str(TINY_CONFIG), "--steps", "2", "--crop-size", "128"]
    # --cpu-threads 0: the frames are written on the main thread, where the pause (and then the signal) happens
    proc = start(body, *argv, "--batch-size", "1", "--cpu-threads", "0", "--no-progress", cwd=tmp_path)
    err = terminate_when_ready(proc)
    assert proc.returncode == 143, err[-3000:]
    assert error_lines(err) == ["error: terminated (SIGTERM)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["person.mp4", "speech.wav"]  # no .partial-*, no result


@pytest.mark.slow
def test_sigterm_during_preprocess_run_leaves_no_half_video(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", seconds=0.6, fps=25)
    root = tmp_path / "data" / "HDTF"
    body = """
        from talkingface.data import writer
        real = writer.iter_crops
        def pausing(*args, **kwargs):
            for k, item in enumerate(real(*args, **kwargs)):
                if k == 3:
                    print("READY", flush=True)
                    time.sleep(600)
                yield item
        writer.iter_crops = pausing
        from talkingface.commands.main import main
        sys.exit(main(sys.argv[1:]))
    """
    argv = ["preprocess", "run", str(video), "--out", str(root), "--size", "64", "--no-progress"]
    proc = start(body, *argv, cwd=tmp_path)
    err = terminate_when_ready(proc)
    assert proc.returncode == 143, err[-3000:]
    assert error_lines(err) == ["error: terminated (SIGTERM)"]
    left = [p.relative_to(root) for p in root.rglob("*") if p.is_file()]
    assert not [p for p in left if p.parts[0] in (".tmp", "images", "landmarks", "audio_smooth")], left
    assert not list((root / ".tmp").iterdir()) if (root / ".tmp").exists() else True


@pytest.mark.slow
def test_sigterm_before_the_first_training_step_removes_the_new_run_folder(tmp_path: Path) -> None:
    """SIGTERM after the run folder is made but before training starts (the trainer's own SIGTERM handler, which
    checkpoints, is installed when training starts): the half-made run folder goes, exit status 143."""
    from train_support import write_dataset

    data = write_dataset(tmp_path)
    run_dir = tmp_path / "run"
    body = """
        import pytorch_lightning as pl
        from train_support import TINY_CONFIG, tiny_overrides
        from pathlib import Path
        from talkingface.commands.train import main

        class PauseAtFitStart(pl.Callback):
            def on_fit_start(self, trainer, module):
                print("READY", flush=True)
                time.sleep(600)

        argv = ["--base", str(TINY_CONFIG), *tiny_overrides(Path(sys.argv[1])), "-t", "--run-dir", sys.argv[2]]
        sys.exit(main(argv, extra_callbacks=[PauseAtFitStart()]))
    """
    proc = start(body, str(data), str(run_dir), cwd=tmp_path)
    err = terminate_when_ready(proc)
    assert proc.returncode == 143, err[-3000:]
    assert error_lines(err) == ["error: terminated (SIGTERM)"]
    assert not run_dir.exists()
