"""The ltx2 engine: LTX-2 (Lightricks), video with its sound track, on diffusers' LTX2Pipeline (txt2vid) and
LTX2ImageToVideoPipeline (img2vid). One checkpoint serves both tasks.

The pipelines return the frames and the vocoder's waveform together (``LTX2PipelineOutput.audio``:
``[batch, channels, samples]`` at ``vocoder.config.output_sampling_rate``); ``output`` hands both on as
a ``VideoOutput`` with an ``AudioTrack`` (float32, (channels, samples)), which the exporters mux or drop
(``"audio": false``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from codex_core import AudioTrack, Job, ParamsBase, VideoOutput
from codex_core.parallel import parse
from codex_diffusers import ContextParallel, DiffusersEngine

from .context_parallel import layout_problem as cp_layout_problem, ltx2_plan, prepare_split, split_tokens_problem
from .ltx2_params import TASKS


class LTX2(DiffusersEngine):
    replaceable_components = ("transformer",)  # a transformer-only or GGUF file with --component
    # the audio-to-video cross-attention gate's modulation, which only LTX-2's transformer has: diffusers' name
    # and the original / ComfyUI one (after its model.diffusion_model. prefix)
    component_markers = {"transformer": ("av_cross_attn_video_a2v_gate.", "av_ca_a2v_gate_adaln_single.")}
    # LoRAs through diffusers' LTX2LoraLoaderMixin: diffusers-format keys, or the original / ComfyUI ones
    lora_prefixes = ("transformer.", "diffusion_model.transformer_blocks")
    key = "ltx2"
    family = "ltx-2"
    description = ("LTX-2 (Lightricks): text- and image-to-video with synchronized sound, a 19B audio-video "
                   "transformer, Gemma-3 12B text encoder (diffusers format)")
    tasks = TASKS
    pipelines = {"txt2vid": "LTX2Pipeline", "img2vid": "LTX2ImageToVideoPipeline"}
    arguments = {"fps": "frame_rate", "audio_cfg": "audio_guidance_scale", "modality_scale": "modality_scale",
                 "guidance_rescale": "guidance_rescale", "max_sequence_length": "max_sequence_length",
                 "image_crf": "image_crf"}
    denoisers = ("transformer",)
    # --parallel: diffusers' cp plan with the video's cross-modal rotary split too, and the key mask processors
    # prepare_view puts on the split transformer (context_parallel.py says why both are needed)
    context_parallel = ContextParallel(denoisers=("transformer",), plans={"transformer": ltx2_plan},
                                       layouts=cp_layout_problem)
    sampler_family = "flow"
    # The pipelines pass their own sigma schedule and a token-count dependent shift (mu) to the scheduler:
    # FlowMatchEuler (the checkpoint's) and flow UniPC take both; DPM++ 2M takes no custom sigmas and fails
    # inside diffusers (tests/test_ltx2.py shows it). Both tasks call scheduler.step only (no scale_noise).
    samplers = ("Euler", "UniPC")
    default_repo = "Lightricks/LTX-2"
    # the configs of Lightricks/LTX-2 (LTX-2.0), shipped (codex_diffusers.reference_config_dir)
    reference_configs = {"ltx2": "reference_configs/ltx2"}
    gpu_dtype = "bfloat16"
    tiny_version = "2"
    # no latent_format: LTX-2's 128-channel latents have no published latent-to-RGB factors (LTX-Video's are
    # for its own VAE)

    def extra_arguments(self, job: Job, pipe) -> dict[str, Any]:
        config = pipe.transformer.config
        return {
            # Spatio-temporal guidance perturbs self-attention only in transformers built with perturbed_attn,
            # which the published LTX-2 config does not set: in diffusers it would cost one more transformer
            # pass per step and change nothing, so it stays off.
            "stg_scale": 0.0, "audio_stg_scale": 0.0, "spatio_temporal_guidance_blocks": None,
            # the sound's modality guidance and rescale follow the video's (the pipeline's None rule)
            "audio_modality_scale": None, "audio_guidance_rescale": None,
            # LTX-2.0 modulates each modality's cross-attention with its own timestep; LTX-2.3 (the checkpoints
            # with cross-attention modulation) with the other modality's: diffusers' use_cross_timestep
            "use_cross_timestep": bool(getattr(config, "cross_attn_mod", False)),
        }

    def prepare_view(self, pipe, job: Job) -> None:
        # the waveform's rate is the vocoder's; output() has the result only
        job.notes["audio_sample_rate"] = int(pipe.vocoder.config.output_sampling_rate)
        # split by --parallel: refuse what the plan cannot split, keep the text masks one head wide (no-op unsplit)
        prepare_split(pipe.transformer)

    def parallel_problems(self, task: str, params, context) -> list[str]:
        """The kit's checks, then whether the cp plan can cut this request's video and text into equal parts."""
        problems = super().parallel_problems(task, params, context)
        layout = parse(getattr(getattr(context, "runtime", None), "parallel", "off"))
        size = self.output_size_of(params)  # img2vid: its target size (the init image's without width/height)
        if layout is None or size is None:
            return problems
        width, height = size
        # 32x in space and 8x in time, patch size 1; the text is max_sequence_length tokens after the connectors
        problem = split_tokens_problem((params.num_frames - 1) // 8 + 1, height // 32, width // 32,
                                       params.max_sequence_length, layout.ulysses)
        if problem:
            field = "max_sequence_length" if problem.startswith("the text") else "num_frames"
            problems.append(f"{field}: --parallel {layout}: {problem}; choose num_frames, width, height and "
                            f"max_sequence_length whose token counts {layout.ulysses} ranks divide")
        return problems

    def output(self, result, job: Job, arguments: dict[str, Any]) -> VideoOutput:
        video = super().output(result, job, arguments)
        samples = result.audio[0].float().cpu().numpy()  # [channels, samples] of the one video
        video.audio = AudioTrack(samples=samples, sample_rate=job.notes["audio_sample_rate"])
        return video

    def check_request(self, task: str, params: ParamsBase, variant: str | None) -> list[str]:
        crf = getattr(params, "image_crf", 0)
        if crf and importlib.util.find_spec("av") is None:
            return [f"image_crf: {crf} re-encodes the first frame with PyAV (as LTX-2 was trained), which is not "
                    "installed: pip install av, or set image_crf 0 to condition on the image as it is"]
        return []

    def build_tiny(self, dest: Path) -> None:
        from .ltx2_tiny import build

        build(dest)
