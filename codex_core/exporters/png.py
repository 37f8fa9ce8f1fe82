"""PNG with an A1111-style ``parameters`` text chunk and a ``codex`` chunk holding the full request; A1111's
parameters text read back (``parse_parameters_text``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from PIL import PngImagePlugin

from ..a1111_controls import infotext_pairs
from ..outputs import ImageOutput, RunFiles

PARAMETERS_KEY = "parameters"
CODEX_KEY = "codex"


def _a1111_value(value: Any) -> str:
    text = str(value)
    # A1111 quotes values that would break its "Key: value, Key: value" line.
    return json.dumps(text) if ("," in text or ":" in text or "\n" in text) else text


def parameters_text(info: dict[str, Any], size: tuple[int, int], index: int = 0) -> str:
    """The A1111 layout: prompt, ``Negative prompt:`` line, then ``Key: value`` pairs."""
    request = info.get("request", {})
    lines = [request.get("prompt", "")]
    if request.get("negative_prompt"):
        lines.append(f"Negative prompt: {request['negative_prompt']}")
    schedule = (info.get("scheduler_effective") or {}).get("schedule")
    model = info.get("model", {})
    files = model.get("files") or {}
    checkpoint, vae = files.get("checkpoint") or {}, files.get("vae") or {}

    def hashes(prefix: str) -> str | None:  # A1111's "Lora hashes"/"TI hashes": name: first 12 hex digits
        found = [f"{label[len(prefix):]}: {record['sha256'][:12]}" for label, record in files.items()
                 if label.startswith(prefix) and record.get("sha256")]
        return ", ".join(found) or None

    pairs = [
        ("Steps", request.get("steps")),
        ("Sampler", info.get("sampler_effective")),
        ("Schedule type", schedule),
        ("CFG scale", request.get("cfg")),
        ("Seed", image_seed(info, index)),
        ("Size", f"{size[0]}x{size[1]}"),
        ("Model hash", checkpoint.get("hash")),
        ("Model", (Path(checkpoint["path"]).stem if checkpoint.get("path") else
                   Path(str(model.get("repo_id") or model.get("label") or "")).name) or None),
        ("VAE hash", vae.get("hash")),
        ("VAE", Path(vae["path"]).name if vae.get("path") else None),
        ("Clip skip", request.get("clip_skip") if (request.get("clip_skip") or 1) > 1 else None),
        ("Lora hashes", hashes("lora:")),
        ("TI hashes", hashes("embedding:")),
        ("Denoising strength", request.get("strength")),
        ("Hires upscale", request.get("upscale_factor")),
        ("Batch size", request.get("batch_size") if (request.get("batch_size") or 1) > 1 else None),
        ("Batch pos", index if (request.get("batch_size") or 1) > 1 else None),
        *infotext_pairs(info, size),  # sd-webui-controlnet's "ControlNet N" lines, one per control
        ("Engine", f"{info.get('engine')} {info.get('task')}"),
        ("Version", f"codex {info.get('versions', {}).get('codex-core')}"),
    ]
    lines.append(", ".join(f"{key}: {_a1111_value(value)}" for key, value in pairs if value is not None))
    return "\n".join(lines)


def image_seed(info: dict[str, Any], index: int) -> Any:
    """The seed image ``index`` of the run was drawn from: ``info.seeds[index]`` (seed + index), else the seed."""
    seeds = info.get("seeds") or []
    return seeds[index] if index < len(seeds) else info.get("seed")


# What an output file's own copy of info leaves out: what is only known after export, or lists files.
NOT_EMBEDDED = frozenset({"created", "preset_files", "seed_source", "steps_done", "timings", "steps_per_second",
                          "memory", "outputs", "video", "videos", "frames"})


def embedded(info: dict[str, Any], index: int) -> dict[str, Any]:
    """The run's info as a PNG or video carries it: everything that decides or describes the output."""
    return {**{key: value for key, value in info.items() if key not in NOT_EMBEDDED}, "batch_index": index}


def write_png(output: ImageOutput, files: RunFiles, info: dict[str, Any]) -> list[Path]:
    written = []
    for index, image in enumerate(output.images):
        meta = PngImagePlugin.PngInfo()
        meta.add_text(PARAMETERS_KEY, parameters_text(info, image.size, index))
        meta.add_text(CODEX_KEY, json.dumps(embedded(info, index), default=str))
        path = files.staging_dir / f"{index:04d}.png"
        image.save(path, pnginfo=meta)
        written.append(path)
    return written


def parse_parameters_text(text: str) -> dict[str, Any]:
    """A1111's parameters text as a dict: Prompt, Negative prompt and each ``Key: value`` of the last line."""
    if not text:
        return {}
    lines = text.strip().split("\n")
    result: dict[str, Any] = {}
    settings = lines[-1] if len(lines) > 1 and ": " in lines[-1] else ""
    body = lines[:-1] if settings else lines
    negative = [i for i, line in enumerate(body) if line.startswith("Negative prompt: ")]
    if negative:
        result["Prompt"] = "\n".join(body[:negative[0]])
        result["Negative prompt"] = "\n".join(body[negative[0]:])[len("Negative prompt: "):]
    else:
        result["Prompt"] = "\n".join(body)
    for key, value in re.findall(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', settings):
        value = value.strip()
        if value.startswith('"'):
            value = json.loads(value)
        result[key.strip()] = value
    return result
