"""Codex engine for FLUX.1 (``flux``): dev and schnell checkpoints on the diffusers Flux pipelines."""
