"""Lip-sync demo: portrait video + speech in, lip-synced mp4 out.

The video pipeline lands with Step 4 (issue #5). Until then this entry point only checks that a trained model
loads, so that a user can verify an install and a checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import sys

from talkingface.model.image_driven_talkingface.DiffTalk import CheckpointError, get_difftalk_inference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt", default=None, help="DiffTalk checkpoint (default checkpoints/DiffTalk/model.ckpt)")
    parser.add_argument("--config", default=None, help="model config (default: the checkpoint's own, else inference)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        model = get_difftalk_inference(args.config, args.ckpt, device=args.device)
    except CheckpointError as err:
        logging.error("%s", err)
        return 2
    logging.info("model loaded on %s; the video pipeline arrives with issue #5", model.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
