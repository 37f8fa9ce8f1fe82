"""The A1111 options Codex honours: set with ``POST /options`` (kept in the state dir) or for one call with
``override_settings``.

- ``sd_model_checkpoint``: the checkpoint, by title, model name, file name, short hash or sha256;
- ``sd_vae``: ``Automatic`` or ``None`` (the checkpoint's own VAE), or a VAE file of the models folders
  (its file name as ``GET /sdapi/v1/sd-vae`` lists it, or its name): the request's ``vae``;
- ``CLIP_stop_at_last_layers``: A1111's Clip skip (1 to 12): the request's ``clip_skip``.

Any other key is listed (``POST /options`` answers with them and logs them; a call's in
``info.codex_ignored``), never applied. As in A1111, a call's overrides hold for that call unless it
sends ``override_settings_restore_afterwards: false``, which makes them the service's options.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ..bodies import excerpt
from .checkpoints import Checkpoints

HONOURED = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")
OWN_VAE = ("Automatic", "None")  # A1111's choices that mean the checkpoint's own VAE


def vae_file(name: str, field_name: str) -> Path:
    """The VAE file of the models folders ``name`` names: its file name, its name, or its path."""
    from ...model_files import scan

    files = scan(["vae"])
    for match in ([f for f in files if name in (f.path.name, str(f.path))], [f for f in files if f.name == name],
                  [f for f in files if f.stem == name]):
        if match:
            return match[0].path
    known = ", ".join(sorted(f.path.name for f in files)[:12]) or "none"
    raise UsageError(f"{field_name}: no VAE named {excerpt(name)} in the models folders; known: {known}",
                     hint="Automatic or None for the checkpoint's own VAE; see GET /sdapi/v1/sd-vae")


def checked(checkpoints: Checkpoints, name: str, value: Any, where: str) -> Any:
    """``value`` of option ``name`` as kept (the checkpoint's entry, the VAE's name, the clip skip)."""
    if name == "sd_model_checkpoint":
        return checkpoints.lookup(value, where)
    if name == "sd_vae":
        if value is None or value in OWN_VAE:
            return value or "Automatic"
        if not isinstance(value, str):
            raise UsageError(f"{where}: got {excerpt(value)}; Automatic, None or a name from GET /sdapi/v1/sd-vae")
        vae_file(value, where)
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 12:
        raise UsageError(f"{where}: got {excerpt(value)}; a whole number from 1 (the last CLIP layer) to 12")
    return value


def set_options(checkpoints: Checkpoints, body: dict[str, Any]) -> list[str]:
    """``POST /options``: every honoured key checked first (a bad one changes nothing), then applied and kept;
    the keys it ignored, also logged."""
    values = {name: checked(checkpoints, name, body[name], name) for name in HONOURED if name in body}
    for name, value in values.items():
        if name == "sd_model_checkpoint":
            checkpoints.select(value)
        else:
            checkpoints.set_option(name, value)
    ignored = sorted(key for key in body if key not in HONOURED)
    if ignored:
        print(f"codex: POST /sdapi/v1/options: ignored {', '.join(excerpt(key, 60) for key in ignored[:20])}"
              + (f" and {len(ignored) - 20} more" if len(ignored) > 20 else ""), file=sys.stderr)
    return ignored


@dataclass
class CallOptions:
    """The options one call runs with."""

    checkpoint: dict[str, Any]
    vae: str
    clip_skip: int
    overridden: dict[str, Any] = field(default_factory=dict)  # override_settings honoured, as given
    ignored: list[str] = field(default_factory=list)


def for_call(checkpoints: Checkpoints, body: dict[str, Any]) -> CallOptions:
    """The service's options with the call's ``override_settings`` over them."""
    overrides = body.get("override_settings") or {}
    if not isinstance(overrides, dict):
        raise UsageError(f"override_settings: got {excerpt(overrides)}; an object of option: value")
    values = {name: checked(checkpoints, name, overrides[name], f"override_settings.{name}")
              for name in HONOURED if name in overrides}
    if values and body.get("override_settings_restore_afterwards") is False:  # A1111: they stay after the call
        set_options(checkpoints, {name: overrides[name] for name in values})
    return CallOptions(values.get("sd_model_checkpoint") or checkpoints.current(),
                       values.get("sd_vae", checkpoints.options["sd_vae"]),
                       values.get("CLIP_stop_at_last_layers", checkpoints.options["CLIP_stop_at_last_layers"]),
                       {name: overrides[name] for name in values},
                       [f"override_settings.{key}" for key in overrides if key not in HONOURED])


def into_request(options: CallOptions, engine, task: str, request: dict[str, Any], ignored: list[str]) -> None:
    """The VAE and the clip skip as the request's ``vae`` and ``clip_skip`` where the engine's task has them (a
    ``clip_skip`` the body gave wins), else listed in ``ignored``."""
    fields = engine.params_model(task).model_fields
    if options.vae not in OWN_VAE:
        if "vae" in fields:
            request["vae"] = str(vae_file(options.vae, "sd_vae"))
        else:
            ignored.append(f"sd_vae={options.vae!r} (engine {engine.key} takes no VAE file)")
    if "clip_skip" not in request and options.clip_skip != 1:
        if "clip_skip" in fields:
            request["clip_skip"] = options.clip_skip
        else:
            ignored.append(f"CLIP_stop_at_last_layers={options.clip_skip} (engine {engine.key} has no clip skip)")
    limit = getattr(engine, "clip_skip_max", None)  # an engine that conditions on one fixed CLIP layer
    if limit is not None and request.get("clip_skip", 1) > limit:
        ignored.append(f"clip_skip={request.pop('clip_skip')} (engine {engine.key} takes at most {limit}: its "
                       "conditioning is a fixed CLIP layer; A1111 also leaves such models' layer as it is)")
