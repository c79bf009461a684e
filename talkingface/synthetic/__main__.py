"""``python -m talkingface.synthetic``: the older spelling of ``talkingface synthetic``."""

from talkingface.cli_support import hand_over

if __name__ == "__main__":
    hand_over("synthetic")
