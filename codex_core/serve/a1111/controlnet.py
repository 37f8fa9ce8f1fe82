"""sd-webui-controlnet's own routes (``scripts/api.py``), under ``/controlnet`` as the extension mounts them:
``version``, ``model_list``, ``module_list``, ``settings`` and ``detect``.

- ``model_list``: the ControlNets of the controlnet models folders, titled ``name [hash]`` (``controlnet_models``);
- ``module_list``: ``none`` and the installed preprocessors, by the extension's names where it has one for the same
  algorithm (``blur_gaussian`` for Codex's ``blur``...); ``module_detail`` gives each one's sliders as the extension
  does (name, value, min, max, step) from the preprocessor's parameters; ``alias_names`` changes nothing (Codex's
  names are the labels);
- ``detect``: runs a preprocessor on base64 images in the service process (the preprocessors that need no weights
  are quick; an annotator whose weights are missing is a 422 naming the file), within the input pixel limit, and
  answers ``{"images": [...], "info": "Success"}``. ``controlnet_processor_res`` is not used: the preprocessor runs
  at the image's own size. webuiapi 0.9.17 sends its images as ``controlnet_images``, which is read too.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ...a1111_controls import API_VERSION, MODULE_ALIASES, SLIDERS, module_name
from ...controls import MAX_CONTROLS
from ...errors import UsageError
from ..bodies import StrictJSONRoute, excerpt
from ..dependencies import SettingsDep
from . import controlnet_models
from .controlnet_units import slider_params

router = APIRouter(prefix="/controlnet", route_class=StrictJSONRoute)


@router.get("/version")
def version() -> dict[str, int]:
    return {"version": API_VERSION}


@router.get("/model_list")
def model_list(update: bool = True) -> dict[str, list[str]]:
    """Every call reads the folders (``update`` is always true here: the scan is quick and cached by hash)."""
    return {"model_list": [model.title for model in controlnet_models.listed()]}


@router.get("/module_list")
def module_list(alias_names: bool = False) -> dict[str, Any]:
    from ...preprocessors import installed

    found = installed()
    names = ["none", *(module_name(name) for name in sorted(found))]
    detail = {"none": {"model_free": True, "sliders": []}}
    for name, preprocessor in sorted(found.items()):
        detail[module_name(name)] = {"model_free": not preprocessor.needs, "sliders": _sliders(preprocessor)}
    return {"module_list": names, "module_detail": detail}


@router.get("/settings")
def settings() -> dict[str, int]:
    return {"control_net_unit_count": MAX_CONTROLS}


def _sliders(preprocessor) -> list[dict[str, Any]]:
    """The extension's slider records (threshold_a, threshold_b) for the parameters the units' thresholds set."""
    properties = preprocessor.parameters.model_json_schema().get("properties", {})
    sliders = []
    for parameter in SLIDERS.get(preprocessor.name, ()):
        if parameter is None:
            continue
        prop = properties[parameter]
        sliders.append({"name": prop.get("description", parameter), "value": prop.get("default"),
                        "min": prop.get("minimum"), "max": prop.get("maximum"),
                        "step": 1 if prop.get("type") == "integer" else 0.01})
    return sliders


@router.post("/detect")
def detect(body: dict[str, Any], settings: SettingsDep):
    from ...preprocessors import installed, run

    module = body.get("controlnet_module", "none")
    if not isinstance(module, str):
        raise UsageError(f"controlnet_module: got {excerpt(module)}; a module name (GET /controlnet/module_list)")
    name = MODULE_ALIASES.get(module, module)
    if name != "none" and name not in installed():
        return JSONResponse({"detail": "Module not available"}, 422)  # the extension's answer
    images = body.get("controlnet_input_images") or body.get("controlnet_images") or []
    field = "controlnet_input_images" if body.get("controlnet_input_images") else "controlnet_images"
    if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
        raise UsageError(f"{field}: got {excerpt(images)}; a list of images (base64 or data URLs)")
    if not images:
        return JSONResponse({"detail": "No image selected"}, 422)
    if len(images) > settings.limits.batch_size:
        raise UsageError(f"{field}: {len(images)} images; this service takes at most {settings.limits.batch_size} "
                         "(--max-batch-size)")
    params = {} if name == "none" else slider_params(name, [(key, body.get(key)) for key in (
        "controlnet_threshold_a", "controlnet_threshold_b")])
    results = []
    for index, raw in enumerate(images):
        from .extras import _decode

        image = _decode(raw, f"{field}.{index}", settings.limits.input_pixels)
        result = image if name == "none" else run(name, image, params, field="controlnet_module",
                                                  params_field="controlnet_threshold")
        out = io.BytesIO()
        result.save(out, format="PNG")
        results.append(base64.b64encode(out.getvalue()).decode())
    return {"info": "Success", "images": results}
