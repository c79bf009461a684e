"""Data preparation and loading for DiffTalk.

Heavy modules (torch, dlib, av) are imported lazily by the submodules that need them:
``talkingface.data.dataset`` / ``talkingface.data.datamodule`` for training,
``talkingface.data.preprocess`` for building a dataset from videos.
"""

from talkingface.data.meta import DatasetMetaError, check_feature_kind, read_dataset_meta

__all__ = ["DatasetMetaError", "check_feature_kind", "read_dataset_meta"]
