"""Registers the flux engine. Imports no torch: the engine module loads on first run."""

from codex_core import hookimpl
from codex_core.engines import EngineSpec
from codex_core.presets import locate

from .params import TASKS
from .variants import VARIANTS, check_request, detect_variant

FLUX = EngineSpec(
    key="flux",
    family="flux",
    tasks=TASKS,
    engine="codex_flux.engine:FluxEngine",
    sampler_family="flow",
    # Euler (FlowMatchEulerDiscreteScheduler) is the checkpoints' own. UniPC runs txt2img with the
    # same dynamic shift; img2img/inpaint are Euler-only (params.py). DPM++ 2M is left out: diffusers
    # fails with it on schnell (set_timesteps asserts dynamic shifting) and on img2img/inpaint (it
    # takes no custom sigmas). No flow_shift field: the checkpoint's scheduler config decides the shift.
    samplers=("Euler", "UniPC"),
    default_repo="black-forest-labs/FLUX.1-dev",
    variants=VARIANTS,
    detect_variant=detect_variant,
    tiny_variant="dev",
    check_request=check_request,  # schnell: no cfg, at most 256 T5 tokens
    gpu_dtype="bfloat16",
    tiny_version="1",
    presets_dir=locate(__file__, "flux"),
    description="FLUX.1 [dev] (black-forest-labs/FLUX.1-dev) and [schnell] (black-forest-labs/FLUX.1-schnell) "
                "in diffusers format; the variant is read from the checkpoint",
)


@hookimpl
def codex_register_engines(register):
    register(FLUX)
