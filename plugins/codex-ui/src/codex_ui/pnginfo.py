"""PNG Info: the parameters of a PNG or video made by Codex or A1111, as a request for the matching tab.

A Codex file carries its request (``codex`` record): the request as it was sent (``request_in``)
goes back to its engine and task. An A1111 PNG has only the ``parameters`` text: its A1111 keys are
read into Codex fields for the selected engine's txt2img (or img2img when it records a denoising
strength).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codex_core import CodexError

# A1111 parameters key -> (Codex field, type)
A1111_KEYS = {"Steps": ("steps", int), "Sampler": ("sampler", str), "Schedule type": ("scheduler", str),
              "CFG scale": ("cfg", float), "Seed": ("seed", int), "Denoising strength": ("strength", float),
              "Clip skip": ("clip_skip", int)}


@dataclass
class Found:
    text: str
    request: dict[str, Any] | None
    target: tuple[str, str] | None  # (engine, task) the request belongs to


def read_parameters(path: Path, engine: str, installed: set[str]) -> Found:
    from codex_core import inspect_output as inspect

    try:
        result = inspect(path)
    except CodexError as exc:
        return Found(f"⚠ {exc.message}", None, None)
    data = result.data
    text = data.get("parameters") or ""
    problems = "; ".join(result.problems)
    record = data.get("codex")
    if isinstance(record, dict) and isinstance(record.get("request_in", record.get("request")), dict):
        request = dict(record.get("request_in") or record["request"])
        target = (record.get("engine"), record.get("task"))
        if target[0] not in installed:
            return Found(text + f"\n⚠ made by engine {target[0]!r}, which is not installed here", request, None)
        return Found(text or problems, request, target)
    if text:
        request = from_a1111(text)
        task = "img2img" if "strength" in request else "txt2img"
        return Found(text, request, (engine, task))
    return Found(f"⚠ no parameters found{': ' + problems if problems else ''}", None, None)


def from_a1111(text: str) -> dict[str, Any]:
    """A1111's parameters text as a Codex request (the keys with a Codex field; the rest stay in the text)."""
    from codex_core import parse_parameters_text as parse_parameters

    parsed = parse_parameters(text)
    request: dict[str, Any] = {}
    if parsed.get("Prompt"):
        request["prompt"] = parsed["Prompt"]
    if parsed.get("Negative prompt"):
        request["negative_prompt"] = parsed["Negative prompt"]
    for key, (name, kind) in A1111_KEYS.items():
        if key in parsed:
            try:
                request[name] = kind(parsed[key])
            except ValueError:
                continue
    size = re.fullmatch(r"(\d+)x(\d+)", str(parsed.get("Size", "")))
    if size:
        request["width"], request["height"] = int(size.group(1)), int(size.group(2))
    return request
