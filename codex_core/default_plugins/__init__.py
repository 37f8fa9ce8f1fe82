"""Core features registered through the same hooks plugins use."""
