"""``python -m talkingface.synthetic``: the older spelling of ``talkingface synthetic``."""

import sys

from talkingface.cli import main

sys.exit(main(["synthetic", *sys.argv[1:]]))
