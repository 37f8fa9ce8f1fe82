"""ControlNets for z_image, read from diffusers 0.42 (``pipeline_z_image_controlnet*.py``,
``controlnet_z_image.py``). No torch at import: `codex engines` imports this module.

- ``ZImageControlNetModel`` is not a whole network: it borrows the transformer's embedders, refiners and pad
  tokens (``ZImageControlNetModel.from_transformer(controlnet, transformer)``, which the pipelines call when
  built). The kit joins each run's ControlNet to the base transformer (``attach``); its file holds only the
  control layers.
- txt2img runs ``ZImageControlNetPipeline``; inpaint runs ``ZImageControlNetInpaintPipeline``, which takes the
  init image, the mask and the control image and generates from noise: no strength (so it must be 1).
- The pipelines run the control on every step (no control_guidance_start/end) and take one ControlNet (no
  multi-ControlNet class).
- The published union ControlNets (alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union: e.g. canny, depth, pose)
  read the condition from the control image alone: no mode argument, so no ``type``.
- ``control_in_dim``: 1.0 takes the control's latents (the VAE's 16 channels); 2.0/2.1 take the control's
  latents, the mask and the masked init image's latents (16 + 1 + 16 = 33). txt2img runs either (the
  pipeline pads zeros for the missing channels); inpaint needs the latter (the pipeline refuses 1.0).
"""

from __future__ import annotations

from codex_core import UsageError
from codex_diffusers import ControlNets, controlnet_path, read_config

CONTROLNET_CLASS = "ZImageControlNetModel"
INPAINT_PIPELINE = "ZImageControlNetInpaintPipeline"

ZIMAGE_CONTROLNETS = ControlNets(
    model_classes=(CONTROLNET_CLASS,),
    pipelines={"txt2img": "ZImageControlNetPipeline", "inpaint": INPAINT_PIPELINE},
    guidance_window=False,
    attach="from_transformer",
    call_arguments={"inpaint": {"strength": None}},
    fixed_fields={"inpaint": {"strength": 1.0}},
)


def controls_task_problems(task: str, params) -> list[str]:
    """Before anything loads: inpaint needs a ControlNet that reads the mask and the init image (2.0 and
    later: control_in_dim = 2 x latent channels + 1, an odd count; 1.0's is the latent channels alone)."""
    if task != "inpaint":
        return []
    problems = []
    for index, spec in enumerate(getattr(params, "controls", None) or []):
        try:
            folder = controlnet_path(spec.model, f"controls.{index}.model")
        except UsageError:
            continue  # the kit's checks say why
        config = read_config(folder, "config.json")
        channels = config.get("control_in_dim")
        if config.get("_class_name") == CONTROLNET_CLASS and isinstance(channels, int) and channels % 2 == 0:
            problems.append(f"controls.{index}.model: {folder.name} takes the control image alone (control_in_dim "
                            f"{channels}); inpaint runs {INPAINT_PIPELINE}, which needs one that also reads the mask "
                            "and the init image (e.g. Z-Image-Turbo-Fun-Controlnet-Union-2.1)")
    return problems


def controlnet_fit_problems(pipe, job) -> None:
    """A UsageError naming ``controls.0.model`` when the ControlNet does not fit the loaded transformer: it runs
    the transformer's own embedders, its blocks' outputs are added to given transformer layers, and it embeds
    latents of the VAE's channel count."""
    if not getattr(job.params, "controls", None):
        return
    transformer, control = pipe.transformer.config, pipe.controlnet.config
    problems = []
    for name in ("dim", "n_heads", "n_kv_heads", "all_patch_size", "all_f_patch_size"):
        mine, theirs = control[name], transformer[name]
        if isinstance(mine, (list, tuple)):  # a tuple in code, a list once read from config.json
            mine, theirs = list(mine), list(theirs)
        if mine != theirs:
            problems.append(f"its {name} {mine} differs from the transformer's {theirs}")
    for places, count, what in (("control_layers_places", "n_layers", "layers"),
                                ("control_refiner_layers_places", "n_refiner_layers", "noise refiner layers")):
        beyond = [place for place in control[places] or [] if place >= transformer[count]]
        if beyond:
            problems.append(f"its {places} {beyond} are beyond the transformer's {transformer[count]} {what}")
    latent = transformer["in_channels"]
    needed = 2 * latent + 1 if job.task == "inpaint" else None
    if needed is not None and control["control_in_dim"] != needed:
        problems.append(f"its control_in_dim {control['control_in_dim']} is not {needed} (control, mask and init "
                        f"image latents of {latent} channels)")
    elif needed is None and control["control_in_dim"] < latent:
        problems.append(f"its control_in_dim {control['control_in_dim']} is below the {latent} latent channels")
    if problems:
        raise UsageError(f"controls.0.model: {job.params.controls[0].model} does not fit this Z-Image checkpoint: "
                         + "; ".join(problems), hint="use a ControlNet made for Z-Image (e.g. "
                                                     "alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union-2.1)")
