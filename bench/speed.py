"""Speed options on the tiny models: time, peak memory and pixels of each, relative to no option
(a benchmark, not a test).

For each engine and option: the median wall time of a warm in-process ``orchestrator.run`` (the
model loaded, interleaved repetitions), the peak resident memory above the process's level before
the run (sampled; the device's peak instead when a GPU runs it), and the largest pixel difference
from the run without the option. Target from issue 13: on tiny Wan 2.2 TI2V-5B at 30 steps,
``first_block`` (the ``--preset fast`` threshold) takes <= 0.9x the time of no cache.

The tiny models' weights are random, so a cache's pixel difference here says nothing about quality
on real weights; the times say what the hooks skip.

Run from the repo root: ``.venv/bin/python bench/speed.py`` (or ``make bench``); ``--repeats N``.
"""

from __future__ import annotations

import argparse
import atexit
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

from codex_core.orchestrator import RunOptions, run  # noqa: E402

CASES = {
    "wan_ti2v_5b": ("txt2vid", {"prompt": "a red fox running in snow", "width": 256, "height": 256, "num_frames": 33,
                                "steps": 30, "seed": 7}),
    "flux": ("txt2img", {"prompt": "a lighthouse at dawn", "width": 256, "height": 256, "steps": 28, "seed": 7,
                         "max_sequence_length": 32}),
}
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


def request_for(engine: str, base: dict, option) -> tuple[dict, str | None]:
    if option is None:
        return base, None
    if option == "preset":
        return base, "fast"
    return {**base, "cache": option}, None


def bench(engine: str, repeats: int) -> list[tuple[str, float, float, float, int, float]]:
    task, base = CASES[engine]
    fmt = ("png",) if task == "txt2img" else ("frames",)
    run(engine, task, {**base, "steps": 2}, RunOptions(model="tiny", out=TMP / "warm", quiet=True, formats=fmt))
    names = [name for name, option in OPTIONS.items()
             if not (isinstance(option, dict) and option["type"] == "magcache" and engine != "flux")]
    times = {name: [] for name in names}
    denoise = {name: [] for name in names}  # the stage a step cache acts on
    memory, outputs = {}, {}
    for round_ in range(repeats):
        for name in names:  # interleaved: slow phases of a shared machine hit every option alike
            request, preset = request_for(engine, base, OPTIONS[name])
            options = RunOptions(model="tiny", out=TMP / "out", quiet=True, formats=fmt, preset=preset)
            with PeakRss() as rss:
                started = time.perf_counter()
                result = run(engine, task, request, options)
                times[name].append(time.perf_counter() - started)
            denoise[name].append(result.info["timings"]["denoise"])
            memory[name] = max(memory.get(name, 0.0), result.info["memory"].get("peak_device_memory_mb") or rss.mib)
            if round_ == 0:
                outputs[name] = pixels(result)
    none, none_denoise = statistics.median(times["none"]), statistics.median(denoise["none"])
    rows = []
    for name in names:
        median, denoise_ratio = statistics.median(times[name]), statistics.median(denoise[name]) / none_denoise
        difference = int(np.abs(outputs[name] - outputs["none"]).max())
        # a CPU's resident memory hardly moves between runs of a warm tiny model (the allocator reuses
        # it): a ratio is shown only when the baseline's peak is big enough to mean something
        rows.append((name, median, median / none, denoise_ratio, memory[name], difference,
                     memory[name] / memory["none"] if memory["none"] >= 16 else None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"speed options on the tiny models ({device}, torch {torch.__version__}), median of {args.repeats}")
    print()
    print("| engine | option | time | vs none | denoising vs none | peak memory | vs none | max pixel difference |")
    print("|---|---|---|---|---|---|---|---|")
    verdicts = []
    for engine in CASES:
        for name, median, ratio, denoise_ratio, mib, difference, memory_ratio in bench(engine, args.repeats):
            print(f"| {engine} {CASES[engine][0]} {CASES[engine][1]['steps']} steps | {name} | {median:.3f} s | "
                  f"{ratio:.2f} | {denoise_ratio:.2f} | {mib:.0f} MiB | "
                  f"{'-' if memory_ratio is None else f'{memory_ratio:.2f}'} | {difference} |", flush=True)
            if engine == "wan_ti2v_5b" and name.startswith("first_block (--preset"):
                verdicts.append(f"target: wan_ti2v_5b first_block (--preset fast) {ratio:.2f}x of no cache's time, "
                                f"denoising {denoise_ratio:.2f}x (<= 0.90): {'met' if ratio <= 0.9 else 'NOT met'}")
    print()
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
