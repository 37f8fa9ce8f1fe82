"""How much codex costs on top of what it wraps, on tiny models (a benchmark, not a test).

1. sd15 txt2img in-process: ``orchestrator.run`` vs a direct diffusers call that also saves its PNG
   (the fair baseline for a tool that writes files). Target: median ratio <= 1.05.
2. wan_ti2v_5b txt2vid in-process: ``orchestrator.run`` (default format mp4) vs what a user would
   write with diffusers: ``WanPipeline(..., output_type="np").frames[0]`` then
   ``diffusers.utils.export_to_video(frames, path, fps=FPS)``. Target: median ratio <= 1.05.
3. CLI start-up: ``codex engines`` vs ``python -c "import torch"``. Target: ratio <= 0.5, i.e. a
   command that needs no model must not pay for importing torch.
4. Cold start: a whole-process ``codex run sd15 txt2img --model tiny`` vs ``diffusers-cli run`` of the
   same tiny folder and request (64x64, 4 steps, the checkpoint's PNDM scheduler: codex's "PLMS"),
   both writing a PNG. Target from issue 13: ratio <= 0.9.

Run from the repo root: ``.venv/bin/python bench/overhead.py`` (or ``make bench``). Needs imageio
(bench/requirements.txt): diffusers' export_to_video writes through it.
"""

from __future__ import annotations

import atexit
import json
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

TMP = Path(tempfile.mkdtemp(prefix="codex-bench-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
os.environ["CODEX_CACHE_DIR"] = str(TMP / "cache")  # build the tiny models here, never in the user's cache
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # codex sets this too; keeps import chatter out

if importlib.util.find_spec("imageio") is None:  # diffusers' export_to_video, the direct Wan baseline, needs it
    sys.exit("bench/overhead.py needs imageio: pip install -r bench/requirements.txt")
import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    DPMSolverMultistepScheduler, StableDiffusionPipeline, UniPCMultistepScheduler, WanPipeline)
from diffusers.utils import export_to_video  # noqa: E402
from PIL import Image  # noqa: E402

from codex_core.exporters.video import probe  # noqa: E402
from codex_core.orchestrator import RunOptions, run  # noqa: E402
from codex_core.testing import tiny_model_dir  # noqa: E402  (builds through the engine's own builder)
from timing import interleaved, ratio, report, verdict  # noqa: E402  (bench/timing.py, beside this script)

# 384x384 x 20 steps takes ~0.45 s per call on a 2-core CPU: long enough that timer noise is small,
# short enough that 15 interleaved pairs fit well inside the time budget.
PROMPT, SIZE, STEPS, CFG, SEED = "a lighthouse on a cliff at dawn, oil painting", 384, 20, 7.0, 1234
REQUEST = {"prompt": PROMPT, "width": SIZE, "height": SIZE, "steps": STEPS, "cfg": CFG,
           "sampler": "DPM++ 2M", "scheduler": "Karras", "seed": SEED}
# Wan: 192x192 x 33 frames x 10 steps takes ~0.55 s per call on an idle 2-core CPU (VAE decode ~0.3 s,
# MP4 encoding ~0.1 s). The tiny model's frames are noise, the hardest content for H.264, so the
# encoder's share here is far above a real run's, where generation takes minutes.
W_PROMPT, W_SIZE, W_FRAMES, W_FPS = "a red fox running in snow", 192, 33, 24
W_STEPS, W_CFG, W_SHIFT, W_SEED = 10, 5.0, 5.0, 7
# export_to_video's quality q is libx264 -crf int((1 - q/10) * 51): the default 5 is crf 25; 6.6 is
# crf 17, codex's mp4 setting. The second direct side tells codex's own overhead from its encoder choice.
EXPORT_KWARGS = {"direct": {}, "direct crf 17": {"quality": 6.6}}
W_REQUEST = {"prompt": W_PROMPT, "width": W_SIZE, "height": W_SIZE, "num_frames": W_FRAMES, "fps": W_FPS,
             "steps": W_STEPS, "cfg": W_CFG, "flow_shift": W_SHIFT, "sampler": "UniPC", "seed": W_SEED}
REPS, W_REPS, CLI_REPS = 15, 15, 7

pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir("sd15")), safety_checker=None,
                                               requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)  # codex disables it too; tqdm output is not what we measure
wan = WanPipeline.from_pretrained(str(tiny_model_dir("wan_ti2v_5b")))
wan.set_progress_bar_config(disable=True)
wan_scheduler_config = dict(wan.scheduler.config)  # the checkpoint's, as codex keeps it


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


def wan_direct(path: Path | None, output_type: str = "np", **export_kwargs) -> list:
    # What "UniPC" with flow_shift resolves to for a flow-matching checkpoint, fresh per call.
    wan.scheduler = UniPCMultistepScheduler.from_config(
        wan_scheduler_config, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=W_SHIFT)
    frames = wan(prompt=W_PROMPT, height=W_SIZE, width=W_SIZE, num_frames=W_FRAMES, num_inference_steps=W_STEPS,
                 guidance_scale=W_CFG, output_type=output_type,
                 generator=torch.Generator("cpu").manual_seed(W_SEED)).frames[0]
    if path is not None:
        export_to_video(frames, str(path), fps=W_FPS, **export_kwargs)
    return frames


def wan_codex(formats: tuple[str, ...] | None = None) -> list[Path]:  # None: the default, mp4
    return run("wan_ti2v_5b", "txt2vid", W_REQUEST,
               RunOptions(model="tiny", out=TMP / "codex-wan", formats=formats, quiet=True)).files


# 1. sd15. Warm-up: codex's first run loads the pipeline into its per-process cache; later runs reuse
# it, as the direct side reuses `pipe`. The outputs double as the pixel-identity check.
direct_image = direct(TMP / "direct.png")
same_pixels = np.array_equal(np.asarray(Image.open(codex()).convert("RGB")), np.asarray(direct_image))
sd_times, sd_others = interleaved({"codex": codex, "direct": lambda: direct(TMP / "direct.png")}, REPS)

# 2. wan. Warm-up as above, with the frame-identity check: codex's lossless PNG frames against the
# direct call's PIL frames (the same 8-bit frames codex encodes). MP4 bytes differ by encoder settings.
direct_frames = wan_direct(None, output_type="pil")
codex_frames = sorted(p for p in wan_codex(("frames",)) if p.suffix == ".png")
same_frames = len(codex_frames) == len(direct_frames) == W_FRAMES and all(
    np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(frame))
    for path, frame in zip(codex_frames, direct_frames))
videos = {"codex": next(p for p in wan_codex() if p.suffix == ".mp4")}
wan_sides: dict[str, Callable[[], object]] = {"codex": wan_codex}
for name, kwargs in EXPORT_KWARGS.items():
    videos[name] = TMP / f"{name.replace(' ', '-')}.mp4"
    wan_sides[name] = lambda path=videos[name], kwargs=kwargs: wan_direct(path, **kwargs)
    wan_sides[name]()  # warm-up: export_to_video's first call also probes ffmpeg and libx264
wan_times, wan_others = interleaved(wan_sides, W_REPS)
shapes = {name: probe(path) for name, path in videos.items()}

# 3. CLI start-up, in fresh processes: the same interpreter importing torch is the yardstick.
bin_dir = Path(sys.executable).parent
cli = {"codex engines": [str(bin_dir / "codex"), "engines"], "import torch": [sys.executable, "-c", "import torch"]}
cli_times, cli_others = interleaved(
    {name: lambda argv=argv: subprocess.run(argv, check=True, capture_output=True) for name, argv in cli.items()},
    CLI_REPS)

# 4. Cold start, whole processes: codex run vs diffusers-cli run on the same tiny folder and request.
COLD_REPS = 5
cold_folder = tiny_model_dir("sd15")
COLD = {"prompt": PROMPT, "width": 64, "height": 64, "steps": 4, "cfg": 7.5, "seed": 1, "sampler": "PLMS",
        "scheduler": "Automatic"}
cold = {
    "codex run": [str(bin_dir / "codex"), "run", "sd15", "txt2img", "--model", str(cold_folder), "-q", "--out",
                  str(TMP / "cold-codex"), "--json", json.dumps(COLD)],
    "diffusers-cli run": [str(bin_dir / "diffusers-cli"), "--format", "quiet", "run", "--model", str(cold_folder),
                          "--device-map", "cpu", "--dtype", "fp32", "--seed", "1", "-o", str(TMP / "cold-dc.png"),
                          "--pipeline-kwargs", json.dumps({"prompt": PROMPT, "width": 64, "height": 64,
                                                           "num_inference_steps": 4, "guidance_scale": 7.5})],
}
cold_times, cold_others = interleaved(
    {name: lambda argv=argv: subprocess.run(argv, check=True, capture_output=True) for name, argv in cold.items()},
    COLD_REPS)
cold_codex_png = max((TMP / "cold-codex").glob("*/0000.png"), key=lambda path: path.stat().st_mtime)
same_cold = np.array_equal(np.asarray(Image.open(cold_codex_png).convert("RGB")),
                           np.asarray(Image.open(TMP / "cold-dc.png").convert("RGB")))


print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
      f"diffusers {diffusers.__version__}, python {sys.version.split()[0]}")

report(f"[1] tiny sd15 txt2img {SIZE}x{SIZE}, {STEPS} steps, DPM++ 2M Karras, cfg {CFG}; "
       f"{REPS} interleaved runs each (after warm-up)", sd_times, sd_others,
       {"direct": "direct diffusers + image.save", "codex": "codex orchestrator.run (png)"})
ratio(sd_times, "codex", "direct", "codex/direct", 1.05)
print(f"pixels identical (codex PNG vs direct image): {same_pixels}  {verdict(same_pixels)}")

report(f"[2] tiny wan_ti2v_5b txt2vid {W_SIZE}x{W_SIZE}, {W_FRAMES} frames @ {W_FPS} fps, {W_STEPS} steps, "
       f"UniPC flow_shift {W_SHIFT}, cfg {W_CFG}; {W_REPS} interleaved runs each (after warm-up)",
       wan_times, wan_others, {"direct": 'direct WanPipeline("np") + export_to_video',
                               "direct crf 17": "  the same, export_to_video(quality=6.6)",
                               "codex": "codex orchestrator.run (mp4, crf 17)"})
ratio(wan_times, "codex", "direct", "codex/direct", 1.05)
ratio(wan_times, "codex", "direct crf 17", "codex/direct at codex's crf 17", None)
ratio(wan_times, "direct crf 17", "direct", "encoder alone: crf 17/crf 25", None)
print(f"frames identical (codex --format frames vs direct output_type='pil'): {same_frames}  {verdict(same_frames)}")
for name, path in videos.items():
    shape = shapes[name]
    print(f"{name + ' mp4:':<19}{shape['frames']} frames {shape['width']}x{shape['height']} @ {shape['fps']:g} fps, "
          f"{path.stat().st_size / 1024:.0f} KiB")

report(f"[3] CLI start-up; {CLI_REPS} interleaved runs each", cli_times, cli_others,
       {"import torch": "python -c 'import torch'", "codex engines": "codex engines"})
ratio(cli_times, "codex engines", "import torch", "codex engines/import torch", 0.5)

report(f"[4] cold start, whole processes, tiny sd15 txt2img 64x64, 4 steps (PNDM); {COLD_REPS} interleaved runs "
       "each", cold_times, cold_others, {"codex run": "codex run (png + info.json)",
                                           "diffusers-cli run": "diffusers-cli run (png)"})
ratio(cold_times, "codex run", "diffusers-cli run", "codex run/diffusers-cli run", 0.9)
print(f"pixels identical (codex run vs diffusers-cli run): {same_cold}")
