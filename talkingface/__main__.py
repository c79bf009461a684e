"""``python -m talkingface COMMAND ...``: the ``talkingface`` command, where the console script is not on the PATH."""

from talkingface.cli_support import hand_over

hand_over()
