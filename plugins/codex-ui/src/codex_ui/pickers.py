"""The fields picked from the models folders instead of typed as JSON: ``loras`` (a multi-select of the LoRAs the
engine takes, with a scale per chosen LoRA) and ``vae`` (one of the VAE files, or the checkpoint's own).

The lists come from the service (``GET /v1/models?kind=...``), so with ``--server`` they are the folders of the
machine that runs the jobs. A name or path that is not listed can still be typed (a LoRA outside the folders, a
VAE folder): it is sent as typed and the service says what is wrong with it, next to the field. Each pick is
written into the task's request at once, so the Request JSON panel shows it; a ``loras`` value the picker
cannot show (edited in the panel into something other than a list of LoRAs) is shown in a JSON box instead.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

import gradio as gr

from .client import Refused, ServiceClient
from .drafts import ONE_AT_A_TIME
from .forms import PICKED, UNSET, FieldSpec, with_value

if TYPE_CHECKING:
    from .app import Page

# a typed LoRA ending so, or starting like a path, is a file (``path``); anything else is a folder name (``name``)
LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
PATH_STARTS = ("/", "~", "./", "../", "\\")


class ModelLists:
    """The names of the models folders' files, as the service lists them. Asked again after ``ttl`` seconds: a
    render makes every tab's form (each asking), and a file added to a folder shows at the next render."""

    def __init__(self, client: ServiceClient, ttl: float = 5.0):
        self.client, self.ttl = client, ttl
        self._found: dict[tuple[str, str], tuple[float, list[str]]] = {}

    def names(self, engine: str, kind: str) -> list[str]:
        asked_at, names = self._found.get((engine, kind), (0.0, []))
        if time.monotonic() - asked_at < self.ttl:
            return names
        # LoRAs: those the engine takes, judged from each file's tensors. VAE files are judged by no engine (each
        # answers that it does not use them, so an engine filter would list none): every readable one is offered;
        # a job given one whose tensors do not fit the model fails with the vae field named.
        try:
            rows = self.client.models(engine if kind == "loras" else None, kind)
        except Refused:
            rows = []
        names = [row["name"] for row in rows if not row.get("problem")]
        self._found[(engine, kind)] = (time.monotonic(), names)
        return names


def lora_label(entry: dict[str, Any]) -> str:
    """What a chosen LoRA is shown as: its name, else its path."""
    return entry.get("name") or entry.get("path") or ""


def shows(spec: FieldSpec, value: Any) -> bool:
    """Whether the picker can show ``value`` (else the field is a plain box): a VAE given as text, a list of
    LoRAs each with a name or a path, none twice."""
    if value is None:
        return True
    if spec.kind == "vae":
        return isinstance(value, str)
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        return False
    labels = [lora_label(entry) for entry in value]
    return all(isinstance(label, str) and label for label in labels) and len(set(labels)) == len(labels)


def loras_from_chips(chips: list[str], current: list[dict[str, Any]], listed: list[str]) -> list[dict[str, Any]]:
    """The request's ``loras`` after the picker's chips changed: a LoRA already chosen keeps its entry (its scale
    and ``into``), a new one is ``{"name"|"path": chip, "scale": 1.0}`` in the order of the chips."""
    kept = {lora_label(entry): entry for entry in current}
    entries = []
    for chip in chips:
        if chip in kept:
            entries.append(kept[chip])
            continue
        typed_path = chip not in listed and (chip.lower().endswith(LORA_SUFFIXES) or chip.startswith(PATH_STARTS))
        entries.append({"path" if typed_path else "name": chip, "scale": 1.0})
    return entries


def picker(page: "Page", engine: str, task: str, spec: FieldSpec, value: Any, error: str | None, rendered: int,
           changed: list):
    """The field's picker. The VAE's is returned, for the caller to wire as any other field (its value, or ""
    for none); the LoRAs' writes its edits into the task's request itself (``changed``: what they update)."""
    names = page.model_lists.names(engine, PICKED[spec.name][0])
    # interactive said outright: left to Gradio, the pickers of a form made again (gr.render) and the scale
    # sliders came up disabled
    common = dict(label=spec.name, elem_id=f"codex-field-{task}-{spec.name}", interactive=True,
                  elem_classes=["codex-error"] if error else None)
    if spec.kind == "vae":
        choices = [("the checkpoint's own", "")] + [(name, name) for name in names]
        if value and value not in names:
            choices.append((value, value))
        info = f"⚠ {error}" if error else "a VAE of the models folders' vae, or a file or folder typed in"
        return gr.Dropdown(choices=choices, value=value or "", allow_custom_value=True, info=info,
                           key=f"{engine}-{task}-vae-{rendered}", **common)
    _lora_picker(page, engine, task, spec, value or [], names, error, rendered, changed, common)
    return None


def _lora_picker(page: "Page", engine: str, task: str, spec: FieldSpec, entries: list[dict[str, Any]],
                 names: list[str], error: str | None, rendered: int, changed: list, common: dict) -> None:
    """A multi-select of the engine's LoRAs and, under it, a scale slider per chosen one (made hidden up to the
    most a request may have, shown and labelled as LoRAs are chosen: a pick changes no layout)."""
    labels = [lora_label(entry) for entry in entries]
    slots = max(spec.max_items or 8, len(entries))
    info = f"⚠ {error}" if error else (f"the LoRAs of the models folders that {engine} takes, or a name or "
                                        ".safetensors path typed in; each one's scale below")
    with gr.Column(min_width=240):
        chooser = gr.Dropdown(choices=names + [label for label in labels if label not in names], value=labels,
                              multiselect=True, allow_custom_value=True, max_choices=spec.max_items, info=info,
                              key=f"{engine}-{task}-loras-{rendered}", **common)
        sliders = [gr.Slider(minimum=spec.minimum if spec.minimum is not None else -4,
                             maximum=spec.maximum if spec.maximum is not None else 4, step=0.05,
                             **_slot(entries, index), elem_id=f"codex-field-{task}-loras-scale-{index}",
                             key=f"{engine}-{task}-loras-scale-{index}-{rendered}") for index in range(slots)]

    def on_chips(chips, stored, rev_now):
        if rev_now != rendered:  # a picker of an earlier render
            return [gr.skip()] * (2 + slots)
        before = stored.get(task, {})
        current = before.get("loras") if shows(spec, before.get("loras")) else None
        picked = loras_from_chips(list(chips or []), current or [], names)
        request = with_value(before, "loras", picked or UNSET)
        if request == before:
            return [gr.skip()] * (2 + slots)
        stored[task] = request
        return [task, stored.show(request), *(gr.Slider(**_slot(picked, index)) for index in range(slots))]

    def on_scale(index, scale, stored, rev_now):
        picked = list(stored.get(task, {}).get("loras") or [])
        if rev_now != rendered or index >= len(picked) or not isinstance(picked[index], dict) or scale is None:
            return gr.skip(), gr.skip()
        if picked[index].get("scale") == scale:
            return gr.skip(), gr.skip()
        picked[index] = {**picked[index], "scale": scale}
        stored[task] = request = with_value(stored.get(task, {}), "loras", picked)
        return task, stored.show(request)

    chooser.input(on_chips, [chooser, page.values, page.rev], [*changed, *sliders], **ONE_AT_A_TIME)
    for index, slider in enumerate(sliders):
        slider.input(partial(on_scale, index), [slider, page.values, page.rev], changed, **ONE_AT_A_TIME)


def _slot(entries: list[dict[str, Any]], index: int) -> dict[str, Any]:
    """Slider ``index``: the scale of the ``index``-th chosen LoRA, labelled with it; hidden past the last."""
    if index >= len(entries):
        return {"visible": False, "value": 1.0, "label": "scale", "interactive": True}
    scale = entries[index].get("scale", 1.0)
    return {"visible": True, "value": scale if isinstance(scale, (int, float)) else 1.0,
            "label": f"{lora_label(entries[index])} scale", "interactive": True}
