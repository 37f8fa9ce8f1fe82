"""``options``, ``sd-models``, ``refresh-checkpoints``, ``cmd-flags`` and ``scripts``."""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from typing import Any

from fastapi import APIRouter

from ..bodies import StrictJSONRoute
from ..dependencies import SettingsDep, StateDep
from .checkpoints import SHOWN
from .overrides import set_options

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)


@router.get("/scripts")
def scripts() -> dict[str, list]:
    """The scripts Codex reads: sd-webui-controlnet's, as A1111 lists them with the extension installed
    (``controlnet_units.LISTED``)."""
    from .controlnet_units import LISTED

    return {"txt2img": list(LISTED), "img2img": list(LISTED)}


@router.get("/sd-models")
def sd_models(state: StateDep) -> list[dict[str, Any]]:
    """A1111's checkpoint list (title, model_name, hash, sha256, filename, config) of the models folders."""
    return [{key: entry[key] for key in SHOWN} for entry in state.a1111.entries()]


@router.post("/refresh-checkpoints")
def refresh_checkpoints(state: StateDep) -> None:
    """The models folders scanned again (a file added or removed since shows in ``sd-models``)."""
    state.a1111.entries(refresh=True)


@router.get("/options")
def options(state: StateDep) -> dict[str, Any]:
    """The current checkpoint (there always is one) and the options Codex honours, with A1111's names."""
    current = state.a1111.current()
    return {"sd_model_checkpoint": current["title"], "sd_checkpoint_hash": current["sha256"],
            **state.a1111.options, "samples_format": "png", "codex_engine": current["engine"]}


@router.post("/options")
def set_options_route(body: dict[str, Any], state: StateDep) -> dict[str, Any]:
    """``sd_model_checkpoint`` (a title, model name, file name or short hash), ``sd_vae`` and
    ``CLIP_stop_at_last_layers`` are applied and kept in the state dir; every other key is listed, not applied."""
    return {"codex_ignored": set_options(state.a1111, body)}


@router.get("/cmd-flags")
def cmd_flags(settings: SettingsDep) -> dict[str, Any]:
    """How the service was started: A1111's flag names where one means the same (a secret only as ``***``),
    then Codex's own, prefixed ``codex_``."""
    limits = {f"max_{limit.name}": getattr(settings.limits, limit.name) for limit in dataclass_fields(settings.limits)}
    return {"api": True, "api_auth": "***" if settings.api_auth else None, "data_dir": str(settings.state_dir),
            "codex_devices": settings.devices, "codex_state_dir": str(settings.state_dir),
            "codex_input_roots": [str(root) for root in settings.input_roots], "codex_max_queue": settings.max_queue,
            "codex_default_model": settings.default_model, "codex_token": bool(settings.token),
            **{f"codex_{name}": value for name, value in limits.items()}}
