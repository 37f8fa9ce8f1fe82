"""Models from the Hugging Face hub: repo ids looked up in the local cache, fetched only when asked (torch-free).

The hub library reads its settings from the environment, so the kit sets them before anything is
resolved or loaded: offline unless ``--download`` (nothing reaches the network unless asked), no
telemetry, and transformers' import-time chatter quiet (CODEX_DEBUG keeps it).
"""

from __future__ import annotations

import os
from pathlib import Path

# Pickle-based weight formats are fetched only with --allow-pickle.
PICKLE_PATTERNS = ["*.bin", "*.ckpt", "*.pt", "*.pth", "*.pkl"]


def set_environment(download: bool) -> None:
    if not download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if not os.environ.get("CODEX_DEBUG"):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def cache_dir() -> str:
    """The hub cache folder, read from the environment now (not when huggingface_hub was imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.expanduser(os.path.join(home, "hub"))


def find_repo(repo_id: str, download: bool, allow_pickle: bool) -> Path | None:
    """The snapshot folder of ``repo_id`` in the local cache (fetched first with ``download``); None if absent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = cache_dir()
    try:
        if download:
            return Path(snapshot_download(repo_id, cache_dir=cache,
                                          ignore_patterns=None if allow_pickle else PICKLE_PATTERNS))
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        return None
