"""The hunyuan_video_15 engine: HunyuanVideo 1.5 (8.3B) text-to-video and image-to-video.

txt2vid runs ``HunyuanVideo15Pipeline`` and img2vid ``HunyuanVideo15ImageToVideoPipeline``; the
authors publish a transformer per task and resolution, which hunyuanvideo-community ships as one
diffusers repo each (…-480p_t2v, …-480p_i2v, …-720p_t2v, …-720p_i2v, and the step-distilled
…-480p_t2v_distilled). A real folder serves the task its model_index.json names; the tiny model
serves both (``<tiny>/`` and ``<tiny>/i2v/``).

Two things these pipelines do differently from the kit's defaults:

- guidance: no ``guidance_scale`` argument; the scale is the ``guider`` component's
  (``ClassifierFreeGuidance``). A run gets its own guider (``guider.new(guidance_scale=cfg)``) on its
  view of the pipeline, so the cached pipeline keeps the checkpoint's for the next run.
- steps: no step callback; the run's own scheduler counts them (progress and ``steps_done``).

img2vid takes no size: the pipeline picks a bucket of the transformer's ``target_size`` from the
image (``v15_params.bucket_size``); ``plan`` puts that size into the request before anything loads,
so width/height in info.json are the video's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codex_core import CodexError, Job, ModelSource, ParamError, Plan, VideoOutput
from codex_diffusers import DiffusersEngine, read_config

from .v15_params import TASKS, TINY_TARGET_SIZE, bucket_size

I2V_FOLDER = "i2v"
# step caches whose diffusers hooks look the transformer's blocks up in diffusers' TransformerBlockRegistry, which
# does not list HunyuanVideo15TransformerBlock: they fail after loading ("not registered"); refused before it
BLOCK_CACHES = ("first_block", "magcache")
# diffusers' default for a transformer config without target_size (HunyuanVideo15Transformer3DModel)
DEFAULT_TARGET_SIZE = 640


def target_size(source: ModelSource, folder: Path) -> int:
    """The transformer's ``target_size`` (pixels: 640 for the 480p checkpoints, 960 for 720p), read before loading."""
    if source.kind == "tiny":
        return TINY_TARGET_SIZE
    return int(read_config(folder, "transformer/config.json").get("target_size", DEFAULT_TARGET_SIZE))


def oriented_size(path: str) -> tuple[int, int]:
    """An image file's size as viewers show it (EXIF orientations 5-8 swap width and height), as job.input_image
    will load it."""
    from PIL import Image

    with Image.open(Path(path).expanduser()) as image:
        width, height = image.size
        return (height, width) if image.getexif().get(0x0112) in (5, 6, 7, 8) else (width, height)


def count_steps(pipe, job: Job) -> None:
    """Progress and ``steps_done`` from the run's own scheduler: these pipelines take no step callback."""
    step = pipe.scheduler.step

    def counted(*args, **kwargs):
        result = step(*args, **kwargs)
        done = job.steps_done = job.steps_done + 1
        job.progress.step(done, len(pipe.scheduler.timesteps))
        return result

    pipe.scheduler.step = counted  # the view's scheduler, made for this run: nothing outlives it


class HunyuanVideo15(DiffusersEngine):
    # No --component files and no LoRAs (yet): diffusers 0.42's single-file loader does not list
    # HunyuanVideo15Transformer3DModel (from_single_file raises, so neither a transformer file nor a GGUF loads),
    # and the HunyuanVideo 1.5 pipelines have no LoRA loader (no load_lora_weights). tests/test_hunyuan_15.py
    # pins both, so a diffusers that adds them fails there and the engine can take them.
    replaceable_components = ()
    key = "hunyuan_video_15"
    family = "hunyuan-video-15"
    description = ("HunyuanVideo 1.5 (8.3B): text-to-video and image-to-video, 480p/720p checkpoints in diffusers "
                   "format (hunyuanvideo-community)")
    tasks = TASKS
    pipelines = {"txt2vid": "HunyuanVideo15Pipeline", "img2vid": "HunyuanVideo15ImageToVideoPipeline"}
    # cfg is the guider's scale (prepare_view), not a call argument
    arguments = {"cfg": None}
    denoisers = ("transformer",)
    latent_format = None  # its VAE has 32 latent channels: no latent_rgb table matches
    sampler_family = "flow"
    # Both pipelines pass an explicit sigma schedule (scheduler.set_timesteps(sigmas=...)) and never call
    # scale_noise (the image is concatenated as a condition, not noised): Euler and UniPC take that;
    # DPMSolverMultistepScheduler takes no custom sigmas, so the flow "DPM++ 2M" fails inside diffusers
    # (tests/test_hunyuan_15.py checks it).
    samplers = ("Euler", "UniPC")
    default_repo = "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v"
    # image-to-video is another checkpoint: looked up under CODEX_MODEL_HUNYUAN_VIDEO_15_IMG2VID /
    # <models dir>/hunyuan_video_15_img2vid/
    task_default_repos = {"img2vid": "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v"}
    reference_configs = {"480p_t2v": "reference_configs/v15_480p_t2v"}
    gpu_dtype = "bfloat16"
    tiny_version = "2"  # 2: two transformer blocks (step caches)

    def check_request(self, task: str, params, variant: str | None) -> list[str]:
        problems = super().check_request(task, params, variant)
        cache = getattr(params, "cache", None)
        if cache is not None and cache.type in BLOCK_CACHES:
            problems.append(f"cache.type: {cache.type!r} needs diffusers' transformer-block registry, which has no "
                            "HunyuanVideo15TransformerBlock (diffusers 0.42); use taylorseer or pab")
        return problems

    def task_folders(self, source: ModelSource) -> dict[str, Path]:
        if source.kind == "tiny":
            return {"txt2vid": source.path, "img2vid": source.path / I2V_FOLDER}
        return {self.checkpoint_task(source.path, source.label): source.path}

    def plan(self, task: str, request: dict[str, Any], context) -> Plan:
        """img2vid: the video's size is the pipeline's bucket for the init image, filled in before loading."""
        if task != "img2vid" or not isinstance(request.get("init_image"), str):
            return Plan()
        try:
            width, height = oriented_size(request["init_image"])
        except (OSError, ValueError):  # unreadable: the params' error to report, naming the field
            return Plan()
        source = context.source()
        folder = self.task_folders(source).get("img2vid", source.path)
        target = target_size(source, folder)
        size = bucket_size(width, height, target)
        asked = {name: request[name] for name in ("width", "height") if request.get(name) is not None}
        wrong = [f"{name}: got {value}; HunyuanVideo 1.5 img2vid makes {size[0]}x{size[1]} from this {width}x{height} "
                 f"init image (the bucket of target_size {target} nearest its aspect ratio); leave width and height "
                 "out" for name, value in asked.items() if value != dict(zip(("width", "height"), size))[name]]
        if wrong:
            raise ParamError(wrong, self.key, task)
        return Plan(overrides={"width": size[0], "height": size[1]})

    def output_size(self, job: Job) -> tuple[int, int] | None:
        # img2vid: the pipeline crops and resizes the image itself (and feeds that to SigLIP): pass it as it is
        return None if job.task == "img2vid" else super().output_size(job)

    def prepare_view(self, pipe, job: Job) -> None:
        pipe.guider = pipe.guider.new(guidance_scale=job.params.cfg)
        count_steps(pipe, job)

    def extra_arguments(self, job: Job, pipe) -> dict[str, Any]:
        if job.task == "img2vid":
            params = job.params
            image = job.input_image("init_image", None)
            size = bucket_size(*image.size, pipe.target_size)
            if size != (params.width, params.height):  # plan read another target_size than the loaded model has
                raise CodexError(f"img2vid: the pipeline makes {size[0]}x{size[1]} from this init image, but the "
                                 f"request was sized {params.width}x{params.height}; nothing was run")
            job.notes["size"] = {"width": size[0], "height": size[1],
                                 "rule": f"the bucket of target_size {pipe.target_size} nearest the init image's "
                                         f"aspect ratio ({image.size[0]}x{image.size[1]}), center-cropped to it"}
        return {}

    def output(self, result, job: Job, arguments: dict[str, Any]) -> VideoOutput:
        video = super().output(result, job, arguments)
        size = video.frames[0].size
        if size != (job.params.width, job.params.height):
            raise CodexError(f"the pipeline made {size[0]}x{size[1]} frames, not the {job.params.width}x"
                             f"{job.params.height} asked; nothing was written")
        return video

    def build_tiny(self, dest: Path) -> None:
        from .v15_tiny import build

        build(dest)
