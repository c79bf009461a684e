"""``benchmarks/inference_fps.py --detections-only``: the clip's face landmarks made on a machine with the dlib
predictor, for a GPU machine without it (the rest of the script runs in the GPU check's smoke run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _inference_fps():
    spec = importlib.util.spec_from_file_location("inference_fps", ROOT / "benchmarks" / "inference_fps.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["inference_fps"] = module
    spec.loader.exec_module(module)
    return module


def test_detections_only_writes_the_clips_landmarks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _inference_fps()
    det = tmp_path / "det.npz"
    assert bench.main(["--frames", "6", "--detections", str(det), "--detections-only", "--device", "cpu"]) == 0
    saved = np.load(det)
    assert saved["landmarks"].shape == (6, 68, 2) and saved["boxes"].shape[0] == 6
    assert not saved["missing"].any()  # the benchmark clip shows a face in every frame
    assert "lipsync" not in capsys.readouterr().out  # nothing was generated
    with pytest.raises(SystemExit):
        bench.main(["--detections-only"])
    assert "--detections-only needs --detections FILE" in capsys.readouterr().err
