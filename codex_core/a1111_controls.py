"""sd-webui-controlnet's words for Codex's controls: its module names, its threshold sliders, its model titles
(``name [hash]``) and its ``ControlNet N: "..."`` infotext lines.

A1111 users meet ControlNets through that extension, so its vocabulary is what their clients send (``/sdapi/v1``'s
``alwayson_scripts.controlnet.args``) and what their tools read back from a PNG's parameters. Both sides use this
one table: the A1111 layer (``serve/a1111/controlnet*.py``) to read units, the PNG exporter to write the lines.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

API_VERSION = 2  # what the extension's GET /controlnet/version answers (external_code.get_api_version)
# sd-webui-controlnet's module name -> Codex's preprocessor, where they differ (same algorithm, other name)
MODULE_ALIASES = {"blur_gaussian": "blur", "invert (from white bg & black line)": "invert", "depth_midas": "depth",
                  "depth_anything": "depth", "depth_anything_v2": "depth", "openpose_full": "openpose",
                  "lineart_realistic": "lineart", "softedge_hed": "hed"}
# Codex's preprocessor -> the module name the extension lists and writes for it
MODULE_NAMES = {"blur": "blur_gaussian", "depth": "depth_midas", "openpose": "openpose_full",
                "lineart": "lineart_realistic", "hed": "softedge_hed"}
# the extension's threshold_a / threshold_b sliders as a Codex preprocessor's parameters (None: no such slider)
SLIDERS: dict[str, tuple[str | None, str | None]] = {"canny": ("low_threshold", "high_threshold"),
                                                      "blur": ("radius", None)}
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")  # ResizeMode, in its int order
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")  # ControlMode, same


def module_name(preprocess: str | None) -> str:
    """The extension's module name for a Codex preprocessor (``none`` without one)."""
    return "none" if preprocess is None else MODULE_NAMES.get(preprocess, preprocess)


def legacy_hash(path: Path) -> str:
    """The hash sd-webui-controlnet shows in a model's title: A1111's old ``sd_models.model_hash``, the first 8 hex
    digits of the sha256 of the 64 KiB at offset 1 MiB (of nothing, for a smaller file). A diffusers folder: of its
    weights file."""
    path = Path(path)
    if path.is_dir():
        weights = sorted(path.glob("*.safetensors"))
        if len(weights) != 1:
            return "NOFILE" if not weights else hashlib.sha256(b"".join(
                legacy_hash(w).encode() for w in weights)).hexdigest()[:8]
        path = weights[0]
    with open(path, "rb") as handle:
        handle.seek(0x100000)
        return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]


def model_title(path: Path) -> str:
    """``name [hash]`` as the extension lists a model: the file's stem (a diffusers folder: its name)."""
    path = Path(path)
    name = path.name if path.is_dir() else path.stem
    return f"{name} [{legacy_hash(path)}]"


def _number(value: Any) -> str:
    """A float slider's value as the extension writes it (its unit model holds floats: 1 -> "1.0")."""
    return str(float(value))


def infotext_pairs(info: dict[str, Any], size: tuple[int, int]) -> list[tuple[str, str]]:
    """``("ControlNet N", "Module: ..., Model: ..., ...")`` for each control of a run, in the extension's field order
    (``ControlNetUnit.infotext_fields``). Codex reads each control image at the output size (``Resize Mode: Just
    Resize``), runs its preprocessor there (``Processor Res``: the short side) and applies every control as the
    extension's ``Balanced`` mode does; a threshold slider the preprocessor does not have is -1 (unused)."""
    controls = (info.get("notes") or {}).get("controls") or []
    files = (info.get("model") or {}).get("files") or {}
    pairs = []
    for index, control in enumerate(controls):
        record = files.get(f"controlnet:{index}") or {}
        where = record.get("folder") or record.get("path")
        try:
            model = model_title(Path(where)) if where else str(control.get("model"))
        except OSError:  # the weights moved since the run: the name as the request gave it
            model = str(control.get("model"))
        preprocess = control.get("preprocess")
        settings = control.get("preprocess_params") or {}
        sliders = SLIDERS.get(preprocess or "", (None, None))
        thresholds = [_number(settings[name]) if name in settings else "-1" for name in sliders]
        fields = {"Module": module_name(preprocess), "Model": model, "Weight": _number(control.get("scale", 1.0)),
                  "Resize Mode": RESIZE_MODES[0], "Processor Res": str(min(size)), "Threshold A": thresholds[0],
                  "Threshold B": thresholds[1], "Guidance Start": _number(control.get("start", 0.0)),
                  "Guidance End": _number(control.get("end", 1.0)), "Pixel Perfect": "False",
                  "Control Mode": CONTROL_MODES[0]}
        pairs.append((f"ControlNet {index}", ", ".join(f"{key}: {value}" for key, value in fields.items())))
    return pairs
