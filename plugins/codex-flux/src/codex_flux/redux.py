"""FLUX.1 Redux, flux's image variation: ``reference_images`` on txt2img.

A Redux model (black-forest-labs/FLUX.1-Redux-dev in diffusers format: ``image_encoder`` a SiglipVisionModel,
``feature_extractor``, ``image_embedder`` a ReduxImageEncoder) turns each image into tokens of the T5 width.
diffusers' documented two steps are the run: ``FluxPriorReduxPipeline(image=..., prompt_embeds_scale=...)`` gives
``prompt_embeds``/``pooled_prompt_embeds``, which the flux pipeline takes instead of the prompt. The prior is
given the flux model's own text encoders, so the prompt's tokens come first and the images' join them (ComfyUI's
Redux does the same; without text encoders diffusers would pad with zeros of the full-size width, 4096).

The Redux modules are loaded once per model and kept with it (``DiffusersModel.controlnets``, the model's
conditioning modules: counted in its bytes, dropped when it unloads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codex_core import UsageError, model_folders, user_path
from codex_diffusers import read_config

REDUX_KIND = "clip_vision"  # the models-folder kind of image encoders (A1111's and ComfyUI's clip_vision)
REDUX_PIPELINE = "FluxPriorReduxPipeline"
REDUX_PARTS = ("image_encoder", "feature_extractor", "image_embedder")


def redux_path(value: str, field: str) -> Path:
    """A ``reference_images.N.model`` value as a Redux diffusers folder: a path, else a folder of that name in
    the clip_vision models folders. A UsageError names the field."""
    path = user_path(value, field)
    if not path.exists():
        found = next((folder / value for folder in model_folders(REDUX_KIND) if (folder / value).is_dir()), None)
        if found is None:
            folders = ", ".join(str(f) for f in model_folders(REDUX_KIND)) or "none configured"
            raise UsageError(f"{field}: no such folder '{value}', and no Redux model of that name in the "
                             f"clip_vision folders ({folders})",
                             hint="download black-forest-labs/FLUX.1-Redux-dev into a clip_vision folder")
        path = found
    if not path.is_dir():
        raise UsageError(f"{field}: '{value}' is a file; a Redux model loads from a diffusers folder "
                         f"(model_index.json and {', '.join(REDUX_PARTS)})")
    index = read_config(path, "model_index.json") if (path / "model_index.json").is_file() else {}
    missing = [part for part in REDUX_PARTS if not (path / part).is_dir()]
    if index.get("_class_name") != REDUX_PIPELINE or missing:
        what = f"a {index['_class_name']} folder" if index.get("_class_name") else "not a diffusers pipeline folder"
        raise UsageError(f"{field}: '{value}' is {what}" + (f" without {', '.join(missing)}" if missing else "")
                         + f"; a Redux model is a {REDUX_PIPELINE} folder ({', '.join(REDUX_PARTS)})")
    return path


def redux_problems(params, text_width: int | None) -> list[str]:
    """Every ``reference_images`` problem as "field: message" lines, before loading: the model resolves to a Redux
    folder whose image embedder gives tokens of the flux model's T5 width (``text_width``; None: not known yet)."""
    problems = []
    for index, ref in enumerate(getattr(params, "reference_images", None) or []):
        field = f"reference_images.{index}.model"
        try:
            folder = redux_path(ref.model, field)
        except UsageError as exc:
            problems.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
            continue
        width = read_config(folder, "image_embedder/config.json").get("txt_in_features")
        if text_width is not None and width != text_width:
            problems.append(f"{field}: {folder.name} gives tokens of width {width} (image_embedder txt_in_features); "
                            f"this flux model's text tokens are {text_width} wide (transformer joint_attention_dim)")
    return problems


def load_redux(model, folder: Path, dtype):
    """The Redux modules of ``folder`` (a FluxPriorReduxPipeline without text encoders), loaded once per model
    onto the run's device in ``dtype`` (the transformer's)."""
    import torch
    from diffusers import FluxPriorReduxPipeline

    key = ("redux", str(folder.resolve()))
    if key not in model.controlnets:
        prior = FluxPriorReduxPipeline.from_pretrained(str(folder), torch_dtype=dtype, use_safetensors=True,
                                                       local_files_only=True)
        prior.to(model.runtime.device)
        # kept as a module, so the model's byte count and unload see it like a ControlNet
        module = torch.nn.ModuleDict({"image_encoder": prior.image_encoder, "image_embedder": prior.image_embedder})
        module.eval()
        module.feature_extractor = prior.feature_extractor
        model.controlnets[key] = module
    return model.controlnets[key]


def redux_arguments(model, pipe, job) -> dict[str, Any]:
    """The flux pipeline's prompt arguments from the run's reference images: the prompt's embeddings with the
    images' tokens, as diffusers' FluxPriorReduxPipeline gives them (then ``prompt`` is None)."""
    from diffusers import FluxPriorReduxPipeline

    refs = job.params.reference_images
    folder = redux_path(refs[0].model, "reference_images.0.model")
    modules = load_redux(model, folder, pipe.transformer.dtype)
    prior = FluxPriorReduxPipeline(image_encoder=modules["image_encoder"], feature_extractor=modules.feature_extractor,
                                   image_embedder=modules["image_embedder"], text_encoder=pipe.text_encoder,
                                   tokenizer=pipe.tokenizer, text_encoder_2=pipe.text_encoder_2,
                                   tokenizer_2=pipe.tokenizer_2)
    prior.set_progress_bar_config(disable=True)
    images = [job.input_image(f"reference_images.{i}.image", None, path=ref.image) for i, ref in enumerate(refs)]
    output = prior(image=images, prompt=job.params.prompt, prompt_embeds_scale=[ref.scale for ref in refs])
    job.notes["reference_images"] = [{"model": ref.model, "scale": ref.scale, "folder": str(folder),
                                      "tokens": int(output.prompt_embeds.shape[1])} for ref in refs]
    return {"prompt": None, "prompt_embeds": output.prompt_embeds,
            "pooled_prompt_embeds": output.pooled_prompt_embeds}
