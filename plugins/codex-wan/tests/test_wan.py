"""Wan 2.2 engines on tiny random-weight models: every task equals a direct diffusers call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
)
from PIL import Image

from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    assert_configs_differ_only,
    direct_pipe,
    loaded_family,
    EngineConformance,
    cli_run,
    pytest_generate_tests,
    run_json,
    tiny_model_dir,
    write_test_image,
)

# What the sampler names mean for flow-matching checkpoints, written out independently of codex's table.
SCHEDULERS = {
    "UniPC": (UniPCMultistepScheduler,
              lambda shift: {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift}),
    "Euler": (FlowMatchEulerDiscreteScheduler, lambda shift: {"shift": shift}),
    "DPM++ 2M": (DPMSolverMultistepScheduler,
                 lambda shift: {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift,
                                "algorithm_type": "dpmsolver++", "solver_order": 2}),
}

class _WanDirect(EngineConformance):
    classes: dict[str, type] = {}

    def direct(self, task, request, model_dir):
        pipe, checkpoint_config = direct_pipe(self.classes[task], model_dir)
        scheduler_cls, flags = SCHEDULERS[request["sampler"]]
        pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags(request["flow_shift"]))
        kwargs = dict(prompt=request["prompt"], negative_prompt=request["negative_prompt"] or None,
                      height=request["height"], width=request["width"], num_frames=request["num_frames"],
                      num_inference_steps=request["steps"], guidance_scale=request["cfg"], output_type="pil",
                      generator=torch.Generator("cpu").manual_seed(request["seed"]))
        if "boundary_ratio" in request:
            pipe.register_to_config(boundary_ratio=request["boundary_ratio"])
            kwargs["guidance_scale_2"] = request["cfg_2"]
        size = (request["width"], request["height"])
        if task in ("img2vid", "flf2vid"):
            kwargs["image"] = Image.open(request["init_image"]).convert("RGB").resize(size, Image.Resampling.LANCZOS)
        if task == "flf2vid":
            kwargs["last_image"] = Image.open(request["last_image"]).convert("RGB").resize(size,
                                                                                           Image.Resampling.LANCZOS)
        return pipe(**kwargs).frames[0]


# One small request per task. Sizes, frames and steps are tiny; samplers differ across cases so
# each flow sampler is compared with diffusers at least once.
TI2V_5B_CASES = {
    # txt2vid takes the sampler (UniPC), cfg and flow shift from the preset
    "txt2vid": {"prompt": "a red fox running in snow", "negative_prompt": "blurry", "width": 64, "height": 32,
                "num_frames": 9, "steps": 2, "seed": 42},
    "img2vid": {"prompt": "a fox, winter", "init_image": "{tmp}/init.png", "width": 32, "height": 32,
                "num_frames": 5, "steps": 2, "seed": 7, "sampler": "Euler"},
}
# flow_shift 12 (preset), 4 DPM++ 2M steps: timesteps 999, 972, 922, 799 -> boundary 875: 3 high-noise steps, 1 low
T2V_A14B_CASES = {
    "txt2vid": {"prompt": "a lighthouse at dawn", "negative_prompt": "static", "width": 32, "height": 16,
                "num_frames": 5, "steps": 4, "seed": 5, "sampler": "DPM++ 2M"},
}
# flow_shift 5 (preset), 3 UniPC steps: timesteps 999, 909, 714 -> boundary 900: 2 high-noise steps, 1 low
I2V_A14B_CASES = {
    "img2vid": {"prompt": "the fox turns its head", "init_image": "{tmp}/init.png", "width": 32, "height": 32,
                "num_frames": 5, "steps": 3, "seed": 9, "cfg_2": 2.0},
    # first and last frame of other sizes (64x64, 32x32), both resized to 48x32; 3 Euler steps at shift 5, so that
    # both experts run and a lower boundary_ratio moves a step from one to the other
    "flf2vid": {"prompt": "the fox walks away", "init_image": "{tmp}/init.png", "last_image": "{tmp}/small.png",
                "width": 48, "height": 32, "num_frames": 5, "steps": 3, "seed": 11, "sampler": "Euler"},
}

VIDEO_BAD_REQUESTS = [
    ("frames_not_4k_plus_1", {"num_frames": 10}, "num_frames"),
    ("flow_engine_rejects_a1111_sampler", {"sampler": "DDIM"}, "sampler"),
    ("no_karras_for_flow", {"sampler": "DPM++ 2M", "scheduler": "Karras"}, "scheduler"),
    ("flow_shift_wrong_type", {"flow_shift": "5"}, "flow_shift"),
    ("unknown_key", {"num_frame": 9}, "did you mean 'num_frames'"),
]


def _bad(task: str, extra: list[tuple[str, dict, str]]) -> list[tuple[str, str, dict, str]]:
    base = {"prompt": "x"} if task == "txt2vid" else {"prompt": "x", "init_image": "{tmp}/init.png"}
    return [(name, task, {**base, **fields}, expect) for name, fields, expect in VIDEO_BAD_REQUESTS + extra]


class TestWanTI2V5B(_WanDirect):
    engine = "wan_ti2v_5b"
    cases = TI2V_5B_CASES
    classes = {"txt2vid": WanPipeline, "img2vid": WanImageToVideoPipeline}
    bad_requests = _bad("txt2vid", [
        ("size_off_stride_32", {"width": 720}, "nearest valid values: 704 or 736"),
        ("cfg_2_is_for_two_experts", {"cfg_2": 3.0}, "cfg_2"),
        ("txt2vid_with_init_image", {"init_image": "{tmp}/init.png"}, "init_image"),
    ]) + [
        ("img2vid_without_init_image", "img2vid", {"prompt": "x"}, "init_image"),
        ("bad_image_path", "img2vid", {"prompt": "x", "init_image": "{tmp}/missing.png"}, "init_image"),
        ("img2vid_size_off_stride", "img2vid", {"prompt": "x", "init_image": "{tmp}/init.png", "height": 720},
         "nearest valid values: 704 or 736"),
    ]


class TestWanT2VA14B(_WanDirect):
    engine = "wan_t2v_14b"
    cases = T2V_A14B_CASES
    classes = {"txt2vid": WanPipeline}
    bad_requests = _bad("txt2vid", [
        ("size_off_stride_16", {"width": 1000}, "nearest valid values: 992 or 1008"),
        ("txt2vid_with_init_image", {"init_image": "{tmp}/init.png"}, "wan_i2v_14b"),
        ("boundary_out_of_range", {"boundary_ratio": 1.0}, "boundary_ratio"),
        ("cfg_2_ignored_without_guidance", {"cfg": 1.0, "cfg_2": 3.0}, "cfg_2"),
    ]) + [("no_img2vid_task", "img2vid", {"prompt": "x", "init_image": "{tmp}/init.png"}, "txt2vid")]


class TestWanI2VA14B(_WanDirect):
    engine = "wan_i2v_14b"
    cases = I2V_A14B_CASES
    classes = {"img2vid": WanImageToVideoPipeline, "flf2vid": WanImageToVideoPipeline}
    fields_exempt = {"last_image": "the call's last_image: the flf2vid case is pixel-equal to a direct call with it"}
    bad_requests = _bad("img2vid", [
        ("size_off_stride_16", {"width": 40}, "nearest valid values: 32 or 48"),
        ("cfg_2_out_of_range", {"cfg_2": -1.0}, "cfg_2"),
    ]) + [
        ("img2vid_without_init_image", "img2vid", {"prompt": "x"}, "init_image"),
        ("no_txt2vid_task", "txt2vid", {"prompt": "x"}, "img2vid"),
        ("flf2vid_without_last_image", "flf2vid", {"prompt": "x", "init_image": "{tmp}/init.png"}, "last_image"),
        ("flf2vid_bad_last_image", "flf2vid", {"prompt": "x", "init_image": "{tmp}/init.png",
                                               "last_image": "{tmp}/missing.png"}, "last_image"),
        ("flf2vid_one_frame", "flf2vid", {"prompt": "x", "init_image": "{tmp}/init.png",
                                          "last_image": "{tmp}/small.png", "num_frames": 1},
         "num_frames: 1 leaves no room for a last frame"),
    ]


# -- behaviour beyond the shared suite ----------------------------------------------------------


def test_a14b_tiny_models_have_two_experts_and_the_boundary():
    t2v = WanPipeline.from_pretrained(tiny_model_dir("wan_t2v_14b"))
    i2v = WanImageToVideoPipeline.from_pretrained(tiny_model_dir("wan_i2v_14b"))
    assert (t2v.config.boundary_ratio, i2v.config.boundary_ratio) == (0.875, 0.9)
    for pipe, in_channels in ((t2v, 16), (i2v, 36)):  # I2V: 16 noise + 4 mask + 16 image latent channels
        assert pipe.transformer_2 is not None and not pipe.config.expand_timesteps
        for expert in (pipe.transformer, pipe.transformer_2):
            assert (expert.config.in_channels, expert.config.out_channels) == (in_channels, 16)
        assert not torch.equal(pipe.transformer.proj_out.weight, pipe.transformer_2.proj_out.weight)
        assert pipe.vae.config.z_dim == 16 and pipe.vae_scale_factor_spatial == 8
        assert pipe.transformer.config.text_dim == pipe.text_encoder.config.d_model
    assert i2v.image_encoder is None and i2v.image_processor is None  # Wan 2.2 I2V uses no CLIP
    assert 2 * i2v.vae.config.z_dim + i2v.vae_scale_factor_temporal == 36


def test_5b_tiny_model_has_the_wan22_vae_and_expand_timesteps():
    pipe = WanPipeline.from_pretrained(tiny_model_dir("wan_ti2v_5b"))
    assert pipe.config.expand_timesteps is True and pipe.transformer_2 is None
    assert pipe.vae.config.z_dim == 48 and pipe.vae.config.patch_size == 2 and pipe.vae.config.is_residual
    assert (pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal) == (16, 4)
    # the size rule the params enforce: VAE stride 16 x transformer patch 2
    assert pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1] == 32
    assert pipe.transformer.config.in_channels == pipe.transformer.config.out_channels == 48
    config = json.loads((tiny_model_dir("wan_ti2v_5b") / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "UniPCMultistepScheduler" and config["use_flow_sigmas"] is True
    assert config["prediction_type"] == "flow_prediction" and config["flow_shift"] == 5.0


@pytest.mark.parametrize("sampler, cls, flags", [
    ("UniPC", "UniPCMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True,
                                          "flow_shift": 7.0}),
    ("Euler", "FlowMatchEulerDiscreteScheduler", {"shift": 7.0}),
    ("DPM++ 2M", "DPMSolverMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True,
                                                 "flow_shift": 7.0, "algorithm_type": "dpmsolver++"}),
])
def test_effective_scheduler_is_the_flow_variant_with_the_requested_shift(tmp_path, sampler, cls, flags):
    request = {"prompt": "x", "width": 32, "height": 32, "num_frames": 5, "steps": 2, "seed": 1,
               "sampler": sampler, "flow_shift": 7.0}
    info = run_json("wan_ti2v_5b", "txt2vid", request, tmp_path / "out", "tiny", "--format", "frames")["info"]
    assert info["sampler_effective"] == sampler
    assert info["scheduler_effective"]["class"] == cls and info["scheduler_effective"]["schedule"] == "Automatic"
    assert flags.items() <= info["scheduler_effective"]["flags"].items()
    assert info["scheduler_class"] == cls  # the scheduler the call ran with
    for key, value in flags.items():
        assert info["scheduler_config"][key] == value


def test_preset_fills_only_what_the_request_leaves_out(tmp_path):
    request = {"prompt": "x", "width": 32, "height": 16, "num_frames": 5, "steps": 2, "seed": 1, "flow_shift": 3.0}
    info = run_json("wan_t2v_14b", "txt2vid", request, tmp_path / "out", "tiny", "--format", "frames")["info"]
    assert info["request"]["num_frames"] == 5 and info["request"]["flow_shift"] == 3.0  # not 81 / 12.0
    assert info["applied_preset_patch"] == {"fps": 16.0, "cfg": 4.0, "cfg_2": 3.0, "boundary_ratio": 0.875,
                                            "sampler": "UniPC"}
    assert info["scheduler_effective"]["flags"]["flow_shift"] == 3.0
    assert info["frames"] == {"path": str(Path(info["outputs"][0]).parent), "count": 5, "fps": 16.0}
    assert Path(info["preset_files"][0]).name == "txt2vid.yaml"


@pytest.mark.parametrize("boundary_ratio", [0.875, 0.95])
def test_boundary_ratio_of_the_request_decides_which_expert_runs(tmp_path, boundary_ratio):
    request = {"prompt": "x", "width": 32, "height": 16, "num_frames": 5, "steps": 4, "seed": 1,
               "boundary_ratio": boundary_ratio, "cfg": 2.0}
    run_json("wan_t2v_14b", "txt2vid", {**request, "steps": 1}, tmp_path / "warm", "tiny", "--format", "frames")
    pipe = loaded_family("wan_t2v_14b").base
    calls = {"transformer": 0, "transformer_2": 0}
    hooks = [getattr(pipe, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
             for name in calls]
    try:
        run_json("wan_t2v_14b", "txt2vid", request, tmp_path / "out", "tiny", "--format", "frames")
    finally:
        for hook in hooks:
            hook.remove()
    # the same schedule, computed independently: shift 12 over 4 steps -> t = 999, 973, 923, 800
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=12.0)
    scheduler.set_timesteps(4)
    high = int((scheduler.timesteps >= boundary_ratio * 1000).sum())
    assert (high, 4 - high) == ((3, 1) if boundary_ratio == 0.875 else (2, 2))
    assert calls == {"transformer": 2 * high, "transformer_2": 2 * (4 - high)}  # x2: cond + uncond (cfg > 1)
    assert pipe.config.boundary_ratio == 0.875  # the run set it on its own view, not on the cached pipeline


def test_img2vid_resizes_init_image_to_the_frame_size_and_says_so(tmp_path):
    write_test_image(tmp_path / "init.png", (48, 40), seed=3)
    result = run_json("wan_i2v_14b", "img2vid", {"prompt": "x", "init_image": str(tmp_path / "init.png"),
                                                 "width": 32, "height": 16, "num_frames": 5, "steps": 2, "seed": 1},
                      tmp_path / "out", "tiny", "--format", "frames")
    assert Image.open(result["files"][0]).size == (32, 16)
    assert result["info"]["notes"]["resized"]["init_image"] == {"from": [48, 40], "to": [32, 16],
                                                                 "resample": "lanczos"}


def test_half_precision_keeps_the_vae_in_float32_across_task_pipelines(tmp_path):
    write_test_image(tmp_path / "init.png", (32, 32), seed=1)
    request = {"prompt": "x", "width": 32, "height": 32, "num_frames": 5, "steps": 1, "seed": 1}
    extra = ("--dtype", "bf16", "--format", "frames")
    first = run_json("wan_ti2v_5b", "txt2vid", request, tmp_path / "a", "tiny", *extra)["info"]
    # img2vid derives a second pipeline with from_pipe(dtype=bf16), which casts the shared VAE
    second = run_json("wan_ti2v_5b", "img2vid", {**request, "init_image": str(tmp_path / "init.png")},
                      tmp_path / "b", "tiny", *extra)["info"]
    family = loaded_family("wan_ti2v_5b")
    assert family.base.vae.dtype == torch.float32 and family.base.transformer.dtype == torch.bfloat16
    assert family.for_class(WanImageToVideoPipeline).vae is family.base.vae
    for info in (first, second):
        assert info["dtype"] == "bfloat16" and info["notes"]["vae_dtype"] == "float32"


def test_fp32_runs_have_no_vae_note(tmp_path):
    info = run_json("wan_ti2v_5b", "txt2vid", {"prompt": "x", "width": 32, "height": 32, "num_frames": 5,
                                               "steps": 1, "seed": 1}, tmp_path / "out", "tiny",
                    "--format", "frames")["info"]
    assert info["dtype"] == "float32" and "vae_dtype" not in info["notes"]


def test_a_model_of_another_wan_variant_is_refused(tmp_path):
    five_b = tiny_model_dir("wan_ti2v_5b")
    out = tmp_path / "out"
    result = cli_run(["run", "wan_t2v_14b", "txt2vid", "--model", str(five_b), "--out", str(out), "--quiet",
                      "--json", json.dumps({"prompt": "x", "width": 32, "height": 32, "num_frames": 5, "steps": 1})])
    assert result.exit_code == 2, result.stderr
    assert "not a Wan 2.2 T2V-A14B model: it has no transformer_2" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_wan_repo_id_replaces_the_default_repo(monkeypatch):
    from codex_core import get_engine
    from codex_core.testing import clear_registry

    monkeypatch.setenv("WAN_REPO_ID", "my-org/Wan2.2-mirror")
    clear_registry()
    try:
        assert {get_engine(k).default_repo for k in ("wan_ti2v_5b", "wan_t2v_14b", "wan_i2v_14b")} == {
            "my-org/Wan2.2-mirror"}
        monkeypatch.delenv("WAN_REPO_ID")
        clear_registry()
        assert get_engine("wan_t2v_14b").default_repo == "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
    finally:
        clear_registry()


def test_diffusers_alone_would_round_frames_and_sizes_silently(tmp_path):
    """Why validation comes first: the pipeline itself only warns and changes what was asked."""
    pipe, _ = direct_pipe(WanPipeline, tiny_model_dir("wan_ti2v_5b"))
    frames = pipe(prompt="x", height=48, width=32, num_frames=6, num_inference_steps=1, output_type="pil",
                  generator=torch.Generator("cpu").manual_seed(0)).frames[0]
    assert len(frames) == 5 and frames[0].size == (32, 32)  # asked: 6 frames of 32x48
    result = cli_run(["run", "wan_ti2v_5b", "txt2vid", "--model", "tiny", "--out", str(tmp_path / "out"),
                      "--json", json.dumps({"prompt": "x", "height": 48, "width": 32, "num_frames": 6})])
    assert result.exit_code == 2
    assert "nearest valid values: 5 or 9" in result.stderr and "nearest valid values: 32 or 64" in result.stderr


@pytest.mark.parametrize("engine, task, expected", [
    ("wan_ti2v_5b", "txt2vid", {"width": 1280, "height": 704, "num_frames": 121, "fps": 24.0, "steps": 50,
                                "cfg": 5.0, "flow_shift": 5.0, "sampler": "UniPC"}),
    ("wan_ti2v_5b", "img2vid", {"width": 1280, "height": 704, "num_frames": 121, "fps": 24.0, "steps": 50,
                                "cfg": 5.0, "flow_shift": 5.0, "sampler": "UniPC"}),
    ("wan_t2v_14b", "txt2vid", {"width": 1280, "height": 720, "num_frames": 81, "fps": 16.0, "steps": 40,
                                "cfg": 4.0, "cfg_2": 3.0, "flow_shift": 12.0, "boundary_ratio": 0.875,
                                "sampler": "UniPC"}),
    ("wan_i2v_14b", "img2vid", {"width": 1280, "height": 720, "num_frames": 81, "fps": 16.0, "steps": 40,
                                "cfg": 3.5, "cfg_2": 3.5, "flow_shift": 5.0, "boundary_ratio": 0.9,
                                "sampler": "UniPC"}),
    ("wan_i2v_14b", "flf2vid", {"width": 1280, "height": 720, "num_frames": 81, "fps": 16.0, "steps": 40,
                                "cfg": 3.5, "cfg_2": 3.5, "flow_shift": 5.0, "boundary_ratio": 0.9,
                                "sampler": "UniPC"}),
])
def test_presets_are_the_wan_authors_defaults(engine, task, expected):
    """The Wan 2.2 README and wan/configs/*.py (github.com/Wan-Video/Wan2.2), as the presets' comments say."""
    from codex_core import get_engine, preset_values

    assert preset_values(get_engine(engine), task) == expected


def test_the_5b_builder_at_the_real_depth_changes_only_the_block_count(tmp_path):
    """bench/speed.py measures the step caches on the tiny 5B at the real model's depth (a block cache's
    saving depends on it): the same tiny model but for the transformer's num_layers, read from the
    reference config the plugin ships."""
    from codex_diffusers import reference_config_dir
    from codex_wan.tiny import build_ti2v_5b

    real = json.loads((reference_config_dir("wan_ti2v_5b") / "transformer" / "config.json").read_text())
    assert real["num_layers"] == 30
    build_ti2v_5b(tmp_path, num_layers=real["num_layers"])
    assert_configs_differ_only(tmp_path, "wan_ti2v_5b", {"num_layers": 30})
