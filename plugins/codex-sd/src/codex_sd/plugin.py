"""Registers the sd15 and sdxl engines. Imports no torch: the engine module loads on first run."""

from codex_core import hookimpl
from codex_core.engines import EngineSpec
from codex_core.presets import locate

from .modes import HINTS, UNSUPPORTED_SD15, detect_modes
from .params import TASKS

SD15 = EngineSpec(
    key="sd15",
    family="stable-diffusion",
    tasks=TASKS,
    engine="codex_sd.engine:StableDiffusion15Engine",
    sampler_family="discrete",
    modes=("normal", "lcm", "turbo"),
    mode_unsupported=UNSUPPORTED_SD15,
    detect_modes=detect_modes,
    mode_hints=HINTS,
    default_repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
    gpu_dtype="float16",
    tiny_version="1",
    presets_dir=locate(__file__, "sd15"),
    description="Stable Diffusion 1.x / 2.x checkpoints in diffusers format",
)

SDXL = EngineSpec(
    key="sdxl",
    family="stable-diffusion-xl",
    tasks=TASKS,
    engine="codex_sd.engine:StableDiffusionXLEngine",
    sampler_family="discrete",
    modes=("normal", "lcm", "turbo", "lightning"),
    detect_modes=detect_modes,
    mode_hints=HINTS,
    default_repo="stabilityai/stable-diffusion-xl-base-1.0",
    gpu_dtype="float16",
    tiny_version="1",
    presets_dir=locate(__file__, "sdxl"),
    description="SDXL base checkpoints in diffusers format",
)


@hookimpl
def codex_register_engines(register):
    register(SD15)
    register(SDXL)
