"""Lip-sync demo: portrait video + speech in, lip-synced mp4 out (thin entry point of ``talkingface lipsync``).

    python demo.py --video person.mp4 --audio speech.wav --out result.mp4
    python demo.py --video person.mp4 --audio speech.wav --out result.mp4 --ckpt exported/difftalk.safetensors
    python demo.py          # no arguments: the shipped synthetic demo model on a generated face (CPU, offline)

Without --ckpt the model is checkpoints/DiffTalk/model.ckpt (first stage models/model.ckpt) when it exists, else
the bundled synthetic demo model (talkingface/synthetic/assets), with a warning: it was trained on synthetic
cartoon faces and will not look right on real faces. Checkpoints carry their config (a slim .safetensors export in
its metadata) and a slim export finds its first stage beside it, so --config and --first-stage-ckpt are only
needed to override them.

Bad inputs (no face, audio shorter than one frame, unreadable media, a checkpoint trained on other audio features,
an existing output) end with exit code 2 and one line ``error: <file or flag>: <problem>``.
Run ``python demo.py --help`` for the options.
"""

from __future__ import annotations

import sys

from talkingface.commands.lipsync import main

if __name__ == "__main__":
    sys.exit(main())
