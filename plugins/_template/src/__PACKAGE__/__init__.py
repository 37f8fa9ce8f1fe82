"""Codex engine ``__NAME__``."""
