"""Training DiffTalk: run folders, resume, callbacks, the Lightning module and its data.

The command is :func:`talkingface.commands.train.main`.
"""
