"""Codex engine for Stable Video Diffusion image-to-video (``svd``: SVD and SVD-XT checkpoints)."""
