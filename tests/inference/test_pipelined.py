"""The pipelined lip-sync loop: the same frames as the serial loop, errors and Ctrl-C end it cleanly (no hang, no
output, no thread left), the uint8 upload path is bit-equal, and the bf16 first stage stays within its stated bound."""

from __future__ import annotations

import contextlib
import faulthandler
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from data_fixtures import write_video, write_wav

from talkingface.inference import LipSyncOptions, LipSyncPipeline
from talkingface.inference.inputs import to_unit, to_unit_tensor
from talkingface.inference.stages import STAGES, StageClock
from talkingface.inference.threads import BackgroundSink
from talkingface.inference.video import PreparedVideo
from talkingface.inference.writer import FramesDirWriter
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel

#: bf16 first stage (encode and decode) against fp32, PSNR of the pipeline's output frames on the shipped synthetic
#: demo model (measured 51-54 dB; benchmarks/first_stage_precision.py prints it with the paper config's).
BF16_FIRST_STAGE_MIN_PSNR_DB = 45.0


@pytest.fixture(scope="module")
def prepared_clip(small_model: DiffTalkModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[PreparedVideo, Path]:
    """A 3-frame video prepared once and 5 frames of speech (the ping-pong shows frames again: the latent cache)."""
    d = tmp_path_factory.mktemp("pipelined")
    video = write_video(d / "person.mp4", seconds=0.12, fps=25)
    speech = write_wav(d / "speech.wav", seconds=0.2)
    pipe = LipSyncPipeline(small_model, audio_features="mel", options=LipSyncOptions(crop_size=128))
    return pipe.prepare_video(video), speech


def pipeline(model: DiffTalkModel, **kw: object) -> LipSyncPipeline:
    base = dict(sampler="ddim", steps=2, batch_size=2, crop_size=128, seed=5)
    return LipSyncPipeline(model, audio_features="mel", options=LipSyncOptions(**{**base, **kw}))


def read_frames(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))]


def no_worker_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("talkingface-")]


@contextlib.contextmanager
def fail_on_hang(seconds: float = 120) -> Iterator[None]:
    """A hang inside ends the test process with every thread's traceback instead of blocking CI."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def test_unit_conversion_is_bit_equal_to_the_loader_formula() -> None:
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)
    formula = np.ascontiguousarray((x / 127.5 - 1.0).astype(np.float32).transpose(0, 3, 1, 2))
    assert np.array_equal(to_unit(x), formula)
    assert np.array_equal(to_unit_tensor(torch.from_numpy(x)).numpy(), formula)


@pytest.mark.slow
@pytest.mark.parametrize("decode_window", [False, True])
def test_pipelined_run_gives_the_serial_frames_bit_for_bit(
    small_model: DiffTalkModel, prepared_clip: tuple[PreparedVideo, Path], tmp_path: Path, decode_window: bool
) -> None:
    """The serial run is also timed by a ``StageClock`` (synchronising timers only: its frames are the same), which
    must account for every stage of it, the video encoding included."""
    video, speech = prepared_clip
    serial = pipeline(small_model, cpu_threads=0, decode_window=decode_window)
    piped = pipeline(small_model, cpu_threads=3, decode_window=decode_window)
    serial.clock = StageClock(small_model.device)
    a = serial.run(video, speech, out=tmp_path / "serial.mp4", frames_dir=tmp_path / "serial", progress=False)
    b = piped.run(video, speech, frames_dir=tmp_path / "piped", progress=False)
    assert a.n_frames == b.n_frames == 5
    rows = serial.clock.table(a.n_frames, a.generate_s)
    assert [r["stage"] for r in rows] == list(STAGES)
    assert all(r["ms_per_frame"] > 0 for r in rows) and sum(r["share"] for r in rows) <= 1.0
    fa, fb = read_frames(tmp_path / "serial"), read_frames(tmp_path / "piped")
    assert len(fa) == 5 and all(np.array_equal(x, y) for x, y in zip(fa, fb))
    # the frame iterator (pipelined inputs, pasted on the pool) gives the same frames again
    speech_obj = piped.prepare_speech(speech)
    assert all(np.array_equal(x[..., ::-1], y) for x, y in zip(fa, piped.generate(video, speech_obj)))
    assert no_worker_threads()


@pytest.mark.slow
def test_a_writer_error_stops_the_pipelined_run_leaving_nothing(
    small_model: DiffTalkModel,
    prepared_clip: tuple[PreparedVideo, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    video, speech = prepared_clip
    original, calls = FramesDirWriter.write, []

    def failing(self: FramesDirWriter, rgb: np.ndarray) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        original(self, rgb)

    monkeypatch.setattr(FramesDirWriter, "write", failing)
    with fail_on_hang(), pytest.raises(OSError, match="No space left"):
        pipeline(small_model, cpu_threads=2).run(
            video, speech, out=tmp_path / "out.mp4", frames_dir=tmp_path / "frames", progress=False
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no .partial files
    assert no_worker_threads()


@pytest.mark.slow
def test_ctrl_c_while_generating_stops_the_threads_and_leaves_nothing(
    small_model: DiffTalkModel,
    prepared_clip: tuple[PreparedVideo, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    video, speech = prepared_clip
    pipe = pipeline(small_model, cpu_threads=2, batch_size=1)
    original, batches = pipe.generate_faces, []

    def interrupted(*args: object) -> np.ndarray:
        batches.append(1)
        if len(batches) == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(pipe, "generate_faces", interrupted)
    with fail_on_hang(), pytest.raises(KeyboardInterrupt):
        pipe.run(video, speech, out=tmp_path / "out.mp4", frames_dir=tmp_path / "frames", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert no_worker_threads()


def test_background_sink_keeps_order_and_hands_errors_back() -> None:
    seen: list[int] = []
    with BackgroundSink(seen.append, depth=1) as sink:
        for i in range(20):
            sink.put(i)
    assert seen == list(range(20))

    def boom(item: int) -> None:
        if item == 3:
            raise ValueError("bad item 3")

    with pytest.raises(ValueError, match="bad item 3"):
        with BackgroundSink(boom, depth=1) as sink:
            for i in range(1000):  # the producer learns of the error long before the end
                sink.put(i)
    assert i < 1000 - 1


@pytest.mark.slow
def test_bf16_first_stage_stays_within_its_bound_on_the_shipped_model(
    prepared_clip: tuple[PreparedVideo, Path], tmp_path: Path
) -> None:
    from talkingface.inference.model_choice import resolve_checkpoint
    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference

    path, _ = resolve_checkpoint(None)
    model = get_difftalk_inference(ckpt=str(path))
    video, speech = prepared_clip
    frames = {}
    for precision in ("fp32", "bf16"):
        pipe = LipSyncPipeline(
            model,
            options=LipSyncOptions(
                sampler="ddim", steps=2, crop_size=128, seed=1, first_stage_precision=precision, cpu_threads=0
            ),
        )
        speech_obj = pipe.prepare_speech(speech)
        frames[precision] = np.stack(list(pipe.generate(video, speech_obj)))
    diff = frames["fp32"].astype(np.float64) - frames["bf16"]
    psnr = 10 * np.log10(255**2 / max(np.mean(diff**2), 1e-12))
    assert np.abs(diff).max() > 0  # bf16 really ran
    assert psnr >= BF16_FIRST_STAGE_MIN_PSNR_DB, psnr


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"cpu_threads": -1}, "--cpu-threads"),
        ({"first_stage_precision": "fp8"}, "--first-stage-precision"),
        ({"x264_preset": "warp"}, "--x264-preset"),
        ({"crf": 99}, "--crf"),
    ],
)
def test_new_options_are_checked_with_the_flag_named(tiny_model: DiffTalkModel, change: dict, flag: str) -> None:
    from talkingface.inference import InferenceError

    with pytest.raises(InferenceError, match=f"^{flag}: "):
        pipeline(tiny_model, **change)._check_options()
