"""The ControlNets an A1111 client may name: the controlnet models folders, titled as sd-webui-controlnet titles
them (``name [hash]``: the file's stem, or a diffusers folder's name, and A1111's old 8-digit hash), and a name
a client sends resolved as the extension resolves it (``find_closest_lora_model_name``): the exact title, else the
name without its ``[hash]`` (case aside), else the shortest title that contains it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...a1111_controls import model_title
from ...errors import UsageError
from ..bodies import excerpt

KIND = "controlnet"
TITLED = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9A-Fa-f]{8,12})\]\s*$")


@dataclass(frozen=True)
class Listed:
    title: str  # "name [hash]"
    name: str  # what Codex's models folders call it (`codex models --kind controlnet`)
    path: Path

    @property
    def stem(self) -> str:
        return self.title.rsplit(" [", 1)[0]


def listed() -> list[Listed]:
    """Every ControlNet in the controlnet models folders, titled (A1111's model_list order: by name)."""
    from ...model_files import scan

    found = []
    for model in scan([KIND]):
        try:
            found.append(Listed(model_title(model.path), model.name, model.path))
        except OSError:  # unreadable now: the scan lists it with its problem (`codex models`), A1111 leaves it out
            continue
    return sorted(found, key=lambda item: item.title.lower())


def resolve(value: str, field: str, notes: list[str]) -> Listed:
    """The ControlNet a unit's ``model`` names; a 422 naming ``field`` when none does. A title whose hash is not the
    file's still finds the file by its name, and ``notes`` says so."""
    models = listed()
    exact = [model for model in models if model.title == value]
    if exact:
        return exact[0]
    match = TITLED.match(value)
    name = (match.group("name") if match else value).strip()
    same = [model for model in models if name.lower() in (model.stem.lower(), model.name.lower())]
    closest = sorted((model for model in models if name.lower() in model.title.lower()), key=lambda m: len(m.title))
    found = same[0] if same else closest[0] if name and closest else None
    if found is None:
        known = ", ".join(model.title for model in models[:8]) or "none (put diffusers ControlNet folders in the " \
                                                                    "controlnet models folder)"
        raise UsageError(f"{field}: no ControlNet named {excerpt(value)}; the ControlNets: {known}",
                         hint="GET /controlnet/model_list lists them")
    if match and found.title != value:
        notes.append(f"{field}={excerpt(value)}: no ControlNet has that hash; ran {found.title}, found by its name")
    return found
