"""Codex engines for FLUX.2: ``flux2`` ([dev]) and ``flux2_klein`` ([klein] 4B/9B, distilled and Base)."""
