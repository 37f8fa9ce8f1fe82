"""What the output area shows of a job: its progress bar, its preview while it runs (``preview`` events: the
latents at a step, as the service sends them), and the summary of its info once it is done."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

# at most one preview shown per this many seconds: the service sends one every --preview-every steps, and each
# one shown is an image the browser fetches
PREVIEW_INTERVAL = 0.25


def progress_html(step: int | None, steps: int | None, started: float | None, stage: str | None = None) -> str:
    if not steps:
        return f"<div class='stage'>{stage or ''}</div>"
    percent = 100 * (step or 0) / steps
    eta = ""
    if step and started:
        remaining = (time.monotonic() - started) / step * (steps - step)
        eta = f" · ETA {remaining:.0f} s"
    return (f"<div class='bar'><div style='width:{percent:.0f}%'></div></div>"
            f"<div class='stage'>step {step or 0}/{steps}{eta}{' · ' + stage if stage else ''}</div>")


def summary(info: dict[str, Any]) -> dict[str, Any]:
    """The info panel: what people look at after a run (the whole info.json is among the files)."""
    request = info.get("request", {})
    keys = ("width", "height", "num_frames", "fps", "steps", "cfg", "strength", "vae")
    shown = {
        "seed": info.get("seed"), "interrupted_at_step": info.get("interrupted_at_step"),
        "sampler": info.get("sampler_effective"), "scheduler": info.get("scheduler_effective"),
        "mode": info.get("mode"), "mode_ignored_reason": info.get("mode_ignored_reason"),
        **{key: request[key] for key in keys if key in request},
        # the LoRAs as the request gave them (the service fills the keys it was not given with null)
        "loras": [{key: value for key, value in lora.items() if value is not None} if isinstance(lora, dict)
                  else lora for lora in request.get("loras") or []],
        "timings": info.get("timings"), "memory": info.get("memory"),
        "applied_preset_patch": info.get("applied_preset_patch"),
        "notes": info.get("notes") or None, "run_id": info.get("run_id"),
        # images the run made besides its outputs (a control's preprocessed image): name -> file and size
        "side_images": {name: f"{Path(record['path']).name} ({record['width']}x{record['height']})"
                        for name, record in (info.get("side_images") or {}).items()} or None,
        "audio": sound(info.get("audio")),
    }
    return {key: value for key, value in shown.items() if value not in (None, [])}


def sound(audio: dict[str, Any] | None) -> dict[str, Any] | str | None:
    """The sound track in a line of the info panel (the player plays it; the hash is in info.json)."""
    if not audio:
        return None
    if audio.get("dropped"):
        return 'dropped ("audio": false)'
    return {key: audio.get(key) for key in ("sample_rate", "channels", "duration", "codecs")}


def preview_gallery(data: dict[str, Any]) -> gr.Gallery:
    """A ``preview`` event's image (the latents at a step, latent-sized) where the results will be."""
    with Image.open(io.BytesIO(base64.b64decode(data["png"]))) as image:
        image.load()
        return gr.Gallery(value=[(image.convert("RGB"), f"preview · step {data['step']}/{data['steps']}")],
                          columns=1, format="png")
