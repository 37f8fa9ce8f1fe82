"""The VACE cp plan (codex_wan.context_parallel) and wan_vace with ``--parallel ulysses=2``.

The distributed tests start 2 torchrun ranks on the CPU (gloo, the test-only accelerator shim of
``cpu_ranks_env``): cp_ranks.py compares the split tiny ``WanVACETransformer3DModel`` with the single-process
run of the same model on the same inputs (control latents over every frame, and over fewer frames: the model
pads their tokens), and the CLI test compares `codex run wan_vace ... --parallel ulysses=2 --processes 2` with
one process. Measured on CPU: transformer maxdiff 0.0 (outputs up to 2.3), CLI frames 0 levels of 255.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from diffusers.hooks.context_parallel import _get_submodule_by_name
from PIL import Image

from codex_core.testing import cpu_ranks_env, run_json
from codex_wan.context_parallel import vace_plan
from codex_wan.vace import WanVACE
from codex_wan.vace_tiny import _vace_transformer

RANKS = Path(__file__).with_name("cp_ranks.py")
TRANSFORMER_TOLERANCE = 1e-5  # float32 attention over the same keys, each rank on its own heads
PIXEL_TOLERANCE = 2  # levels of 255: the split reorders float sums


def plan_problems(model, cp_plan: dict) -> list[str]:
    """What in ``cp_plan`` does not name a part of ``model``: a module (resolved as diffusers resolves it when it
    applies the plan) or a forward parameter of it."""
    problems = []
    for module_id, entry in cp_plan.items():
        try:
            found = _get_submodule_by_name(model, module_id)
        except ValueError as exc:
            problems.append(f"{module_id!r}: {exc}")
            continue
        if not isinstance(entry, dict):
            continue
        for module in found if isinstance(found, list) else [found]:
            parameters = inspect.signature(type(module).forward).parameters
            problems += [f"{module_id!r} has no input {name!r}" for name in entry
                         if isinstance(name, str) and name not in parameters]
    return problems


def test_the_vace_plan_names_parts_of_the_model():
    model = _vace_transformer()
    assert plan_problems(model, vace_plan()) == []
    # the check can fail: a plan with Wan's input names on VACE's context block
    broken = {**vace_plan(), "vace_blocks.0": {"control": vace_plan()["blocks.0"]["hidden_states"]}}
    assert plan_problems(model, broken) == ["'vace_blocks.0' has no input 'control'"]


def test_wan_vace_declares_the_plan_for_both_experts():
    from diffusers import WanVACETransformer3DModel

    assert WanVACETransformer3DModel._cp_plan is None  # a diffusers that ships one would be used in place of ours
    declared = WanVACE.context_parallel
    assert declared.denoisers == ("transformer", "transformer_2")
    assert all(declared.plans[name]() == vace_plan() for name in declared.denoisers)


@pytest.mark.distributed
def test_ulysses_2_ranks_equal_one_process(tmp_path):
    out = tmp_path / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(RANKS),
               str(out)]
    done = subprocess.run(command, env=cpu_ranks_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    vace = result["vace"]
    # 48 tokens (3 frames of 4 x 4 patches), 24 on each rank in every context block and every main block
    assert vace.pop("tokens_per_rank") == {"vace_blocks.0": 24, "vace_blocks.1": 24, "blocks.0": 24, "blocks.1": 24}
    for name, case in vace.items():
        print(name, case)
        assert case["shape"] == [2, 16, 3, 8, 8]
        assert case["maxdiff"] <= TRANSFORMER_TOLERANCE, (name, case)


# -- through the CLI: `codex run wan_vace ... --parallel ulysses=2 --processes 2` ----------------------------------

REQUEST = {"prompt": "a fox in snow", "seed": 3, "width": 32, "height": 32, "num_frames": 5, "steps": 2}


def frames(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in sorted(Path(folder).rglob("*.png"))]


@pytest.mark.distributed
def test_cli_on_2_ranks_gives_the_single_process_frames(tmp_path):
    single = run_json("wan_vace", "txt2vid", REQUEST, tmp_path / "single", "tiny", "--format", "frames")
    command = [str(Path(sys.executable).parent / "codex"), "run", "wan_vace", "txt2vid", "--model", "tiny",
               "--json", json.dumps(REQUEST), "--out", str(tmp_path / "ranks"), "--quiet", "--format", "frames",
               "--parallel", "ulysses=2", "--processes", "2"]
    done = subprocess.run(command, env=cpu_ranks_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # one JSON document: rank 1 prints nothing
    assert [p.name for p in (tmp_path / "ranks").iterdir()] == [Path(result["run_dir"]).name]  # rank 0 alone wrote
    assert result["info"]["parallel"] == {"ulysses": 2, "ring": 1, "world_size": 2, "split": ["transformer"],
                                          "backend": "gloo"}
    ours, theirs = frames(result["run_dir"]), frames(single["run_dir"])
    assert len(ours) == len(theirs) == REQUEST["num_frames"]
    worst = max(int(np.abs(a - b).max()) for a, b in zip(ours, theirs))
    print(f"max pixel difference against one process: {worst}")
    assert worst <= PIXEL_TOLERANCE, worst
