"""Codex engine for Krea 2 (``krea2``): Turbo (distilled) and Raw (base) checkpoints on diffusers' Krea2Pipeline."""
