"""`codex serve`: a long-running service with a durable job queue and its own HTTP API (needs codex-core[serve])."""
