"""ltx2 on a tiny random-weight LTX-2: both tasks equal a direct diffusers call, frame for frame and sample for sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    LTX2ImageToVideoPipeline,
    LTX2Pipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    EngineConformance,
    assert_tiny_matches_reference,
    cli_run,
    direct_pipe,
    pytest_generate_tests,
    run_json,
    tiny_model_dir,
    write_test_image,
)
from codex_ltx.ltx2 import LTX2

# What the flow sampler names must mean here, written out independently of codex's table.
FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
SCHEDULERS = {"Euler": (FlowMatchEulerDiscreteScheduler, {}), "UniPC": (UniPCMultistepScheduler, FLOW_SIGMAS)}
CLASSES = {"txt2vid": LTX2Pipeline, "img2vid": LTX2ImageToVideoPipeline}
SMALL = {"width": 64, "height": 64, "num_frames": 9, "steps": 2, "max_sequence_length": 128}


def direct_output(task: str, request: dict, model_dir, prepare=None):
    """The same call on diffusers, spelled out: the guidance codex promises (the sound's modality and rescale terms
    equal to the video's, spatio-temporal guidance off, LTX-2.0's per-modality cross-attention timestep).
    ``prepare(pipe)``: a change to the pipeline first (a LoRA), made on a pipeline of its own: the shared one that
    direct_pipe caches must stay as the checkpoint is for the other tests, whatever order they run in."""
    if prepare is None:
        pipe, checkpoint_config = direct_pipe(CLASSES[task], model_dir)
    else:
        pipe = CLASSES[task].from_pretrained(model_dir)
        pipe.set_progress_bar_config(disable=True)
        checkpoint_config = dict(pipe.scheduler.config)
        prepare(pipe)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(prompt=request["prompt"], negative_prompt=request["negative_prompt"] or None,
                  width=request["width"], height=request["height"], num_frames=request["num_frames"],
                  frame_rate=request["fps"], num_inference_steps=request["steps"], guidance_scale=request["cfg"],
                  audio_guidance_scale=request["audio_cfg"], modality_scale=request["modality_scale"],
                  audio_modality_scale=request["modality_scale"], guidance_rescale=request["guidance_rescale"],
                  audio_guidance_rescale=request["guidance_rescale"], stg_scale=0.0, audio_stg_scale=0.0,
                  spatio_temporal_guidance_blocks=None, use_cross_timestep=False,
                  max_sequence_length=request["max_sequence_length"],
                  generator=torch.Generator("cpu").manual_seed(request["seed"]))
    if task == "img2vid":
        image = Image.open(request["init_image"]).convert("RGB")
        kwargs["image"] = image.resize((request["width"], request["height"]), Image.Resampling.LANCZOS)
        kwargs["image_crf"] = request["image_crf"]
    return pipe(**kwargs)


class TestLTX2(EngineConformance):
    engine = "ltx2"
    cases = {
        # sampler (Euler), the guidance settings and the negative prompt come from the preset
        "txt2vid": {"prompt": "a red fox barking in snow", **SMALL, "fps": 24.0, "seed": 42},
        # UniPC with flow sigmas, no modality guidance, an init image resized to the frame size and re-encoded
        # at the preset's CRF 33 (PyAV) as diffusers does
        "img2vid": {"prompt": "the fox turns its head", "init_image": "{tmp}/init.png", **SMALL, "fps": 12.0,
                    "seed": 7, "sampler": "UniPC", "modality_scale": 1.0, "negative_prompt": ""},
    }
    bad_requests = [
        ("frames_not_8k_plus_1", "txt2vid", {"prompt": "x", "num_frames": 10}, "nearest valid values: 9 or 17"),
        ("size_off_stride", "txt2vid", {"prompt": "x", "width": 720}, "nearest valid values: 704 or 736"),
        ("window_off_the_registers", "txt2vid", {"prompt": "x", "max_sequence_length": 200},
         "nearest valid values: 128 or 256"),
        ("dpm_takes_no_sigmas", "txt2vid", {"prompt": "x", "sampler": "DPM++ 2M"}, "allowed: Euler, UniPC"),
        ("unknown_key", "txt2vid", {"prompt": "x", "stg_scale": 1.0}, "stg_scale: unknown field"),
        ("init_image_on_txt2vid", "txt2vid", {"prompt": "x", "init_image": "{tmp}/init.png"}, "init_image"),
        ("image_crf_on_txt2vid", "txt2vid", {"prompt": "x", "image_crf": 0}, "image_crf"),
        ("img2vid_without_init_image", "img2vid", {"prompt": "x"}, "init_image: required field is missing"),
        ("audio_cfg_below_1", "txt2vid", {"prompt": "x", "audio_cfg": 0.5}, "audio_cfg"),
        ("one_video_per_request", "txt2vid", {"prompt": "x", "batch_size": 2}, "batch_size"),
        ("no_steps", "txt2vid", {"prompt": "x", "steps": 0}, "steps: got 0"),
        # one step: NaN frames and sound in diffusers (the terminal stretch divides by zero)
        ("one_step", "txt2vid", {"prompt": "x", "steps": 1}, "steps: got 1"),
        # one latent pixel: the VAE decoder's reflection padding fails in diffusers
        ("below_64_px", "txt2vid", {"prompt": "x", "width": 32}, "width: got 32"),
    ]
    field_changes = {"max_sequence_length": 256}

    def direct(self, task, request, model_dir):
        return direct_output(task, request, model_dir).frames[0]


# -- the sound ------------------------------------------------------------------------------------------


@pytest.fixture
def outputs(monkeypatch):
    """The VideoOutputs the engine hands to the exporters, as they are (the samples before any encoding)."""
    seen, real = [], LTX2.output

    def recording(self, result, job, arguments):
        seen.append(real(self, result, job, arguments))
        return seen[-1]

    monkeypatch.setattr(LTX2, "output", recording)
    return seen


@pytest.mark.parametrize("task", ["txt2vid", "img2vid"])
def test_the_sound_equals_the_direct_call_sample_for_sample(task, tmp_path, outputs):
    request = {**TestLTX2.cases[task], "init_image": str(write_test_image(tmp_path / "init.png", (64, 64), seed=1))}
    if task == "txt2vid":
        del request["init_image"]
    result = run_json("ltx2", task, request, tmp_path / "out", "tiny")
    expected = direct_output(task, result["info"]["request"], tiny_model_dir("ltx2")).audio[0].float().numpy()
    audio = outputs[-1].audio
    assert audio.samples.dtype == np.float32 and audio.samples.shape == expected.shape
    assert np.array_equal(audio.samples, expected)
    assert audio.sample_rate == 24000 and audio.channels == 2  # the vocoder's rate, stereo
    # the clip's length, num_frames / fps seconds (0.375 s at 24 fps, 0.75 s at 12), to the audio latent grid
    # (25 latents a second): fps sets how long the sound is
    assert abs(audio.duration - request["num_frames"] / request["fps"]) < 0.04 + 1 / 25


def test_presets_are_the_authors_settings():
    from codex_core import get_engine, preset_values

    expected = {"width": 768, "height": 512, "num_frames": 121, "fps": 24.0, "steps": 30, "cfg": 3.0,
                "audio_cfg": 7.0, "modality_scale": 3.0, "guidance_rescale": 0.7, "max_sequence_length": 1024,
                "negative_prompt": "worst quality, inconsistent motion, blurry, jittery, distorted", "sampler": "Euler"}
    assert preset_values(get_engine("ltx2"), "txt2vid") == expected
    assert preset_values(get_engine("ltx2"), "img2vid") == {**expected, "image_crf": 33}


def test_image_crf_without_pyav_is_refused_before_loading(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    request = {"prompt": "x", "init_image": str(write_test_image(tmp_path / "init.png", (64, 64), seed=1)), **SMALL}
    refused = cli_run(["run", "ltx2", "img2vid", "--model", "tiny", "--out", str(tmp_path / "a"),
                       "--json", json.dumps(request)])
    assert refused.exit_code == 2 and "image_crf: 33" in refused.stderr and "pip install av" in refused.stderr
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    ran = cli_run(["run", "ltx2", "img2vid", "--model", "tiny", "--out", str(tmp_path / "b"), "-q",
                   "--json", json.dumps({**request, "image_crf": 0})])
    assert ran.exit_code == 0, ran.stderr


# -- the tiny model and the diffusers behaviour our validation and sampler policy rest on (diffusers 0.42) -----


def test_tiny_model_is_the_reference_architecture():
    assert_tiny_matches_reference("ltx2")
    pipe, scheduler = direct_pipe(LTX2Pipeline, tiny_model_dir("ltx2"))
    assert (pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio) == (32, 8)
    assert (pipe.audio_vae_mel_compression_ratio, pipe.audio_vae_temporal_compression_ratio) == (4, 4)
    assert pipe.transformer.config.caption_channels == pipe.text_encoder.config.text_config.hidden_size
    assert scheduler["use_dynamic_shifting"] is True and scheduler["shift_terminal"] == 0.1


def test_diffusers_alone_would_decode_fewer_frames_silently():
    pipe, config = direct_pipe(LTX2Pipeline, tiny_model_dir("ltx2"))
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    out = pipe("x", width=64, height=64, num_frames=12, num_inference_steps=2, max_sequence_length=128,
               guidance_scale=1.0, audio_guidance_scale=1.0, modality_scale=1.0, audio_modality_scale=1.0,
               generator=torch.Generator("cpu").manual_seed(0))
    assert len(out.frames[0]) == 9  # asked for 12: hence 8k+1 is checked before loading


def test_dpm_solver_is_left_out_because_it_fails_inside_diffusers():
    pipe, config = direct_pipe(LTX2Pipeline, tiny_model_dir("ltx2"))
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, **FLOW_SIGMAS, solver_order=2)
    with pytest.raises(ValueError, match="custom sigmas"):
        pipe("x", width=64, height=64, num_frames=9, num_inference_steps=2, max_sequence_length=128)


def test_a_window_off_the_registers_fails_inside_diffusers():
    pipe, config = direct_pipe(LTX2Pipeline, tiny_model_dir("ltx2"))
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    with pytest.raises(ValueError, match="divisible by the number of learnable registers"):
        pipe("x", width=64, height=64, num_frames=9, num_inference_steps=2, max_sequence_length=100)


# -- the sound in the files ---------------------------------------------------------------------------------


def test_the_mp4_carries_the_sound_as_aac_and_replay_check_is_identical(tmp_path, outputs):
    """The video stream has the asked frames and fps, the AAC stream the clip's duration and the samples the
    engine returned (as closely as AAC keeps them); info's hash is the PCM's; `replay --check` is identical."""
    import hashlib
    from pathlib import Path

    from codex_core import probe_video
    from codex_core.testing import decoded_audio, media_streams

    request = {**TestLTX2.cases["txt2vid"], "fps": 8.0}
    result = run_json("ltx2", "txt2vid", request, tmp_path / "out", "tiny")
    info, audio = result["info"], outputs[-1].audio
    mp4 = Path(info["video"]["path"])
    streams = media_streams(mp4)
    assert any("Video: h264" in line for line in streams) and any("Audio: aac" in line for line in streams), streams
    seen = probe_video(mp4)
    assert (seen["frames"], seen["fps"]) == (9, 8.0)
    assert info["audio"]["sha256"] == hashlib.sha256(audio.samples.astype("<f4").tobytes()).hexdigest()
    assert (info["audio"]["sample_rate"], info["audio"]["channels"]) == (24000, 2)
    decoded = np.frombuffer(decoded_audio(mp4, 2, 24000), "<f4").reshape(-1, 2).T
    # AAC frames pad the end: the decoded track is at least the clip and at most one 1024-sample frame longer
    assert audio.samples.shape[1] <= decoded.shape[1] <= audio.samples.shape[1] + 1024
    assert abs(decoded.shape[1] / 24000 - 9 / 8.0) < 0.1
    replay = cli_run(["replay", str(mp4.parent), "--out", str(tmp_path / "again"), "--quiet", "--check"])
    assert replay.exit_code == 0, replay.stderr
    check = json.loads(replay.stdout)["check"]
    assert check["identical"] is True and check["audio"]["identical"] is True


def test_audio_false_gives_a_silent_mp4(tmp_path):
    from pathlib import Path

    from codex_core.testing import media_streams

    result = run_json("ltx2", "txt2vid", {**TestLTX2.cases["txt2vid"], "audio": False}, tmp_path / "out", "tiny")
    streams = media_streams(Path(result["info"]["video"]["path"]))
    assert any("Video: h264" in line for line in streams)
    assert not any("Audio:" in line for line in streams), streams
    assert result["info"]["audio"]["dropped"] is True


def test_the_memory_plan_counts_the_sound_components():
    """`--offload auto` sizes every weight the pipeline puts on the device: the audio VAE, the vocoder and the text
    connectors too, not only the transformer, text encoder and video VAE."""
    from codex_diffusers import component_sizes, reference_config_dir

    sizes = component_sizes(reference_config_dir("ltx2"))
    assert {"audio_vae", "vocoder", "connectors", "transformer", "text_encoder", "vae"} <= set(sizes)
    assert all(sizes[name].parameters > 10e6 for name in ("audio_vae", "vocoder", "connectors"))


def test_a_lora_equals_diffusers_own_load_and_is_undone_after_the_run(tmp_path, outputs):
    """A PEFT LoRA on the tiny transformer's attention, loaded by codex, gives diffusers' own load_lora_weights
    call's frames and sound; the next run without it gives the plain run's."""
    from codex_diffusers.testing import write_transformer_lora

    lora = write_transformer_lora("LTX2Pipeline", tiny_model_dir("ltx2"), tmp_path, ["to_q", "to_k", "to_v"],
                                  "tiny_lora.safetensors")
    assert LTX2().lora_problem(lora) is None  # codex models lists it as an ltx2 LoRA
    request = TestLTX2.cases["txt2vid"]
    runs = {}
    for name, extra in (("plain", {}), ("styled", {"loras": [{"path": str(lora), "scale": 1.0}]}), ("again", {})):
        runs[name] = run_json("ltx2", "txt2vid", {**request, **extra}, tmp_path / name)
        runs[name]["frames"] = np.stack([np.asarray(frame) for frame in outputs[-1].frames])
        runs[name]["audio"] = outputs[-1].audio.samples
    assert not np.array_equal(runs["plain"]["frames"], runs["styled"]["frames"])
    assert np.array_equal(runs["plain"]["frames"], runs["again"]["frames"])
    assert np.array_equal(runs["plain"]["audio"], runs["again"]["audio"])
    assert runs["styled"]["info"]["notes"]["loras"]["count"] == 1

    def with_lora(pipe):
        pipe.load_lora_weights(str(tmp_path), weight_name="tiny_lora.safetensors", adapter_name="tiny")
        pipe.set_adapters(["tiny"], [1.0])

    direct = direct_output("txt2vid", runs["styled"]["info"]["request"], tiny_model_dir("ltx2"), with_lora)
    expected = np.stack([np.asarray(frame) for frame in direct.frames[0]])
    assert np.array_equal(expected, runs["styled"]["frames"])
    assert np.array_equal(direct.audio[0].float().numpy(), runs["styled"]["audio"])
