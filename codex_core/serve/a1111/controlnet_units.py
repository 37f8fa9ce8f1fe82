"""``alwayson_scripts.controlnet.args``: sd-webui-controlnet's units as Codex's ``controls``.

The extension's API (``internal_controlnet/external_code.py``, ``args.py``) takes a list of units; each enabled one
becomes a control:

- ``model`` (with or without its ``[hash]``): a ControlNet of the controlnet models folders (``controlnet_models``);
- ``module``: ``none`` (the image is the control image), ``canny`` (``threshold_a``/``threshold_b`` its low and high
  thresholds), ``blur_gaussian`` (``threshold_a`` its sigma), or a Codex preprocessor by its own or the extension's
  name (``a1111_controls.MODULE_ALIASES``); a threshold of -1 or outside the slider's range is its default, as the
  extension's ``bound_check_params`` makes it;
- ``weight`` -> ``scale``, ``guidance_start``/``guidance_end`` -> ``start``/``end``;
- ``image`` (``input_image``; a dict's ``image``): base64 or a data URL, written to the job's inputs as any upload;
  none given on img2img: the first init image, as the extension does;
- ``resize_mode``: the control image is read at the output size; only "Just Resize" (a stretch) is what Codex does
  when the sizes differ, so the others ("Crop and Resize", "Resize and Fill") are listed in
  ``info.codex_substituted`` then (the same size: every mode leaves the image as it is);
- ``control_mode``: Codex runs every control as "Balanced". The extension's other modes have no diffusers
  equivalent: "My prompt is more important" scales the ControlNet's 13 outputs by 0.825^(12-i) (soft injection),
  "ControlNet is more important" also applies them to the conditional half of the batch only; diffusers'
  ``guess_mode`` uses other scales (10^(-1..0)). Such a unit runs Balanced and ``codex_substituted`` says so;
- ``processor_res``: Codex runs the preprocessor on the control image at the output size (what ``pixel_perfect``
  does); another resolution is listed in ``codex_substituted``.

What the extension has and Codex does not (``low_vram``, ``hr_option``, masks, ``advanced_weighting``, ...) is
listed in ``info.codex_ignored`` when set to anything but the extension's default, as the layer lists other fields.
"""

from __future__ import annotations

import io
from typing import Any

from ...a1111_controls import CONTROL_MODES, MODULE_ALIASES, RESIZE_MODES, SLIDERS
from ...errors import UsageError
from ..bodies import excerpt
from . import controlnet_models

SCRIPT = "controlnet"  # A1111 matches script names case-insensitively (webuiapi sends "ControlNet")
# GET /sdapi/v1/scripts, as A1111 lists the extension's two scripts. "controlnet m2m" (its movie-to-movie script)
# is not run, but webuiapi detects the extension by it, and only then sends "args": [] on a call without units:
# its alwayson_scripts default is one dict shared by every call, so without that a call would resend the units
# of the call before it.
LISTED = (SCRIPT, "controlnet m2m")
# the extension's legacy field names (ControlNetUnit.legacy_field_alias)
LEGACY = {"input_image": "image", "guidance": "guidance_end", "lowvram": "low_vram"}
RESIZE_ALIASES = {"Inner Fit (Scale to Fit)": "Crop and Resize", "Outer Fit (Shrink to Fit)": "Resize and Fill",
                  "Scale to Fit (Inner Fit)": "Crop and Resize", "Envelope (Outer Fit)": "Resize and Fill"}
READ = {"enabled", "module", "model", "weight", "image", "resize_mode", "processor_res", "threshold_a", "threshold_b",
        "guidance_start", "guidance_end", "pixel_perfect", "control_mode", "save_detected_map", "mask"}
# fields the extension has and Codex does not, at the values that change nothing (webuiapi's and the extension's)
DEFAULTS = {"low_vram": (False, None), "hr_option": ("Both", None), "advanced_weighting": (None, []),
            "inpaint_crop_input_image": (True, None), "union_control_type": ("Unknown", None),
            "pulid_mode": ("Fidelity", None), "effective_region_mask": (None, ""), "ipadapter_input": (None, []),
            "is_ui": (False, None), "input_mode": ("simple", None), "batch_images": (None, "", []),
            "output_dir": ("", None), "loopback": (False, None), "guessmode": (None, False, 0),
            "batch_modifiers": (None, []), "batch_image_files": (None, []), "batch_keyframe_idx": (None, ""),
            "animatediff_batch": (False, None), "batch_mask_dir": (None, ""), "mask_image": (None, "")}


def into_request(body: dict[str, Any], task: str, engine, request: dict[str, Any], ignored: list[str],
                 substituted: list[str]) -> list[bool]:
    """The call's enabled ControlNet units as ``request["controls"]``; the other scripts listed in ``ignored``.
    Returns, per control, whether its detected map is sent back with the images (``save_detected_map``)."""
    from .translate import NEUTRAL

    scripts = body.get("alwayson_scripts")
    if scripts in NEUTRAL:  # what clients send for "no scripts" (null, {}, [] ...)
        return []
    if not isinstance(scripts, dict):
        raise UsageError(f"alwayson_scripts: got {excerpt(scripts)}; a mapping of script names to {{\"args\": [...]}}")
    units = []  # (where, unit) of each enabled unit
    for name, script in scripts.items():
        args = script.get("args") if isinstance(script, dict) else script
        if name.lower() != SCRIPT:
            if args not in (None, [], {}):
                ignored.append(f"alwayson_scripts.{name} (Codex runs no A1111 scripts)")
            continue
        if args is None:
            continue
        if not isinstance(args, list):
            raise UsageError(f"alwayson_scripts.{name}.args: got {excerpt(args)}; a list of ControlNet units")
        for index, unit in enumerate(args):
            where = f"alwayson_scripts.{name}.args.{index}"
            if not isinstance(unit, dict):
                raise UsageError(f"{where}: got {excerpt(unit)}; a ControlNet unit (a mapping)")
            unit = {LEGACY.get(key, key): value for key, value in unit.items()}
            if _flag(unit, "enabled", where, True):
                units.append((where, unit))
    if units and "controls" not in engine.params_model(task).model_fields:  # not read: they could not run here
        ignored.append(f"alwayson_scripts.controlnet ({len(units)} unit{'s' if len(units) > 1 else ''}: engine "
                       f"{engine.key} {task} takes no ControlNets)")
        return []
    if units:
        request["controls"] = [_control(unit, where, body, task, request, ignored, substituted) for where, unit in units]
    return [_flag(unit, "save_detected_map", where, True) for where, unit in units]


def check_hires(engine, request: dict[str, Any], follow_up: list[dict[str, Any]] | None,
                substituted: list[str]) -> None:
    """The hires fix's second pass (the engine's upscale task) takes the controls where its params have them
    (``hires.follow_up`` copies them); where they do not, it runs without them and ``substituted`` says so (the
    extension's ``hr_option`` "Both" steers both passes)."""
    if not follow_up or not request.get("controls"):
        return
    step = follow_up[0]
    if "controls" not in engine.params_model(step["task"]).model_fields:
        substituted.append(f"alwayson_scripts.controlnet: the hires pass runs without the ControlNet units (engine "
                           f"{engine.key}'s {step['task']} task takes no controls)")


def _control(unit: dict[str, Any], where: str, body: dict[str, Any], task: str, request: dict[str, Any],
             ignored: list[str], substituted: list[str]) -> dict[str, Any]:
    model = unit.get("model")
    if not isinstance(model, str) or model.strip() in ("", "None"):
        raise UsageError(f"{where}.model: got {excerpt(model)}; the unit is enabled but names no ControlNet",
                         hint="GET /controlnet/model_list lists them")
    control: dict[str, Any] = {"model": str(controlnet_models.resolve(model, f"{where}.model", substituted).path),
                               "image": _image(unit, where, body, task, ignored), "resize": True}
    for source, target in (("weight", "scale"), ("guidance_start", "start"), ("guidance_end", "end")):
        value = unit.get(source)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{where}.{source}: got {excerpt(value)}; a number")
            control[target] = float(value)
    _module(unit, where, control)
    size = _image_size(control["image"], f"{where}.image")
    output = request.get("width"), request.get("height")
    resize_mode = unit.get("resize_mode", RESIZE_MODES[1])
    resize_mode = 0 if resize_mode == 3 else _choice(  # 3: the extension's 'Just Resize (Latent upscale)'
        resize_mode, RESIZE_MODES, RESIZE_ALIASES, f"{where}.resize_mode")
    if all(isinstance(side, int) for side in output) and size != output and resize_mode != 0:
        substituted.append(f"{where}.resize_mode={RESIZE_MODES[resize_mode]!r} ran as 'Just Resize': the "
                           f"{size[0]}x{size[1]} control image was stretched to {output[0]}x{output[1]}")
    mode = _choice(unit.get("control_mode", 0), CONTROL_MODES, {}, f"{where}.control_mode")
    if mode:
        substituted.append(f"{where}.control_mode={CONTROL_MODES[mode]!r} ran as 'Balanced' (diffusers has no "
                           "equivalent of the extension's soft injection, 0.825^(12-i) per layer"
                           + (", applied to the conditional pass only)" if mode == 2 else ")"))
    resolution = unit.get("processor_res", -1)
    short = min(output) if all(isinstance(side, int) for side in output) else None
    if "preprocess" in control and not _flag(unit, "pixel_perfect", where, False) and short is not None \
            and resolution not in (-1, None, short):
        substituted.append(f"{where}.processor_res={excerpt(resolution)}: {control['preprocess']} ran on the control "
                           f"image at the output size ({short} on the short side), as pixel_perfect does")
    for key, value in unit.items():
        if key not in READ and value not in DEFAULTS.get(key, (None,)):
            ignored.append(f"{where}.{key}={excerpt(value)}")
    return control


def _flag(unit: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = unit.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise UsageError(f"{where}.{key}: got {excerpt(value)}; true or false")
    return value


def _choice(value: Any, names: tuple[str, ...], aliases: dict[str, str], field: str) -> int:
    """The index of an enum the extension takes by name or by number."""
    if isinstance(value, str) and aliases.get(value, value) in names:
        return names.index(aliases.get(value, value))
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    raise UsageError(f"{field}: got {excerpt(value)}; one of {', '.join(repr(n) for n in names)} (or 0 to "
                     f"{len(names) - 1})")


def _module(unit: dict[str, Any], where: str, control: dict[str, Any]) -> None:
    """``module`` and its thresholds as ``preprocess`` and ``preprocess_params`` (nothing for ``none``)."""
    from ...preprocessors import installed

    module = unit.get("module")
    if module is None or module == "none":
        return
    if not isinstance(module, str):
        raise UsageError(f"{where}.module: got {excerpt(module)}; a preprocessor's name (GET /controlnet/module_list)")
    name = MODULE_ALIASES.get(module, module)
    found = installed()
    if name not in found:
        raise UsageError(f"{where}.module: {excerpt(module)} is not a preprocessor here; the modules: none, "
                         f"{', '.join(sorted(found))}", hint="GET /controlnet/module_list lists them")
    control["preprocess"] = name
    params = slider_params(name, [(f"{where}.{slider}", unit.get(slider)) for slider in ("threshold_a", "threshold_b")])
    if params:
        control["preprocess_params"] = params


def slider_params(name: str, thresholds: list[tuple[str, Any]]) -> dict[str, Any]:
    """The extension's threshold_a and threshold_b (``(field, value)`` each) as the preprocessor's parameters: -1 (or
    any value outside the slider's range) leaves the default, as the extension's bound check does; a number is
    needed, and a whole one for a whole-number parameter."""
    from ...preprocessors import installed

    schema = installed()[name].parameters.model_json_schema().get("properties", {})
    params: dict[str, Any] = {}
    for (field, value), parameter in zip(thresholds, SLIDERS.get(name, (None, None))):
        if parameter is None or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise UsageError(f"{field}: got {excerpt(value)}; a number")
        bounds = schema.get(parameter, {})
        if not bounds.get("minimum", float("-inf")) <= value <= bounds.get("maximum", float("inf")):
            continue
        if bounds.get("type") == "integer":
            if value != int(value):
                raise UsageError(f"{field}: got {value}; {name}'s {parameter} is a whole number")
            value = int(value)
        params[parameter] = value
    return params


def _image(unit: dict[str, Any], where: str, body: dict[str, Any], task: str, ignored: list[str]) -> str:
    """The unit's image as the base64 or data URL it was sent as (the service's input handling writes it)."""
    image = unit.get("image")
    if isinstance(image, list) and len(image) == 2 and not isinstance(image[0], dict):
        image = {"image": image[0], "mask": image[1]}
    if isinstance(image, dict):
        if image.get("mask") not in (None, ""):
            ignored.append(f"{where}.image.mask (Codex's controls take no mask)")
        image = image.get("image")
    if unit.get("mask") not in (None, ""):
        ignored.append(f"{where}.mask (Codex's controls take no mask)")
    if image in (None, "") and task != "txt2img":
        init = body.get("init_images")
        image = init[0] if isinstance(init, list) and init else None
    if not isinstance(image, str) or not image:
        raise UsageError(f"{where}.image: got {excerpt(image)}; the control image as base64 or a data URL"
                         + (" (img2img uses its init image when a unit has none)" if task == "txt2img" else ""))
    return image


def _image_size(value: str, field: str) -> tuple[int, int]:
    from PIL import Image

    from ..inputs import _inline

    raw = _inline(value)
    if not raw:
        raise UsageError(f"{field}: not a base64 image or data URL")
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            return opened.size
    except Exception as exc:  # noqa: BLE001  (whatever Pillow makes of the bytes: the field is not an image)
        raise UsageError(f"{field}: not a readable image ({type(exc).__name__})") from None


def detected_maps(info: dict[str, Any], send: list[bool]) -> list[str]:
    """The control images a run used, as base64 PNGs, for the units that keep ``save_detected_map``: a preprocessed
    one as it was saved beside the output, else the image as sent (the extension appends them to ``images``)."""
    import base64
    from pathlib import Path

    side = info.get("side_images") or {}
    controls = (info.get("request") or {}).get("controls") or []
    maps = []
    for index, (control, wanted) in enumerate(zip(controls, send)):
        if not wanted:
            continue
        record = side.get(f"control-{index}-{control.get('preprocess')}".lower()) if control.get("preprocess") else None
        path = Path(record["path"] if record else control.get("image", ""))
        try:
            maps.append(base64.b64encode(path.read_bytes()).decode())
        except OSError:  # deleted since the run: the images that are still there
            continue
    return maps
