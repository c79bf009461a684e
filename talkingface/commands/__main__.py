"""``python -m talkingface.commands COMMAND ...``: the ``talkingface`` command, which other spellings hand over to."""

import sys

from talkingface.commands.main import main

sys.exit(main())
