"""Annotators that run a transformers model: ``depth``, a depth map from a depth-estimation model folder.

Which folder: the first one, in the annotators folders' search order (each folder's entries sorted by name,
two levels deep so that ``LiheYoung/depth-anything-small-hf`` works as well as ``depth-anything-small-hf``),
whose name starts with ``depth-anything``, ``depth_anything`` or ``dpt`` (any case) and which holds a
transformers model saved as safetensors: ``config.json``, ``preprocessor_config.json`` and ``*.safetensors``.
That is what ``huggingface-cli download depth-anything/Depth-Anything-V2-Small-hf --local-dir ...`` (or
``LiheYoung/depth-anything-small-hf``, ``Intel/dpt-hybrid-midas``) writes; Depth Anything and DPT-MiDaS are
the models behind A1111's ``depth_anything`` and ``depth_midas``. It is loaded from local files only, never
with remote code, and kept for the process (a few tens of MB) on the CPU, in float32.

The map is what transformers' depth-estimation pipeline makes: the processor's input, the model's predicted
depth resized (bicubic) to the input size by the processor's ``post_process_depth_estimation``, then scaled
to 0..255 by its minimum and maximum. These models predict relative inverse depth, so near is bright, as
ControlNet depth models expect; the map is given as three equal channels.

Nothing here imports torch or transformers until the preprocessor runs (the kit's plugin registers it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from codex_core import Preprocessor, PreprocessorParams, UsageError

DEPTH_PREFIXES = ("depth-anything", "depth_anything", "dpt")
DEPTH_FILES = ("config.json", "preprocessor_config.json")
DEPTH_NEEDS = "a depth-anything*/dpt* folder (transformers depth estimation, safetensors)"
DEPTH_DOWNLOAD = "depth-anything/Depth-Anything-V2-Small-hf"

_LOADED: dict[Path, tuple[Any, Any]] = {}  # resolved folder -> (model, image processor), for this process


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in DEPTH_FILES) and any(folder.glob("*.safetensors"))


def _candidates(top: Path):
    """Folders under ``top`` (two levels, names sorted) whose name says depth model."""
    try:
        children = sorted((p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    except OSError:
        return
    for child in children:
        if child.name.lower().startswith(DEPTH_PREFIXES):
            yield child
            continue
        try:
            grandchildren = sorted(p for p in child.iterdir() if p.is_dir())
        except OSError:
            continue
        yield from (p for p in grandchildren if p.name.lower().startswith(DEPTH_PREFIXES))


def depth_folder(field: str = "preprocess") -> Path:
    """The depth model folder the rule picks; a UsageError naming what to download and where otherwise."""
    from codex_core import model_folders

    searched = model_folders("annotators")
    incomplete = []
    for top in searched:
        for folder in _candidates(top):
            if _complete(folder):
                return folder
            incomplete.append(folder)
    where = ", ".join(str(folder) for folder in searched) or "none configured"
    lacking = (f"; {', '.join(str(f) for f in incomplete)} lacks {' or '.join(DEPTH_FILES)} or a .safetensors file"
               if incomplete else "")
    first = searched[0] if searched else Path("models/annotators")
    raise UsageError(f"{field}: depth needs {DEPTH_NEEDS}, which is not in the annotators folders ({where}){lacking}",
                     hint=f"download {DEPTH_DOWNLOAD} into {first / DEPTH_DOWNLOAD.rsplit('/', 1)[1].lower()} "
                          f"(huggingface-cli download {DEPTH_DOWNLOAD} --local-dir ...); a layout's annotators "
                          "folder: codex annotators/, ComfyUI custom_nodes/comfyui_controlnet_aux/ckpts/, A1111 "
                          "extensions/sd-webui-controlnet/annotator/downloads/, Forge models/ControlNetPreprocessor/")


def _locate_depth(field: str) -> dict[str, Path]:
    return {"depth": depth_folder(field)}


def load_depth(folder: Path):
    """(model, image processor) of ``folder``, loaded once per process from its local files."""
    key = folder.resolve()
    if key not in _LOADED:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        try:
            processor = AutoImageProcessor.from_pretrained(key, local_files_only=True, trust_remote_code=False)
            model = AutoModelForDepthEstimation.from_pretrained(key, local_files_only=True, use_safetensors=True,
                                                                trust_remote_code=False)
        except (OSError, ValueError, KeyError) as exc:  # not a depth model transformers knows: said, with the folder
            raise UsageError(f"preprocess: depth: {key} is not a transformers depth-estimation model "
                             f"({type(exc).__name__}: {str(exc)[:300]})") from None
        _LOADED[key] = (model.eval(), processor)
    return _LOADED[key]


def depth_map(model, processor, image: Image.Image) -> Image.Image:
    """The pipeline's depth image: predicted depth at the image's size, min..max -> 0..255, as RGB."""
    import numpy
    import torch

    inputs = processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    depth = processor.post_process_depth_estimation(outputs, target_sizes=[(image.height, image.width)])
    depth = depth[0]["predicted_depth"].float().cpu().numpy()
    span = depth.max() - depth.min()
    # a flat prediction has no near or far: black, where the pipeline's formula would divide by zero
    scaled = (depth - depth.min()) / span if span > 0 else numpy.zeros_like(depth)
    return Image.fromarray((scaled * 255).astype("uint8"), mode="L").convert("RGB")


def depth(image: Image.Image, params: PreprocessorParams) -> Image.Image:
    model, processor = load_depth(depth_folder())
    return depth_map(model, processor, image)


PREPROCESSORS = (
    Preprocessor("depth", "depth map (near = bright) from a Depth Anything or DPT-MiDaS model folder", depth,
                 needs=(DEPTH_NEEDS,), locate=_locate_depth),
)
