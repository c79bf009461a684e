"""Entry point of ``python -m talkingface.evaluate``."""

from talkingface.evaluate.cli import main

raise SystemExit(main())
