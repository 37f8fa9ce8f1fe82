"""Speed options on the tiny models: time, peak memory and pixels of each, relative to no option
(a benchmark, not a test).

For each engine and option: the median wall time of a warm in-process ``orchestrator.run`` (the
model loaded, interleaved repetitions), the peak resident memory above the process's level before
the run (sampled; the device's peak instead when a GPU runs it), and the largest pixel difference
from the run without the option. Target from issue 13: on tiny Wan 2.2 TI2V-5B at 30 steps,
``first_block`` (the ``--preset fast`` threshold) takes <= 0.9x the time of no cache.

Each engine runs on two tiny models of its real architecture, both random and tiny in width:
- at the real depth: the block counts of the real model, read from the configs its plugin ships
  (Wan 2.2 TI2V-5B: 30 blocks; FLUX.1-dev: 19 double + 38 single). A block cache skips all blocks but
  the first on a skipped step, so its saving depends on the depth: at the real depth a tiny model
  shows the share of a step it skips on the real model. The target is judged here.
- the tests' tiny model (the ``--model tiny`` one: Wan 2 blocks, Flux 1 + 1), where a skipped step
  saves one block of two at most, and the VAE's decode is most of the run.

The weights are random, so a cache's pixel difference here says nothing about quality on real
weights, and how many steps a threshold skips can differ from a trained model; the times say what
the hooks skip.

Run from the repo root: ``.venv/bin/python bench/speed.py`` (or ``make bench``); ``--repeats N``.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="codex-bench-speed-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
os.environ["CODEX_CACHE_DIR"] = str(TMP / "cache")  # the tiny models are built here, never in the user's cache
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

import codex_diffusers.pipelines  # noqa: E402,F401  (first: torchao's import noise held back, library bars off)
from codex_core.orchestrator import RunOptions, run  # noqa: E402
from codex_diffusers.testing import AttentionCalls  # noqa: E402

REQUESTS = {
    "wan_ti2v_5b": ("txt2vid", {"prompt": "a red fox running in snow", "width": 256, "height": 256, "num_frames": 33,
                                "steps": 30, "seed": 7}),
    "flux": ("txt2img", {"prompt": "a lighthouse at dawn", "width": 256, "height": 256, "steps": 28, "seed": 7,
                         "max_sequence_length": 32}),
}
DEPTHS = ("real depth", "tests' tiny")
OPTIONS = {
    "none": None,
    "first_block (--preset fast)": "preset",
    "first_block 0.2": {"type": "first_block", "threshold": 0.2},
    "taylorseer (defaults)": {"type": "taylorseer"},
    "pab (defaults)": {"type": "pab"},
    "magcache (built-in ratios)": {"type": "magcache"},
}


class PeakRss:
    """The process's peak resident memory during a block, above its level at the start (sampled every 5 ms)."""

    def __enter__(self):
        self.process, self.start, self.peak, self.done = psutil.Process(), psutil.Process().memory_info().rss, 0, False
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.done:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.done = True
        self.thread.join()

    @property
    def mib(self) -> float:
        return max(self.peak - self.start, 0) / 2**20


def pixels(result) -> np.ndarray:
    """The run's image, or its video's frames as PNGs (lossless: an encoder's noise is no difference)."""
    from PIL import Image

    pngs = sorted(path for path in result.files if path.suffix == ".png")
    return np.stack([np.asarray(Image.open(path), dtype=np.int16) for path in pngs])


# each engine's tiny builder, and the transformer config keys that give its depth (the builder's arguments)
DEPTH_KEYS = {"wan_ti2v_5b": ("codex_wan.tiny", "build_ti2v_5b", {"num_layers": "blocks"}),
              "flux": ("codex_flux.tiny", "build", {"num_layers": "double", "num_single_layers": "single blocks"})}


def transformer_depth(engine: str, folder: Path) -> dict[str, int]:
    config = json.loads((folder / "transformer" / "config.json").read_text())
    return {key: config[key] for key in DEPTH_KEYS[engine][2]}


def model_for(engine: str, depth: str) -> tuple[str, str]:
    """The model to run (``tiny`` or a folder) and its transformer's depth in words: the tests' tiny
    model, or the same built at the block counts of the real model's config that the plugin ships."""
    from codex_core.testing import tiny_model_dir
    from codex_diffusers.sizes import reference_config_dir

    if depth == "tests' tiny":
        model, counts = "tiny", transformer_depth(engine, tiny_model_dir(engine))
    else:
        counts = transformer_depth(engine, reference_config_dir(engine))
        dest = TMP / "models" / engine
        if not dest.exists():
            module, builder, _ = DEPTH_KEYS[engine]
            getattr(importlib.import_module(module), builder)(dest, **counts)
        model = str(dest)
    return model, " + ".join(f"{count} {DEPTH_KEYS[engine][2][key]}" for key, count in counts.items())


def request_for(engine: str, base: dict, option) -> tuple[dict, str | None]:
    if option is None:
        return base, None
    if option == "preset":
        return base, "fast"
    return {**base, "cache": option}, None


def bench(engine: str, model: str, repeats: int) -> list[tuple]:
    task, base = REQUESTS[engine]
    fmt = ("png",) if task == "txt2img" else ("frames",)
    run(engine, task, {**base, "steps": 2}, RunOptions(model=model, out=TMP / "warm", quiet=True, formats=fmt))
    names = [name for name, option in OPTIONS.items()
             if not (isinstance(option, dict) and option["type"] == "magcache" and engine != "flux")]
    times = {name: [] for name in names}
    denoise = {name: [] for name in names}  # the stage a step cache acts on
    memory, outputs = {}, {}
    for round_ in range(repeats):
        for name in names:  # interleaved: slow phases of a shared machine hit every option alike
            request, preset = request_for(engine, base, OPTIONS[name])
            options = RunOptions(model=model, out=TMP / "out", quiet=True, formats=fmt, preset=preset)
            with PeakRss() as rss:
                started = time.perf_counter()
                result = run(engine, task, request, options)
                times[name].append(time.perf_counter() - started)
            denoise[name].append(result.info["timings"]["denoise"])
            memory[name] = max(memory.get(name, 0.0), result.info["memory"].get("peak_device_memory_mb") or rss.mib)
            if round_ == 0:
                outputs[name] = pixels(result)
    calls = {}
    for name in names:  # once more, counted (the hooks would slow the timed runs)
        request, preset = request_for(engine, base, OPTIONS[name])
        with AttentionCalls(engine) as counter:
            run(engine, task, request, RunOptions(model=model, out=TMP / "out", quiet=True, formats=fmt, preset=preset))
        calls[name] = counter.calls
    none, none_denoise = statistics.median(times["none"]), statistics.median(denoise["none"])
    rows = []
    for name in names:
        median, denoise_ratio = statistics.median(times[name]), statistics.median(denoise[name]) / none_denoise
        difference = int(np.abs(outputs[name] - outputs["none"]).max())
        # a CPU's resident memory hardly moves between runs of a warm tiny model (the allocator reuses
        # it): a ratio is shown only when the baseline's peak is big enough to mean something
        rows.append((name, median, median / none, denoise_ratio, calls[name] / calls["none"], memory[name],
                     difference, memory[name] / memory["none"] if memory["none"] >= 16 else None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"speed options on the tiny models ({device}, torch {torch.__version__}), median of {args.repeats}")
    print()
    print("| engine (tiny), request | transformer depth | option | time | vs none | denoising vs none | "
          "attention computed vs none | peak memory | vs none | max pixel difference |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for engine, (task, base) in REQUESTS.items():
        for depth in DEPTHS:
            model, blocks = model_for(engine, depth)
            for name, median, ratio, denoise_ratio, computed, mib, difference, memory_ratio in bench(
                    engine, model, args.repeats):
                print(f"| {engine} {task} {base['steps']} steps | {depth}: {blocks} | {name} | {median:.3f} s | "
                      f"{ratio:.2f} | {denoise_ratio:.2f} | {computed:.2f} | {mib:.0f} MiB | "
                      f"{'-' if memory_ratio is None else f'{memory_ratio:.2f}'} | {difference} |", flush=True)
                if engine == "wan_ti2v_5b" and name.startswith("first_block (--preset"):
                    line = (f"wan_ti2v_5b first_block (--preset fast), {depth} ({blocks}): {ratio:.2f}x of no "
                            f"cache's time, denoising {denoise_ratio:.2f}x, attention computed {computed:.2f}x")
                    if depth == "real depth":
                        line = f"target: {line} (<= 0.90): {'met' if ratio <= 0.9 else 'NOT met'}"
                    verdicts.append(line)
    print()
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
