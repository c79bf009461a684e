"""Talking-face models driven by a reference image."""
