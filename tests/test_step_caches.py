"""Step caches (the ``cache`` request field) on every DiT engine: each type runs, and changes the number
of attention computations in the transformer as configured (counted on the attention projections,
which a skipped block or a predicted attention never reaches). A setting that skips nothing gives the
uncached pixels, and a run after a cached run gives them too: the hooks are gone.
"""

from __future__ import annotations

import numpy as np
import pytest

from codex_core import RunOptions, registry, run
from codex_core.errors import ParamError
from codex_core.model_cache import cache as model_cache
from codex_diffusers.testing import AttentionCalls

pytestmark = pytest.mark.slow

STEPS = 6
REQUESTS = {
    "flux": ("txt2img", {"prompt": "x", "width": 32, "height": 32, "steps": STEPS, "seed": 3,
                         "max_sequence_length": 16}),
    "wan_ti2v_5b": ("txt2vid", {"prompt": "x", "width": 32, "height": 32, "num_frames": 5, "steps": STEPS, "seed": 3}),
    "hunyuan_video": ("txt2vid", {"prompt": "x", "width": 32, "height": 16, "num_frames": 5, "steps": STEPS,
                                  "seed": 3}),
    "ltx_video": ("txt2vid", {"prompt": "x", "width": 64, "height": 32, "num_frames": 9, "steps": STEPS, "seed": 3}),
    "qwen_image": ("txt2img", {"prompt": "x", "width": 32, "height": 32, "steps": STEPS, "seed": 3,
                               "max_sequence_length": 16}),
}
# (cache, skips): a setting that skips nothing, and one that skips, per type
SETTINGS = {
    "first_block": ({"type": "first_block", "threshold": 1e-9}, {"type": "first_block", "threshold": 1.0}),
    "taylorseer": ({"type": "taylorseer", "cache_interval": 1, "disable_cache_before_step": 0},
                   {"type": "taylorseer", "cache_interval": 3, "disable_cache_before_step": 1}),
    "magcache": ({"type": "magcache", "calibrate": True},
                 {"type": "magcache", "threshold": 1.0, "max_skip_steps": 2, "retention_ratio": 0.0,
                  "mag_ratios": [1.0] * STEPS}),
    "pab": ({"type": "pab", "spatial_attention_block_skip_range": 2, "timestep_skip_range": [0, 1]},
            {"type": "pab", "spatial_attention_block_skip_range": 2, "cross_attention_block_skip_range": 2,
             "timestep_skip_range": [0, 1000]}),
}


def frames(result) -> np.ndarray:
    if result.files[0].suffix == ".png":
        from PIL import Image

        return np.asarray(Image.open(result.files[0]))
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(result.files[0]))
    next(reader)
    return np.stack([np.frombuffer(frame, np.uint8) for frame in reader])


@pytest.fixture(scope="module")
def roomy_cache():
    model_cache.configure(max_models=len(REQUESTS))
    yield
    model_cache.configure()


def run_counted(engine: str, request: dict, out) -> tuple[int, np.ndarray, dict]:
    task, base = REQUESTS[engine]
    options = RunOptions(model="tiny", out=out, quiet=True, formats=("png",) if task == "txt2img" else ("mp4",))
    run(engine, task, {**base, "steps": 2}, options)  # loaded, so the counter can hook the model
    with AttentionCalls(engine) as counter:
        result = run(engine, task, request, options)
    return counter.calls, frames(result), result.info


@pytest.mark.parametrize("engine", sorted(REQUESTS))
def test_each_cache_type_changes_the_attention_count_as_configured(engine, roomy_cache, tmp_path):
    task, base = REQUESTS[engine]
    full, pixels, _ = run_counted(engine, base, tmp_path)
    assert full > 0
    for kind, (skips_nothing, skips) in SETTINGS.items():
        calls, same, info = run_counted(engine, {**base, "cache": skips_nothing}, tmp_path)
        assert info["notes"]["cache"]["type"] == kind and info["notes"]["cache"]["removed_after_run"]
        assert calls == full, (kind, "a setting that skips nothing", calls, full)
        assert np.array_equal(same, pixels), (kind, "a setting that skips nothing changed the output")
        calls, _, info = run_counted(engine, {**base, "cache": skips}, tmp_path)
        assert calls < full, (kind, calls, full)
        again, after, _ = run_counted(engine, base, tmp_path)  # the hooks are gone
        assert again == full and np.array_equal(after, pixels), kind


def test_first_block_skips_every_block_but_the_first_after_the_first_step(roomy_cache, tmp_path):
    engine = "wan_ti2v_5b"
    full, _, _ = run_counted(engine, REQUESTS[engine][1], tmp_path)
    calls, _, _ = run_counted(engine, {**REQUESTS[engine][1], "cache": SETTINGS["first_block"][1]}, tmp_path)
    blocks = len(model_cache.loaded(engine)[-1].families[next(iter(model_cache.loaded(engine)[-1].families))]
                 .base.transformer.blocks)
    per_block = full // (blocks * STEPS)  # attention projections per block per step (cfg passes included)
    # the first step in full; then the first block only
    assert calls == per_block * (blocks + (STEPS - 1)), (calls, full, blocks, per_block)


@pytest.mark.parametrize("cache, message", [
    ({"type": "first_block", "threshold": 0}, "cache.first_block.threshold"),
    ({"type": "bogus"}, "cache"),
    ({"type": "taylorseer", "disable_cache_before_step": 4, "disable_cache_after_step": 2}, "must be greater"),
    ({"type": "pab", "spatial_attention_block_skip_range": None}, "set at least one"),
    ({"type": "pab", "timestep_skip_range": [800, 100]}, "0 <= low < high <= 1000"),
    ({"type": "magcache"}, "cache.mag_ratios: engine wan_ti2v_5b has no built-in MagCache ratios"),
])
def test_bad_cache_settings_are_refused_before_loading(cache, message, tmp_path):
    task, base = REQUESTS["wan_ti2v_5b"]
    with pytest.raises(ParamError) as raised:
        run("wan_ti2v_5b", task, {**base, "cache": cache}, RunOptions(model="tiny", out=tmp_path, quiet=True))
    assert message in str(raised.value)
    assert not list(tmp_path.iterdir())


def test_flux_has_magcache_ratios_built_in(tmp_path):
    task, base = REQUESTS["flux"]
    result = run("flux", task, {**base, "cache": {"type": "magcache"}}, RunOptions(model="tiny", out=tmp_path,
                                                                                 quiet=True))
    assert result.info["notes"]["cache"]["type"] == "magcache"


def test_engines_without_a_transformer_have_no_cache_field():
    for key in ("sd15", "sdxl", "svd"):
        engine = registry.get_engine(key)
        for task in engine.tasks:
            assert "cache" not in engine.params_model(task).model_fields


def test_a_cache_on_a_denoiser_without_cache_hooks_is_refused_before_loading():
    """What a third-party SD 3 engine hit: SD3Transformer2DModel has no diffusers cache hooks, so enable_cache
    failed with an AttributeError after the model loaded. The kit reads the pipeline's own type hints instead."""
    from codex_core import Txt2ImgParams
    from codex_diffusers import CacheFields, DiffusersEngine

    class SD3Params(Txt2ImgParams, CacheFields):
        pass

    class SD3(DiffusersEngine):
        key = "sd3_in_test"
        tasks = {"txt2img": SD3Params}
        pipelines = {"txt2img": "StableDiffusion3Pipeline"}
        denoisers = ("transformer",)

    params = SD3Params(prompt="x", cfg=4.0, width=64, height=64, steps=2, cache={"type": "first_block"})
    problems = SD3().check_request("txt2img", params, None)
    assert problems == ["cache: engine sd3_in_test's transformer (SD3Transformer2DModel) takes no step cache "
                        "(diffusers' cache hooks, CacheMixin); leave cache out"]
    assert SD3().check_request("txt2img", params.model_copy(update={"cache": None}), None) == []
