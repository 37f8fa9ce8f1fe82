"""``python -m codex_core.cli``: what torchrun and `codex batch --processes` start on each rank."""

from .app import main

main()
