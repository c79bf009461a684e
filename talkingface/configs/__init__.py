"""Default DiffTalk configs shipped as package data (``latent-diffusion/*.yaml``), found with importlib.resources.

``latent-diffusion`` is a relative symbolic link to the repository's ``configs/latent-diffusion`` (the one copy, also
read as ``--base configs/latent-diffusion/...``); building the package copies the files it points at into the wheel
and the sdist.
"""
