"""The task tabs: one per task of the selected engine, each a form made from the engine's request schema
(a widget per field, showing the value the user set and the service's last error for it), and PNG Info.

The tabs are a ``gr.render`` made again whenever ``rev`` changes (an engine switch, a refused submit, a
request sent to a tab, ...); their handlers write the session's ``Drafts`` in place and send the
request's text to the page's feed. What they share with the rest of the page is the ``Page``
(``app.py``): the service's client, the engines and the session's states.
"""

# no `from __future__ import annotations` here: Gradio finds event data (``evt: gr.SelectData``) by the
# annotation's object, which a postponed (string) annotation is not
import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from .client import ServiceClient
from .controls import control_panel
from .controls import shows as controls_shows
from .drafts import ONE_AT_A_TIME
from .forms import FieldSpec, form_fields, value_of, with_value
from .images import images_field
from .pickers import picker, shows
from .pnginfo import read_parameters

if TYPE_CHECKING:
    from .app import Page

# Tabs in the order people know them from A1111/Forge; a task a plugin adds comes after these.
# The video tasks after them: from text, an image, a video, reference images, first and last frames, a pose video.
TASK_ORDER = ("txt2img", "img2img", "inpaint", "edit", "upscale", "txt2vid", "img2vid", "vid2vid", "ref2vid",
              "flf2vid", "animate")


def ordered_tasks(engines: dict[str, dict[str, Any]]) -> list[str]:
    found = [task for engine in engines.values() for task in engine["tasks"]]
    return [task for task in TASK_ORDER if task in found] + sorted(set(found) - set(TASK_ORDER))


def task_tabs(page: "Page", ui: gr.Blocks) -> None:
    """A tab per task of the selected engine, each with its form from the engine's schema, and PNG Info.

    Rendered again when ``rev`` changes (an engine switch among others): Gradio 6 cannot hide a tab
    by an update, so the tabs are made for the engine rather than shown and hidden.
    """

    # one at a time with the value handlers: Gradio's renders are not thread-safe (two at once fail with
    # "dictionary changed size during iteration"), and a render then sees the values the handler before
    # it wrote
    @gr.render(inputs=[page.engine, page.current, page.values, page.errors, page.rev],
               triggers=[ui.load, page.rev.change], **ONE_AT_A_TIME)
    def tabs(key, task_now, stored, errors_now, rev_value):
        tasks = ordered_tasks({key: page.engines[key]})
        with gr.Tabs(selected=task_now if task_now in tasks else tasks[0], elem_id="codex-tabs"):
            for task in tasks:
                with gr.Tab(task, id=task, elem_id=f"codex-tab-{task}") as tab:
                    _form(page, key, task, stored, errors_now, rev_value)
                tab.select(_on_tab(task), [page.values], [page.current, page.feed], **ONE_AT_A_TIME)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="codex-tab-pnginfo"):
                _png_info(page, key)
def _on_tab(task: str):
    """The handler of a task's tab: the tab the user opened becomes the task Generate runs; a select event
    for a tab being left (Gradio sends them when the tabs are rendered again) changes nothing. (A closure,
    not a partial: Gradio finds ``evt`` only in a plain function's signature.)"""

    def on_select(stored: dict[str, Any], evt: gr.SelectData):
        if not evt.selected:
            return gr.skip(), gr.skip()
        return task, stored.show(stored.get(task, {}))

    return on_select


def _png_info(page: "Page", key: str) -> None:
    info_file = gr.File(label="A PNG or video made by Codex or A1111", type="filepath", elem_id="codex-pnginfo-file")
    info_text = gr.Textbox(label="parameters", lines=4, interactive=False, elem_id="codex-pnginfo-text")
    info_json = gr.JSON(label="request", elem_id="codex-pnginfo-request")
    info_target = gr.State(None)
    send_info = gr.Button("Send to its tab", elem_id="codex-pnginfo-send")

    def on_info_file(path):
        if not path:
            return "", None, None
        found = read_parameters(Path(path), key, set(page.engines))
        return found.text, found.request, found.target

    info_file.change(on_info_file, [info_file], [info_text, info_json, info_target])

    def on_send_info(target, request, stored, rev_value):
        if not target or request is None:
            return [gr.skip()] * 5 + ["Drop a PNG or video with parameters first."]
        engine_key, task = target
        if engine_key != key:  # the engine switch applies them once the new engine's tabs render
            return (rev_value, task, {task: request}, gr.Dropdown(value=engine_key), gr.skip(),
                    f"Sent to {engine_key} {task}.")
        stored[task] = dict(request)
        return rev_value + 1, task, None, gr.skip(), stored.show(request), f"Sent to {task}."

    send_info.click(on_send_info, [info_target, info_json, page.values, page.rev],
                    [page.rev, page.current, page.pending, page.engine, page.feed, page.status], **ONE_AT_A_TIME)


def _form(page: "Page", key: str, task: str, stored, errors_now: dict[str, str], rev_value: int) -> None:
    """The task's form, from the engine's schema, showing the values the user set (``stored``: the session's
    ``Drafts``) and the last errors."""
    request = stored.get(task, {})
    fields = form_fields(page.client.schema(key, task))
    if errors_now.get(""):
        gr.Markdown(f"⚠ {errors_now['']}", elem_classes=["codex-error"])
    masked = any(f.name == "mask_image" for f in fields)
    changed = [page.current, page.feed]  # what every field's handler updates (values: in place)
    # prompts across the page, then the images, then everything else in a grid, then the models folders' pickers,
    # then the ControlNet panel
    picked = ("loras", "vae")
    images = ("image", "images", "video")  # the uploads, images and videos
    rows = [[f for f in fields if f.kind == "long_text"], [f for f in fields if f.kind in images],
            [f for f in fields if f.kind not in ("long_text", *images, *picked, "controls")],
            [f for f in fields if f.kind in picked], [f for f in fields if f.kind == "controls"]]
    for row in rows:
        with gr.Row(equal_height=False):
            for spec in row:
                if spec.name == "init_image" and masked:
                    _inpaint_editor(page, task, changed, errors_now, rev_value)
                    continue
                if spec.kind == "images":  # an edit's reference images: a gallery, wired by itself
                    images_field(page, key, task, spec, request.get(spec.name), errors_now.get(spec.name),
                                 rev_value, changed)
                    continue
                if spec.kind == "controls" and controls_shows(request.get(spec.name)):  # it wires itself
                    control_panel(page, key, task, spec, request.get(spec.name), stored, errors_now, rev_value,
                                  changed)
                    continue
                if spec.kind in picked and shows(spec, request.get(spec.name)):
                    widget = picker(page, key, task, spec, request.get(spec.name), errors_now.get(spec.name),
                                    rev_value, changed)
                    if widget is None:  # it wired itself
                        continue
                else:
                    widget = _widget(page.client, spec, task, request.get(spec.name), errors_now.get(spec.name),
                                     key=f"{key}-{task}-{spec.name}-{rev_value}")
                inputs = [widget, page.values, page.rev]
                if spec.kind in ("image", "video"):
                    on_image = partial(_on_image, page.client, task, spec, rev_value)
                    widget.upload(on_image, inputs, changed, **ONE_AT_A_TIME)
                    widget.clear(on_image, inputs, changed, **ONE_AT_A_TIME)
                else:
                    # numbers and choices: what the user did (.input); a number's .change also fires when it
                    # mounts, with 0. Text boxes: .change, since their .input carries the text before the
                    # last keystroke; when one mounts, .change carries the text it was rendered with.
                    event = widget.change if isinstance(widget, gr.Textbox) else widget.input
                    event(partial(_on_field, task, spec, rev_value), inputs, changed, **ONE_AT_A_TIME)


def _widget(client: ServiceClient, spec: FieldSpec, task: str, value: Any, error: str | None, key: str):
    """The input for one field: its current value if the user set one, else empty with the preset shown."""
    info = f"⚠ {error}" if error else spec.hint()
    common = dict(label=spec.name, info=info, elem_id=f"codex-field-{task}-{spec.name}", key=key,
                  elem_classes=["codex-error"] if error else None)
    if spec.kind in ("int", "float"):
        return gr.Number(value=value, placeholder=spec.placeholder(), **common)
    if spec.kind == "choice":
        choices = list(spec.choices)
        if value is not None and value not in choices:
            choices.append(value)
        return gr.Dropdown(choices=choices, value=value, allow_custom_value=True, **common)
    if spec.kind == "bool":
        return gr.Dropdown(choices=["true", "false"], value=None if value is None else str(value).lower(), **common)
    if spec.kind == "image":  # no info line on an image: its error and a preview-less value go below it
        del common["info"]
        # shown from the local file it was uploaded from: the service's path may be outside what the page may
        # serve (its state dir) or on another machine (--server); a path typed or read from PNG Info has none
        local = client.local_copy(value) if isinstance(value, str) else None
        widget = gr.Image(value=local, type="filepath", sources=["upload", "clipboard"], height=220, **common)
        if error:
            gr.Markdown(f"⚠ {spec.name}: {error}", elem_classes=["codex-error"])
        elif value is not None and local is None:
            gr.Markdown(f"{spec.name}: `{value}` (on the service; no preview here)")
        return widget
    if spec.kind == "video":  # as an image: the local file it was uploaded from plays here, errors go below it
        del common["info"]
        local = client.local_copy(value) if isinstance(value, str) else None
        widget = gr.Video(value=local, sources=["upload"], height=220, format=None, **common)
        if error:
            gr.Markdown(f"⚠ {spec.name}: {error}", elem_classes=["codex-error"])
        elif value is not None and local is None:
            gr.Markdown(f"{spec.name}: `{value}` (on the service; no preview here)")
        return widget
    if spec.kind in ("json", "loras", "controls"):  # loras, controls: a value the picker or panel cannot show
        return gr.Textbox(value=None if value is None else json.dumps(value), lines=2, placeholder="JSON", **common)
    return gr.Textbox(value=value, lines=3 if spec.kind == "long_text" else 1, placeholder=spec.placeholder(),
                      **common)


def _raw(spec: FieldSpec, raw: Any) -> Any:
    if spec.kind == "bool" and isinstance(raw, str) and raw in ("true", "false"):
        return raw == "true"
    return raw


def _on_field(task: str, spec: FieldSpec, rendered: int, raw: Any, stored: dict[str, Any], rev_now: int):
    """A field's value into the task's request. An event that changes nothing changes nothing else either:
    every text box of every tab reports its value when it mounts, and such an event must not make its tab
    the task Generate runs (nor show its request). Nor does an event from a widget of an earlier render (a
    text box mounting after the values changed and the form was made again)."""
    if rev_now != rendered:
        return gr.skip(), gr.skip()
    request = with_value(stored.get(task, {}), spec.name, value_of(spec, _raw(spec, raw)))
    if request == stored.get(task, {}):
        return gr.skip(), gr.skip()
    stored[task] = request
    return task, stored.show(request)


def _on_image(client: ServiceClient, task: str, spec: FieldSpec, rendered: int, path: str | None,
              stored: dict[str, Any], rev_now: int):
    """An image or video uploaded (or cleared) into the task's request, as the service's path for it. A widget of
    an earlier render (cleared as the form is made again) changes nothing."""
    if rev_now != rendered:
        return gr.skip(), gr.skip()
    value = client.upload(path) if path else None
    request = with_value(stored.get(task, {}), spec.name, value_of(spec, value))
    if request == stored.get(task, {}):
        return gr.skip(), gr.skip()
    stored[task] = request
    return task, stored.show(request)


def _inpaint_editor(page: "Page", task: str, changed: list, errors_now: dict[str, str], rev_value: int) -> None:
    """init_image with the mask painted on it: "Use the painted mask" turns the brush strokes into
    mask_image (white = repaint). A button, because Gradio's editor sends no event for a brush stroke;
    a click sends the editor's current canvas."""
    error = errors_now.get("init_image") or errors_now.get("mask_image")
    editor = gr.ImageEditor(type="filepath", label="init_image (paint the area to repaint)",
                            elem_id=f"codex-field-{task}-init_image", key=f"{task}-editor-{rev_value}",
                            sources=["upload", "clipboard"], height=320,
                            elem_classes=["codex-error"] if error else None)
    use_mask = gr.Button("Use the painted mask", elem_id=f"codex-{task}-use-mask", size="sm")
    if error:
        gr.Markdown(f"⚠ {error}", elem_classes=["codex-error"])

    def on_image(edited, stored, rev_now):
        if rev_now != rev_value:  # an editor of an earlier render
            return gr.skip(), gr.skip()
        current = dict(stored.get(task, {}))
        if edited and edited.get("background"):
            current["init_image"] = page.client.upload(edited["background"])
        else:
            current.pop("init_image", None)
        if current == stored.get(task, {}):
            return gr.skip(), gr.skip()
        stored[task] = current
        return task, stored.show(current)

    def on_mask(edited, stored):
        from .masks import mask_from_layers

        current = dict(stored.get(task, {}))
        if edited and edited.get("background"):
            current["init_image"] = page.client.upload(edited["background"])
            mask = mask_from_layers(edited["background"], edited.get("layers") or [],
                                    Path(edited["background"]).parent)
            if mask is not None:
                current["mask_image"] = page.client.upload(mask)
        stored[task] = current
        return task, stored.show(current)

    editor.upload(on_image, [editor, page.values, page.rev], changed, **ONE_AT_A_TIME)
    editor.clear(on_image, [editor, page.values, page.rev], changed, **ONE_AT_A_TIME)
    use_mask.click(on_mask, [editor, page.values], changed, **ONE_AT_A_TIME)
