"""The A1111 lists of what the models folders hold: ``loras``, ``sd-vae``, ``sd-modules``, ``embeddings``, and
the lists of what Codex has none of (``hypernetworks``, ``face-restorers``, ``realesrgan-models``,
``prompt-styles``: empty, in A1111's shape, so that clients which loop over them work).

The folders are scanned on each call (the scan's time budget bounds it), so ``refresh-loras`` and
``refresh-vae`` have nothing cached to drop: they scan again and answer as A1111 does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from ...errors import UsageError
from ..bodies import StrictJSONRoute
from ..dependencies import StateDep

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)


def _files(kind: str) -> list:
    from ...model_files import scan

    return [found for found in scan([kind]) if found.path.is_file()]


def _header(path) -> dict[str, Any]:
    """A safetensors file's header ({} for any other file, or one that does not read: it is listed anyway)."""
    from ...safetensors_header import read_safetensors_header

    if path.suffix.lower() != ".safetensors":
        return {}
    try:
        return read_safetensors_header(path, "listing")
    except UsageError:
        return {}


def _metadata(path) -> dict[str, Any]:
    """A safetensors file's ``__metadata__``, with the values that hold JSON decoded, as A1111 shows them."""
    metadata = dict(_header(path).get("__metadata__") or {})
    for key, value in metadata.items():
        if isinstance(value, str) and value[:1] in "{[":
            try:
                metadata[key] = json.loads(value)
            except ValueError:
                pass
    return metadata


@router.get("/loras")
def loras() -> list[dict[str, Any]]:
    """Each LoRA file: ``name`` (what ``<lora:NAME:0.8>`` and ``loras[].name`` take), ``alias`` (the same: Codex
    finds LoRAs by name), ``path``, and the file's safetensors ``metadata``."""
    return [{"name": found.name, "alias": found.name, "path": str(found.path), "metadata": _metadata(found.path)}
            for found in _files("loras")]


@router.post("/refresh-loras")
def refresh_loras() -> None:
    _files("loras")


@router.get("/sd-vae")
def sd_vae() -> list[dict[str, Any]]:
    """Each VAE file, by the file name ``sd_vae`` takes (``POST /options``, ``override_settings``)."""
    return [{"model_name": found.path.name, "filename": str(found.path)} for found in _files("vae")]


@router.post("/refresh-vae")
def refresh_vae() -> None:
    _files("vae")


@router.get("/sd-modules")
def sd_modules() -> list[dict[str, Any]]:
    """The files that replace a part of a checkpoint (A1111/Forge's "modules"): VAEs and transformer-only files."""
    return [{"model_name": found.path.name, "filename": str(found.path)}
            for kind in ("vae", "diffusion_models") for found in _files(kind)]


@router.get("/embeddings")
def embeddings(state: StateDep) -> dict[str, dict[str, Any]]:
    """The embeddings files: ``loaded`` those the current checkpoint's engine can use (a prompt that names one
    loads it), ``skipped`` the others (another family's, or a pickle file, which is not opened to look)."""
    from ...model_files import describe

    engine = state.a1111.current()["engine"]
    found: dict[str, dict[str, Any]] = {"loaded": {}, "skipped": {}}
    for row in describe(["embeddings"], hashes=False):
        if row["bytes"] is None:  # skipped by the scan (not a regular file)
            continue
        shapes = [entry["shape"] for name, entry in _header(Path(row["path"])).items() if name != "__metadata__"]
        name = row["name"].rsplit("/", 1)[-1]
        found["loaded" if engine in row["engines"] else "skipped"][name] = {
            "step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
            "shape": sum(shape[-1] for shape in shapes if shape) if shapes else None,
            "vectors": shapes[0][0] if shapes and len(shapes[0]) == 2 else None}
    return found


@router.get("/hypernetworks")
def hypernetworks() -> list[dict[str, Any]]:
    return []


@router.get("/face-restorers")
def face_restorers() -> list[dict[str, Any]]:
    return []


@router.get("/realesrgan-models")
def realesrgan_models() -> list[dict[str, Any]]:
    return []


@router.get("/prompt-styles")
def prompt_styles() -> list[dict[str, Any]]:
    return []
