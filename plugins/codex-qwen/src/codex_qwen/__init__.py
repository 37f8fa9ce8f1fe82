"""Codex engine for Qwen-Image (``qwen_image``) on the diffusers QwenImage pipelines."""
