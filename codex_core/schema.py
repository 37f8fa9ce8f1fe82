"""The JSON Schema of a request, with preset values shown as defaults and sampler names as enums."""

from __future__ import annotations

from typing import Any

from . import presets, registry
from .errors import UsageError
from .params import ordered_fields


def request_schema(engine: str, task: str) -> dict[str, Any]:
    spec = registry.get_engine(engine)
    if task not in spec.tasks:
        raise UsageError(f"engine {engine!r} has no task {task!r}; its tasks: {', '.join(spec.tasks)}")
    model = spec.params_model(task)
    schema = model.model_json_schema()
    schema["title"] = f"{engine} {task} request"
    schema["properties"] = {name: schema["properties"][name] for name in ordered_fields(model)}
    properties = schema["properties"]
    variant = spec.variants[0] if spec.variants else None
    filled = presets.merged(spec, task, variant=variant)
    if variant:
        schema["description"] = (f"Defaults shown are the {variant!r} variant's; other variants "
                                 f"({', '.join(spec.variants[1:])}) have their own presets (`codex presets {engine}`).")
    for name, value in filled.items():
        if name in properties:
            properties[name]["default"] = value
            properties[name]["description"] = (properties[name].get("description", "") + " (preset default)").strip()
    schema["required"] = [name for name in schema.get("required", []) if name not in filled]
    if spec.sampler_family and "sampler" in properties:
        sampler_defs, schedules = registry.samplers_for(spec)
        properties["sampler"]["examples"] = [s.name for s in sampler_defs if s.family == spec.sampler_family]
        properties["scheduler"]["examples"] = [s.name for s in schedules if s.family == spec.sampler_family]
    return schema
