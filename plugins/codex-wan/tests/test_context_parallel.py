"""The VACE and Animate cp plans (codex_wan.context_parallel): wan_vace and wan_animate with ``--parallel``.

The distributed tests start 2 torchrun ranks on the CPU (gloo, the test-only accelerator shim of
``cpu_ranks_env``): cp_ranks.py compares the split tiny ``WanVACETransformer3DModel`` (control latents over
every frame, and over fewer frames: the model pads their tokens) and ``WanAnimateTransformer3DModel`` with the
single-process run of the same model on the same inputs, and the CLI tests compare `codex run ... --parallel
ulysses=2 --processes 2` with one process. Measured on CPU: VACE transformer maxdiff 0.0 (outputs up to 2.3),
Animate 7.2e-7 (up to 2.5; Wan's plan without the face adapter entries: 0.70); CLI frames 0 levels of 255 for
wan_vace txt2vid and ref2vid and for wan_animate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codex_core.testing import cli_run, cpu_ranks_env, on_cpu_ranks, run_json, write_test_image
from codex_diffusers.testing import cp_plan_problems
from codex_wan.animate import WanAnimate
from codex_wan.animate_tiny import _transformer as _animate_transformer
from codex_wan.context_parallel import animate_plan, vace_plan
from codex_wan.vace import WanVACE
from codex_wan.vace_tiny import _vace_transformer

RANKS = Path(__file__).with_name("cp_ranks.py")
TRANSFORMER_TOLERANCE = 1e-5  # float32 attention over the same keys, each rank on its own heads
PIXEL_TOLERANCE = 2  # levels of 255: the split reorders float sums


def test_the_vace_plan_names_parts_of_the_model():
    model = _vace_transformer()
    assert cp_plan_problems(model, vace_plan()) == []
    # the check can fail: a plan with Wan's input names on VACE's context block
    broken = {**vace_plan(), "vace_blocks.0": {"control": vace_plan()["blocks.0"]["hidden_states"]}}
    assert cp_plan_problems(model, broken) == ["'vace_blocks.0' has no input 'control'"]


def test_wan_vace_declares_the_plan_for_both_experts():
    from diffusers import WanVACETransformer3DModel

    assert WanVACETransformer3DModel._cp_plan is None  # a diffusers that ships one would be used in place of ours
    declared = WanVACE.context_parallel
    assert declared.denoisers == ("transformer", "transformer_2")
    assert all(declared.plans[name]() == vace_plan() for name in declared.denoisers)


def test_the_animate_plan_names_parts_of_the_model():
    model = _animate_transformer()
    assert cp_plan_problems(model, animate_plan()) == []
    assert cp_plan_problems(model, {"face_adapters.*.to_out": animate_plan()["proj_out"]}) == [
        "'face_adapters.*.to_out': 'face_adapters' is not a submodule of 'WanAnimateTransformer3DModel'"]


def test_wan_animate_declares_the_plan():
    from diffusers import WanAnimateTransformer3DModel

    assert WanAnimateTransformer3DModel._cp_plan is None
    declared = WanAnimate.context_parallel
    assert declared.denoisers == ("transformer",)
    assert declared.plans["transformer"]() == animate_plan()


@pytest.mark.distributed
def test_ulysses_2_ranks_equal_one_process(tmp_path):
    out = tmp_path / "result.json"
    result = on_cpu_ranks(RANKS, out)
    assert result["world_size"] == 2
    vace = result["vace"]
    # 48 tokens (3 frames of 4 x 4 patches), 24 on each rank in every context block and every main block
    assert vace.pop("tokens_per_rank") == {"vace_blocks.0": 24, "vace_blocks.1": 24, "blocks.0": 24, "blocks.1": 24}
    for name, case in vace.items():
        print(name, case)
        assert case["shape"] == [2, 16, 3, 8, 8]
        assert case["maxdiff"] <= TRANSFORMER_TOLERANCE, (name, case)
    animate = result["animate"]
    print("animate", animate)
    # the main blocks on the rank's 24 of 48 tokens, the face adapter on all of them
    assert animate["tokens_per_rank"] == {"blocks.0.ffn": 24, "blocks.1.ffn": 24, "face_adapter.0.to_q": 48}
    assert animate["shape"] == [2, 16, 3, 8, 8]
    assert animate["maxdiff"] <= TRANSFORMER_TOLERANCE, animate
    # Wan's plan alone: the face adapter matches tokens to the wrong frames
    assert animate["maxdiff_without_face_entries"] > 1000 * TRANSFORMER_TOLERANCE, animate


# -- through the CLI: `codex run ENGINE ... --parallel ulysses=2 --processes 2` ------------------------------------

VACE_REQUEST = {"prompt": "a fox in snow", "seed": 3, "width": 32, "height": 32, "num_frames": 5, "steps": 2}
# at 32 x 32 and segment_frame_length 5: 3 latent frames (the reference and 2) of 4 tokens, 6 tokens a rank, so a
# rank's part ends inside a frame; 9 pose frames make two segments
ANIMATE_REQUEST = {"prompt": "a dancer", "seed": 2, "width": 32, "height": 32, "steps": 2, "segment_frame_length": 5}


def write_video(path: Path, size: tuple[int, int], frames: int, seed: int) -> str:
    """A small H.264 MP4 of random 4 x 4 blocks."""
    import imageio_ffmpeg

    rng = np.random.default_rng(seed)
    writer = imageio_ffmpeg.write_frames(str(path), size, fps=16, macro_block_size=1, quality=9,
                                         output_params=["-loglevel", "error"])
    writer.send(None)
    for _ in range(frames):
        blocks = rng.integers(0, 256, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
        writer.send(np.ascontiguousarray(np.kron(blocks, np.ones((4, 4, 1), np.uint8))))
    writer.close()
    return str(path)


def animate_request(tmp_path: Path) -> dict:
    return {**ANIMATE_REQUEST, "character_image": write_test_image(tmp_path / "character.png", (32, 32), seed=3),
            "pose_video": write_video(tmp_path / "pose.mp4", (32, 32), 9, seed=1),
            "face_video": write_video(tmp_path / "face.mp4", (16, 16), 9, seed=2)}


def frames(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in sorted(Path(folder).rglob("*.png"))]


def ranks_run(tmp_path: Path, engine: str, task: str, request: dict, *extra: str) -> dict:
    """`codex run ENGINE TASK ... --parallel ulysses=2 --processes 2`: its result, after checking that rank 0
    alone wrote and recorded the layout."""
    command = [str(Path(sys.executable).parent / "codex"), "run", engine, task, "--model", "tiny",
               "--json", json.dumps(request), "--out", str(tmp_path / "ranks"), "--quiet", "--format", "frames",
               "--parallel", "ulysses=2", "--processes", "2", *extra]
    done = subprocess.run(command, env=cpu_ranks_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # one JSON document: rank 1 prints nothing
    assert [p.name for p in (tmp_path / "ranks").iterdir()] == [Path(result["run_dir"]).name]  # rank 0 alone wrote
    assert result["info"]["parallel"] == {"ulysses": 2, "ring": 1, "world_size": 2, "split": ["transformer"],
                                          "backend": "gloo"}
    return result


def worst_pixel(ours: dict, theirs: dict, count: int) -> int:
    a, b = frames(ours["run_dir"]), frames(theirs["run_dir"])
    assert len(a) == len(b) == count
    worst = max(int(np.abs(x - y).max()) for x, y in zip(a, b))
    print(f"max pixel difference against one process: {worst}")
    return worst


@pytest.mark.distributed
@pytest.mark.parametrize("task", ["txt2vid", "ref2vid"])
def test_wan_vace_on_2_ranks_gives_the_single_process_frames(tmp_path, task):
    request = dict(VACE_REQUEST)
    if task == "ref2vid":
        # a reference image is no IP-Adapter image here (the kit refuses those with --parallel): the pipeline
        # encodes it into a latent frame before the video's, which the plan splits with the rest
        request["reference_images"] = [write_test_image(tmp_path / "reference.png", (32, 32), seed=4)]
    single = run_json("wan_vace", task, request, tmp_path / "single", "tiny", "--format", "frames")
    result = ranks_run(tmp_path, "wan_vace", task, request)
    assert worst_pixel(result, single, VACE_REQUEST["num_frames"]) <= PIXEL_TOLERANCE


@pytest.mark.distributed
def test_wan_animate_on_2_ranks_gives_the_single_process_frames(tmp_path):
    request = animate_request(tmp_path)
    single = run_json("wan_animate", "animate", request, tmp_path / "single", "tiny", "--format", "frames")
    result = ranks_run(tmp_path, "wan_animate", "animate", request)
    assert worst_pixel(result, single, 9) <= PIXEL_TOLERANCE


@pytest.mark.parametrize("layout", ["ring=2", "ulysses=2,ulysses_anything"])
def test_wan_animate_refuses_layouts_its_plan_is_not_tested_with_before_loading(tmp_path, layout):
    request = animate_request(tmp_path)
    result = cli_run(["run", "wan_animate", "animate", "--model", "tiny", "--out", str(tmp_path / "out"), "--quiet",
                      "--json", json.dumps(request), "--parallel", layout, "--processes", "2"])
    assert result.exit_code == 2, result.stderr
    assert "engine wan_animate: its plan splits with plain Ulysses only" in result.stderr
    assert not (tmp_path / "out").exists()
