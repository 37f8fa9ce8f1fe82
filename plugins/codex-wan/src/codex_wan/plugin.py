"""Registers the Wan 2.2 engines. Imports no torch: the engine module loads on first run."""

import os

from codex_core import hookimpl
from codex_core.engines import EngineSpec
from codex_core.presets import locate

from .params import I2V_A14B_TASKS, T2V_A14B_TASKS, TI2V_5B_TASKS

# WAN_REPO_ID, when set, replaces the default hub repo of every Wan engine (e.g. a mirror or a
# fine-tune in the same layout). It is read when the engines are registered (once per process).
REPO_ENV = "WAN_REPO_ID"


def _spec(key: str, tasks, engine: str, default_repo: str, description: str) -> EngineSpec:
    return EngineSpec(
        key=key,
        family="wan2.2",
        tasks=tasks,
        engine=f"codex_wan.engine:{engine}",
        sampler_family="flow",
        default_repo=os.environ.get(REPO_ENV) or default_repo,
        gpu_dtype="bfloat16",  # the VAE stays float32 (see engine.py)
        tiny_version="1",
        presets_dir=locate(__file__, key),
        description=description,
    )


def specs() -> list[EngineSpec]:
    return [
        _spec("wan_ti2v_5b", TI2V_5B_TASKS, "WanTI2V5BEngine", "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
              "Wan 2.2 TI2V-5B: text- and image-to-video, one transformer, 48-channel VAE (diffusers format)"),
        _spec("wan_t2v_14b", T2V_A14B_TASKS, "WanT2VA14BEngine", "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
              "Wan 2.2 T2V-A14B: text-to-video, high- and low-noise expert transformers (diffusers format)"),
        _spec("wan_i2v_14b", I2V_A14B_TASKS, "WanI2VA14BEngine", "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
              "Wan 2.2 I2V-A14B: image-to-video, high- and low-noise expert transformers (diffusers format)"),
    ]


@hookimpl
def codex_register_engines(register):
    for spec in specs():
        register(spec)
