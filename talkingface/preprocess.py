"""``python -m talkingface.preprocess``: the older spelling of ``talkingface preprocess``."""

from talkingface.cli_support import hand_over

if __name__ == "__main__":
    hand_over("preprocess")
