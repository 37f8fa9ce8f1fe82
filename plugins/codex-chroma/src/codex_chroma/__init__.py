"""Codex engine for Chroma (``chroma``): Chroma1-HD and its kin on the diffusers Chroma pipelines."""
