"""Lip-sync inference: portrait video + speech in, lip-synced video out.

Example::

    from talkingface.inference import LipSyncOptions, LipSyncPipeline
    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference

    model = get_difftalk_inference(ckpt="checkpoints/DiffTalk/model.ckpt")
    pipe = LipSyncPipeline(model, options=LipSyncOptions(sampler="dpm++", steps=25))
    result = pipe.run("person.mp4", "speech.wav", "result.mp4")
"""

from talkingface.inference.errors import InferenceError
from talkingface.inference.pipeline import LipSyncOptions, LipSyncPipeline, LipSyncResult
from talkingface.inference.speech import Speech, prepare_speech
from talkingface.inference.stream import LipSyncStream, MelStats, StreamStats
from talkingface.inference.video import PreparedVideo, prepare_video

__all__ = [
    "InferenceError",
    "LipSyncOptions",
    "LipSyncPipeline",
    "LipSyncResult",
    "LipSyncStream",
    "MelStats",
    "PreparedVideo",
    "Speech",
    "StreamStats",
    "prepare_speech",
    "prepare_video",
]
