"""The library's defaults and choices that the subcommands' ``--help`` shows, for the parsers only.

Their owners import torch, Lightning, OpenCV or FastAPI (``talkingface.inference.pipeline``, ``...DiffTalk.samplers``,
``talkingface.evaluate.harness``, ``talkingface.synthetic.generate``, ``talkingface.app.server``); a parser that
imported them would make ``talkingface COMMAND --help`` take seconds. So the values are restated here, and
``tests/commands/test_cli_help.py`` checks each one against its owner: a default changed in the library and not here
fails that test. The commands pass only what the user gave, or these same values, to the library.
"""

from __future__ import annotations

from pathlib import Path

from talkingface.constants import DDIM, DPM_SOLVER_PP
from talkingface.constants import DEFAULT_SAMPLER as DEFAULT_SAMPLER  # shown in --help
from talkingface.constants import DEFAULT_STEPS as DEFAULT_STEPS

# talkingface lipsync (talkingface.inference.pipeline.LipSyncOptions and its named constants)
#: ``...DiffTalk.plan.SAMPLERS``; the default sampler and steps of a checkpoint that records none
SAMPLERS = (DDIM, DPM_SOLVER_PP)
#: ``talkingface.inference.sampling.PRECISIONS``
PRECISIONS = ("auto", "fp32", "bf16")
#: ``talkingface.inference.writer.X264_PRESETS`` / ``DEFAULT_X264_PRESET``
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
#: ``LipSyncOptions()``'s fields that the lipsync flags set, as the library's defaults
LIPSYNC = {
    "batch_size": 16,
    "precision": "auto",
    "first_stage_precision": "auto",
    "seed": 0,
    "eta": 0.0,
    "feather": 0.02,
    "crf": 18,
    "x264_preset": "veryfast",
    "decode_margin": 4,
}
#: ``...DiffTalk.loader.DEFAULT_CKPT`` / ``DEFAULT_FIRST_STAGE``
DEFAULT_CKPT = Path("checkpoints/DiffTalk/model.ckpt")
DEFAULT_FIRST_STAGE = Path("models/model.ckpt")

# talkingface evaluate (talkingface.evaluate.harness)
CHEAP_METRICS = ("psnr", "ssim", "mouth_psnr", "mouth_ssim", "lmd")
ALL_METRICS = (*CHEAP_METRICS, "lpips", "fid", "lse")
CROPS = ("face", "full")

# talkingface synthetic (talkingface.synthetic.generate.DEFAULT_FRAME_SIZE / DEFAULT_CROP_SIZE)
SYNTHETIC_FRAME_SIZE, SYNTHETIC_CROP_SIZE = 160, 128

# talkingface app (talkingface.app.server.DEFAULT_MAX_UPLOAD_MB, talkingface.synthetic.demo.DEFAULT_SECONDS)
MAX_UPLOAD_MB = 200.0
SAMPLE_SECONDS = 4.0
