"""``options``, ``sd-models`` and ``scripts``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ...errors import UsageError
from ..bodies import StrictJSONRoute
from ..dependencies import StateDep
from .checkpoints import models

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)


@router.get("/scripts")
def scripts() -> dict[str, list]:
    return {"txt2img": [], "img2img": []}


@router.get("/sd-models")
def sd_models() -> list[dict[str, Any]]:
    return [{key: entry[key] for key in ("title", "model_name", "hash", "sha256", "filename", "config")}
            for entry in models()]


@router.get("/options")
def options(state: StateDep) -> dict[str, Any]:
    selected = state.a1111_model
    return {"sd_model_checkpoint": selected["title"] if selected else None, "codex_engine":
            selected["engine"] if selected else None}


@router.post("/options")
def set_options(body: dict[str, Any], state: StateDep) -> dict[str, Any]:
    title = body.get("sd_model_checkpoint")
    if title is not None:
        match = [entry for entry in models() if title in (entry["title"], entry["model_name"])]
        if not match:
            raise UsageError(f"sd_model_checkpoint: no model titled {title!r}; see GET /sdapi/v1/sd-models")
        state.a1111_model = match[0]
    return {}
