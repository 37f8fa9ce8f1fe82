"""FLUX.1 checkpoint variants: which one a folder holds, and the request rules that depend on it.

Torch-free (configs only), so both run in ``prepare`` before anything loads.
"""

from __future__ import annotations

import json
from pathlib import Path

VARIANTS = ("dev", "schnell")
SCHNELL_MAX_SEQUENCE_LENGTH = 256  # schnell was distilled with 256 T5 tokens (BFL's reference code)


def variant_from_config(config: dict) -> str | None:
    """dev carries a guidance embedding (``guidance_embeds``: true); schnell does not."""
    if config.get("_class_name") != "FluxTransformer2DModel":
        return None
    # a config without the key loads with diffusers' default (False): no guidance embedding
    return "dev" if config.get("guidance_embeds", False) else "schnell"


def detect_variant(folder: Path) -> str | None:
    try:
        config = json.loads((Path(folder) / "transformer" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return variant_from_config(config) if isinstance(config, dict) else None


def check_request(task: str, params, variant: str | None) -> list[str]:
    """Problems with ``params`` for this checkpoint variant, one line per field (empty: fine).

    The core calls it in ``prepare`` (EngineSpec.check_request), after validation, before loading.
    """
    problems = []
    if variant == "schnell":
        if params.cfg != 0.0:
            problems.append(f"cfg: got {params.cfg!r}: FLUX.1-schnell has no guidance embedding, so cfg would be "
                            "ignored; leave it out (the schnell preset sets 0.0). For classifier-free guidance "
                            "against a negative prompt use true_cfg")
        if params.max_sequence_length > SCHNELL_MAX_SEQUENCE_LENGTH:
            problems.append(f"max_sequence_length: got {params.max_sequence_length}: FLUX.1-schnell takes at most "
                            f"{SCHNELL_MAX_SEQUENCE_LENGTH} T5 tokens (allowed: an integer >= 1 and "
                            f"<= {SCHNELL_MAX_SEQUENCE_LENGTH})")
    return problems
