"""The inpainting mask from the brush layers Gradio's image editor returns."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image


def mask_from_layers(background: str, layers: list[str], folder: Path) -> Path | None:
    """A white-on-black mask (white = repaint) the size of ``background``: every painted pixel of every
    layer; None when nothing is painted."""
    with Image.open(background) as base:
        size = base.size
    mask = Image.new("L", size, 0)
    painted = False
    for layer in layers:
        with Image.open(layer) as image:
            alpha = image.convert("RGBA").getchannel("A")
        if alpha.size != size:
            alpha = alpha.resize(size, Image.Resampling.NEAREST)
        if alpha.getbbox() is None:
            continue
        painted = True
        mask.paste(255, mask=alpha.point(lambda value: 255 if value > 0 else 0))
    if not painted:
        return None
    data = mask.tobytes()
    path = folder / f"mask-{hashlib.sha256(data).hexdigest()[:16]}.png"
    mask.save(path)
    return path
