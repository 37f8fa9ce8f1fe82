"""The checkpoints the A1111 layer knows (``sd-models``) and the current one (``sd_model_checkpoint``).

The current model (kept on ``app.state.a1111_model``) is a title from ``GET /sdapi/v1/sd-models``:
each checkpoint in the models folders that an installed engine runs (A1111's "name [hash]"), and
``tiny-<engine>`` for each engine's random-weight test model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.datastructures import State

from ...errors import UsageError


def models() -> list[dict[str, Any]]:
    """What ``sd-models`` lists: (title, engine, model argument) for each runnable checkpoint and tiny model."""
    from ... import model_files
    from ...registry import engines

    found = []
    image_engines = [e for e in engines().values() if "txt2img" in e.tasks]
    for row in model_files.describe(["checkpoints"], hashes=True):
        for engine_key in row["engines"]:
            if engine_key in {e.key for e in image_engines}:
                title = f"{Path(row['path']).name} [{row['hash']}]" if row["hash"] else row["name"]
                found.append({"title": title, "model_name": row["name"], "hash": row["hash"],
                              "sha256": None, "filename": row["path"], "config": None,
                              "engine": engine_key, "model": row["path"]})
                break
    for engine in image_engines:
        if engine.tiny_version:
            found.append({"title": f"tiny-{engine.key}", "model_name": f"tiny-{engine.key}", "hash": None,
                          "sha256": None, "filename": "tiny", "config": None, "engine": engine.key, "model": "tiny"})
    return found


def current_model(state: State) -> dict[str, Any]:
    """The selected model's ``models()`` entry (``app.state.a1111_model``); none selected yet: the first
    checkpoint, if there is one that is not a tiny test model."""
    if state.a1111_model is None:
        available = models()
        if not available or all(entry["model"] == "tiny" for entry in available):
            raise UsageError("no model selected: POST /sdapi/v1/options {\"sd_model_checkpoint\": TITLE} with a "
                             "title from GET /sdapi/v1/sd-models")
        state.a1111_model = next(entry for entry in available if entry["model"] != "tiny")
    return state.a1111_model


def _engine(state: State):
    from ...registry import get_engine

    return get_engine(current_model(state)["engine"])
