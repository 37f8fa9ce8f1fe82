"""The ControlNet panel of a task whose request takes ``controls`` (the schema's ``x-codex-input: "controls"``): a
few units, each a control being drafted (enable, control image, preprocessor and its parameters, ControlNet, union
type, scale, start/end, resize) with a Preview of its preprocessed image.

The enabled units, in order, are the request's ``controls``: each edit rewrites that list, so the Request JSON panel
shows it, and only what the user set is sent (the service fills the rest with the field's defaults). A disabled unit
keeps its settings in the session's ``Drafts.units`` without being sent; a request that changed elsewhere (the panel
edited by hand, PNG Info) is shown as one enabled unit per control. The control image goes to the service as every
uploaded input does (``POST /v1/inputs``); Preview asks the service to run the preprocessor on it (``POST
/v1/preprocess``), where the job will run it, with the annotators' weights of its models folders.
"""

from __future__ import annotations

import hashlib
import re
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr

from .client import Refused
from .drafts import ONE_AT_A_TIME
from .forms import UNSET, FieldSpec, with_value

if TYPE_CHECKING:
    from .app import Page

UNITS = 3  # units offered (sd-webui-controlnet's default); a request with more controls shows them all
SPEC_KEYS = ("model", "image", "type", "scale", "start", "end", "resize", "preprocess", "preprocess_params")
# the item's numbers shown as sliders, with the steps they move by
SLIDERS = {"scale": 0.05, "start": 0.01, "end": 0.01}


def shows(value: Any) -> bool:
    """Whether the panel can show ``value`` (else the field is a JSON box): none, or a list of control objects with
    only the keys a control has."""
    if value is None:
        return True
    return isinstance(value, list) and all(isinstance(item, dict) and set(item) <= set(SPEC_KEYS) for item in value)


def controls_of(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's ``controls``: the enabled units in order, each with the keys the user set."""
    return [{key: value for key, value in unit.items() if key != "enabled"} for unit in units if unit.get("enabled")]


def units_for(value: list[dict[str, Any]] | None, kept: list[dict[str, Any]] | None,
              slots: int) -> list[dict[str, Any]]:
    """The units shown for a request's ``controls``: the session's drafts while they still give those controls
    (so a disabled unit keeps its settings), else one enabled unit per control; padded with empty disabled ones."""
    current = value or []
    units = kept if kept is not None and controls_of(kept) == current else [
        {"enabled": True, **control} for control in current]
    return units + [{"enabled": False} for _ in range(slots - len(units))]


def slot_count(spec: FieldSpec, value: list | None) -> int:
    most = spec.max_items or UNITS
    return max(min(UNITS, most), len(value or []))


def unit_problems(problems: list[str], name: str = "controls") -> dict[str, str]:
    """The service's ``controls...`` lines for the panel: ``{"controls.N": "<field>: ...; ..."}`` per control, and
    ``"controls"``: what is said of the list itself, or where to look when every line is a control's."""
    found: dict[str, list[str]] = {}
    general = []
    for line in problems:
        matched = re.match(rf"{re.escape(name)}\.(\d+)\.(.+)", line)
        if matched:
            found.setdefault(f"{name}.{matched[1]}", []).append(matched[2])
        elif line.startswith(f"{name}: "):
            general.append(line.removeprefix(f"{name}: "))
    shown = {key: "; ".join(lines) for key, lines in found.items()}
    if general or shown:
        count = len(shown)
        shown[name] = "; ".join(general) or (f"{count} control{'s' if count > 1 else ''} refused: "
                                             f"{', '.join(f'{name}.' + key.rsplit('.', 1)[1] for key in found)}")
    return shown


def enabled_position(units: list[dict[str, Any]], slot: int) -> int | None:
    """Which control of the request unit ``slot`` is (the service's ``controls.N``), or None when it is disabled."""
    if not units[slot].get("enabled"):
        return None
    return sum(1 for unit in units[:slot] if unit.get("enabled"))


def item_properties(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The properties of the control objects (the field's ``items``, its ``$ref`` followed)."""
    item = schema.get("properties", {}).get(name, {}).get("items") or {}
    ref = item.get("$ref", "")
    if ref.startswith("#/$defs/"):
        item = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
    return item.get("properties", {})


def param_value(prop: dict[str, Any], value: Any) -> Any:
    """A parameter widget's value as the preprocessor takes it: a whole number for an integer parameter (a slider
    hands 50.0; the parameters are strict)."""
    if prop.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def unit_label(units: list[dict[str, Any]], slot: int) -> str:
    """The selector's label of a unit: its number, and whether it is sent."""
    return f"Unit {slot}" + (" ✓" if units[slot].get("enabled") else "")


def first_shown(units: list[dict[str, Any]], problems: dict[str, str], name: str) -> int:
    """The unit the panel opens on: the first the service refused, else the first enabled one, else the first."""
    for slot in range(len(units)):
        position = enabled_position(units, slot)
        if position is not None and problems.get(f"{name}.{position}"):
            return slot
    return next((slot for slot, unit in enumerate(units) if unit.get("enabled")), 0)


def control_panel(page: "Page", engine: str, task: str, spec: FieldSpec, value: Any, stored, errors_now: dict,
                  rendered: int, changed: list) -> None:
    """The panel: an accordion, open when the request has controls or the service refused one of them, with a
    selector of the units and one editor showing the unit selected (one set of widgets per task, not one per unit:
    every task's form is made again at each render)."""
    slots = slot_count(spec, value)
    units = stored.units[task] = units_for(value, stored.units.get(task), slots)
    error = errors_now.get(spec.name)
    properties = item_properties(page.client.schema(engine, task), spec.name)
    try:
        preprocessors = page.client.preprocessors()
    except Refused:  # a service without the route (an older one behind --server): no preprocessing offered
        preprocessors = []
    models = page.model_lists.names(engine, "controlnet")
    ids = f"codex-control-{task}"
    keyed = partial(_key, task, rendered)
    shown_slot = first_shown(units, errors_now, spec.name)
    unit = units[shown_slot]
    with gr.Accordion("ControlNet", open=bool(value) or bool(error), elem_id=f"codex-field-{task}-{spec.name}"):
        gr.Markdown(f"Each enabled unit (✓) is a control of the request (`{spec.name}`), in order; its ControlNet "
                    "from the models folders' controlnet, or a diffusers folder typed in.")
        if error:
            gr.Markdown(f"⚠ {spec.name}: {error}", elem_classes=["codex-error"], elem_id=f"{ids}-errors")
        selector = gr.Radio([(unit_label(units, slot), slot) for slot in range(slots)], value=shown_slot,
                            show_label=False, interactive=True, elem_id=f"{ids}-unit", key=keyed("unit"))
        problem = gr.Markdown(_problem_text(units, shown_slot, errors_now, spec.name), elem_classes=["codex-error"],
                              elem_id=f"{ids}-error", key=keyed("error"))
        with gr.Row(equal_height=False):
            enable = gr.Checkbox(bool(unit.get("enabled")), label="Enable", interactive=True, elem_id=f"{ids}-enable",
                                 key=keyed("enable"), info="sent with the request (an upload enables it)")
            resize = gr.Checkbox(bool(unit.get("resize")), label="Resize to the output size", interactive=True,
                                 elem_id=f"{ids}-resize", key=keyed("resize"),
                                 info=properties.get("resize", {}).get("description"))
        with gr.Row(equal_height=False):
            image = gr.Image(value=_local(page, unit), type="filepath", sources=["upload", "clipboard"], height=200,
                             label="control image", interactive=True, elem_id=f"{ids}-image", key=keyed("image"))
            with gr.Column():
                preview = gr.Image(value=None, type="filepath", interactive=False, height=200, format="png",
                                   label="preview (the preprocessed image)", elem_id=f"{ids}-preview",
                                   key=keyed("preview"))
                run_preview = gr.Button("Preview", size="sm", elem_id=f"{ids}-preview-button", key=keyed("button"))
                note = gr.Markdown(_note(page, unit), elem_id=f"{ids}-note", key=keyed("note"))
        with gr.Row(equal_height=False):
            chosen = unit.get("preprocess") or ""
            preprocess = gr.Dropdown(_preprocess_choices(preprocessors, chosen), value=chosen, label="preprocessor",
                                     interactive=True, elem_id=f"{ids}-preprocess", key=keyed("preprocess"),
                                     info="run on the image first; none: the image is the control image")
            model = gr.Dropdown(_model_choices(models, unit), value=unit.get("model"), label="model",
                                allow_custom_value=True, interactive=True, elem_id=f"{ids}-model",
                                key=keyed("model"), info="the ControlNet")
            union_type = gr.Textbox(unit.get("type") or "", label="type", interactive=True, elem_id=f"{ids}-type",
                                    key=keyed("type"), placeholder="union models: canny, depth, pose, ...")
        groups, params = [], []  # the parameters of each preprocessor, shown while it is the one chosen
        for row in preprocessors:
            if not row["parameters"]:
                continue
            with gr.Row(visible=row["name"] == chosen, elem_id=f"{ids}-{row['name']}-params",
                        key=keyed(f"{row['name']}-params")) as group:
                for param, prop in row["parameters"].items():
                    widget = _param_widget(prop, _param_of(unit, row["name"], param, prop), label=param,
                                           interactive=True, elem_id=f"{ids}-{row['name']}-{param}",
                                           key=keyed(f"{row['name']}-{param}"))
                    params.append((row["name"], param, prop, widget))
            groups.append((row["name"], group))
        with gr.Row(equal_height=False):
            sliders = {}
            for field, step in SLIDERS.items():
                prop = properties.get(field, {})
                sliders[field] = gr.Slider(prop.get("minimum", 0.0), prop.get("maximum", 1.0), step=step,
                                           value=unit.get(field, prop.get("default", 0.0)), label=field,
                                           interactive=True, elem_id=f"{ids}-{field}", key=keyed(field),
                                           info=prop.get("description"))

    name = spec.name
    edit = partial(_edit, task, rendered)
    inputs = [selector, page.values, page.rev]

    def labels(stored_now):
        units_now = stored_now.units.get(task) or units
        return gr.Radio(choices=[(unit_label(units_now, slot), slot) for slot in range(len(units_now))])

    def on_select(slot, stored_now, rev_now):
        """Another unit selected: the editor shows it (its preview is made again by Preview)."""
        editor = [problem, enable, resize, image, preview, note, preprocess, model, union_type,
                  *(group for _, group in groups), *(widget for *_, widget in params), *sliders.values()]
        units_now = stored_now.units.get(task) or []
        if rev_now != rendered or slot is None or slot >= len(units_now):
            return [gr.skip()] * len(editor)
        shown = units_now[slot]
        chosen_now = shown.get("preprocess") or ""
        return [_problem_text(units_now, slot, errors_now, name), bool(shown.get("enabled")),
                bool(shown.get("resize")), _local(page, shown), None, _note(page, shown),
                gr.Dropdown(choices=_preprocess_choices(preprocessors, chosen_now), value=chosen_now),
                gr.Dropdown(choices=_model_choices(models, shown), value=shown.get("model")),
                shown.get("type") or "", *(gr.Row(visible=owner == chosen_now) for owner, _ in groups),
                *(_param_of(shown, owner, param, prop) for owner, param, prop, _ in params),
                *(shown.get(field, properties.get(field, {}).get("default", 0.0)) for field in sliders)]

    def on_image(path, slot, stored_now, rev_now):
        if rev_now != rendered:
            return [gr.skip()] * 5
        try:
            served = page.client.upload(path) if path else None
        except Refused as exc:  # not an image the service takes: said under the unit
            return gr.skip(), gr.skip(), gr.skip(), f"⚠ image: {exc.message.removeprefix('body: ')}", gr.skip()

        def change(shown):
            if served:
                shown.update(image=served, enabled=True)  # an uploaded control image is meant to be used
            else:
                shown.pop("image", None)

        return (*edit(change, slot, stored_now, rev_now), gr.Checkbox(value=True) if served else gr.skip(), "",
                labels(stored_now))

    def on_enable(given, slot, stored_now, rev_now):
        def change(shown):
            shown["enabled"] = bool(given)

        return (*edit(change, slot, stored_now, rev_now), labels(stored_now))

    def on_preprocess(chosen_now, slot, stored_now, rev_now):
        if rev_now != rendered:
            return [gr.skip()] * (2 + len(groups) + len(params))

        def change(shown):
            shown.pop("preprocess_params", None)  # another preprocessor's parameters do not carry over
            if chosen_now:
                shown["preprocess"] = chosen_now
            else:
                shown.pop("preprocess", None)

        visible = [gr.Row(visible=owner == chosen_now) for owner, _ in groups]
        defaults = [prop.get("default") for _, _, prop, _ in params]  # the new choice starts from its defaults
        return (*edit(change, slot, stored_now, rev_now), *visible, *defaults)

    def on_param(owner, param, prop, given, slot, stored_now, rev_now):
        def change(shown):
            if shown.get("preprocess") == owner and given is not None:
                shown["preprocess_params"] = {**(shown.get("preprocess_params") or {}), param: param_value(prop, given)}

        return edit(change, slot, stored_now, rev_now)

    def setter(field: str, cleaned: Callable[[Any], Any]):
        def on_value(given, slot, stored_now, rev_now):
            def change(shown):
                kept = cleaned(given)
                if kept is UNSET:
                    shown.pop(field, None)
                else:
                    shown[field] = kept

            return edit(change, slot, stored_now, rev_now)

        return on_value

    def text(given):
        return given.strip() if isinstance(given, str) and given.strip() else UNSET

    selector.input(on_select, inputs, [problem, enable, resize, image, preview, note, preprocess, model, union_type,
                                       *(group for _, group in groups), *(widget for *_, widget in params),
                                       *sliders.values()], **ONE_AT_A_TIME)
    enable.input(on_enable, [enable, *inputs], [*changed, selector], **ONE_AT_A_TIME)
    resize.input(setter("resize", lambda given: True if given else UNSET), [resize, *inputs], changed, **ONE_AT_A_TIME)
    image.upload(on_image, [image, *inputs], [*changed, enable, note, selector], **ONE_AT_A_TIME)
    image.clear(on_image, [image, *inputs], [*changed, enable, note, selector], **ONE_AT_A_TIME)
    preprocess.input(on_preprocess, [preprocess, *inputs],
                     [*changed, *(group for _, group in groups), *(widget for *_, widget in params)], **ONE_AT_A_TIME)
    for owner, param, prop, widget in params:
        widget.input(partial(on_param, owner, param, prop), [widget, *inputs], changed, **ONE_AT_A_TIME)
    model.input(setter("model", text), [model, *inputs], changed, **ONE_AT_A_TIME)
    # a text box: .change (its .input carries the text before the last keystroke); when it mounts, or when another
    # unit is selected, the text it shows, which changes nothing
    union_type.change(setter("type", text), [union_type, *inputs], changed, **ONE_AT_A_TIME)
    for field, slider in sliders.items():
        slider.input(setter(field, lambda given: UNSET if given is None else given), [slider, *inputs], changed,
                     **ONE_AT_A_TIME)
    run_preview.click(partial(_preview, page, task, name), [selector, page.values], [preview, note])


def _problem_text(units: list[dict[str, Any]], slot: int, errors_now: dict[str, str], name: str) -> str:
    """What the service said about the unit's control at the last refused Generate ("" for none)."""
    position = enabled_position(units, slot)
    found = errors_now.get(f"{name}.{position}") if position is not None else None
    return f"⚠ {name}.{position}: {found}" if found else ""


def _local(page: "Page", unit: dict[str, Any]) -> str | None:
    """The local file the unit's image was uploaded from (shown in the editor), if this UI sent it."""
    value = unit.get("image")
    return page.client.local_copy(value) if isinstance(value, str) else None


def _note(page: "Page", unit: dict[str, Any]) -> str:
    value = unit.get("image")
    return f"`{value}` (on the service; no preview here)" if value and not _local(page, unit) else ""


def _preprocess_choices(preprocessors: list[dict[str, Any]], chosen: str) -> list[tuple[str, str]]:
    offered = [("none", "")] + [(row["name"], row["name"]) for row in preprocessors]
    return offered + ([(chosen, chosen)] if chosen and chosen not in {row["name"] for row in preprocessors} else [])


def _model_choices(models: list[str], unit: dict[str, Any]) -> list[str]:
    value = unit.get("model")
    return models + ([value] if isinstance(value, str) and value and value not in models else [])


def _param_of(unit: dict[str, Any], owner: str, param: str, prop: dict[str, Any]) -> Any:
    """The value a preprocessor parameter's widget shows for the unit: the one set, else the default."""
    given = (unit.get("preprocess_params") or {}).get(param) if unit.get("preprocess") == owner else None
    return prop.get("default") if given is None else given


def _key(task: str, rendered: int, part: str) -> str:
    return f"{task}-control-{part}-{rendered}"


def _param_widget(prop: dict[str, Any], given: Any, **common):
    """A preprocessor parameter's input, from its JSON Schema: a slider over its range, a checkbox, or a number."""
    value = given
    info = prop.get("description")
    if prop.get("type") == "boolean":
        return gr.Checkbox(bool(value), info=info, **common)
    if prop.get("type") in ("integer", "number") and "minimum" in prop and "maximum" in prop:
        step = 1 if prop["type"] == "integer" else (prop["maximum"] - prop["minimum"]) / 100
        return gr.Slider(prop["minimum"], prop["maximum"], step=step, value=value, info=info, **common)
    return gr.Number(value=value, info=info, **common)


def _edit(task: str, rendered: int, change: Callable[[dict[str, Any]], None], slot: int | None, stored, rev_now: int):
    """``change`` applied to the unit, and the request's controls rewritten from the units. A widget of an earlier
    render changes nothing; an edit that leaves the request as it was (a disabled unit's) changes nothing else."""
    if rev_now != rendered:
        return gr.skip(), gr.skip()
    units = stored.units.get(task)
    if units is None or slot is None or slot >= len(units):
        return gr.skip(), gr.skip()
    change(units[slot])
    before = stored.get(task, {})
    request = with_value(before, "controls", controls_of(units) or UNSET)
    if request == before:
        return gr.skip(), gr.skip()
    stored[task] = request
    return task, stored.show(request)


def _preview(page: "Page", task: str, name: str, slot: int | None, stored):
    """The unit's image through its preprocessor, run by the service (as the job will run it), shown beside it."""
    units = stored.units.get(task) or []
    unit = units[slot] if slot is not None and slot < len(units) else {}
    image = unit.get("image")
    if not image:
        return None, f"⚠ Unit {slot}: upload a control image first"
    chosen = unit.get("preprocess")
    if not chosen:
        local = page.client.local_copy(image)
        return local, "no preprocessor: the image is the control image as it is"
    try:
        png = page.client.preprocess(chosen, image, unit.get("preprocess_params") or {})
    except Refused as exc:
        return None, f"⚠ {exc.message}"  # named as in a control: preprocess, preprocess_params.<name>, image
    folder = page.workdir / "previews"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(png).hexdigest()[:32]}.png"
    path.write_bytes(png)
    return str(path), f"{chosen}: {png_size(png)}, as the run will use it"


def png_size(png: bytes) -> str:
    """A PNG's size from its header, as WIDTHxHEIGHT."""
    return f"{int.from_bytes(png[16:20], 'big')}x{int.from_bytes(png[20:24], 'big')}"
