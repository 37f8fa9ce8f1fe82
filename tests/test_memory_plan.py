"""``--offload auto``: the planner's choices for the real models on real device sizes, and the options'
checks and records on the tiny models (CPU: nothing is offloaded, and the plan says so).

The component sizes come from the configs the plugins ship (``reference_configs``: the real ones of
Wan 2.2 TI2V-5B and T2V-A14B, FLUX.1-dev, HunyuanVideo and SDXL), counted on the meta device, in the
dtype each component has on the GPU (bf16; the Wan VAE in float32; float8 denoisers with --weights fp8).
A device of N GB is taken as N GiB with 0.5 GiB already in use (the CUDA context).
"""

from __future__ import annotations

import json
from functools import lru_cache

import pytest
from click.testing import CliRunner

from codex_core import registry
from codex_core.cli import cli
from codex_diffusers.memory_plan import GIB, ComponentBytes, needed, plan
from codex_core.runtime import Runtime

DEVICES_GB = (8, 12, 16, 24, 48, 80)
GPU_DTYPE = {"wan_ti2v_5b": "bfloat16", "wan_t2v_14b": "bfloat16", "flux": "bfloat16", "hunyuan_video": "bfloat16",
             "sdxl": "float16"}
# (engine, --weights) -> the plan on each device size (offload mode / VAE decode). Reading a row: the mode
# is the fastest whose weights on the device plus the reserve (max(2 GiB, 10% of the device)) fit.
EXPECTED = {
    # UMT5-XXL 10.6 GiB + transformer 9.3 GiB + VAE (fp32) 2.6 GiB: all of it needs 24.9 GiB with the reserve
    ("wan_ti2v_5b", "auto"): ("group", "group", "model", "model", "none", "none"),
    ("wan_ti2v_5b", "fp8"): ("group", "group", "model", "none", "none", "none"),
    # two 26.6 GiB transformers: model offload from 48 GB, everything at 80
    ("wan_t2v_14b", "auto"): ("group", "group", "group", "group", "model", "none"),
    ("wan_t2v_14b", "fp8"): ("group", "group", "model", "model", "none", "none"),
    # the 22.2 GiB transformer alone does not fit 24 GB with its working memory
    ("flux", "auto"): ("group", "group", "group", "group", "none", "none"),
    ("flux", "fp8"): ("group", "group", "model", "none", "none", "none"),
    ("hunyuan_video", "auto"): ("group", "group", "group", "group", "none", "none"),
    ("hunyuan_video", "fp8"): ("group", "group", "group", "model", "none", "none"),
    ("sdxl", "auto"): ("model", "none", "none", "none", "none", "none"),
    ("sdxl", "fp8"): ("none", "none", "none", "none", "none", "none"),
}
# published sizes (billions of parameters) of the largest component, a check on the shipped configs
LARGEST = {"wan_ti2v_5b": ("text_encoder", 5.7), "wan_t2v_14b": ("transformer", 14.3), "flux": ("transformer", 11.9),
           "hunyuan_video": ("transformer", 12.8), "sdxl": ("unet", 2.57)}


@lru_cache(maxsize=None)
def sizes(engine: str):
    from codex_diffusers.sizes import component_sizes, reference_config_dir

    return reference_config_dir(engine), component_sizes(reference_config_dir(engine))


def components(engine: str, weights: str) -> list[ComponentBytes]:
    from codex_diffusers.configs import read_config
    from codex_diffusers.memory import blocks_of, device_bytes

    folder, found = sizes(engine)
    runtime = Runtime(device="cuda", dtype=GPU_DTYPE[engine], weights=weights)
    return [ComponentBytes(name, device_bytes(name, size.parameters, registry.get_engine(engine), runtime),
                           blocks_of(read_config(folder, f"{name}/config.json"))) for name, size in found.items()]


@pytest.mark.parametrize("engine, weights", list(EXPECTED), ids=[f"{e}-{w}" for e, w in EXPECTED])
def test_the_plan_for_real_models_on_each_device_size(engine, weights):
    parts = components(engine, weights)
    name, billions = LARGEST[engine]
    counted = sizes(engine)[1][name].parameters / 1e9
    assert abs(counted - billions) / billions < 0.05, f"{engine} {name}: {counted:.2f}B parameters"
    chosen = []
    for gb in DEVICES_GB:
        decided = plan(parts, "cuda:0", free_bytes=gb * GIB - GIB // 2, total_bytes=gb * GIB)
        assert decided.fits
        # the choice is the fastest mode that fits, and it does fit
        assert decided.needed_bytes[decided.offload] <= decided.free_bytes
        faster = ("none", "model", "group", "sequential")[:("none", "model", "group", "sequential").index(decided.offload)]
        assert all(decided.needed_bytes[mode] > decided.free_bytes for mode in faster)
        # offloading or little room left: the VAE decodes in tiles and slices
        assert decided.vae == ("tiled+sliced" if decided.offload != "none"
                               or decided.free_bytes - (decided.needed_bytes["none"] - decided.reserve_bytes) < 6 * GIB
                               else "full")
        chosen.append(decided.offload)
    assert tuple(chosen) == EXPECTED[engine, weights]


def test_float8_weights_halve_the_denoisers_on_the_device_and_nothing_else():
    full, fp8 = ({c.name: c.nbytes for c in components("wan_t2v_14b", weights)} for weights in ("auto", "fp8"))
    assert fp8["transformer"] * 2 == full["transformer"] and fp8["transformer_2"] * 2 == full["transformer_2"]
    assert fp8["text_encoder"] == full["text_encoder"] and fp8["vae"] == full["vae"]


def test_the_planner_arithmetic():
    parts = [ComponentBytes("text_encoder", 10 * GIB, 24), ComponentBytes("transformer", 20 * GIB, 40),
             ComponentBytes("vae", GIB, None)]
    reserve = 2 * GIB
    assert needed("none", parts, reserve) == 33 * GIB
    assert needed("model", parts, reserve) == 22 * GIB
    assert needed("group", parts, reserve) == 3 * (20 * GIB // 40) + reserve  # three blocks of the largest
    assert needed("group", [ComponentBytes("unet", 8 * GIB)], reserve) == 3 * GIB + reserve  # unknown: 8 blocks
    assert plan(parts, "cuda", free_bytes=40 * GIB, total_bytes=40 * GIB).offload == "none"
    assert plan(parts, "cuda", free_bytes=30 * GIB, total_bytes=30 * GIB).offload == "model"
    # another process holds most of a large device: what is free decides, the reserve follows the device
    busy = plan(parts, "cuda", free_bytes=9 * GIB, total_bytes=80 * GIB)  # group: 9.5 GiB, sequential: 9
    assert busy.offload == "sequential" and busy.reserve_bytes == 8 * GIB and busy.fits
    hopeless = plan(parts, "cuda", free_bytes=GIB, total_bytes=GIB)
    assert hopeless.offload == "sequential" and not hopeless.fits and "may run out of memory" in hopeless.reason
    on_cpu = plan(parts, "cpu")
    assert (on_cpu.offload, on_cpu.vae, on_cpu.fits) == ("none", "full", True) and "cpu" in on_cpu.reason
    record = plan(parts, "cuda", free_bytes=30 * GIB, total_bytes=32 * GIB).as_info()
    assert json.loads(json.dumps(record)) == record and record["gib"]["model"] == 23.2  # 20 GiB + 10% of 32


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


SMALL = json.dumps({"prompt": "a", "width": 32, "height": 32, "steps": 2, "seed": 3})


@pytest.mark.parametrize("args, message", [
    (["--offload", "group"], "--offload group needs a GPU"),
    (["--offload", "fast"], "--offload: unknown mode 'fast'; allowed: none, model, group, sequential, auto"),
    (["--vae-decode", "small"], "--vae-decode: unknown mode 'small'; allowed: full, tiled, sliced"),
    (["--compile", "max"], "--compile: unknown mode 'max'; allowed: off, regional, full"),
    (["--attention", "flash_hub"], "download kernels: not supported"),
    (["--attention", "native"], "engine sd15's UNet does not take an attention backend"),
])
def test_bad_run_options_exit_2_naming_the_option_before_loading(tmp_path, args, message):
    result = invoke("run", "sd15", "txt2img", "--model", "tiny", "--device", "cpu", "--out", str(tmp_path),
                    "--json", SMALL, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "loading" not in result.output
    assert not any(tmp_path.iterdir())


def test_offload_auto_on_the_cpu_records_a_plan_that_keeps_everything_in_place(tmp_path):
    result = invoke("run", "sd15", "txt2img", "--model", "tiny", "--device", "cpu", "--out", str(tmp_path), "-q",
                    "--offload", "auto", "--vae-decode", "auto", "--json", SMALL)
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)["info"]
    memory_plan = info["memory_plan"]
    assert (info["offload"], info["vae"]) == ("auto", "auto")  # as asked; the plan says what ran
    assert (memory_plan["offload"], memory_plan["vae"], memory_plan["device"]) == ("none", "full", "cpu")
    # the tiny model's components, sized from its safetensors headers before loading, in float32
    assert {c["name"] for c in memory_plan["components"]} == {"unet", "vae", "text_encoder"}
    unet = next(c for c in memory_plan["components"] if c["name"] == "unet")
    pipe_unet_bytes = sum(t.numel() * 4 for t in _tiny_unet_tensors())
    assert unet["nbytes"] == pipe_unet_bytes


def _tiny_unet_tensors():
    from safetensors import safe_open

    from codex_core.testing import tiny_model_dir

    folder = tiny_model_dir("sd15")
    with safe_open(str(next((folder / "unet").glob("*.safetensors"))), "pt") as opened:
        return [opened.get_tensor(key) for key in opened.keys()]
