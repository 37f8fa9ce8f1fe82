"""Which speed modes an SD 1.x/2.x or SDXL checkpoint supports by itself, read from its configs (no torch).

- ``lcm``: a latent-consistency-distilled UNet embeds the guidance scale, so its ``unet/config.json``
  sets ``time_cond_proj_dim`` (e.g. 256 in SimianLuo/LCM_Dreamshaper_v7 and latent-consistency/lcm-sdxl);
  an ordinary UNet has it null. A folder whose scheduler is already ``LCMScheduler`` counts too.
- ``turbo`` and ``lightning``: adversarially distilled few-step checkpoints (SD-Turbo, SDXL-Turbo,
  SDXL-Lightning) are sampled with trailing timesteps, and their diffusers folders ship a scheduler
  config with ``timestep_spacing: "trailing"``; base SD/SDXL checkpoints ship "leading" (or none).
  The UNet architecture itself is unchanged by this distillation, so the scheduler config is the only
  hint a folder carries; it cannot tell Turbo from Lightning, so it enables both.

Anything else (an accelerator LoRA) is declared by the request's ``mode_lora``.
"""

from __future__ import annotations

import json
from pathlib import Path

HINTS = {
    "lcm": "pass mode_lora with an LCM-LoRA .safetensors (e.g. latent-consistency/lcm-lora-sdv1-5 or "
           "lcm-lora-sdxl), or use an LCM checkpoint (its unet/config.json sets time_cond_proj_dim)",
    "turbo": "use an SD-Turbo / SDXL-Turbo checkpoint (its scheduler config has timestep_spacing "
             "\"trailing\"), or pass mode_lora with a Turbo LoRA .safetensors",
    "lightning": "pass mode_lora with an SDXL-Lightning LoRA .safetensors (e.g. sdxl_lightning_4step_lora), "
                 "or use an SDXL-Lightning checkpoint folder (scheduler timestep_spacing \"trailing\")",
}
UNSUPPORTED_SD15 = {"lightning": "SDXL-Lightning exists only for SDXL (ByteDance distilled the SDXL base); "
                                 "use engine sdxl"}


def _config(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def detect_modes(folder: Path) -> set[str]:
    folder = Path(folder)
    unet = _config(folder / "unet" / "config.json")
    scheduler = _config(folder / "scheduler" / "scheduler_config.json")
    modes = set()
    if unet.get("time_cond_proj_dim") is not None or scheduler.get("_class_name") == "LCMScheduler":
        modes.add("lcm")
    if scheduler.get("timestep_spacing") == "trailing":
        modes.update({"turbo", "lightning"})
    return modes
