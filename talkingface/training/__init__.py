"""Training DiffTalk: run folders, resume, callbacks, the Lightning module and its data.

The command that drives it is ``talkingface train`` (also ``trainer/DiffTalkTrainer.py``).
"""
