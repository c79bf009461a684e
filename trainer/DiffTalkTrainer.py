"""Train DiffTalk (thin entry point of ``talkingface train``: ``talkingface.commands.train``).

    python trainer/DiffTalkTrainer.py --base configs/latent-diffusion/talking.yaml -t --gpus 0,1,2,3,4,5,6,7,

Run ``python trainer/DiffTalkTrainer.py --help`` for the options; ``key.sub=value`` arguments override the config.
"""

from __future__ import annotations

import sys

from talkingface.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
