"""How close a window decode is to a full decode where it is pasted back, per margin (in latent cells).

    python benchmarks/decode_window.py                      # tiny + shipped synthetic first stage (CPU, ~1 min)
    python benchmarks/decode_window.py --configs paper      # the paper's VQ-f4 (random weights; slow on CPU)
    python benchmarks/decode_window.py --configs 512        # talking-512.yaml's VQ-f8 at 512x512 (random weights)

Face crops and landmarks come from synthetic clips, cropped as the preprocessing does. Each crop is encoded, its
latent decoded whole and in the window of ``paste_window`` (the paste-back region plus ``margin`` cells), and both
are pasted back into the crop with the pipeline's feathered alpha; the table gives the largest absolute difference
of the pasted frames in 8-bit levels and the window's share of the latent. The VQ decoder is not local: its
GroupNorm statistics and its mid-block attention span the whole latent, so no margin makes the window exact.
``--local`` adds the same measure for the decoder with those parts made local (GroupNorm without statistics, the
attention skipped, in the full and the window decode alike): what the convolutions alone need as a margin.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from talkingface.inference.blend import mouth_alpha, paste_back, paste_window  # noqa: E402
from talkingface.inference.inputs import resize_bicubic, to_unit  # noqa: E402
from talkingface.inference.pipeline import to_uint8  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel, load_config  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.autoencoder import AttnBlock  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.config import default_config_path  # noqa: E402

CONFIGS = {
    "tiny": ROOT / "configs" / "latent-diffusion" / "talking-tiny.yaml",
    "synthetic": ROOT / "configs" / "latent-diffusion" / "synthetic.yaml",
    "paper": None,
    "512": ROOT / "configs" / "latent-diffusion" / "talking-512.yaml",
}
SYNTHETIC_FIRST_STAGE = ROOT / "talkingface" / "synthetic" / "assets" / "first_stage.pt"


def build(name: str) -> DiffTalkModel:
    """The model of a config, random weights (seeded); ``synthetic`` loads the shipped, trained first stage."""
    torch.manual_seed(0)
    source = CONFIGS[name] or default_config_path()
    model = DiffTalkModel(load_config(source, ["model.first_stage.ckpt_path=null"]).model).eval()
    if name == "synthetic":
        state = torch.load(SYNTHETIC_FIRST_STAGE, map_location="cpu", weights_only=True)["state_dict"]
        model.first_stage_model.load_state_dict(state)
    return model.requires_grad_(False)


def face_crops(n: int, size: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic face crops ``(n, size, size, 3)`` and their landmarks, from ``n`` clips (varied identities)."""
    from talkingface.synthetic.generate import clip_crops, clip_rng, render_clip

    crops, lms = [], []
    for v in range(1, n + 1):
        clip = render_clip(clip_rng(seed, v), 0.2, 160)
        c, lm = clip_crops(clip, size)
        crops.append(c[len(c) // 2])
        lms.append(lm[len(c) // 2])
    return np.stack(crops), np.stack(lms)


@contextlib.contextmanager
def local_decoder(model: DiffTalkModel):
    """The decoder with its global parts made local: GroupNorm affine only (no statistics), attention skipped."""
    patched = []
    for m in model.first_stage_model.decoder.modules():
        if isinstance(m, nn.GroupNorm):
            m.forward = lambda x, m=m: x * m.weight[None, :, None, None] + m.bias[None, :, None, None]
        elif isinstance(m, AttnBlock):
            m.forward = lambda x: x
        else:
            continue
        patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


@torch.no_grad()
def window_errors(
    model: DiffTalkModel, crops: np.ndarray, lms: np.ndarray, margins: list[int]
) -> list[dict[str, float]]:
    """Per margin: the largest pasted-pixel difference (8-bit levels) over the frames, and the window's area share."""
    size, latent = model.config.first_stage.resolution, model.image_size
    crop_size = crops.shape[1]
    image = torch.from_numpy(to_unit(np.stack([resize_bicubic(c, size) for c in crops])))
    z = model.encode_first_stage(image)
    full = to_uint8(model.decode_first_stage(z).clamp(-1, 1))
    alphas = [mouth_alpha(lm, crop_size) for lm in lms]
    box = np.array([0, 0, crop_size])
    rows = []
    for m in margins:
        worst, area = 0, 0.0
        for j in range(len(crops)):  # one window per frame, as a batch of one
            window = paste_window([alphas[j]], size, latent, m)
            part = to_uint8(model.decode_first_stage_window(z[j : j + 1], window, image[j : j + 1]).clamp(-1, 1))
            a = paste_back(crops[j], full[j], alphas[j], box).astype(int)
            b = paste_back(crops[j], part[0], alphas[j], box).astype(int)
            worst = max(worst, int(np.abs(a - b).max()))
            y0, y1, x0, x1 = window
            area = max(area, (y1 - y0) * (x1 - x0) / latent**2)
        rows.append({"margin": m, "max_abs_diff_levels": worst, "window_area": round(area, 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "synthetic"], choices=list(CONFIGS))
    parser.add_argument("--margins", type=int, default=8, help="margins 0..N latent cells")
    parser.add_argument("--frames", type=int, default=4, help="face crops (one per synthetic clip)")
    parser.add_argument("--local", action="store_true", help="also measure the decoder with local norms, no attention")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    for name in args.configs:
        model = build(name)
        crops, lms = face_crops(args.frames, max(256, model.config.first_stage.resolution))
        margins = list(range(args.margins + 1))
        rows = window_errors(model, crops, lms, margins)
        if args.local:
            with local_decoder(model):
                for r, local in zip(rows, window_errors(model, crops, lms, margins), strict=True):
                    r["local_decoder_max_abs_diff_levels"] = local["max_abs_diff_levels"]
        results[name] = rows
        side = model.config.first_stage.resolution
        print(f"\n{name} config ({side}x{side} image, {model.image_size}x{model.image_size} latent)")
        local = " local decoder (levels) |" if args.local else ""
        print(f"| margin (cells) | max abs diff in the pasted region (8-bit levels) | window / latent area |{local}")
        print("| ---: | ---: | ---: |" + (" ---: |" if args.local else ""))
        for r in rows:
            extra = f" {r['local_decoder_max_abs_diff_levels']} |" if args.local else ""
            print(f"| {r['margin']} | {r['max_abs_diff_levels']} | {r['window_area']:.2f} |{extra}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
