"""What `codex batch` saves over one `codex run` per request, on the tiny sd15 (a benchmark, not a test).

A 20-item batch (one process: torch imported and the model loaded once) against the same 20 requests
as 20 separate `codex run` processes (each imports torch and loads the model), wall clock, measured
in one run. Target: batch/separate <= 0.2. The outputs double as a check: each item's PNG must be,
pixel for pixel, the one its separate run wrote.

Run from the repo root: ``.venv/bin/python bench/batch.py`` (or ``make bench``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="codex-bench-batch-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
os.environ["CODEX_CACHE_DIR"] = str(TMP / "cache")  # build the tiny model here, never in the user's cache

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from codex_core.testing import tiny_model_dir  # noqa: E402

ITEMS, SIZE, STEPS = 20, 64, 4
REQUESTS = [{"prompt": f"a lighthouse on a cliff, study {i}", "width": SIZE, "height": SIZE, "steps": STEPS,
             "seed": 1000 + i} for i in range(ITEMS)]
CODEX = str(Path(sys.executable).parent / "codex")

tiny_model_dir("sd15")  # built once, before either side is timed

batch_file = TMP / "bench.jsonl"
batch_file.write_text("".join(json.dumps({"id": f"item-{i}", "engine": "sd15", "task": "txt2img", "model": "tiny",
                                          "request": request}) + "\n" for i, request in enumerate(REQUESTS)))
start = time.perf_counter()
subprocess.run([CODEX, "batch", str(batch_file), "--out", str(TMP / "batch"), "-q"], check=True,
               stdout=subprocess.DEVNULL)
batch_seconds = time.perf_counter() - start

separate_dirs = []
start = time.perf_counter()
for request in REQUESTS:
    result = subprocess.run([CODEX, "run", "sd15", "txt2img", "--model", "tiny", "--out", str(TMP / "separate"), "-q",
                             "--json", json.dumps(request)], check=True, capture_output=True, text=True)
    separate_dirs.append(Path(json.loads(result.stdout)["run_dir"]))
separate_seconds = time.perf_counter() - start


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


same = all(np.array_equal(pixels(TMP / "batch" / f"item-{i}" / "0000.png"), pixels(folder / "0000.png"))
           for i, folder in enumerate(separate_dirs))
ratio = batch_seconds / separate_seconds
print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
print(f"tiny sd15 txt2img {SIZE}x{SIZE}, {STEPS} steps, {ITEMS} requests")
print(f"{'codex batch (one process, one load)':<46}{batch_seconds:>9.1f} s")
print(f"{f'{ITEMS} x codex run (a process and a load each)':<46}{separate_seconds:>9.1f} s")
print(f"ratio batch/separate {ratio:.3f}  target <= 0.2  {'PASS' if ratio <= 0.2 else 'FAIL'}")
print(f"pixels identical (each batch item vs its separate run): {same}  {'PASS' if same else 'FAIL'}")
