"""The kit's run options: diffusers' offload placements, VAE decode modes, weight storage, compile and
attention backends, and context parallelism, each declared once (``codex_core.RunOption``); torch-free.

They apply to the engines on this kit (``DiffusersEngine``); another engine refuses a value other
than the default before anything loads. info.json records each as it always has (``offload``,
``vae`` and ``vae_tiling``, ``weights``, ``compile: {mode, backend}``, ``attention: {backend}``,
``parallel: {ulysses, ring, world_size, ...}``), and `codex replay` reads them back from there.
"""

from __future__ import annotations

from codex_core import RunOption, UsageError

# none | model | group | sequential: diffusers' placements, fastest first; auto: the planner picks the
# fastest that fits the device (codex_diffusers.memory_plan), recorded in info.memory_plan
OFFLOAD = ("none", "model", "group", "sequential", "auto")
# How the VAE decodes: whole, in tiles (large images and videos with less memory), in slices (a batch one
# item at a time), both, or auto (tiles and slices when the memory plan offloads or leaves little room)
VAE_DECODE = ("full", "tiled", "sliced", "tiled+sliced", "auto")
# --compile: off; regional (torch.compile of the repeated blocks, diffusers' compile_repeated_blocks,
# where the model declares them, else the whole module); full (the whole denoiser)
COMPILE = ("off", "regional", "full")
# --attention: diffusers' attention backends (set_attention_backend) that run without downloading a
# kernel; "default" leaves the model's own. The *_hub backends fetch kernels from the Hub: never here.
ATTENTION = ("default", "native", "_native_math", "_native_efficient", "_native_flash", "_native_cudnn", "flex",
             "flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "sage", "sage_varlen", "xformers")
# How the denoiser's weights are stored: as the dtype (auto), or in float8 with each layer cast up to the
# run's dtype as it computes (diffusers' layerwise casting: about half the memory of bf16 weights), or int8
# weight-only (torchao's Int8WeightOnlyConfig on the Linear layers: an optional extra, codex-diffusers[int8])
WEIGHTS = {"auto": None, "fp8": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2", "int8": "int8"}


def on_this_kit(engine) -> bool:
    from .engine import DiffusersEngine

    return isinstance(engine, DiffusersEngine)


def _offload_needs_a_gpu(value: str, runtime) -> None:
    if runtime.device.split(":")[0] == "cpu" and value not in ("none", "auto"):
        raise UsageError(f"--offload {value} needs a GPU; the device is cpu",
                         hint="drop --offload (or --offload auto: it offloads only on a GPU that needs it)")


def _backend_name(value: str, runtime) -> str | None:
    """A torch.compile backend torch knows (checked before anything loads, whether or not --compile is on: a
    misspelt backend otherwise fails only after the model loaded, or not at all)."""
    if not value or not value.replace("_", "").isalnum():
        return f"{value[:60]!r} is not a backend name; e.g. inductor, aot_eager or eager"
    if value == "inductor":  # the default: known without importing torch
        return None
    from torch._dynamo import list_backends

    known = list_backends(exclude_tags=())
    if value not in known:
        shown = [name for name in known if not name.endswith("_TESTING_ONLY")]
        return f"unknown backend {value!r}; this torch has: {', '.join(shown)}"
    return None


def _attention_backend(value: str, runtime) -> str | None:
    if value in ATTENTION:
        return None
    hub = " (the *_hub backends download kernels: not supported)" if value.endswith("_hub") else ""
    return f"unknown backend {value!r}{hub}; allowed: {', '.join(ATTENTION)}"


def _parallel_layout(value: str, runtime) -> str | None:
    from codex_core.parallel import parse

    from .context_parallel import layout_problem

    try:
        layout = parse(value)
    except ValueError as exc:
        return f"{value!r}: {exc}"
    return layout_problem(layout, runtime) if layout else None


def _parallel_record(runtime) -> dict:
    from codex_core.parallel import parse

    layout = parse(runtime.parallel)
    return {"parallel": layout.as_json() if layout else None}


def _parallel_replayed(info) -> str | None:
    """The layout a run recorded, as --parallel spells it (None: it ran in one process)."""
    from codex_core.parallel import FLAGS, Parallel

    recorded = info.get("parallel")
    if not isinstance(recorded, dict):
        return None
    return str(Parallel(int(recorded.get("ulysses", 1)), int(recorded.get("ring", 1)),
                        **{flag: bool(recorded.get(flag)) for flag in FLAGS}))


def _compile_record(runtime) -> dict:
    return {"compile": {"mode": runtime.compile, "backend": runtime.compile_backend}
            if runtime.compile != "off" else None}


OPTIONS = (
    RunOption("offload", "--offload", "none", choices=OFFLOAD, noun="mode", check=_offload_needs_a_gpu,
              applies=on_this_kit,
              help="Weights off the GPU between uses: none, model (per component), group (per block, prefetched), "
                   "sequential (per layer) or auto (the fastest that fits the GPU's free memory, from the model's "
                   "sizes before loading; info.memory_plan says why)."),
    RunOption("vae", "--vae-decode", "full", choices=VAE_DECODE, noun="mode", applies=on_this_kit,
              shortcuts={"--vae-tiling": "tiled"},
              record=lambda runtime: {"vae": runtime.vae, "vae_tiling": "tiled" in runtime.vae},
              # a run from before --vae-decode recorded only vae_tiling
              replayed=lambda info: info.get("vae") or ("tiled" if info.get("vae_tiling") else None),
              help="full, tiled (large images/videos with less memory), sliced (a batch one at a time), "
                   "tiled+sliced or auto (tiled+sliced when the memory plan is tight)."),
    RunOption("weights", "--weights", "auto", choices=tuple(WEIGHTS), noun="storage", applies=on_this_kit,
              help="The denoiser's weight storage: auto (the dtype), fp8 or fp8_e5m2 (float8, each layer cast up "
                   "to the dtype as it runs: about half the memory of bf16 weights), int8 (torchao weight-only; "
                   "pip install 'codex-diffusers[int8]')."),
    RunOption("compile", "--compile", "off", choices=COMPILE, noun="mode", applies=on_this_kit,
              record=_compile_record, replayed=lambda info: (info.get("compile") or {}).get("mode"),
              help="torch.compile the denoiser: off, regional (its repeated blocks: diffusers' "
                   "compile_repeated_blocks; the first run compiles) or full."),
    RunOption("compile_backend", "--compile-backend", "inductor", check=_backend_name, applies=on_this_kit,
              record=lambda runtime: {},  # recorded in info.compile
              replayed=lambda info: (info.get("compile") or {}).get("backend"),
              help="torch.compile backend for --compile (inductor; eager or aot_eager to debug)."),
    RunOption("attention", "--attention", "default", check=_attention_backend, applies=on_this_kit,
              record=lambda runtime: {"attention": {"backend": runtime.attention}
                                      if runtime.attention != "default" else None},
              replayed=lambda info: (info.get("attention") or {}).get("backend"),
              help="Attention backend of the denoiser (diffusers set_attention_backend): default, native, "
                   "_native_math, _native_efficient, _native_flash, _native_cudnn, flex, flash, sage, xformers, ..."),
    # the engines without a cp plan refuse it in DiffusersEngine.runtime_problems, naming the ones that take it
    RunOption("parallel", "--parallel", "off", check=_parallel_layout, applies=on_this_kit, metavar="LAYOUT",
              record=_parallel_record, replayed=_parallel_replayed,
              help="Split one job's attention across ranks, one GPU each (diffusers' context parallelism): "
                   "ulysses=U[,ring=R][,ulysses_anything|ring_anything] or off. Run it with --processes U*R "
                   "(or under torchrun). docs/scaling.md lists the engines that take it."),
)
