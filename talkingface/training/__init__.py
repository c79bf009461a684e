"""Training DiffTalk: the command line (``trainer/DiffTalkTrainer.py``), run folders, resume, callbacks.

Entry point: :func:`talkingface.training.cli.main`.
"""
