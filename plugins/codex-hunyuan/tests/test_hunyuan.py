"""hunyuan_video on tiny random-weight models: both tasks equal a direct diffusers call."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoImageToVideoPipeline,
    HunyuanVideoPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    direct_pipe,
    loaded_family,
    loaded_model,
    EngineConformance,
    cli_run,
    pixels,
    pytest_generate_tests,
    run_json,
    tiny_model_dir,
    write_test_image,
)

# What the flow sampler names must mean, written out independently of codex's table.
SCHEDULERS = {
    "Euler": lambda shift: (FlowMatchEulerDiscreteScheduler, {"shift": shift}),
    "UniPC": lambda shift: (UniPCMultistepScheduler,
                            {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift}),
}
# The tiny models' prompt templates and text lengths: those of diffusers' fast tests (get_dummy_inputs in
# tests/pipelines/hunyuan_video/test_hunyuan_video.py and test_hunyuan_image2video.py).
T2V_CALL = {"prompt_template": {"template": "{}", "crop_start": 0}, "max_sequence_length": 64}
I2V_CALL = {"prompt_template": {"template": "{}", "crop_start": 0, "image_emb_len": 49, "image_emb_start": 5,
                                "image_emb_end": 54}, "max_sequence_length": 64}

def direct_call(pipeline_cls, folder: Path, request: dict, num_frames: int, call: dict) -> list[Image.Image]:
    pipe, checkpoint_config = direct_pipe(pipeline_cls, folder)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]](request["flow_shift"])
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(prompt=request["prompt"], height=request["height"], width=request["width"], num_frames=num_frames,
                  num_inference_steps=request["steps"], guidance_scale=request["cfg"],
                  true_cfg_scale=request["true_cfg"],
                  negative_prompt=request["negative_prompt"] if request["true_cfg"] > 1 else None,
                  generator=torch.Generator("cpu").manual_seed(request["seed"]), **call)
    if pipeline_cls is HunyuanVideoImageToVideoPipeline:
        kwargs["image"] = Image.open(request["init_image"]).convert("RGB")
    return pipe(**kwargs).frames[0]


class TestHunyuanVideo(EngineConformance):
    engine = "hunyuan_video"
    cases = {
        # sampler (Euler), flow_shift (7.0) and cfg (6.0, embedded guidance) come from the preset
        "txt2vid": {"prompt": "a red fox in snow", "width": 32, "height": 16, "num_frames": 9, "fps": 8.0,
                    "steps": 2, "seed": 42},
        # the tiny I2V model is latent_concat (HunyuanVideo-I2V-33ch layout): 9 frames asked of codex
        # means 13 asked of diffusers, which drops 4; true CFG with a negative prompt, UniPC sampler
        "img2vid": {"prompt": "a fox turns its head", "init_image": "{tmp}/small.png", "width": 32, "height": 32,
                    "num_frames": 9, "fps": 12.0, "steps": 2, "seed": 7, "sampler": "UniPC", "flow_shift": 3.0,
                    "cfg": 1.0, "true_cfg": 3.0, "negative_prompt": "blurry"},
    }
    bad_requests = [
        ("frames_off_stride", "txt2vid", {"prompt": "x", "num_frames": 10}, "num_frames: got 10"),
        ("frames_nearest", "img2vid", {"prompt": "x", "init_image": "{tmp}/small.png", "num_frames": 10},
         "nearest valid values: 9 or 13"),
        ("size_off_stride", "txt2vid", {"prompt": "x", "width": 100}, "nearest valid values: 96 or 112"),
        ("size_off_stride_img2vid", "img2vid", {"prompt": "x", "init_image": "{tmp}/small.png", "height": 40},
         "height: got 40"),
        ("img2vid_without_init_image", "img2vid", {"prompt": "x"}, "init_image: required field is missing"),
        ("init_image_on_txt2vid", "txt2vid", {"prompt": "x", "init_image": "{tmp}/small.png"}, "init_image"),
        ("unsupported_sampler", "txt2vid", {"prompt": "x", "sampler": "DDIM"}, "sampler: 'DDIM' has no exact equivalent"),
        ("dpm_needs_sigmas", "img2vid", {"prompt": "x", "init_image": "{tmp}/small.png", "sampler": "DPM++ 2M"},
         "allowed: Euler, UniPC"),
        ("negative_prompt_without_true_cfg", "txt2vid", {"prompt": "x", "negative_prompt": "blurry"},
         "negative_prompt"),
        ("true_cfg_below_1", "txt2vid", {"prompt": "x", "true_cfg": 0.5}, "true_cfg"),
        ("flow_shift_zero", "txt2vid", {"prompt": "x", "flow_shift": 0.0}, "flow_shift"),
    ]

    def direct(self, task, request, model_dir):
        if task == "txt2vid":
            return direct_call(HunyuanVideoPipeline, model_dir, request, request["num_frames"], T2V_CALL)
        return direct_call(HunyuanVideoImageToVideoPipeline, model_dir / "i2v", request, request["num_frames"] + 4,
                           I2V_CALL)


# -- behaviour beyond the shared suite ----------------------------------------------------------


def _i2v_request(tmp_path: Path, **extra) -> dict:
    write_test_image(tmp_path / "init.png", (32, 16), seed=3)
    return {"prompt": "x", "init_image": str(tmp_path / "init.png"), "width": 32, "height": 16, "steps": 2,
            "seed": 5, **extra}


@pytest.mark.parametrize("num_frames", [1, 5])
def test_latent_concat_img2vid_exports_exactly_num_frames(tmp_path, num_frames):
    from codex_core import probe_video as probe

    result = run_json("hunyuan_video", "img2vid", _i2v_request(tmp_path, num_frames=num_frames), tmp_path / "out")
    info = result["info"]
    assert info["notes"]["image_condition_type"] == "latent_concat"
    assert info["notes"]["pipeline_num_frames"] == num_frames + 4  # diffusers drops the first 4 decoded frames
    assert probe(Path(info["video"]["path"]))["frames"] == info["video"]["frames"] == num_frames


def test_token_replace_checkpoint_gets_num_frames_and_embedded_guidance(tmp_path):
    """The layout of hunyuanvideo-community/HunyuanVideo-I2V: nothing dropped, cfg is embedded guidance."""
    from codex_hunyuan import tiny

    folder = tmp_path / "hunyuan-i2v-token-replace"
    tiny.build_i2v(folder, image_condition_type="token_replace")
    request = _i2v_request(tmp_path, num_frames=5, cfg=4.0)
    result = run_json("hunyuan_video", "img2vid", request, tmp_path / "out", str(folder), "--format", "frames")
    info = result["info"]
    assert info["notes"]["image_condition_type"] == "token_replace"
    assert "pipeline_num_frames" not in info["notes"] and "cfg_ignored_reason" not in info["notes"]
    ours = sorted(f for f in result["files"] if Path(f).parent.name == "frames")
    expected = direct_call(HunyuanVideoImageToVideoPipeline, folder, info["request"], 5, I2V_CALL)
    assert len(ours) == len(expected) == 5
    for mine, theirs in zip(ours, expected):
        assert np.array_equal(pixels(mine), pixels(theirs))


def test_cfg_without_guidance_embedding_is_noted_not_silent(tmp_path):
    info = run_json("hunyuan_video", "img2vid", _i2v_request(tmp_path, num_frames=1, cfg=6.0), tmp_path / "out")["info"]
    assert "no guidance embedding" in info["notes"]["cfg_ignored_reason"]


def test_each_task_rejects_the_other_tasks_checkpoint(tmp_path):
    tiny_dir = tiny_model_dir("hunyuan_video")
    t2v = tmp_path / "t2v"  # a copy: the tiny folder's own path is cached as the tiny model (both tasks)
    shutil.copytree(tiny_dir, t2v, ignore=shutil.ignore_patterns("i2v"))
    write_test_image(tmp_path / "init.png", (32, 16))
    cases = [("img2vid", t2v, {"prompt": "x", "init_image": str(tmp_path / "init.png")}, "HunyuanVideoPipeline"),
             ("txt2vid", tiny_dir / "i2v", {"prompt": "x"}, "HunyuanVideoImageToVideoPipeline")]
    for task, folder, request, holds in cases:
        out = tmp_path / f"out-{task}"
        request.update(width=32, height=16, num_frames=1, steps=1)
        result = cli_run(["run", "hunyuan_video", task, "--model", str(folder), "--out", str(out), "--quiet",
                          "--json", json.dumps(request)])
        assert result.exit_code == 2, result.stderr
        held = "a txt2vid" if task == "img2vid" else "an img2vid"
        assert f"is {held} checkpoint ({holds})" in result.stderr
        slot = "CODEX_MODEL_HUNYUAN_VIDEO_IMG2VID" if task == "img2vid" else "CODEX_MODEL_HUNYUAN_VIDEO"
        assert f"checkpoint slot ({slot})" in result.stderr
        assert not out.exists() or not any(out.iterdir())


def test_img2vid_has_its_own_checkpoint_slot(tmp_path, monkeypatch):
    i2v = tiny_model_dir("hunyuan_video") / "i2v"
    monkeypatch.setenv("CODEX_MODEL_HUNYUAN_VIDEO_IMG2VID", str(i2v))
    result = cli_run(["run", "hunyuan_video", "img2vid", "--out", str(tmp_path / "out"), "--quiet", "--json",
                      json.dumps(_i2v_request(tmp_path, num_frames=1, cfg=1.0))])
    assert result.exit_code == 0, result.stderr
    model = json.loads(result.stdout)["info"]["model"]
    assert model["path"] == str(i2v) and model["found_via"] == "CODEX_MODEL_HUNYUAN_VIDEO_IMG2VID"


def test_tiny_model_loads_each_task_pipeline_once_on_first_use(tmp_path):
    from codex_core.testing import clear_model_cache

    clear_model_cache()
    txt = {"prompt": "x", "width": 16, "height": 16, "num_frames": 1, "steps": 1, "seed": 1}
    first = run_json("hunyuan_video", "txt2vid", txt, tmp_path / "out")["info"]
    model = loaded_model("hunyuan_video")
    folders = model.folders
    assert set(model.families) == {folders["txt2vid"]} and first["timings"]["load"] > 0
    second = run_json("hunyuan_video", "img2vid", _i2v_request(tmp_path, num_frames=1, cfg=1.0), tmp_path / "out")
    assert second["info"]["model"]["reused_from_cache"] and second["info"]["timings"]["load"] > 0  # I2V loaded now
    assert set(model.families) == {folders["txt2vid"], folders["img2vid"]}
    assert type(loaded_family("hunyuan_video", "img2vid").base) is HunyuanVideoImageToVideoPipeline
    third = run_json("hunyuan_video", "txt2vid", txt, tmp_path / "out")["info"]
    assert third["timings"]["load"] == 0.0


@pytest.mark.parametrize("sampler, shift, cls, flags", [
    ("Euler", 5.0, "FlowMatchEulerDiscreteScheduler", {"shift": 5.0}),
    ("unipc", 2.5, "UniPCMultistepScheduler", {"flow_shift": 2.5, "use_flow_sigmas": True,
                                                "prediction_type": "flow_prediction"}),
])
def test_flow_sampler_takes_the_requested_shift(tmp_path, sampler, shift, cls, flags):
    request = {"prompt": "x", "width": 16, "height": 16, "num_frames": 1, "steps": 2, "seed": 1,
               "sampler": sampler, "flow_shift": shift}
    info = run_json("hunyuan_video", "txt2vid", request, tmp_path / "out")["info"]
    assert info["scheduler_effective"]["class"] == cls and info["scheduler_effective"]["flags"] == flags
    assert info["scheduler_class"] == cls and all(info["scheduler_config"][k] == v for k, v in flags.items())


def test_tiny_model_has_the_real_architecture():
    folder = tiny_model_dir("hunyuan_video")
    t2v = HunyuanVideoPipeline.from_pretrained(folder)
    i2v = HunyuanVideoImageToVideoPipeline.from_pretrained(folder / "i2v")
    for pipe in (t2v, i2v):  # like the real VAE, so frame and size rules match real checkpoints
        assert (pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal) == (8, 4)
    assert t2v.transformer.config.guidance_embeds and t2v.transformer.config.in_channels == 4
    assert i2v.transformer.config.image_condition_type == "latent_concat"
    assert i2v.transformer.config.in_channels == 9 and not i2v.transformer.config.guidance_embeds
    assert (i2v.tokenizer.pad_token_id, i2v.tokenizer.convert_tokens_to_ids("<image>")) == (100, 101)
    assert (i2v.text_encoder.config.pad_token_id, i2v.text_encoder.config.image_token_index) == (100, 101)
    assert json.loads((folder / "codex_tiny.json").read_text()) == T2V_CALL
    assert json.loads((folder / "i2v" / "codex_tiny.json").read_text()) == I2V_CALL
