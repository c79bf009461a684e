"""talkingface: DiffTalk (CVPR 2023) for audio-driven talking-face generation."""

__version__ = "0.1.0"
