"""Default DiffTalk configs shipped as package data (``latent-diffusion/*.yaml``), found with importlib.resources.

The repository's top-level ``configs/latent-diffusion/`` holds identical copies for ``--base configs/...``;
tests/test_cli.py fails when the two drift apart.
"""
