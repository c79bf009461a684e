"""``python -m talkingface.preprocess``: the older spelling of ``talkingface preprocess`` (the command lives in
:mod:`talkingface.commands.preprocess`)."""

import sys

if __name__ == "__main__":
    from talkingface.cli import main

    sys.exit(main(["preprocess", *sys.argv[1:]]))
