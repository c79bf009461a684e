"""Synthetic talking-face media for the tests: a real face photo with motion, a generated audio track, landmarks.
(The session fixtures built from them, ``source_clips`` and ``built``, are in conftest.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from talkingface.data.constants import FEATURE_RATE_HZ, SAMPLE_RATE

#: Source crop of skimage's astronaut photo that holds the face (~90 px wide, found by dlib at upsample 0).
FACE_WINDOW = (10, 40, 288, 288)  # y0, x0, h, w in the 512 x 512 photo
#: dlib's face box in skimage's astronaut photo (left, top, right, bottom; 88 px wide); the photo's rows below
#: PHOTO_ROWS (the badge, which dlib takes for a small face when upsampled) are left out of small-face frames.
PHOTO_FACE_BOX = (179, 83, 266, 170)
PHOTO_ROWS = 320
#: Peak horizontal / vertical motion (pixels) of the face over the clip.
MOTION_PX = (10.0, 6.0)
#: Saved frame side in the end-to-end tests (small for speed).
SIZE = 128
#: Speech-like test words: a glottal-ish harmonic series (f0 100-200 Hz) through three vowel formants.
FORMANTS = ((700.0, 130.0, 1.0), (1200.0, 150.0, 0.6), (2500.0, 200.0, 0.3))


def tone_track(seconds: float, rate: int, channels: int = 1, silent: bool = False) -> np.ndarray:
    """``(channels, n)`` float32: a sum of tones under a 3 Hz syllable-like envelope."""
    t = np.arange(int(round(seconds * rate))) / rate
    if silent:
        return np.zeros((channels, len(t)), dtype=np.float32)
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3.0 * t))
    signal = sum(a * np.sin(2 * np.pi * f * t) for f, a in ((220, 0.3), (440, 0.2), (1250, 0.1), (2600, 0.05)))
    mono = (envelope * signal).astype(np.float32)
    return np.stack([mono * (1.0 - 0.3 * c) for c in range(channels)])


def on_canvas(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """``frames`` scaled to the canvas height (bicubic) and centred on a ``width x height`` canvas of their edge
    colours (a wider or narrower frame around the same face: e.g. 1280 x 720 for a 720p clip)."""
    import cv2

    side = min(height, width)
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    x0, y0 = (width - side) // 2, (height - side) // 2
    for i, rgb in enumerate(frames):
        face = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
        out[i] = cv2.copyMakeBorder(face, y0, height - side - y0, x0, width - side - x0, cv2.BORDER_REPLICATE)
    return out


def face_frames(seconds: float, fps: int, face: bool = True) -> np.ndarray:
    """``(N, 288, 288, 3)`` uint8 frames: the astronaut's face moving slowly (or a face-free background)."""
    import skimage.data

    photo = skimage.data.astronaut()
    y0, x0, h, w = FACE_WINDOW
    n = int(round(seconds * fps))
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        phase = 2 * np.pi * i / max(n, 1)
        dx, dy = (int(round(MOTION_PX[0] * np.sin(phase))), int(round(MOTION_PX[1] * np.sin(2 * phase))))
        if face:
            frames[i] = photo[y0 + 20 + dy : y0 + 20 + dy + h, x0 + 20 + dx : x0 + 20 + dx + w]
        else:  # the lower-right background (flag, no face)
            frames[i] = photo[200 + dy : 200 + dy + h, 200 + dx : 200 + dx + w]
    return frames


def _scaled_photo(face_px: float, width: int, height: int) -> tuple[np.ndarray, float, float]:
    """The astronaut photo scaled so that dlib's box of the face is about ``face_px`` wide, its edges replicated
    by ``max(width, height)`` pixels on every side, and the face's centre ``(cx, cy)`` in it."""
    import cv2
    import skimage.data

    photo = skimage.data.astronaut()[:PHOTO_ROWS]
    left, top, right, bottom = PHOTO_FACE_BOX
    s = face_px / (right - left)
    small = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    pad = max(width, height)
    big = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return big, pad + s * (left + right) / 2, pad + s * (top + bottom) / 2


def small_face_frames(face_px: float, width: int, height: int, n: int, motion: float = 3.0) -> np.ndarray:
    """``(n, height, width, 3)`` uint8 frames: the astronaut photo scaled so that dlib's box of the face is about
    ``face_px`` wide, the face at the centre moving by up to ``motion`` pixels, the photo's edges replicated
    beyond it."""
    big, cx, cy = _scaled_photo(face_px, width, height)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        phase = 2 * np.pi * i / max(n, 1)
        x0 = int(round(cx - width / 2 + motion * np.sin(phase)))
        y0 = int(round(cy - height / 2 + motion * np.sin(2 * phase) / 2))
        frames[i] = big[y0 : y0 + height, x0 : x0 + width]
    return frames


def face_at(face_px: float, width: int, height: int, offsets: list[tuple[float, float]]) -> np.ndarray:
    """``(len(offsets), height, width, 3)`` uint8: the astronaut photo scaled so that dlib's face box is about
    ``face_px`` wide, the face's centre at the frame's centre plus ``(dx, dy)`` of each frame, the photo's edges
    replicated beyond it."""
    big, cx, cy = _scaled_photo(face_px, width, height)
    frames = np.empty((len(offsets), height, width, 3), dtype=np.uint8)
    for i, (dx, dy) in enumerate(offsets):
        x0, y0 = int(round(cx - width / 2 - dx)), int(round(cy - height / 2 - dy))
        frames[i] = big[y0 : y0 + height, x0 : x0 + width]
    return frames


def face_free_frames(width: int, height: int, n: int) -> np.ndarray:
    """``(n, height, width, 3)`` uint8: skimage's coffee photo filling the frame, panning by a few pixels (dlib
    finds no face in it, at the default pass or upsampled)."""
    import cv2
    import skimage.data

    big = cv2.resize(skimage.data.coffee(), (width + 16, height + 16), interpolation=cv2.INTER_AREA)
    return np.stack([big[i % 16 : i % 16 + height, i % 16 : i % 16 + width] for i in range(n)])


def face_landmarks(size: int) -> np.ndarray:
    """A plausible 68-point layout in a ``size`` crop: jaw on an ellipse, the rest near the centre."""
    lms = np.full((68, 2), size / 2, dtype=np.float32)
    angles = np.linspace(np.pi, 0, 17)
    lms[:17, 0] = size / 2 + 0.3 * size * np.cos(angles)
    lms[:17, 1] = size / 2 + 0.3 * size * np.sin(angles)
    lms[27:36] = [size / 2, 0.55 * size]
    lms[33] = [size / 2, 0.6 * size]
    return lms


def write_video(
    path: Path,
    seconds: float = 2.4,
    fps: int = 30,
    *,
    audio: str | None = "tones",
    audio_seconds: float | None = None,
    rate: int = 48_000,
    channels: int = 1,
    face: bool = True,
    size: tuple[int, int] | None = None,
    frames: np.ndarray | None = None,
) -> Path:
    """Encode an h264 (+ aac) clip with PyAV. ``audio``: "tones", "silent" or None (no audio stream).
    ``size``: ``(width, height)`` of the frames (:func:`on_canvas`; default 288 x 288).
    ``frames``: ``(N, H, W, 3)`` uint8 to encode instead of the moving astronaut (``seconds`` = N / ``fps``)."""
    import av

    if frames is None:
        frames = face_frames(seconds, fps, face)
        if size is not None:
            frames = on_canvas(frames, *size)
    else:
        seconds = len(frames) / fps
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("libx264", rate=fps)
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"preset": "ultrafast", "crf": "18"}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=rate)
            astream.layout = "stereo" if channels == 2 else "mono"
        for rgb in frames:
            for packet in vstream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            track = tone_track(seconds if audio_seconds is None else audio_seconds, rate, channels, audio == "silent")
            step = 1024
            for start in range(0, track.shape[1], step):
                chunk = np.ascontiguousarray(track[:, start : start + step])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=astream.layout.name)
                frame.sample_rate = rate
                frame.pts = start
                for packet in astream.encode(frame):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


def write_wav(path: Path, seconds: float, rate: int = 16_000, channels: int = 1) -> Path:
    """A PCM wav with the tone track (for --audio)."""
    import av

    track = tone_track(seconds, rate, channels)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "stereo" if channels == 2 else "mono"
        pcm = (np.clip(track, -1, 1) * 32767).astype(np.int16)
        interleaved = pcm.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout=stream.layout.name)
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def copy_dataset(root: Path, tmp_path: Path) -> Path:
    """Copy ``<parent>/HDTF`` with its split lists to ``tmp_path/data/HDTF``."""
    dst = tmp_path / "data" / "HDTF"
    shutil.copytree(root.parent, dst.parent)
    return dst


def word(seconds: float, rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced vowel with a 5 ms attack (the onset is at sample 0) and a 20 ms release."""
    f0 = rng.uniform(100.0, 200.0)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / rate
    x = np.zeros_like(t)
    for h in range(1, int(7500 // f0) + 1):
        gain = sum(g / (1 + ((h * f0 - f) / bw) ** 2) for f, bw, g in FORMANTS)
        x += gain * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    envelope = np.minimum(1.0, t / 0.005) * np.minimum(1.0, (t[-1] - t) / 0.02)
    return 0.5 * x * envelope / np.abs(x).max()


def speech_track(
    seed: int, seconds: float = 12.0, rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Low noise with a word every 2.2 s at random onsets (not on the 20 ms grid): ``(audio, onsets_s, lengths_s)``."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal(int(seconds * rate)) * 1e-3
    n = int((seconds - 1.4) / 2.2) + 1
    onsets = np.arange(n) * 2.2 + 0.6 + rng.uniform(0.0, 0.5, n)
    lengths = rng.uniform(0.4, 0.7, n)
    for onset, length in zip(onsets, lengths):
        w = word(length, rng, rate)
        i = int(round(onset * rate))
        audio[i : i + len(w)] += w
    return audio.astype(np.float32), onsets, lengths


def frame_labels(n: int, onsets: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 50 Hz frame (centred at ``j * 20 ms``): inside a word (30 ms in from its ends), and far from any word."""
    t = np.arange(n) / FEATURE_RATE_HZ
    speech, silence = np.zeros(n, bool), np.ones(n, bool)
    for onset, length in zip(onsets, lengths):
        speech |= (t > onset + 0.03) & (t < onset + length - 0.03)
        silence &= ~((t > onset - 0.1) & (t < onset + length + 0.1))
    return speech, silence


def save_random_hf_whisper(
    folder: Path, max_source_positions: int = 100, n_mels: int = 80, preprocessor_mels: int = 80
) -> Path:
    """A tiny randomly initialised transformers whisper (width 16, 2-s chunks) with its feature extractor
    (``preprocessor_mels`` mel bins: a folder assembled from two models when it differs from ``n_mels``)."""
    import pytest
    import torch

    transformers = pytest.importorskip("transformers", reason="the transformers whisper folder needs transformers")

    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=n_mels,
        max_source_positions=max_source_positions,
        max_target_positions=32,
        vocab_size=51864,  # English-only size
    )
    transformers.WhisperModel(config).save_pretrained(folder)
    transformers.WhisperFeatureExtractor(feature_size=preprocessor_mels).save_pretrained(folder)
    return folder
