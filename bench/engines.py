"""In-process overhead of the newer engines against a direct diffusers call (a benchmark, not a test).

For each case below: ``orchestrator.run`` (validation, presets, the loaded-model cache, the per-run pipeline
view and scheduler, the call with progress, PNG + info.json) against the same pipeline class loaded once
with ``from_pretrained`` from the same tiny folder, called with the very arguments codex passed (captured
from codex's own call: the direct side does not re-derive them, so only codex's wrapping is measured) and
a fresh scheduler of the same class and config, then ``image.save``. Target: median ratio <= 1.02.

The sizes are chosen so that one call takes ~0.3-1 s on a 2-core CPU: long enough that timer noise is
small. Run from the repo root: ``.venv/bin/python bench/engines.py [ENGINE ...]``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="codex-bench-engines-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
os.environ["CODEX_CACHE_DIR"] = str(TMP / "cache")  # the tiny models are built here, never in the user's cache
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from codex_core.orchestrator import RunOptions, run  # noqa: E402
from codex_core.testing import tiny_model_dir, write_test_image  # noqa: E402
from codex_diffusers import pipelines  # noqa: E402

from timing import interleaved, ratio, report  # noqa: E402  (bench/timing.py, beside this script)

REPS = 11
REFERENCE = str(write_test_image(TMP / "reference.png", (256, 192), seed=1))
# engine -> (task, request, pipeline class of the task)
CASES = {
    "flux": ("edit", {"prompt": "make it winter", "images": [REFERENCE], "width": 256, "height": 192, "steps": 8,
                      "seed": 3, "max_sequence_length": 64, "auto_resize": False}, "FluxKontextPipeline"),
}


def captured_call(engine: str, task: str, request: dict) -> tuple[dict, type, dict, Path]:
    """codex's own pipeline call for the request: (its arguments, scheduler class, scheduler config, the PNG)."""
    real, seen = pipelines.call, {}

    def recording(pipe, job, **kwargs):
        seen.update(kwargs=dict(kwargs), scheduler=(type(pipe.scheduler), dict(pipe.scheduler.config)))
        return real(pipe, job, **kwargs)

    pipelines.call = recording
    try:
        result = run(engine, task, request, RunOptions(model="tiny", out=TMP / "first", quiet=True))
    finally:
        pipelines.call = real
    return seen["kwargs"], *seen["scheduler"], result.files[0]


def measure(engine: str) -> None:
    task, request, class_name = CASES[engine]
    kwargs, scheduler_cls, scheduler_config, first_png = captured_call(engine, task, request)
    seed = request["seed"]
    pipe = getattr(diffusers, class_name).from_pretrained(str(tiny_model_dir(engine)))
    pipe.set_progress_bar_config(disable=True)
    # codex's own keywords to its call wrapper (timing, progress, previews) are not the pipeline's
    kwargs = {k: v for k, v in kwargs.items() if k not in ("generator", "denoisers", "encoder", "previewer")}

    def direct(path: Path = TMP / "direct.png") -> Image.Image:
        pipe.scheduler = scheduler_cls.from_config(scheduler_config)  # fresh per call, as codex does
        image = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        image.save(path)
        return image

    def codex() -> Path:
        return run(engine, task, request, RunOptions(model="tiny", out=TMP / "codex", quiet=True)).files[0]

    same = np.array_equal(np.asarray(Image.open(first_png).convert("RGB")), np.asarray(direct()))
    codex()  # warm: both sides now hold the loaded model
    times, others = interleaved({"codex": codex, "direct": direct}, REPS)
    report(f"tiny {engine} {task} ({class_name}), {request.get('width')}x{request.get('height')}, "
           f"{request['steps']} steps; {REPS} interleaved runs each (after warm-up)", times, others,
           {"direct": f"direct {class_name}(**codex's arguments) + save", "codex": "codex orchestrator.run (png)"})
    ratio(times, "codex", "direct", f"{engine} codex/direct", 1.02)
    print(f"pixels identical (codex PNG vs direct image): {same}")


if __name__ == "__main__":
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"diffusers {diffusers.__version__}, python {sys.version.split()[0]}")
    for name in sys.argv[1:] or list(CASES):
        measure(name)
