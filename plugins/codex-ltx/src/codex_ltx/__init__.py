"""Codex engine for LTX-Video (``ltx_video``): text-to-video and image-to-video."""
