"""Which Stable Diffusion checkpoint a single file holds, from its tensor names and shapes (torch-free).

The original (LDM / A1111) layout names each model by its text conditioner, so the family is read
from the key prefixes rather than from layer counts (which also keeps it right for tiny test files):

- SD 1.x: ``cond_stage_model.transformer.*`` (OpenAI CLIP ViT-L, Hugging Face layout);
- SD 2.x: ``cond_stage_model.model.*`` (OpenCLIP ViT-H);
- SDXL base: ``conditioner.embedders.0.transformer.*`` (CLIP ViT-L) and ``conditioner.embedders.1.model.*``
  (OpenCLIP ViT-bigG); the SDXL refiner has only ``conditioner.embedders.0.model.*``.

Inpainting checkpoints take the masked image and the mask as extra UNet inputs: the first
convolution ``model.diffusion_model.input_blocks.0.0.weight`` has 9 input channels instead of 4.
"""

from __future__ import annotations

UNET_INPUT = "model.diffusion_model.input_blocks.0.0.weight"

FAMILIES = {  # key prefix -> family, checked in this order
    "conditioner.embedders.1.model.": "sdxl",
    "conditioner.embedders.0.model.": "sdxl_refiner",
    "cond_stage_model.model.": "sd2",
    "cond_stage_model.transformer.": "sd15",
}
NAMES = {"sd15": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL base", "sdxl_refiner": "SDXL refiner"}
ENGINE_OF = {"sd15": "sd15", "sdxl": "sdxl"}


def sd_checkpoint(shapes: dict[str, tuple[int, ...]]) -> tuple[str | None, str]:
    """(variant, description): variant is ``sd15``, ``sd15_inpaint``, ``sdxl`` or ``sdxl_inpaint``, or None
    with a description of what the file is instead."""
    if UNET_INPUT not in shapes:
        if any(key.startswith(("lora_", "lora_unet")) or "lora_A" in key for key in shapes):
            return None, "a LoRA, not a checkpoint"
        return None, "not a whole SD/SDXL checkpoint (no model.diffusion_model.input_blocks UNet tensors)"
    family = next((name for prefix, name in FAMILIES.items() if any(key.startswith(prefix) for key in shapes)), None)
    if family is None:
        return None, "an SD-style UNet without a text encoder Codex knows (no cond_stage_model / conditioner keys)"
    channels = shapes[UNET_INPUT][1] if len(shapes[UNET_INPUT]) > 1 else None
    if channels not in (4, 9):
        return None, f"an {NAMES[family]} checkpoint whose UNet takes {channels} input channels (4, or 9 for inpainting)"
    inpaint = channels == 9
    if family not in ENGINE_OF:
        return None, f"an {NAMES[family]}{' inpainting' if inpaint else ''} checkpoint"
    return f"{family}_inpaint" if inpaint else family, f"an {NAMES[family]}{' inpainting' if inpaint else ''} checkpoint"
