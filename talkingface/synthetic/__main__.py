"""Entry point of ``python -m talkingface.synthetic`` (the command is ``talkingface synthetic``)."""

from talkingface.synthetic.cli import main

raise SystemExit(main())
