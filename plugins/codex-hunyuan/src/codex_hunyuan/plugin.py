"""Registers the hunyuan_video engine. Imports no torch: the engine module loads on first run."""

from codex_core import hookimpl
from codex_core.engines import EngineSpec
from codex_core.presets import locate

from .params import TASKS

HUNYUAN_VIDEO = EngineSpec(
    key="hunyuan_video",
    family="hunyuan-video",
    tasks=TASKS,
    engine="codex_hunyuan.engine:HunyuanVideoEngine",
    sampler_family="flow",
    # The pipelines always pass an explicit sigma schedule (scheduler.set_timesteps(sigmas=...));
    # DPMSolverMultistepScheduler accepts none, so the flow "DPM++ 2M" would fail inside diffusers.
    samplers=("Euler", "UniPC"),
    default_repo="hunyuanvideo-community/HunyuanVideo",
    # image-to-video is another checkpoint (its own transformer and LLaVA text encoder): looked up
    # under CODEX_MODEL_HUNYUAN_VIDEO_IMG2VID / <models dir>/hunyuan_video_img2vid/
    task_default_repos={"img2vid": "hunyuanvideo-community/HunyuanVideo-I2V"},
    gpu_dtype="bfloat16",  # every component, the VAE and text encoders included (see engine.py)
    tiny_version="1",
    presets_dir=locate(__file__, "hunyuan_video"),
    description="HunyuanVideo 13B: text-to-video and image-to-video (HunyuanVideo-I2V), diffusers format",
)


@hookimpl
def codex_register_engines(register):
    register(HUNYUAN_VIDEO)
