"""ControlNets for qwen_image, read from diffusers 0.42 (``pipeline_qwenimage_controlnet*.py``,
``controlnet_qwenimage.py``). No torch at import: `codex engines` imports this module.

- txt2img runs ``QwenImageControlNetPipeline`` with a ``QwenImageControlNetModel``. The union ControlNet
  (InstantX/Qwen-Image-ControlNet-Union: e.g. canny, depth, pose) has no mode argument: the control
  image alone says which condition it is, so ``type`` is not taken.
- Several controls stack through ``QwenImageMultiControlNetModel``, which runs ONE ControlNet (the union)
  on each control image and sums the results; it refuses two different ControlNets, so every control must
  name the same one (the kit's ``stacks_one_model``).
- inpaint runs ``QwenImageControlNetInpaintPipeline`` with an inpainting ControlNet
  (InstantX/Qwen-Image-ControlNet-Inpainting, ``extra_condition_channels`` > 0: it reads the mask too). That
  pipeline generates from noise: it takes the image to repaint as ``control_image`` and the mask as
  ``control_mask``, and no init image or strength. So the control's image is the init image, strength is 1
  and one ControlNet runs (its image preparation handles one).
- img2img has no ControlNet pipeline in diffusers.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from codex_core import UsageError
from codex_diffusers import ControlNets, controlnet_path, read_config

CONTROLNET_CLASS = "QwenImageControlNetModel"
INPAINT_PIPELINE = "QwenImageControlNetInpaintPipeline"

QWEN_CONTROLNETS = ControlNets(
    model_classes=(CONTROLNET_CLASS,),
    pipelines={"txt2img": "QwenImageControlNetPipeline", "inpaint": INPAINT_PIPELINE},
    multi_class="QwenImageMultiControlNetModel",
    stacks_one_model=True,
    call_arguments={"inpaint": {"image": None, "mask_image": "control_mask", "strength": None}},
    fixed_fields={"inpaint": {"strength": 1.0}},
)


def _configs(params) -> list[tuple[int, Path, dict]]:
    """(index, folder, config) of each control whose model resolves to a Qwen-Image ControlNet folder (the
    kit's checks report the others)."""
    found = []
    for index, spec in enumerate(getattr(params, "controls", None) or []):
        try:
            folder = controlnet_path(spec.model, f"controls.{index}.model")
        except UsageError:
            continue
        config = read_config(folder, "config.json")
        if config.get("_class_name") == CONTROLNET_CLASS:
            found.append((index, folder, config))
    return found


def _same_image(one: str, other: str) -> bool:
    """The same file, or files of the same bytes (a front end that uploads both saves two copies)."""
    import filecmp

    first, second = Path(one).expanduser(), Path(other).expanduser()
    return first.resolve() == second.resolve() or filecmp.cmp(first, second, shallow=False)


def controls_task_problems(task: str, params) -> list[str]:
    """What the task's ControlNet pipeline cannot take, before anything loads: an inpainting ControlNet
    (it reads a mask) outside inpaint, an ordinary one in inpaint, and inpaint's one control on the init image."""
    controls = getattr(params, "controls", None) or []
    if not controls:
        return []
    problems = []
    for index, folder, config in _configs(params):
        extra = config.get("extra_condition_channels") or 0
        if task != "inpaint" and extra:
            problems.append(f"controls.{index}.model: {folder.name} is an inpainting ControlNet "
                            f"(extra_condition_channels {extra}: it reads a mask); it runs in the inpaint task")
        elif task == "inpaint" and not extra:
            problems.append(f"controls.{index}.model: {folder.name} is not an inpainting ControlNet "
                            f"(extra_condition_channels 0); inpaint with controls runs {INPAINT_PIPELINE}, which "
                            "needs one that reads the mask (e.g. InstantX/Qwen-Image-ControlNet-Inpainting)")
    if task == "inpaint":
        if len(controls) > 1:
            problems.append(f"controls: {len(controls)} given; {INPAINT_PIPELINE} takes one ControlNet")
        spec = controls[0]
        if not _same_image(spec.image, params.init_image):
            problems.append(f"controls.0.image: got {spec.image}; the inpainting ControlNet reads the image being "
                            f"repainted: give init_image's file ({params.init_image})")
        if spec.preprocess is not None:
            problems.append(f"controls.0.preprocess: got {spec.preprocess!r}; the inpainting ControlNet reads the "
                            "init image as it is: leave preprocess out")
    return problems


def controlnet_fit_problems(pipe, job) -> None:
    """A UsageError naming ``controls.N.model`` when a ControlNet does not fit the loaded transformer: its
    blocks' outputs are added to the transformer's hidden states and it embeds the same latents and text."""
    if not getattr(job.params, "controls", None):
        return
    transformer = pipe.transformer.config
    net = pipe.controlnet
    control = net.nets[0].config if hasattr(net, "nets") else net.config
    inner = transformer.num_attention_heads * transformer.attention_head_dim
    problems = []
    if control.num_attention_heads * control.attention_head_dim != inner:
        problems.append(f"its width {control.num_attention_heads} x {control.attention_head_dim} differs from the "
                        f"transformer's {transformer.num_attention_heads} x {transformer.attention_head_dim}")
    if control.joint_attention_dim != transformer.joint_attention_dim:
        problems.append(f"its joint_attention_dim (text width) {control.joint_attention_dim} differs from the "
                        f"transformer's {transformer.joint_attention_dim}")
    if control.in_channels != transformer.in_channels or control.patch_size != transformer.patch_size:
        problems.append(f"its latent input (in_channels {control.in_channels}, patch {control.patch_size}) differs "
                        f"from the transformer's ({transformer.in_channels}, {transformer.patch_size})")
    mask_channels = transformer.patch_size ** 2  # one mask channel, packed in 2x2 patches like the latents
    if job.task == "inpaint" and control.extra_condition_channels != mask_channels:
        problems.append(f"its extra_condition_channels {control.extra_condition_channels} is not the packed mask's "
                        f"{mask_channels}")
    if problems:
        raise UsageError(f"controls.0.model: {job.params.controls[0].model} does not fit this Qwen-Image checkpoint: "
                         + "; ".join(problems), hint="use a ControlNet made for Qwen-Image (e.g. "
                                                     "InstantX/Qwen-Image-ControlNet-Union)")


@contextmanager
def seeded_global_rng(seed: int):
    """torch's global random state seeded with the run's seed, and put back afterwards.

    QwenImageControlNetInpaintPipeline encodes the masked image with ``latent_dist.sample()`` and no generator,
    so that draw comes from the global state: seeded here, the output is a function of the request's seed
    (the same seed, the same pixels), and nothing else in the process sees its random state change."""
    import torch

    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        yield
