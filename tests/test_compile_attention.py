"""--compile and --attention on the tiny DiT models, in-process: each reaches the denoiser's modules (counted
from the loaded model, recorded in info), the pixels stay those of the run without it, and replay takes
the options back from info.json."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from codex_core.orchestrator import RunOptions, run
from codex_core.replay import runtime_of
from codex_core.runtime import Runtime

REQUEST = {"prompt": "a lighthouse", "width": 32, "height": 32, "steps": 2, "seed": 11}


def pixels(result) -> np.ndarray:
    with Image.open(next(p for p in result.files if p.suffix == ".png")) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def flux(tmp_path, **runtime):
    return run("flux", "txt2img", dict(REQUEST, max_sequence_length=32),
               RunOptions(model="tiny", out=tmp_path, quiet=True, runtime=Runtime(device="cpu", **runtime)))


def test_an_attention_backend_reaches_every_attention_module_and_keeps_the_pixels(tmp_path):
    plain = flux(tmp_path / "plain")
    math = flux(tmp_path / "math", attention="_native_math")
    info = math.info
    # the tiny Flux has one double and one single block: two attention modules, both on the backend
    assert info["attention"] == {"backend": "_native_math", "attention_modules": {"transformer": 2}}
    assert plain.info["attention"] is None
    assert np.abs(pixels(math) - pixels(plain)).max() <= 2  # the math kernel vs SDPA's: float rounding only
    # the backend is the model's own: diffusers' process-wide default is put back for other models
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    assert _AttentionBackendRegistry.get_active_backend()[0].value == "native"


def test_regional_compile_compiles_the_repeated_blocks_and_keeps_the_pixels(tmp_path):
    plain = flux(tmp_path / "plain")
    # the eager backend: dynamo traces the blocks for real, without a C++ toolchain's build time
    compiled = flux(tmp_path / "compiled", compile="regional", compile_backend="eager")
    record = compiled.info["compile"]
    assert record["mode"] == "regional" and record["backend"] == "eager"
    assert record["modules"] == {"transformer": {"how": "regional",
                                                 "blocks": ["FluxTransformerBlock", "FluxSingleTransformerBlock"]}}
    assert np.array_equal(pixels(compiled), pixels(plain))


def test_replay_takes_the_runtime_options_back_from_info():
    info = {"device": "cuda", "dtype": "bfloat16", "offload": "auto", "vae": "tiled+sliced", "weights": "fp8",
            "compile": {"mode": "regional", "backend": "inductor", "modules": {}},
            "attention": {"backend": "flash", "attention_modules": {"transformer": 40}}}
    assert runtime_of(info) == Runtime(device="cuda", dtype="bfloat16", offload="auto",
                                       vae="tiled+sliced", weights="fp8", compile="regional", attention="flash")
    # a run recorded before --vae-decode: its vae_tiling flag
    old = runtime_of({"device": "cpu", "dtype": "float32", "offload": "none", "vae_tiling": True},
                     {"dtype": "fp16", "allow_pickle": True})
    assert old == Runtime(device="cpu", dtype="fp16", vae="tiled", allow_pickle=True)


@pytest.mark.parametrize("flag, value", [("--compile-backend", "no such!"), ("--attention", "sage_hub")])
def test_bad_values_name_the_option(flag, value):
    from codex_core.cli.options import runtime_from
    from codex_core.errors import UsageError

    names = {"--compile-backend": "compile_backend", "--attention": "attention"}
    with pytest.raises(UsageError, match=flag):
        runtime_from({names[flag]: value})
