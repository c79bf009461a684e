"""Regenerate the two pictures of the README: ``docs/images/demo.png`` and ``docs/images/app.png``.

    python docs/images/make_images.py              # both (CPU, offline; under a minute)
    python docs/images/make_images.py demo         # only the demo frames
    python docs/images/make_images.py app          # only the web-app screenshot

``demo``: runs ``python demo.py`` (the bundled synthetic demo model on a generated face, exactly as a user runs
it), regenerates the same portrait and driving clips (the demo's fixed seed) and stacks the same frames of the input
video, of the speaker whose audio drives it, and of the lip-synced output. ``app``: starts ``talkingface app`` on a
free port, runs the generated sample in headless Chromium through Playwright (the distribution's ``chromium``, as
``tests/app/test_app.py`` uses it) and screenshots the page with the result. Run from the repository root.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
DEMO_COLUMNS = 4  # frames shown side by side
APP_SAMPLE_SECONDS = 2.0
APP_STEPS = 8
DEMO_CHECKPOINT = "talkingface/synthetic/assets/model.safetensors"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _label(image: np.ndarray, text: str) -> np.ndarray:
    import cv2

    band = np.full((22, image.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(band, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (30, 30, 30), 1, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


def _pick_frames(portrait_mouth: np.ndarray, speaker_mouth: np.ndarray, n: int, gap: int = 8) -> list[int]:
    """``n`` frames, at least ``gap`` apart, where the two speakers' true mouth openings differ most: there the
    output must follow the driving speech, not the portrait's own."""
    order = np.argsort(-np.abs(speaker_mouth - portrait_mouth), kind="stable")
    picked: list[int] = []
    for i in map(int, order):
        if all(abs(i - j) >= gap for j in picked):
            picked.append(i)
        if len(picked) == n:
            break
    return sorted(picked)


def make_demo(out: Path = IMAGES / "demo.png") -> Path:
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from talkingface.synthetic.demo import DEFAULT_SECONDS, make_sample_media
    from talkingface.synthetic.generate import MOUTH_SUFFIX

    with tempfile.TemporaryDirectory(prefix="talkingface-docs-") as tmp:
        result = Path(tmp) / "synthetic_demo.mp4"
        subprocess.run([sys.executable, "demo.py", "--out", str(result)], cwd=ROOT, env=_env(), check=True)
        # the demo's seed: the same portrait and the same driving speaker as inside demo.py
        portrait, speaker = make_sample_media(Path(tmp), DEFAULT_SECONDS)
        mouths = [np.load(p.with_name(p.stem + MOUTH_SUFFIX))[:, 0] for p in (portrait, speaker)]
        frames = [_frames(portrait), _frames(speaker), _frames(result)]
    n = min(len(f) for f in frames)
    columns = _pick_frames(mouths[0][:n], mouths[1][:n], DEMO_COLUMNS)
    labels = (
        "input video (its own mouth)",
        "the speaker whose audio drives it (not seen by the model)",
        "output: the input video lip-synced to that audio (bundled synthetic demo model)",
    )
    rows = [
        _label(np.concatenate([video[i] for i in columns], axis=1), label)
        for video, label in zip(frames, labels, strict=True)
    ]
    Image.fromarray(np.concatenate(rows, axis=0)).save(out, optimize=True)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_app(out: Path = IMAGES / "app.png") -> Path:
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on the PATH: apt-get install chromium")
    port = _free_port()
    command = [sys.executable, "-m", "talkingface", "app", "--port", str(port)]
    server = subprocess.Popen(command + ["--sample-seconds", str(APP_SAMPLE_SECONDS)], cwd=ROOT, env=_env())
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the app did not start") from None
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 900, "height": 900})
                page.goto(url)
                page.wait_for_function("document.getElementById('checkpoint').value !== ''")
                # the same checkpoint as offered, written relative to the checkout (the server runs there)
                page.fill("#checkpoint", DEMO_CHECKPOINT)
                page.fill("#steps", str(APP_STEPS))
                page.click("#run")
                page.wait_for_selector("#output:not([hidden])", timeout=900_000)
                page.wait_for_function("document.getElementById('result').readyState >= 2", timeout=60_000)
                page.evaluate("document.getElementById('result').currentTime = 1.0")
                page.wait_for_timeout(1000)
                page.screenshot(path=str(out), full_page=True)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    _shrink(out)
    return out


def _shrink(path: Path, max_bytes: int = 300_000) -> None:
    """Quantise a screenshot to a palette when it is larger than ``max_bytes``."""
    from PIL import Image

    if path.stat().st_size <= max_bytes:
        return
    Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)


def main(argv: list[str]) -> int:
    which = argv or ["demo", "app"]
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name in which:
        path = {"demo": make_demo, "app": make_app}[name]()
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
