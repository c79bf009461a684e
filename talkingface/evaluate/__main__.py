"""``python -m talkingface.evaluate``: the older spelling of ``talkingface evaluate``."""

import sys

from talkingface.cli import main

sys.exit(main(["evaluate", *sys.argv[1:]]))
