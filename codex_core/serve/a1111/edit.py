"""img2img on an instruction-editing checkpoint: the engine's ``edit`` task.

A1111 has no edit task: its clients send img2img with ``init_images``. When the current checkpoint serves
``edit`` and not ``img2img`` (its configs say: ``Engine.checkpoint_tasks``), the call runs ``edit``:
``init_images`` are the reference images (the first is the one edited, not a batch as in img2img), width
and height the output size as A1111's img2img makes them, and ``info.codex_substituted`` says so.
``denoising_strength`` means nothing to an edit model: the translation lists it in ``codex_ignored``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import UsageError
from ..bodies import excerpt


def served_tasks(engine, checkpoint: dict[str, Any]) -> tuple[str, ...]:
    """The tasks the checkpoint serves (a tiny model: every task of its engine)."""
    if checkpoint["model"] == "tiny":
        return tuple(engine.tasks)
    return engine.checkpoint_tasks(Path(checkpoint["model"]))


def edit_references(engine, checkpoint: dict[str, Any], served: tuple[str, ...], body: dict[str, Any],
                    substituted: list[str]) -> list | None:
    """The reference images when this img2img call runs the checkpoint's ``edit`` task (``served``: the tasks the
    checkpoint serves); None: it stays img2img."""
    if "edit" not in served or "img2img" in served:
        return None
    name = checkpoint["model_name"]
    init = body.get("init_images") or []
    if not isinstance(init, list) or not init or not all(isinstance(image, str) for image in init):
        raise UsageError(f"init_images: got {excerpt(init)}; {name} is an instruction-editing model: send its "
                         "reference images (base64 or data URLs), the first is the one edited")
    if body.get("mask"):
        raise UsageError(f"mask: {name} is an instruction-editing model ({engine.key} edit), which takes no mask; "
                         "say in the prompt what to change, or choose an inpainting checkpoint")
    limit = engine.params_model("edit").max_images
    if len(init) > limit:
        raise UsageError(f"init_images: got {len(init)} images; {name} edits with at most {limit} reference "
                         f"image{'s' if limit > 1 else ''}")
    substituted.append(f"img2img -> edit: {name} is an instruction-editing model ({engine.key} edit); init_images "
                       "are its reference images")
    return list(init)


def check_served(checkpoint: dict[str, Any], served: tuple[str, ...], task: str) -> None:
    """A task the current checkpoint does not serve is a 422 now, not a failed job later."""
    if task not in served:
        raise UsageError(f"{checkpoint['model_name']} serves {', '.join(served)}, not {task}; choose another "
                         "checkpoint (POST /sdapi/v1/options {\"sd_model_checkpoint\": ...})")
