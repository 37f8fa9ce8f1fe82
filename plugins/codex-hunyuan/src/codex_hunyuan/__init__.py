"""Codex engine for HunyuanVideo (``hunyuan_video``): text-to-video and image-to-video."""
