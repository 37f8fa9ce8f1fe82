"""`--weights fp8`: the denoisers stored in float8 (diffusers' layerwise casting), computed in the run's
dtype. Runs on a UNet and on DiT engines, keeps the weights in float8 across runs and tasks (from_pipe),
stays close to the full-precision output, and replays to the same pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from codex_core import RunOptions, Runtime, registry, run
from codex_core.model_cache import cache as model_cache
from codex_core.testing import cli_run, write_test_image

pytestmark = pytest.mark.slow

CASES = {
    "sd15": ("txt2img", {"prompt": "x", "width": 32, "height": 32, "steps": 3, "seed": 5}),
    "flux": ("txt2img", {"prompt": "x", "width": 32, "height": 32, "steps": 3, "seed": 5, "max_sequence_length": 16}),
    "wan_ti2v_5b": ("txt2vid", {"prompt": "x", "width": 32, "height": 32, "num_frames": 5, "steps": 3, "seed": 5}),
    "qwen_image": ("txt2img", {"prompt": "x", "width": 32, "height": 32, "steps": 3, "seed": 5,
                               "max_sequence_length": 16}),
}


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(Image.open(path), dtype=np.int16) for path in sorted(result.files)
                     if path.suffix == ".png"])


def block_linears(engine: str, weights: bool = False) -> dict[str, torch.dtype]:
    """The storage dtype of every attention and feed-forward Linear in the loaded denoisers: the bulk of a
    real model's weights (diffusers keeps the input/output projections, embeddings and norms in the
    compute dtype; on the tiny models those are a large share, hence no share is measured here)."""
    model = model_cache.loaded(engine)[-1]
    found = {}
    for family in model.families.values():
        for name in registry.get_engine(engine).denoisers:
            module = getattr(family.base, name, None)
            for qualified, layer in (module.named_modules() if module is not None else ()):
                if isinstance(layer, torch.nn.Linear) and any(part in qualified for part in ("attn", ".ff.", "ffn")):
                    found[f"{name}.{qualified}"] = layer.weight if weights else layer.weight.dtype
    return found


def all_float8(engine: str) -> bool:
    found = block_linears(engine)
    assert found, "no attention or feed-forward layers found"
    others = {name: dtype for name, dtype in found.items() if dtype != torch.float8_e4m3fn}
    assert not others, others
    return True


@pytest.mark.parametrize("engine", sorted(CASES))
def test_fp8_weights_run_stay_fp8_and_stay_close(engine, tmp_path):
    task, request = CASES[engine]
    formats = ("png",) if task == "txt2img" else ("frames",)
    full = run(engine, task, request, RunOptions(model="tiny", out=tmp_path / "full", quiet=True, formats=formats))
    options = RunOptions(model="tiny", out=tmp_path / "fp8", quiet=True, formats=formats,
                         runtime=Runtime(weights="fp8"))
    low = run(engine, task, request, options)
    assert low.info["weights"] == "fp8" and full.info["weights"] == "auto"
    assert all_float8(engine)  # stored in float8 between the layers' calls
    difference = np.abs(pixels(low) - pixels(full))
    assert difference.max() > 0  # the weights were rounded to float8
    assert difference.mean() < 16, difference.mean()  # ... and the output is still the model's
    again = run(engine, task, request, options)
    assert np.array_equal(pixels(again), pixels(low))


def test_fp8_weights_survive_a_task_switch(tmp_path):
    """img2img derives its pipeline from the txt2img one (from_pipe, which casts every module): the
    float8 denoiser is left to its hooks, so it is float8 after, and both tasks run."""
    options = RunOptions(model="tiny", out=tmp_path, quiet=True, runtime=Runtime(weights="fp8"))
    run("sd15", "txt2img", CASES["sd15"][1], options)
    image = write_test_image(tmp_path / "in.png", (32, 32), seed=1)
    result = run("sd15", "img2img", {"prompt": "x", "init_image": str(image), "steps": 4, "strength": 0.5,
                                     "seed": 2}, options)
    assert result.files and all_float8("sd15")


def test_replay_uses_the_recorded_weights_and_bad_storage_is_refused(tmp_path):
    out = tmp_path / "runs"
    made = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "-q", "--weights", "fp8", "--out", str(out),
                    "--json", json.dumps(CASES["sd15"][1])])
    assert made.exit_code == 0, made.stderr
    run_dir = json.loads(made.stdout)["run_dir"]
    replayed = cli_run(["replay", run_dir, "--check", "-q", "--out", str(tmp_path / "again")])
    assert replayed.exit_code == 0, replayed.stderr
    assert json.loads(replayed.stdout)["info"]["weights"] == "fp8"
    refused = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--weights", "fp4", "--out", str(tmp_path / "x"),
                       "--json", '{"prompt": "x"}'])
    assert refused.exit_code == 2 and "--weights: unknown storage 'fp4'; allowed: auto, fp8, fp8_e5m2" in refused.stderr
    assert not (tmp_path / "x").exists()


def int8_linears(engine: str) -> dict[str, str]:
    """The weight class of every attention and feed-forward Linear (torchao's int8 tensor when quantised)."""
    return {name: type(weight).__name__ for name, weight in block_linears(engine, weights=True).items()}


@pytest.mark.parametrize("engine", ["sd15", "flux"])
def test_int8_weights_quantise_every_denoiser_linear_and_stay_close(engine, tmp_path):
    """--weights int8 (torchao, the [int8] extra): every block Linear of the denoiser holds an int8 tensor, the
    output stays the model's, runs repeat exactly, and a task switch (from_pipe) keeps them int8."""
    task, request = CASES[engine]
    full = run(engine, task, request, RunOptions(model="tiny", out=tmp_path / "full", quiet=True))
    options = RunOptions(model="tiny", out=tmp_path / "int8", quiet=True, runtime=Runtime(weights="int8"))
    low = run(engine, task, request, options)
    assert low.info["weights"] == "int8"
    classes = int8_linears(engine)
    assert classes and all("Int8" in name for name in classes.values()), classes
    difference = np.abs(pixels(low) - pixels(full))
    assert difference.max() > 0 and difference.mean() < 16, (difference.max(), difference.mean())
    assert np.array_equal(pixels(run(engine, task, request, options)), pixels(low))
    if engine == "sd15":
        image = write_test_image(tmp_path / "in.png", (32, 32), seed=1)
        switched = run("sd15", "img2img", {"prompt": "x", "init_image": str(image), "steps": 4, "strength": 0.5,
                                           "seed": 2}, options)
        assert switched.files and all("Int8" in name for name in int8_linears("sd15").values())
