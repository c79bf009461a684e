"""``python -m talkingface.evaluate``: the older spelling of ``talkingface evaluate``."""

from talkingface.cli_support import hand_over

if __name__ == "__main__":
    hand_over("evaluate")
