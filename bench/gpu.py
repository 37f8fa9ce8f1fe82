"""Speed options on real-size models on a GPU: seconds per step and peak VRAM (a benchmark, not a test).

The models are the real architectures built from the configs the plugins ship
(``codex_diffusers.sizes.reference_config_dir``: Wan 2.2 TI2V-5B, FLUX.1-dev, LTX-2, HunyuanVideo 1.5 480p) with random weights:
nothing is downloaded. Each is written once as a diffusers folder (random weights in bf16, the
tiny models' offline tokenizers: their ids fit the real vocabularies) and run through codex's own
``orchestrator.run(..., RunOptions(model=<folder>))`` once per option:

- ``none``: no option;
- ``cache first_block``: the request's ``cache`` field at the engine's ``--preset fast`` threshold (n/a for an
  engine whose blocks diffusers' first-block cache cannot hook);
- ``weights fp8``: ``Runtime(weights="fp8")`` (float8 storage, layerwise casting to bf16);
- ``offload model`` / ``offload group``: ``Runtime(offload=...)``;
- ``offload auto``: the planner's choice for this device (info.memory_plan);
- ``compile regional``: ``Runtime(compile="regional")`` (the first step carries the compile);
- ``parallel 2`` / ``parallel 4`` / ``parallel 8``: ``Runtime(parallel="ulysses=N")`` on N GPUs of this machine
  (torchrun ranks of this script, ``--rank-of``; rank 0 measures; n/a with fewer GPUs). ``none`` is the 1-GPU row.

Per option: the steady seconds per step (the time between the step events after the first step,
which carries the compile and a cache's first full step), the first step, the denoising stage and
the whole run, and the peak VRAM of the run, load included (``torch.cuda.max_memory_allocated``,
reset before each option; the model cache is emptied between options). Random weights make the
output noise and a step cache's skips differ from trained weights': the times say what a step
costs, not the quality.

``--dry-run`` runs the same code path on the CPU at tiny size (the tiny models' configs, 2 steps):
options that need a GPU (offload) are reported as such, compile uses the eager backend, ``parallel 2`` runs
2 CPU ranks with gloo (the test-only shim of tests/cpu_ranks) and 4 and 8 are n/a (the tiny models have 2 heads). It is what
CI runs (tests/test_bench_gpu.py).

Run from the repo root on a GPU machine: ``.venv/bin/python bench/gpu.py`` (``--engines``,
``--options``, ``--steps``, ``--keep DIR`` to keep the random folders between invocations).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="codex-bench-gpu-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
os.environ["CODEX_CACHE_DIR"] = str(TMP / "cache")  # tiny models (their tokenizers) are built here
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# engine: task, the real-size request, the dry run's tiny request, the --preset fast cache
CASES = {
    "wan_ti2v_5b": ("txt2vid",
                    {"prompt": "a red fox running in snow", "width": 1280, "height": 704, "num_frames": 121,
                     "steps": 10, "seed": 7},
                    {"width": 64, "height": 64, "num_frames": 5, "steps": 2},
                    {"type": "first_block", "threshold": 0.05}),
    "flux": ("txt2img",
             {"prompt": "a lighthouse at dawn", "width": 1024, "height": 1024, "steps": 10, "seed": 7},
             {"width": 64, "height": 64, "steps": 2, "max_sequence_length": 32},
             {"type": "first_block", "threshold": 0.08}),
    # LTX-2 at its preset size (the LTX2Pipeline docstring's 768x512, 121 frames); the authors' guidance
    # (three transformer passes a step: CFG pair + modality); no step cache field (None: that option is n/a)
    "ltx2": ("txt2vid",
             {"prompt": "a man playing a red electric guitar, the riff echoing", "width": 768, "height": 512,
              "num_frames": 121, "steps": 10, "seed": 7},
             {"width": 64, "height": 64, "num_frames": 9, "steps": 2, "max_sequence_length": 128},
             None),
    # HunyuanVideo 1.5 480p at the pipeline's own 480p size and frames (848x480 = the 16:9 bucket of target_size 640,
    # 121 frames); no first_block cache: diffusers cannot hook its blocks (codex_hunyuan.v15.BLOCK_CACHES)
    "hunyuan_video_15": ("txt2vid",
                         {"prompt": "a red fox running in snow", "width": 848, "height": 480, "num_frames": 121,
                          "steps": 10, "seed": 7},
                         {"width": 48, "height": 32, "num_frames": 5, "steps": 2},
                         None),
}
# option: (Runtime fields, request fields); "cache" is filled per engine
OPTIONS = {
    "none": ({}, {}),
    "cache first_block": ({}, {"cache": None}),
    "weights fp8": ({"weights": "fp8"}, {}),
    "offload model": ({"offload": "model"}, {}),
    "offload group": ({"offload": "group"}, {}),
    "offload auto": ({"offload": "auto"}, {}),
    "compile regional": ({"compile": "regional"}, {}),
}
# context parallelism on N GPUs (Ulysses: the real models' 24 heads divide by 2, 4 and 8)
PARALLEL = {"parallel 2": 2, "parallel 4": 4, "parallel 8": 8}
OPTIONS.update({name: ({"parallel": f"ulysses={ranks}"}, {}) for name, ranks in PARALLEL.items()})


def build_random_folder(configs: Path, tokenizers: Path, dest: Path, device: str, dtype) -> None:
    """A diffusers folder of ``configs``' architectures with random weights, the tokenizers of ``tokenizers``.

    Every component with a ``config.json`` is built from it on ``device`` (fast random init on a GPU),
    cast to ``dtype`` and saved as safetensors; schedulers are copied; tokenizers (and their entries
    in model_index.json) come from ``tokenizers``, a tiny model folder.
    """
    import torch

    from codex_diffusers.sizes import component_class

    index = json.loads((configs / "model_index.json").read_text(encoding="utf-8"))
    tiny_index = json.loads((tokenizers / "model_index.json").read_text(encoding="utf-8"))
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, entry in list(index.items()):
        if name.startswith("_") or not isinstance(entry, list) or None in entry:
            continue
        library, class_name = entry
        source = configs / name
        if (source / "config.json").is_file():
            cls = component_class(library, class_name)  # a library may be a diffusers pipeline's own module
            torch.manual_seed(0)
            with torch.device(device):
                if library == "transformers":
                    model = cls(cls.config_class.from_pretrained(source))
                else:
                    model = cls.from_config(cls.load_config(source))
            model.to(dtype).save_pretrained(staging / name, safe_serialization=True)
            del model
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        elif (source / "scheduler_config.json").is_file() or (source / "guider_config.json").is_file():
            shutil.copytree(source, staging / name)  # configs only: a scheduler, a guider (HunyuanVideo 1.5)
        elif name in tiny_index and (tokenizers / name).is_dir():  # a tokenizer: the tiny model's, offline
            shutil.copytree(tokenizers / name, staging / name)
            index[name] = tiny_index[name]
    (staging / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def model_folder(engine: str, dry_run: bool, keep: Path | None) -> Path:
    import torch

    from codex_core.testing import tiny_model_dir
    from codex_diffusers.sizes import reference_config_dir

    tiny = tiny_model_dir(engine)
    root = keep or TMP
    dest = root / f"{engine}-{'tiny' if dry_run else 'real'}-random"
    if not (dest / "model_index.json").is_file():
        started = time.perf_counter()
        configs = tiny if dry_run else reference_config_dir(engine)
        device, dtype = ("cpu", torch.float32) if dry_run else ("cuda", torch.bfloat16)
        build_random_folder(configs, tiny, dest, device, dtype)
        print(f"built {dest} from {configs} in {time.perf_counter() - started:.0f} s", flush=True)
    return dest


def runtime_for(fields: dict, dry_run: bool):
    """The option's Runtime, or the reason this codex or this device cannot run it."""
    from codex_core import Runtime
    from codex_core.run_options import table

    known = set(table())  # the run options the installed plugins register
    missing = sorted(set(fields) - known)
    if missing:
        return None, f"n/a: this codex has no run option {missing[0]}"
    if dry_run and fields.get("offload", "none") not in ("none", "auto"):
        return None, "n/a on the CPU (needs a GPU)"
    extra = {"compile_backend": "eager"} if dry_run and "compile" in fields and "compile_backend" in known else {}
    return Runtime(device="cpu" if dry_run else "cuda", **fields, **extra), None


def parallel_row(engine: str, folder: Path, option: str, dry_run: bool, steps: int | None) -> dict:
    """``option`` on its N ranks: this script under torchrun (``--rank-of``), rank 0's measurement."""
    import subprocess
    import sys

    import torch

    from codex_core import get_engine

    ranks = PARALLEL[option]
    if get_engine(engine).context_parallel is None:
        return {"note": f"n/a: {engine} has no context-parallel plan"}
    if dry_run and ranks > 2:
        return {"note": "n/a in the dry run (the tiny models' 2 heads split 2 ways)"}
    have = torch.cuda.device_count()
    if not dry_run and have < ranks:
        return {"note": f"n/a: needs {ranks} GPUs, this machine has {have}"}
    result = TMP / f"{engine}-{option.replace(' ', '-')}.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               __file__, "--rank-of", engine, option, str(folder), str(result)]
    command += (["--dry-run"] if dry_run else []) + (["--steps", str(steps)] if steps else [])
    env = {**os.environ, "CODEX_CACHE_DIR": str(TMP / "cache")}
    if dry_run:  # CPU ranks: diffusers places rank r on accelerator r % count, and the CPU has none
        from codex_core.testing import cpu_ranks_env

        env = cpu_ranks_env(env)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode or not result.is_file():
        errors = [line for line in done.stderr.splitlines() if "Error" in line or "error:" in line]
        last = (errors or done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"note": f"failed: ranks exited {done.returncode}: {last[:120]}"}
    return json.loads(result.read_text(encoding="utf-8"))


def bench_option(engine: str, folder: Path, option: str, dry_run: bool, steps: int | None = None) -> dict:
    import torch

    if option in PARALLEL and "RANK" not in os.environ:
        return parallel_row(engine, folder, option, dry_run, steps)

    from codex_core.model_cache import cache
    from codex_core.orchestrator import RunOptions, run

    task, request, tiny_request, fast_cache = CASES[engine]
    runtime_fields, request_fields = OPTIONS[option]
    if "cache" in request_fields and fast_cache is None:
        return {"note": f"n/a: {engine} has no first_block cache"}
    request = {**request, **(tiny_request if dry_run else {}),
               **{key: fast_cache if key == "cache" else value for key, value in request_fields.items()}}
    runtime, reason = runtime_for(runtime_fields, dry_run)
    if runtime is None:
        return {"note": reason}
    cache.clear()  # each option loads its own model: its peak starts from nothing on the device
    gc.collect()
    cuda = torch.cuda.is_available() and not dry_run
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    steps: dict[int, float] = {}  # step events: steps done -> when (0: the loop starts)

    def on_progress(event):
        if event.get("type") == "step":
            steps[event["done"]] = time.perf_counter()

    fmt = ("png",) if task == "txt2img" else ("frames",)
    started = time.perf_counter()
    try:
        result = run(engine, task, request, RunOptions(model=str(folder), out=TMP / "out", quiet=True, formats=fmt,
                                                       runtime=runtime, on_progress=on_progress))
    except Exception as error:  # one option failing is a row, not the end of the bench
        return {"note": f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"}
    wall = time.perf_counter() - started
    if cuda:
        torch.cuda.synchronize()
    if result.run_dir is not None:  # None on the ranks after the first of a parallel row
        shutil.rmtree(result.run_dir, ignore_errors=True)
    done = max(steps, default=0)
    first = steps[1] - steps[0] if 0 in steps and 1 in steps else None  # compile, a cache's first full step
    steady = (steps[done] - steps[1]) / (done - 1) if done > 1 and 1 in steps else None
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return {"steps": done, "steady": steady, "first": first, "denoise": result.info.get("timings", {}).get("denoise"),
            "wall": wall, "peak_gib": peak, "note": ""}


def fmt_seconds(value) -> str:
    return "-" if value is None else f"{value:.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, 2 steps: the same code path")
    parser.add_argument("--engines", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--options", default=",".join(OPTIONS), help=f"comma-separated, of {', '.join(OPTIONS)}")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps per run (default: 10; dry run 2)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the random-weight folders in this folder")
    parser.add_argument("--rank-of", nargs=4, metavar=("ENGINE", "OPTION", "FOLDER", "RESULT"),
                        help="(internal) one torchrun rank of a parallel row; rank 0 writes RESULT")
    args = parser.parse_args()
    if args.rank_of:
        engine, option, folder, result = args.rank_of
        if args.steps:
            CASES[engine][2 if args.dry_run else 1]["steps"] = args.steps
        measured = bench_option(engine, Path(folder), option, args.dry_run)
        if os.environ.get("RANK") == "0":
            Path(result).write_text(json.dumps(measured), encoding="utf-8")
        return
    engines, options = args.engines.split(","), args.options.split(",")
    unknown = [name for name in engines if name not in CASES] + [name for name in options if name not in OPTIONS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    if args.steps:
        for case in CASES.values():
            case[2 if args.dry_run else 1]["steps"] = args.steps
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no GPU (torch.cuda.is_available() is False); --dry-run runs the same path on the CPU")
    device = (f"CPU, {os.cpu_count()} cores (dry run: tiny models)" if args.dry_run else
              f"{torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    import diffusers

    print(f"codex speed options on real-size random-weight models ({device}; torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}, {time.strftime('%Y-%m-%d')})", flush=True)
    rows = []
    for engine in engines:
        folder = model_folder(engine, args.dry_run, args.keep)
        task, request, tiny_request, _ = CASES[engine]
        shape = {**request, **(tiny_request if args.dry_run else {})}
        size = f"{shape['width']}x{shape['height']}" + (f"x{shape['num_frames']}" if "num_frames" in shape else "")
        for option in options:
            measured = bench_option(engine, folder, option, args.dry_run, args.steps)
            rows.append((f"{engine} {task} {size}, {shape['steps']} steps", option, measured))
            print(f"  {engine} {option}: {measured}", flush=True)
        if not args.keep and not args.dry_run:
            shutil.rmtree(folder, ignore_errors=True)  # tens of GB: one model on disk at a time
    none = {case: measured for case, option, measured in rows if option == "none"}
    print()
    print("| model, request | option | s/step (steady) | vs none | first step | denoising | whole run | peak VRAM |")
    print("|---|---|---|---|---|---|---|---|")
    for case, option, measured in rows:
        if measured.get("note"):
            print(f"| {case} | {option} | {measured['note']} | | | | | |")
            continue
        base = none.get(case, {}).get("steady")
        ratio = f"{measured['steady'] / base:.2f}" if base and measured["steady"] else "-"
        peak = "-" if measured["peak_gib"] is None else f"{measured['peak_gib']:.1f} GiB"
        print(f"| {case} | {option} | {fmt_seconds(measured['steady'])} | {ratio} | {fmt_seconds(measured['first'])} | "
              f"{fmt_seconds(measured['denoise'])} | {fmt_seconds(measured['wall'])} | {peak} |", flush=True)


if __name__ == "__main__":
    main()
