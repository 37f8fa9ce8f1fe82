"""Codex engines for LTX-Video (``ltx_video``) and LTX-2 (``ltx2``, video with sound): text- and image-to-video."""
