"""__NAME__ on its tiny random-weight model: txt2img equals a direct diffusers call, to the pixel.

STARTING POINT: the direct call is the template's PixArt-Sigma one; make it your pipeline's, with the same
arguments a user would pass to diffusers (for img2img/inpaint: the init image and mask at the run's size,
``strength``; see docs/plugins.md, "Tests: the conformance suite")."""

from __future__ import annotations

from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, PixArtSigmaPipeline

from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    EngineConformance,
    direct_pipe,
    pytest_generate_tests,
    seed_generators,
)

# What the sampler names in the cases mean, written out independently of codex's table.
SCHEDULERS = {"DPM++ 2M": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
              "Euler a": (EulerAncestralDiscreteScheduler, {})}


class Test__CLASS__(EngineConformance):
    engine = "__NAME__"
    cases = {"txt2img": {"prompt": "a red fox in snow", "negative_prompt": "blurry", "width": 64, "height": 48,
                         "steps": 3, "seed": 42, "batch_size": 2}}
    bad_requests = [
        ("size_off_stride", "txt2img", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("ddim_is_left_out", "txt2img", {"prompt": "x", "sampler": "DDIM"}, "sampler: 'DDIM' does not run with"),
        ("unknown_key", "txt2img", {"prompt": "x", "step": 20}, "did you mean 'steps'"),
    ]

    def direct(self, task, request, model_dir):
        pipe, checkpoint_config = direct_pipe(PixArtSigmaPipeline, model_dir)
        scheduler_cls, flags = SCHEDULERS[request["sampler"]]
        pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
        return pipe(prompt=request["prompt"], negative_prompt=request["negative_prompt"],
                    width=request["width"], height=request["height"], num_inference_steps=request["steps"],
                    guidance_scale=request["cfg"], num_images_per_prompt=request["batch_size"],
                    use_resolution_binning=False, clean_caption=False,
                    generator=seed_generators(request)).images
