"""Codex engine for Z-Image (``z_image``): Z-Image-Turbo and Z-Image on the diffusers Z-Image pipelines."""
