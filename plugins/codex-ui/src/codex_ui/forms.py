"""A task's form, from the engine's request schema: which fields, of what kind, with what preset value.

Pure functions over the JSON Schema the service serves (``/v1/engines/{engine}/{task}/schema``), so
any engine, first-party or not, and any task name gets a form. Values go into the request only when
the user set them: an untouched field stays out, and the service's presets fill it (the result's
``applied_preset_patch`` says with what).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

# Fields the top bar sets (the speed mode), not the task's form.
TOP_BAR = ("mode",)
# Shown as multi-line text boxes.
LONG_TEXT = ("prompt", "negative_prompt")
# Fields picked from the models folders (``pickers.py``): the field -> its kind of model file and JSON type.
PICKED = {"loras": ("loras", "array"), "vae": ("vae", "string")}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # text | long_text | int | float | bool | choice | image | images | video | json | loras | vae | controls
    label: str
    description: str = ""
    default: Any = None  # the preset's value (or the schema's default): shown, never sent
    has_default: bool = False
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = field(default_factory=tuple)
    max_items: int | None = None  # loras, images, controls: how many a request may have
    min_items: int | None = None  # images: how many it needs

    def hint(self) -> str:
        """The line under the field: what it is, its range, and the preset value it falls back to."""
        parts = [self.description.replace(" (preset default)", "")] if self.description else []
        if self.kind in ("int", "float") and (self.minimum is not None or self.maximum is not None):
            parts.append(f"range {_number(self.minimum)}..{_number(self.maximum)}")
        if self.required:
            parts.append("required")
        elif self.has_default:
            parts.append(f"preset: {json.dumps(self.default)}" if self.default is not None else "preset: none")
        return " · ".join(part for part in parts if part)

    def placeholder(self) -> str | None:
        if self.has_default and self.default is not None and self.kind not in ("json",):
            return str(self.default)
        return None


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def _plain(prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The property without its ``null`` alternative (``anyOf: [X, null]``), and whether null is allowed."""
    options = prop.get("anyOf")
    if not options:
        return prop, False
    real = [option for option in options if option.get("type") != "null"]
    if len(real) == 1:
        return {**prop, **real[0]}, True
    return prop, True


def form_fields(schema: dict[str, Any]) -> list[FieldSpec]:
    """The form of one engine's task, in the schema's (canonical) field order."""
    required = set(schema.get("required", []))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        if name in TOP_BAR:
            continue
        plain, _nullable = _plain(prop)
        kind = _kind(name, plain)
        # a number's range; a LoRA list's is its scale's (the item's ``scale`` property)
        ranged = _item(schema, plain).get("properties", {}).get("scale", {}) if kind == "loras" else plain
        minimum = ranged.get("minimum", ranged.get("exclusiveMinimum"))
        maximum = ranged.get("maximum", ranged.get("exclusiveMaximum"))
        choices = tuple(plain.get("enum") or plain.get("examples") or ())
        fields.append(FieldSpec(
            name=name, kind=kind, label=prop.get("title") or name.replace("_", " ").title(),
            description=prop.get("description", ""), default=prop.get("default"), has_default="default" in prop,
            required=name in required, minimum=minimum if kind in ("int", "float", "loras") else None,
            maximum=maximum if kind in ("int", "float", "loras") else None, choices=choices,
            max_items=plain.get("maxItems") if kind in ("loras", "images", "controls") else None,
            min_items=plain.get("minItems") if kind == "images" else None))
    return fields


def _item(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    """An array property's item schema, its ``$ref`` (``#/$defs/Name``) followed."""
    item = prop.get("items") or {}
    ref = item.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
    return item


def _kind(name: str, prop: dict[str, Any]) -> str:
    if prop.get("x-codex-input") in ("image", "video"):  # a file upload of that kind
        return prop["x-codex-input"]
    if prop.get("x-codex-input") == "images" and prop.get("type") == "array":  # an edit's reference images
        return "images"
    if prop.get("x-codex-input") == "controls" and prop.get("type") == "array":  # ControlNets: the control panel
        return "controls"
    kind = prop.get("type")
    if name in PICKED and PICKED[name][1] == kind:
        return name
    if prop.get("enum") or (kind == "string" and prop.get("examples")):
        return "choice"
    if kind == "string":
        return "long_text" if name in LONG_TEXT else "text"
    return {"integer": "int", "number": "float", "boolean": "bool"}.get(kind, "json")


class Unset:
    """The value of a field the user cleared: the key leaves the request."""


UNSET = Unset()


def value_of(spec: FieldSpec, raw: Any) -> Any:
    """What a field's widget holds, as the JSON value to send (``UNSET``: leave the key out).

    Nothing is rounded or coerced into range here: 64.5 in an integer field is sent as 64.5 and the
    service says what is wrong with it, next to the field.
    """
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return UNSET  # an emptied field leaves the request: the preset (or the schema default) applies
    if spec.kind == "int" and isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        return int(raw)
    if spec.kind in ("json", "loras", "controls") and isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw  # sent as typed: the service names the field and the type it wants
    return raw


def with_value(request: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    updated = dict(request)
    if value is UNSET:
        updated.pop(name, None)
    else:
        updated[name] = value
    return updated


def count_problem(spec: FieldSpec, value: Any, engine: str) -> str | None:
    """What is wrong with how many images an ``images`` field holds, said before anything is sent (the engine's
    limits are the schema's minItems/maxItems); None when the count is allowed or the value is not a list."""
    if value is not None and not isinstance(value, list):
        return None  # typed in the panel as something else: the service names what it wants
    count = len(value or [])
    least, most = spec.min_items or 0, spec.max_items
    if count < least:
        return (f"add at least {least} reference image{'s' if least != 1 else ''} (the first is the one edited)"
                if count == 0 else f"{count} images; {engine} needs at least {least}")
    if most is not None and count > most:
        return (f"{count} images; {engine} takes at most {most} reference image{'s' if most != 1 else ''}: remove "
                f"{count - most} (the first is the one edited)")
    return None


def problems_by_field(problems: list[str], fields: list[str]) -> dict[str, str]:
    """``"width: must be a multiple of 8"`` lines, keyed by the top-level field they name ("" for the rest)."""
    found: dict[str, list[str]] = {}
    for line in problems:
        head, sep, message = line.partition(": ")
        key = head.split(".")[0].split("[")[0] if sep else ""
        if key not in fields:
            key, message = "", line
        found.setdefault(key, []).append(message if key else line)
    return {key: "; ".join(messages) for key, messages in found.items()}


def parse_request(text: str) -> dict[str, Any]:
    """The Request JSON panel's text as a request object; ValueError says where it is not one."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Request JSON: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"Request JSON: must be an object of fields, got {type(value).__name__}")
    return value


def show_request(request: dict[str, Any]) -> str:
    return json.dumps(request, indent=2, ensure_ascii=False)
