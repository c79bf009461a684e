"""A checkpoint that does not fit the config: the strict load's error is a summary, not kilobytes of keys."""

from __future__ import annotations

import pytest
from golden import TINY_CONFIG

from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel
from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import CheckpointError, check_state_dict
from talkingface.model.image_driven_talkingface.DiffTalk.config import load_config


def test_a_config_mismatch_is_summarised_with_counts_and_the_first_keys() -> None:
    model = DiffTalkModel(load_config(TINY_CONFIG).model)
    other = DiffTalkModel(
        load_config(TINY_CONFIG, ["model.unet.model_channels=64", "model.unet.num_res_blocks=3"]).model
    )
    sd = other.state_dict()
    missing = sorted(set(model.state_dict()) - set(sd))
    unexpected = sorted(set(sd) - set(model.state_dict()))
    assert len(missing) + len(unexpected) > 50  # the original case: the message listed kilobytes of keys
    with pytest.raises(CheckpointError) as err:
        check_state_dict(model, sd, source="wide.ckpt")
    text = str(err.value)
    assert len(text) < 1500, len(text)
    assert text.startswith("wide.ckpt does not match the model")
    assert f"missing keys ({len(missing)})" in text and missing[0] in text and missing[-1] not in text
    assert f"unexpected keys ({len(unexpected)})" in text and unexpected[0] in text
    assert "shape mismatches (" in text and "more" in text
    assert "config" in text  # the way out
