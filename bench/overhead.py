"""How much codex costs on top of what it wraps, on the tiny sd15 model (a benchmark, not a test).

1. In-process: ``orchestrator.run`` vs a direct diffusers call that also saves its PNG (the fair
   baseline for a tool that writes files). Target: median ratio <= 1.05.
2. CLI start-up: ``codex engines`` vs ``python -c "import torch"``. Target: ratio <= 0.5, i.e. a
   command that needs no model must not pay for importing torch.

Run from the repo root: ``.venv/bin/python bench/overhead.py`` (or ``make bench``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="codex-bench-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
os.environ["CODEX_CACHE_DIR"] = str(TMP / "cache")  # build the tiny model here, never in the user's cache
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # codex sets this too; keeps import chatter out

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline  # noqa: E402
from PIL import Image  # noqa: E402

from codex_core import registry, sources  # noqa: E402
from codex_core.orchestrator import RunOptions, run  # noqa: E402
from codex_core.progress import Progress  # noqa: E402

# 384x384 x 20 steps takes ~0.45 s per call on a 2-core CPU: long enough that timer noise is small,
# short enough that 15 interleaved pairs fit well inside the time budget.
PROMPT, SIZE, STEPS, CFG, SEED = "a lighthouse on a cliff at dawn, oil painting", 384, 20, 7.0, 1234
REPS, CLI_REPS = 15, 7
REQUEST = {"prompt": PROMPT, "width": SIZE, "height": SIZE, "steps": STEPS, "cfg": CFG,
           "sampler": "DPM++ 2M", "scheduler": "Karras", "seed": SEED}


spec = registry.get_engine("sd15")
tiny_dir = sources.tiny_path(spec, spec.tiny_version)
spec.load_engine().ensure_tiny(tiny_dir, Progress(False))

pipe = StableDiffusionPipeline.from_pretrained(str(tiny_dir), safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)  # codex disables it too; tqdm output is not what we measure


def direct(path: Path) -> Image.Image:
    # A fresh scheduler per call, as codex does; this is what "DPM++ 2M" + "Karras" resolve to.
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)
    image = pipe(PROMPT, width=SIZE, height=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
                 generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
    image.save(path)
    return image


def codex() -> Path:
    return run("sd15", "txt2img", REQUEST, RunOptions(model="tiny", out=TMP / "codex", quiet=True)).files[0]


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds used by the whole machine, by this process and its children) so far."""
    with open("/proc/stat") as stat:  # Linux: user nice system idle iowait irq softirq steal ...
        ticks = [int(v) for v in stat.readline().split()[1:9]]
    own = os.times()
    return ((sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"),
            own.user + own.system + own.children_user + own.children_system)


# Warm-up: codex's first run loads the pipeline into its per-process cache; later runs reuse it, as
# the direct side reuses `pipe`. The outputs double as the pixel-identity check.
direct_image = direct(TMP / "direct.png")
codex_png = codex()
same_pixels = np.array_equal(np.asarray(Image.open(codex_png).convert("RGB")), np.asarray(direct_image))

# torch's OpenMP threads spin-wait, so other processes on the same cores make single runs several
# times slower (median >> min). Record how much CPU everything else used while we measured.
wall0, (machine0, own0) = time.perf_counter(), cpu_seconds()

# Interleave and alternate who goes first, so drift (thermal, page cache, other load) hits both sides.
times: dict[str, list[float]] = {"codex": [], "direct": []}
for i in range(REPS):
    pair = [("codex", codex, ()), ("direct", direct, (TMP / "direct.png",))]
    for name, fn, args in pair if i % 2 == 0 else reversed(pair):
        times[name].append(timed(fn, *args))

# CLI start-up, in fresh processes: the same interpreter importing torch is the yardstick.
bin_dir = Path(sys.executable).parent
cli = {"codex engines": [str(bin_dir / "codex"), "engines"], "import torch": [sys.executable, "-c", "import torch"]}
cli_times: dict[str, list[float]] = {name: [] for name in cli}
for i in range(CLI_REPS):
    for name in list(cli) if i % 2 == 0 else reversed(list(cli)):
        cli_times[name].append(timed(subprocess.run, cli[name], check=True, capture_output=True))

med = {name: statistics.median(values) for name, values in {**times, **cli_times}.items()}
low = {name: min(values) for name, values in {**times, **cli_times}.items()}
ratio_run = med["codex"] / med["direct"]
ratio_cli = med["codex engines"] / med["import torch"]
machine1, own1 = cpu_seconds()
others = max(0.0, (machine1 - machine0) - (own1 - own0)) / ((time.perf_counter() - wall0) * os.cpu_count())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
      f"diffusers {diffusers.__version__}, python {sys.version.split()[0]}")
print(f"other processes used {others:.0%} of the CPUs while measuring"
      + ("  (busy machine: medians are noisy, compare the mins)" if others > 0.1 else ""))
print(f"workload: tiny sd15 txt2img {SIZE}x{SIZE}, {STEPS} steps, DPM++ 2M Karras, cfg {CFG}; "
      f"{REPS} interleaved runs each (after warm-up), CLI {CLI_REPS} runs each")
print(f"{'':<28}{'median s':>10}{'min s':>10}")
for name in ("direct", "codex", "import torch", "codex engines"):
    label = {"direct": "direct diffusers + save", "codex": "codex orchestrator.run"}.get(name, name)
    print(f"{label:<28}{med[name]:>10.3f}{low[name]:>10.3f}")
print(f"in-process ratio codex/direct (median) {ratio_run:.3f}  target <= 1.05  {verdict(ratio_run <= 1.05)}")
print(f"in-process ratio codex/direct (min)    {low['codex'] / low['direct']:.3f}  (for reference)")
print(f"CLI ratio codex engines/import torch   {ratio_cli:.3f}  target <= 0.5   {verdict(ratio_cli <= 0.5)}")
print(f"pixels identical (codex PNG vs direct image): {same_pixels}  {verdict(same_pixels)}")
