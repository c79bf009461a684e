"""``python -m talkingface COMMAND ...``: an alias of the installed ``talkingface`` program."""

from talkingface.cli_support import hand_over

hand_over()
