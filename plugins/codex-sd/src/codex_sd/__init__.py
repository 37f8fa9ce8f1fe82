"""Codex engines for Stable Diffusion 1.5 (``sd15``) and SDXL (``sdxl``)."""
