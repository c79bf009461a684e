"""``talkingface app``: a small local web app — upload a portrait video and speech (or record it, or pick the
generated sample), choose the checkpoint, sampler and steps, watch the progress, play and download the result.

FastAPI + one self-contained HTML page (:mod:`talkingface.app.server`), jobs in a background thread
(:mod:`talkingface.app.jobs`), started by the ``talkingface app`` command.
"""
