"""Data preparation and loading for DiffTalk.

Heavy modules (torch, dlib, av) are imported lazily by the submodules that need them:
``talkingface.data.dataset`` / ``talkingface.data.datamodule`` for training,
``talkingface.data.writer`` for building a dataset from videos (with the face/audio library ``talkingface.media``).
The on-disk layout (every file's path and format) is owned by ``talkingface.data.layout``.
"""

from talkingface.data.layout import DatasetLayout
from talkingface.data.meta import DatasetMetaError, check_feature_kind

__all__ = ["DatasetLayout", "DatasetMetaError", "check_feature_kind"]
