"""The JSON Schema of a request, with preset values shown as defaults and sampler names as examples."""

from __future__ import annotations

from typing import Any

from . import presets, registry
from .errors import UsageError
from .params import ordered_fields


def request_schema(engine_key: str, task: str) -> dict[str, Any]:
    engine = registry.get_engine(engine_key)
    if task not in engine.tasks:
        raise UsageError(f"engine {engine_key!r} has no task {task!r}; its tasks: {', '.join(engine.tasks)}")
    model = engine.params_model(task)
    schema = model.model_json_schema()
    schema["title"] = f"{engine_key} {task} request"
    schema["properties"] = {name: schema["properties"][name] for name in ordered_fields(model)}
    properties = schema["properties"]
    variant = engine.variants[0] if engine.variants else None
    filled = presets.merged(engine, task, variant=variant)
    if variant:
        schema["description"] = (f"Defaults shown are the {variant!r} variant's; other variants "
                                 f"({', '.join(engine.variants[1:])}) have their own presets "
                                 f"(`codex presets {engine_key}`).")
    for name, value in filled.items():
        if name in properties:
            properties[name]["default"] = value
            properties[name]["description"] = (properties[name].get("description", "") + " (preset default)").strip()
    schema["required"] = [name for name in schema.get("required", []) if name not in filled]
    if engine.sampler_family and "sampler" in properties:
        sampler_defs, schedules = registry.samplers_for(engine)
        properties["sampler"]["examples"] = [s.name for s in sampler_defs]
        properties["scheduler"]["examples"] = [s.name for s in schedules]
    return schema
