"""Reading a checkpoint folder's JSON configs without loading anything (torch-free).

Variant detection, speed-mode detection and checkpoint checks run before a model loads; they read
``model_index.json`` and the components' ``config.json`` files through this one function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_config(folder: Path | str, relative: str) -> dict[str, Any]:
    """The JSON object at ``folder/relative``; empty when the file is missing, unreadable or not an object."""
    try:
        data = json.loads((Path(folder) / relative).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
