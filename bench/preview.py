"""What a live preview costs, as a share of the denoising it interrupts (a benchmark, not a test).

A preview (codex_diffusers.previews) is a C x 3 projection of one image's latents, the bytes brought to the
CPU and a PNG encode of the latent-sized image. Its cost depends on the latent size, not on the model; a
denoising step's cost depends on the model. So, in one run:

1. The preview's time at realistic latent sizes: SD 1.5 at 512x512 (4 x 64 x 64), SDXL at 1024x1024
   (4 x 128 x 128), FLUX.1 at 1024x1024 (packed, 16 x 128 x 128), a Wan 2.2 TI2V-5B 1280x704 frame
   (48 x 44 x 80), an LTX-Video 768x512 frame (128 x 16 x 24); the median of many calls, after warm-up.
2. A step of SD 1.5 at 512x512 at its real size: the UNet of the shipped stable-diffusion-v1-5 config (860M
   parameters, random weights: the time is the architecture's), batch 2 as classifier-free guidance runs it.
   The target: the preview every ``--preview-every`` steps (the service's default, 2) costs under 3% of
   the denoising time. On a GPU a step is ~100x faster and so is the projection; the PNG encode of a
   64 x 64 image stays on the CPU (a fraction of a millisecond), which this run measures.
3. In a run of the tiny sd15 model at 512x512 with previews every 2 steps: the time its previews took
   (``info.timings.preview``, measured around each) as a share of its denoising time. The tiny UNet's step
   is cheap, so this share is an upper bound; a real model's is far smaller (2). (The run's total with
   and without previews is no measure here: on a shared 2-core machine it varies by more than the previews
   cost.)

Run from the repo root: ``.venv/bin/python bench/preview.py`` (or ``make bench``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

TMP = Path(tempfile.mkdtemp(prefix="codex-bench-preview-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
os.environ["CODEX_CACHE_DIR"] = str(TMP / "cache")  # the tiny model is built here, never in the user's cache
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import codex_diffusers.pipelines  # noqa: E402,F401  (first: torchao's import noise held back, library bars off)
import diffusers  # noqa: E402
import torch  # noqa: E402

from codex_core.orchestrator import RunOptions, run  # noqa: E402
from codex_diffusers import reference_config_dir  # noqa: E402
from codex_diffusers.latent_rgb import FORMATS  # noqa: E402
from codex_diffusers.previews import Previewer  # noqa: E402

EVERY = 2  # the service's default --preview-every
TARGET = 0.03
SIZES = {  # format, latent [C, h, w] of one image or frame, what it is
    "sd15": ("sd15", (4, 64, 64), "SD 1.5 512x512"),
    "sdxl": ("sdxl", (4, 128, 128), "SDXL 1024x1024"),
    "flux": ("flux", (16, 128, 128), "FLUX.1 1024x1024"),
    "wan22": ("wan22", (48, 44, 80), "Wan 2.2 5B 1280x704 frame"),
    "ltxv": ("ltxv", (128, 16, 24), "LTX-Video 768x512 frame"),
}


def seconds(fn, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """(median, min) seconds of ``fn``: on a shared machine the min is the cost, the median what it met."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def preview_costs() -> dict[str, tuple[float, float]]:
    costs = {}
    for name, (fmt_name, shape, _) in SIZES.items():
        fmt = FORMATS[fmt_name]
        vae = SimpleNamespace(config={}, _buffers={"latents_mean": torch.zeros(fmt.channels),
                                                    "latents_std": torch.ones(fmt.channels)})
        previewer = Previewer(fmt, vae, lambda latents: latents[0])
        latents = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
        costs[name] = seconds(lambda: previewer(latents), repeats=50)
    return costs


def sd15_step_seconds() -> tuple[float, float]:
    folder = reference_config_dir("sd15") / "unet"
    config = json.loads((folder / "config.json").read_text())
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel.from_config(config).eval()
    latents = torch.randn(2, 4, 64, 64)  # the uncond and cond halves of classifier-free guidance
    text = torch.randn(2, 77, config["cross_attention_dim"])
    with torch.inference_mode():
        return seconds(lambda: unet(latents, 500, encoder_hidden_states=text), repeats=2, warmup=1)


def tiny_end_to_end() -> tuple[float, float]:
    """(seconds in previews, seconds denoising) of a tiny sd15 run, from its info.timings (median of 3)."""
    request = {"prompt": "a lighthouse", "width": 512, "height": 512, "steps": 20, "seed": 1}
    shares = []
    for _ in range(4):  # the first loads the model
        timings = run("sd15", "txt2img", request, RunOptions(model="tiny", out=TMP / "out", quiet=True,
                                                             on_progress=lambda event: None,
                                                             preview_every=EVERY)).info["timings"]
        shares.append((timings["preview"], timings["denoise"]))
    return sorted(shares[1:], key=lambda pair: pair[0] / pair[1])[1]


def main() -> None:
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"diffusers {diffusers.__version__}, python {sys.version.split()[0]}")
    costs = preview_costs()
    print("\n[1] one preview (projection + PNG), on the CPU, 50 calls"
          f"\n  {'':<28} {'latents':<12} {'median ms':>10} {'min ms':>8}")
    for name, (_, shape, label) in SIZES.items():
        print(f"  {label:<28} {'x'.join(map(str, shape)):<12} {costs[name][0] * 1000:10.2f} {costs[name][1] * 1000:8.2f}")
    step = sd15_step_seconds()
    share = costs["sd15"][0] / (EVERY * step[1])  # the slower preview against the faster step: the larger share
    print(f"\n[2] SD 1.5 512x512, real-size UNet (random weights), batch 2 (CFG): {step[0]:.2f} s per step "
          f"(min {step[1]:.2f} s)")
    print(f"  a preview every {EVERY} steps: {share:.4%} of the denoising time  target < {TARGET:.0%}  "
          f"{'PASS' if share < TARGET else 'FAIL'}")
    previews, denoise = tiny_end_to_end()
    print(f"\n[3] tiny sd15 512x512, 20 steps, a preview every {EVERY}, in the run (info.timings; an upper bound: the "
          "tiny UNet's step is cheap)")
    print(f"  previews {previews * 1000:.1f} ms of {denoise:.2f} s denoising: {previews / denoise:.2%}")


if __name__ == "__main__":
    main()
