"""The JSON Schema of a request, with preset values shown as defaults and sampler names as examples."""

from __future__ import annotations

from typing import Any

from . import presets, registry
from .errors import UsageError
from .params import ordered_fields


def default_variant(engine) -> str | None:
    """The variant whose presets stand for the engine's where none is named: its tiny model's, else its first."""
    return (engine.tiny_variant or engine.variants[0]) if engine.variants else None


def check_variant(engine, variant: str | None, flag: str = "--variant") -> str | None:
    """``variant`` if the engine has it (None: the default variant); a UsageError naming the allowed ones if not."""
    if variant is None:
        return default_variant(engine)
    if variant not in engine.variants:
        raise UsageError(f"{flag}: {engine.key} has no variant {variant!r}; its variants: "
                         f"{', '.join(engine.variants) or 'none'}")
    return variant


def request_schema(engine_key: str, task: str, variant: str | None = None) -> dict[str, Any]:
    """The request's JSON Schema, with the presets of ``variant`` (default: ``default_variant``) as defaults."""
    engine = registry.get_engine(engine_key)
    if task not in engine.tasks:
        raise UsageError(f"engine {engine_key!r} has no task {task!r}; its tasks: {', '.join(engine.tasks)}")
    variant = check_variant(engine, variant)
    model = engine.params_model(task)
    schema = model.model_json_schema()
    schema["title"] = f"{engine_key} {task} request"
    schema["properties"] = {name: schema["properties"][name] for name in ordered_fields(model)}
    properties = schema["properties"]
    filled = presets.merged(engine, task, variant=variant)
    if variant:
        others = [name for name in engine.variants if name != variant]
        schema["description"] = (f"Defaults shown are the {variant!r} variant's; other variants "
                                 f"({', '.join(others)}) have their own presets (`codex schema {engine_key} {task} "
                                 f"--variant NAME`, `codex presets {engine_key}`).")
    for name, value in filled.items():
        if name in properties:
            properties[name]["default"] = value
            properties[name]["description"] = (properties[name].get("description", "") + " (preset default)").strip()
    schema["required"] = [name for name in schema.get("required", []) if name not in filled]
    if engine.sampler_family and "sampler" in properties:
        sampler_defs, schedules = registry.samplers_for(engine, task)
        properties["sampler"]["examples"] = [s.name for s in sampler_defs]
        properties["scheduler"]["examples"] = [s.name for s in schedules]
    return schema
