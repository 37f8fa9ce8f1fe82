"""svd on a tiny random-weight model: img2vid equals a direct diffusers call, frame for frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
from PIL import Image

from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    direct_pipe,
    EngineConformance,
    pytest_generate_tests,
    run_json,
    tiny_model_dir,
    write_test_image,
)

# What the sampler names in the case below must mean, written out independently of codex's table.
SCHEDULERS = {
    ("Euler", "Automatic"): (EulerDiscreteScheduler, {}),  # the checkpoint's config: Karras sigmas
    ("Euler", "Karras"): (EulerDiscreteScheduler, {"use_karras_sigmas": True, "timestep_spacing": "linspace"}),
}

class TestSVD(EngineConformance):
    engine = "svd"
    # 32x32 (4x4 latents), 3 frames decoded in chunks of 2, guidance on; sampler, min_cfg and the
    # rest come from the "svd" variant's preset. fps, motion bucket and noise augmentation differ
    # from the defaults, so a value the engine failed to pass on would change the pixels.
    cases = {
        "img2vid": {"init_image": "{tmp}/small.png", "width": 32, "height": 32, "num_frames": 3, "steps": 2,
                    "seed": 42, "fps": 8, "motion_bucket_id": 100, "noise_aug_strength": 0.05,
                    "decode_chunk_size": 2, "max_cfg": 2.5},
    }
    bad_requests = [
        ("frames_not_an_int", "img2vid", {"init_image": "{tmp}/small.png", "num_frames": "14"}, "num_frames"),
        ("size_off_stride", "img2vid", {"init_image": "{tmp}/small.png", "width": 100},
         "width: got 100: 100 is not a multiple of 8; nearest valid values: 96 or 104"),
        ("missing_init_image", "img2vid", {"num_frames": 3}, "init_image: required field is missing"),
        ("ddim", "img2vid", {"init_image": "{tmp}/small.png", "sampler": "DDIM"}, "sampler: 'DDIM' does not run with svd"),
        ("euler_a", "img2vid", {"init_image": "{tmp}/small.png", "sampler": "Euler a"}, "allowed: Euler\n"),
        ("schedule_not_for_svd", "img2vid", {"init_image": "{tmp}/small.png", "scheduler": "Exponential"},
         "allowed with 'Euler': Automatic, Karras"),
        ("prompt", "img2vid", {"init_image": "{tmp}/small.png", "prompt": "a cat"},
         "prompt: got 'a cat': SVD is conditioned on init_image alone"),
        ("cfg", "img2vid", {"init_image": "{tmp}/small.png", "cfg": 3.0}, "cfg: got 3.0: SVD's guidance ramps"),
        ("cfg_ramp_reversed", "img2vid", {"init_image": "{tmp}/small.png", "min_cfg": 3.0, "max_cfg": 2.0},
         "min_cfg: 3.0 is above max_cfg 2.0"),
        ("motion_bucket_out_of_range", "img2vid", {"init_image": "{tmp}/small.png", "motion_bucket_id": 5000},
         "motion_bucket_id"),
    ]

    def direct(self, task, request, model_dir):
        pipe, checkpoint_config = direct_pipe(StableVideoDiffusionPipeline, model_dir)
        scheduler_cls, flags = SCHEDULERS[(request["sampler"], request["scheduler"])]
        pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
        return pipe(
            Image.open(request["init_image"]).convert("RGB"), width=request["width"], height=request["height"],
            num_frames=request["num_frames"], num_inference_steps=request["steps"],
            min_guidance_scale=request["min_cfg"], max_guidance_scale=request["max_cfg"], fps=request["fps"],
            motion_bucket_id=request["motion_bucket_id"], noise_aug_strength=request["noise_aug_strength"],
            decode_chunk_size=request["decode_chunk_size"], generator=torch.Generator("cpu").manual_seed(request["seed"]),
        ).frames[0]


# -- behaviour beyond the shared suite ----------------------------------------------------------


def _fake_checkpoint(folder: Path, unet_config: dict) -> str:
    """Just the configs a variant is read from: enough for prepare(), which loads nothing."""
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableVideoDiffusionPipeline"}))
    (folder / "unet" / "config.json").write_text(json.dumps(unet_config))
    return str(folder)


def test_the_checkpoint_variant_sets_the_frame_count(tmp_path):
    from codex_core import RunOptions, UsageError, prepare

    init = write_test_image(tmp_path / "init.png", (32, 32))
    for frames, variant in ((25, "svd_xt"), (14, "svd")):
        model = _fake_checkpoint(tmp_path / variant, {"num_frames": frames})
        prepared = prepare("svd", "img2vid", {"init_image": init}, RunOptions(model=model))
        assert prepared.variant == variant and prepared.params.num_frames == frames
        assert prepared.preset_fill.files == [str(prepared.engine.presets_dir / variant / "img2vid.yaml")]
        assert prepare("svd", "img2vid", {"init_image": init, "num_frames": 5},
                       RunOptions(model=model)).params.num_frames == 5  # fill-only
    unknown = _fake_checkpoint(tmp_path / "other", {"num_frames": 16})
    with pytest.raises(UsageError, match="cannot tell which svd variant"):
        prepare("svd", "img2vid", {"init_image": init}, RunOptions(model=unknown))


def test_init_image_is_resized_to_the_output_size_and_says_so(tmp_path):
    write_test_image(tmp_path / "wide.png", (48, 32), seed=3)
    result = run_json("svd", "img2vid", {"init_image": str(tmp_path / "wide.png"), "width": 32, "height": 32,
                                         "num_frames": 2, "steps": 1, "seed": 1, "fps": 12.5,
                                         "decode_chunk_size": 2}, tmp_path / "out", "tiny", "--format", "frames,mp4")
    frames = [f for f in result["files"] if Path(f).parent.name == "frames"]
    assert len(frames) == 2 and all(Image.open(f).size == (32, 32) for f in frames)
    info = result["info"]
    assert info["notes"]["resized"]["init_image"] == {"from": [48, 32], "to": [32, 32], "resample": "lanczos"}
    assert info["video"]["fps"] == 12.5  # the export rate is the request's fps, fractional too


def test_tiny_model_has_the_real_architecture():
    from codex_core import get_engine

    detect_variant = get_engine("svd").detect_variant
    folder = tiny_model_dir("svd")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]  # as in the real repos
    pipe, scheduler = direct_pipe(StableVideoDiffusionPipeline, folder)
    assert pipe.vae_scale_factor == 8  # like the real VAE, so size rules and latent shapes match
    assert pipe.image_encoder.config.image_size == 224 and pipe.unet.config.num_frames == 14
    assert {k: scheduler[k] for k in ("timestep_type", "prediction_type", "use_karras_sigmas", "sigma_max")} == {
        "timestep_type": "continuous", "prediction_type": "v_prediction", "use_karras_sigmas": True,
        "sigma_max": 700.0}
    assert detect_variant(folder) == "svd"
